"""The Python API's entry point: a `Stack` attached to a device.

    stack = Stack(Tun("misd0", address="10.77.0.1/24"), address="10.77.0.2", workers=2)
    with stack:
        listener = stack.listen(5201)
        conn, (host, port) = listener.accept()
        while view := conn.recv_view():
            consume(view)
            conn.release(view)

Processes: the application (this process, where the API runs), and the
runtime's processes (runtime/live.py): the sequencer and N pinned workers,
or one process for the `single` strategy.  Requests travel to the sequencer
through the request queue; lifecycle events come back from worker 0 through
the event queue, read by an event thread here that also watches the
runtime's processes; receive readiness is the minimum copy progress over
workers, read straight from shared memory.  A connection that waits on its
eventfd arms an interest and the event thread writes the eventfd when a
worker posts that it is met (docs/DESIGN.md, "Readiness").
"""
from __future__ import annotations

import errno
import ipaddress
import os
import threading
import time
from collections import deque

from misdtcp._tcpcore import RESET_NAMES, CoreConfigError, TcpCore
from misdtcp.api.connection import Connection, Listener, Readiness, event_peer
from misdtcp.api.errors import StackError, address_in_use
from misdtcp.frameio.faults import FaultConfigError, FaultInjector
from misdtcp.runtime import strategies
from misdtcp.runtime.areas import pow2
from misdtcp.runtime.live import CaptureError, LiveConfig, LiveRuntime
from misdtcp.runtime.placement import PlacementError
from misdtcp.runtime.vocabulary import Event, Request

STRATEGIES = strategies.LIVE_STRATEGIES


