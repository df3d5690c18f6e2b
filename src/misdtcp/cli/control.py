"""The control socket a running `misdtcp serve` answers on, and the query
`misdtcp ss` makes.

It is an abstract Unix socket named after the TUN, ``@misdtcp/<tun>``:
abstract names belong to the network namespace, so `misdtcp ss` run in the
namespace of a `serve` finds it, as `ss` shows that namespace's sockets, and
two namespaces each with their own misd0 do not collide.  Nothing is left
in the file system.

Protocol: one request line of JSON (``{"query": "connections"}``), one
reply line of JSON, then the server closes.  Replies are read-only views of
shared memory: no request can change the stack.
"""
from __future__ import annotations

import json
import socket
import threading
import time

from misdtcp._tcpcore import STATE_NAMES

MAX_REQUEST = 4096


def control_address(tun: str) -> str:
    return f"\0misdtcp/{tun}"


def table(stack) -> dict:
    """The connection table of `stack`, as `misdtcp ss` shows it."""
    published_ns, rows = stack.connection_table()
    connections = []
    for row in rows:
        workers = row["workers"]
        copied = sum(w["bytes_copied"] for w in workers)
        segments = sum(w["segments_sent"] for w in workers)
        connections.append({
            "state": STATE_NAMES[row["state"]],
            "local": {"address": stack.address6 if row["raddr6"] else stack.address, "port": row["lport"]},
            "peer": {"address": (socket.inet_ntop(socket.AF_INET6, row["raddr6"]) if row["raddr6"]
                                 else socket.inet_ntoa(row["raddr"].to_bytes(4, "big"))), "port": row["rport"]},
            "recv_q": max(0, row["rcv_nxt_off"] - row["consumed_off"]),
            "send_q": max(0, row["snd_end_off"] - row["snd_una_off"]),
            "mss": row["snd_mss"], "cwnd_bytes": row["cwnd"], "ssthresh_bytes": row["ssthresh"],
            "snd_wnd": row["snd_wnd"], "rcv_wnd": row["rcv_wnd"],
            "srtt_ms": row["srtt_ns"] / 1e6, "rttvar_ms": row["rttvar_ns"] / 1e6, "rto_ms": row["rto_ns"] / 1e6,
            "retransmits": row["retransmits"],
            "bytes_received": row["bytes_in"], "bytes_sent": row["bytes_out"],
            "segs_in": row["segs_in"], "segs_out": row["segs_out"],
            "workers": [{"worker": i, "bytes_copied": w["bytes_copied"],
                         "copied_share": round(w["bytes_copied"] / copied, 4) if copied else 0.0,
                         "segments_sent": w["segments_sent"],
                         "sent_share": round(w["segments_sent"] / segments, 4) if segments else 0.0}
                        for i, w in enumerate(workers)],
        })
    with stack.lock:
        listening = sorted(stack._listeners)
    age = (time.monotonic_ns() - published_ns) / 1e6 if published_ns else None
    addresses = [stack.address] + ([stack.address6] if stack.address6 else [])
    return {"address": stack.address, "address6": stack.address6, "workers": stack.workers,
            "strategy": stack.strategy,
            "published_ms_ago": round(age, 1) if age is not None else None,
            "listening": [{"address": a, "port": p} for p in listening for a in addresses],
            "connections": connections}


class ControlServer:
    """Answers `misdtcp ss` on @misdtcp/<tun> from a thread, until stopped."""

    def __init__(self, stack, tun: str):
        self.stack = stack
        self.tun = tun
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(control_address(tun))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="misdtcp-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with client:
                client.settimeout(2.0)
                try:
                    request = self._read_line(client)
                    reply = self._answer(json.loads(request) if request else {})
                except (OSError, ValueError) as exc:
                    reply = {"error": f"bad request: {exc}"}
                try:
                    client.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    @staticmethod
    def _read_line(client) -> bytes:
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = client.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0]

    def _answer(self, request: dict) -> dict:
        if request.get("query", "connections") != "connections":
            return {"error": f"unknown query {request.get('query')!r}"}
        if self.stack.failure:
            return {"error": self.stack.failure}
        return table(self.stack)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(1.0)


class NoServer(Exception):
    """No `misdtcp serve` answers for that TUN in this network namespace."""


def query(tun: str, timeout: float = 5.0) -> dict:
    """Ask the `misdtcp serve` on `tun` for its connection table."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(control_address(tun))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoServer(tun) from None
        sock.sendall(b'{"query": "connections"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
