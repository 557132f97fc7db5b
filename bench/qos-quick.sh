#!/usr/bin/env bash
# One quick pass of the QoS set of bench/linux.sh (section 5), for A/B comparisons of
# binaries or settings: the latency-critical sockperf ping-pong (UDP 11111) alone, then while
# iperf3 -P 4 through braid fills 3 TBF links of 100/200/300 Mbit/s. Prints one line each:
# the RTT p50/p99/p99.9 alone and loaded, and the bulk's rate. No control run, no summary.
# Usage (root): bash bench/qos-quick.sh [--braid PATH] [--time SECS] [--rt] [-- TESTBED-OPTS]
#   --rt           braid's workers SCHED_FIFO 50 and sockperf chrt -f 60 (the real-time set)
#   TESTBED-OPTS   more options for `braid testbed up`, e.g. `--busy-poll-us 0`
# Needs sockperf and iperf3 (bench/linux.sh installs them). Everything it creates is testbed
# `braid-qquick`, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=$PWD/target/release/braid
DUR=10
RT=0
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --braid) BRAID=$2; shift 2 ;;
    --time) DUR=$2; shift 2 ;;
    --rt) RT=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "bench/qos-quick.sh must run as root: it creates network namespaces, TBF links and TUN devices" >&2
  exit 1
fi
for t in sockperf iperf3; do
  command -v "$t" >/dev/null || { echo "$t is missing (apt-get install $t)" >&2; exit 1; }
done
[ -x "$BRAID" ] || { echo "no braid binary at $BRAID (cargo build --release -p braid, or --braid PATH)" >&2; exit 1; }
TB=braid-qquick; NSA=$TB-a; NSB=$TB-b
OUT=$(mktemp -d /tmp/braid-qquick.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$BRAID" testbed down --name "$TB" >/dev/null 2>&1 || true
  rm -rf "$OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

prio=(nice -n 0); rt=()
if [ "$RT" = 1 ]; then prio=(chrt -f 60); rt=(--realtime-priority 50); fi
"$BRAID" testbed up --name "$TB" --braid "$BRAID" --links 100mbit,200mbit,300mbit \
  --latency-class udp:11111 "${rt[@]}" "${EXTRA[@]}" >"$OUT/testbed.log" 2>&1 \
  || { cat "$OUT/testbed.log" >&2; exit 1; }
# latency LABEL: sockperf ping-pong for $DUR s, from the same client port each time.
latency() {
  timeout $((DUR + 20)) ip netns exec "$NSB" "${prio[@]}" taskset -c 1 sockperf server \
    -i 10.99.0.2 -p 11111 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  timeout $((DUR + 20)) ip netns exec "$NSA" "${prio[@]}" taskset -c 0 sockperf ping-pong \
    -i 10.99.0.2 -p 11111 -t "$DUR" --msg-size 64 --full-rtt --no-rdtsc --client_port 11112 \
    >"$OUT/$1.log" 2>&1 || true
  kill "$srv" 2>/dev/null || true
  wait "$srv" 2>/dev/null || true
  local p
  printf '%-8s RTT µs p50 / p99 / p99.9:' "$1"
  for p in 50 99 99.9; do
    printf ' %s' "$(awk -v q="percentile $(printf '%.3f' "$p") =" 'index($0, q) {print $NF}' "$OUT/$1.log")"
  done
  echo
}
latency alone
timeout $((DUR + 40)) ip netns exec "$NSB" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5
timeout $((DUR + 30)) ip netns exec "$NSA" iperf3 -c 10.99.0.2 -p 5201 -P 4 -t $((DUR + 6)) \
  >"$OUT/iperf.log" 2>&1 &
PIDS+=($!)
sleep 3 # the streams fill the links
latency loaded
wait "${PIDS[@]}" 2>/dev/null || true
PIDS=()
echo "bulk     $(grep -E 'SUM.*receiver' "$OUT/iperf.log" | awk '{print $(NF-2), $(NF-1)}')"