class Stack:
    """misdtcp attached to a device.  Start with `start()` or `with stack:`."""

    def __init__(self, device, *, address: str = "10.77.0.2", address6: str | None = None, workers: int = 1,
                 strategy: str = "misd", cpus=None, stripe: int = 16384,
                 rcvbuf: int = 4 << 20, sndbuf: int = 4 << 20, max_connections: int = 64,
                 offload: bool = True, mtu: int = 1500, faults: dict | None = None,
                 pcap: str | None = None, pcap_snaplen: int = 262144, digest_every: int = 0, recover: bool = True,
                 ring_size: int = 32 << 20, huge_pages: bool = False, secret: int | None = None,
                 placement: str = "auto", event_queue: int = 8192, _debug_worker_config=None,
                 **core_options):
        """`address6`: the stack's IPv6 address (None: IPv4 only; a
        packet-ring device is IPv4 only); listeners take connections of both
        families, `connect` goes to either.
        `faults`: FaultInjector settings (drop, corrupt, duplicate, reorder,
        delay, delay_ms, seed) applied in both directions -- device->stack in
        the sequencer, stack->device in each worker (seeds derived from
        `seed`).  `pcap`: a file ('-': standard output) capturing both
        directions in time order, `pcap_snaplen` bytes of each frame.
        `huge_pages`: the log and the connection buffers on huge pages where
        the system offers them.  `recover`
        (misd): a worker that dies is replaced from its replica snapshot and
        replays the log from there; otherwise the stack stops with an error.
        `placement` (misd): "inline" runs replica 0 inside the sequencer,
        "separate" gives the sequencer a process of its own, "auto" picks
        inline when the workers leave no CPU free (runtime/placement.py).
        `event_queue`: lifecycle events (accepted, closed, ...) the queue to
        this process holds (a power of two); when it is full, worker 0
        waits for the event thread to make room.  `digest_every` (misd): the
        replicas compare digests of their state every that many frames, and
        a mismatch stops the stack (0: off).  `_debug_worker_config(w)`
        overrides core options of worker w: for tests of the divergence
        check only."""
        try:
            plan = strategies.get(strategy, live=True)
        except ValueError as exc:
            raise StackError(str(exc)) from None
        if not 1 <= workers <= 16:
            raise StackError(f"{workers} workers is outside 1..16")
        if event_queue < 2 or event_queue & (event_queue - 1):
            raise StackError(f"event_queue must be a power of two of at least 2, not {event_queue}")
        workers = plan.workers(workers)
        for value, name in ((rcvbuf, "rcvbuf"), (sndbuf, "sndbuf")):
            if value % 4096 or value < 16384:
                raise StackError(f"--{name} must be a multiple of 4096 and at least 16384, not {value}")
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise StackError(f"{address!r} is not an IPv4 address") from None
        if address6 is not None:
            try:
                address6 = str(ipaddress.IPv6Address(address6))
            except ValueError:
                raise StackError(f"{address6!r} is not an IPv6 address") from None
            if mtu < 1280:
                raise StackError(f"IPv6 needs an MTU of at least 1280, not {mtu} (or leave IPv6 off)")
            if hasattr(device, "packet_link"):
                # its link step answers ARP, not neighbour discovery
                raise StackError("a packet-ring device carries IPv4 only: leave address6 unset")
        if not 64 <= pcap_snaplen <= 262144:
            raise StackError(f"the capture snaplen must be between 64 and 262144, not {pcap_snaplen}")
        if faults:
            try:
                FaultInjector(**faults)
            except (FaultConfigError, TypeError, ValueError) as exc:
                raise StackError(str(exc)) from None
        core_config = dict(mss=mtu - 40, rcvbuf=rcvbuf, sndbuf=sndbuf, max_connections=max_connections,
                           gso_max=(65535 - 80) if offload else 0,
                           secret=secret if secret is not None else int.from_bytes(os.urandom(8), "little"),
                           **core_options)
        if address6 is not None:
            core_config["local_address6"] = address6
        try:
            TcpCore(address, **core_config)
        except CoreConfigError as exc:
            raise StackError(str(exc)) from None
        self.device = device
        self.address = address
        self.address6 = address6
        self.congestion_control = str(core_config.get("cc", "cubic"))   # the core's default
        self.workers = workers
        self.strategy = strategy
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.max_connections = max_connections
        self.offload = offload
        try:
            self.runtime = LiveRuntime(LiveConfig(
                address=address, strategy=strategy, workers=workers,
                cpus=list(cpus) if cpus else sorted(os.sched_getaffinity(0)), stripe=stripe,
                core_config=core_config, rcvbuf=rcvbuf, sndbuf=sndbuf, max_connections=max_connections,
                offload=offload, ring_data=pow2(ring_size, 1 << 20), huge_pages=huge_pages,
                faults=dict(faults) if faults else None, pcap=pcap, pcap_snaplen=pcap_snaplen,
                digest_every=digest_every, recover=recover, placement=placement, events_capacity=event_queue,
                debug_worker_config=_debug_worker_config))
        except PlacementError as exc:
            raise StackError(str(exc)) from None
        self.lock = threading.RLock()
        self._listeners: dict[int, Listener] = {}
        self._conns: dict[int, Connection] = {}
        self._connecting: dict[int, PendingConnect] = {}
        self._next_tag = 1
        self._failure: str | None = None
        self._later: deque = deque()     # requests the event thread makes, posted without waiting
        self._started = False
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Stack:
        if self._started:
            return self
        # a packet-ring device hands over its ring, a transmit socket per
        # worker and its MACs; a TUN its descriptor
        link = self.device.packet_link(self.workers) if hasattr(self.device, "packet_link") else None
        fd = self.device.fileno() if hasattr(self.device, "fileno") else int(self.device)
        try:
            self.runtime.start(fd, link)
        except CaptureError as exc:
            self.stop()
            raise StackError(str(exc)) from None
        except BaseException:
            self.stop()
            raise
        self._started = True
        self._dispatcher = threading.Thread(target=self._dispatch, name="misdtcp-events", daemon=True)
        self._dispatcher.start()
        return self

    def stop(self) -> None:
        """Stop every process and free every shared area.  Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self._failure is None:
            self._failure = "the stack was stopped"
        self.runtime.stop()
        if hasattr(self, "_dispatcher"):
            self._dispatcher.join(1.0)
        with self.lock:
            for conn in self._conns.values():
                conn.closed = True
                conn._readiness.signal()
            self._conns.clear()
            for listener in self._listeners.values():
                listener._readiness.signal()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- state for people and for the connections ------------------------------
    @property
    def failure(self) -> str | None:
        """Why the stack stopped (one sentence), or None while it runs."""
        return self._failure

    @property
    def stopping(self) -> bool:
        return self._stopping

    def check(self) -> None:
        """Raise StackError if the stack has stopped."""
        if self._failure:
            raise StackError(self._failure)

    def processes(self) -> dict[str, int]:
        """The runtime's processes by role ('forker', 'sequencer', 'worker 0', ...) and PID."""
        return self.runtime.processes()

    @property
    def placement(self) -> str:
        """Where the runtime runs replica 0: "inline" (in the sequencer) or "separate"."""
        return self.runtime.placement.name

    @property
    def recoveries(self) -> int:
        """Workers replaced from their replica snapshots so far."""
        return self.runtime.recoveries

    @property
    def incidents(self) -> list:
        """Every replacement so far (runtime/live.py Incident: role, pid,
        how it ended, the replacement's pid, the log position it replays
        from); str() of one is a sentence for a log."""
        return list(self.runtime.incidents)

    @property
    def progress(self):
        """The runtime's shared bookkeeping (copy progress, acknowledged offsets)."""
        return self.runtime.areas.view

    @property
    def receive_fd(self) -> int:
        return self.runtime.areas.receive.fileno()

    @property
    def send_fd(self) -> int:
        return self.runtime.areas.send.fileno()

    # -- failure detection and events ----------------------------------------------
    def _fail(self, message: str) -> None:
        with self.lock:
            if self._failure is None:
                self._failure = message
            for listener in self._listeners.values():
                listener._cond.notify_all()
                listener._readiness.signal()
            for conn in self._conns.values():
                conn._cond.notify_all()
                conn._readiness.signal()
            for pending in self._connecting.values():
                pending._done("the stack stopped")
            self._connecting.clear()

    def _dispatch(self) -> None:
        last_watch = 0.0
        events = self.runtime.areas.events
        while not self._stopping:
            events.wait(timeout=0.05)
            for message in events.drain():
                self._on_event(message.kind, message.handle, message.a, message.b, message.c)
            self._post_later()
            now = time.monotonic()
            if now - last_watch > 0.1 and not self._stopping:
                last_watch = now
                failure = self.runtime.watch()
                if failure:
                    self._fail(failure)
                    # a dead process means the stack cannot go on: stop the others
                    self.runtime.areas.view.request_stop()
                    return

    def _on_event(self, kind, handle, value, peer=0, lport=0) -> None:
        with self.lock:
            if kind == Event.READABLE or kind == Event.WRITABLE:
                # a readiness message: an interest the connection armed is met
                conn = self._conns.get(handle)
                if conn is not None:
                    conn._signal()
            elif kind == Event.ACCEPTED:
                value, remote, ipv6 = event_peer(value, peer, lport)
                conn = Connection(self, handle, remote, value if ipv6 else lport, ipv6)
                self._conns[handle] = conn
                listener = self._listeners.get(value)
                if listener is None:
                    # the event thread never waits on the request queue: a
                    # full one waits on the sequencer, which may wait on
                    # worker 0, which may wait on this thread for room
                    self._later.append((Request.ABORT, handle))
                    return
                listener._established(conn)
            elif kind == Event.CONNECTED:
                value, remote, ipv6 = event_peer(value, peer, lport)
                pending = self._connecting.pop(value, None)
                conn = Connection(self, handle, remote,
                                  (pending.local_port if pending is not None else None) if ipv6 else lport, ipv6)
                self._conns[handle] = conn
                if pending is not None:
                    pending._done(conn)
            elif kind == Event.CONNECT_FAILED:
                pending = self._connecting.pop(value, None)
                if pending is not None:
                    pending._done(RESET_NAMES.get(handle, "failed"))
            else:
                conn = self._conns.get(handle)
                if conn is None:
                    return
                if kind == Event.CLOSED:
                    del self._conns[handle]
                conn._on_event(kind, value)

    def _post_later(self) -> None:
        """Post the event thread's own requests, as far as the queue has room now."""
        while self._later:
            if not self.runtime.areas.requests.try_post(*self._later[0]):
                return
            self._later.popleft()
            self.runtime.wake()

    # -- requests ----------------------------------------------------------------
    def post(self, kind, handle=0, a=0, b=0, c=0, record=0, index=0) -> None:
        """Post a request to the core (through the sequencer) and wake it."""
        self.check()
        while self.runtime.areas.requests.post(kind, handle, a, b, c, timeout=0.1, record=record,
                                               index=index) != 0:
            self.check()
        self.runtime.wake()

    def listen(self, port: int, backlog: int = 128, timeout: float = 5.0) -> Listener:
        """Accept connections on `port`; returns once the stack listens (a
        SYN that arrives from now on finds the listener, as after
        listen(2)).  The backlog (connections not yet accepted) is capped at
        the connection table's size."""
        if not 1 <= port <= 65535:
            raise StackError(f"port {port} is outside 1..65535")
        backlog = max(1, min(backlog, self.max_connections))
        with self.lock:
            if port in self._listeners:
                raise address_in_use(port)
            listener = Listener(self, port)
            self._listeners[port] = listener
        self.post(Request.LISTEN, 0, port, backlog)
        self._wait_logged(timeout)
        listener.ready = True
        return listener

    def listening(self, port: int) -> bool:
        """A listener on `port` is in effect (its listen() returned)."""
        listener = self._listeners.get(port)
        return listener is not None and listener.ready

    def _wait_logged(self, timeout: float) -> None:
        """Wait until the sequencer (or the single process) has taken every
        request posted so far: what arrives from the device afterwards comes
        later in the log, so every replica applies those requests first."""
        requests = self.runtime.areas.requests
        posted = requests.counters()["tail"]
        deadline = time.monotonic() + timeout
        while requests.counters()["head"] < posted:
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stack did not take the request within {timeout:g} s")
            self.runtime.wake()
            time.sleep(0.001)

    def unlisten(self, port: int) -> None:
        self.post(Request.UNLISTEN, 0, port)
        with self.lock:
            self._listeners.pop(port, None)

    def connect_start(self, address: str, port: int, *, local_port: int | None = None) -> PendingConnect:
        """Begin an active open to an IPv4 or IPv6 address; the result is a
        `PendingConnect` whose fileno() turns readable once it succeeded or
        failed (asyncio)."""
        try:
            remote = ipaddress.ip_address(address)
        except ValueError:
            raise StackError(f"{address!r} is not an IP address") from None
        if remote.version == 6 and self.address6 is None:
            raise StackError(f"cannot connect to {address}: the stack has no IPv6 address")
        if not 1 <= port <= 65535:
            raise StackError(f"port {port} is outside 1..65535")
        with self.lock:
            tag = self._next_tag
            self._next_tag += 1
            lport = local_port or (32768 + (tag * 7919) % 28000)
            pending = PendingConnect(self, str(remote), port, lport)
            self._connecting[tag] = pending
        if remote.version == 4:
            self.post(Request.CONNECT, 0, int(remote), (port << 16) | lport, tag)
        else:
            # runtime/vocabulary.pxd, REQ_CONNECT6: the address as two words
            packed = int(remote)
            self.post(Request.CONNECT6, 0, packed >> 64, packed & ((1 << 64) - 1), tag,
                      record=(port << 16) | lport)
        return pending

    def connect(self, address: str, port: int, *, local_port: int | None = None,
                timeout: float = 10.0) -> Connection:
        """Open a connection to address:port (ConnectionRefusedError, TimeoutError)."""
        return self.connect_start(address, port, local_port=local_port).wait(timeout)

    def connection_table(self, fresh: bool = False, timeout: float = 2.0) -> tuple[int, list[dict]]:
        """Every connection as worker 0 last published it (``misdtcp ss``):
        (published at, monotonic ns; rows), each row with each worker's share.
        `fresh`: wait for a publication made after this call."""
        if fresh:
            self._wait_publication(timeout)
        when, rows = self.progress.connection_table()
        for row in rows:
            row["workers"] = self.progress.shares(row["handle"])
            row["acked"] = self.progress.acked(row["handle"])
            row["readable"] = self.progress.readable(row["handle"])
        return when, rows

    # -- statistics -----------------------------------------------------------------
    def sequencer_counters(self) -> dict:
        """The sequencer's counters: records and frames it logged, frames it
        coalesced, its CPU time and, inline, the part spent as replica 0."""
        return self.progress.sequencer()

    def worker_counters(self) -> list[dict]:
        return [self.progress.counters(w) for w in range(self.workers)]

    def device_counters(self) -> dict:
        """The device's own counters: for a packet ring, the frames the kernel
        put into it and those it dropped because every slot was still held
        ({} for a TUN)."""
        statistics = getattr(self.device, "statistics", None)
        return statistics() if statistics is not None else {}

    def ring_counters(self) -> dict:
        return self.runtime.areas.ring.counters()

    def core_stats(self, fresh: bool = False, timeout: float = 2.0) -> tuple[dict, dict]:
        """The core's statistics (retransmits, challenge ACKs, ...) and its
        drop counters by reason, as last published by worker 0 (about every
        20 ms while it runs).  `fresh`: wait for a publication made after
        this call, so everything the log held before it is counted."""
        if fresh:
            self._wait_publication(timeout)
        return self.progress.core_stats(), self.progress.core_drops()

    def _wait_publication(self, timeout: float) -> None:
        """Until worker 0 publishes its statistics and connection table
        (together, about every 20 ms) after this call."""
        asked = time.monotonic_ns()
        deadline = time.monotonic() + timeout
        while self.progress.stats_ns <= asked:
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker 0 published no statistics within {timeout:g} s")
            time.sleep(0.002)


class PendingConnect:
    """An active open under way: wait(), or wait on fileno() and then result()."""

    def __init__(self, stack: Stack, address: str, port: int, local_port: int | None = None):
        self.stack = stack
        self.address = address
        self.port = port
        self.local_port = local_port
        self._outcome = None
        self._event = threading.Event()
        self._readiness = Readiness(stack.lock)

    def _done(self, outcome) -> None:
        """The event thread: the connection, or why it failed (lock held)."""
        self._outcome = outcome
        self._event.set()
        self._readiness.signal()

    def done(self) -> bool:
        return self._event.is_set()

    def fileno(self) -> int:
        fd = self._readiness.fileno()
        if self._event.is_set():
            self._readiness.signal()
        return fd

    def result(self) -> Connection:
        outcome = self._outcome
        self._readiness.close()
        if isinstance(outcome, str):
            raise ConnectionRefusedError(errno.ECONNREFUSED,
                                         f"connection to {self.address}:{self.port} failed ({outcome})")
        return outcome

    def wait(self, timeout: float | None = 10.0) -> Connection:
        if not self._event.wait(timeout):
            self._readiness.close()
            raise TimeoutError(errno.ETIMEDOUT, f"connecting to {self.address}:{self.port} timed out")
        return self.result()
