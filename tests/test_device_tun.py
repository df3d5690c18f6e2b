"""The TUN facts the stack depends on, pinned down against the real kernel.

Each test builds a fresh namespace with a TUN (kernel side 10.77.0.1/24) and
plays a minimal scripted peer at 10.77.0.2 with scapy: it reads what the
kernel sends through the TUN and writes crafted frames back.
"""
from __future__ import annotations

import hashlib
import os
import select
import struct
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP

from misdtcp.wire import vnet_header as vnet
from misdtcp.device.tun import DeviceError, Tun
from netns_helpers import (KERNEL_ADDR, STACK_ADDR, finish, is_ipv4_proto, kernel_python, make_tun_netns,
                           netns, ping_code, read_frame, require_netns, tun_netns, write_frame)

__all__ = ["netns", "tun_netns"]  # fixtures used by name below

pytestmark = [pytest.mark.netns]

MSS = 1460
MSS_TS = MSS - 12  # payload per segment once timestamps are on (RFC 7323 option: 10 bytes + 2 NOP)


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_sum(data: bytes) -> int:
    """RFC 1071 folded one's-complement sum (not inverted)."""
    if len(data) % 2:
        data += b"\x00"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def pseudo_sum(packet: bytes) -> int:
    """Folded pseudo-header sum of an IPv4 packet's L4 part, over its full tot_len."""
    ihl = (packet[0] & 0x0F) * 4
    tot_len = struct.unpack("!H", packet[2:4])[0]
    return internet_sum(packet[12:20] + struct.pack("!BBH", 0, packet[9], tot_len - ihl))


