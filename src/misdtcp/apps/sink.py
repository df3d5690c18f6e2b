"""Sink: accept connections and never read.

For watching flow control against a real peer: the receive buffer fills,
the advertised window closes, the peer's zero-window probes are answered
and its persist timer backs off (`misdtcp ss` shows Recv-Q at the buffer's
size and a zero rcv_wnd).  A connection stays until the peer closes or
resets it, or the app is stopped; what arrived unread is reported.
"""
from __future__ import annotations

import threading

from misdtcp.api import StackError
from misdtcp.apps.common import accept_loop

DEFAULT_PORT = 9


def hold_connection(conn, *, report, stop: threading.Event | None = None):
    """Keep `conn` open without reading until the peer is done with it."""
    waited = threading.Event() if stop is None else stop
    try:
        while not waited.is_set():
            if conn.peer_closed_at is not None or conn.reset_reason is not None or conn.closed:
                break
            conn.stack.check()
            waited.wait(0.05)
    except StackError:
        pass                    # the stack stopped: nothing more to hold
    unread = max(0, conn.readable_end() - conn.consumed) if not conn.closed else 0
    conn.close()
    if report is not None:
        record = {"event": "closed", "app": "sink", "bytes": 0, "unread": unread}
        if conn.remote:
            record["address"], record["port"] = conn.remote
        report(record)


def serve(stack, port: int = DEFAULT_PORT, *, report=None, stop: threading.Event | None = None, on_accept=None):
    """Serve until `stop` is set; `report(dict)` is called for every closed connection."""
    accept_loop(stack.listen(port), lambda conn: hold_connection(conn, report=report, stop=stop), stop, on_accept)
