from __future__ import annotations

import pytest

from pktdrill_syntax_helpers import error, event
from misdtcp.conformance.nodes import (
    Direction, Eol, FastOpen, IpInfo, Md5, Mss, Nop, RawOption, Sack, SackPermitted, SeqSpec,
    TcpPacket, Timestamp, WindowScale,
)


def tcp(statement: str) -> TcpPacket:
    packet = event(statement)
    assert isinstance(packet, TcpPacket)
    return packet


def test_inbound_syn_with_options() -> None:
    p = tcp("+0 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>")
    assert p.direction is Direction.INBOUND
    assert p.flags == frozenset({"S"}) and p.flags_text == "S"
    assert p.seq == SeqSpec(0, 0, 0)
    assert (p.ack, p.win, p.urg) == (None, 32792, None)
    assert p.options == (Mss(1000), SackPermitted(), Nop(), Nop(), Nop(), WindowScale(7))
    assert not p.options_any and p.ip is None and p.ports is None


def test_outbound_synack() -> None:
    p = tcp("+0 > S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK,nop,wscale 8>")
    assert p.direction is Direction.OUTBOUND
    assert p.flags == {"S", "."} and p.has_ack
    assert p.ack == 1 and p.win is None


@pytest.mark.parametrize("flags, expected", [
    ("F.", {"F", "."}), ("P.", {"P", "."}), ("R.", {"R", "."}), (".", {"."}), ("R", {"R"}),
    ("FP.", {"F", "P", "."}), ("SEW", {"S", "E", "W"}), ("SEWA", {"S", "E", "W", "A"}),
    ("U.", {"U", "."}), ("-", set()), (".5", {".", "5"}), ("P.5", {"P", ".", "5"}),
])
def test_flag_combinations(flags: str, expected: set[str]) -> None:
    p = tcp(f"+0 > {flags} 1:1(0) ack 1")
    assert p.flags == expected
    assert p.flags_text == ("" if flags == "-" else flags)


def test_ace_value_is_exposed() -> None:
    assert tcp("+0 > .5 1:1(0) ack 1").ace == 5
    assert tcp("+0 > . 1:1(0) ack 1").ace is None


def test_data_segment_and_payload_length() -> None:
    p = tcp("+0 > P. 1:11(10) ack 1 <nop,nop,TS val 100 ecr 700>")
    assert p.seq == SeqSpec(1, 11, 10) and p.payload_len == 10
    assert p.options == (Nop(), Nop(), Timestamp(100, 700))
    assert p.option(Timestamp) == Timestamp(100, 700)
    assert p.option(Sack) is None


def test_inbound_ack_without_options() -> None:
    p = tcp("+0 < . 1:1(0) ack 1 win 257")
    assert p.options == () and p.win == 257 and p.ack == 1


def test_urgent_pointer() -> None:
    p = tcp("+0 < PU. 1:101(100) ack 1 win 257 urg 50")
    assert p.urg == 50 and "U" in p.flags


def test_sack_blocks() -> None:
    p = tcp("+0 < . 1:1(0) ack 1 win 257 <nop,nop,sack 1001:2001 3001:4001 5001:6001>")
    assert p.options[2] == Sack(((1001, 2001), (3001, 4001), (5001, 6001)))


def test_eol_and_timestamps_in_syn() -> None:
    p = tcp("+0 < S 0:0(0) win 1000 <mss 1460,sackOK,TS val 4294967295 ecr 0,nop,wscale 7,eol,"
            "nop,nop,nop>")
    assert Eol() in p.options and p.option(Timestamp) == Timestamp(4294967295, 0)


def test_options_dont_care_for_outbound() -> None:
    p = tcp("+0 > S 0:0(0) <...>")
    assert p.options_any and p.options == ()


def test_wscale_wildcard() -> None:
    assert tcp("+0 > S. 0:0(0) ack 1 <mss 1460,nop,wscale *>").options[-1] == WindowScale(None)


def test_fast_open_options() -> None:
    p = tcp("+0 > S 0:0(0) <mss 1460,nop,nop,sackOK,nop,wscale 8,FO,nop,nop>")
    assert p.options[6] == FastOpen("") and p.options[6].kind == 34
    p = tcp("+0 < S. 0:0(0) ack 1 win 5840 <mss 1040,FO abcd1234,nop,nop>")
    fo = p.options[1]
    assert isinstance(fo, FastOpen) and fo.cookie_bytes == bytes.fromhex("abcd1234")
    assert fo.wire_length == 6
    p = tcp("+0 < S 0:10(10) win 32792 <mss 1460,sackOK,nop,nop,FOEXP TFO_COOKIE>")
    exp = p.options[-1]
    assert isinstance(exp, FastOpen) and exp.experimental and exp.kind == 254
    assert exp.cookie == "TFO_COOKIE" and exp.cookie_bytes is None


def test_numeric_looking_cookie_keeps_leading_zeros() -> None:
    p = tcp("+0 < S 0:0(0) win 1 <FO 0123>")
    assert p.options[0] == FastOpen("0123")


