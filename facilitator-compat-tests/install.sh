#!/usr/bin/env bash
# Installs the harness's pinned dependencies; idempotent and quiet when nothing changed.
#   node: `npm ci` from package-lock.json when node_modules is missing or was built from a
#         different lockfile;
#   python: a venv at .venv with `pip install -r requirements.txt` when the venv is missing or
#           was built from a different requirements.txt; likewise .venv-secure from
#           requirements-secure.txt (the x402-secure row, which needs the legacy x402 1.x).
set -euo pipefail
cd "$(dirname "$0")"

if ! cmp -s package-lock.json node_modules/.compat-lock-stamp 2>/dev/null; then
  echo "install.sh: npm ci" >&2
  timeout 600 npm ci --no-audit --no-fund --ignore-scripts >&2
  cp package-lock.json node_modules/.compat-lock-stamp
fi

if [[ ! -x .venv/bin/python ]] || ! cmp -s requirements.txt .venv/.compat-req-stamp 2>/dev/null; then
  echo "install.sh: pip install -r requirements.txt" >&2
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  timeout 900 .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt >&2
  cp requirements.txt .venv/.compat-req-stamp
fi

if [[ ! -x .venv-secure/bin/python ]] || ! cmp -s requirements-secure.txt .venv-secure/.compat-req-stamp 2>/dev/null; then
  echo "install.sh: pip install -r requirements-secure.txt" >&2
  [[ -x .venv-secure/bin/python ]] || python3 -m venv .venv-secure
  timeout 900 .venv-secure/bin/pip install --quiet --disable-pip-version-check -r requirements-secure.txt >&2
  cp requirements-secure.txt .venv-secure/.compat-req-stamp
fi
