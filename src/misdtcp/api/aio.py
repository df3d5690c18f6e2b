"""asyncio without threads: readiness through file descriptors.

    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await start_server(handle, port=7, stack=stack)
    async with server:
        await server.serve_forever()

    reader, writer = await open_connection("10.77.0.1", 5201, stack=stack)

Every connection and listener has an eventfd (api/connection.py); the event
loop waits on it with ``loop.add_reader`` -- no thread per call, no executor,
so a thousand idle connections cost a thousand idle descriptors, nothing
more, and it runs the same under uvloop.  A coroutine that needs data ARMS
the connection's read interest and awaits a future that the eventfd's
callback resolves; the worker that publishes the awaited progress posts one
message, the stack's event thread writes the eventfd (docs/DESIGN.md,
"Readiness").

Cancellation never loses received bytes: nothing is taken from the stack
while a coroutine waits.  Bytes are taken only synchronously, after the
wait, and either returned at once or kept in the reader's own buffer for the
next read.

`open_connection` and `start_server` return objects with the asyncio
streams interface (StreamReader: read, readexactly, readline, readuntil,
at_eof, async iteration; StreamWriter: write, writelines, drain, write_eof,
close, is_closing, wait_closed, get_extra_info; Server: close, wait_closed,
serve_forever, start_serving, is_serving, sockets, ``async with``).
`AsyncListener` and `AsyncConnection` are the lower-level, socket-like pair.
"""
from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable

from misdtcp.api.connection import Connection, Listener
from misdtcp.api.errors import StackError
from misdtcp.api.stack import Stack

DEFAULT_LIMIT = 2 ** 16          # asyncio's default line / buffer limit
WRITE_HIGH_WATER = 64 * 1024     # drain() waits while more than this is not yet in the send buffer


async def _within(awaitable, timeout):
    if timeout is None:
        return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


