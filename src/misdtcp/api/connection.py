"""Listeners and connections: what an application holds.

They behave like the standard library's sockets where that means the same:
`accept()` returns ``(conn, address)``, `getpeername()`/`getsockname()`,
`settimeout()`/`gettimeout()`/`setblocking()`, `recv`/`recv_into`/`send`/
`sendall`, `shutdown(how)`, `close()`, the stdlib's error classes
(api/errors.py), and `fileno()` -- an eventfd that `selectors`, `select` or
an event loop can wait on: readable while the connection has data, an end of
stream or an error to report (or, after a short `send`, room to send), or
while the listener has a connection to accept.

A `Connection` also reads without copying: `recv_view()` returns a
memoryview of the shared receive buffer (mapped mirrored, so any readable
stretch is one contiguous view) and `release()` gives the bytes back, which
is what opens the window -- the consumed offset reaches every replica through
the log.  Sending copies into the shared send buffer and posts how far it is
written.

Readiness (docs/DESIGN.md, "Readiness"): copy progress is published by the
workers in shared memory without any event; a connection that wants to be
told ARMS an interest (runtime/readiness.pxd) and the worker that satisfies
it posts one message, which the stack's event thread turns into a write on
the eventfd.  Two ways of using the eventfd:

* level (``fileno()``, for selectors): after every receive or send the
  eventfd is made to match the connection (cleared, interests re-armed,
  signalled again if still ready), as a socket's readability would;
* edge (``readiness_fd()``, for the asyncio adapter): the caller arms what it
  waits for with `arm()` and clears the eventfd when woken, so a connection
  whose data nobody is waiting for does not keep an event loop spinning.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING

from misdtcp._tcpcore import RESET_NAMES, SLOT_MASK
from misdtcp.api.errors import ConnectionReset, bad_descriptor, broken_pipe, would_block
from misdtcp.runtime.shm import SlotMap
from misdtcp.runtime.vocabulary import Event, Request
from misdtcp.runtime.wait import Backoff, Deadline

if TYPE_CHECKING:
    from misdtcp.api.stack import Stack


# An ACCEPTED or CONNECTED event about an IPv6 peer (runtime/executor.pyx,
# _post_event): a = value | rport << 32 | EVENT_PEER6, b and c the address.
EVENT_PEER6 = 1 << 63


def peer_address(word: int) -> tuple[str, int] | None:
    """(address, port) from an event's ``raddr << 16 | rport`` word (None if absent)."""
    if not word:
        return None
    return str(ipaddress.IPv4Address(word >> 16)), word & 0xFFFF


def event_peer(a: int, b: int, c: int) -> tuple[int, tuple[str, int] | None, bool]:
    """(value, the peer's (address, port), whether it is IPv6) of an
    ACCEPTED or CONNECTED event."""
    if a & EVENT_PEER6:
        address = ipaddress.IPv6Address(((b << 64) | c).to_bytes(16, "big"))
        return a & 0xFFFFFFFF, (str(address), (a >> 32) & 0xFFFF), True
    return a, peer_address(b), False


class Readiness:
    """An eventfd that stands for a connection or listener in select/epoll.

    Written by the stack's event thread (and by the owner when it finds the
    condition already true), read (cleared) by the owner.  Opening and
    closing happen under the stack's lock, as do the event thread's writes,
    so a closed descriptor number is never written to."""

    __slots__ = ("fd", "lock")

    def __init__(self, lock):
        self.fd = -1
        self.lock = lock

    def fileno(self) -> int:
        with self.lock:
            if self.fd < 0:
                self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            return self.fd

    def signal(self) -> None:
        fd = self.fd
        if fd >= 0:
            try:
                os.eventfd_write(fd, 1)
            except (BlockingIOError, OSError):
                pass

    def clear(self) -> None:
        fd = self.fd
        if fd >= 0:
            try:
                os.eventfd_read(fd)
            except (BlockingIOError, OSError):
                pass

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class _Timeouts:
    """settimeout()/gettimeout()/setblocking() as sockets have them: None
    blocks, 0.0 never blocks (BlockingIOError), a number is a TimeoutError
    after that many seconds."""

    timeout: float | None = None

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self.timeout = value

    def gettimeout(self) -> float | None:
        return self.timeout

    def setblocking(self, flag: bool) -> None:
        self.timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self.timeout != 0.0

    def _effective(self, timeout):
        return self.timeout if timeout is None else timeout

    def _expired(self, timeout, what: str):
        """The error for a wait that ran out: BlockingIOError when non-blocking."""
        if timeout == 0:
            return would_block(what)
        return TimeoutError(errno.ETIMEDOUT, f"{what} timed out after {timeout:g} s")