def test_md5_option() -> None:
    digest = "00112233445566778899aabbccddeeff"
    p = tcp(f"+0 < S 0:0(0) win 1 <md5 {digest},nop,nop>")
    assert p.options[0] == Md5(digest) and p.options[0].wire_length == 18


def test_unknown_options_are_kept_raw_in_order() -> None:
    p = tcp("+0 > [ect0] WA. 1:1(0) ack 1001 <ECN e1b 1 ceb 1000 e0b 1,nop,exp-tcp 0xf989 ab,nop>")
    assert p.options == (RawOption("ECN", "e1b 1 ceb 1000 e0b 1"), Nop(),
                         RawOption("exp", "-tcp 0xf989 ab"), Nop())


def test_ip_ecn_and_tos_fields() -> None:
    assert tcp("+0 < [ce] EAP. 1:1001(1000) ack 1 win 257").ip == IpInfo(ecn="ce")
    assert tcp("+0 > (ect01) . 1:1(0) ack 1").ip == IpInfo(ecn="ect01")
    assert tcp("+0 < (tos 0x10) . 1:1(0) ack 1 win 1").ip == IpInfo(tos=0x10)
    assert tcp("+0 > [noecn, flowlabel 0x12345] . 1:1(0)").ip == IpInfo(ecn="noecn",
                                                                         flowlabel=0x12345)
    assert tcp("+0 < [ttl 1] . 1:1(0) win 1").ip == IpInfo(ttl=1)


def test_port_prefix() -> None:
    assert tcp("+0 < 8080>9090 S 0:0(0) win 100").ports == (8080, 9090)


def test_statement_may_span_lines() -> None:
    p = tcp("+0 < S 0:0(0)\n   win 32792\n   <mss 1460,\n    nop,wscale 7>")
    assert p.win == 32792 and p.options == (Mss(1460), Nop(), WindowScale(7))
    assert p.text.endswith("wscale 7>") and p.line == 1


@pytest.mark.parametrize("statement, fragment", [
    ("+0 < S 0:0(0)", "window must be specified for inbound packets"),
    ("+0 < S 0:0(0) win 1 <...>", "<...> for TCP options can only be used with outbound"),
    ("+0 < [ect01] S 0:0(0) win 1", "[ect01] can only be used with outbound packets"),
    ("+0 > S 0:1(0)", "inconsistent TCP sequence numbers and payload size"),
    ("+0 > S 1:1001(100)", "inconsistent TCP sequence numbers"),
    ("+0 > S 0:0(0) ack 4294967296", "TCP ack sequence number 4294967296 is out of range"),
    ("+0 < S 0:0(0) win 65536", "TCP window 65536 is out of range"),
    ("+0 > S 0:70000(70000)", "TCP payload length 70000 is out of range"),
    ("+0 > X 0:0(0)", "invalid TCP flag 'X'"),
    ("+0 > SE5 0:0(0)", "conflicts with"),
    ("+0 > .56 0:0(0)", "conflicts with"),
    ("+0 > S 0:0(0) <mss 1460>", ""),  # valid: 4 bytes; replaced below
    ("+0 > S 0:0(0) <mss 1460,wscale 7>", "not padded correctly to a multiple of 4 bytes: 3"),
    ("+0 > S 0:0(0) <sackOK>", "not padded correctly"),
    ("+0 > . 1:1(0) <sack 1:2 3:4 5:6 7:8 9:10,nop,nop>", "TCP option list too long (44 bytes"),
    ("+0 > S 0:0(0) <wscale 256,nop>", "window scale shift count 256 is out of range"),
    ("+0 > S 0:0(0) <mss 1460", "',' or '>' in the TCP option list"),
    ("+0 > S 0:0(0) <TS val * ecr 0,nop,nop>", "an integer for TS val"),
    ("+0 > S 0:0(0) <TS 1 2,nop,nop>", "'val' after TS"),
    ("+0 > S 0:0(0) <FO abc,nop,nop>", "odd number of hex digits"),
    ("+0 > S 0:0(0) <md5>", "a hex string for TCP MD5 digest"),
    ("+0 > S 0:0(0) <,nop>", "expected a TCP option"),
    ("+0 > S 0:0(0) <ECN e1b 1", "unterminated TCP option list"),
    ("+0 > S ack 1", "a TCP sequence range start:end(length)"),
    ("+0 > S 0:0 ack 1", "'(' before the payload length"),
    ("+0 > 0:0(0)", "expected TCP flags"),
    ("+0 > [ect0 S 0:0(0)", "']' to close the IP field list"),
    ("+0 > [bogus] S 0:0(0)", "expected an IP field"),
    ("+0 > [ect0, ce] S 0:0(0)", "conflicts with an earlier IP field"),
    ("+0 > (tos 16) S 0:0(0)", "a hex integer (0x...) for tos"),
    ("+0 < S 0:0(0) win 1 ack 1", "expected an event time"),
])
def test_tcp_packet_errors(statement: str, fragment: str) -> None:
    if fragment == "":
        assert tcp(statement).options == (Mss(1460),)
        return
    err = error(statement + "\n")
    assert err.line == 1
    assert fragment in err.message
