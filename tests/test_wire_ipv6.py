"""IPv6 input validation (RFC 8200): the fixed header, the extension-header
chain -- skipped when well-formed, dropped and counted by reason when not --,
type-0 routing headers (RFC 5095), fragments, addresses, the pseudo-header
checksum.  Each case sends one frame to a closed port: a frame that passes
validation is answered with a RST and counted as `no_connection`, one that
does not is answered with nothing and counted under exactly one reason."""
import struct

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting, HBHOptUnknown, PadN, RouterAlert)
from scapy.packet import Raw, raw

from harness import Harness, KERNEL6, STACK6, ip_packet, peer6, tcp_of
from misdtcp._tcpcore import TcpCore, CoreConfigError

CLOSED = 81


def tcp_probe():
    return TCP(sport=40000, dport=CLOSED, flags="A", seq=5, ack=4242) / Raw(b"payload")


def frame(*ext, src=KERNEL6, dst=STACK6, l4=None):
    pkt = IPv6(src=src, dst=dst)
    for e in ext:
        pkt = pkt / e
    return bytearray(raw(pkt / (tcp_probe() if l4 is None else l4)))


def outcome(data, **config):
    h = Harness.create6(**config)
    out = h.deliver(bytes(data))
    return len(tcp_of(out)), h.core.drops()


ANSWERED = (1, {"no_connection": 1})


def test_a_plain_ipv6_segment_is_answered_with_a_rst_over_ipv6():
    h = Harness.create6()
    out = h.deliver(bytes(frame()))
    assert len(out) == 1 and IPv6 in out[0]
    rst = out[0]
    assert (rst[IPv6].src, rst[IPv6].dst) == (STACK6, KERNEL6)
    assert rst[IPv6].hlim == 64 and rst[IPv6].nh == 6
    assert rst[TCP].flags == "R" and rst[TCP].seq == 4242
    # scapy recomputes the checksum over the IPv6 pseudo-header: it must match ours
    again = IPv6(raw(rst))
    del again[TCP].chksum
    assert IPv6(raw(again))[TCP].chksum == rst[TCP].chksum
    assert h.core.drops() == {"no_connection": 1}


@pytest.mark.parametrize("ext", [
    [IPv6ExtHdrHopByHop(options=[RouterAlert()])],                       # MLD's hop-by-hop header
    [IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])],
    [IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1e, optdata=b"xy")])],   # action 00: skip
    [IPv6ExtHdrRouting(type=2, segleft=0, addresses=["2001:db8::1"])],   # nothing left to route: ignored
    [IPv6ExtHdrRouting(type=0, segleft=0, addresses=["2001:db8::1"])],   # RFC 5095 §3: as an unknown type
    [IPv6ExtHdrFragment(offset=0, m=0, id=7)],                           # atomic fragment (RFC 6946)
    [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(segleft=0),
     IPv6ExtHdrFragment(offset=0, m=0), IPv6ExtHdrDestOpt()],
], ids=["hbh-router-alert", "hbh-padn", "dstopt-skip", "routing-type2-done", "routing-type0-done",
        "atomic-fragment", "five-headers"])
def test_well_formed_extension_headers_are_walked_to_tcp(ext):
    assert outcome(frame(*ext)) == ANSWERED


@pytest.mark.parametrize("ext, reason", [
    ([IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8::1"])], "ip6_routing"),   # RFC 5095
    ([IPv6ExtHdrRouting(type=4, segleft=2, addresses=["2001:db8::1", "2001:db8::2"])], "ip6_routing"),
    ([IPv6ExtHdrFragment(offset=0, m=1, id=7)], "ip_fragment"),
    ([IPv6ExtHdrFragment(offset=185, m=0, id=7)], "ip_fragment"),
    ([IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop()], "ip6_ext_header"),     # hop-by-hop not first
    ([IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x5e, optdata=b"xy")])], "ip6_option"),   # 01: discard
    ([IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x9e, optdata=b"xy")])], "ip6_option"),   # 10
    ([IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0xc2, optdata=b"\0\1\0\0")])], "ip6_option"),  # jumbo
    ([IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\1\0\0")])], "ip6_ext_header"),   # PadN not all zeros
    ([IPv6ExtHdrDestOpt() for _ in range(9)], "ip6_ext_chain"),          # more than a host walks
    ([IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1e, optdata=b"") for _ in range(9)])],
     "ip6_ext_header"),                                                  # more than 8 options
], ids=["routing-type0-left", "routing-srh-left", "fragment-first", "fragment-later", "hbh-not-first",
        "option-discard", "option-discard-icmp", "jumbo-option", "padn-not-zero", "nine-headers",
        "nine-options"])
