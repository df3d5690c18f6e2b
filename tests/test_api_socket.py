"""The API behaves like the standard library's sockets where it means the
same: accept() -> (conn, address), names, timeouts and non-blocking mode,
shutdown(how), the stdlib's error classes with their errno, and fileno()
working with selectors."""
import errno
import selectors
import socket
import subprocess

import pytest

from stack_helpers import bare_stack
from netns_helpers import finish

pytestmark = pytest.mark.netns
KERNEL = "10.77.0.1"
STACK = "10.77.0.2"


@pytest.fixture
def stack():
    with bare_stack(workers=2) as running:
        yield running


def kernel_client(ns, port, body):
    """A kernel-side client connected to the stack's port; prints its own port first."""
    code = ("import socket, struct, sys, time\n"
            f"s = socket.create_connection(({STACK!r}, {port}), timeout=20)\n"
            "print(s.getsockname()[1], flush=True)\n" + body)
    return ns.python(["-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.timeout(60)
def test_accept_returns_the_peer_address_and_names_match(stack):
    ns, s = stack
    listener = s.listen(7200)
    assert listener.getsockname() == (STACK, 7200)
    client = kernel_client(ns, 7200, "sys.stdin.readline()\n")
    conn, address = listener.accept(timeout=10)
    client_port = int(client.stdout.readline())
    assert address == (KERNEL, client_port)
    assert conn.getpeername() == (KERNEL, client_port)
    assert conn.getsockname() == (STACK, 7200)
    client.stdin.write(b"\n")
    client.stdin.flush()
    finish(client)


@pytest.mark.timeout(60)
def test_timeouts_and_non_blocking_mode(stack):
    ns, s = stack
    listener = s.listen(7201)
    listener.setblocking(False)
    assert listener.getblocking() is False
    with pytest.raises(BlockingIOError) as caught:
        listener.accept()
    assert caught.value.errno == errno.EAGAIN
    listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        listener.accept()
    assert issubclass(TimeoutError, OSError) and socket.timeout is TimeoutError
    listener.settimeout(None)
    client = kernel_client(ns, 7201, "sys.stdin.readline()\n")
    conn, _ = listener.accept(timeout=10)
    conn.settimeout(0.0)
    with pytest.raises(BlockingIOError):
        conn.recv(10)
    conn.settimeout(0.2)
    assert conn.gettimeout() == 0.2
    with pytest.raises(TimeoutError):
        conn.recv(10)
    with pytest.raises(ValueError):
        conn.settimeout(-1)
    client.stdin.write(b"\n")
    client.stdin.flush()
    finish(client)


@pytest.mark.timeout(60)
def test_reset_is_connection_reset_error_and_closed_is_ebadf(stack):
    ns, s = stack
    listener = s.listen(7202)
    client = kernel_client(ns, 7202, (
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n"
        "sys.stdin.readline()\n"
        "s.close()\n"))                                # linger 0: an RST
    conn, _ = listener.accept(timeout=10)
    client.stdin.write(b"\n")
    client.stdin.flush()
    finish(client)
    with pytest.raises(ConnectionResetError) as caught:
        conn.recv(10, timeout=10)
    assert caught.value.errno == errno.ECONNRESET
    with pytest.raises(ConnectionResetError):
        conn.sendall(b"x", timeout=5)
    conn.close()
    with pytest.raises(OSError) as caught:
        conn.recv(10)
    assert caught.value.errno == errno.EBADF


@pytest.mark.timeout(60)
def test_shutdown_how(stack):
    ns, s = stack
    listener = s.listen(7203)
    client = kernel_client(ns, 7203, (
        "s.sendall(b'before')\n"
        "data = b''\n"
        "while (c := s.recv(100)):\n"
        "    data += c\n"
        "print(data.decode(), flush=True)\n"))
    conn, _ = listener.accept(timeout=10)
    with pytest.raises(OSError) as caught:
        conn.shutdown(7)
    assert caught.value.errno == errno.EINVAL
    conn.sendall(b"reply")
    conn.shutdown(socket.SHUT_WR)                   # the client sees our FIN
    rc, out, err = finish(client)
    assert out.split()[1] == "reply", err
    conn.shutdown(socket.SHUT_RD)
    assert conn.recv(10, timeout=1) == b""        # end of stream from now on
    conn.close()


@pytest.mark.timeout(60)
def test_fileno_works_with_selectors(stack):
    """The listener's and the connection's eventfds in a selector: readable
    when there is a connection to accept / data to read, not readable once
    everything was read (level-triggered, like a socket)."""
    ns, s = stack
    listener = s.listen(7204)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listener")
    assert sel.select(timeout=0) == []
    client = kernel_client(ns, 7204, (
        "line = sys.stdin.readline()\n"
        "s.sendall(line.encode())\n"
        "sys.stdin.readline()\n"))
    events = sel.select(timeout=10)
    assert [key.data for key, _ in events] == ["listener"]
    listener.setblocking(False)
    conn, _ = listener.accept()
    assert sel.select(timeout=0) == []             # nothing more to accept
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, "conn")
    assert sel.select(timeout=0.1) == []           # nothing to read yet
    client.stdin.write(b"hello selectors\n")
    client.stdin.flush()
    got = b""
    while len(got) < 16:
        events = sel.select(timeout=10)
        assert [key.data for key, _ in events] == ["conn"]
        try:
            got += conn.recv(100)
        except BlockingIOError:
            pass
    assert got == b"hello selectors\n"
    assert sel.select(timeout=0) == []             # drained: no longer readable
    client.stdin.write(b"\n")
    client.stdin.flush()
    events = sel.select(timeout=10)                # the end of stream is readable
    assert [key.data for key, _ in events] == ["conn"]
    assert conn.recv(100) == b""
    sel.unregister(conn)
    sel.unregister(listener)
    conn.close()
    listener.close()
    finish(client)
