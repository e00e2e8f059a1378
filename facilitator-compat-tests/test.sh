#!/usr/bin/env bash
# The harness's test command: install pinned deps (idempotent), then run the matrix.
# Env: GATEHOUSE_BIN (optional; adds the through-Gatehouse rows), ANVIL_BIN / CONTRACTS_OUT
# (optional overrides of <repo>/scripts/install-anvil.sh and <repo>/contracts/out), SVM_NODE_BIN
# (optional; else svm-test-node is built into $CARGO_TARGET_DIR or <repo>/target), ONLY (regex
# on "seller:buyer" ids to run a subset).
set -euo pipefail
cd "$(dirname "$0")"
bash ./install.sh
# The Solana rows run on svm-test-node, its own cargo workspace: build it from its lockfile (a
# no-op when fresh) unless SVM_NODE_BIN names a binary.
if [[ -z "${SVM_NODE_BIN:-}" ]]; then
  echo "test.sh: cargo build svm-test-node" >&2
  timeout 1800 cargo build --quiet --locked --manifest-path ../svm-test-node/Cargo.toml >&2
fi
exec timeout 1500 node run.mjs
