#!/usr/bin/env bash
# A/B of two or more raftkv server binaries, raftkv only, alternating, in one session:
# each round starts a fresh 3-member cluster per binary (the order rotates every round,
# so no binary always runs on the warmer machine), preloads the keys, runs the spread
# cases of bench/compare-etcd.sh one after the other, then leaves the cluster idle.
# Per run it prints the server CPU µs per operation of each case (utime+stime of the
# three members / ops), ops/s, the peak RSS of the three members together (sampled
# every 100 ms), and each member's RSS after IDLE_SECS of idle; at the end, per binary,
# the mean and the range (min-max) over the rounds. The load generator is one binary
# for every run (LOADGEN), so only the servers differ.
#
#   bench/ab.sh /tmp/raftkv-old target/release/raftkv
#   ROUNDS=5 BENCH_SECS=10 bench/ab.sh A B C
#
# Environment: ROUNDS (default 3), BENCH_SECS (per case, default 5), KEYS (default
# 100000), IDLE_SECS (default 20), CASES (default "put-64 put-256 get-64"), PORT_BASE
# (the 20 ports from it; default 40200), LOADGEN (default the first binary).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ROUNDS="${ROUNDS:-3}"; SECS="${BENCH_SECS:-5}"; KEYS="${KEYS:-100000}"; IDLE_SECS="${IDLE_SECS:-20}"
BASE="${PORT_BASE:-40200}"; LOADGEN="${LOADGEN:-$1}"
read -r -a CASES <<<"${CASES:-put-64 put-256 get-64}"
BINS=("$@")
WORK="$(mktemp -d /tmp/raftkv-ab.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
case_args() {
  case "$1" in
    put-1) echo "--workload put --clients 1 --connections 1" ;;
    put-64) echo "--workload put --clients 64 --connections 8" ;;
    put-256) echo "--workload put --clients 256 --connections 16" ;;
    get-64) echo "--workload get --clients 64 --connections 8" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# One run: $1 label, $2 binary, $3 output file (one "key value" line per figure).
run() {
  local label="$1" bin="$2" out="$3" dir="$WORK/run" i servers=() sampler c0 c1 name
  rm -rf "$dir"; mkdir -p "$dir"
  local cluster="m1=http://127.0.0.1:$((BASE + 11)),m2=http://127.0.0.1:$((BASE + 12)),m3=http://127.0.0.1:$((BASE + 13))"
  for i in 1 2 3; do
    "$bin" server --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:$((BASE + i))" --listen-peer-urls "http://127.0.0.1:$((BASE + 10 + i))" \
      --initial-cluster "$cluster" --log-level warn >"$dir/m$i.log" 2>&1 &
    PIDS+=($!); servers+=($!)
  done
  local ep="http://127.0.0.1:$((BASE + 1)),http://127.0.0.1:$((BASE + 2)),http://127.0.0.1:$((BASE + 3))"
  local deadline=$((SECONDS + 30))
  until "$LOADGEN" bench --endpoints "$ep" --workload put --keys 1 --count 1 --duration-secs 2 --quiet >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$label: no leader after 30 s" >&2; tail "$dir"/m*.log >&2; exit 1; }
    sleep 0.2
  done
  python3 "$(dirname "$0")/rss_sampler.py" "$dir/rss.csv" "$dir/STOP" "${servers[@]}" &
  sampler=$!; PIDS+=($sampler)
  "$LOADGEN" bench --endpoints "$ep" --preload --duration-secs 0 --clients 64 --keys "$KEYS" --value-size 256 --quiet >/dev/null
  : >"$out"
  echo "load_before $(cut -d' ' -f1 /proc/loadavg)" >>"$out"
  for name in "${CASES[@]}"; do
    c0=$(ticks "${servers[@]}")
    # shellcheck disable=SC2046
    "$LOADGEN" bench --endpoints "$ep" --spread $(case_args "$name") --keys "$KEYS" --value-size 256 \
      --duration-secs "$SECS" --quiet --json "$dir/$name.json" >/dev/null
    c1=$(ticks "${servers[@]}")
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[2], j["ops"], j["ops_per_sec"])' \
      "$dir/$name.json" "$name" | while read -r n ops rate; do
      echo "$n.cpu_us_per_op $(python3 -c "print(1e6 * ($c1 - $c0) / $(getconf CLK_TCK) / max($ops, 1))")"
      echo "$n.ops_per_sec $rate"
    done >>"$out"
  done
  for p in "${servers[@]}"; do kill -0 "$p" || { echo "$label: member $p died" >&2; tail "$dir"/m*.log >&2; exit 1; }; done
  echo "load_after $(cut -d' ' -f1 /proc/loadavg)" >>"$out"
  sleep "$IDLE_SECS"
  touch "$dir/STOP"; wait "$sampler" || true
  python3 - "$dir/rss.csv" >>"$out" <<'PY'
import sys
rows = [[int(x) / 1024 for x in l.split()] for l in open(sys.argv[1]) if l.strip()]
print("peak_rss_3_mib", max(sum(r) for r in rows))
for i, v in enumerate(rows[-1]):
    print(f"idle_rss_m{i + 1}_mib", v)
print("idle_rss_max_mib", max(rows[-1]))
PY
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

n=${#BINS[@]}
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    b="${BINS[$(((k + r - 1) % n))]}"; label="$(basename "$b")"
    run "$label" "$b" "$WORK/$label.$r"
    echo "round $r $label: $(tr '\n' ' ' <"$WORK/$label.$r")"
  done
done
python3 - "$WORK" "$ROUNDS" "${BINS[@]}" <<'PY'
import sys
work, rounds, bins = sys.argv[1], int(sys.argv[2]), [b.rsplit("/", 1)[-1] for b in sys.argv[3:]]
runs = {b: [dict(l.split() for l in open(f"{work}/{b}.{r}")) for r in range(1, rounds + 1)] for b in bins}
keys = [k for k in runs[bins[0]][0] if not k.startswith("load")]
print("figure | " + " | ".join(f"{b} mean (min-max)" for b in bins))
for k in keys:
    cells = []
    for b in bins:
        v = [float(run[k]) for run in runs[b]]
        cells.append(f"{sum(v) / len(v):.0f} ({min(v):.0f}-{max(v):.0f})")
    print(f"{k} | " + " | ".join(cells))
PY
