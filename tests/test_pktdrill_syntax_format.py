"""to_script()/format_event() render canonical syntax that parses back equal."""

from __future__ import annotations

import dataclasses

import pytest

from pktdrill_syntax_helpers import event
from misdtcp.conformance import format_event, parse_script


@pytest.mark.parametrize("statement, canonical", [
    ("+.1 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>",
     "+0.1 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>"),
    ("+0 > S. 0:0(0) ack 1 <...>", "+0 > S. 0:0(0) ack 1 <...>"),
    ("0.100 > [ect0] P. 1:11(10) ack 1 <nop,nop,TS val 100 ecr 700>",
     "0.1 > [ect0] P. 1:11(10) ack 1 <nop,nop,TS val 100 ecr 700>"),
    ("+0 > - 1:1(0) urg 3", "+0 > - 1:1(0) urg 3"),
    ("* > .5 1:1(0) ack 1 <ECN e1b 1 ceb 0 e0b 1,nop>",
     "* > .5 1:1(0) ack 1 <ECN e1b 1 ceb 0 e0b 1,nop>"),
    ("+.2~+.5 > F. 5:5(0) ack 2", "+0.2~+0.5 > F. 5:5(0) ack 2"),
    ("+0 < (tos 0x10, flowlabel 0x1) . 1:1(0) win 1", "+0 < [tos 0x10, flowlabel 0x1] . 1:1(0) win 1"),
    ("+0 < 1>2 S 0:0(0) win 1 <sack 1:2 3:4,FO ab12,md5 00ff,nop,nop>",
     "+0 < 1>2 S 0:0(0) win 1 <sack 1:2 3:4,FO ab12,md5 00ff,nop,nop>"),
    ("+0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]",
     "+0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]"),
    ("+0 < [1:1461(1460)] icmp unreachable frag_needed mtu 1200",
     "+0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]"),
    ("+0 > icmp echo_request id 3 [raw (8)]", "+0 > icmp echo_request id 3 [raw (8)]"),
    ("+0 < udp 1>2 (10)", "+0 < udp 1>2 (10)"),
    ("+0...0.200 accept(3, ..., ...) = 4", "+0...0.2 accept(3, ..., ...) = 4"),
    ("0.1...1 read(4, ..., 10) = 10", "0.1...1 read(4, ..., 10) = 10"),
    ("+0 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)",
     "+0 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)"),
    ("+0 fcntl(3, F_GETFL) = 0x2 (flags O_RDWR)", "+0 fcntl(3, F_GETFL) = 0x2 (flags O_RDWR)"),
    ("+0 poll([{fd=4,events=POLLIN|POLLOUT,revents=POLLIN}],1,0)=1",
     "+0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLIN}], 1, 0) = 1"),
    ("+0 `sysctl -q x=1`", "+0 `sysctl -q x=1`"),
    ("+0 %{ print(1) }%", "+0 %{ print(1) }%"),
])
def test_canonical_formatting(statement: str, canonical: str) -> None:
    parsed = event(statement)
    assert format_event(parsed) == canonical
    again = event(canonical)
    assert dataclasses.replace(again, line=0) == dataclasses.replace(parsed, line=0)


def test_script_to_script_keeps_options_and_untimed_commands() -> None:
    text = '--ip_version=ipv4\n--flag\n--s="a b"\n`init`\n0 close(3) = 0\n`cleanup`\n'
    script = parse_script(text)
    assert script.to_script() == text
    assert parse_script(script.to_script()) == script
