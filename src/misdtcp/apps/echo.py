"""Echo (RFC 862): send back what arrives.

Back-pressure: the app stops reading while what it owes the peer is more
than it may buffer, so a peer that does not read sees our window close and
memory stays bounded by the send and receive buffers.
"""
from __future__ import annotations

import threading

import time

from misdtcp.apps.common import ConnectionReport, accept_loop

DEFAULT_PORT = 7


def serve_connection(conn, *, report, max_owed: int):
    summary = ConnectionReport(conn.remote)
    try:
        while True:
            while conn.unsent() > max_owed:
                # the peer is not reading our echo: stop reading its data
                conn.stack.check()
                if conn.reset_reason is not None or conn.closed:
                    raise ConnectionError("connection gone")
                time.sleep(0.001)
            view = conn.recv_view(max_bytes=max(4096, max_owed // 2))
            if not len(view):
                break
            summary.update(view)
            conn.sendall(view)
            conn.release(view)
        conn.shutdown()
        deadline = time.monotonic() + 30
        while conn.unsent() > 0 and not conn.closed and time.monotonic() < deadline:
            time.sleep(0.001)
    except ConnectionError:
        pass
    finally:
        conn.close()
    if report is not None:
        report(summary.as_dict("echo"))
    return summary


def serve(stack, port: int = DEFAULT_PORT, *, report=None, stop: threading.Event | None = None,
          on_accept=None):
    """Serve until `stop` is set; `report(dict)` is called for every closed connection."""
    max_owed = stack.sndbuf // 2
    accept_loop(stack.listen(port), lambda conn: serve_connection(conn, report=report, max_owed=max_owed),
                stop, on_accept)
