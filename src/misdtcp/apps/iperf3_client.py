"""An iperf3 client (the protocol of esnet/iperf 3.x, checked against the
3.12 server; docs/DESIGN.md, "iperf3 compatibility"): misdtcp sends -- or
with -R receives -- against a stock `iperf3 -s`, so the MISD send path is
measured against a real receiver.

The client drives the test: cookie, parameters (JSON), CREATE_STREAMS ->
one data connection per stream, each starting with the cookie; TEST_START,
TEST_RUNNING -> data for `seconds`; the client sends TEST_END, then both
sides exchange their results (JSON), DISPLAY_RESULTS -> IPERF_DONE.

`run()` returns the test in iperf3's -J schema: start, intervals, and end
with streams, sum_sent and sum_received -- the sender's bytes and the
receiver's, each as the side that counted them reported it.
"""
from __future__ import annotations

import os
import secrets
import threading
import time

from misdtcp import __version__
from misdtcp.api import StackError
from misdtcp.apps.common import recv_exact
from misdtcp.apps.iperf3 import (ACCESS_DENIED, CREATE_STREAMS, DISPLAY_RESULTS, EXCHANGE_RESULTS, IPERF_DONE,
                                 PARAM_EXCHANGE, SERVER_ERROR, TEST_END, TEST_RUNNING, TEST_START, _read_state,
                                 _recv_json, _send_json, _state, connection_retransmits)

COOKIE_CHARS = "abcdefghijklmnopqrstuvwxyz234567"
ACK_WAIT = 5.0          # seconds a sender waits for its data to be acknowledged before TEST_END
LINGER = 5.0            # seconds to wait for IPERF_DONE to be acknowledged before the stack goes
EOF_WAIT = 10.0         # -R: seconds to wait for the server to end its streams after TEST_END


class Iperf3Error(Exception):
    """The test could not be run (one sentence)."""


def make_cookie() -> bytes:
    return ("".join(secrets.choice(COOKIE_CHARS) for _ in range(36)) + "\0").encode()


class _Stream:
    def __init__(self, conn, sid: int, sender: bool, block: int):
        self.conn = conn
        self.id = sid
        self.sender = sender
        self.block = block
        self.bytes = 0
        self.error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            if self.sender:
                payload = memoryview(os.urandom(self.block))
                while not stop.is_set():
                    # count what the stack took, write by write: a block
                    # cut short by the timeout was still partly sent, and
                    # the server counts those bytes too
                    sent = 0
                    while sent < len(payload):
                        n = self.conn.send(payload[sent:], timeout=1.0)
                        sent += n
                        self.bytes += n
            else:
                while not stop.is_set():
                    try:
                        view = self.conn.recv_view(timeout=0.1)
                    except TimeoutError:
                        continue
                    if not len(view):
                        break
                    self.bytes += len(view)
                    self.conn.release(view)
        except TimeoutError:
            pass                        # the receiver stopped reading at the end of the test
        except (ConnectionError, OSError, StackError) as exc:
            self.error = exc


