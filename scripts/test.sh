#!/usr/bin/env bash
# Runs every test Gatehouse has, installing what the tests need first:
#   - PostgreSQL (installed from Debian and started if absent; trust auth on 127.0.0.1),
#   - anvil (from npm, into .tools/); the compat tests install their pinned npm/pip packages
#     (npm ci, a venv) themselves, skipping that when the lockfiles are unchanged,
#   - then cargo fmt --check, clippy, cargo test (unit, integration, doc tests), and the
#     facilitator-compat-tests matrix (real x402 SDKs through Gatehouse on anvil),
#   - Debian chromium + chromium-driver, then the dashboard end-to-end tests
#     (dashboard-tests/, playwright-core via npm ci; screenshots in dashboard-tests/screenshots/).
# Build output goes to $CARGO_TARGET_DIR (default: a cache outside the checkout), so repeat
# runs on the same machine are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
log() { printf '==> %s\n' "$*"; }

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # The tests connect as postgres over TCP without a password, as on the project's machines.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
  echo "PostgreSQL did not start" >&2; exit 1
}

# --- ops (issue 9): Debian tools the ops tests use -------------------------------------
#   promtool (package prometheus) validates /metrics; nginx fronts the multi-replica test;
#   wrk drives the benchmark. Installed only when missing.
ensure_debian_tools() {
  local missing=()
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    # Not fatal here: the tests that need these tools fail loudly (never pass) without them.
    echo "WARNING: could not install ${missing[*]}; tests needing them will FAIL" >&2
  fi
}

ensure_postgres
ensure_debian_tools
log "installing anvil"
scripts/install-anvil.sh >/dev/null

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "facilitator-compat-tests: installing pinned npm/pip packages (tests/risk_api.rs runs the TS SDK)"
bash facilitator-compat-tests/install.sh
log "cargo test"
cargo test --locked --no-fail-fast -- --test-threads "${TEST_THREADS:-4}"

# --- ops (issue 9): OpenTelemetry feature, chart ----------------------------------------
log "cargo check --features otel"
cargo check --locked --features otel --bin gatehouse

log "chart: values.schema.json against the chart's values files"
if [ ! -x .tools/chart-venv/bin/python ] \
   || ! cmp -s charts/requirements-check.txt .tools/chart-venv/requirements-check.txt; then
  python3 -m venv .tools/chart-venv
  .tools/chart-venv/bin/pip install -q -r charts/requirements-check.txt
  cp charts/requirements-check.txt .tools/chart-venv/requirements-check.txt
fi
.tools/chart-venv/bin/python charts/check-values.py
if command -v helm >/dev/null 2>&1; then
  log "chart: helm lint / helm template"
  helm lint charts/gatehouse
  for values in charts/gatehouse/ci/*.yaml; do
    helm template t charts/gatehouse -f "$values" >/dev/null
  done
  for values in charts/gatehouse/ci/invalid/*.yaml; do
    if helm template t charts/gatehouse -f "$values" >/dev/null 2>&1; then
      echo "helm template accepted $values, which must be refused" >&2; exit 1
    fi
  done
else
  echo "==> SKIPPED (not passed): helm lint / helm template — helm is not on PATH"
fi

if docker info >/dev/null 2>&1; then
  log "docker build (multi-stage, non-root runtime)"
  docker build -q -t gatehouse:test . >/dev/null
  docker run --rm gatehouse:test --version
else
  echo "==> SKIPPED (not passed): docker build — no Docker daemon reachable"
fi

log "facilitator-compat-tests: the real x402 SDKs through Gatehouse on anvil"
cargo build --locked --bin gatehouse
GATEHOUSE_BIN="$CARGO_TARGET_DIR/debug/gatehouse" bash facilitator-compat-tests/test.sh

# --- dashboard: end-to-end in headless Chromium (Debian chromium + playwright-core) ---
if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium and chromium-driver from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
log "dashboard-tests: the dashboard in headless Chromium"
(cd dashboard-tests && npm ci --no-audit --no-fund --silent)
GATEHOUSE_BIN="$CARGO_TARGET_DIR/debug/gatehouse" CHROMIUM="$(command -v chromium)" \
  node dashboard-tests/run.mjs
