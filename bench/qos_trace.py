#!/usr/bin/env python3
"""Percentiles of each step of the latency-critical packets in two captures (bench/qos-trace.sh).

Usage: qos_trace.py A.pcap B.pcap, the `tcpdump -i any --time-stamp-precision=nano` captures
of the client side (a) and the server side (b) of a `--mac-only` testbed. Packets on braid0
are the inner UDP packets (port 11111 and the client's port); on the links they are braid
packets whose inner IPv4/UDP packet follows the 40-byte braid header. A packet is known by
its direction and the first 16 bytes of its UDP payload (sockperf's sequence number is in
them). Both namespaces share one clock, so the differences are exact.
"""
import struct
import sys
from collections import defaultdict

LINKTYPE_LINUX_SLL2 = 276
PACKET_OUTGOING = 4
PORT = 11111


def records(path):
    """(time ns, 'tun' or 'link', outgoing?, inner source port, payload key) per packet."""
    data = open(path, "rb").read()
    if struct.unpack("<I", data[:4])[0] != 0xA1B23C4D:
        sys.exit(f"{path}: not a nanosecond pcap")
    if struct.unpack("<I", data[20:24])[0] != LINKTYPE_LINUX_SLL2:
        sys.exit(f"{path}: not captured with -i any")
    off = 24
    while off + 16 <= len(data):
        sec, nsec, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        out = frame[10] == PACKET_OUTGOING
        ip = frame[20:]
        if len(ip) < 28 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
        if PORT in (sport, dport):
            kind, inner = "tun", ip
        else:
            braid = ip[ihl + 8:]
            if len(braid) < 4:
                continue
            kind, inner = "link", braid[braid[3] * 4:]
        if len(inner) < 28:
            continue
        iihl = (inner[0] & 15) * 4
        isport = struct.unpack(">H", inner[iihl:iihl + 2])[0]
        key = bytes(inner[iihl + 8:iihl + 24])
        yield sec * 10**9 + nsec, kind, out, isport, key


def index(path):
    """First time each packet was seen: on braid0, leaving on a link, arriving on a link."""
    tun, link_out, link_in = {}, {}, {}
    for t, kind, out, sport, key in records(path):
        k = (sport, key)
        table = tun if kind == "tun" else (link_out if out else link_in)
        table[k] = min(table.get(k, t), t)
    return tun, link_out, link_in


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a_tun, a_out, a_in = index(sys.argv[1])
    b_tun, b_out, b_in = index(sys.argv[2])
    steps = defaultdict(list)
    for k, t in a_tun.items():
        if k[0] != PORT and k in a_out and k in b_in and k in b_tun:  # a request
            steps["request: a tx (braid0 -> link)"].append(a_out[k] - t)
            steps["request: wire (link -> link)"].append(b_in[k] - a_out[k])
            steps["request: b rx (link -> braid0)"].append(b_tun[k] - b_in[k])
    for k, t in b_tun.items():
        if k[0] == PORT and k in b_out and k in a_in and k in a_tun:  # a reply
            steps["reply:   b tx (braid0 -> link)"].append(b_out[k] - t)
            steps["reply:   wire (link -> link)"].append(a_in[k] - b_out[k])
            steps["reply:   a rx (link -> braid0)"].append(a_tun[k] - a_in[k])
    # sockperf's reply starts with the request's 8-byte sequence number: the round trip as
    # braid0 on the client side sees it (sockperf's RTT less its own send and wake-up), and
    # the server's turnaround as braid0 on the server side sees it.
    req_a = {k[1][:8]: t for k, t in a_tun.items() if k[0] != PORT}
    rep_a = {k[1][:8]: t for k, t in a_tun.items() if k[0] == PORT}
    req_b = {k[1][:8]: t for k, t in b_tun.items() if k[0] != PORT}
    rep_b = {k[1][:8]: t for k, t in b_tun.items() if k[0] == PORT}
    for seq, t in req_a.items():
        if seq in rep_a:
            steps["round trip at braid0, side a"].append(rep_a[seq] - t)
    for seq, t in req_b.items():
        if seq in rep_b:
            steps["server turnaround at braid0, b"].append(rep_b[seq] - t)
    if not steps:
        sys.exit("no packet was seen at all four points: is the testbed --mac-only?")
    print(f"{'step':34} {'n':>7} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8}  (µs)")
    for name in steps:  # in the order of the path, as inserted
        v = sorted(steps[name])
        n = len(v)
        p = [v[min(n - 1, int(q * n))] / 1000 for q in (0.5, 0.9, 0.99, 0.999)]
        print(f"{name:34} {n:7} " + " ".join(f"{x:8.1f}" for x in p))


if __name__ == "__main__":
    main()
