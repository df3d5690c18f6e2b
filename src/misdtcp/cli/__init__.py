"""`misdtcp serve`, `misdtcp client`, `misdtcp ss`, `misdtcp demo` and
`misdtcp pktdrill`.

    misdtcp serve  [--device tun|packet-ring] [-p PORT] [-i SECONDS] [-1] [-J | --json-stream] [--app APP] ...
    misdtcp client HOST [--device tun|packet-ring] [-p PORT] [-t SECONDS] [-P N] [-R] [-J] [--workers N] ...
    misdtcp ss     [--tun NAME | --veth NAME] [--json]
    misdtcp demo   [--device tun|packet-ring] [--seconds S] [--max-workers N] [--plot FILE]
    misdtcp pktdrill [--relaxed] SCRIPT...

`serve` and `client` take iperf3's flags where they mean the same.  Errors
people hit (no /dev/net/tun, no CAP_NET_ADMIN, a bad address or port, a busy
device, too many workers for the CPUs given) are one sentence and exit 2.
"""
from __future__ import annotations

import argparse
import sys

from misdtcp import __version__
from misdtcp.cli.errors import UsageError

APPS = ("iperf3", "echo", "discard", "sink")
DEVICES = ("tun", "packet-ring")
STRATEGY_NAMES = ("misd", "single", "mimd")   # misdtcp.runtime.strategies.STRATEGIES, without importing the runtime
PLACEMENTS = ("auto", "inline", "separate")   # misdtcp.runtime.placement.PLACEMENTS
DEFAULT_ADDRESS6 = "fd00:77::2"
DEFAULT_KERNEL_ADDRESS6 = "fd00:77::1/64"


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


