"""`misdtcp serve` and `misdtcp demo`.

    misdtcp serve [--app iperf3|echo|discard] [--workers N] [--strategy misd|single|mimd] ...
    misdtcp demo  [--seconds S] [--max-workers N]

Errors people hit (no /dev/net/tun, no permission, a bad address, a busy
device, too many workers for the CPUs given) are one sentence and exit 2.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
import time

APPS = ("iperf3", "echo", "discard")
DEFAULT_PORTS = {"iperf3": 5201, "echo": 7, "discard": 9}


class UsageError(Exception):
    """A problem with what the user asked for: printed as one sentence."""


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


def _rate(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number between 0 and 1") from None
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be between 0 and 1, not {value}")
        return value
    return parse


def _positive(name, minimum=1):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be at least {minimum}, not {value}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"misdtcp: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="misdtcp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="attach to a TUN device and serve an app")
    s.add_argument("--tun", default="misd0", help="TUN device name [misd0]")
    s.add_argument("--address", default="10.77.0.2", help="the stack's own address [10.77.0.2]")
    s.add_argument("--kernel-address", default="10.77.0.1/24",
                   help="address/prefix given to the kernel side of the TUN [10.77.0.1/24]")
    s.add_argument("--app", choices=APPS, default="iperf3", help="application [iperf3]")
    s.add_argument("--port", type=_positive("--port"), help="port [5201, 7 or 9 by app]")
    s.add_argument("--workers", type=_positive("--workers"), default=1, help="replica workers [1]")
    s.add_argument("--cpus", help="CPUs to pin workers to, e.g. 0,1 or 0-3 [all allowed]")
    s.add_argument("--strategy", choices=("misd", "single", "mimd"), default="misd", help="[misd]")
    s.add_argument("--offload", dest="offload", action="store_true", default=True,
                   help="checksum offload and GSO super-frames on the TUN (default)")
    s.add_argument("--no-offload", dest="offload", action="store_false",
                   help="plain MTU-sized frames with full checksums")
    s.add_argument("--mtu", type=_positive("--mtu", 576), default=1500, help="[1500]")
    s.add_argument("--stripe", type=_positive("--stripe", 512), default=16384,
                   help="bytes per payload ownership stripe [16384]")
    s.add_argument("--rcvbuf", type=_positive("--rcvbuf", 16384), default=4 << 20, help="[4194304]")
    s.add_argument("--sndbuf", type=_positive("--sndbuf", 16384), default=4 << 20, help="[4194304]")
    s.add_argument("--max-connections", type=_positive("--max-connections"), default=64, help="[64]")
    s.add_argument("--drop-rate", type=_rate("--drop-rate"), default=0.0)
    s.add_argument("--corrupt-rate", type=_rate("--corrupt-rate"), default=0.0)
    s.add_argument("--duplicate-rate", type=_rate("--duplicate-rate"), default=0.0)
    s.add_argument("--reorder-rate", type=_rate("--reorder-rate"), default=0.0)
    s.add_argument("--delay-ms", type=float, default=0.0)
    s.add_argument("--fault-seed", type=int, default=1)
    s.add_argument("--pcap", help="capture both directions to this pcap file")
    s.add_argument("--interval", type=float, default=1.0, help="seconds between reports [1]")
    s.add_argument("--json", action="store_true", help="JSON lines instead of text")
    s.add_argument("--duration", type=float, default=0.0,
                   help="stop after this many seconds (0: until SIGINT/SIGTERM)")

    d = sub.add_parser("demo", help="iperf3 into misdtcp inside a private network namespace")
    d.add_argument("--seconds", type=float, default=3.0, help="length of each iperf3 run [3]")
    d.add_argument("--max-workers", type=_positive("--max-workers"), default=4)
    return parser


# ---------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------

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


class Reporter:
    """Every interval: throughput, each worker's share of copies and sent
    segments, retransmissions, drops by reason (like iperf3's lines)."""

    def __init__(self, stack, interval: float, as_json: bool, out=sys.stdout):
        self.stack = stack
        self.interval = interval
        self.as_json = as_json
        self.out = out
        self.t0 = time.monotonic()
        self.last_t = self.t0
        self.last = self._sample()
        self.first = self.last

    def _sample(self):
        workers = self.stack.worker_counters()
        stats, drops = self.stack.core_stats()
        return {"workers": workers, "stats": stats, "drops": drops}

    def line(self, final=False):
        now = time.monotonic()
        cur = self._sample()
        base = self.first if final else self.last
        dt = (now - self.t0) if final else (now - self.last_t)
        copied = [c["bytes_copied"] - b["bytes_copied"] for c, b in zip(cur["workers"], base["workers"])]
        sent = [c["segments_sent"] - b["segments_sent"] for c, b in zip(cur["workers"], base["workers"])]
        total = sum(copied)
        gbps = total * 8 / dt / 1e9 if dt > 0 else 0.0
        rexmit = cur["stats"].get("retransmits", 0) - base["stats"].get("retransmits", 0)
        # time from the sequencer's stamp to a frame's outputs being done,
        # averaged over the frames the workers handled in this interval
        frames = sum(c["frames"] - b["frames"] for c, b in zip(cur["workers"], base["workers"]))
        waited = sum(c["latency_sum_ns"] - b["latency_sum_ns"] for c, b in zip(cur["workers"], base["workers"]))
        latency_us = waited / frames / 1e3 if frames else 0.0
        drops = {k: v - base["drops"].get(k, 0) for k, v in cur["drops"].items() if v - base["drops"].get(k, 0)}
        record = {
            "event": "summary" if final else "interval",
            "start": round((self.t0 if final else self.last_t) - self.t0, 3),
            "end": round(now - self.t0, 3),
            "bytes": total, "gbps": round(gbps, 3),
            "copied_share": [round(c / total, 3) if total else 0.0 for c in copied],
            "segments_sent": sent,
            "retransmits": rexmit,
            "latency_us": round(latency_us, 1),
            "drops": drops,
        }
        if not final:
            self.last, self.last_t = cur, now
        if self.as_json:
            text = json.dumps(record, sort_keys=True)
        else:
            share = "/".join(f"{s * 100:.0f}%" for s in record["copied_share"])
            drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"
            label = "total" if final else ""
            text = (f"[{record['start']:7.2f}-{record['end']:7.2f} s] {label:5} {total / 1e6:10.1f} MB "
                    f"{gbps:7.2f} Gbit/s  copies {share}  segments {'/'.join(map(str, sent))}  "
                    f"retransmits {rexmit}  latency {latency_us:.0f} us  drops: {drop_text}")
        print(text, file=self.out, flush=True)


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
                          faults=faults, pcap=args.pcap)
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
        if not args.json:
            print(f"misdtcp: serving {args.app} on {args.address}:{port} via {args.tun} "
                  f"({args.strategy}, {args.workers} worker(s), offload {'on' if args.offload else 'off'})",
                  flush=True)
        reporter = Reporter(stack, args.interval, args.json)
        deadline = time.monotonic() + args.duration if args.duration else None
        next_report = time.monotonic() + args.interval
        while not stop.is_set():
            stop.wait(min(0.1, max(0.0, next_report - time.monotonic())))
            if stack._failure:
                print(f"misdtcp: {stack._failure}", file=sys.stderr, flush=True)
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


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            if os.geteuid() != 0:
                raise UsageError("misdtcp serve needs root (CAP_NET_ADMIN) to create and configure a TUN device")
            return serve(args)
        from misdtcp.demo import run_demo
        return run_demo(seconds=args.seconds, max_workers=args.max_workers)
    except UsageError as exc:
        print(f"misdtcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
