#!/usr/bin/env bash
# Side-by-side /verify benchmark on one machine and one anvil (issue #9):
#   (a) Gatehouse with every check on: on-chain EVM checks against anvil (one batched RPC),
#       spending policy (caps and rate limits, atomic reservations), risk rules from
#       risk-rules/ (when present), hash-chained evidence in SQLite; settlement "local", so
#       Gatehouse is the facilitator (no upstream verify).
#   (b) the reference TypeScript facilitator (@x402/core + @x402/evm,
#       facilitator-compat-tests/reference-facilitator.mjs) on the same anvil.
#   (c) forwarding alone: a no-op upstream (examples/bench_upstream) called directly, then
#       through Gatehouse in forward mode with the same checks — Gatehouse's added latency.
# Load: wrk, DURATION seconds per run at concurrency 8 and 32, distinct signed payments.
# Reports throughput, p50/p99, the ratio, RPC round trips per verify (from /metrics), and
# CPU-seconds and memory per 1,000 verifies (from /proc/<pid>/stat and /proc/<pid>/status).
#   bench/compare.sh [DURATION_SECS] [PAYMENTS]      (writes bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION="${1:-10}"
PAYMENTS="${2:-3000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse/target}"

command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
ANVIL=$(scripts/install-anvil.sh)
bash facilitator-compat-tests/install.sh >/dev/null
cargo build --release --locked --quiet --bin gatehouse --example bench_upstream
BIN="$CARGO_TARGET_DIR/release"

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; rm -f facilitator-compat-tests/.bench-fixture.mjs; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; exit 1; }

RPC_PORT=$(free_port)
"$ANVIL" --host 127.0.0.1 --port "$RPC_PORT" --chain-id 84532 --silent >"$WORK/anvil.log" 2>&1 & PIDS+=($!)
RPC="http://127.0.0.1:$RPC_PORT"
for _ in $(seq 1 100); do curl -sf -X POST -H 'content-type: application/json' \
  -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$RPC" >/dev/null && break; sleep 0.1; done

# The fixture runs from the compat harness's directory so it resolves viem from there.
ln -sf "$ROOT/bench/fixture.mjs" facilitator-compat-tests/.bench-fixture.mjs
ASSET=$(node --preserve-symlinks --preserve-symlinks-main facilitator-compat-tests/.bench-fixture.mjs "$RPC" "$PAYMENTS" "$WORK/bodies.jsonl")
export BODIES="$WORK/bodies.jsonl"

# (b) the reference facilitator (anvil dev key #9).
REF_PORT=$(free_port)
(cd facilitator-compat-tests && RPC_URL="$RPC" PORT="$REF_PORT" \
  FACILITATOR_PRIVATE_KEY=0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6 \
  exec node reference-facilitator.mjs) >"$WORK/reference.log" 2>&1 & REF_PID=$!; PIDS+=($REF_PID)
wait_http "http://127.0.0.1:$REF_PORT/health"

# A no-op upstream for the forwarding comparison.
NOOP_PORT=$(free_port)
"$BIN/examples/bench_upstream" "127.0.0.1:$NOOP_PORT" >"$WORK/noop.log" 2>&1 & PIDS+=($!)

