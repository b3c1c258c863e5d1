#!/usr/bin/env bash
# Starts a 3-member raftkv and a 3-member etcd 3.4 on loopback and runs the same
# `raftkv bench` cases against both, alternating, in one run. Every case runs twice:
# with the connections spread over all members (as etcd's clients spread them: the
# headline, since two thirds of the writes then arrive at followers) and leader-only.
#
# Per case it records ops/s, p50/p99/max latency, the servers' CPU seconds per operation
# (utime+stime of the three members from /proc/PID/stat before and after the case: the
# figure that holds on a loaded or different machine, where ops/s do not), the peak
# resident memory of each system's three members (sampled every 100 ms over the case)
# and the load average. It writes into a results directory:
#   results.md   the table (with date, machine, load, versions), ready for the README
#   chart.svg    ops/s and CPU per operation per case, raftkv next to etcd
#   rss.csv      the memory samples (seconds, then RSS KiB of r1 r2 r3 e1 e2 e3)
#   cases.csv    one line per run: start/end, CPU ticks before/after, load
#   *.json       each `raftkv bench` run's own results
#
#   bench/compare-etcd.sh                  # 10 s per case
#   BENCH_SECS=30 bench/compare-etcd.sh    # longer cases
#   bench/compare-etcd.sh --quick          # 3 s per case, 10k keys: checks the setup
#
# Environment: BENCH_SECS (seconds per case), RESULTS (directory; default
# target/compare-etcd/<UTC time>), PORT_BASE (the 40 ports from it; default 40000),
# IDLE_SECS (wait before the idle memory reading, default 10), ETCD (the etcd binary).
# Needs: the etcd binary (apt-get install etcd-server), python3 (stdlib only).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then SECS="${BENCH_SECS:-3}"; KEYS=10000; else SECS="${BENCH_SECS:-10}"; KEYS=100000; fi
IDLE_SECS="${IDLE_SECS:-10}"
BASE="${PORT_BASE:-40000}"
ETCD="${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}"
[ -x "$ETCD" ] || { echo "etcd not found: apt-get install etcd-server (or set ETCD=/path/to/etcd)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found (needed for the table and chart)" >&2; exit 1; }
cargo build --release -q -p raftkv
RAFTKV=target/release/raftkv
RESULTS="${RESULTS:-target/compare-etcd/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"
WORK="$(mktemp -d /tmp/raftkv-vs-etcd.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Ports: raftkv clients BASE+1..3, peers BASE+11..13; etcd clients BASE+21..23, peers BASE+31..33.
port() { echo $((BASE + $1)); }
R_CLUSTER="r1=http://127.0.0.1:$(port 11),r2=http://127.0.0.1:$(port 12),r3=http://127.0.0.1:$(port 13)"
E_CLUSTER="e1=http://127.0.0.1:$(port 31),e2=http://127.0.0.1:$(port 32),e3=http://127.0.0.1:$(port 33)"
R_PIDS=(); E_PIDS=()
for i in 1 2 3; do
  "$RAFTKV" server --name "r$i" --data-dir "$WORK/r$i" \
    --listen-client-urls "http://127.0.0.1:$(port "$i")" --listen-peer-urls "http://127.0.0.1:$(port $((10 + i)))" \
    --initial-cluster "$R_CLUSTER" --log-level warn >"$RESULTS/r$i.log" 2>&1 &
  PIDS+=($!); R_PIDS+=($!)
  "$ETCD" --name "e$i" --data-dir "$WORK/e$i" \
    --listen-client-urls "http://127.0.0.1:$(port $((20 + i)))" --advertise-client-urls "http://127.0.0.1:$(port $((20 + i)))" \
    --listen-peer-urls "http://127.0.0.1:$(port $((30 + i)))" --initial-advertise-peer-urls "http://127.0.0.1:$(port $((30 + i)))" \
    --initial-cluster "$E_CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    --log-level error >"$RESULTS/e$i.log" 2>&1 &
  PIDS+=($!); E_PIDS+=($!)
done
R_EP="http://127.0.0.1:$(port 1),http://127.0.0.1:$(port 2),http://127.0.0.1:$(port 3)"
E_EP="http://127.0.0.1:$(port 21),http://127.0.0.1:$(port 22),http://127.0.0.1:$(port 23)"

# Memory sampler: every 100 ms, the RSS of the six members, until the file STOP appears.
python3 - "$RESULTS/rss.csv" "$WORK/STOP" "${R_PIDS[@]}" "${E_PIDS[@]}" <<'PY' &
import os, sys, time
out, stop, pids = sys.argv[1], sys.argv[2], sys.argv[3:]
def rss(p):
    try:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