class Listener(_Timeouts):
    """Connections to one port, as they are established."""

    def __init__(self, stack: Stack, port: int):
        self.stack = stack
        self.port = port
        self._ready: deque = deque()
        self._cond = threading.Condition(stack.lock)
        self._readiness = Readiness(stack.lock)
        self._closed = False
        self.ready = False          # the stack listens (Stack.listen returned)

    def accept(self, timeout: float | None = None) -> tuple[Connection, tuple[str, int]]:
        """The next established connection and its peer's (address, port).
        Blocks (or per settimeout/`timeout`: TimeoutError, BlockingIOError)."""
        timeout = self._effective(timeout)
        deadline = Deadline(timeout)
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise bad_descriptor("the listener")
                self.stack.check()
                if deadline.expired:
                    raise self._expired(timeout, f"accept on port {self.port}")
                self._cond.wait(deadline.slice(0.1))
            conn = self._ready.popleft()
            if not self._ready:
                self._readiness.clear()
        self.stack.post(Request.ACCEPTED, conn.handle)
        return conn, conn.remote

    def pending(self) -> int:
        """Connections established and waiting for accept()."""
        return len(self._ready)

    def _established(self, conn: Connection) -> None:
        """The event thread hands over a new connection (the stack's lock is held)."""
        self._ready.append(conn)
        self._cond.notify_all()
        self._readiness.signal()

    def fileno(self) -> int:
        """An eventfd, readable while a connection waits for accept()."""
        fd = self._readiness.fileno()
        with self.stack.lock:
            if self._ready:
                self._readiness.signal()
        return fd

    def getsockname(self) -> tuple[str, int]:
        """The stack's IPv4 address and the port (a listener takes both
        families: `Stack.address6` is its IPv6 address)."""
        return self.stack.address, self.port

    def close(self):
        if self._closed:
            return
        self._closed = True
        if not self.stack.stopping and self.stack.failure is None:
            self.stack.unlisten(self.port)
        with self._cond:
            self._cond.notify_all()
            self._readiness.signal()
        self._readiness.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Connection(_Timeouts):
    """One TCP connection.  Receive without copying with recv_view()/release(),
    or copy with recv()/recv_into(); send with send()/sendall()."""

    def __init__(self, stack: Stack, handle: int, remote: tuple[str, int] | None = None,
                 local_port: int | None = None, ipv6: bool = False):
        self.stack = stack
        self.handle = handle
        self.slot = handle & SLOT_MASK
        self.remote = remote
        self.family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.local = ((stack.address6 if ipv6 else stack.address), local_port) if local_port else None
        self.consumed = 0          # receive stream offset released to the stack
        self.posted_consumed = 0
        self.written = 0           # send stream offset handed to the stack
        self.peer_closed_at = None  # final receive stream length once the FIN arrived
        self.reset_reason = None
        self.closed = False        # the stack says the connection is gone
        self.app_closed = False    # the application called close()
        self.read_shut = False     # shutdown(SHUT_RD)
        self.timeout: float | None = None
        # this connection's regions of the shared buffers, mapped mirrored
        self._rcv = SlotMap(stack.receive_fd, self.slot * stack.rcvbuf, stack.rcvbuf)
        self._snd = SlotMap(stack.send_fd, self.slot * stack.sndbuf, stack.sndbuf)
        self._cond = threading.Condition(stack.lock)
        self._readiness = Readiness(stack.lock)
        self._level = False        # fileno() was asked for: keep the eventfd level-triggered
        self._want_write = False   # a send found the buffer full

    # -- names --------------------------------------------------------------------
    def getpeername(self) -> tuple[str, int]:
        if self.remote is None:
            raise OSError(errno.ENOTCONN, "the peer's address is not known")
        return self.remote

    def getsockname(self) -> tuple[str, int]:
        if self.local is None:
            raise OSError(errno.ENOTCONN, "the local address is not known")
        return self.local

    # -- receive --------------------------------------------------------------
    def readable_end(self) -> int:
        """Receive stream offset up to which every worker has copied."""
        return self.stack.progress.readable(self.handle)

    def _at_eof(self) -> bool:
        return self.read_shut or (self.peer_closed_at is not None and self.consumed >= self.peer_closed_at)

    def recv_view(self, max_bytes: int | None = None, timeout: float | None = None):
        """A memoryview of received bytes in the shared receive buffer (no copy);
        empty at end of stream.  Pass it to release() once done."""
        if self.app_closed:
            raise bad_descriptor("the connection")
        timeout = self._effective(timeout)
        deadline = Deadline(timeout)
        backoff = Backoff()
        while True:
            if self.read_shut:
                return memoryview(b"")
            end = self.readable_end()
            if end > self.consumed:
                n = end - self.consumed
                if max_bytes is not None:
                    n = min(n, max_bytes)
                return self._rcv.view(self.consumed, n)
            if self._at_eof():
                return memoryview(b"")
            if self.reset_reason is not None:
                raise ConnectionReset(self.reset_reason)
            if self.closed:
                return memoryview(b"")
            self.stack.check()
            if deadline.expired:
                raise self._expired(timeout, "recv")
            backoff.idle(deadline)

    def peek(self) -> memoryview:
        """Every byte received and not yet released, without waiting or consuming."""
        end = self.readable_end()
        return self._rcv.view(self.consumed, max(0, end - self.consumed))

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
            if not self.closed and not self.stack.stopping:
                self.stack.post(Request.CONSUMED, self.handle, self.consumed)
        if self._level:
            self._sync()

    def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        view = self.recv_view(max_bytes, timeout)
        data = bytes(view)
        self.release(view)
        return data

    def recv_into(self, buffer, nbytes: int = 0, timeout: float | None = None) -> int:
        target = memoryview(buffer).cast("B")
        if nbytes:
            target = target[:nbytes]
        view = self.recv_view(len(target), timeout)
        n = len(view)
        target[:n] = view
        self.release(view)
        return n

    # -- send -----------------------------------------------------------------
    def _room(self) -> int:
        return self.stack.progress.acked(self.handle) + self.stack.sndbuf - self.written

    def _check_send(self):
        if self.app_closed:
            raise bad_descriptor("the connection")
        if self.reset_reason is not None:
            raise ConnectionReset(self.reset_reason)
        if self.closed:
            raise broken_pipe()

    def send(self, data, timeout: float | None = None) -> int:
        """Copy what fits into the send buffer (waiting for room as sockets
        do); returns how many bytes were taken."""
        src = memoryview(data).cast("B")
        if not len(src):
            return 0
        timeout = self._effective(timeout)
        deadline = Deadline(timeout)
        backoff = Backoff()
        while True:
            self._check_send()
            room = self._room()
            if room > 0:
                break
            self.stack.check()
            if deadline.expired:
                self._want_write = True
                if self._level:
                    self._sync()
                raise self._expired(timeout, "send")
            backoff.idle(deadline)
        n = min(room, len(src), self.stack.sndbuf // 2)
        self._snd.view(self.written, n)[:] = src[:n]
        self.written += n
        self.stack.post(Request.SEND, self.handle, self.written)
        self._want_write = n < len(src)
        if self._level:
            self._sync()
        return n

    def sendall(self, data, timeout: float | None = None):
        """Copy all of data into the shared send buffer as room frees up."""
        src = memoryview(data).cast("B")
        timeout = self._effective(timeout)
        deadline = Deadline(timeout)
        while len(src):
            left = deadline.remaining()
            n = self.send(src, timeout=left if timeout is not None else None)
            src = src[n:]

    def unsent(self) -> int:
        """Bytes handed to the stack that the peer has not acknowledged."""
        return self.written - self.stack.progress.acked(self.handle)

    # -- readiness ------------------------------------------------------------------
    def fileno(self) -> int:
        """An eventfd for select/selectors/epoll: readable while recv() would
        not block (data, end of stream, error) or, after a send that did not
        take everything, while send() would not block."""
        fd = self._readiness.fileno()
        self._level = True
        self._sync()
        return fd

    def readiness_fd(self) -> int:
        """The same eventfd, edge-driven: wait for what you armed with arm(),
        clear it with clear_readiness() when woken (the asyncio adapter)."""
        return self._readiness.fileno()

    def clear_readiness(self) -> None:
        self._readiness.clear()

    def read_ready(self) -> bool:
        """recv() would not block."""
        return (self.readable_end() > self.consumed or self._at_eof() or self.reset_reason is not None
                or self.closed or self.app_closed)

    def write_ready(self) -> bool:
        """send() would not block."""
        return self._room() > 0 or self.reset_reason is not None or self.closed or self.app_closed

    def arm(self, read: bool = False, write: bool = False, *, read_past: int | None = None) -> bool:
        """Have the eventfd signalled once what is asked for holds: `read`:
        the readable end passes `read_past` (default: what was consumed);
        `write`: there is room to send.  Lifecycle events (end of stream,
        reset, closed) signal it too.  Returns True -- and signals the
        eventfd itself -- when it already holds."""
        progress = self.stack.progress
        ready = self.reset_reason is not None or self.closed or self.app_closed or self.stack.failure is not None
        if read and not ready:
            seen = self.consumed if read_past is None else read_past
            ready = progress.arm_read(self.handle, seen) > seen or self._at_eof() or \
                (self.peer_closed_at is not None and seen >= self.peer_closed_at)
        if write and not ready:
            seen = self.written - self.stack.sndbuf
            ready = seen < 0 or progress.arm_write(self.handle, seen) > seen
        if ready:
            self._readiness.signal()
        return ready

    def _sync(self) -> None:
        """Level mode: make the eventfd's readability match the connection's."""
        readiness = self._readiness
        readiness.clear()
        self.arm(read=True, write=self._want_write)

    def _signal(self) -> None:
        """The event thread: something this connection armed or cares about happened."""
        self._readiness.signal()

    # -- closing ----------------------------------------------------------------------
    def shutdown(self, how: int = socket.SHUT_WR):
        """SHUT_WR: no more sending (FIN after the queued data); SHUT_RD: recv()
        returns end of stream from now on; SHUT_RDWR: both."""
        if how not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise OSError(errno.EINVAL, f"shutdown: {how} is not SHUT_RD, SHUT_WR or SHUT_RDWR")
        if self.app_closed:
            raise bad_descriptor("the connection")
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self.read_shut = True
            self._readiness.signal()
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            if self.closed:
                raise OSError(errno.ENOTCONN, "the connection is closed")
            self.stack.post(Request.SHUTDOWN, self.handle)

    def close(self):
        if self.app_closed:
            return
        self.app_closed = True
        if not self.closed and not self.stack.stopping and self.stack.failure is None:
            self.stack.post(Request.CLOSE, self.handle)
        self._readiness.close()

    def abort(self):
        if not self.closed and not self.stack.stopping and self.stack.failure is None:
            self.stack.post(Request.ABORT, self.handle)
        self.app_closed = True
        self._readiness.close()

    def wait_closed(self, timeout: float | None = None) -> bool:
        deadline = Deadline(timeout)
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
        self._readiness.signal()

    def __repr__(self):
        peer = f"{self.remote[0]}:{self.remote[1]}" if self.remote else "?"
        return f"<misdtcp Connection handle={self.handle:#x} peer={peer}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
