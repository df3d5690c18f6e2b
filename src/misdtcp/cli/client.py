"""`misdtcp client HOST`: misdtcp as the iperf3 client against a stock
`iperf3 -s` on the kernel side of the device (a TUN or a veth pair read
through a packet ring), set up like `serve` (same device options), so the MISD send path is measured against a real receiver.
Prints iperf3's lines, or with -J one JSON document in iperf3's schema."""
from __future__ import annotations

import ipaddress
import json
import sys

from misdtcp.cli.errors import UsageError
from misdtcp.cli.serve import _check_serve_args, open_device_and_stack


def _size(n: float) -> str:
    for unit, scale in (("GBytes", 1 << 30), ("MBytes", 1 << 20), ("KBytes", 1 << 10)):
        if n >= scale:
            return f"{n / scale:6.2f} {unit}"
    return f"{n:6.0f} Bytes "


def _line(sid, start, end, n, seconds, tail=""):
    rate = n * 8 / seconds / 1e9 if seconds > 0 else 0.0
    label = "SUM" if sid is None else f"{sid:3d}"
    return f"[{label}] {start:6.2f}-{end:<6.2f} sec  {_size(n)}  {rate:6.2f} Gbits/sec{tail}"


def run_client(args) -> int:
    cpus = _check_serve_args(args)
    try:
        host = ipaddress.ip_address(args.host)
    except ValueError:
        raise UsageError(f"{args.host!r} is not an IP address") from None
    if host.version == 6 and not args.ipv6:
        if args.device == "packet-ring":
            raise UsageError(f"{host} is an IPv6 address, but --device packet-ring carries IPv4 only")
        raise UsageError(f"{host} is an IPv6 address, but --no-ipv6 was given")
    kernel = ipaddress.ip_interface(args.kernel_address6 if host.version == 6 else args.kernel_address)
    if host not in kernel.network:
        raise UsageError(f"{host} is not on the device's network {kernel.network}: the iperf3 server must be the "
                         f"kernel side (e.g. {kernel.ip})")
    from misdtcp.apps.iperf3_client import Iperf3Client, Iperf3Error

    text = not args.json
    say = (lambda line: print(line, flush=True)) if text else (lambda line: None)
    device, stack = open_device_and_stack(args, cpus)
    try:
        def on_interval(interval):
            for row in interval["streams"]:
                say(_line(row["socket"], row["start"], row["end"], row["bytes"], row["seconds"]))
            if len(interval["streams"]) > 1:
                s = interval["sum"]
                say(_line(None, s["start"], s["end"], s["bytes"], s["seconds"]))

        client = Iperf3Client(stack, str(host), args.port, seconds=args.time, parallel=args.parallel,
                              reverse=args.reverse, length=args.length, interval=args.interval,
                              connect_timeout=args.connect_timeout, on_interval=on_interval, log=say)
        if args.reverse:
            say(f"Reverse mode, remote host {host} is sending")
        try:
            result = client.run()
        except Iperf3Error as exc:
            if args.json:
                print(json.dumps({"error": str(exc)}, indent=2))
            print(f"misdtcp: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        end = result["end"]
        say("- - - - - - - - - - - - - - - - - - - - - - - - -")
        say("[ ID] Interval           Transfer     Bitrate         Retr")
        for stream in end["streams"]:
            tx, rx = stream["sender"], stream["receiver"]
            say(_line(tx["socket"], 0, tx["seconds"], tx["bytes"], tx["seconds"], f"  {tx['retransmits']:4d}  sender"))
            say(_line(rx["socket"], 0, rx["seconds"], rx["bytes"], rx["seconds"], "        receiver"))
        if len(end["streams"]) > 1:
            tx, rx = end["sum_sent"], end["sum_received"]
            say(_line(None, 0, tx["seconds"], tx["bytes"], tx["seconds"], f"  {tx['retransmits']:4d}  sender"))
            say(_line(None, 0, rx["seconds"], rx["bytes"], rx["seconds"], "        receiver"))
        say("")
        say("iperf Done.")
        return 0
    finally:
        stack.stop()
        device.close()
