#!/usr/bin/env bash
# Runs every test Gatehouse has, installing what the tests need first:
#   - PostgreSQL (installed from Debian and started if absent; trust auth on 127.0.0.1),
#   - anvil (from npm, into .tools/); the compat tests install their pinned npm/pip packages
#     (npm ci, a venv) themselves, skipping that when the lockfiles are unchanged,
#   - then cargo fmt --check, clippy, cargo test (unit, integration, doc tests), and the
#     facilitator-compat-tests matrix (real x402 SDKs through Gatehouse on anvil).
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

ensure_postgres
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

log "facilitator-compat-tests: the real x402 SDKs through Gatehouse on anvil"
cargo build --locked --bin gatehouse
GATEHOUSE_BIN="$CARGO_TARGET_DIR/debug/gatehouse" bash facilitator-compat-tests/test.sh
