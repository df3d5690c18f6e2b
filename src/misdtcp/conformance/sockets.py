"""The socket layer a script's system calls act on, modelled over the core.

The core knows connections by handle and speaks in stream offsets: it says
how far the receive stream is readable (``readable``), how far the send
stream is acknowledged (``writable``), where the peer's FIN lies
(``peer_closed``), and that a connection was reset or is gone.  A `Conn`
keeps that per handle; a `Socket` is what a file descriptor names: a new
socket, a listener with its accept queue, or one end of a connection, with
the socket-level state the core does not hold (O_NONBLOCK, options, the
pending error SO_ERROR returns, shutdown directions, the read offset).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from misdtcp._tcpcore import RESET_NAMES
from misdtcp.conformance.packets import Flow
from misdtcp.conformance.symbols import ERRNO

# Why the core ended a connection -> the errno a socket reports (as Linux does).
REASON_ERRNO = {
    "reset_by_peer": ERRNO["ECONNRESET"],
    "refused": ERRNO["ECONNREFUSED"],
    "timed_out": ERRNO["ETIMEDOUT"],
    "no_memory": ERRNO["ENOMEM"],
    "net_unreachable": ERRNO["ENETUNREACH"],
    "host_unreachable": ERRNO["EHOSTUNREACH"],
    "protocol_unreachable": ERRNO["ENOPROTOOPT"],
    "host_down": ERRNO["EHOSTDOWN"],
    "no_network": ERRNO["ENONET"],
    "protocol_error": ERRNO["EPROTO"],
}


def reason_errno(reason) -> int:
    name = RESET_NAMES.get(reason, reason) if isinstance(reason, int) else reason
    return REASON_ERRNO.get(name, ERRNO["ECONNABORTED"])


@dataclass
class Conn:
    """What the core told us about one connection (by handle)."""
    handle: int
    flow: Flow | None = None
    readable: int = 0                 # receive stream offset up to which data is in order
    fin_off: int | None = None        # the peer's FIN (end of the receive stream)
    acked: int = 0                    # send stream offset the peer acknowledged
    error: int = 0                    # errno of a reset or timeout, until reported
    urgent_end: int = 0               # receive stream offset where the peer's urgent data ends
    gone: bool = False                # the core released it (its handle is dead)
    reset: bool = False               # it ended by a reset, a timeout or an abort


@dataclass
class Socket:
    """What one file descriptor names."""
    fd: int
    nonblocking: bool = False
    options: dict = field(default_factory=dict)    # (level, name) -> value as set
    port: int | None = None           # bound local port
    listening: bool = False
    backlog: int = 0
    queue: deque = field(default_factory=deque)    # listener: Conns established, not accepted
    conn: Conn | None = None
    connecting: bool = False          # connect() issued, not yet connected or failed
    failed: bool = False              # the connection attempt failed; connect() has not said so yet
    connected: bool = False
    error: int = 0                    # SO_ERROR of a socket without a Conn (failed connect)
    read_off: int = 0
    written: int = 0
    rd_shutdown: bool = False
    wr_shutdown: bool = False
    flow: Flow | None = None

    @property
    def pending_error(self) -> int:
        return self.conn.error if self.conn is not None and self.conn.error else self.error

    def take_error(self) -> int:
        """SO_ERROR semantics: report the pending error once."""
        err = self.pending_error
        if self.conn is not None:
            self.conn.error = 0
        self.error = 0
        return err

    def readable_bytes(self) -> int:
        return self.conn.readable - self.read_off if self.conn is not None else 0

    def at_eof(self) -> bool:
        c = self.conn
        return self.rd_shutdown or (c is not None and (
            (c.fin_off is not None and self.read_off >= c.fin_off) or c.gone))


class SocketTable:
    """File descriptors -> sockets, and the core's notifications applied to them."""

    def __init__(self):
        self.sockets: dict[int, Socket] = {}
        self.conns: dict[int, Conn] = {}            # handle -> Conn
        self.by_tag: dict[int, Socket] = {}         # connect() tag -> socket

    def new_fd(self) -> int:
        fd = 3
        while fd in self.sockets:
            fd += 1
        return fd

    def create(self) -> Socket:
        sock = Socket(self.new_fd())
        self.sockets[sock.fd] = sock
        return sock

    def conn(self, handle: int) -> Conn:
        if handle not in self.conns:
            self.conns[handle] = Conn(handle)
        return self.conns[handle]

    def listener(self, port: int) -> Socket | None:
        for sock in self.sockets.values():
            if sock.listening and sock.port == port:
                return sock
        return None

    def on_notify(self, handle: int, event: str, value) -> list[int]:
        """Apply one notification; returns handles the runner must abort
        (connections established for a port nobody listens on any more)."""
        if event == "connect_failed":
            sock = self.by_tag.pop(value, None)
            if sock is not None:
                sock.connecting = False
                sock.failed = True
                sock.error = reason_errno(handle)
                if sock.conn is not None:
                    sock.conn.gone = True
                    sock.conn.reset = True
            return []
        if event == "connected":
            sock = self.by_tag.pop(value, None)
            if sock is not None:
                sock.connecting = False
                sock.connected = True
                sock.conn = self.conn(handle)
            return []
        conn = self.conn(handle)
        if event == "accepted":
            sock = self.listener(value)
            if sock is None:
                return [handle]
            sock.queue.append(conn)
        elif event == "readable":
            conn.readable = max(conn.readable, value)
        elif event == "writable":
            conn.acked = max(conn.acked, value)
        elif event == "peer_closed":
            conn.fin_off = value
        elif event == "urgent":
            conn.urgent_end = max(conn.urgent_end, value)
        elif event == "reset":
            conn.reset = True
            if value != "aborted":
                conn.error = reason_errno(value)
                if conn.error == ERRNO["ECONNRESET"] and conn.fin_off is not None and not any(
                        s.conn is conn and s.wr_shutdown for s in self.sockets.values()):
                    conn.error = ERRNO["EPIPE"]     # reset in CLOSE-WAIT: Linux says EPIPE
        elif event == "closed":
            conn.gone = True
        return []