class Iperf3Client:
    def __init__(self, stack, host: str, port: int = 5201, *, seconds: float = 10.0, parallel: int = 1,
                 reverse: bool = False, length: int = 128 * 1024, interval: float = 1.0,
                 connect_timeout: float = 10.0, on_interval=None, log=None):
        self.stack = stack
        self.host = host
        self.port = port
        self.seconds = seconds
        self.parallel = parallel
        self.reverse = reverse
        self.length = length
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.on_interval = on_interval or (lambda interval: None)
        self.log = log or (lambda text: None)

    def _connect(self):
        try:
            return self.stack.connect(self.host, self.port, timeout=self.connect_timeout)
        except ConnectionRefusedError:
            raise Iperf3Error(f"cannot connect to the iperf3 server at {self.host} port {self.port} "
                              f"(connection refused)") from None
        except TimeoutError:
            raise Iperf3Error(f"cannot connect to the iperf3 server at {self.host} port {self.port} "
                              f"(no answer within {self.connect_timeout:g} s)") from None

    def _expect(self, ctrl, wanted: int, timeout: float) -> None:
        state = _read_state(ctrl, timeout)
        if state == wanted:
            return
        if state == ACCESS_DENIED:
            raise Iperf3Error("the iperf3 server is busy running a test")
        if state == SERVER_ERROR:
            code = int.from_bytes(recv_exact(ctrl, 4, timeout), "big", signed=True)
            raise Iperf3Error(f"the iperf3 server reported error {code}")
        raise Iperf3Error(f"the iperf3 server sent state {state} where {wanted} was expected")

    def run(self) -> dict:
        cookie = make_cookie()
        ctrl = self._connect()
        self.log(f"Connecting to host {self.host}, port {self.port}")
        streams: list[_Stream] = []
        stop = threading.Event()
        try:
            ctrl.sendall(cookie)
            self._expect(ctrl, PARAM_EXCHANGE, 10)
            params = {"tcp": True, "omit": 0, "time": self.seconds, "num": 0, "blockcount": 0,
                      "parallel": self.parallel, "len": self.length, "pacing_timer": 1000,
                      "client_version": "3.12"}
            if self.reverse:
                params["reverse"] = True
            _send_json(ctrl, params)
            self._expect(ctrl, CREATE_STREAMS, 10)
            for i in range(self.parallel):
                conn = self._connect()
                conn.sendall(cookie)
                sid = 1 if i == 0 else i + 2                   # iperf3 numbers streams 1, 3, 4, ...
                streams.append(_Stream(conn, sid, not self.reverse, self.length))
                self.log(f"[{sid:3d}] local {conn.local[0]} port {conn.local[1]} connected to "
                         f"{conn.remote[0]} port {conn.remote[1]}")
            self.log("[ ID] Interval           Transfer     Bitrate")
            self._expect(ctrl, TEST_START, 10)
            self._expect(ctrl, TEST_RUNNING, 10)
            started_wall = time.time()
            t0 = time.monotonic()
            cpu0 = os.times()
            threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in streams]
            for t in threads:
                t.start()
            intervals = self._intervals(streams, t0)
            elapsed = time.monotonic() - t0
            if not self.reverse:
                stop.set()
                for t in threads:
                    t.join(5.0)
                # what we count as sent should have reached the server before it stops counting
                deadline = time.monotonic() + ACK_WAIT
                while any(s.conn.unsent() > 0 for s in streams) and time.monotonic() < deadline:
                    time.sleep(0.005)
            cpu1 = os.times()
            _state(ctrl, TEST_END)
            self._expect(ctrl, EXCHANGE_RESULTS, 30)
            if self.reverse:
                # the server ends its streams at TEST_END (as iperf3's does):
                # read up to that end of stream, so both sides count the same
                # bytes; bounded, in case a server does not
                deadline = time.monotonic() + EOF_WAIT
                for t in threads:
                    t.join(max(0.0, deadline - time.monotonic()))
                stop.set()
                for t in threads:
                    t.join(5.0)
            retransmits = self._retransmits(streams)
            user, system = cpu1.user - cpu0.user, cpu1.system - cpu0.system
            ours = {
                "cpu_util_total": 100 * (user + system) / max(elapsed, 1e-9),
                "cpu_util_user": 100 * user / max(elapsed, 1e-9),
                "cpu_util_system": 100 * system / max(elapsed, 1e-9),
                "sender_has_retransmits": 0 if self.reverse else 1,
                "congestion_used": self.stack.congestion_control,
                "streams": [{"id": s.id, "bytes": s.bytes,
                             "retransmits": -1 if self.reverse else retransmits.get(s.id, 0),
                             "jitter": 0, "errors": 0, "packets": 0, "start_time": 0, "end_time": elapsed}
                            for s in streams]}
            _send_json(ctrl, ours)
            theirs = _recv_json(ctrl, timeout=30)
            self._expect(ctrl, DISPLAY_RESULTS, 30)
            for s in streams:                # as iperf3's client: the streams first, then IPERF_DONE
                s.conn.close()
            _state(ctrl, IPERF_DONE)
            # this process holds the whole TCP stack: linger until the server
            # has IPERF_DONE, or it would wait for it forever
            deadline = time.monotonic() + LINGER
            while ctrl.unsent() > 0 and not ctrl.closed and time.monotonic() < deadline:
                time.sleep(0.002)
        except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
            raise Iperf3Error(f"the iperf3 test failed: {exc}") from None
        finally:
            stop.set()
            for s in streams:
                s.conn.close()
            ctrl.close()
        return self._result(cookie, streams, intervals, ours, theirs, elapsed, started_wall)

    def _intervals(self, streams, t0) -> list[dict]:
        """Wait out the test, recording every interval's bytes per stream."""
        intervals = []
        last = {s.id: 0 for s in streams}
        last_t = 0.0
        step = self.interval or self.seconds
        target = min(step, self.seconds)
        while True:
            now_t = time.monotonic() - t0
            if now_t < target:
                time.sleep(target - now_t)
                continue
            seconds = target - last_t
            rows = []
            for s in streams:
                n = s.bytes - last[s.id]
                last[s.id] = s.bytes
                rows.append({"socket": s.id, "start": last_t, "end": target, "seconds": seconds, "bytes": n,
                             "bits_per_second": n * 8 / seconds if seconds > 0 else 0.0, "omitted": False,
                             "sender": s.sender})
            total = sum(r["bytes"] for r in rows)
            interval = {"streams": rows, "sum": {"start": last_t, "end": target, "seconds": seconds, "bytes": total,
                                                 "bits_per_second": total * 8 / seconds if seconds > 0 else 0.0,
                                                 "omitted": False, "sender": not self.reverse}}
            intervals.append(interval)
            if self.interval:
                self.on_interval(interval)
            last_t = target
            if target >= self.seconds:
                return intervals
            target = min(target + step, self.seconds)

    def _retransmits(self, streams) -> dict:
        """Retransmissions per stream, from the stack's connection table."""
        if self.reverse:
            return {}
        by_handle = connection_retransmits(self.stack)
        return {s.id: by_handle.get(s.conn.handle, 0) for s in streams}

    def _result(self, cookie, streams, intervals, ours, theirs, elapsed, started_wall) -> dict:
        server = {s["id"]: s for s in theirs.get("streams", [])}

        def side(n, sender, retransmits=None):
            d = {"start": 0, "end": elapsed, "seconds": elapsed, "bytes": n,
                 "bits_per_second": n * 8 / elapsed if elapsed > 0 else 0.0, "sender": sender}
            if retransmits is not None:
                d["retransmits"] = retransmits
            return d
        per_stream = []
        sent_total = received_total = rexmit_total = 0
        for ours_s, s in zip(ours["streams"], streams):
            theirs_bytes = int(server.get(s.id, {}).get("bytes", 0))
            sent = s.bytes if not self.reverse else theirs_bytes
            received = theirs_bytes if not self.reverse else s.bytes
            if not self.reverse:
                rexmit = ours_s["retransmits"]
            else:
                rexmit = int(server.get(s.id, {}).get("retransmits", 0))
                rexmit = rexmit if 0 <= rexmit < 1 << 63 else 0     # -1 ("unknown") comes as 2^64 - 1
            sent_total += sent
            received_total += received
            rexmit_total += rexmit
            per_stream.append({"sender": dict(side(sent, not self.reverse, rexmit), socket=s.id),
                               "receiver": dict(side(received, not self.reverse), socket=s.id)})
        local = {"host_total": ours["cpu_util_total"], "host_user": ours["cpu_util_user"],
                 "host_system": ours["cpu_util_system"],
                 "remote_total": theirs.get("cpu_util_total", 0), "remote_user": theirs.get("cpu_util_user", 0),
                 "remote_system": theirs.get("cpu_util_system", 0)}
        return {
            "start": {
                "connected": [{"socket": s.id, "local_host": s.conn.local[0], "local_port": s.conn.local[1],
                               "remote_host": s.conn.remote[0], "remote_port": s.conn.remote[1]} for s in streams],
                "version": f"misdtcp {__version__}",
                "timestamp": {"time": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(started_wall)),
                              "timesecs": int(started_wall)},
                "connecting_to": {"host": self.host, "port": self.port},
                "cookie": cookie[:-1].decode(),
                "test_start": {"protocol": "TCP", "num_streams": self.parallel, "blksize": self.length, "omit": 0,
                               "duration": self.seconds, "bytes": 0, "blocks": 0,
                               "reverse": int(self.reverse), "tos": 0},
            },
            "intervals": intervals,
            "end": {
                "streams": per_stream,
                "sum_sent": side(sent_total, True, rexmit_total),
                "sum_received": side(received_total, True),
                "cpu_utilization_percent": local,
                "sender_tcp_congestion": self.stack.congestion_control if not self.reverse else theirs.get("congestion_used", "cubic"),
                "receiver_tcp_congestion": theirs.get("congestion_used", "cubic") if not self.reverse else self.stack.congestion_control,
            },
        }
