"""Discard (RFC 863): read and throw away; optionally report what was read."""
from __future__ import annotations

import threading

from misdtcp.apps.common import ConnectionReport, accept_loop

DEFAULT_PORT = 9


def serve_connection(conn, *, report, hash_data: bool = True):
    summary = ConnectionReport(conn.remote)
    try:
        while True:
            view = conn.recv_view()
            if not len(view):
                break
            if hash_data:
                summary.update(view)
            else:
                summary.bytes += len(view)
            conn.release(view)
    except ConnectionError:
        pass
    finally:
        conn.close()
    if report is not None:
        report(summary.as_dict("discard"))
    return summary


def serve(stack, port: int = DEFAULT_PORT, *, report=None, stop: threading.Event | None = None,
          on_accept=None):
    """Serve until `stop` is set; `report(dict)` is called for every closed connection."""
    accept_loop(stack.listen(port), lambda conn: serve_connection(conn, report=report), stop, on_accept)
