"""`misdtcp serve` and `misdtcp demo`.

    misdtcp serve [--app iperf3|echo|discard] [--workers N] [--strategy misd|single|mimd] ...
    misdtcp demo  [--seconds S] [--max-workers N]

Errors people hit (no /dev/net/tun, no permission, a bad address, a busy
device, too many workers for the CPUs given) are one sentence and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from misdtcp.cli.errors import UsageError

APPS = ("iperf3", "echo", "discard")
STRATEGY_NAMES = ("misd", "single", "mimd")   # misdtcp.runtime.strategies.STRATEGIES, without importing the runtime
PLACEMENTS = ("auto", "inline", "separate")   # misdtcp.runtime.placement.PLACEMENTS


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
    s.add_argument("--strategy", choices=STRATEGY_NAMES, default="misd", help="[misd]")
    s.add_argument("--placement", choices=PLACEMENTS, default="auto",
                   help="misd: run replica 0 inside the sequencer (inline) or the sequencer apart "
                        "(separate); auto: inline when the workers leave no CPU free [auto]")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            if os.geteuid() != 0:
                raise UsageError("misdtcp serve needs root (CAP_NET_ADMIN) to create and configure a TUN device")
            from misdtcp.cli.serve import serve
            return serve(args)
        from misdtcp.cli.demo import run_demo
        return run_demo(seconds=args.seconds, max_workers=args.max_workers)
    except UsageError as exc:
        print(f"misdtcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
