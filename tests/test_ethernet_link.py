"""The link step of the packet-ring device (frameio/ethernet_link.pxd), on
slots built in memory: what is ours goes on to the IP layer with the
device's metadata, an ARP request for our address is answered field by
field (RFC 826), everything else is dropped with its reason."""
import os
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from misdtcp.frameio.ethernet_link import EthernetLinkStep
from misdtcp.wire import vnet_header as vnet

OUR_MAC = bytes.fromhex("02aabbccdd01")
PEER_MAC = bytes.fromhex("02aabbccdd02")
OTHER_MAC = bytes.fromhex("02aabbccdd99")
OUR_IP, PEER_IP = "10.77.0.2", "10.77.0.1"
TP_STATUS_USER, TP_STATUS_VLAN_VALID = 1, 1 << 4


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@pytest.fixture
def link():
    r, w = os.pipe()
    os.set_blocking(r, False)
    step = EthernetLinkStep(OUR_MAC, PEER_MAC, OUR_IP, w)
    yield step, r
    os.close(r)
    os.close(w)


def arp_frame(op="who-has", pdst=OUR_IP, dst=b"\xff" * 6, psrc=PEER_IP, hwsrc=PEER_MAC):
    return bytes(Ether(dst=mac_text(dst), src=mac_text(hwsrc)) /
                 ARP(op=op, hwsrc=mac_text(hwsrc), psrc=psrc, hwdst="00:00:00:00:00:00", pdst=pdst))


def tcp_frame(dst=OUR_MAC, payload=b"x" * 100):
    return bytes(Ether(dst=mac_text(dst), src=mac_text(PEER_MAC)) /
                 IP(src=PEER_IP, dst=OUR_IP) / TCP(sport=40000, dport=9, flags="A") / payload)


def test_an_arp_request_for_our_address_is_answered_field_by_field(link):
    step, replies = link
    assert step.step(arp_frame()) == ("answered",)
    sent = os.read(replies, 4096)
    # the receive socket takes a 10-byte virtio-net header first: no offload
    assert sent[:10] == bytes(10)
    reply = Ether(sent[10:])
    assert len(sent) == 10 + 42
    assert reply.dst == mac_text(PEER_MAC) and reply.src == mac_text(OUR_MAC) and reply.type == 0x0806
    a = reply[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, 2)
    assert (a.hwsrc, a.psrc) == (mac_text(OUR_MAC), OUR_IP)
    assert (a.hwdst, a.pdst) == (mac_text(PEER_MAC), PEER_IP)
    assert step.arp_replies == 1
    # a unicast request (a kernel re-checking its neighbour entry) too
    assert step.step(arp_frame(dst=OUR_MAC)) == ("answered",)
    assert step.arp_replies == 2


@pytest.mark.parametrize("frame", [
    arp_frame(pdst="10.77.0.9"),                               # someone else's address
    arp_frame(op="is-at", dst=OUR_MAC),                        # a reply: we never asked
    arp_frame()[:14 + 20],                                     # cut short
    arp_frame()[:14] + struct.pack("!HH", 6, 0x0800) + arp_frame()[18:],   # hardware type 6
], ids=["other-target", "reply", "short", "not-ethernet"])
def test_other_arp_is_dropped_and_never_answered(link, frame):
    step, replies = link
    assert step.step(frame) == ("drop", "arp_not_for_us")
    assert step.arp_replies == 0
    with pytest.raises(BlockingIOError):
        os.read(replies, 4096)


def test_frames_that_are_not_ours_are_dropped_by_reason(link):
    step, _ = link
    frame = tcp_frame()
    assert step.step(tcp_frame(dst=OTHER_MAC)) == ("drop", "link_not_for_us")
    assert step.step(tcp_frame(dst=bytes.fromhex("01005e000001"))) == ("drop", "link_not_for_us")   # multicast
    ipv6 = frame[:12] + b"\x86\xdd" + frame[14:]
    assert step.step(ipv6) == ("drop", "link_type")
    assert step.step(frame, status=TP_STATUS_USER | TP_STATUS_VLAN_VALID) == ("drop", "link_type")
    assert step.step(frame, snaplen=len(frame), wire_length=len(frame) + 1) == ("drop", "link_truncated")
    assert step.step(frame[:13]) == ("drop", "link_truncated")
    assert step.step(frame, net_offset=18) == ("drop", "link_truncated")    # a header we do not know


def test_ipv4_goes_on_with_the_devices_checksum_state_and_gso_size(link):
    step, _ = link
    frame = tcp_frame()
    kind, ip, flags, gso = step.step(frame, vnet=bytes(10))
    assert (kind, ip, flags, gso) == ("ipv4", frame[14:], 0, 0)
    # a GSO super-frame as the kernel's TSO hands it over (offsets count from
    # the Ethernet header here)
    header = vnet.VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=54, gso_size=1448,
                             csum_start=34, csum_offset=16).pack(10)
    kind, ip, flags, gso = step.step(frame, vnet=header)
    assert (kind, ip, gso) == ("ipv4", frame[14:], 1448)
    assert flags == 1                                     # FRAME_CSUM_PARTIAL: never verified
    # broadcast is ours at the link layer (the IP layer decides)
    assert step.step(tcp_frame(dst=b"\xff" * 6))[0] == "ipv4"


def test_the_frame_stages_see_what_a_tun_delivers(link):
    step, _ = link
    frame = tcp_frame()
    header = vnet.VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=54, gso_size=1448,
                             csum_start=34, csum_offset=16).pack(10)
    tun = step.as_tun_frame(frame, header)
    h, packet = vnet.split(tun, vnet.VNET_HDR_LEN)
    assert bytes(packet) == frame[14:]
    # offsets now count from the IP packet, as on a TUN
    assert (h.flags, h.gso_type, h.gso_size, h.csum_start, h.csum_offset, h.hdr_len) == \
        (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 1448, 20, 16, 40)
