"""`misdtcp demo`: the stock iperf3 client into misdtcp, inside a network
namespace this command creates and deletes, for workers 1..min(CPUs, N)
with and without offload.  Prints one table."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

from misdtcp.api import Stack
from misdtcp.apps import discard, iperf3
from misdtcp.device.netns import Netns, NetnsError
from misdtcp.device.tun import Tun

KERNEL_CIDR = "10.77.0.1/24"
STACK_ADDR = "10.77.0.2"

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


def _one_run(workers: int, offload: bool, seconds: float) -> tuple[float, str]:
    """Gbit/s measured by the client, and which client measured it."""
    ns = Netns(prefix="misdtcp-demo").create()
    tun = None
    stack = None
    stop = threading.Event()
    try:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
        tun = Tun("misd0", address=KERNEL_CIDR, mtu=1500, offload=offload, nonblocking=True, netns=ns)
        stack = Stack(tun, address=STACK_ADDR, workers=workers, offload=offload).start()
        if shutil.which("iperf3"):
            threading.Thread(target=iperf3.serve, args=(stack,), kwargs={"stop": stop, "log": lambda t: None},
                             daemon=True).start()
            time.sleep(0.1)
            proc = ns.run(["iperf3", "-c", STACK_ADDR, "-t", str(seconds), "-J"], check=False,
                          timeout=seconds + 30)
            result = json.loads(proc.stdout)
            if "error" in result:
                raise RuntimeError(f"iperf3: {result['error']}")
            return result["end"]["sum_received"]["bits_per_second"] / 1e9, "iperf3"
        threading.Thread(target=discard.serve, args=(stack, 9), kwargs={"stop": stop}, daemon=True).start()
        time.sleep(0.1)
        proc = ns.run([sys.executable, "-c", PY_CLIENT.format(addr=STACK_ADDR, port=9), str(seconds)],
                      check=False, timeout=seconds + 30)
        return float(proc.stdout.strip()), "python socket"
    finally:
        stop.set()
        if stack is not None:
            stack.stop()
        if tun is not None:
            tun.close()
        ns.delete()


def run_demo(seconds: float = 3.0, max_workers: int = 4) -> int:
    cpus = len(os.sched_getaffinity(0))
    top = max(1, min(cpus, max_workers))
    print(f"misdtcp demo: iperf3 client (kernel, in a private namespace) -> misdtcp serve over TUN; "
          f"{seconds:g} s per run, {cpus} CPU(s)", flush=True)
    print(f"{'offload':>8} {'workers':>8} {'Gbit/s':>8}  client", flush=True)
    failures = 0
    for offload in (True, False):
        for workers in range(1, top + 1):
            try:
                gbps, client = _one_run(workers, offload, seconds)
                print(f"{'on' if offload else 'off':>8} {workers:>8} {gbps:8.2f}  {client}", flush=True)
            except (RuntimeError, OSError, ValueError, NetnsError, subprocess.SubprocessError) as exc:
                failures += 1
                print(f"{'on' if offload else 'off':>8} {workers:>8} {'failed':>8}  {exc}", flush=True)
    return 1 if failures else 0