class AsyncConnection:
    """One connection for coroutines: recv, recv_view, sendall, shutdown, close."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop | None = None):
        self.conn = conn
        self._loop = loop or asyncio.get_running_loop()
        self._fd = conn.readiness_fd()
        self._waiters: list[asyncio.Future] = []
        self._on_ready_hooks: list[Callable[[], None]] = []
        self._loop.add_reader(self._fd, self._on_ready)
        self._registered = True

    # -- readiness -----------------------------------------------------------------
    def _on_ready(self) -> None:
        """The eventfd fired: clear it, wake every waiter, run the hooks (the
        writer's flush).  Waiters re-check and re-arm what they still need."""
        self.conn.clear_readiness()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        for hook in list(self._on_ready_hooks):
            hook()

    async def wait_ready(self, *, read: bool = False, write: bool = False, read_past: int | None = None) -> None:
        """Return once what is asked for may hold (re-check after: wake-ups
        can be spurious).  Arms the interest, then waits on the eventfd."""
        if not self._registered:
            raise OSError(errno.EBADF, "the connection is closed")
        fut = self._loop.create_future()
        self._waiters.append(fut)
        try:
            if self.conn.arm(read=read, write=write, read_past=read_past):
                return
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    # -- receive -------------------------------------------------------------------
    async def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to max_bytes; b"" at end of stream."""
        return await _within(self._recv(max_bytes), timeout)

    async def _recv(self, max_bytes):
        while True:
            try:
                return self.conn.recv(max_bytes, timeout=0)
            except BlockingIOError:
                await self.wait_ready(read=True)

    async def recv_view(self, max_bytes: int | None = None, timeout: float | None = None):
        """A zero-copy memoryview; pass it to release() when done."""
        return await _within(self._recv_view(max_bytes), timeout)

    async def _recv_view(self, max_bytes):
        while True:
            try:
                return self.conn.recv_view(max_bytes, timeout=0)
            except BlockingIOError:
                await self.wait_ready(read=True)

    def release(self, view_or_count):
        self.conn.release(view_or_count)

    # -- send ----------------------------------------------------------------------
    async def send(self, data, timeout: float | None = None) -> int:
        return await _within(self._send(data), timeout)

    async def _send(self, data):
        while True:
            try:
                return self.conn.send(data, timeout=0)
            except BlockingIOError:
                await self.wait_ready(write=True)

    async def sendall(self, data, timeout: float | None = None):
        await _within(self._sendall(data), timeout)

    async def _sendall(self, data):
        view = memoryview(data).cast("B")
        while len(view):
            view = view[await self._send(view):]

    # -- closing -------------------------------------------------------------------
    async def shutdown(self, how: int = socket.SHUT_WR):
        self.conn.shutdown(how)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)
            for fut in self._waiters:
                if not fut.done():
                    fut.set_result(None)
            self._waiters = []

    async def close(self):
        self._unregister()
        self.conn.close()

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the stack says the connection is gone (FIN exchanged or reset)."""
        async def gone():
            while not self.conn.closed:
                if not self._registered:
                    await asyncio.sleep(0.01)        # closed by us: no eventfd to wait on any more
                else:
                    await self.wait_ready(read=True, read_past=1 << 47)
            return True
        try:
            return await _within(gone(), timeout)
        except asyncio.TimeoutError:
            return False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class AsyncListener:
    """Accept connections from coroutines: ``conn = await listener.accept()``."""

    def __init__(self, listener: Listener, loop: asyncio.AbstractEventLoop | None = None):
        self.listener = listener
        self._loop = loop or asyncio.get_running_loop()

    async def accept(self, timeout: float | None = None) -> AsyncConnection:
        return await _within(self._accept(), timeout)

    async def _accept(self) -> AsyncConnection:
        while True:
            try:
                conn, _ = self.listener.accept(timeout=0)
                return AsyncConnection(conn, self._loop)
            except BlockingIOError:
                await self._wait()

    async def _wait(self):
        # the listener's eventfd is level-triggered (readable while a
        # connection waits): watch it only while waiting, or it would spin
        fd = self.listener.fileno()
        fut = self._loop.create_future()
        self._loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            self._loop.remove_reader(fd)

    def __aiter__(self):
        return self

    async def __anext__(self) -> AsyncConnection:
        return await self.accept()

    def close(self):
        self.listener.close()


# ---------------------------------------------------------------------------
# asyncio streams
# ---------------------------------------------------------------------------

class StreamReader:
    """asyncio.StreamReader's interface over a misdtcp connection.  Bytes
    are pulled from the stack only when a read needs them, into this
    reader's buffer -- a cancelled read leaves them there for the next."""

    def __init__(self, aconn: AsyncConnection, limit: int = DEFAULT_LIMIT):
        self._c = aconn
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False

    def _pull(self, max_bytes: int | None = None) -> bool:
        """Take what the stack has (no wait); False if nothing came."""
        if self._eof:
            return False
        try:
            view = self._c.conn.recv_view(max_bytes, timeout=0)
        except BlockingIOError:
            return False
        if not len(view):
            self._eof = True
            return False
        self._buffer += view
        self._c.conn.release(view)
        return True

    async def _more(self) -> None:
        """Wait until the stack has bytes (or an end) for the buffer."""
        while not self._pull():
            if self._eof:
                return
            await self._c.wait_ready(read=True)

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if n < 0:
            while not self._eof:
                await self._more()
            return self._take(len(self._buffer))
        if not self._buffer:
            await self._more()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._buffer) < n:
            if self._eof:
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, n)
            await self._more()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        start = 0
        while True:
            found = self._buffer.find(separator, start)
            if found >= 0:
                if found + len(separator) > self._limit:
                    raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", found)
                return self._take(found + len(separator))
            if len(self._buffer) > self._limit:
                raise asyncio.LimitOverrunError("Separator is not found, and chunk exceed the limit",
                                                len(self._buffer))
            if self._eof:
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, None)
            start = max(0, len(self._buffer) - len(separator) + 1)
            await self._more()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            if self._buffer.startswith(b"\n", exc.consumed):
                del self._buffer[:exc.consumed + 1]
            else:
                self._buffer.clear()
            raise ValueError(exc.args[0]) from None

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class StreamWriter:
    """asyncio.StreamWriter's interface: write() queues and sends what fits
    now; the rest goes out as the peer acknowledges (the eventfd's callback
    flushes it); drain() waits while too much is queued."""

    def __init__(self, aconn: AsyncConnection, reader: StreamReader | None = None):
        self._c = aconn
        self._reader = reader
        self._pending = bytearray()
        self._closing = False
        self._eof_pending = False
        self._error: BaseException | None = None
        self._closed = asyncio.Event()
        aconn._on_ready_hooks.append(self._flush)

    @property
    def transport(self):
        return self

    def get_extra_info(self, name: str, default=None):
        conn = self._c.conn
        return {"peername": conn.remote, "sockname": conn.local, "socket": conn,
                "connection": conn}.get(name, default)

    def write(self, data) -> None:
        if self._closing:
            raise RuntimeError("write() after close()")
        if self._eof_pending:
            raise RuntimeError("write() after write_eof()")
        if self._error is not None:
            raise self._error
        self._pending += data
        self._flush()

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._eof_pending = True
        self._flush()

    def _flush(self) -> None:
        conn = self._c.conn
        while self._pending and self._error is None:
            try:
                n = conn.send(self._pending, timeout=0)
            except BlockingIOError:
                break
            except (ConnectionError, OSError, StackError) as exc:
                self._error = exc
                self._pending.clear()
                break
            del self._pending[:n]
        if self._pending and self._error is None and self._c._registered:
            conn.arm(write=True)                   # the callback flushes again
            return
        if self._eof_pending and not conn.app_closed and self._error is None:
            self._eof_pending = False
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self._closing and not self._closed.is_set():
            self._c._unregister()
            conn.close()
            self._closed.set()

    async def drain(self) -> None:
        while True:
            if self._error is not None:
                raise self._error
            conn = self._c.conn
            if conn.reset_reason is not None:
                raise ConnectionResetError(errno.ECONNRESET, f"connection reset ({conn.reset_reason})")
            if len(self._pending) <= WRITE_HIGH_WATER or self._closed.is_set():
                return
            await self._c.wait_ready(write=True)
            self._flush()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._flush()

    def abort(self) -> None:
        self._closing = True
        self._pending.clear()
        self._c._unregister()
        self._c.conn.abort()
        self._closed.set()

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        while not self._closed.is_set():
            if self._c._registered:
                await self._c.wait_ready(write=True)
            self._flush()
            if not self._closed.is_set():
                await asyncio.sleep(0)


