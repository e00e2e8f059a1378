#!/usr/bin/env bash
# Regenerates contracts/out/*.json (ABI, creation and runtime bytecode) from contracts/src with
# the solc version pinned in contracts/package-lock.json. The outputs are committed, so building
# Gatehouse and running its tests needs neither node nor solc.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
[[ -d node_modules/solc ]] || npm ci --ignore-scripts --no-audit --no-fund >&2
node build.js