def _positive(name, minimum=1, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be at most {maximum}, not {value}")
        return value
    return parse


def _port(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a port number, not {text!r}") from None
        if not 1 <= value <= 65535:
            raise argparse.ArgumentTypeError(f"{name} {value} is outside 1..65535")
        return value
    return parse


def _seconds(name, allow_zero=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, not {text!r}") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{name} must be {'0 or more' if allow_zero else 'positive'}, "
                                             f"not {value:g}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"misdtcp: {message}\n")


def _device_options(p: argparse.ArgumentParser) -> None:
    """The device and the stack, as `serve` and `client` set them up."""
    p.add_argument("--device", choices=DEVICES, default="tun",
                   help="tun: a TUN device; packet-ring: a veth pair, the stack's end read through an "
                        "AF_PACKET mmap ring [tun]")
    p.add_argument("--tun", default="misd0", help="TUN device name [misd0]")
    p.add_argument("--veth", default="misd0",
                   help="packet-ring: the veth pair's kernel end, created or attached to [misd0]")
    p.add_argument("--stack-end", metavar="NAME",
                   help="packet-ring: the veth pair's end the stack binds to (no address) [VETH + 's']")
    p.add_argument("--ring-slots", type=_positive("--ring-slots", 8, 1 << 20), metavar="N",
                   help="packet-ring: slots of the receive ring [1024 with offload, 8192 without]")
    p.add_argument("-B", "--bind", "--address", dest="address", default="10.77.0.2",
                   help="the stack's own address [10.77.0.2]")
    p.add_argument("--kernel-address", default="10.77.0.1/24",
                   help="address/prefix given to the kernel side of the device [10.77.0.1/24]")
    # IPv6 defaults are filled in by serve's argument check (None: not given),
    # so that asking for IPv6 on the IPv4-only packet ring is an error
    p.add_argument("--address6", help=f"the stack's own IPv6 address (TUN only) [{DEFAULT_ADDRESS6}]")
    p.add_argument("--kernel-address6",
                   help=f"IPv6 address/prefix given to the kernel side of the TUN [{DEFAULT_KERNEL_ADDRESS6}]")
    p.add_argument("--no-ipv6", dest="ipv6", action="store_false", default=True,
                   help="IPv4 only: no IPv6 address on either side (dual-stack is the default on a TUN; "
                        "the packet ring is IPv4 only)")
    p.add_argument("--workers", type=_positive("--workers"), default=1, help="replica workers [1]")
    p.add_argument("--cpus", help="CPUs to pin workers to, e.g. 0,1 or 0-3 [all allowed]")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="misd", help="[misd]")
    p.add_argument("--placement", choices=PLACEMENTS, default="auto",
                   help="misd: run replica 0 inside the sequencer (inline) or the sequencer apart "
                        "(separate); auto: inline when the workers leave no CPU free [auto]")
    p.add_argument("--offload", dest="offload", action="store_true", default=True,
                   help="checksum offload and GSO super-frames on the device (default)")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="plain MTU-sized frames with full checksums")
    p.add_argument("--mtu", type=_positive("--mtu", 576), default=1500, help="[1500]")
    p.add_argument("--stripe", type=_positive("--stripe", 512), default=16384,
                   help="bytes per payload ownership stripe [16384]")
    p.add_argument("--rcvbuf", type=_positive("--rcvbuf", 16384), default=4 << 20, help="[4194304]")
    p.add_argument("--sndbuf", type=_positive("--sndbuf", 16384), default=4 << 20, help="[4194304]")
    p.add_argument("--max-connections", type=_positive("--max-connections"), default=64, help="[64]")
    p.add_argument("--drop-rate", type=_rate("--drop-rate"), default=0.0)
    p.add_argument("--corrupt-rate", type=_rate("--corrupt-rate"), default=0.0)
    p.add_argument("--duplicate-rate", type=_rate("--duplicate-rate"), default=0.0)
    p.add_argument("--reorder-rate", type=_rate("--reorder-rate"), default=0.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--fault-seed", type=int, default=1)
    p.add_argument("--pcap", metavar="FILE", help="capture both directions, in time order, to FILE ('-': stdout)")
    p.add_argument("--pcap-snaplen", type=_positive("--pcap-snaplen", 64, 262144), default=262144,
                   help="bytes kept of each captured frame, as tcpdump -s [262144]")
    p.add_argument("--check-every", type=_positive("--check-every", 0), default=0, metavar="N",
                   help="replicas compare digests of their state every N frames; a mismatch stops the "
                        "stack (misd) [0: off]")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="misdtcp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"misdtcp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="attach to a device (TUN or packet ring) and serve an app "
                                     "(iperf3's server flags)")
    _device_options(s)
    s.add_argument("--app", choices=APPS, default="iperf3", help="application [iperf3]")
    s.add_argument("-p", "--port", type=_port("--port"), help="port [5201, 7, 9 or 9 by app]")
    s.add_argument("-i", "--interval", type=_seconds("--interval"), default=1.0,
                   help="seconds between reports; 0 turns them off [1]")
    s.add_argument("-1", "--one-off", action="store_true", help="serve one test (or connection), then exit 0")
    out = s.add_mutually_exclusive_group()
    out.add_argument("-J", "--json", action="store_true", help="JSON lines instead of text")
    out.add_argument("--json-stream", action="store_true",
                     help="iperf3's --json-stream: start, interval and end events in iperf3's schema")
    s.add_argument("--logfile", metavar="FILE", help="append the output to FILE instead of standard output")
    s.add_argument("-I", "--pidfile", metavar="FILE", help="write the process ID to FILE while serving")
    s.add_argument("-V", "-v", "--version", action="version", version=f"misdtcp {__version__}")
    s.add_argument("--duration", type=_seconds("--duration"), default=0.0,
                   help="stop after this many seconds (0: until SIGINT/SIGTERM)")

    c = sub.add_parser("client", help="the iperf3 client, against a stock `iperf3 -s` on the kernel side")
    c.add_argument("host", help="the iperf3 server (the kernel side of the device, e.g. 10.77.0.1)")
    _device_options(c)
    c.add_argument("-p", "--port", type=_port("--port"), default=5201, help="server port [5201]")
    c.add_argument("-t", "--time", type=_seconds("--time", allow_zero=False), default=10.0,
                   help="seconds to transmit [10]")
    c.add_argument("-P", "--parallel", type=_positive("--parallel", 1, 128), default=1, help="streams [1]")
    c.add_argument("-R", "--reverse", action="store_true", help="the server sends, misdtcp receives")
    c.add_argument("-l", "--length", type=_positive("--length", 1, 1 << 24), default=128 * 1024,
                   help="bytes per write [131072]")
    c.add_argument("-i", "--interval", type=_seconds("--interval"), default=1.0,
                   help="seconds between reports; 0 turns them off [1]")
    c.add_argument("-J", "--json", action="store_true", help="one JSON document in iperf3's schema")
    c.add_argument("--connect-timeout", type=_seconds("--connect-timeout", allow_zero=False), default=10.0,
                   help="seconds to wait for the server [10]")
    c.add_argument("-V", "-v", "--version", action="version", version=f"misdtcp {__version__}")

    q = sub.add_parser("ss", help="the live connection table of a running `misdtcp serve`")
    which = q.add_mutually_exclusive_group()
    which.add_argument("--tun", default="misd0", help="the TUN of the serve to ask [misd0]")
    which.add_argument("--veth", dest="tun", metavar="VETH",
                       help="the veth (kernel end) of a packet-ring serve to ask")
    q.add_argument("--json", action="store_true", help="JSON instead of ss-style text")

    d = sub.add_parser("demo", help="the project's point, measured: kernel reference, misdtcp, replay scaling")
    d.add_argument("--device", choices=DEVICES, default="tun",
                   help="the device misdtcp serves on: tun, or packet-ring (a veth pair through an "
                        "AF_PACKET ring) [tun]")
    d.add_argument("--seconds", type=_positive("--seconds"), default=3,
                   help="length of each iperf3 run, whole seconds as iperf3 -t takes them [3]")
    d.add_argument("--max-workers", type=_positive("--max-workers"), default=4)
    d.add_argument("--replay-mib", type=_positive("--replay-mib", 8), default=64,
                   help="MiB replayed per scaling run [64]")
    d.add_argument("--plot", default="demo.png", help="where to write the plot (PNG) [demo.png]")

    p = sub.add_parser("pktdrill", help="run packetdrill scripts against the TCP core in virtual time")
    p.add_argument("--relaxed", action="store_true",
                   help="leave out what each stack chooses for itself: outbound windows, MSS and "
                        "window-scale values, buffer sizes, option order and padding")
    p.add_argument("scripts", nargs="+", metavar="SCRIPT", help=".pkt scripts or directories of them")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from misdtcp.cli.capabilities import require_net_admin
            require_net_admin("misdtcp serve", args.device)
            from misdtcp.cli.serve import serve
            return serve(args)
        if args.command == "client":
            from misdtcp.cli.capabilities import require_net_admin
            require_net_admin("misdtcp client", args.device)
            from misdtcp.cli.client import run_client
            return run_client(args)
        if args.command == "ss":
            from misdtcp.cli.ss import run_ss
            return run_ss(args)
        if args.command == "pktdrill":
            from misdtcp.cli.pktdrill import run_pktdrill
            return run_pktdrill(args.scripts, relaxed=args.relaxed)
        from misdtcp.cli.demo import run_demo
        return run_demo(seconds=args.seconds, max_workers=args.max_workers, replay_mib=args.replay_mib,
                        plot=args.plot, device=args.device)
    except UsageError as exc:
        print(f"misdtcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
