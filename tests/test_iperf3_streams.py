"""The iperf3 server takes a test's data streams in the order the client
opened them (the accept order), not in the order the threads that read
their cookies happen to finish: with --bidir the first P streams carry
client -> server and the rest server -> client, so a swap makes the server
send on the client's sending stream and count nothing received."""
import threading

import pytest

from misdtcp.apps import iperf3

COOKIE = b"a" * 36 + b"\0"


class _Listener:
    def __init__(self, conns):
        self.conns = list(conns)

    def accept(self, timeout=None):
        if self.conns:
            return self.conns.pop(0), ("10.77.0.1", 40000)
        raise iperf3.StackError("stopped")


class _Stack:
    address = "10.77.0.2"

    def __init__(self, conns):
        self.conns = conns

    def listen(self, port):
        return _Listener(self.conns)


class _Conn:
    """A data stream whose cookie arrives when `release` is set."""

    def __init__(self, name, release):
        self.name = name
        self.release_cookie = release
        self.remote = None

    def recv_view(self, n, timeout=None):
        assert self.release_cookie.wait(5)
        return memoryview(COOKIE[:n])

    def release(self, view):
        pass


@pytest.mark.timeout(30)
def test_streams_are_taken_in_accept_order_whatever_order_their_cookies_are_read():
    first_cookie, second_cookie = threading.Event(), threading.Event()
    first, second = _Conn("first", first_cookie), _Conn("second", second_cookie)
    server = iperf3.Iperf3Server(_Stack([first, second]), log=lambda text: None)
    with server.cond:
        server.pending_streams[COOKIE] = []
    accept = threading.Thread(target=server.serve, daemon=True)
    accept.start()
    accept.join(5)
    # the second stream's cookie is read first
    second_cookie.set()
    with server.cond:
        assert server.cond.wait_for(lambda: len(server.pending_streams[COOKIE]) == 1, timeout=5)
    first_cookie.set()
    with server.cond:
        assert server.cond.wait_for(lambda: len(server.pending_streams[COOKIE]) == 2, timeout=5)
    assert [c.name for c in server.streams_of(COOKIE)] == ["first", "second"]
