"""Where `serve` and `client` write, and in which shape: text lines for
people, JSON lines (-J/--json), or iperf3's --json-stream events.  One lock,
so lines from the app threads and the reporter never interleave."""
from __future__ import annotations

import email.utils
import json
import os
import sys
import threading
import time

from misdtcp import __version__

TEXT, JSON, JSON_STREAM = "text", "json", "json-stream"


def iperf3_timestamp() -> dict:
    now = time.time()
    return {"time": email.utils.formatdate(now, usegmt=True), "timesecs": int(now)}


def system_info() -> str:
    u = os.uname()
    return f"{u.sysname} {u.nodename} {u.release} {u.version} {u.machine}"


class Output:
    def __init__(self, mode: str = TEXT, logfile: str | None = None, stream=None):
        self.mode = mode
        self.lock = threading.Lock()
        self._own = None
        if logfile:
            try:
                self._own = open(logfile, "a", buffering=1)
            except OSError as exc:
                from misdtcp.cli.errors import UsageError
                raise UsageError(f"cannot write the log file {logfile}: {exc.strerror}") from None
        self.stream = self._own or stream or sys.stdout

    def text(self, line: str) -> None:
        """A line for people (text mode only)."""
        if self.mode == TEXT:
            self._write(line)

    def record(self, record: dict) -> None:
        """A JSON line (-J/--json mode only)."""
        if self.mode == JSON:
            self._write(json.dumps(record, sort_keys=True))

    def event(self, name: str, data: dict) -> None:
        """An iperf3 --json-stream event (that mode only)."""
        if self.mode == JSON_STREAM:
            self._write(json.dumps({"event": name, "data": data}))

    def message(self, text: str) -> None:
        """Something the app says, in whatever shape the mode has."""
        if self.mode == TEXT:
            self._write(text)
        elif self.mode == JSON:
            self.record({"event": "app", "message": text})

    def accepted(self, conn, local_port: int) -> None:
        """A new connection, as iperf3 announces it."""
        host, port = conn.remote or ("?", 0)
        self.text(f"Accepted connection from {host}, port {port}")
        self.record({"event": "accepted", "address": host, "port": port, "local_port": local_port})
        self.event("start", {
            "version": f"misdtcp {__version__}", "system_info": system_info(),
            "timestamp": iperf3_timestamp(),
            "accepted_connection": {"host": host, "port": port},
            "connected": [{"socket": conn.handle,
                           "local_host": conn.local[0] if conn.local else conn.stack.address, "local_port": local_port,
                           "remote_host": host, "remote_port": port}]})

    def _write(self, line: str) -> None:
        with self.lock:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
