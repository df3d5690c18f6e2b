"""Lab tools that run inside the namespaces tests, demos and benchmarks create.

* ``NftLoss`` drops a percentage of packets on one interface with nftables
  (``numgen random mod 100 < N drop``), the loss for the stack->kernel
  direction (frames the stack writes arrive as *ingress* on the TUN);
* ``icmp_ping`` - a bounded ICMP echo client (raw socket), because iputils
  ``ping`` is not installed on every machine misdtcp runs on;
* ``reap_stale`` deletes test namespaces left behind by runs that died.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from misdtcp.device.netns import NETNS_RUN_DIR, TEST_PREFIX, Netns, NetnsError, _ip, _run, list_netns
from misdtcp.wire.codec import internet_checksum


def _process_start_time(pid: int) -> float | None:
    """Wall-clock start time of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # Field 22 (starttime, clock ticks after boot) counts from after the
    # closing parenthesis of the command name, which may contain spaces.
    fields = stat[stat.rindex(")") + 2:].split()
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def reap_stale(prefix: str = TEST_PREFIX) -> list[str]:
    """Delete ``<prefix>-<pid>-<hex>`` namespaces whose creating process is gone.

    A namespace is stale when the PID in its name no longer runs, or runs but
    started after the namespace was created (the PID was reused).  Namespaces
    of live concurrent runs are left alone.  Returns the deleted names.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-[0-9a-f]+$")
    deleted = []
    for name in list_netns():
        m = pattern.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        started = _process_start_time(pid)
        try:
            created = os.stat(os.path.join(NETNS_RUN_DIR, name)).st_mtime
        except FileNotFoundError:
            continue
        if started is not None and started <= created + 1.0:
            continue  # its creator is still running
        _run([_ip(), "netns", "del", name], f"deleting stale namespace {name}", check=False)
        deleted.append(name)
    return deleted


# -- nftables loss -------------------------------------------------------------
class NftLoss:
    """Drop ``percent`` % of the packets on interface ``ifname`` inside ``ns``, at random:
    IPv4 ones (``family="ip"``), IPv6 ones (``"ip6"``) or both (``"inet"``).

    ``direction="ingress"`` hooks prerouting and matches ``iifname``: for a TUN
    that is the stack->kernel direction, real loss the kernel cannot see.
    ``direction="egress"`` hooks postrouting and matches ``oifname``; note that
    the kernel's TCP sees such a drop as a local transmit failure and resends
    without it counting as network loss (docs/DESIGN.md, "Device facts").
    The rule lives in its own table, so removal never touches other rules.
    """

    TABLE = "misdtcp_loss"

    def __init__(self, ns: Netns, ifname: str, percent: int, direction: str = "ingress", family: str = "ip"):
        if not isinstance(percent, int) or not 0 <= percent <= 100:
            raise NetnsError(f"loss percent must be an integer from 0 to 100, not {percent!r}.")
        if direction not in ("ingress", "egress"):
            raise NetnsError(f"direction must be 'ingress' or 'egress', not {direction!r}.")
        if family not in ("ip", "ip6", "inet"):
            raise NetnsError(f"family must be 'ip', 'ip6' or 'inet', not {family!r}.")
        self.family = family
        if not re.match(r"^[A-Za-z0-9_.-]{1,15}$", ifname):
            raise NetnsError(f"{ifname!r} is not a valid interface name.")
        if shutil.which("nft") is None:
            raise NetnsError("the `nft` command (nftables) is missing; install nftables.")
        self.ns = ns
        self.ifname = ifname
        self.percent = percent
        self.direction = direction
        self._installed = False

    def _ruleset(self) -> str:
        hook, match = ("prerouting", "iifname") if self.direction == "ingress" else ("postrouting", "oifname")
        # priority -300: before conntrack (-200), so dropped packets never
        # create conntrack state and the loss is independent of other rules.
        return (
            f"table {self.family} {self.TABLE} {{\n"
            f"  chain loss {{ type filter hook {hook} priority -300; policy accept;\n"
            f"    {match} \"{self.ifname}\" numgen random mod 100 < {self.percent} counter drop\n"
            f"  }}\n"
            f"}}\n"
        )

    def install(self) -> "NftLoss":
        self.ns.run(["nft", "-f", "-"], input=self._ruleset().encode())
        self._installed = True
        return self

    def remove(self) -> None:
        if self._installed:
            self._installed = False
            if self.ns.exists:
                self.ns.run(["nft", "delete", "table", self.family, self.TABLE], check=False)

    def dropped(self) -> int:
        """Packets dropped by the rule so far (its nftables counter)."""
        out = self.ns.run(["nft", "-j", "list", "table", self.family, self.TABLE]).stdout
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
        raise NetnsError(f"the loss rule in table {self.TABLE} has no counter.")

    def installed_in_kernel(self) -> bool:
        proc = self.ns.run(["nft", "list", "tables"], check=False)
        return f"table {self.family} {self.TABLE}" in proc.stdout.decode()

    def __enter__(self) -> "NftLoss":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


# -- ICMP echo client -------------------------------------------------------------
@dataclass
class PingResult:
    sent: int
    received: int
    rtts_ms: list[float]

    @property
    def lost(self) -> int:
        return self.sent - self.received


def icmp_ping(dst: str, count: int = 1, interval: float = 0.2, wait: float = 2.0,
              payload: bytes = b"misdtcp-ping") -> PingResult:
    """Send ``count`` ICMP echo requests to ``dst`` and count the replies (needs root).

    Bounded: at most ``count`` requests, then at most ``wait`` seconds for the
    last replies.  Run it inside a namespace with ``Netns.call(icmp_ping, ...)``.
    """
    import select

    if not 1 <= count <= 100000:
        raise ValueError(f"count must be between 1 and 100000, not {count}.")
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    sent_at: dict[int, float] = {}
    rtts: list[float] = []

    def drain(until: float) -> None:
        while len(rtts) < count:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                return
            try:
                packet, (src, _port) = sock.recvfrom(65535)
            except BlockingIOError:
                continue
            ihl = (packet[0] & 0x0F) * 4
            icmp = packet[ihl:]
            if src != dst or len(icmp) < 8 or icmp[0] != 0:
                continue  # not an echo reply from dst (a raw socket sees all ICMP)
            rid, seq = struct.unpack("!HH", icmp[4:8])
            if rid == ident and seq in sent_at:
                rtts.append((time.monotonic() - sent_at.pop(seq)) * 1000.0)

    try:
        for seq in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            csum = internet_checksum(header + payload)
            sock.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload, (dst, 0))
            sent_at[seq] = time.monotonic()
            drain(time.monotonic() + interval)
        drain(time.monotonic() + wait)
    finally:
        sock.close()
    return PingResult(sent=count, received=len(rtts), rtts_ms=rtts)
