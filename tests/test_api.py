"""The Python API against the kernel: active open, sendall, recv/recv_into,
timeouts, zero-copy views, and the asyncio adapter."""
import asyncio
import errno
import hashlib
import os
import subprocess

import pytest

from misdtcp.api.aio import AsyncListener, open_connection
from stack_helpers import bare_stack
from netns_helpers import finish, kernel_sink

pytestmark = pytest.mark.netns
KERNEL = "10.77.0.1"
STACK = "10.77.0.2"


@pytest.fixture
def stack():
    with bare_stack(workers=2) as running:
        yield running


@pytest.mark.timeout(120)
def test_active_open_and_sendall_to_a_kernel_server(stack):
    ns, s = stack
    data = os.urandom(8 << 20)
    sink = kernel_sink(ns, 6000, expect=len(data))
    conn = s.connect(KERNEL, 6000)
    conn.sendall(data)
    conn.shutdown()
    rc, out, err = finish(sink, timeout=60)
    assert rc == 0, err
    count, digest = out.split()[-2:]
    assert int(count) == len(data)
    assert digest == hashlib.sha256(data).hexdigest()


@pytest.mark.timeout(60)
def test_connect_to_a_closed_port_is_refused(stack):
    ns, s = stack
    with pytest.raises(ConnectionRefusedError):
        s.connect(KERNEL, 6001, timeout=10)


@pytest.mark.timeout(120)
def test_recv_view_and_recv_into_deliver_the_stream(stack):
    ns, s = stack
    listener = s.listen(7000)
    payload = os.urandom(1 << 20)
    client = ns.python(["-c", (
        "import socket, sys\n"
        f"s = socket.create_connection(({STACK!r}, 7000), timeout=20)\n"
        "data = sys.stdin.buffer.read()\n"
        "s.sendall(data)\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "s.recv(1)\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client.stdin.write(payload)
    client.stdin.close()
    conn, _ = listener.accept(timeout=10)
    first = conn.recv_view(max_bytes=1000, timeout=10)
    assert isinstance(first, memoryview) and 0 < len(first) <= 1000
    got = bytearray(first)
    conn.release(first)
    buf = bytearray(70000)
    while True:
        n = conn.recv_into(buf, timeout=10)
        if n == 0:
            break
        got += buf[:n]
    assert bytes(got) == payload
    conn.close()
    assert client.wait(timeout=20) == 0


@pytest.mark.timeout(60)
def test_recv_view_is_a_window_onto_the_shared_receive_buffer_not_a_copy(stack):
    """The view's bytes are the receive buffer's bytes: a byte changed
    through another mapping of the same memfd shows through the view (a
    copy would not), and the view's address lies inside the connection's
    mapping of that buffer."""
    import ctypes

    from misdtcp.runtime.shm import MirroredBuffer
    ns, s = stack
    listener = s.listen(7002)
    client = ns.python(["-c", (
        "import socket\n"
        f"s = socket.create_connection(({STACK!r}, 7002), timeout=20)\n"
        "s.sendall(bytes(range(256)) * 64)\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "s.recv(1)\n")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = listener.accept(timeout=10)
    view = conn.recv_view(timeout=10)
    assert len(view) > 16 and bytes(view[:4]) == bytes(range(4))
    other = MirroredBuffer.from_fd(s.receive_fd)
    place = other.view(conn.slot * s.rcvbuf + conn.consumed % s.rcvbuf, 1)
    try:
        place[0] ^= 0xFF
        assert view[0] == 0xFF                        # the change shows through the view
        place[0] ^= 0xFF
        assert view[0] == 0
    finally:
        place.release()
        other.close()
    # and the view is the connection's mapping of the shared buffer, at the read offset
    probe = ctypes.c_char.from_buffer(view)
    whole = memoryview(conn._rcv)
    mapping = ctypes.c_char.from_buffer(whole)
    assert ctypes.addressof(probe) == ctypes.addressof(mapping) + conn.consumed % s.rcvbuf
    del probe, mapping
    whole.release()
    conn.release(view)
    while conn.recv(timeout=10):
        pass
    conn.close()
    assert client.wait(timeout=20) == 0


@pytest.mark.timeout(60)
def test_recv_timeout(stack):
    ns, s = stack
    listener = s.listen(7001)
    client = ns.python(["-c", (
        "import socket, time\n"
        f"s = socket.create_connection(({STACK!r}, 7001), timeout=20)\n"
        "time.sleep(3)\n")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = listener.accept(timeout=10)
    with pytest.raises(TimeoutError):
        conn.recv(timeout=0.3)
    finish(client, timeout=20)


@pytest.mark.timeout(60)
def test_listen_twice_on_one_port_is_an_error(stack):
    ns, s = stack
    s.listen(7002)
    with pytest.raises(OSError, match="already listening") as caught:
        s.listen(7002)
    assert caught.value.errno == errno.EADDRINUSE


@pytest.mark.timeout(120)
def test_asyncio_echo(stack):
    ns, s = stack

    async def serve_one():
        listener = AsyncListener(s.listen(7003))
        conn = await listener.accept(timeout=10)
        while data := await conn.recv(timeout=10):
            await conn.sendall(data)
        await conn.shutdown()

    client = ns.python(["-c", (
        "import socket, os, hashlib, threading\n"
        f"s = socket.create_connection(({STACK!r}, 7003), timeout=20)\n"
        "data = os.urandom(300000)\n"
        "got = bytearray()\n"
        "def rd():\n"
        "    while (c := s.recv(65536)):\n"
        "        got.extend(c)\n"
        "t = threading.Thread(target=rd); t.start()\n"
        "s.sendall(data); s.shutdown(socket.SHUT_WR); t.join(30)\n"
        "print(bytes(got) == data, len(got))\n")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    asyncio.run(asyncio.wait_for(serve_one(), 60))
    rc, out, err = finish(client, timeout=30)
    assert out.split()[0] == "True", (out, err)


@pytest.mark.timeout(60)
def test_asyncio_active_open(stack):
    ns, s = stack
    sink = kernel_sink(ns, 6002, expect=100000)

    async def go():
        reader, writer = await open_connection(KERNEL, 6002, stack=s)
        assert writer.get_extra_info("peername") == (KERNEL, 6002)
        writer.write(b"z" * 100000)
        await writer.drain()
        writer.write_eof()
        writer.close()
        await writer.wait_closed()

    asyncio.run(asyncio.wait_for(go(), 30))
    rc, out, err = finish(sink, timeout=30)
    assert out.split()[-2] == "100000"