mkdir -p "$WORK/rules"
cp "$ROOT"/risk-rules/*.yaml "$WORK/rules/"
sed -i 's/^  weight: \([0-9]*\)$/  weight: \1\n  mode: shadow/' "$WORK/rules/velocity.yaml"

gatehouse_config() { # port, upstream url, settlement mode → config file
  local dir="$WORK/gh-$1"; mkdir -p "$dir"
  cat >"$dir/gatehouse.toml" <<TOML
listen = "127.0.0.1:$1"
database_url = "sqlite://$dir/gatehouse.db"
log_format = "json"
[upstream]
url = "$2"
[chains."eip155:84532"]
rpc_urls = ["$RPC"]
multicall3 = true
settlement = "$3"
signer_key_env = "BENCH_SIGNER_KEY"
[[chains."eip155:84532".assets]]
address = "$ASSET"
name = "USDC"
version = "2"
decimals = 6
# Every control evaluated, none binding for the benchmark's volume.
[policy.global]
max_per_request = "1000000"
daily_cap = "1000000000000"
requests_per_minute = 10000000
# Endpoint discovery's defaults (10 payments a minute per new endpoint) would bind at once.
[policy.discovery]
enabled = false
# The shipped risk rule pack scores every verify; its velocity rules run in shadow mode
# (evaluated and recorded, never deciding), since one benchmark payer paying one resource
# thousands of times a minute is exactly the payment loop they exist to stop.
[risk]
rules_dir = "$WORK/rules"
TOML
  echo "$dir/gatehouse.toml"
}
start_gatehouse() { # port, upstream, mode → pid
  local cfg; cfg=$(gatehouse_config "$1" "$2" "$3")
  BENCH_SIGNER_KEY=0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97 RUST_LOG=warn \
    "$BIN/gatehouse" --config "$cfg" serve >"$WORK/gh-$1.log" 2>&1 &
  echo $!
}
GH_PORT=$(free_port); GH_PID=$(start_gatehouse "$GH_PORT" "http://127.0.0.1:$REF_PORT" local); PIDS+=($GH_PID)
FW_PORT=$(free_port); FW_PID=$(start_gatehouse "$FW_PORT" "http://127.0.0.1:$NOOP_PORT" forward); PIDS+=($FW_PID)
wait_http "http://127.0.0.1:$GH_PORT/health"; wait_http "http://127.0.0.1:$FW_PORT/health"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

run() { # name url concurrency pid(or -) → appends a JSON line to $WORK/runs.jsonl
  local name=$1 url=$2 c=$3 pid=$4 t0=0 t1=0
  # Warm-up (connections, caches), not measured.
  wrk -t2 -c"$c" -d2s -s bench/verify.lua "$url" >/dev/null 2>&1 || true
  [ "$pid" != "-" ] && t0=$(ticks "$pid")
  local out; out=$(wrk -t2 -c"$c" -d"${DURATION}s" --timeout 10s -s bench/verify.lua "$url" | tail -n 1)
  [ "$pid" != "-" ] && t1=$(ticks "$pid")
  local rss=0 hwm=0; [ "$pid" != "-" ] && { rss=$(rss_kb "$pid"); hwm=$(hwm_kb "$pid"); }
  python3 - "$name" "$c" "$out" "$((t1 - t0))" "$HZ" "$rss" "$hwm" >>"$WORK/runs.jsonl" <<'PY'
import json, sys
name, c, out, dt, hz, rss, hwm = sys.argv[1:]
r = json.loads(out)
r.update(name=name, c=int(c), cpu_s=int(dt) / int(hz), rss_kb=int(rss), hwm_kb=int(hwm))
print(json.dumps(r))
PY
  echo "  $name c=$c: $(tail -n 1 "$WORK/runs.jsonl")" >&2
}

metric() { # port name-with-labels → value
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {print $NF; exit}'
}

echo "running: duration ${DURATION}s per run, $PAYMENTS distinct payments" >&2
for c in 8 32; do
  run reference "http://127.0.0.1:$REF_PORT" "$c" "$REF_PID"
  RPC0=$(metric "$GH_PORT" 'gatehouse_rpc_requests_total{outcome="ok"}'); RPC0=${RPC0:-0}
  V0=$(metric "$GH_PORT" 'gatehouse_decisions_total{gate="verify",decision="allow"}'); V0=${V0:-0}
  run gatehouse "http://127.0.0.1:$GH_PORT" "$c" "$GH_PID"
  RPC1=$(metric "$GH_PORT" 'gatehouse_rpc_requests_total{outcome="ok"}'); RPC1=${RPC1:-0}
  V1=$(metric "$GH_PORT" 'gatehouse_decisions_total{gate="verify",decision="allow"}'); V1=${V1:-0}
  echo "{\"name\":\"rpc\",\"c\":$c,\"rpc\":$(python3 -c "print($RPC1-$RPC0)"),\"verifies\":$(python3 -c "print($V1-$V0)")}" >>"$WORK/runs.jsonl"
done
run noop-direct "http://127.0.0.1:$NOOP_PORT" 8 -
run gatehouse-forward "http://127.0.0.1:$FW_PORT" 8 "$FW_PID"

python3 - "$WORK/runs.jsonl" "$DURATION" "$PAYMENTS" >bench/RESULTS.md <<'PY'
import json, os, platform, subprocess, sys, datetime
runs = [json.loads(l) for l in open(sys.argv[1])]
duration, payments = sys.argv[2], sys.argv[3]
def get(name, c):
    return next(r for r in runs if r["name"] == name and r["c"] == c)
def rps(r): return r["requests"] / (r["duration_us"] / 1e6)
def ms(us): return us / 1000
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = []
out.append(f"# /verify benchmark: Gatehouse (every check on) vs the reference facilitator\n")
out.append(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPU ({cpu}), "
           f"load average before the run {os.getloadavg()[0]:.1f} (shared machine). "
           f"Command: `bench/compare.sh {duration} {payments}` (wrk, {duration} s per run, 2 threads, "
           f"{payments} distinct signed EIP-3009 payments, one anvil).\n")
out.append("| facilitator | c | verifies/s | p50 ms | p99 ms | valid % | CPU s / 1k verifies | RSS MB (peak) |")
out.append("|---|---|---|---|---|---|---|---|")
for c in (8, 32):
    for name in ("reference", "gatehouse"):
        r = get(name, c)
        n = max(r["requests"], 1)
        valid = 100 * r["valid"] / n
        out.append(f"| {name} | {c} | {rps(r):.0f} | {ms(r['p50_us']):.2f} | {ms(r['p99_us']):.2f} | {valid:.1f} | "
                   f"{1000 * r['cpu_s'] / n:.3f} | {r['rss_kb']/1024:.0f} ({r['hwm_kb']/1024:.0f}) |")
out.append("")
for c in (8, 32):
    g, ref = get("gatehouse", c), get("reference", c)
    rpc = get("rpc", c)
    per = rpc["rpc"] / rpc["verifies"] if rpc["verifies"] else float("nan")
    out.append(f"- c={c}: Gatehouse/reference throughput **{rps(g)/max(rps(ref),1e-9):.1f}×** "
               f"(target ≥ 10×); Gatehouse RPC round trips per verify **{per:.2f}** (target ≤ 1)"
               + (f"; Gatehouse p99 **{ms(g['p99_us']):.2f} ms** (target < 15 ms)" if c == 8 else ""))
d, f = get("noop-direct", 8), get("gatehouse-forward", 8)
out.append(f"- Forwarding alone (no-op upstream, c=8): direct p50 {ms(d['p50_us']):.2f} / p99 {ms(d['p99_us']):.2f} ms; "
           f"through Gatehouse (same checks, forward mode) p50 {ms(f['p50_us']):.2f} / p99 {ms(f['p99_us']):.2f} ms; "
           f"**added p50 {ms(f['p50_us']-d['p50_us']):.2f} ms, p99 {ms(f['p99_us']-d['p99_us']):.2f} ms**.")
bad = [r for r in runs if "valid" in r and r["name"] != "noop-direct" and r["invalid"]]
for r in bad:
    out.append(f"- note: {r['name']} c={r['c']}: {r['invalid']} answers not valid, e.g. `{r['sample']}`")
print("\n".join(out))
PY
cat bench/RESULTS.md
