"""`misdtcp demo`: the project's point, measured in one run, each row
printed as soon as it is measured, and a plot of it all.

1. End to end, the stock `iperf3` client, one stream, `seconds` each:
   the Linux kernel's own receiver (`iperf3 -s` over a veth pair between two
   namespaces) as the reference, then `misdtcp serve` on `device` (a TUN, or
   a veth pair read through a packet ring) for workers 1..min(CPUs,
   max_workers), with and without offload -- each as Gbit/s and as a ratio to
   the kernel in the same run; on a TUN also 1 worker over IPv6, with and
   without offload, against IPv4's row too (the packet ring is IPv4 only).
2. Replay scaling, the stack's own work with no device in the way (the
   frames of one connection already in ring memory, as a NIC would have put
   them): `single` (the baseline), then misd with 1..N workers, for 64 KiB
   GSO super-frames and for 1448-byte frames -- Gbit/s and the speedup
   against `single` measured in the same run (median of `repeats`).
3. A PNG with both, written to `plot`.

Everything that moves packets does it in namespaces this command creates and
deletes.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

from misdtcp.api import Stack
from misdtcp.apps import discard, iperf3
from misdtcp.device.netns import Netns, NetnsError
from misdtcp.device.packet_ring import PacketRing
from misdtcp.device.tun import DeviceError, Tun
from misdtcp.device.veth import VethPair

KERNEL_CIDR = "10.77.0.1/24"
STACK_ADDR = "10.77.0.2"
KERNEL_CIDR6 = "fd00:77::1/64"
STACK_ADDR6 = "fd00:77::2"
ERRORS = (RuntimeError, OSError, ValueError, NetnsError, DeviceError, subprocess.SubprocessError,
          json.JSONDecodeError)
DEVICE_NAMES = {"tun": "TUN", "packet-ring": "packet ring"}

PY_CLIENT = """
import socket, sys, time
seconds = float(sys.argv[1])
s = socket.create_connection(({addr!r}, {port}), timeout=10)
block = b"\\x5a" * (128 * 1024)
sent = 0
t0 = time.monotonic()
while time.monotonic() - t0 < seconds:
    s.sendall(block)
    sent += len(block)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(sent * 8 / (time.monotonic() - t0) / 1e9)
