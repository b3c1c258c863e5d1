#!/usr/bin/env bash
# Starts a 3-member raftkv and a 3-member etcd 3.4 (Debian etcd-server) on loopback, runs
# the same `raftkv bench` cases against both, alternating, in one run, and prints a
# side-by-side table with ratios and each server's resident memory.
#
#   bench/compare-etcd.sh            # 10 s per case
#   BENCH_SECS=30 bench/compare-etcd.sh
#
# Needs: the etcd binary (apt-get install etcd-server), python3 (for the table).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${BENCH_SECS:-10}"
ETCD="${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}"
[ -x "$ETCD" ] || { echo "etcd not found: apt-get install etcd-server (or set ETCD=/path/to/etcd)" >&2; exit 1; }
cargo build --release -q -p raftkv
RAFTKV=target/release/raftkv
WORK="$(mktemp -d /tmp/raftkv-vs-etcd.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# raftkv on 4x379/4x380, etcd on 5x379/5x380.
R_CLUSTER="r1=http://127.0.0.1:41380,r2=http://127.0.0.1:42380,r3=http://127.0.0.1:43380"
E_CLUSTER="e1=http://127.0.0.1:51380,e2=http://127.0.0.1:52380,e3=http://127.0.0.1:53380"
R_PIDS=(); E_PIDS=()
for i in 1 2 3; do
  "$RAFTKV" server --name "r$i" --data-dir "$WORK/r$i" \
    --listen-client-urls "http://127.0.0.1:4${i}379" --listen-peer-urls "http://127.0.0.1:4${i}380" \
    --initial-cluster "$R_CLUSTER" --log-level warn >"$WORK/r$i.log" 2>&1 &
  PIDS+=($!); R_PIDS+=($!)
  "$ETCD" --name "e$i" --data-dir "$WORK/e$i" \
    --listen-client-urls "http://127.0.0.1:5${i}379" --advertise-client-urls "http://127.0.0.1:5${i}379" \
    --listen-peer-urls "http://127.0.0.1:5${i}380" --initial-advertise-peer-urls "http://127.0.0.1:5${i}380" \
    --initial-cluster "$E_CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    --log-level error >"$WORK/e$i.log" 2>&1 &
  PIDS+=($!); E_PIDS+=($!)
done
R_EP="http://127.0.0.1:41379,http://127.0.0.1:42379,http://127.0.0.1:43379"
E_EP="http://127.0.0.1:51379,http://127.0.0.1:52379,http://127.0.0.1:53379"
sleep 3

rss_mb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $((t / 1024)); }

# case name | bench arguments
CASES=(
  "put-1|--workload put --clients 1 --connections 1"
  "put-64|--workload put --clients 64 --connections 8"
  "put-256|--workload put --clients 256 --connections 16"
  "get-64|--workload get --clients 64 --connections 8"
)
DATA="--keys 100000 --value-size 256"
COMMON="$DATA --duration-secs $SECS --quiet"
# Reads need data: preload every key once on both.
for ep in "$R_EP" "$E_EP"; do
  # shellcheck disable=SC2086
  "$RAFTKV" bench --endpoints "$ep" --preload --duration-secs 0 --clients 64 --quiet $DATA >/dev/null
done
for c in "${CASES[@]}"; do
  name="${c%%|*}"; args="${c#*|}"
  for sys in raftkv etcd; do
    ep="$R_EP"; [ "$sys" = etcd ] && ep="$E_EP"
    # shellcheck disable=SC2086
    "$RAFTKV" bench --endpoints "$ep" $args $COMMON --json "$WORK/$name-$sys.json" | sed "s/^/  $sys: /"
  done
done
R_RSS=$(rss_mb "${R_PIDS[@]}"); E_RSS=$(rss_mb "${E_PIDS[@]}")
python3 - "$WORK" "$R_RSS" "$E_RSS" <<'PY'
import json, sys
work, r_rss, e_rss = sys.argv[1], sys.argv[2], sys.argv[3]
cases = ["put-1", "put-64", "put-256", "get-64"]
print()
print(f"{'case':<10} {'raftkv ops/s':>13} {'etcd ops/s':>11} {'ratio':>6}   {'raftkv p50/p99 ms':>18} {'etcd p50/p99 ms':>16}")
for c in cases:
    r = json.load(open(f"{work}/{c}-raftkv.json")); e = json.load(open(f"{work}/{c}-etcd.json"))
    ratio = r["ops_per_sec"] / max(e["ops_per_sec"], 1e-9)
    rl, el = r["latency_ms"], e["latency_ms"]
    print(f"{c:<10} {r['ops_per_sec']:>13.0f} {e['ops_per_sec']:>11.0f} {ratio:>5.2f}x   {rl['p50']:>8.3f}/{rl['p99']:<9.3f} {el['p50']:>7.3f}/{el['p99']:<8.3f}")
print(f"\nresident memory, 3 members: raftkv {r_rss} MiB, etcd {e_rss} MiB")
PY
