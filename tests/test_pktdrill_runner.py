"""The packetdrill runner's semantics: virtual time and tolerance, blocking
calls, '*' and ranges, sequence and timestamp mapping, TSO aggregation,
--relaxed, IPv6 (--ip_version=ipv6), what it refuses (UDP, unknown calls and
options), and that
every disagreement is a failed result with a line, never an exception."""
from __future__ import annotations

import textwrap

import pytest

from misdtcp.conformance.packets import Flow, TimestampMap, build_tcp, parse_live
from misdtcp.conformance.parser import parse_script
from misdtcp.conformance.runner import run_script

HANDSHAKE = """\
0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0 bind(3, ..., ...) = 0
+0 listen(3, 1) = 0
+0 < S 0:0(0) win 65535 <mss 1000,sackOK,nop,nop,nop,wscale 7>
+0 > S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK,nop,wscale 5>
+.1 < . 1:1(0) ack 1 win 512
+0 accept(3, ..., ...) = 4
"""


def run(tmp_path, text, relaxed=False, name="t.pkt"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return run_script(str(path), relaxed=relaxed)


def test_a_conversation_passes(tmp_path):
    r = run(tmp_path, HANDSHAKE + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1\n")
    assert r.passed, r.report()
    assert r.report().startswith("PASS ")


def test_a_reply_outside_the_tolerance_fails_and_inside_passes(tmp_path):
    body = HANDSHAKE + "+0 < P. 1:101(100) ack 1 win 512\n{} > . 1:1(0) ack 101\n"
    assert run(tmp_path, body.format("+.04")).passed                  # the 40 ms delayed ACK
    assert run(tmp_path, "--tolerance_usecs=5000\n" + body.format("+.044")).passed
    late = run(tmp_path, "--tolerance_usecs=3000\n" + body.format("+.044"))
    assert not late.passed and late.line == 10
    assert "at 0.144000" in late.message and "got > . 1:1(0) ack 101" in late.message
    early = run(tmp_path, body.format("+.03"))
    assert not early.passed and "got no packet by 0.134000" in early.message


def test_star_and_ranges(tmp_path):
    body = HANDSHAKE + "+0 < P. 1:101(100) ack 1 win 512\n{} > . 1:1(0) ack 101\n"
    assert run(tmp_path, body.format("*")).passed
    assert run(tmp_path, body.format("+.03~+.05")).passed
    assert not run(tmp_path, body.format("+.01~+.02")).passed
    assert run(tmp_path, body.format("0.1~0.2")).passed                # absolute range


def test_blocking_call_returns_at_its_end_time(tmp_path):
    script = """\
    0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
    +0 bind(3, ..., ...) = 0
    +0 listen(3, 1) = 0
    +0...{} accept(3, ..., ...) = 4
    +.1 < S 0:0(0) win 65535 <mss 1000>
    +0 > S. 0:0(0) ack 1 <mss 1460>
    +.1 < . 1:1(0) ack 1 win 512
    """
    assert run(tmp_path, script.format("0.2")).passed
    early = run(tmp_path, script.format("0.1"))
    assert not early.passed and early.line == 4
    assert "expected accept() to return at 0.100000, it was still blocked" in early.message
    late = run(tmp_path, script.format("0.3"))
    assert not late.passed and late.line == 4 and "it returned at 0.200000" in late.message


def test_a_call_that_blocks_unannounced_fails(tmp_path):
    r = run(tmp_path, HANDSHAKE + "+0 read(4, ..., 100) = 100\n+1 close(4) = 0\n")
    assert not r.passed and r.line == 8 and "still blocked" in r.message


def test_errno_and_return_values_are_compared(tmp_path):
    r = run(tmp_path, HANDSHAKE + "+0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
                                  "+0 read(4, ..., 100) = -1 EINPROGRESS (whatever)\n")
    assert not r.passed and r.message == "expected errno EINPROGRESS, got EAGAIN"
    r = run(tmp_path, HANDSHAKE + "+0 fcntl(4, F_GETFL) = 0x802\n")
    assert not r.passed and r.message == "expected fcntl() = 0x802, got 2"


def test_inbound_ack_and_sack_are_in_the_stacks_sequence_space():
    script = parse_script("0 < . 1:1(0) ack 5 win 9 <nop,nop,TS val 7 ecr 300,nop,nop,sack 10:20>\n")
    pkt = script.events[0]
    flow = Flow(local_port=8080, remote_port=40000, live_isn=1000, script_isn=0)
    ts = TimestampMap()
    ts.learn(300, 777777)
    frame = build_tcp(pkt, flow, ts, bytes(4), bytes(4))
    live = parse_live(frame, 0, 0, None)
    assert live.seq == 1 and live.ack == 1005 and live.win == 9
    assert dict(live.options)[5] == (1010).to_bytes(4, "big") + (1020).to_bytes(4, "big")
    assert live.timestamp() == (7, 777777)            # TS ecr names the TS val the stack really sent


def test_tso_aggregation_lets_one_line_cover_several_segments(tmp_path):
    body = HANDSHAKE + "+0 write(4, ..., 3000) = 3000\n"
    assert run(tmp_path, body + "+0 > P. 1:3001(3000) ack 1\n").passed
    wrong = run(tmp_path, body + "+0 > P. 1:2001(2000) ack 1\n")
    assert not wrong.passed and "expected flags P., got ." in wrong.message


def test_relaxed_leaves_out_windows_mss_wscale_and_option_order(tmp_path):
    script = """\
    0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
    +0 bind(3, ..., ...) = 0
    +0 listen(3, 1) = 0
    +0 < S 0:0(0) win 65535 <mss 1000,sackOK,nop,nop,nop,wscale 7>
    +0 > S. 0:0(0) ack 1 win 29200 <sackOK,nop,nop,nop,wscale 9,mss 1380>
    +.1 < . 1:1(0) ack 1 win 512
    +0 accept(3, ..., ...) = 4
    +0 getsockopt(4, SOL_SOCKET, SO_RCVBUF, [87380], [4]) = 0
    """
    strict = run(tmp_path, script)
    assert not strict.passed and strict.line == 5
    relaxed = run(tmp_path, script, relaxed=True)
    assert relaxed.passed, relaxed.report()
    wrong_ack = run(tmp_path, script.replace("ack 1 win 29200", "ack 2 win 29200"), relaxed=True)
    assert not wrong_ack.passed and "expected ack 2, got ack 1" in wrong_ack.message
    wrong_opts = run(tmp_path, script.replace("<sackOK,nop,nop,", "<nop,nop,nop,nop,"), relaxed=True)
    assert not wrong_opts.passed and wrong_opts.line == 5


def test_packets_of_another_connection_are_not_compared(tmp_path):
    r = run(tmp_path, HANDSHAKE + """\
    +0 close(4) = 0
    +0 > F. 1:1(0) ack 1
    +0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 5
    +0 fcntl(5, F_SETFL, O_RDWR|O_NONBLOCK) = 0
    +0 connect(5, ..., ...) = -1 EINPROGRESS (Operation now in progress)
    +0 > S 0:0(0) <...>
    // the first connection's FIN is retransmitted meanwhile: not this socket's
    +1 > S 0:0(0) <...>
    """.replace("    ", ""))
    assert r.passed, r.report()


@pytest.mark.parametrize("text, line, message", [
    ("--ip_version=ipv6\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 connect(3, ..., ...) = -1 EINPROGRESS\n"
     "+0 > S 0:0(0) <...>\n+0 < icmp unreachable frag_needed mtu 1200 [0:0(0)]\n", 5,
     "unknown ICMPv6 code 'frag_needed' for type unreachable"),
    ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 connect(3, ..., ...) = -1 EINPROGRESS\n"
     "+0 > S 0:0(0) <...>\n+0 < icmp packet_too_big mtu 1200 [0:0(0)]\n", 4, "unknown ICMP type 'packet_too_big'"),
    ("0 < udp (10)\n", 1, "UDP is not supported by this core"),
    ("0 epoll_create(1) = 3\n", 1, "the system call epoll_create() is not supported by this runner"),
    ("0 socket(..., SOCK_DGRAM, IPPROTO_UDP) = 3\n", 1,
     "only SOCK_STREAM (TCP) sockets are supported by this runner"),
    ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 setsockopt(3, IPPROTO_TCP, TCP_CORK, [1], 4) = 0\n",
     2, "setsockopt TCP_CORK is not supported by this runner"),
    ("--misdtcp_nonsense=1\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n", 1,
     "--misdtcp_nonsense is not a misdtcp core option"),
    ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 > S 0:0(1) ack 1\n", 2,
     "inconsistent TCP sequence numbers"),
    ("0 < S 0:0(0) win 100 <nop,wscale *>\n", 1, "'wscale *' can only be used on outbound packets"),
])
def test_what_cannot_run_is_a_failure_with_a_line(tmp_path, text, line, message):
    r = run(tmp_path, text)
    assert not r.passed
    assert r.line == line
    assert message in r.message
    assert "\n" not in r.report()


