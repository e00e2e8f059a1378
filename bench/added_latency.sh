#!/usr/bin/env bash
# Gatehouse's added latency on /verify over a local upstream, at a fixed request rate.
# Runs the same load (oha, fixed rate, fixed duration) twice: straight at a minimal local
# upstream facilitator, then through Gatehouse (release build, SQLite, evidence on) in front of
# it, and prints p50/p99 of both and the difference.
#   bench/added_latency.sh [RATE_PER_SEC] [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-200}"
DURATION="${2:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse/target}"
OHA="${OHA:-$(command -v oha || true)}"
if [ -z "$OHA" ]; then
  echo "installing oha 1.16.0 from crates.io into .tools/" >&2
  cargo install oha --version 1.16.0 --locked --root .tools >/dev/null
  OHA=.tools/bin/oha
fi
cargo build --release --quiet --bin gatehouse --example bench_upstream
BIN="$CARGO_TARGET_DIR/release"
WORK=$(mktemp -d)
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"; }
PIDS=()
trap cleanup EXIT

"$BIN/examples/bench_upstream" 127.0.0.1:4031 >"$WORK/upstream.log" 2>&1 & PIDS+=($!)
cat >"$WORK/gatehouse.toml" <<TOML
listen = "127.0.0.1:4032"
database_url = "sqlite://$WORK/gatehouse.db"
[upstream]
url = "http://127.0.0.1:4031"
[chains."eip155:84532"]
onchain_checks = false
TOML
RUST_LOG=warn "$BIN/gatehouse" --config "$WORK/gatehouse.toml" serve >"$WORK/gatehouse.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:4032/health >/dev/null && break; sleep 0.2; done

cat >"$WORK/body.json" <<'JSON'
{"x402Version":2,"paymentPayload":{"x402Version":2,"resource":{"url":"https://api.example.com/premium"},"accepted":{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036cbd53842c5426634e7929541ec2318f3dcf7e","payTo":"0x209693bc6afc0c5328ba36faf03c514ef312287c","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}},"payload":{"signature":"0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c","authorization":{"from":"0x857b06519e91e3a54538791bdbb0e22373e36b66","to":"0x209693bc6afc0c5328ba36faf03c514ef312287c","value":"10000","validAfter":"1740672089","validBefore":"4102444800","nonce":"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}}},"paymentRequirements":{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036cbd53842c5426634e7929541ec2318f3dcf7e","payTo":"0x209693bc6afc0c5328ba36faf03c514ef312287c","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}}
JSON

run() { # url → "p50_ms p99_ms success_rate"
  "$OHA" --no-tui --output-format json -z "${DURATION}s" -q "$RATE" -c 8 -m POST \
    -T application/json -D "$WORK/body.json" "$1" >"$WORK/out.json"
  python3 - "$WORK/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
print(f'{p["p50"]*1000:.2f} {p["p99"]*1000:.2f} {d["summary"]["successRate"]*100:.1f}')
PY
}
read -r d50 d99 dok < <(run http://127.0.0.1:4031/verify)
read -r g50 g99 gok < <(run http://127.0.0.1:4032/verify)
records=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from evidence').fetchone()[0])" "$WORK/gatehouse.db")
cat <<REPORT
/verify at ${RATE} req/s for ${DURATION}s, 8 connections ($(nproc) cores, $(date -u +%Y-%m-%d))
| path                      | p50 ms | p99 ms | 2xx % |
|---------------------------|--------|--------|-------|
| upstream directly         | $d50 | $d99 | $dok |
| through Gatehouse         | $g50 | $g99 | $gok |
| added by Gatehouse        | $(python3 -c "print(f'{$g50-$d50:.2f}')") | $(python3 -c "print(f'{$g99-$d99:.2f}')") |       |
evidence records written: $records
REPORT
