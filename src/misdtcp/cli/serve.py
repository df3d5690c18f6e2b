"""`misdtcp serve`: attach to a TUN device and serve an app until stopped.

Mistakes people make (a bad address, no /dev/net/tun, too many workers for
the CPUs given, a busy device) are one sentence (UsageError, exit status 2).
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import threading
import time

from misdtcp.cli.errors import UsageError
from misdtcp.cli.report import Reporter

DEFAULT_PORTS = {"iperf3": 5201, "echo": 7, "discard": 9}


def _cpu_list(text: str) -> list[int]:
    cpus = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                cpus.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                cpus.append(int(part))
    except ValueError:
        raise UsageError(f"--cpus {text!r} is not a list like 0,1 or 0-3") from None
    if not cpus:
        raise UsageError("--cpus is empty")
    return cpus


def _check_serve_args(args):
    try:
        kernel = ipaddress.IPv4Interface(args.kernel_address)
    except ValueError:
        raise UsageError(f"--kernel-address {args.kernel_address!r} is not an IPv4 address/prefix") from None
    try:
        own = ipaddress.IPv4Address(args.address)
    except ValueError:
        raise UsageError(f"--address {args.address!r} is not an IPv4 address") from None
    if own == kernel.ip:
        raise UsageError(f"--address {own} is the kernel side's own address; pick another in {kernel.network}")
    if own not in kernel.network:
        raise UsageError(f"--address {own} is outside the kernel side's network {kernel.network}")
    allowed = sorted(os.sched_getaffinity(0))
    cpus = _cpu_list(args.cpus) if args.cpus else allowed
    bad = [c for c in cpus if c not in allowed]
    if bad:
        raise UsageError(f"CPU {bad[0]} is not available to this process (allowed: {allowed})")
    if args.strategy != "single" and args.workers > len(cpus):
        raise UsageError(f"{args.workers} workers need at least {args.workers} CPUs, "
                         f"but only {len(cpus)} are given ({','.join(map(str, cpus))})")
    if args.workers > 16:
        raise UsageError("at most 16 workers are supported")
    if args.rcvbuf % 4096 or args.sndbuf % 4096:
        raise UsageError("--rcvbuf and --sndbuf must be multiples of 4096")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    if args.delay_ms < 0:
        raise UsageError("--delay-ms must not be negative")
    if not os.path.exists("/dev/net/tun"):
        raise UsageError("/dev/net/tun does not exist: this kernel has no TUN support (modprobe tun)")
    return cpus


def serve(args) -> int:
    cpus = _check_serve_args(args)
    from misdtcp.api import Stack, StackError
    from misdtcp.device.tun import DeviceError, Tun

    port = args.port or DEFAULT_PORTS[args.app]
    faults = None
    if any((args.drop_rate, args.corrupt_rate, args.duplicate_rate, args.reorder_rate, args.delay_ms)):
        faults = dict(drop=args.drop_rate, corrupt=args.corrupt_rate, duplicate=args.duplicate_rate,
                      reorder=args.reorder_rate, delay=1.0 if args.delay_ms else 0.0,
                      delay_ms=args.delay_ms, seed=args.fault_seed)
    try:
        tun = Tun(args.tun, address=args.kernel_address, mtu=args.mtu, offload=args.offload,
                  nonblocking=True)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None
    stop = threading.Event()
    stack = None
    try:
        try:
            stack = Stack(tun, address=args.address, workers=args.workers, strategy=args.strategy,
                          cpus=cpus, stripe=args.stripe, rcvbuf=args.rcvbuf, sndbuf=args.sndbuf,
                          max_connections=args.max_connections, offload=args.offload, mtu=args.mtu,
                          faults=faults, pcap=args.pcap, placement=args.placement)
            stack.start()
        except StackError as exc:
            raise UsageError(str(exc)) from None

        def on_signal(signum, frame):
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        log = (lambda text: print(json.dumps({"event": "app", "message": text}), flush=True)) if args.json \
            else (lambda text: print(text, flush=True))
        app = _start_app(args.app, stack, port, args.json, stop, log)
        if args.json:
            print(json.dumps({"event": "serving", "app": args.app, "address": args.address, "port": port,
                              "strategy": args.strategy, "workers": args.workers, "placement": stack.placement,
                              "offload": args.offload}), flush=True)
        else:
            print(f"misdtcp: serving {args.app} on {args.address}:{port} via {args.tun} "
                  f"({args.strategy}, {args.workers} worker(s), {stack.placement} placement, "
                  f"offload {'on' if args.offload else 'off'})",
                  flush=True)
        reporter = Reporter(stack, args.interval, args.json)
        deadline = time.monotonic() + args.duration if args.duration else None
        next_report = time.monotonic() + args.interval
        while not stop.is_set():
            stop.wait(min(0.1, max(0.0, next_report - time.monotonic())))
            if stack.failure:
                print(f"misdtcp: {stack.failure}", file=sys.stderr, flush=True)
                reporter.line(final=True)
                return 1
            if time.monotonic() >= next_report:
                reporter.line()
                next_report += args.interval
            if deadline is not None and time.monotonic() >= deadline:
                break
        stop.set()
        reporter.line(final=True)
        app.join(1.0)
        return 0
    finally:
        if stack is not None:
            stack.stop()
        tun.close()


def _start_app(name, stack, port, as_json, stop, log):
    if name == "iperf3":
        from misdtcp.apps import iperf3
        target = lambda: iperf3.serve(stack, port, stop=stop, log=log)  # noqa: E731
    else:
        from misdtcp.apps import discard, echo
        from misdtcp.apps.common import emit_json
        module = echo if name == "echo" else discard
        target = lambda: module.serve(stack, port, report=emit_json if as_json else None, stop=stop)  # noqa: E731
    thread = threading.Thread(target=target, name=f"misdtcp-{name}", daemon=True)
    thread.start()
    return thread