def test_ipv6_scripts_put_ipv6_on_the_wire(tmp_path):
    """--ip_version=ipv6: the packets both ways are IPv6 ones (the stack
    offers MSS 1440, MTU - 60), between packetdrill's IPv6 addresses; the
    same script under ipv4 or ipv4-mapped-ipv6 sees IPv4 (MSS 1460)."""
    from misdtcp.conformance.runner import ScriptRun
    six = HANDSHAKE.replace("mss 1460", "mss 1440") + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1\n"
    r = run(tmp_path, "--ip_version=ipv6\n" + six)
    assert r.passed, r.report()
    r = run(tmp_path, "--ip_version=ipv6\n" + HANDSHAKE)
    assert not r.passed and r.line == 6 and "expected mss 1460, got mss 1440" in r.message
    for version in ("ipv4", "ipv4-mapped-ipv6"):
        assert run(tmp_path, f"--ip_version={version}\n" + HANDSHAKE).passed
    runner = ScriptRun(parse_script("--ip_version=ipv6\n" + six))
    runner.run()
    conn = runner.core.conn(runner.core.connections()[0])
    assert conn["remote"] == ("2001:db8::1", 40000) and runner.core.local_address6 == "fd3d:fa7b:d17d::1"


def test_shell_commands_and_code_blocks_are_counted_not_run(tmp_path):
    r = run(tmp_path, "`exit 1`\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
                      "+0 `false`\n+0 %{ assert False }%\n+0 close(3) = 0\n`cleanup`\n")
    assert r.passed and r.shell_commands == 3 and r.code_blocks == 1