def ip_header_valid(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    return internet_sum(packet[:ihl]) == 0xFFFF


def l4_checksum_valid(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    return internet_sum(packet[12:20] + struct.pack("!BBH", 0, packet[9], len(packet) - ihl) + packet[ihl:]) == 0xFFFF


def tcp_from(port: int | None = None, sport: int | None = None):
    def want(_h: vnet.VnetHeader, p: bytes) -> bool:
        if not is_ipv4_proto(6)(_h, p):
            return False
        ihl = (p[0] & 0x0F) * 4
        s, d = struct.unpack("!HH", p[ihl:ihl + 4])
        return (port is None or d == port) and (sport is None or s == sport)
    return want


def option(tcp: TCP, name: str):
    for key, value in tcp.options:
        if key == name:
            return value
    return None


# -- opening and errors ----------------------------------------------------------------
@pytest.mark.timeout(60)
def test_vnet_header_size_default_10_set_to_12_and_errors(netns):
    ns = netns
    with Tun("misd0", address="10.77.0.1/24", mtu=1500, netns=ns) as tun:
        assert tun.default_vnet_hdr_len == vnet.VNET_HDR_LEN_LEGACY
        assert tun.vnet_hdr_len == vnet.VNET_HDR_LEN
        assert tun.created
        shown = ns.run(["ip", "-o", "addr", "show", "dev", "misd0"]).stdout.decode()
        assert "10.77.0.1/24" in shown
        link = ns.run(["ip", "-o", "link", "show", "dev", "misd0"]).stdout.decode()
        assert "mtu 1500" in link and ",UP" in link
        # A second opener of a single-queue TUN that is in use gets EBUSY.
        with pytest.raises(DeviceError, match="busy"):
            Tun("misd0", netns=ns)
    # Closing the only descriptor removed the device we created.
    assert ns.run(["ip", "link", "show", "dev", "misd0"], check=False).returncode != 0

    with pytest.raises(DeviceError, match="prefix length"):
        Tun("misd1", address="10.77.0.1", netns=ns)
    with pytest.raises(DeviceError, match="not an IPv4 address"):
        Tun("misd1", address="10.77.0.300/24", netns=ns)
    with pytest.raises(DeviceError, match="MTU"):
        Tun("misd1", mtu=40, netns=ns)
    with pytest.raises(DeviceError, match="interface name"):
        Tun("a-name-that-is-too-long", netns=ns)


@pytest.mark.timeout(60)
def test_an_ipv6_address_for_the_kernel_side_is_usable_at_once(netns):
    """address6: added without duplicate address detection, so never
    "tentative": the kernel can send from it right away."""
    ns = netns
    with Tun("misd0", address="10.77.0.1/24", address6="fd00:77::1/64", mtu=1500, netns=ns):
        shown = ns.run(["ip", "-6", "-o", "addr", "show", "dev", "misd0", "scope", "global"]).stdout.decode()
        assert "fd00:77::1/64" in shown and "tentative" not in shown
        route = ns.run(["ip", "-6", "route", "get", "fd00:77::2"]).stdout.decode()
        assert "dev misd0" in route and "src fd00:77::1" in route
    with pytest.raises(DeviceError, match="not an IPv6 address"):
        Tun("misd1", address6="fd00:77::zz/64", netns=ns)
    with pytest.raises(DeviceError, match="no prefix length"):
        Tun("misd1", address6="fd00:77::1", netns=ns)
    with pytest.raises(DeviceError, match="unicast"):
        Tun("misd1", address6="ff02::1/64", netns=ns)
    with pytest.raises(DeviceError, match="1280"):
        Tun("misd1", address6="fd00:77::1/64", mtu=1200, netns=ns)


@pytest.mark.timeout(60)
def test_persistent_tun_can_be_attached_again_by_name(netns):
    ns = netns
    first = Tun("misdp", address="10.77.1.1/24", persistent=True, netns=ns)
    first.close()
    assert ns.run(["ip", "link", "show", "dev", "misdp"], check=False).returncode == 0
    second = Tun("misdp", address="10.77.1.1/24", netns=ns)
    assert not second.created  # attached, so closing must not delete it
    second.close()
    assert ns.run(["ip", "link", "show", "dev", "misdp"], check=False).returncode == 0
    ns.ip("link", "del", "misdp")


# -- (a) ICMP: read path and write path ------------------------------------------------
@pytest.mark.timeout(60)
def test_ping_request_read_and_reply_written_through_tun(tun_netns):
    ns, tun = tun_netns
    pinger = kernel_python(ns, ping_code(STACK_ADDR, count=1, wait=5.0))
    header, packet = read_frame(tun, 10.0, is_ipv4_proto(1))

    # ICMP is never offloaded: no flags, no GSO, a complete checksum.
    assert header == vnet.VnetHeader(flags=0, gso_type=vnet.GSO_NONE, hdr_len=0, gso_size=0,
                                     csum_start=0, csum_offset=0, num_buffers=0)
    request = IP(packet)
    assert request.src == KERNEL_ADDR and request.dst == STACK_ADDR
    assert request[ICMP].type == 8
    assert ip_header_valid(packet)
    ihl = request.ihl * 4
    assert internet_sum(packet[ihl:]) == 0xFFFF

    reply = IP(src=STACK_ADDR, dst=KERNEL_ADDR, ttl=64) / ICMP(type=0, id=request[ICMP].id,
                                                               seq=request[ICMP].seq) / bytes(request[ICMP].payload)
    raw = bytes(reply)
    assert write_frame(tun, raw) == vnet.VNET_HDR_LEN + len(raw)
    status, out, err = finish(pinger)
    assert status == 0, err
    assert out.split() == ["1", "1"], "the kernel did not accept the echo reply written into the TUN"


# -- (b) kernel -> stack: SYN, then GSO super-frames ---------------------------------------
KERNEL_CLIENT = """
import socket
data = bytes(range(256)) * 1024  # 256 KiB
s = socket.create_connection(({stack!r}, 5201), timeout=20)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
print("sent", len(data), flush=True)
s.settimeout(5)
try:
    s.recv(1)
except OSError:
    pass
s.close()
"""


def receive_from_kernel_client(tun, total: int):
    """Play the stack's side of KERNEL_CLIENT's connection by hand: answer
    its SYN, acknowledge every data frame, until `total` bytes arrived in
    order.  Returns (SYN header, SYN packet, data frames as (header, packet),
    the bytes received)."""
    syn_header, syn_packet = read_frame(tun, 10.0, tcp_from(port=5201))
    syn = IP(syn_packet)
    assert syn[TCP].flags == "S"
    tsval, _ = option(syn[TCP], "Timestamp")
    isn = 1_000_000
    kernel_port = syn[TCP].sport
    rcv_nxt = syn[TCP].seq + 1
    state = {"our_ts": 1, "last_tsval": tsval}

    def send(flags: str, seq: int, ack: int, options=None) -> None:
        segment = IP(src=STACK_ADDR, dst=KERNEL_ADDR) / TCP(
            sport=5201, dport=kernel_port, flags=flags, seq=seq, ack=ack, window=65535,
            options=options or [("NOP", None), ("NOP", None), ("Timestamp", (state["our_ts"], state["last_tsval"]))])
        write_frame(tun, bytes(segment))

    send("SA", isn, rcv_nxt, [("MSS", MSS), ("SAckOK", b""), ("Timestamp", (1, tsval)), ("NOP", None), ("WScale", 7)])
    frames = []
    received = bytearray()
    deadline = time.monotonic() + 30
    while len(received) < total and time.monotonic() < deadline:
        header, packet = read_frame(tun, 10.0, tcp_from(port=5201))
        seg = IP(packet)
        tcp = seg[TCP]
        payload = bytes(packet[seg.ihl * 4 + tcp.dataofs * 4:seg.len])
        if not frames and not payload:
            assert tcp.flags.A and tcp.ack == isn + 1, "the kernel did not complete the handshake"
        if payload:
            frames.append((header, packet))
            if tcp.seq == rcv_nxt:
                received += payload
                rcv_nxt += len(payload)
        ts = option(tcp, "Timestamp")
        if ts:
            state["last_tsval"] = ts[0]
        state["our_ts"] += 1
        send("A", isn + 1, rcv_nxt)  # cumulative ACK; the kernel only ever sends in order here
    return syn_header, syn_packet, frames, bytes(received)


SENT = bytes(range(256)) * 1024     # what KERNEL_CLIENT sends


@pytest.mark.timeout(60)
def test_kernel_tcp_syn_options_and_gso_super_frames(tun_netns):
    ns, tun = tun_netns
    client = kernel_python(ns, KERNEL_CLIENT.format(stack=STACK_ADDR))
    total = len(SENT)
    header, packet, frames, received = receive_from_kernel_client(tun, total)
    syn = IP(packet)
    # The kernel leaves the TCP checksum to us: NEEDS_CSUM, checksum at
    # csum_start + csum_offset, the field holding the pseudo-header sum.
    assert header.needs_csum and not header.is_gso
    assert header.csum_start == syn.ihl * 4 and header.csum_offset == 16
    assert syn[TCP].chksum == pseudo_sum(packet)
    assert option(syn[TCP], "MSS") == MSS
    assert option(syn[TCP], "SAckOK") is not None
    assert option(syn[TCP], "WScale") is not None
    assert option(syn[TCP], "Timestamp") is not None
    assert received == SENT, f"received {len(received)} of {total} bytes in {len(frames)} frames"
    gso_frames = [(h, p) for h, p in frames if h.is_gso]
    assert gso_frames, f"no GSO super-frame among {len(frames)} frames"
    for header, packet in gso_frames:
        seg = IP(packet)
        assert header.gso_type == vnet.GSO_TCPV4
        assert header.gso_size == MSS_TS
        assert header.needs_csum
        assert header.csum_start == seg.ihl * 4 and header.csum_offset == 16
        assert header.hdr_len == seg.ihl * 4 + seg[TCP].dataofs * 4
        assert header.num_buffers == 0
        # TUN facts: tot_len covers the whole super-frame, the IP header
        # checksum is valid, and the TCP field holds the pseudo-header sum
        # over the super-frame's full L4 length.
        assert seg.len == len(packet)
        assert len(packet) > 1500
        assert ip_header_valid(packet)
        assert seg[TCP].chksum == pseudo_sum(packet)
    assert len(frames) < total // MSS_TS, "GSO did not reduce the number of reads"
    print(f"{len(frames)} frames for {total} bytes; largest super-frame "
          f"{max(len(p) for _h, p in gso_frames)} bytes")

    status, out, err = finish(client)
    assert status == 0, err
    assert out.split() == ["sent", str(total)]


@pytest.mark.timeout(60)
def test_without_offload_frames_are_mtu_sized_with_full_checksums():
    """Every frame of a whole transfer, not just the SYN: no GSO, no
    checksum left to us, nothing over the MTU, and the bytes in order."""
    require_netns()
    ns, tun = make_tun_netns(offload=False)
    try:
        client = kernel_python(ns, KERNEL_CLIENT.format(stack=STACK_ADDR))
        header, packet, frames, received = receive_from_kernel_client(tun, len(SENT))
        assert IP(packet)[TCP].flags == "S"
        assert header.flags == 0 and header.gso_type == vnet.GSO_NONE
        assert ip_header_valid(packet) and l4_checksum_valid(packet)
        assert received == SENT
        assert len(frames) >= len(SENT) // MSS_TS
        for header, packet in frames:
            assert header.flags == 0 and header.gso_type == vnet.GSO_NONE and header.gso_size == 0
            assert len(packet) <= 1500 and IP(packet).len == len(packet)
            assert ip_header_valid(packet) and l4_checksum_valid(packet)
        status, out, err = finish(client)
        assert status == 0, err
        assert out.split() == ["sent", str(len(SENT))]
    finally:
        tun.close()
        ns.delete()


# -- (c) stack -> kernel: one GSO super-frame written -----------------------------------------
KERNEL_SERVER = """
import hashlib, socket
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(({kernel!r}, 5202))
ls.listen(1)
ls.settimeout(20)
print("listening", flush=True)
conn, _ = ls.accept()
conn.settimeout(20)
buf = bytearray()
while len(buf) < {expect}:
    chunk = conn.recv(1 << 20)
    if not chunk:
        break
    buf += chunk
print(len(buf), hashlib.sha256(buf).hexdigest(), flush=True)
conn.close()
"""


def _wait_line(proc, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "kernel-side program did not start in time"
    return proc.stdout.readline().decode().strip()


@pytest.mark.timeout(60)
def test_gso_super_frame_written_into_tun_reaches_kernel_socket_intact(tun_netns):
    ns, tun = tun_netns
    segments = 41
    payload = os.urandom(segments * MSS_TS)  # 59,368 bytes in one write
    server = kernel_python(ns, KERNEL_SERVER.format(kernel=KERNEL_ADDR, expect=len(payload)))
    assert _wait_line(server, 15) == "listening"

    isn = 5_000_000
    sport = 40000
    syn = IP(src=STACK_ADDR, dst=KERNEL_ADDR) / TCP(sport=sport, dport=5202, flags="S", seq=isn, window=65535,
                                                   options=[("MSS", MSS), ("SAckOK", b""), ("Timestamp", (100, 0)),
                                                            ("NOP", None), ("WScale", 7)])
    write_frame(tun, bytes(syn))
    _, packet = read_frame(tun, 10.0, tcp_from(sport=5202))
    synack = IP(packet)
    assert synack[TCP].flags == "SA" and synack[TCP].ack == isn + 1
    window = synack[TCP].window  # a SYN-ACK's window is never scaled (RFC 7323, 2.2)
    assert len(payload) <= window, f"the kernel's initial window {window} is smaller than the super-frame"
    kernel_tsval = option(synack[TCP], "Timestamp")[0]
    rcv_nxt = synack[TCP].seq + 1
    ts_options = [("NOP", None), ("NOP", None), ("Timestamp", (101, kernel_tsval))]
    write_frame(tun, bytes(IP(src=STACK_ADDR, dst=KERNEL_ADDR) / TCP(
        sport=sport, dport=5202, flags="A", seq=isn + 1, ack=rcv_nxt, window=512, options=ts_options)))

    # The super-frame: one IP header with tot_len over everything, one TCP
    # header (with the timestamp option that every segment will repeat) and
    # the checksum left partial for the kernel, exactly what it sends us.
    segment = IP(src=STACK_ADDR, dst=KERNEL_ADDR, id=1) / TCP(
        sport=sport, dport=5202, flags="PA", seq=isn + 1, ack=rcv_nxt, window=512, options=ts_options) / payload
    raw = bytearray(bytes(segment))
    ihl = (raw[0] & 0x0F) * 4
    thl = (raw[ihl + 12] >> 4) * 4
    assert ip_header_valid(bytes(raw))
    struct.pack_into("!H", raw, ihl + 16, pseudo_sum(bytes(raw)))
    header = vnet.VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=ihl + thl,
                             gso_size=MSS_TS, csum_start=ihl, csum_offset=16)
    assert write_frame(tun, bytes(raw), header) == vnet.VNET_HDR_LEN + len(raw)

    end = isn + 1 + len(payload)
    acked = isn + 1
    deadline = time.monotonic() + 15
    while acked != end and time.monotonic() < deadline:
        _, packet = read_frame(tun, 10.0, tcp_from(sport=5202))
        acked = IP(packet)[TCP].ack
    assert acked == end, f"the kernel acknowledged {acked - isn - 1} of {len(payload)} bytes"

    status, out, err = finish(server)
    assert status == 0, err
    assert out.split() == [str(len(payload)), hashlib.sha256(payload).hexdigest()]


# -- namespace helpers: lifecycle, reaper, veth, nftables loss ----------------------------------
def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def _fail_inside() -> None:
    raise ValueError("raised inside the namespace")


@pytest.mark.timeout(60)
def test_netns_runs_code_inside_and_cleans_up_after_errors():
    require_netns()
    from misdtcp.device.netns import Netns

    started = None
    with pytest.raises(RuntimeError, match="boom"):
        with Netns() as ns:
            name = ns.name
            assert ns.exists
            assert ns.call(_netns_inode) != _netns_inode()
            with pytest.raises(ValueError, match="raised inside"):
                ns.call(_fail_inside)
            assert "lo" in ns.run(["ip", "-o", "link", "show", "up"]).stdout.decode()
            started = ns.popen(["sleep", "30"])
            raise RuntimeError("boom")
    assert not os.path.exists(f"/run/netns/{name}")
    assert started.poll() is not None, "a process started in the namespace outlived it"


@pytest.mark.timeout(60)
def test_reap_stale_deletes_only_namespaces_of_dead_runs():
    require_netns()
    import subprocess

    from misdtcp.device.netns import Netns
    from misdtcp.testing.lab import reap_stale

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = Netns(name=f"misdtcp-test-{gone.pid}-0dead0").create()
    try:
        with Netns() as live:
            deleted = reap_stale()
            assert stale.name in deleted
            assert not stale.exists
            assert live.exists and live.name not in deleted
    finally:
        stale.delete()


@pytest.mark.timeout(60)
def test_veth_pair_and_nftables_loss_install_and_remove_cleanly():
    require_netns()
    from misdtcp.device.netns import Netns
    from misdtcp.device.veth import VethPair
    from misdtcp.testing.lab import NftLoss, icmp_ping

    with Netns() as a, Netns() as b, VethPair(a, b) as veth:
        baseline = a.call(icmp_ping, veth.addr_b, count=20, interval=0.005, wait=2.0)
        assert baseline.received == 20
        with NftLoss(b, veth.name_b, 50) as loss:
            assert loss.installed_in_kernel()
            lossy = a.call(icmp_ping, veth.addr_b, count=200, interval=0.005, wait=2.0)
            dropped = loss.dropped()
        # requests dropped on b's ingress are exactly the pings lost
        assert lossy.lost == dropped
        assert 50 <= dropped <= 150, f"{dropped} of 200 dropped at a 50% rule"
        assert not loss.installed_in_kernel()
        after = a.call(icmp_ping, veth.addr_b, count=50, interval=0.002, wait=2.0)
        assert after.received == 50