with open(out, "w") as f:
    f.write("secs,r1,r2,r3,e1,e2,e3\n")
    while not os.path.exists(stop):
        f.write(f"{time.time():.2f}," + ",".join(str(rss(p)) for p in pids) + "\n")
        f.flush()
        time.sleep(0.1)
PY
SAMPLER=$!
PIDS+=($SAMPLER)

# utime+stime (clock ticks) of the given processes, summed.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null || { echo "a server (pid $p) died; logs in $RESULTS" >&2; exit 1; }; done; }
# Waits until the system at $1 has a leader that takes a write (at most 30 s).
wait_ready() {
  local deadline=$((SECONDS + 30))
  until "$RAFTKV" bench --endpoints "$1" --workload put --keys 1 --count 1 --duration-secs 2 --quiet >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "no leader at $1 after 30 s; logs in $RESULTS" >&2; exit 1; }
    sleep 0.2
  done
}
wait_ready "$R_EP"; wait_ready "$E_EP"

# case name | bench arguments (each runs spread over all members, then leader-only)
CASES=(
  "put-1|--workload put --clients 1 --connections 1"
  "put-64|--workload put --clients 64 --connections 8"
  "put-256|--workload put --clients 256 --connections 16"
  "get-64|--workload get --clients 64 --connections 8"
)
DATA="--keys $KEYS --value-size 256"
# Reads need data: preload every key once on both.
for ep in "$R_EP" "$E_EP"; do
  # shellcheck disable=SC2086
  "$RAFTKV" bench --endpoints "$ep" --preload --duration-secs 0 --clients 64 --quiet $DATA >/dev/null
done
echo "case,mode,sys,start,end,ticks_before,ticks_after,load_before,load_after" >"$RESULTS/cases.csv"
n=0
for c in "${CASES[@]}"; do
  name="${c%%|*}"; args="${c#*|}"
  for mode in spread leader; do
    flag=""; [ "$mode" = spread ] && flag="--spread"
    # Alternate which system goes first, so neither always runs on a warmer machine.
    order="raftkv etcd"; [ $((n % 2)) = 1 ] && order="etcd raftkv"; n=$((n + 1))
    for sys in $order; do
      if [ "$sys" = raftkv ]; then ep="$R_EP"; pids=("${R_PIDS[@]}"); else ep="$E_EP"; pids=("${E_PIDS[@]}"); fi
      alive "${pids[@]}"
      t0=$(date +%s.%N); c0=$(cpu_ticks "${pids[@]}"); l0=$(cut -d' ' -f1 /proc/loadavg)
      # shellcheck disable=SC2086
      "$RAFTKV" bench --endpoints "$ep" $flag $args $DATA --duration-secs "$SECS" --quiet \
        --json "$RESULTS/$name-$mode-$sys.json" | sed "s/^/  $mode $sys: /"
      c1=$(cpu_ticks "${pids[@]}"); t1=$(date +%s.%N); l1=$(cut -d' ' -f1 /proc/loadavg)
      echo "$name,$mode,$sys,$t0,$t1,$c0,$c1,$l0,$l1" >>"$RESULTS/cases.csv"
    done
  done
done
alive "${R_PIDS[@]}" "${E_PIDS[@]}"
# An idle member should give back what the load made it allocate.
sleep "$IDLE_SECS"
IDLE_AT=$(date +%s.%N)
sleep 0.5
touch "$WORK/STOP"; wait "$SAMPLER" || true
hwm() { local p; for p in "$@"; do awk '/VmHWM/{printf "%d ", $2}' "/proc/$p/status"; done; }
R_HWM=$(hwm "${R_PIDS[@]}"); E_HWM=$(hwm "${E_PIDS[@]}")
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(nproc) cores"
  echo "kernel=$(uname -sr)"
  echo "raftkv=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "etcd=$("$ETCD" --version | awk '/etcd Version/{print $3}')"
  echo "secs=$SECS"; echo "keys=$KEYS"; echo "idle_secs=$IDLE_SECS"; echo "idle_at=$IDLE_AT"; echo "clk_tck=$(getconf CLK_TCK)"
  echo "r_hwm=$R_HWM"; echo "e_hwm=$E_HWM"
} >"$RESULTS/meta.txt"
python3 bench/compare_report.py "$RESULTS"
echo "results in $RESULTS"