def test_core_options_in_the_script(tmp_path):
    body = HANDSHAKE.replace("mss 1460", "mss 1200") + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1\n"
    assert run(tmp_path, "--misdtcp_mss=1200\n" + body).passed
    assert not run(tmp_path, body).passed
    r = run(tmp_path, "--misdtcp_cc=vegas\n" + body)
    assert not r.passed and "the core rejects this configuration" in r.message


def test_so_linger_in_linux_and_freebsd_spelling(tmp_path):
    """Linux's packetdrill writes {onoff, linger}, FreeBSD's struct linger's
    own names; both set the option, and {1, 0} makes close() reset."""
    tail = "+0 getsockopt(4, SOL_SOCKET, SO_LINGER, {}, [8]) = 0\n+0 close(4) = 0\n+0 > R. 1:1(0) ack 1\n"
    for value in ("{onoff=1, linger=0}", "{l_onoff=1, l_linger=0}"):
        r = run(tmp_path, HANDSHAKE + f"+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {value}, 8) = 0\n"
                + tail.format(value))
        assert r.passed, r.report()
    r = run(tmp_path, HANDSHAKE + tail.format("{l_onoff=1, l_linger=0}"))
    assert not r.passed and r.message == "expected SO_LINGER l_onoff=1, got l_onoff=0"
    r = run(tmp_path, HANDSHAKE + "+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {on=1}, 8) = 0\n")
    assert not r.passed and "SO_LINGER takes {onoff=N, linger=N}" in r.message
