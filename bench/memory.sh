#!/usr/bin/env bash
# A write-heavy run against a 3-member raftkv alone, for measuring memory changes:
# preloads the keys, runs puts from 64 clients spread over all members for BENCH_SECS,
# waits IDLE_SECS, and prints each member's peak RSS (VmHWM), the peak of the three
# together (sampled every 100 ms), the RSS after the idle wait, the server CPU µs per
# put and the size of each member's newest snapshot file.
#
#   bench/memory.sh                          # 60 s of puts, 100k keys, 256-byte values
#   BENCH_SECS=30 SNAPSHOT_COUNT=20000 bench/memory.sh
#
# Environment: BENCH_SECS (default 60), COUNT (stop after this many puts instead, so
# that two builds end with the same state; default 0: no count), IDLE_SECS (default 10), KEYS (default 100000),
# SNAPSHOT_COUNT (--snapshot-count, default the server's), PORT_BASE (default 40100),
# RAFTKV (the binary; default: build target/release/raftkv).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${BENCH_SECS:-60}"; IDLE_SECS="${IDLE_SECS:-10}"; KEYS="${KEYS:-100000}"
BASE="${PORT_BASE:-40100}"
if [ -z "${RAFTKV:-}" ]; then cargo build --release -q -p raftkv; RAFTKV=target/release/raftkv; fi
WORK="$(mktemp -d /tmp/raftkv-memory.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
SNAP=(); [ -n "${SNAPSHOT_COUNT:-}" ] && SNAP=(--snapshot-count "$SNAPSHOT_COUNT")
CLUSTER="m1=http://127.0.0.1:$((BASE + 11)),m2=http://127.0.0.1:$((BASE + 12)),m3=http://127.0.0.1:$((BASE + 13))"
for i in 1 2 3; do
  "$RAFTKV" server --name "m$i" --data-dir "$WORK/m$i" "${SNAP[@]}" \
    --listen-client-urls "http://127.0.0.1:$((BASE + i))" --listen-peer-urls "http://127.0.0.1:$((BASE + 10 + i))" \
    --initial-cluster "$CLUSTER" --log-level warn >"$WORK/m$i.log" 2>&1 &
  PIDS+=($!)
done
SERVERS=("${PIDS[@]}")
EP="http://127.0.0.1:$((BASE + 1)),http://127.0.0.1:$((BASE + 2)),http://127.0.0.1:$((BASE + 3))"
deadline=$((SECONDS + 30))
until "$RAFTKV" bench --endpoints "$EP" --keys 1 --count 1 --duration-secs 2 --quiet >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "no leader after 30 s" >&2; tail "$WORK"/m*.log >&2; exit 1; }
  sleep 0.2
done
python3 bench/rss_sampler.py "$WORK/rss.csv" "$WORK/STOP" "${SERVERS[@]}" &
SAMPLER=$!; PIDS+=($SAMPLER)
ticks() { local t=0 p; for p in "${SERVERS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
"$RAFTKV" bench --endpoints "$EP" --preload --duration-secs 0 --clients 64 --keys "$KEYS" --quiet >/dev/null
c0=$(ticks)
"$RAFTKV" bench --endpoints "$EP" --spread --workload put --clients 64 --connections 8 --keys "$KEYS" \
  --duration-secs "$SECS" --count "${COUNT:-0}" --quiet --json "$WORK/put.json"
c1=$(ticks)
for p in "${SERVERS[@]}"; do kill -0 "$p" || { echo "member $p died" >&2; tail "$WORK"/m*.log >&2; exit 1; }; done
sleep "$IDLE_SECS"
touch "$WORK/STOP"; wait "$SAMPLER" || true
python3 - "$WORK" "$c0" "$c1" "$(getconf CLK_TCK)" "$SECS" "$IDLE_SECS" "${SERVERS[@]}" <<'PY'
import glob, json, os, sys
work, c0, c1, tck, secs, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
pids = sys.argv[7:]
rows = [[int(x) / 1024 for x in l.split()] for l in open(f"{work}/rss.csv") if l.strip()]
hwm = [next(int(l.split()[1]) / 1024 for l in open(f"/proc/{p}/status") if l.startswith("VmHWM:")) for p in pids]
put = json.load(open(f"{work}/put.json"))
snaps = []
for i in (1, 2, 3):
    files = sorted(glob.glob(f"{work}/m{i}/**/*.snap", recursive=True), key=os.path.getmtime)
    snaps.append(os.path.getsize(files[-1]) / 2**20 if files else 0)
f = lambda v: " / ".join(f"{x:.0f}" for x in v)
print(f"puts: {put['ops']} in {put['seconds']:.1f} s = {put['ops_per_sec']:.0f} ops/s, p99 {put['latency_ms']['p99']:.1f} ms, max {put['latency_ms']['max']:.0f} ms")
print(f"server CPU per put: {1e6 * (c1 - c0) / tck / max(put['ops'], 1):.0f} µs (3 members); load {open('/proc/loadavg').read().split()[0]}")
print(f"peak RSS per member (VmHWM), MiB: {f(hwm)}")
print(f"peak RSS of the 3 together, MiB: {max(sum(r) for r in rows):.0f}")
print(f"RSS after {idle} s idle, MiB: {f(rows[-1])}")
print(f"newest snapshot file per member, MiB: {f(snaps)}")
PY
