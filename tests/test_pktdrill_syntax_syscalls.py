from __future__ import annotations

import pytest

from pktdrill_syntax_helpers import error, event
from misdtcp.conformance import parse_expression
from misdtcp.conformance.nodes import (
    BinaryOr, Call, Ellipsis, Field, Int, List, String, Struct, Symbol, Syscall,
)

E = Ellipsis()


def call(statement: str) -> Syscall:
    result = event(statement)
    assert isinstance(result, Syscall)
    return result


def test_socket() -> None:
    c = call("+0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3")
    assert c.name == "socket"
    assert c.args == (E, Symbol("SOCK_STREAM"), Symbol("IPPROTO_TCP"))
    assert c.result == Int(3) and c.errno is None and c.note is None


def test_bind_listen_accept_close() -> None:
    assert call("+0 bind(3, ..., ...) = 0").args == (Int(3), E, E)
    assert call("+0 listen(3, 1) = 0").args == (Int(3), Int(1))
    assert call("+0 accept(3, ..., ...) = 4").result == Int(4)
    assert call("+0 close(4) = 0").args == (Int(4),)


def test_empty_argument_list() -> None:
    assert call("+0 getpid() = 1").args == ()


def test_errno_and_strerror_note() -> None:
    c = call("+0 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)")
    assert c.result == Int(-1) and c.errno == "EINPROGRESS"
    assert c.note == "Operation now in progress"


def test_errno_note_without_space() -> None:
    c = call("+0 read(6, ..., 512) = -1 EHOSTUNREACH(No route to host)")
    assert (c.errno, c.note) == ("EHOSTUNREACH", "No route to host")


def test_errno_without_note_is_accepted() -> None:
    c = call("+0 read(4, ..., 10) = -1 EAGAIN")
    assert (c.errno, c.note) == ("EAGAIN", None)


def test_hex_result_with_note() -> None:
    c = call("+0 fcntl(3, F_GETFL) = 0x2 (flags O_RDWR)")
    assert c.result == Int(2, hex=True) and c.errno is None and c.note == "flags O_RDWR"


def test_multi_line_note_is_whitespace_normalized() -> None:
    c = call("+0 write(4, ..., 1) = -1 EPIPE (Broken\n      pipe)")
    assert c.note == "Broken pipe"


def test_read_write_recv_send() -> None:
    assert call("+0 read(4, ..., 1000) = 1000").args == (Int(4), E, Int(1000))
    assert call("+0 write(4, ..., 10) = 10").result == Int(10)
    assert call("+0 recv(4, ..., 100, MSG_PEEK) = 100").args[-1] == Symbol("MSG_PEEK")
    assert call("+0 send(4, ..., 10, 0) = 10").args == (Int(4), E, Int(10), Int(0))
    assert call("+0 sendto(4, ..., 0, MSG_FASTOPEN, ..., ...) = 0").args[3] == \
        Symbol("MSG_FASTOPEN")


def test_shutdown_and_fcntl_with_or() -> None:
    assert call("+0 shutdown(4, SHUT_WR) = 0").args == (Int(4), Symbol("SHUT_WR"))
    c = call("+0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0")
    assert c.args[2] == BinaryOr((Symbol("O_RDWR"), Symbol("O_NONBLOCK")))


def test_setsockopt_getsockopt_arrays() -> None:
    c = call("+0 setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0")
    assert c.args[3] == List((Int(1),))
    c = call("+0 getsockopt(3, SOL_SOCKET, SO_ERROR, [0], [4]) = 0")
    assert c.args[3:] == (List((Int(0),)), List((Int(4),)))
    assert call("+0 setsockopt(4, SOL_TCP, TCP_NOTSENT_LOWAT, [0xffffffff], 4) = 0").args[3] == \
        List((Int(0xFFFFFFFF, hex=True),))


def test_linger_struct() -> None:
    c = call("+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0")
    linger = c.args[3]
    assert linger == Struct((Field("onoff", Int(1)), Field("linger", Int(0))))
    assert isinstance(linger, Struct) and linger.fields == {"onoff": Int(1), "linger": Int(0)}
    assert linger.get("linger") == Int(0) and linger.get("missing") is None


def test_poll_with_pollfd_array() -> None:
    c = call("+0 poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 0) = 1")
    assert c.args[0] == List((Struct((Field("fd", Int(4)), Field("events", Symbol("POLLIN")),
                                      Field("revents", Symbol("POLLIN")))),))


def test_poll_field_value_with_or_spanning_lines() -> None:
    c = call("+0...0.010 poll([{fd=3,\n  events=POLLIN|POLLOUT|POLLERR,\n  revents=POLLOUT}], 1, 100) = 1")
    pollfd = c.args[0].items[0]  # type: ignore[union-attr]
    assert pollfd.get("events") == BinaryOr((Symbol("POLLIN"), Symbol("POLLOUT"), Symbol("POLLERR")))
    assert c.end_usecs == 10_000


