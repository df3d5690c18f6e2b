"""asyncio adapter for the blocking API.

    async def main(stack):
        listener = AsyncListener(stack.listen(7))
        conn = await listener.accept()
        while data := await conn.recv():
            await conn.sendall(data)
        await conn.close()

Blocking waits run in the loop's default executor, so the event loop never
blocks on the stack; zero-copy reads are available through `recv_view()`.
"""
from __future__ import annotations

import asyncio
import functools

from misdtcp.api import Connection, Listener, Stack


async def _run(func, *args, **kwargs):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))


class AsyncConnection:
    def __init__(self, conn: Connection):
        self.conn = conn

    async def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        return await _run(self.conn.recv, max_bytes, timeout)

    async def recv_view(self, max_bytes: int | None = None, timeout: float | None = None):
        """A zero-copy memoryview; pass it to release() when done."""
        return await _run(self.conn.recv_view, max_bytes, timeout)

    def release(self, view_or_count):
        self.conn.release(view_or_count)

    async def sendall(self, data, timeout: float | None = None):
        await _run(self.conn.sendall, data, timeout)

    async def shutdown(self):
        self.conn.shutdown()

    async def close(self):
        self.conn.close()

    async def wait_closed(self, timeout: float | None = None) -> bool:
        return await _run(self.conn.wait_closed, timeout)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class AsyncListener:
    def __init__(self, listener: Listener):
        self.listener = listener

    async def accept(self, timeout: float | None = None) -> AsyncConnection:
        return AsyncConnection(await _run(self.listener.accept, timeout))

    def __aiter__(self):
        return self

    async def __anext__(self) -> AsyncConnection:
        return await self.accept()


async def open_connection(stack: Stack, address: str, port: int, **kwargs) -> AsyncConnection:
    return AsyncConnection(await _run(stack.connect, address, port, **kwargs))


async def start_server(stack: Stack, port: int, handler, *, backlog: int = 128) -> asyncio.Task:
    """Accept forever, running `await handler(conn)` for every connection."""
    listener = AsyncListener(stack.listen(port, backlog))

    async def loop():
        while True:
            conn = await listener.accept()
            asyncio.get_running_loop().create_task(handler(conn))

    return asyncio.get_running_loop().create_task(loop())