def _streams(conn: Connection, limit: int, loop) -> tuple[StreamReader, StreamWriter]:
    aconn = AsyncConnection(conn, loop)
    reader = StreamReader(aconn, limit)
    return reader, StreamWriter(aconn, reader)


async def open_connection(host: str, port: int, *, stack: Stack, limit: int = DEFAULT_LIMIT,
                          local_port: int | None = None, timeout: float | None = 10.0):
    """Like asyncio.open_connection: (StreamReader, StreamWriter) for a new
    connection to host:port (ConnectionRefusedError, TimeoutError)."""
    loop = asyncio.get_running_loop()
    pending = stack.connect_start(host, port, local_port=local_port)
    fd = pending.fileno()
    fut = loop.create_future()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await _within(fut, timeout)
    except BaseException:
        if pending.done():
            try:
                pending.result().abort()     # connected just as we gave up
            except OSError:
                pass
        raise
    finally:
        loop.remove_reader(fd)
    return _streams(pending.result(), limit, loop)


ClientConnected = Callable[[StreamReader, StreamWriter], Awaitable[None] | None]


class Server:
    """asyncio.Server's interface over a misdtcp listener."""

    def __init__(self, stack: Stack, listener: Listener, callback: ClientConnected, limit: int, loop):
        self._stack = stack
        self._listener = listener
        self._callback = callback
        self._limit = limit
        self._loop = loop
        self._fd = -1
        self._serving = False
        self._tasks: set[asyncio.Task] = set()
        self._closed = asyncio.Event()
        self._forever: asyncio.Future | None = None

    @property
    def sockets(self):
        return (self._listener,) if not self._closed.is_set() else ()

    def get_loop(self):
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()

    def _start(self):
        if self._serving or self._closed.is_set():
            return
        self._fd = self._listener.fileno()
        self._loop.add_reader(self._fd, self._on_accept)
        self._serving = True

    def _on_accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept(timeout=0)
            except BlockingIOError:
                return
            except (StackError, OSError):
                self.close()                 # the stack stopped: nothing more to accept
                return
            reader, writer = _streams(conn, self._limit, self._loop)
            result = self._callback(reader, writer)
            if asyncio.iscoroutine(result):
                task = self._loop.create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._closed.is_set():
            return
        if self._serving:
            self._loop.remove_reader(self._fd)
            self._serving = False
        self._listener.close()
        self._closed.set()
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        if self._forever is not None:
            raise RuntimeError("serve_forever() is already running")
        self._start()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            self._forever = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()


async def start_server(client_connected_cb: ClientConnected, host: str | None = None, port: int | None = None, *,
                       stack: Stack, backlog: int = 128, limit: int = DEFAULT_LIMIT,
                       start_serving: bool = True) -> Server:
    """Like asyncio.start_server: call client_connected_cb(reader, writer)
    for every connection to `port` (host, if given, must be one of the stack's
    addresses or a wildcard; the listener takes both families either way)."""
    if port is None:
        raise ValueError("start_server needs a port")
    if host not in (None, "", "0.0.0.0", "::", stack.address) and (stack.address6 is None or host != stack.address6):
        raise OSError(errno.EADDRNOTAVAIL, f"{host} is not the stack's address ({stack.address})")
    loop = asyncio.get_running_loop()
    server = Server(stack, stack.listen(port, backlog), client_connected_cb, limit, loop)
    if start_serving:
        server._start()
    return server
