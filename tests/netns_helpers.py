"""Shared helpers and fixtures for tests that move packets through a TUN.

Plain module (not a conftest): test files ``from netns_helpers import ...``;
the lead's ``conftest.py`` can import the fixtures (``netns``, ``tun_netns``,
``reap_stale_netns``) to make them visible everywhere.

The layout every end-to-end test uses (DESIGN.md, "Network safety"): a fresh
namespace ``misdtcp-test-<pid>-<hex>``, a TUN inside it whose kernel side is
``KERNEL_ADDR`` (10.77.0.1/24); the user-space stack (or the scripted peer of
a device test) is ``STACK_ADDR`` (10.77.0.2).  The test process itself stays in
the root namespace and holds the TUN descriptor; the kernel-side programs run
inside the namespace through ``ip netns exec``.
"""
from __future__ import annotations

import os
import select
import subprocess
import time
from typing import Callable, Iterator

import pytest

from misdtcp.testing import lab as netns_mod
from misdtcp.wire import vnet_header as vnet
from misdtcp.device.netns import Netns
from misdtcp.device.packet_ring import PacketRing
from misdtcp.device.tun import Tun

KERNEL_ADDR = "10.77.0.1"
STACK_ADDR = "10.77.0.2"
KERNEL_CIDR = KERNEL_ADDR + "/24"
TUN_NAME = "misd0"


def netns_unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and TUN devices"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    import shutil

    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def require_netns() -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)


def make_tun_netns(offload: bool = True, mtu: int = 1500, nonblocking: bool = True) -> tuple[Netns, Tun]:
    """A fresh namespace with a TUN whose kernel side is KERNEL_CIDR; caller closes both."""
    ns = Netns().create()
    try:
        # No IPv6 on the TUN: router solicitations and MLD reports would be
        # frames the tests have to skip, and the stack is IPv4-only.
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        tun = Tun(TUN_NAME, address=KERNEL_CIDR, mtu=mtu, offload=offload,
                  nonblocking=nonblocking, netns=ns)
    except BaseException:
        ns.delete()
        raise
    return ns, tun


def make_packet_ring_netns(offload: bool = True, mtu: int = 1500, **options) -> tuple[Netns, PacketRing]:
    """A fresh namespace with a veth pair: the kernel's end TUN_NAME at
    KERNEL_CIDR, the stack's end bound to a packet ring; caller closes both."""
    ns = Netns().create()
    try:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        device = PacketRing(TUN_NAME, address=KERNEL_CIDR, mtu=mtu, offload=offload, netns=ns, **options)
    except BaseException:
        ns.delete()
        raise
    return ns, device


def make_device_netns(device: str = "tun", offload: bool = True, mtu: int = 1500):
    """(namespace, device) for device "tun" or "packet-ring"; the kernel's
    interface is TUN_NAME at KERNEL_CIDR either way."""
    if device == "packet-ring":
        return make_packet_ring_netns(offload=offload, mtu=mtu)
    return make_tun_netns(offload=offload, mtu=mtu)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh namespace with lo up, deleted after the test."""
    require_netns()
    ns = Netns().create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def tun_netns() -> Iterator[tuple[Netns, Tun]]:
    """(namespace, TUN with offload) with the kernel side at KERNEL_CIDR."""
    require_netns()
    ns, tun = make_tun_netns(offload=True)
    try:
        yield ns, tun
    finally:
        tun.close()
        ns.delete()


@pytest.fixture(scope="session")
def reap_stale_netns() -> list[str]:
    """Delete test namespaces left by dead runs; call once per session."""
    if os.geteuid() != 0:
        return []
    return netns_mod.reap_stale()


def read_frame(tun: Tun, timeout: float = 5.0,
               want: Callable[[vnet.VnetHeader, bytes], bool] | None = None) -> tuple[vnet.VnetHeader, bytes]:
    """The next frame from ``tun`` (vnet header, IP packet) that ``want`` accepts.

    Frames that ``want`` rejects are skipped.  Bounded by ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching frame from {tun.name} within {timeout:g} s")
        ready, _, _ = select.select([tun.fd], [], [], remaining)
        if not ready:
            continue
        try:
            data = tun.read()
        except BlockingIOError:
            continue
        header, packet = vnet.split(data, tun.vnet_hdr_len)
        packet = bytes(packet)
        if want is None or want(header, packet):
            return header, packet


def is_ipv4_proto(proto: int) -> Callable[[vnet.VnetHeader, bytes], bool]:
    return lambda _h, p: len(p) >= 20 and p[0] >> 4 == 4 and p[9] == proto


def write_frame(tun: Tun, packet: bytes, header: vnet.VnetHeader | None = None) -> int:
    """Write an IP packet to ``tun`` behind ``header`` (default: no flags, full checksums)."""
    return tun.write((header or vnet.VnetHeader()).pack(tun.vnet_hdr_len) + packet)


