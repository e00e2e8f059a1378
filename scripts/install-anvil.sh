#!/usr/bin/env bash
# Installs the pinned anvil test node (npm @foundry-rs/anvil-linux-amd64, version and integrity
# fixed by scripts/anvil/package-lock.json) into .tools/anvil/. Idempotent: does nothing when
# the pinned binary is already there. Prints the binary's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/anvil"
bin="$dest/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [[ -x "$bin" ]] && cmp -s "$root/scripts/anvil/package-lock.json" "$dest/package-lock.json"; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dest"
cp "$root/scripts/anvil/package.json" "$root/scripts/anvil/package-lock.json" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund >&2)
chmod +x "$bin"
echo "$bin"
