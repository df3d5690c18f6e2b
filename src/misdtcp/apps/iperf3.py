"""An iperf3 server (the protocol of esnet/iperf 3.x, checked with the 3.12
client): test after test, TCP, -P 1..N, -R, --bidir, -t, -l, -J.

Control connection: cookie (37 bytes), then state bytes from the server,
JSON messages as a 4-byte big-endian length and the text.  Data connections
start with the same cookie.  The client always ends the test (TEST_END);
results are exchanged, then DISPLAY_RESULTS / IPERF_DONE.
"""
from __future__ import annotations

import json
import os
import struct
import threading
import time

from misdtcp.api import StackError
from misdtcp.apps.common import emit, recv_exact

DEFAULT_PORT = 5201
COOKIE_SIZE = 37
TEST_START, TEST_RUNNING, TEST_END = 1, 2, 4
PARAM_EXCHANGE, CREATE_STREAMS, SERVER_TERMINATE, CLIENT_TERMINATE = 9, 10, 11, 12
EXCHANGE_RESULTS, DISPLAY_RESULTS, IPERF_DONE = 13, 14, 16
ACCESS_DENIED, SERVER_ERROR = -1, -2


def _state(conn, value: int):
    conn.sendall(struct.pack("!b", value))


def _read_state(conn, timeout=None) -> int:
    return struct.unpack("!b", recv_exact(conn, 1, timeout))[0]


def _send_json(conn, obj):
    data = json.dumps(obj).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _recv_json(conn, timeout=None):
    n = struct.unpack("!I", recv_exact(conn, 4, timeout))[0]
    if n > 1 << 20:
        raise ConnectionError(f"iperf3 JSON message of {n} bytes is implausible")
    return json.loads(recv_exact(conn, n, timeout))


class Stream:
    def __init__(self, conn, sid: int, sender: bool, block: int):
        self.conn = conn
        self.id = sid
        self.sender = sender          # the server sends on this stream (-R / --bidir)
        self.block = block
        self.bytes = 0
        self.start = time.monotonic()
        self.end = None
        self.thread = None

    def run(self, stop: threading.Event):
        try:
            if self.sender:
                payload = memoryview(os.urandom(self.block))
                while not stop.is_set():
                    self.conn.sendall(payload, timeout=1.0)
                    self.bytes += len(payload)
            else:
                while True:
                    view = self.conn.recv_view()
                    if not len(view):
                        break
                    self.bytes += len(view)
                    self.conn.release(view)
        except (ConnectionError, TimeoutError, OSError, StackError):
            pass
        finally:
            self.end = time.monotonic()

    def result(self, retransmits: int):
        """iperf3's per-stream result; `retransmits` is -1 (unknown) for a
        stream we receive on, as iperf3's own server reports it."""
        return {"id": self.id, "bytes": self.bytes, "retransmits": retransmits if self.sender else -1,
                "jitter": 0, "errors": 0,
                "packets": 0, "start_time": 0, "end_time": round((self.end or time.monotonic()) - self.start, 6)}


