"""`misdtcp serve`: attach to a device -- a TUN, or a veth pair read through
a packet ring (`--device packet-ring`) -- and serve an app until stopped
(or, with -1, for one test), with iperf3's server flags.

While it runs it answers `misdtcp ss` on its control socket (cli/control.py).
Mistakes people make (a bad address or port, no /dev/net/tun, too many
workers for the CPUs given, a busy device, an unwritable pid or log file)
are one sentence (UsageError, exit status 2).
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
import time

from misdtcp.cli.errors import UsageError
from misdtcp.cli.output import JSON, JSON_STREAM, TEXT, Output
from misdtcp.cli.report import Reporter

ACCOUNT_EVERY = 1.0      # seconds between silent accounting steps with -i 0
DEFAULT_PORTS = {"iperf3": 5201, "echo": 7, "discard": 9, "sink": 9}


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
    _settle_ipv6_args(args)
    if args.ipv6:
        _check_ipv6_args(args)
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
    if args.delay_ms < 0:
        raise UsageError("--delay-ms must not be negative")
    if args.device == "packet-ring":
        stack_end = args.stack_end or args.veth + "s"
        if stack_end == args.veth:
            raise UsageError(f"--stack-end {stack_end} is the kernel's end of the veth pair too; "
                             "name the stack's end differently")
        return cpus
    if not os.path.exists("/dev/net/tun"):
        raise UsageError("/dev/net/tun does not exist: this kernel has no TUN support (modprobe tun)")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        mode = os.stat("/dev/net/tun").st_mode & 0o777
        raise UsageError(f"/dev/net/tun (mode {mode:04o}) is not readable and writable for this user: "
                         "CAP_NET_ADMIN needs it at its usual mode 0666")
    return cpus


def _settle_ipv6_args(args) -> None:
    """A TUN is dual-stack unless --no-ipv6 (the IPv6 addresses default);
    the packet ring carries IPv4 only (its link step answers ARP, not
    neighbour discovery), so IPv6 asked for there is an error and otherwise
    off."""
    from misdtcp.cli import DEFAULT_ADDRESS6, DEFAULT_KERNEL_ADDRESS6

    if args.device == "packet-ring":
        if args.address6 is not None or args.kernel_address6 is not None:
            raise UsageError("--device packet-ring carries IPv4 only: leave out --address6 and "
                             "--kernel-address6, or use --device tun for IPv6")
        args.ipv6 = False
        return
    if args.address6 is None:
        args.address6 = DEFAULT_ADDRESS6
    if args.kernel_address6 is None:
        args.kernel_address6 = DEFAULT_KERNEL_ADDRESS6


def _check_ipv6_args(args) -> None:
    """--address6 in --kernel-address6's network, not its own address, an
    MTU IPv6 can use (RFC 8200 §5: 1280)."""
    try:
        kernel = ipaddress.IPv6Interface(args.kernel_address6)
    except ValueError:
        raise UsageError(f"--kernel-address6 {args.kernel_address6!r} is not an IPv6 address/prefix") from None
    if "/" not in args.kernel_address6:
        raise UsageError(f"--kernel-address6 {args.kernel_address6} has no prefix length (like fd00:77::1/64)")
    try:
        own = ipaddress.IPv6Address(args.address6)
    except ValueError:
        raise UsageError(f"--address6 {args.address6!r} is not an IPv6 address") from None
    if own.is_multicast or own.is_loopback or own.is_unspecified or own.is_link_local or own.ipv4_mapped:
        raise UsageError(f"--address6 {own} cannot be a host's address (multicast, loopback, unspecified, "
                         "link-local or IPv4-mapped)")
    if own == kernel.ip:
        raise UsageError(f"--address6 {own} is the kernel side's own address; pick another in {kernel.network}")
    if own not in kernel.network:
        raise UsageError(f"--address6 {own} is outside the kernel side's network {kernel.network}")
    if args.mtu < 1280:
        raise UsageError(f"IPv6 needs an MTU of at least 1280, not {args.mtu}; add --no-ipv6 for a smaller one")


def fault_settings(args) -> dict | None:
    if any((args.drop_rate, args.corrupt_rate, args.duplicate_rate, args.reorder_rate, args.delay_ms)):
        return dict(drop=args.drop_rate, corrupt=args.corrupt_rate, duplicate=args.duplicate_rate,
                    reorder=args.reorder_rate, delay=1.0 if args.delay_ms else 0.0,
                    delay_ms=args.delay_ms, seed=args.fault_seed)
    return None


def device_name(args) -> str:
    """The kernel's interface towards the stack: the TUN, or the veth pair's
    kernel end (the name `misdtcp ss` asks for)."""
    return args.veth if args.device == "packet-ring" else args.tun


def device_description(args, device) -> str:
    if args.device == "packet-ring":
        return f"{device.name} (packet ring on {device.stack_end})"
    return args.tun


def open_device(args):
    """The device the arguments name, created or attached to."""
    from misdtcp.device.tun import DeviceError

    try:
        if args.device == "packet-ring":
            from misdtcp.device.packet_ring import PacketRing
            return PacketRing(args.veth, address=args.kernel_address, stack_end=args.stack_end, mtu=args.mtu,
                              offload=args.offload, slots=args.ring_slots)
        from misdtcp.device.tun import Tun
        return Tun(args.tun, address=args.kernel_address, mtu=args.mtu, offload=args.offload, nonblocking=True,
                   address6=args.kernel_address6 if args.ipv6 else None)
    except DeviceError as exc:
        message = str(exc)
        if args.ipv6 and "IPv6 address" in message:
            message = message.rstrip(".") + "; enable IPv6 there (net.ipv6.conf.all.disable_ipv6=0) or add --no-ipv6"
        raise UsageError(message) from None


def open_device_and_stack(args, cpus):
    """The device (kernel side at --kernel-address, and --kernel-address6 on
    a dual-stack TUN) and a started stack on it, as `serve` and `client`
    both set them up."""
    from misdtcp.api import Stack, StackError
    from misdtcp.device.tun import DeviceError

    device = open_device(args)
    try:
        stack = Stack(device, address=args.address, address6=args.address6 if args.ipv6 else None,
                      workers=args.workers, strategy=args.strategy,
                      cpus=cpus, stripe=args.stripe, rcvbuf=args.rcvbuf, sndbuf=args.sndbuf,
                      max_connections=args.max_connections, offload=args.offload, mtu=args.mtu,
                      faults=fault_settings(args), pcap=args.pcap, pcap_snaplen=args.pcap_snaplen,
                      placement=args.placement, digest_every=args.check_every)
        stack.start()
    except (StackError, DeviceError) as exc:
        device.close()
        raise UsageError(str(exc)) from None
    except BaseException:
        device.close()
        raise
    return device, stack


class PidFile:
    """-I/--pidfile: this process's ID in a file while it serves (removed at exit)."""

    def __init__(self, path: str | None):
        self.path = path
        if path:
            try:
                with open(path, "w") as f:
                    f.write(f"{os.getpid()}\n")
            except OSError as exc:
                raise UsageError(f"cannot write the pid file {path}: {exc.strerror}") from None

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def serve(args) -> int:
    cpus = _check_serve_args(args)
    port = args.port or DEFAULT_PORTS[args.app]
    # with --pcap - the capture owns standard output; reports go to standard
    # error then, as tcpdump -w - prints its own messages
    out = Output(JSON_STREAM if args.json_stream else JSON if args.json else TEXT, args.logfile,
                 stream=sys.stderr if args.pcap == "-" else None)
    pidfile = PidFile(None)
    stop = threading.Event()
    outcome = {"ok": True}
    stack = device = control = None
    try:
        device, stack = open_device_and_stack(args, cpus)
        from misdtcp.cli.control import ControlServer
        try:
            control = ControlServer(stack, device_name(args))
        except OSError as exc:
            raise UsageError(f"another misdtcp serve answers on {device_name(args)} in this network namespace "
                             f"({exc.strerror})") from None

        def on_signal(signum, frame):
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

        def finished(ok=True):
            """-1: one test (iperf3) or one connection (the others) is done."""
            if args.one_off:
                outcome["ok"] = ok
                stop.set()

        app = _start_app(args.app, stack, port, out, stop, finished)
        # say "serving" once a client can connect
        started = time.monotonic()
        while not stack.listening(port) and not stack.failure and not stop.is_set():
            if time.monotonic() - started > 10:
                raise UsageError(f"the {args.app} app did not start listening on port {port} within 10 s")
            time.sleep(0.005)
        pidfile = PidFile(args.pidfile)             # once serving, as iperf3 -s -D writes it
        out.record({"event": "serving", "app": args.app, "address": args.address,
                    "address6": args.address6 if args.ipv6 else None, "port": port,
                    "strategy": args.strategy, "workers": args.workers, "placement": stack.placement,
                    "offload": args.offload, "device": args.device})
        on = f"{args.address}:{port}" + (f" and [{args.address6}]:{port}" if args.ipv6 else "")
        out.text(f"misdtcp: serving {args.app} on {on} via {device_description(args, device)} "
                 f"({args.strategy}, {args.workers} worker(s), {stack.placement} placement, "
                 f"offload {'on' if args.offload else 'off'})")
        out.text("-----------------------------------------------------------")
        out.text(f"Server listening on {port}")
        out.text("-----------------------------------------------------------")
        reporter = Reporter(stack, out)
        deadline = time.monotonic() + args.duration if args.duration else None
        # -i 0: no lines, but the activity is still accounted every second
        step = args.interval or ACCOUNT_EVERY
        next_report = time.monotonic() + step
        told = 0
        while not stop.is_set():
            stop.wait(min(0.1, max(0.0, next_report - time.monotonic())))
            told = _tell_incidents(stack, told, out)
            if stack.failure:
                print(f"misdtcp: {stack.failure}", file=sys.stderr, flush=True)
                reporter.line(final=True)
                return 1
            if time.monotonic() >= next_report:
                reporter.line(emit=bool(args.interval))
                next_report += step
            if deadline is not None and time.monotonic() >= deadline:
                break
        stop.set()
        reporter.line(emit=bool(args.interval))     # the last, partial interval
        reporter.line(final=True)
        app.join(1.0)
        return 0 if outcome["ok"] else 1
    finally:
        if control is not None:
            control.close()
        if stack is not None:
            stack.stop()
        if device is not None:
            device.close()
        pidfile.remove()
        out.close()