def test_writev_readv_iovecs() -> None:
    c = call("+0 writev(4, [{..., 5}, {..., 15}], 2) = 20")
    assert c.args[1] == List((Struct((E, Int(5))), Struct((E, Int(15)))))


def test_tcp_info_struct_with_ellipsis() -> None:
    c = call("+0 getsockopt(4, SOL_TCP, TCP_INFO, {tcpi_state=TCP_ESTABLISHED, "
             "tcpi_snd_cwnd=10, ...}, [104]) = 0")
    info = c.args[3]
    assert isinstance(info, Struct)
    assert info.fields == {"tcpi_state": Symbol("TCP_ESTABLISHED"), "tcpi_snd_cwnd": Int(10)}
    assert info.items[-1] == E


def test_msghdr_with_strace_sized_fields() -> None:
    c = call("+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{...,0}], msg_flags=MSG_ERRQUEUE,"
             " msg_control=[]}, MSG_ERRQUEUE) = -1 EAGAIN (Resource temporarily unavailable)")
    msg = c.args[1]
    assert isinstance(msg, Struct)
    assert msg.items[0] == Field("msg_name", E, size=E)
    assert msg.items[1] == Field("msg_iov", List((Struct((E, Int(0))),)), size=Int(1))
    assert msg.get("msg_control") == List(())


def test_sockaddr_with_calls_and_strings() -> None:
    c = call('+0 connect(3, {sa_family=AF_INET, sin_port=htons(8080), '
             'sin_addr=inet_addr("192.0.2.1")}, 16) = 0')
    addr = c.args[1]
    assert isinstance(addr, Struct)
    assert addr.get("sin_port") == Call("htons", (Int(8080),))
    assert addr.get("sin_addr") == Call("inet_addr", (String("192.0.2.1"),))


def test_strings_truncated_and_concatenated() -> None:
    assert parse_expression('"hello"...') == String("hello", truncated=True)
    assert parse_expression('"ab" "cd"') == String("abcd")
    assert call('+0 setsockopt(3, SOL_TCP, TCP_CONGESTION, "cubic", 5) = 0').args[3] == \
        String("cubic")


def test_epoll_event_struct() -> None:
    c = call("+0 epoll_ctl(5, EPOLL_CTL_ADD, 4, {events=EPOLLOUT|EPOLLIN|EPOLLET, fd=4}) = 0")
    ev = c.args[3]
    assert isinstance(ev, Struct) and ev.get("fd") == Int(4)
    assert ev.get("events") == BinaryOr((Symbol("EPOLLOUT"), Symbol("EPOLLIN"), Symbol("EPOLLET")))


def test_nested_structs_and_lists() -> None:
    expr = parse_expression("[{cmsg_level=SOL_IP, cmsg_data={ee_errno=ENOMSG, ee_info=0}}]")
    assert expr == List((Struct((Field("cmsg_level", Symbol("SOL_IP")),
                                 Field("cmsg_data", Struct((Field("ee_errno", Symbol("ENOMSG")),
                                                            Field("ee_info", Int(0))))))),))


def test_keywords_of_packet_syntax_are_ordinary_symbols_in_calls() -> None:
    c = call("+0 setsockopt(3, SOL_IP, ttl, [id], win) = 0")
    assert c.args[2:] == (Symbol("ttl"), List((Symbol("id"),)), Symbol("win"))


def test_expression_formatting_round_trips() -> None:
    text = '{msg_name(...)=..., msg_iov(2)=[{..., 10}, {..., 20}], flags=A|B|0x4, s="x"...}'
    expr = parse_expression(text)
    assert expr.to_script() == text
    assert parse_expression(expr.to_script()) == expr


@pytest.mark.parametrize("statement, fragment", [
    ("+0 close 4 = 0", "'(' after the system call name 'close'"),
    ("+0 close(4)", "'=' and the expected result"),
    ("+0 close(4) 0", "'=' and the expected result"),
    ("+0 close(4,) = 0", "expected an expression"),
    ("+0 close(4 5) = 0", "',' or ')' in the argument list"),
    ("+0 poll([{fd=4, events=POLLIN], 1, 0) = 1", "',' or '}' in the braced list"),
    ("+0 read(4, ..., 1.5) = 1", "expected an expression"),
    ("+0 read(4, ..., 10) = -1 EAGAIN (Resource", "unterminated '(' note"),
    ("+0 f(a(1, 2)=3) = 0", "expected one size inside a(...)"),
    ("+0 read(4, ..., 10) = 10 EAGAIN EINTR", "expected an event time"),
    ("+0...0.1 3 = 0", "expected a system call name"),
])
def test_syscall_errors(statement: str, fragment: str) -> None:
    err = error(statement + "\n")
    assert err.line == 1 and fragment in err.message