def kernel_python(ns: Netns, code: str) -> subprocess.Popen:
    """Run Python ``code`` inside ``ns`` (tracked, killed when the namespace is deleted)."""
    return ns.python(["-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout: float = 20.0) -> tuple[int, str, str]:
    """Wait for a kernel-side process (bounded) and return (status, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        return -9, out.decode(errors="replace"), err.decode(errors="replace")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def ping_code(dst: str, count: int = 1, interval: float = 0.2, wait: float = 3.0) -> str:
    """Python source that pings ``dst`` from inside a namespace and prints 'sent received'."""
    return (
        "from misdtcp.testing.lab import icmp_ping\n"
        f"r = icmp_ping({dst!r}, count={count}, interval={interval}, wait={wait})\n"
        "print(r.sent, r.received, flush=True)\n"
    )


KERNEL_SINK = """
import hashlib, socket
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(({kernel!r}, {port}))
ls.listen(1)
ls.settimeout({timeout})
print("listening", flush=True)
conn, _ = ls.accept()
conn.settimeout({timeout})
buf = bytearray()
try:
    while len(buf) < {expect}:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
except socket.timeout:
    pass
print(len(buf), hashlib.sha256(buf).hexdigest(), flush=True)
conn.close()
"""


def kernel_sink(ns: Netns, port: int, expect: int, timeout: float = 20.0) -> subprocess.Popen:
    """A kernel TCP server at KERNEL_ADDR:port inside ``ns`` that reads up to ``expect`` bytes.

    It prints "listening" once bound, and at the end "<count> <sha256>" of what
    it received (after ``expect`` bytes, EOF, or ``timeout`` seconds of silence).
    """
    proc = kernel_python(ns, KERNEL_SINK.format(kernel=KERNEL_ADDR, port=port, expect=expect, timeout=timeout))
    ready, _, _ = select.select([proc.stdout], [], [], 15.0)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if line != "listening":
        proc.kill()
        raise RuntimeError(f"the kernel-side server on port {port} did not start: {line!r}")
    return proc


class ScriptedClient:
    """A minimal TCP client at STACK_ADDR driven by hand through the TUN (tests only).

    ``connect()`` does the three-way handshake with MSS 1460, SACK, timestamps
    and window scaling; ``data_segment(payload)`` builds the next in-order
    segment (timestamps on, so each wire segment carries 1448 bytes).
    """

    MSS = 1460
    MSS_TS = 1448

    def __init__(self, tun: Tun, port: int, sport: int = 40000, isn: int = 5_000_000):
        self.tun, self.port, self.sport, self.isn = tun, port, sport, isn
        self.snd_nxt = isn
        self.rcv_nxt = 0
        self.peer_tsval = 0
        self.peer_window = 0

    def _from_peer(self, _h: vnet.VnetHeader, p: bytes) -> bool:
        if not is_ipv4_proto(6)(_h, p):
            return False
        ihl = (p[0] & 0x0F) * 4
        return p[ihl:ihl + 4] == bytes([self.port >> 8, self.port & 0xFF, self.sport >> 8, self.sport & 0xFF])

    def read(self, timeout: float = 10.0):
        from scapy.layers.inet import IP

        _h, packet = read_frame(self.tun, timeout, self._from_peer)
        return IP(packet)

    def _ts(self):
        return [("NOP", None), ("NOP", None), ("Timestamp", (int(time.monotonic() * 1000) & 0xFFFFFFFF, self.peer_tsval))]

    def connect(self) -> None:
        from scapy.layers.inet import IP, TCP

        syn = IP(src=STACK_ADDR, dst=KERNEL_ADDR) / TCP(
            sport=self.sport, dport=self.port, flags="S", seq=self.isn, window=65535,
            options=[("MSS", self.MSS), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)])
        write_frame(self.tun, bytes(syn))
        synack = self.read()
        if synack[TCP].flags != "SA" or synack[TCP].ack != self.isn + 1:
            raise RuntimeError(f"expected a SYN-ACK for our SYN, got {synack.summary()}")
        self.snd_nxt = self.isn + 1
        self.rcv_nxt = synack[TCP].seq + 1
        self.peer_window = synack[TCP].window  # never scaled in a SYN-ACK (RFC 7323, 2.2)
        for key, value in synack[TCP].options:
            if key == "Timestamp":
                self.peer_tsval = value[0]
        write_frame(self.tun, bytes(IP(src=STACK_ADDR, dst=KERNEL_ADDR) / TCP(
            sport=self.sport, dport=self.port, flags="A", seq=self.snd_nxt, ack=self.rcv_nxt, window=512,
            options=self._ts())))

    def data_segment(self, payload: bytes, advance: bool = True) -> bytes:
        """The next data segment as a bare IP packet with complete checksums."""
        from scapy.layers.inet import IP, TCP

        packet = bytes(IP(src=STACK_ADDR, dst=KERNEL_ADDR, id=self.snd_nxt & 0xFFFF) / TCP(
            sport=self.sport, dport=self.port, flags="PA", seq=self.snd_nxt, ack=self.rcv_nxt, window=512,
            options=self._ts()) / payload)
        if advance:
            self.snd_nxt += len(payload)
        return packet


def as_gso_super_frame(packet: bytes, gso_size: int) -> tuple[vnet.VnetHeader, bytes]:
    """Turn a complete TCP/IPv4 packet into a checksum-partial GSO super-frame, as the kernel sends them."""
    raw = bytearray(packet)
    ihl = (raw[0] & 0x0F) * 4
    thl = (raw[ihl + 12] >> 4) * 4
    l4_len = len(raw) - ihl
    pseudo = raw[12:20] + bytes([0, 6, l4_len >> 8, l4_len & 0xFF])
    total = sum(int.from_bytes(pseudo[i:i + 2], "big") for i in range(0, 12, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    raw[ihl + 16:ihl + 18] = total.to_bytes(2, "big")
    header = vnet.VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=ihl + thl,
                             gso_size=gso_size, csum_start=ihl, csum_offset=16)
    return header, bytes(raw)


__all__ = [
    "KERNEL_ADDR", "STACK_ADDR", "KERNEL_CIDR", "TUN_NAME", "require_netns", "netns_unavailable_reason",
    "make_tun_netns", "make_packet_ring_netns", "make_device_netns", "netns", "tun_netns", "reap_stale_netns", "read_frame", "is_ipv4_proto",
    "write_frame", "kernel_python", "finish", "ping_code", "kernel_sink", "ScriptedClient",
    "as_gso_super_frame",
]
