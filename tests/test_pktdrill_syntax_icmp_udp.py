from __future__ import annotations

import pytest

from pktdrill_syntax_helpers import error, event
from misdtcp.conformance.nodes import Direction, EchoedPacket, IcmpPacket, IpInfo, SeqSpec, UdpPacket


def icmp(statement: str) -> IcmpPacket:
    packet = event(statement)
    assert isinstance(packet, IcmpPacket)
    return packet


def test_icmp_port_unreachable_with_echoed_segment() -> None:
    p = icmp("+0 < icmp unreachable port_unreachable [1:1(0)]")
    assert p.direction is Direction.INBOUND
    assert (p.icmp_type, p.icmp_code, p.mtu, p.echo_id) == (
        "unreachable", "port_unreachable", None, None)
    assert p.echoed == EchoedPacket("tcp", SeqSpec(1, 1, 0))


def test_icmp_frag_needed_with_mtu() -> None:
    p = icmp("+.01 < icmp unreachable frag_needed mtu 840 [0:1000(1000)]")
    assert p.icmp_code == "frag_needed" and p.mtu == 840
    assert p.echoed is not None and p.echoed.seq == SeqSpec(0, 1000, 1000)


def test_icmp_leading_bracket_form_is_accepted_as_extension() -> None:
    p = icmp("+0 < [1:1461(1460)] icmp unreachable frag_needed mtu 1200")
    assert p.mtu == 1200 and p.echoed == EchoedPacket("tcp", SeqSpec(1, 1461, 1460))
    assert p.ip is None


def test_icmp_without_code_or_echoed_packet() -> None:
    p = icmp("+0 < icmp unreachable")
    assert p.icmp_code is None and p.echoed is None


def test_icmp_symbolic_code_and_numeric_type_names() -> None:
    assert icmp("+0 < icmp unreachable CODE [0:10(10)]").icmp_code == "CODE"
    p = icmp("+0 < icmp type_3 code_4 mtu 1000")
    assert (p.icmp_type, p.icmp_code, p.mtu) == ("type_3", "code_4", 1000)


def test_icmp_echo_with_id_and_quoted_udp_and_raw() -> None:
    p = icmp("+0 > icmp echo_request id 7 [raw (64)]")
    assert p.direction is Direction.OUTBOUND and p.echo_id == 7
    assert p.echoed == EchoedPacket("raw", None, 64)
    assert icmp("+0 < icmp unreachable port_unreachable [udp (100)]").echoed == \
        EchoedPacket("udp", None, 100)


def test_icmp_with_tos() -> None:
    assert icmp("+0 < (tos 0x0) icmp time_exceeded").ip == IpInfo(tos=0)


def test_udp_packets() -> None:
    p = event("+0 < udp (1000)")
    assert isinstance(p, UdpPacket) and p.length == 1000 and p.ports is None
    p = event("+0 > udp 53>4000 (28)")
    assert isinstance(p, UdpPacket) and p.ports == (53, 4000) and p.direction is Direction.OUTBOUND


@pytest.mark.parametrize("statement, fragment", [
    ("+0 < icmp [1:1(0)]", "expected an ICMP type"),
    ("+0 < icmp unreachable mtu x", "an integer for ICMP MTU"),
    ("+0 < icmp unreachable [1:2(0)]", "inconsistent TCP sequence numbers"),
    ("+0 < icmp unreachable [tcp (3)]", "expected a quoted packet"),
    ("+0 < icmp unreachable [1:1(0)", "']' to close the quoted packet"),
    ("+0 < [1:1(0)] icmp unreachable [1:1(0)]", "given twice"),
    ("+0 < [1:1(0)] . 1:1(0) win 1", "'icmp' after a bracketed sequence range"),
    ("+0 < udp 1000", "'(' before the UDP payload length"),
    ("+0 < udp (70000)", "UDP payload size 70000 is out of range"),
    ("+0 < [ect0] udp (10)", "ECN can only be used with TCP packets"),
])
def test_icmp_udp_errors(statement: str, fragment: str) -> None:
    err = error(statement + "\n")
    assert err.line == 1 and fragment in err.message
