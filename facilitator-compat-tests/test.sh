#!/usr/bin/env bash
# The harness's test command: install pinned deps (idempotent), then run the matrix.
# Env: GATEHOUSE_BIN (optional; adds the through-Gatehouse rows), ANVIL_BIN / CONTRACTS_OUT
# (optional overrides of <repo>/scripts/install-anvil.sh and <repo>/contracts/out), ONLY (regex
# on "seller:buyer" ids to run a subset).
set -euo pipefail
cd "$(dirname "$0")"
bash ./install.sh
exec timeout 1500 node run.mjs
