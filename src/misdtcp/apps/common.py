"""Helpers shared by the apps: exact reads, per-connection reports."""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import time


def recv_exact(conn, n: int, timeout: float | None = None) -> bytes:
    """Exactly n bytes, or ConnectionError if the peer closes first."""
    out = bytearray()
    while len(out) < n:
        view = conn.recv_view(n - len(out), timeout=timeout)
        if not len(view):
            raise ConnectionError(f"peer closed after {len(out)} of {n} bytes")
        out += view
        conn.release(view)
    return bytes(out)


class ConnectionReport:
    """Byte count and SHA-256 of what one connection received."""

    def __init__(self, remote=None):
        self.remote = remote            # (address, port) of the peer
        self.bytes = 0
        self.sha = hashlib.sha256()
        self.started = time.monotonic()

    def update(self, view):
        self.bytes += len(view)
        self.sha.update(view)

    def as_dict(self, app: str) -> dict:
        record = {"event": "closed", "app": app, "bytes": self.bytes, "sha256": self.sha.hexdigest(),
                  "seconds": round(time.monotonic() - self.started, 6)}
        if self.remote:
            record["address"], record["port"] = self.remote
        return record


_print_lock = threading.Lock()


def emit(line: str, stream=None):
    with _print_lock:
        print(line, file=stream or sys.stdout, flush=True)


def emit_json(record: dict):
    emit(json.dumps(record, sort_keys=True))


def accept_loop(listener, handle, stop: threading.Event | None = None, on_accept=None):
    """Accept connections until `stop` is set or the stack stops, running
    `handle(conn)` for each on its own thread; `on_accept(conn)` first (the
    "Accepted connection from ..." line)."""
    from misdtcp.api import StackError

    while stop is None or not stop.is_set():
        try:
            conn, _ = listener.accept(timeout=0.2)
        except TimeoutError:
            continue
        except (StackError, OSError):
            return                      # the stack stopped (or failed): nothing more to serve
        if on_accept is not None:
            on_accept(conn)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
