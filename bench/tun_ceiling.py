#!/usr/bin/env python3
"""The ceiling of one TUN reader: how many MTU-sized frames per second one
process reads from a TUN while the kernel sends datagrams into it as fast as
it can -- the upper bound of any receiver without offload that reads its
device from one process (misdtcp's sequencer, the `single` strategy).

Inside a namespace this program creates (and deletes): a TUN without offload
(MTU 1500, the kernel side 10.77.0.1/24), a reader pinned to one CPU reading
it (C loop: read(), poll() when empty -- testing/device_bench.pyx), and a
sender pinned to another CPU blasting UDP datagrams of 1472 bytes to
10.77.0.2 with sendmmsg.  The datagrams go nowhere else: the TUN is the
route, and nothing answers.

    .venv/bin/python bench/tun_ceiling.py --quick
    .venv/bin/python bench/tun_ceiling.py --seconds 3 --repeats 5 --json bench/results/tun_ceiling.json

Reports the reader's frames/s and Gbit/s of IP packets (the vnet header not
counted), the sender's datagrams/s, and medians with min..max.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from misdtcp.device.netns import Netns
from misdtcp.device.tun import Tun
from misdtcp.testing import device_bench
from misdtcp.testing.lab import reap_stale
from misdtcp.wire.vnet_header import VNET_HDR_LEN

PREFIX = "misdtcp-bench"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="length of each run [3]")
    p.add_argument("--repeats", type=int, default=3, help="runs [3]")
    p.add_argument("--payload", type=int, default=1472, help="UDP payload bytes (1472: 1500-byte packets)")
    p.add_argument("--quick", action="store_true", help="one 1 s run")
    p.add_argument("--json", help="write the record to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 1.0, 1
    if not 0 < args.seconds <= 60 or not 1 <= args.payload <= 1472:
        p.error("--seconds must be in (0, 60] and --payload in 1..1472")
    return args


def _reader(fd, cpu, seconds):
    os.sched_setaffinity(0, {cpu})
    return device_bench.read_for(fd, seconds)


def _sender(cpu, seconds, payload):
    os.sched_setaffinity(0, {cpu})
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(("10.77.0.2", 9))
    return device_bench.udp_blast(s.fileno(), seconds, payload)


def one_run(seconds, payload):
    cpus = sorted(os.sched_getaffinity(0))
    reader_cpu, sender_cpu = cpus[0], cpus[-1]
    ns = Netns(prefix=PREFIX).create()
    tun = None
    try:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
        tun = Tun("misd0", address="10.77.0.1/24", mtu=1500, offload=False, nonblocking=True, netns=ns)
        got = {}
        reader = threading.Thread(target=lambda: got.update(
            read=ns.call(_reader, tun.fileno(), reader_cpu, seconds + 0.5, timeout=seconds + 30)))
        reader.start()
        sent, full = ns.call(_sender, sender_cpu, seconds, payload, timeout=seconds + 30)
        reader.join(seconds + 40)
        r = got["read"]
        wall = r["ns"] / 1e9
        ip_bytes = r["bytes"] - r["frames"] * VNET_HDR_LEN
        return dict(frames_per_s=r["frames"] / wall, gbps=ip_bytes * 8 / wall / 1e9,
                    sent_per_s=sent / seconds, sender_full=full, polls=r["polls"],
                    reader_cpu=reader_cpu, sender_cpu=sender_cpu)
    finally:
        if tun is not None:
            tun.close()
        ns.delete()


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("tun_ceiling.py needs root: it creates a network namespace and a TUN device.", file=sys.stderr)
        return 2
    reap_stale(PREFIX)
    meta = common.metadata()
    print(f"one TUN reader: UDP {args.payload} B datagrams from the kernel, {args.seconds:g} s x "
          f"{args.repeats}; {meta['cpu_model']}, {meta['cpus']} CPUs, load {meta['loadavg'][0]:.2f}", flush=True)
    runs = []
    for i in range(args.repeats):
        r = one_run(args.seconds, args.payload)
        runs.append(r)
        print(f"  [{i + 1}/{args.repeats}] {r['gbps']:.2f} Gbit/s, {r['frames_per_s'] / 1e3:.0f} k frames/s "
              f"(sender {r['sent_per_s'] / 1e3:.0f} k datagrams/s)", flush=True)
    g = common.summary([r["gbps"] for r in runs])
    f = common.summary([r["frames_per_s"] for r in runs])
    print(f"\nreader ceiling: {common.fmt_spread(g)} Gbit/s, "
          f"{f['median'] / 1e3:.0f} k frames/s ({f['min'] / 1e3:.0f}..{f['max'] / 1e3:.0f})")
    if args.json:
        common.write_json(args.json, [dict(gbps=g["median"], gbps_min=g["min"], gbps_max=g["max"],
                                           frames_per_s=f["median"], payload=args.payload, runs=runs,
                                           seconds=args.seconds, repeats=args.repeats, run=meta)])
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
