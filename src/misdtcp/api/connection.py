"""Listeners and connections: what an application holds.

A `Connection` reads without copying: `recv_view()` returns a memoryview of
the shared receive buffer (mapped mirrored, so any readable stretch is one
contiguous view) and `release()` gives the bytes back, which is what opens
the window -- the consumed offset reaches every replica through the log.
Sending copies into the shared send buffer and posts how far it is written.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from misdtcp._tcpcore import RESET_NAMES, SLOT_MASK
from misdtcp.api.errors import ConnectionReset
from misdtcp.runtime.shm import SlotMap
from misdtcp.runtime.vocabulary import Event, Request
from misdtcp.runtime.wait import Backoff, Deadline

if TYPE_CHECKING:
    from misdtcp.api.stack import Stack


class Listener:
    """Connections to one port, as they are established."""

    def __init__(self, stack: Stack, port: int):
        self.stack = stack
        self.port = port
        self._ready: deque = deque()
        self._cond = threading.Condition(stack.lock)

    def accept(self, timeout: float | None = None) -> Connection:
        """The next established connection (blocks; TimeoutError after `timeout`)."""
        deadline = Deadline(timeout)
        with self._cond:
            while not self._ready:
                self.stack.check()
                if deadline.expired:
                    raise TimeoutError(f"no connection on port {self.port} within {timeout} s")
                self._cond.wait(deadline.slice(0.1))
            conn = self._ready.popleft()
        self.stack.post(Request.ACCEPTED, conn.handle)
        return conn

    def _established(self, conn: Connection) -> None:
        """The event thread hands over a new connection (the stack's lock is held)."""
        self._ready.append(conn)
        self._cond.notify_all()

    def close(self):
        self.stack.unlisten(self.port)


class Connection:
    """One TCP connection.  Receive without copying with recv_view()/release(),
    or copy with recv()/recv_into(); send with sendall()."""

    def __init__(self, stack: Stack, handle: int, remote=None):
        self.stack = stack
        self.handle = handle
        self.slot = handle & SLOT_MASK
        self.remote = remote
        self.consumed = 0          # receive stream offset released to the stack
        self.posted_consumed = 0
        self.written = 0           # send stream offset handed to the stack
        self.peer_closed_at = None  # final receive stream length once the FIN arrived
        self.reset_reason = None
        self.closed = False        # the stack says the connection is gone
        self.timeout: float | None = None
        # this connection's regions of the shared buffers, mapped mirrored
        self._rcv = SlotMap(stack.receive_fd, self.slot * stack.rcvbuf, stack.rcvbuf)
        self._snd = SlotMap(stack.send_fd, self.slot * stack.sndbuf, stack.sndbuf)
        self._cond = threading.Condition(stack.lock)

    # -- receive --------------------------------------------------------------
    def readable_end(self) -> int:
        """Receive stream offset up to which every worker has copied."""
        return self.stack.progress.readable(self.handle)

    def recv_view(self, max_bytes: int | None = None, timeout: float | None = None):
        """A memoryview of received bytes in the shared receive buffer (no copy);
        empty at end of stream.  Pass it to release() once done."""
        deadline = self._deadline(timeout)
        backoff = Backoff()
        while True:
            end = self.readable_end()
            if end > self.consumed:
                n = end - self.consumed
                if max_bytes is not None:
                    n = min(n, max_bytes)
                return self._rcv.view(self.consumed, n)
            if self.peer_closed_at is not None and self.consumed >= self.peer_closed_at:
                return memoryview(b"")
            if self.reset_reason is not None:
                raise ConnectionReset(f"connection reset ({self.reset_reason})")
            if self.closed:
                return memoryview(b"")
            self.stack.check()
            if deadline.expired:
                raise TimeoutError("no data within the timeout")
            backoff.idle(deadline)

    def release(self, view_or_count):
        """Give consumed bytes back to the stack (opens the window)."""
        n = view_or_count if isinstance(view_or_count, int) else len(view_or_count)
        if isinstance(view_or_count, memoryview):
            view_or_count.release()
        self.consumed += n
        # batch the window updates: every 64 KiB or a quarter of the buffer
        if self.consumed - self.posted_consumed >= min(65536, self.stack.rcvbuf // 4) or \
                self.readable_end() == self.consumed:
            self.posted_consumed = self.consumed
            self.stack.post(Request.CONSUMED, self.handle, self.consumed)

    def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        view = self.recv_view(max_bytes, timeout)
        data = bytes(view)
        self.release(view)
        return data

    def recv_into(self, buffer, timeout: float | None = None) -> int:
        target = memoryview(buffer).cast("B")
        view = self.recv_view(len(target), timeout)
        n = len(view)
        target[:n] = view
        self.release(view)
        return n

    # -- send -----------------------------------------------------------------
    def sendall(self, data, timeout: float | None = None):
        """Copy data into the shared send buffer as room frees up."""
        src = memoryview(data).cast("B")
        deadline = self._deadline(timeout)
        backoff = Backoff()
        while len(src):
            if self.reset_reason is not None:
                raise ConnectionReset(f"connection reset ({self.reset_reason})")
            if self.closed:
                raise BrokenPipeError("connection closed")
            room = self.stack.progress.acked(self.handle) + self.stack.sndbuf - self.written
            if room <= 0:
                self.stack.check()
                if deadline.expired:
                    raise TimeoutError("send buffer stayed full within the timeout")
                backoff.idle(deadline)
                continue
            backoff.reset()
            n = min(room, len(src), self.stack.sndbuf // 2)
            self._snd.view(self.written, n)[:] = src[:n]
            src = src[n:]
            self.written += n
            self.stack.post(Request.SEND, self.handle, self.written)

    def unsent(self) -> int:
        """Bytes handed to the stack that the peer has not acknowledged."""
        return self.written - self.stack.progress.acked(self.handle)

    def shutdown(self):
        """No more sending: FIN after the queued data."""
        self.stack.post(Request.SHUTDOWN, self.handle)

    def close(self):
        if not self.closed and not self.stack.stopping:
            self.stack.post(Request.CLOSE, self.handle)

    def abort(self):
        if not self.closed and not self.stack.stopping:
            self.stack.post(Request.ABORT, self.handle)

    def wait_closed(self, timeout: float | None = None) -> bool:
        deadline = self._deadline(timeout)
        with self._cond:
            while not self.closed:
                self.stack.check()
                if deadline.expired:
                    return False
                self._cond.wait(deadline.slice(0.05))
        return True

    def _on_event(self, kind, value) -> None:
        """The event thread tells this connection what happened (lock held)."""
        if kind == Event.PEER_CLOSED:
            self.peer_closed_at = value
        elif kind == Event.RESET:
            self.reset_reason = RESET_NAMES.get(value, str(value))
        elif kind == Event.CLOSED:
            self.closed = True
        self._cond.notify_all()

    def _deadline(self, timeout) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
