#!/usr/bin/env bash
# Where a latency-critical packet waits while bulk saturates the links: the QoS set of
# bench/linux.sh (sockperf UDP ping-pong on port 11111 in a latency-critical class, 3 TBF
# links of 100/200/300 Mbit/s, iperf3 -P 4 through braid), with tcpdump in both namespaces.
# Each request and reply is found four times: leaving the client side's vNIC (braid0) for
# braid, leaving on the first link, arriving on the far side's first link, and arriving at
# the far side's vNIC. bench/qos_trace.py prints the percentiles of each step:
#   a tx   braid0 -> link, side a: braid's TX path (vNIC read, engine, pacer, send)
#   wire   link -> link: the veth and its TBF
#   b rx   link -> braid0, side b: braid's RX path (socket read, engine, vNIC write)
# and the same for the reply (b tx, wire, a rx), so what the applications add is the rest
# of sockperf's RTT. The testbed is `--mac-only` so the links show the inner ports (the
# payload is authenticated, not encrypted); the capture itself costs some CPU. The last two
# lines are the round trip at the client side's braid0 and the server's turnaround at its
# braid0: sockperf's RTT less them is the client's own send and wake-up.
# Usage (root): bash bench/qos-trace.sh [--braid PATH] [--out DIR] [--time SECS] [--rt]
#   --rt     braid's workers SCHED_FIFO 50 and sockperf chrt -f 60 (bench/linux.sh's
#            real-time set); default: default priorities
# Needs tcpdump, sockperf, iperf3 and python3 (apt-get installs the first three when
# missing). Everything it creates is testbed `braid-qtrace`, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BRAID=$REPO/target/release/braid
OUT=/tmp/braid-qos-trace
DUR=8
RT=0
while [ $# -gt 0 ]; do
  case $1 in
    --braid) BRAID=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --time) DUR=$2; shift 2 ;;
    --rt) RT=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "bench/qos-trace.sh must run as root: it creates network namespaces, TBF links and TUN devices, and captures on them (try: sudo bash bench/qos-trace.sh)" >&2
  exit 1
fi
need=()
for t in tcpdump sockperf iperf3; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed for the analysis" >&2; exit 1; }
[ -x "$BRAID" ] || { echo "no braid binary at $BRAID (cargo build --release -p braid, or --braid PATH)" >&2; exit 1; }

TB=braid-qtrace; NSA=$TB-a; NSB=$TB-b
PIDS=()
cleanup() {
  local rc=$?
  # KILL: a TERM'd iperf3 client whose server is gone can block in a send for minutes.
  for p in "${PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$BRAID" testbed down --name "$TB" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
rm -f "$OUT"/*.pcap "$OUT"/*.log

prio=(nice -n 0); rt=()
if [ "$RT" = 1 ]; then prio=(chrt -f 60); rt=(--realtime-priority 50); fi
"$BRAID" testbed up --name "$TB" --braid "$BRAID" --links 100mbit,200mbit,300mbit \
  --latency-class udp:11111 --mac-only "${rt[@]}" >"$OUT/testbed.log" 2>&1 \
  || { cat "$OUT/testbed.log" >&2; exit 1; }
timeout $((DUR + 40)) ip netns exec "$NSB" iperf3 -s -1 -p 5201 >"$OUT/iperf-server.log" 2>&1 &
PIDS+=($!)
sleep 0.5
timeout $((DUR + 30)) ip netns exec "$NSA" iperf3 -c 10.99.0.2 -p 5201 -P 4 -t $((DUR + 6)) \
  >"$OUT/iperf.log" 2>&1 &
PIDS+=($!)
sleep 2
# Inner UDP ports on the links: outer UDP header 8 + braid header with AUTH 40 + inner IPv4 20.
filter='udp and (port 11111 or udp[68:2] = 11111 or udp[70:2] = 11111)'
for side in a b; do
  timeout $((DUR + 20)) ip netns exec "$TB-$side" tcpdump -i any -w "$OUT/$side.pcap" -B 32768 \
    --time-stamp-precision=nano "$filter" >"$OUT/tcpdump-$side.log" 2>&1 &
  PIDS+=($!)
done
timeout $((DUR + 20)) ip netns exec "$NSB" "${prio[@]}" taskset -c 1 sockperf server \
  -i 10.99.0.2 -p 11111 >"$OUT/sockperf-server.log" 2>&1 &
PIDS+=($!)
sleep 1
timeout $((DUR + 20)) ip netns exec "$NSA" "${prio[@]}" taskset -c 0 sockperf ping-pong \
  -i 10.99.0.2 -p 11111 -t "$DUR" --msg-size 64 --full-rtt --no-rdtsc >"$OUT/sockperf.log" 2>&1
sleep 0.5
# The captures and the sockperf server stop now; iperf3 ends by itself (-t), a few s later.
for p in "${PIDS[@]:2}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
echo "sockperf RTT (µs): p50 $(awk '/percentile 50.000 =/ {print $NF}' "$OUT/sockperf.log")," \
  "p99 $(awk '/percentile 99.000 =/ {print $NF}' "$OUT/sockperf.log")"
echo "bulk: $(grep -E 'SUM.*sender' "$OUT/iperf.log" | tail -1 | awk '{print $(NF-3), $(NF-2)}')"
python3 "$REPO/bench/qos_trace.py" "$OUT/a.pcap" "$OUT/b.pcap"
