"""The errors the API raises: one sentence each, for people.

Connections raise the standard library's classes, with the errno a socket
would carry, so code written for `socket` handles them unchanged:

* ``ConnectionResetError`` (ECONNRESET)  the connection was reset;
* ``ConnectionRefusedError``             an active open was refused or failed;
* ``BrokenPipeError`` (EPIPE)            sending after the connection closed;
* ``BlockingIOError`` (EAGAIN)           non-blocking call with nothing to do;
* ``TimeoutError``                       a timeout set by settimeout() or timeout=;
* ``OSError`` (EADDRINUSE)               listening twice on one port;
* ``OSError`` (EBADF)                    using a connection the application closed.

`StackError` is for the stack itself: it has stopped, or cannot do what was
asked (the message says why).
"""
import errno
import os


class StackError(RuntimeError):
    """The stack cannot do what was asked, or has stopped (the message says why)."""


class ConnectionReset(ConnectionResetError):
    """The connection was reset (by the peer, a timeout or an abort)."""

    def __init__(self, reason: str):
        super().__init__(errno.ECONNRESET, f"connection reset ({reason})")


def would_block(what: str) -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, f"{what} would block")


def address_in_use(port: int) -> OSError:
    return OSError(errno.EADDRINUSE, f"port {port} is already listening")


def bad_descriptor(what: str) -> OSError:
    return OSError(errno.EBADF, f"{what} is closed")


def broken_pipe() -> BrokenPipeError:
    return BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE).lower() + ": the connection is closed")