class Iperf3Server:
    """`log(text)` gets iperf3's lines; `on_accept(conn)` each control
    connection (the "Accepted connection from ..." line); `on_test_end(ok)`
    each test's end (`misdtcp serve -1` stops there)."""

    def __init__(self, stack, port: int = DEFAULT_PORT, *, log=emit, on_accept=None, on_test_end=None):
        self.stack = stack
        self.port = port
        self.log = log
        self.on_accept = on_accept
        self.on_test_end = on_test_end
        self.listener = stack.listen(port)
        self.tests = 0
        self.busy = threading.Lock()
        self.pending_streams: dict[bytes, list] = {}      # cookie -> [(accept order, conn)]
        self.cond = threading.Condition()

    def serve(self, stop: threading.Event | None = None):
        accepted = 0
        while stop is None or not stop.is_set():
            try:
                conn, _ = self.listener.accept(timeout=0.2)
            except TimeoutError:
                continue
            except (StackError, OSError):
                return                  # the stack stopped (or failed)
            accepted += 1
            threading.Thread(target=self._route, args=(conn, accepted), daemon=True).start()

    def _route(self, conn, order: int = 0):
        """A new connection is a control connection or a data stream of the
        running test: both begin with the cookie.  `order`: its place in the
        accept order, which is the order the client opened its streams in
        (each thread reads its cookie when it gets to run: that order is the
        scheduler's, and with --bidir the role of each stream depends on it)."""
        try:
            cookie = recv_exact(conn, COOKIE_SIZE, timeout=10)
        except (ConnectionError, TimeoutError):
            conn.close()
            return
        with self.cond:
            if cookie in self.pending_streams:
                self.pending_streams[cookie].append((order, conn))
                self.cond.notify_all()
                return
        if not self.busy.acquire(blocking=False):
            try:
                _state(conn, ACCESS_DENIED)
            finally:
                conn.close()
            return
        if self.on_accept is not None:
            self.on_accept(conn)
        ok = False
        try:
            self._test(conn, cookie)
            ok = True
        except (ConnectionError, TimeoutError, ValueError, OSError, StackError) as exc:
            self.log(f"iperf3: test ended abnormally: {exc}")
        finally:
            with self.cond:
                self.pending_streams.pop(cookie, None)
            self.busy.release()
            conn.close()
            if self.on_test_end is not None:
                self.on_test_end(ok)

    def streams_of(self, cookie: bytes) -> list:
        """The data streams of test `cookie` that arrived so far, in the
        order the client opened them."""
        with self.cond:
            return [conn for _, conn in sorted(self.pending_streams.get(cookie, []), key=lambda entry: entry[0])]

    def _test(self, ctrl, cookie):
        self.tests += 1
        _state(ctrl, PARAM_EXCHANGE)
        params = _recv_json(ctrl, timeout=10)
        if not params.get("tcp", True) or params.get("udp") or params.get("sctp"):
            _state(ctrl, SERVER_ERROR)
            ctrl.sendall(struct.pack("!ii", 1, 0))
            raise ValueError("only TCP tests are supported")
        parallel = int(params.get("parallel", 1))
        reverse = bool(params.get("reverse"))
        bidir = bool(params.get("bidirectional"))
        block = int(params.get("len", 128 * 1024)) or 128 * 1024
        count = parallel * (2 if bidir else 1)
        with self.cond:
            self.pending_streams[cookie] = []
        _state(ctrl, CREATE_STREAMS)
        deadline = time.monotonic() + 10
        with self.cond:
            while len(self.pending_streams[cookie]) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(self.pending_streams[cookie])} of {count} streams arrived")
                self.cond.wait(0.1)
            conns = self.streams_of(cookie)
        streams = []
        for i, c in enumerate(conns):
            sid = 1 if i == 0 else i + 2           # iperf3 numbers streams 1, 3, 4, 5, ...
            if bidir:
                sender = i >= parallel                # the first P streams carry client -> server
            else:
                sender = reverse
            streams.append(Stream(c, sid, sender, block))
            if c.remote:
                self.log(f"[{sid:3d}] local {c.local[0] if c.local else self.stack.address} port {self.port} connected to "
                         f"{c.remote[0]} port {c.remote[1]}")
        stop = threading.Event()
        _state(ctrl, TEST_START)
        _state(ctrl, TEST_RUNNING)
        t0 = time.monotonic()
        cpu0 = os.times()
        for s in streams:
            s.start = time.monotonic()
            s.thread = threading.Thread(target=s.run, args=(stop,), daemon=True)
            s.thread.start()
        # the client ends the test
        state = _read_state(ctrl, timeout=float(params.get("time", 10)) + 60)
        stop.set()
        if state not in (TEST_END, CLIENT_TERMINATE):
            raise ValueError(f"unexpected iperf3 state {state} from the client")
        if state == CLIENT_TERMINATE:
            raise ConnectionError("client terminated the test")
        for s in streams:
            if s.sender:
                s.thread.join(2.0)
                s.end = s.end or time.monotonic()
                # As iperf3's own server does, the streams we send on end at
                # TEST_END: the client drains them with blocking reads of whole
                # blocks after the test and would wait forever for the rest of
                # a block its earlier non-blocking reads had cut.
                try:
                    s.conn.shutdown()
                except (ConnectionError, OSError, StackError):
                    pass
        elapsed = time.monotonic() - t0
        cpu1 = os.times()
        _state(ctrl, EXCHANGE_RESULTS)
        _recv_json(ctrl, timeout=10)
        user = (cpu1.user - cpu0.user) + (cpu1.children_user - cpu0.children_user)
        system = (cpu1.system - cpu0.system) + (cpu1.children_system - cpu0.children_system)
        for s in streams:
            if not s.sender and s.end is None:
                s.end = time.monotonic()
        retransmits = self._retransmits(streams)
        results = {
            "cpu_util_total": round(100 * (user + system) / max(elapsed, 1e-9), 3),
            "cpu_util_user": round(100 * user / max(elapsed, 1e-9), 3),
            "cpu_util_system": round(100 * system / max(elapsed, 1e-9), 3),
            "sender_has_retransmits": 1 if any(s.sender for s in streams) else 0,
            "congestion_used": self.stack.congestion_control,
            "streams": [s.result(retransmits.get(s.id, 0)) for s in streams],
        }
        _send_json(ctrl, results)
        _state(ctrl, DISPLAY_RESULTS)
        try:
            _read_state(ctrl, timeout=10)        # IPERF_DONE
        except (ConnectionError, TimeoutError):
            pass
        total = sum(s.bytes for s in streams)
        self.log(f"iperf3: test {self.tests}: {count} stream(s){' reverse' if reverse else ''}"
                 f"{' bidir' if bidir else ''}, {total} bytes in {elapsed:.2f} s, "
                 f"{total * 8 / max(elapsed, 1e-9) / 1e9:.2f} Gbit/s")
        for s in streams:
            s.conn.close()

    def _retransmits(self, streams) -> dict:
        """Each sending stream's retransmissions, by stream id."""
        if not any(s.sender for s in streams):
            return {}
        by_handle = connection_retransmits(self.stack)
        return {s.id: by_handle.get(s.conn.handle, 0) for s in streams}


def connection_retransmits(stack) -> dict:
    """Retransmissions by connection handle, from a connection table
    published after the streams stopped sending (so none is missed)."""
    try:
        _, rows = stack.connection_table(fresh=True)
    except TimeoutError:
        _, rows = stack.connection_table()
    return {row["handle"]: row["retransmits"] for row in rows}


def serve(stack, port: int = DEFAULT_PORT, *, stop: threading.Event | None = None, log=emit, on_accept=None,
          on_test_end=None):
    Iperf3Server(stack, port, log=log, on_accept=on_accept, on_test_end=on_test_end).serve(stop)