def _tell_incidents(stack, told: int, out: Output) -> int:
    """Say what the runtime recovered from since the last call (a worker
    replaced from its snapshot): a line on stderr, or a JSON record."""
    incidents = stack.incidents
    for incident in incidents[told:]:
        if out.mode == JSON:
            out.record({"event": "recovered", "role": incident.role, "pid": incident.pid,
                        "how": incident.how, "replaced_by": incident.replaced_by,
                        "from_position": incident.from_position})
        else:
            print(f"misdtcp: {incident}", file=sys.stderr, flush=True)
    return len(incidents)


def _start_app(name, stack, port, out, stop, finished):
    on_accept = lambda conn: out.accepted(conn, port)  # noqa: E731
    if name == "iperf3":
        from misdtcp.apps import iperf3
        target = lambda: iperf3.serve(stack, port, stop=stop, log=out.message, on_accept=on_accept,  # noqa: E731
                                      on_test_end=finished)
    else:
        from misdtcp.apps import discard, echo, sink
        module = {"echo": echo, "discard": discard, "sink": sink}[name]

        def report(record):
            out.record(record)
            finished(True)
        target = lambda: module.serve(stack, port, report=report, stop=stop, on_accept=on_accept)  # noqa: E731
    thread = threading.Thread(target=target, name=f"misdtcp-{name}", daemon=True)
    thread.start()
    return thread