"""


def _quiet_namespace(prefix: str) -> Netns:
    ns = Netns(prefix=prefix).create()
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
    return ns


def _iperf3_client(ns: Netns, address: str, seconds: int) -> float:
    """Gbit/s the stock client's receiver-side sum reports (retried while the
    server is not listening yet)."""
    deadline = time.monotonic() + 10
    while True:
        proc = ns.run(["iperf3", "-c", address, "-t", str(seconds), "-J"], check=False, timeout=seconds + 30)
        result = json.loads(proc.stdout)
        if "error" not in result:
            return result["end"]["sum_received"]["bits_per_second"] / 1e9
        if "refused" not in result["error"] or time.monotonic() > deadline:
            raise RuntimeError(f"iperf3: {result['error']}")
        time.sleep(0.1)


def kernel_reference(seconds: int) -> float:
    """The Linux kernel's receiver: iperf3 -s in one namespace, the client in
    another, a veth pair between them."""
    client = _quiet_namespace("misdtcp-demo")
    server = veth = proc = None
    try:
        server = _quiet_namespace("misdtcp-demo")
        veth = VethPair(client, server, cidr_a="10.78.0.1/24", cidr_b="10.78.0.2/24").create()
        proc = server.popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _iperf3_client(client, veth.addr_b, seconds)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if veth is not None:
            veth.delete()
        if server is not None:
            server.delete()
        client.delete()


def misdtcp_run(workers: int, offload: bool, seconds: int, device: str = "tun",
                ipv6: bool = False) -> tuple[float, str]:
    """Gbit/s the client measured into misdtcp, and which client measured it.
    On a TUN the stack is dual-stack, as `misdtcp serve` is, and the client
    connects over IPv6 when `ipv6`; the packet ring carries IPv4 only (its
    namespace has IPv6 off, so the kernel sends nothing the link step drops)."""
    if device == "packet-ring" and ipv6:
        raise ValueError("the packet-ring device carries IPv4 only")
    ns = _quiet_namespace("misdtcp-demo") if device == "packet-ring" else Netns(prefix="misdtcp-demo").create()
    tun = stack = None
    stop = threading.Event()
    target = STACK_ADDR6 if ipv6 else STACK_ADDR
    try:
        if device == "packet-ring":
            tun = PacketRing("misd0", address=KERNEL_CIDR, mtu=1500, offload=offload, netns=ns)
            stack = Stack(tun, address=STACK_ADDR, workers=workers, offload=offload).start()
        else:
            tun = Tun("misd0", address=KERNEL_CIDR, mtu=1500, offload=offload, nonblocking=True, netns=ns,
                      address6=KERNEL_CIDR6)
            stack = Stack(tun, address=STACK_ADDR, address6=STACK_ADDR6, workers=workers, offload=offload).start()
        if shutil.which("iperf3"):
            threading.Thread(target=iperf3.serve, args=(stack,), kwargs={"stop": stop, "log": lambda t: None},
                             daemon=True).start()
            return _iperf3_client(ns, target, seconds), "iperf3"
        threading.Thread(target=discard.serve, args=(stack, 9), kwargs={"stop": stop}, daemon=True).start()
        time.sleep(0.1)
        proc = ns.run([sys.executable, "-c", PY_CLIENT.format(addr=target, port=9), str(seconds)],
                      check=False, timeout=seconds + 30)
        return float(proc.stdout.strip()), "python socket"
    finally:
        stop.set()
        if stack is not None:
            stack.stop()
        if tun is not None:
            tun.close()
        ns.delete()


def replay_scaling(mode: str, workers: list[int], total: int, repeats: int, say) -> list[dict]:
    """single, then misd 1..N over one replayed connection; each row printed
    as soon as its runs are done.  Speedup: against single, same run."""
    from misdtcp.runtime.replay import ReplayConfig, build_log
    from misdtcp.runtime.replay_run import run_log

    log = build_log(ReplayConfig(total_bytes=total, mode=mode), dict(secret=3, rcvbuf=4 << 20))
    rows = []
    try:
        timeout = max(60.0, total / (50 << 20))
        variants = [("single", 1)] + [("misd", w) for w in workers]
        base = None
        for strategy, w in variants:
            runs = []
            for _ in range(repeats):
                r = run_log(log, strategy=strategy, workers=w, timeout=timeout)
                if r.delivered != total:
                    raise RuntimeError(f"{strategy} {w}: delivered {r.delivered} of {total} bytes")
                runs.append(r.gbps)
            gbps = statistics.median(runs)
            if base is None:
                base = gbps
            row = {"mode": mode, "strategy": strategy, "workers": w, "gbps": gbps, "speedup": gbps / base,
                   "runs": runs}
            rows.append(row)
            label = "single" if strategy == "single" else f"misd {w}"
            say(f"{'64 KiB GSO' if mode == 'gso' else '1448 B':>11} {label:>8} {gbps:9.2f} "
                f"{row['speedup']:8.2f}x   ({min(runs):.2f}..{max(runs):.2f})")
    finally:
        log.close()
    return rows


def write_plot(path: str, kernel: float | None, e2e: list[dict], scaling: list[dict]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, values, colors = [], [], []
    if kernel is not None:
        labels.append("kernel\n(veth)")
        values.append(kernel)
        colors.append("#888888")
    for row in e2e:
        if row["gbps"] is None:
            continue
        labels.append(f"misd {row['workers']}{' IPv6' if row.get('ipv6') else ''}\n"
                      f"{'offload' if row['offload'] else 'no offload'}")
        values.append(row["gbps"])
        colors.append(("#2ca02c" if row["offload"] else "#98df8a") if row.get("ipv6") else
                      ("#1f77b4" if row["offload"] else "#aec7e8"))
    left.bar(range(len(values)), values, color=colors)
    left.set_xticks(range(len(values)), labels, fontsize=8)
    left.set_ylabel("Gbit/s (stock iperf3 client)")
    left.set_title("End to end: one TCP connection into the receiver")
    for i, v in enumerate(values):
        left.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    for mode, marker in (("gso", "o"), ("mtu", "s")):
        pts = [r for r in scaling if r["mode"] == mode and r["strategy"] == "misd"]
        if pts:
            right.plot([r["workers"] for r in pts], [r["speedup"] for r in pts], marker=marker,
                       label="64 KiB GSO frames" if mode == "gso" else "1448-byte frames")
    if scaling:
        top = max(r["workers"] for r in scaling)
        right.plot([1, top], [1, top], linestyle=":", color="#999999", label="linear")
        right.axhline(1.0, color="#cccccc", linewidth=0.8)
        right.set_xticks(range(1, top + 1))
    right.set_xlabel("workers (misd)")
    right.set_ylabel("speedup against single, same run")
    right.set_title("Replay: one connection, more cores")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.abspath(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(seconds: int = 3, max_workers: int = 4, replay_mib: int = 64, plot: str = "demo.png",
             repeats: int = 3, out=None, device: str = "tun") -> int:
    def say(line=""):
        print(line, file=out or sys.stdout, flush=True)

    cpus = len(os.sched_getaffinity(0))
    top = max(1, min(cpus, max_workers))
    have_iperf3 = shutil.which("iperf3") is not None
    say(f"misdtcp demo: one TCP connection made faster by adding cores; {cpus} CPU(s), "
        f"everything inside private network namespaces")
    say()
    say(f"1. End to end: the stock iperf3 client, one stream, {seconds:g} s per run; misdtcp on a "
        f"{DEVICE_NAMES[device]}")
    say(f"{'receiver':>28} {'Gbit/s':>8} {'vs kernel':>10}  client")
    failures = 0
    kernel = None
    if have_iperf3:
        try:
            kernel = kernel_reference(seconds)
            say(f"{'Linux kernel over veth':>28} {kernel:8.2f} {1.0:9.2f}x  iperf3")
        except ERRORS as exc:
            failures += 1
            say(f"{'Linux kernel over veth':>28} {'failed':>8}  {exc}")
    else:
        say(f"{'Linux kernel over veth':>28} {'-':>8}  (iperf3 is not installed: no reference)")
    e2e = []
    for offload in (True, False):
        for workers in range(1, top + 1):
            name = f"misdtcp misd {workers}w {'offload' if offload else 'no offload'}"
            try:
                gbps, client = misdtcp_run(workers, offload, seconds, device)
                ratio = f"{gbps / kernel:9.2f}x" if kernel else f"{'-':>10}"
                say(f"{name:>28} {gbps:8.2f} {ratio}  {client}")
            except ERRORS as exc:
                failures += 1
                gbps = None
                say(f"{name:>28} {'failed':>8}  {exc}")
            e2e.append({"workers": workers, "offload": offload, "gbps": gbps})
    # the same over IPv6, each against IPv4's row of this run (a TUN: the
    # packet ring carries IPv4 only)
    for offload in ((True, False) if device == "tun" else ()):
        name = f"misdtcp misd 1w {'offload' if offload else 'no offload'} IPv6"
        ipv4 = next((r["gbps"] for r in e2e if r["workers"] == 1 and r["offload"] == offload), None)
        try:
            gbps, client = misdtcp_run(1, offload, seconds, ipv6=True)
            ratio = f"{gbps / kernel:9.2f}x" if kernel else f"{'-':>10}"
            versus = f", {gbps / ipv4:.2f}x IPv4" if ipv4 else ""
            say(f"{name:>28} {gbps:8.2f} {ratio}  {client}{versus}")
        except ERRORS as exc:
            failures += 1
            gbps = None
            say(f"{name:>28} {'failed':>8}  {exc}")
        e2e.append({"workers": 1, "offload": offload, "gbps": gbps, "ipv6": True})
    say()
    say(f"2. Replay scaling: {replay_mib} MiB of one connection already in ring memory (no device), "
        f"median of {repeats}, speedup against single in the same run")
    say(f"{'frames':>11} {'variant':>8} {'Gbit/s':>9} {'speedup':>9}   (min..max)")
    scaling = []
    for mode in ("gso", "mtu"):
        try:
            scaling += replay_scaling(mode, list(range(1, top + 1)), replay_mib << 20, repeats, say)
        except ERRORS as exc:
            failures += 1
            say(f"{mode:>11} failed: {exc}")
    say()
    try:
        where = write_plot(plot, kernel, e2e, scaling)
        say(f"3. Plot written to {where}")
    except (ImportError, OSError, ValueError) as exc:
        failures += 1
        say(f"3. No plot: {exc}")
    return 1 if failures else 0
