"""asyncio without threads, against the kernel: streams, a server that keeps
serving beside 500 idle connections, cancellation that loses nothing, the
same under uvloop."""
import asyncio
import hashlib
import random
import subprocess
import threading

import pytest

from misdtcp.api.aio import AsyncListener, open_connection, start_server
from stack_helpers import bare_stack
from netns_helpers import finish, kernel_sink

pytestmark = pytest.mark.netns
KERNEL = "10.77.0.1"
STACK = "10.77.0.2"
LOOPS = ["asyncio", "uvloop"]


def run(loop_kind, coro, timeout=60):
    """Run coro under the asked-for event loop, bounded in time."""
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def stack():
    with bare_stack(workers=2, max_connections=640, rcvbuf=65536, sndbuf=65536) as running:
        yield running


def kernel_client(ns, code):
    return ns.python(["-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


IDLE_THEN_ONE = f"""
import socket, sys, time
idle = []
for i in range(500):
    idle.append(socket.create_connection(({STACK!r}, 7100), timeout=20))
print("opened", flush=True)
sys.stdin.readline()                       # the test saw all 500 accepted
t0 = time.monotonic()
s = socket.create_connection(({STACK!r}, 7100), timeout=20)
s.sendall(b"ping\\n")
reply = s.makefile("rb").readline()
print(reply.decode().strip(), round(time.monotonic() - t0, 3), flush=True)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_500_idle_connections_and_a_new_one_served_within_a_second(stack, loop_kind):
    ns, s = stack
    clients = []

    async def main():
        accepted = []
        threads_before = threading.active_count()

        async def handle(reader, writer):
            accepted.append(writer.get_extra_info("peername"))
            line = await reader.readline()        # the 500 idle ones wait here, on no thread
            if line == b"ping\n":
                writer.write(b"pong\n")
                await writer.drain()
            writer.close()

        server = await start_server(handle, port=7100, stack=s, backlog=600)
        async with server:
            client = kernel_client(ns, IDLE_THEN_ONE)
            clients.append(client)
            while len(accepted) < 500:
                await asyncio.sleep(0.02)
            # no thread was started per connection or per awaited call
            assert threading.active_count() <= threads_before + 1
            client.stdin.write(b"go\n")
            client.stdin.flush()
            while len(accepted) < 501:
                await asyncio.sleep(0.01)
            while client.poll() is None:
                await asyncio.sleep(0.01)
        return accepted

    try:
        accepted = run(loop_kind, main(), timeout=120)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
    rc, out, err = finish(clients[0], timeout=30)
    assert rc == 0, err
    lines = out.split("\n")
    assert lines[0] == "opened"
    reply, seconds = lines[1].split()
    assert reply == "pong"
    assert float(seconds) < 1.0
    assert all(peer[0] == KERNEL for peer in accepted) and len(set(accepted)) == 501


SLOW_SENDER = f"""
import os, socket, sys, time, hashlib
s = socket.create_connection(({STACK!r}, 7101), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
data = os.urandom(200000)
print(hashlib.sha256(data).hexdigest(), flush=True)
for i in range(0, len(data), 1000):
    s.sendall(data[i:i + 1000])
    if i % 5000 == 0:
        time.sleep(0.02)                   # 40 pauses: reads wait, and get cancelled while waiting
s.shutdown(socket.SHUT_WR)
s.recv(1)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_cancelled_reads_lose_nothing(stack, loop_kind):
    """Reads cancelled at random points (timeouts of a few ms while data
    trickles in) never lose a byte: readexactly, readline, read and the
    low-level recv all resume where the stream is."""
    ns, s = stack
    listener = s.listen(7101)
    client = kernel_client(ns, SLOW_SENDER)
    rng = random.Random(7)

    async def main():
        conn = await AsyncListener(listener).accept(timeout=20)
        from misdtcp.api.aio import StreamReader
        reader = StreamReader(conn)
        got = bytearray()
        cancelled = 0
        while True:
            kind = rng.choice(["exactly", "line", "read", "recv"])
            if kind == "exactly":
                op = reader.readexactly(rng.randint(1, 5000))
            elif kind == "line":
                op = reader.readline()
            elif kind == "read":
                op = reader.read(rng.randint(1, 5000))
            else:
                if reader._buffer:                # the low-level recv bypasses the reader's buffer
                    continue
                op = conn.recv(rng.randint(1, 5000))
            try:
                chunk = await asyncio.wait_for(op, timeout=rng.choice([0.0005, 0.002, 0.01]))
            except asyncio.TimeoutError:
                cancelled += 1
                continue
            except asyncio.IncompleteReadError as exc:
                got += exc.partial
                break
            if not chunk and kind != "exactly":
                if reader.at_eof() or kind == "recv":
                    break
            got += chunk
        await conn.close()
        return bytes(got), cancelled

    got, cancelled = run(loop_kind, main(), timeout=90)
    rc, out, err = finish(client, timeout=30)
    expected_sha = out.split()[0]
    assert cancelled > 10, "the test did not cancel reads while waiting"
    assert len(got) == 200000
    assert hashlib.sha256(got).hexdigest() == expected_sha


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_cancelled_recv_then_data_arrives(stack, loop_kind):
    """A recv cancelled while waiting; the bytes that arrive afterwards go to
    the next recv, whole."""
    ns, s = stack
    listener = s.listen(7102)
    client = kernel_client(ns, (
        "import socket, sys\n"
        f"s = socket.create_connection(({STACK!r}, 7102), timeout=20)\n"
        "sys.stdin.readline()\n"
        "s.sendall(b'after the cancel')\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "s.recv(1)\n"))

    async def main():
        conn = await AsyncListener(listener).accept(timeout=20)
        waiting = asyncio.ensure_future(conn.recv(100))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        client.stdin.write(b"send\n")
        client.stdin.flush()
        data = b""
        while len(data) < 16:
            chunk = await conn.recv(100, timeout=10)
            assert chunk
            data += chunk
        await conn.close()
        return data

    assert run(loop_kind, main()) == b"after the cancel"
    finish(client, timeout=20)


ECHO_CLIENT = f"""
import socket, os, hashlib, threading
s = socket.create_connection(({STACK!r}, 7103), timeout=20)
data = b"".join(os.urandom(100).hex().encode() + b"\\n" for _ in range(3000))
got = bytearray()
def rd():
    while (c := s.recv(65536)):
        got.extend(c)
t = threading.Thread(target=rd); t.start()
s.sendall(data); s.shutdown(socket.SHUT_WR); t.join(30)
print(bytes(got) == data, len(got), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_streams_line_echo_with_backpressure(stack, loop_kind):
    """start_server + readline/write/drain: 600 KB of lines echoed through a
    64 KiB send buffer, so drain() has to wait for the peer's ACKs."""
    ns, s = stack

    async def main():
        done = asyncio.Event()

        async def handle(reader, writer):
            async for line in reader:
                writer.write(line)
                await writer.drain()
            writer.write_eof()
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await start_server(handle, port=7103, stack=s)
        async with server:
            client = kernel_client(ns, ECHO_CLIENT)
            await asyncio.wait_for(done.wait(), 60)
        return client

    client = run(loop_kind, main(), timeout=90)
    rc, out, err = finish(client, timeout=30)
    assert out.split()[0] == "True", (out, err)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_open_connection_refused_and_served(stack, loop_kind):
    ns, s = stack
    sink = kernel_sink(ns, 6100, expect=300000)

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await open_connection(KERNEL, 6101, stack=s)
        reader, writer = await open_connection(KERNEL, 6100, stack=s)
        assert writer.get_extra_info("peername") == (KERNEL, 6100)
        assert writer.get_extra_info("sockname")[0] == STACK
        writer.write(b"q" * 300000)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    run(loop_kind, main())
    rc, out, err = finish(sink, timeout=30)
    assert out.split()[-2] == "300000"