def test_bad_extension_headers_are_dropped_by_reason(ext, reason):
    assert outcome(frame(*ext)) == (0, {reason: 1})


def test_an_extension_header_overrunning_the_packet_is_dropped():
    f = frame(IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]))
    f[40 + 1] = 200                                  # Hdr Ext Len: 1608 bytes, beyond the packet
    assert outcome(f) == (0, {"ip6_ext_header": 1})


def test_an_option_overrunning_its_header_is_dropped():
    f = frame(IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]))
    f[40 + 3] = 9                                    # PadN's length runs past the 8-byte header
    assert outcome(f) == (0, {"ip6_ext_header": 1})


def test_a_chain_ending_in_the_packet_is_truncation():
    f = frame(IPv6ExtHdrDestOpt())[:44]              # the header's 8 bytes are not all there
    f[4:6] = struct.pack("!H", 4)
    assert outcome(f) == (0, {"ip6_ext_header": 1})


@pytest.mark.parametrize("nh, reason", [(59, "protocol"), (50, "protocol"), (17, "protocol")],
                         ids=["no-next-header", "esp", "udp"])
def test_other_next_headers_are_not_ours(nh, reason):
    f = frame()
    f[6] = nh
    assert outcome(f) == (0, {reason: 1})


def test_payload_length_beyond_the_frame_is_truncation():
    f = frame()
    f[4:6] = struct.pack("!H", len(f) - 40 + 1)
    assert outcome(f) == (0, {"ip_truncated": 1})


def test_payload_length_zero_announces_a_jumbogram_and_is_truncation():
    f = frame()
    f[4:6] = b"\0\0"
    assert outcome(f) == (0, {"ip_truncated": 1})


def test_frames_shorter_than_the_fixed_header():
    assert outcome(frame()[:39]) == (0, {"ip_truncated": 1})


def test_trailing_bytes_beyond_the_payload_length_are_ignored():
    assert outcome(frame() + b"\0" * 6) == ANSWERED


def test_checksum_covers_the_ipv6_pseudo_header():
    f = frame()
    f[24 + 15] ^= 0x01                # another destination: not for us
    assert outcome(f) == (0, {"not_for_us": 1})
    f = frame()
    f[8 + 15] ^= 0x10                 # another source, same TCP bytes: the checksum no longer matches
    assert outcome(f) == (0, {"tcp_checksum": 1})
    f = frame()
    f[-1] ^= 0xff
    assert outcome(f) == (0, {"tcp_checksum": 1})


@pytest.mark.parametrize("src", ["::", "::1", "ff02::1", "::ffff:10.77.0.1", STACK6])
def test_sources_no_host_can_have_are_dropped(src):
    assert outcome(frame(src=src)) == (0, {"bad_source": 1})


def test_frames_for_another_address_are_not_for_us():
    assert outcome(frame(dst="fd00:77::3")) == (0, {"not_for_us": 1})
    assert outcome(frame(dst="ff02::1")) == (0, {"not_for_us": 1})


def test_a_stack_without_ipv6_takes_no_ipv6_frame():
    h = Harness.create()                              # IPv4 only
    assert h.deliver(bytes(frame())) == []
    assert h.core.drops() == {"not_for_us": 1}


def test_tcp_header_errors_are_found_after_extension_headers():
    f = frame(IPv6ExtHdrDestOpt(), l4=TCP(sport=40000, dport=CLOSED, flags="A", dataofs=15))
    assert outcome(f) == (0, {"tcp_header": 1})


@pytest.mark.parametrize("address", ["::1", "ff02::2", "fe80::2", "::ffff:1.2.3.4", "10.77.0.2", "x"])
def test_the_stacks_ipv6_address_must_be_usable(address):
    with pytest.raises(CoreConfigError):
        TcpCore("10.77.0.2", local_address6=address)


def test_ipv6_needs_a_1280_byte_mtu():
    with pytest.raises(CoreConfigError, match="1280"):
        TcpCore("10.77.0.2", local_address6=STACK6, mss=1200)
