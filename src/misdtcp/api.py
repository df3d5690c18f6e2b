"""The Python API: a `Stack` attached to a TUN device, with listeners and
connections that read without copying.

    stack = Stack(Tun("misd0", address="10.77.0.1/24"), address="10.77.0.2", workers=2)
    with stack:
        listener = stack.listen(5201)
        conn = listener.accept()
        while view := conn.recv_view():
            consume(view)
            conn.release(view)

Processes: the application (this process, where the API runs), the
sequencer (single writer of the log) and N pinned workers (replicas of the
TCP core), or one process for the `single` strategy.  Application requests
travel to the sequencer through a shared-memory command queue; lifecycle
events come back from worker 0 through an event queue, read by a dispatcher
thread here; receive readiness is the minimum copy progress over workers,
read straight from shared memory.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
from collections import deque

from misdtcp._ring import BroadcastRing, CommandQueue, MirroredBuffer
from misdtcp._tcpcore import TcpCore, CoreConfigError, Event, RESET_NAMES
from misdtcp._worker import (Executor, Request, SharedView, SlotMap, init_shared, run_mimd, run_misd,
                             run_single_device, shared_size)
from misdtcp._sequencer import run_sequencer, sequencer_sleeping
from misdtcp._faults import FaultInjector, FaultConfigError
from misdtcp._pcap import PcapWriter

SLOT_MASK = (1 << 20) - 1
STRATEGIES = ("misd", "single", "mimd")


class StackError(RuntimeError):
    """The stack cannot do what was asked (one sentence, for people)."""


class ConnectionReset(ConnectionError):
    pass


def _pow2(n, minimum=4096):
    size = minimum
    while size < n:
        size <<= 1
    return size


class _Waiter:
    """Adaptive waiting for progress words in shared memory: a few quick
    re-checks, then sleeps that grow from 20 µs to 1 ms."""

    def __init__(self):
        self.delay = 0.0

    def reset(self):
        self.delay = 0.0

    def pause(self):
        if self.delay == 0.0:
            self.delay = 20e-6
        else:
            self.delay = min(self.delay * 2, 1e-3)
        time.sleep(self.delay)


class Listener:
    def __init__(self, stack: Stack, port: int):
        self.stack = stack
        self.port = port
        self._ready: deque = deque()
        self._cond = threading.Condition(stack._lock)

    def accept(self, timeout: float | None = None) -> Connection:
        """The next established connection (blocks; TimeoutError after `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                self.stack._check()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no connection on port {self.port} within {timeout} s")
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            conn = self._ready.popleft()
        self.stack._post(Request.ACCEPTED, conn.handle)
        return conn

    def close(self):
        self.stack._post(Request.UNLISTEN, 0, self.port)
        self.stack._listeners.pop(self.port, None)


class Connection:
    """One TCP connection.  Receive without copying with recv_view()/release(),
    or copy with recv()/recv_into(); send with sendall()."""

    def __init__(self, stack: Stack, handle: int, remote=None):
        self.stack = stack
        self.handle = handle
        self.slot = handle & SLOT_MASK
        self.remote = remote
        self.consumed = 0          # receive stream offset released to the stack
        self.posted_consumed = 0
        self.written = 0           # send stream offset handed to the stack
        self.peer_closed_at = None  # final receive stream length once the FIN arrived
        self.reset_reason = None
        self.closed = False        # the stack says the connection is gone
        self.timeout: float | None = None
        # this connection's regions of the shared buffers, mapped mirrored
        self._rcv = SlotMap(stack._rcv.fileno(), self.slot * stack.rcvbuf, stack.rcvbuf)
        self._snd = SlotMap(stack._snd.fileno(), self.slot * stack.sndbuf, stack.sndbuf)
        self._cond = threading.Condition(stack._lock)

    # -- receive --------------------------------------------------------------
    def readable_end(self) -> int:
        return self.stack._view.readable(self.handle)

    def recv_view(self, max_bytes: int | None = None, timeout: float | None = None):
        """A memoryview of received bytes in the shared receive buffer (no copy);
        empty at end of stream.  Pass it to release() once done."""
        deadline = self._deadline(timeout)
        waiter = _Waiter()
        while True:
            end = self.readable_end()
            if end > self.consumed:
                n = end - self.consumed
                if max_bytes is not None:
                    n = min(n, max_bytes)
                return self._rcv.view(self.consumed, n)
            if self.peer_closed_at is not None and self.consumed >= self.peer_closed_at:
                return memoryview(b"")
            if self.reset_reason is not None:
                raise ConnectionReset(f"connection reset ({self.reset_reason})")
            if self.closed:
                return memoryview(b"")
            self.stack._check()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("no data within the timeout")
            waiter.pause()

    def release(self, view_or_count):
        """Give consumed bytes back to the stack (opens the window)."""
        n = view_or_count if isinstance(view_or_count, int) else len(view_or_count)
        if isinstance(view_or_count, memoryview):
            view_or_count.release()
        self.consumed += n
        # batch the window updates: every 64 KiB or a quarter of the buffer
        if self.consumed - self.posted_consumed >= min(65536, self.stack.rcvbuf // 4) or \
                self.readable_end() == self.consumed:
            self.posted_consumed = self.consumed
            self.stack._post(Request.CONSUMED, self.handle, self.consumed)

    def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        view = self.recv_view(max_bytes, timeout)
        data = bytes(view)
        self.release(view)
        return data

    def recv_into(self, buffer, timeout: float | None = None) -> int:
        target = memoryview(buffer).cast("B")
        view = self.recv_view(len(target), timeout)
        n = len(view)
        target[:n] = view
        self.release(view)
        return n

    # -- send -----------------------------------------------------------------
    def sendall(self, data, timeout: float | None = None):
        """Copy data into the shared send buffer as room frees up."""
        src = memoryview(data).cast("B")
        deadline = self._deadline(timeout)
        waiter = _Waiter()
        while len(src):
            if self.reset_reason is not None:
                raise ConnectionReset(f"connection reset ({self.reset_reason})")
            if self.closed:
                raise BrokenPipeError("connection closed")
            room = self.stack._view.acked(self.handle) + self.stack.sndbuf - self.written
            if room <= 0:
                self.stack._check()
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("send buffer stayed full within the timeout")
                waiter.pause()
                continue
            waiter.reset()
            n = min(room, len(src), self.stack.sndbuf // 2)
            self._snd.view(self.written, n)[:] = src[:n]
            src = src[n:]
            self.written += n
            self.stack._post(Request.SEND, self.handle, self.written)

    def unsent(self) -> int:
        """Bytes handed to the stack that the peer has not acknowledged."""
        return self.written - self.stack._view.acked(self.handle)

    def shutdown(self):
        """No more sending: FIN after the queued data."""
        self.stack._post(Request.SHUTDOWN, self.handle)

    def close(self):
        if not self.closed and not self.stack._stopping:
            self.stack._post(Request.CLOSE, self.handle)

    def abort(self):
        if not self.closed and not self.stack._stopping:
            self.stack._post(Request.ABORT, self.handle)

    def wait_closed(self, timeout: float | None = None) -> bool:
        deadline = self._deadline(timeout)
        with self._cond:
            while not self.closed:
                self.stack._check()
                if deadline is not None and time.monotonic() > deadline:
                    return False
                self._cond.wait(0.05)
        return True

    def _deadline(self, timeout):
        t = self.timeout if timeout is None else timeout
        return None if t is None else time.monotonic() + t

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Stack:
    """misdtcp attached to a device.  Start with `start()` or `with stack:`."""

    def __init__(self, device, *, address: str = "10.77.0.2", workers: int = 1,
                 strategy: str = "misd", cpus=None, stripe: int = 16384,
                 rcvbuf: int = 4 << 20, sndbuf: int = 4 << 20, max_connections: int = 64,
                 offload: bool = True, mtu: int = 1500, faults: dict | None = None,
                 pcap: str | None = None, digest_every: int = 0, recover: bool = True,
                 ring_size: int = 32 << 20, secret: int | None = None, **core_options):
        """`faults`: FaultInjector settings (drop, corrupt, duplicate, reorder,
        delay, delay_ms, seed) applied in both directions — kernel->stack in
        the sequencer, stack->kernel in each worker (seeds derived from
        `seed`).  `pcap`: a file capturing both directions.  `recover`
        (misd): a worker that dies is replaced from its replica snapshot and
        replays the log from there; otherwise the stack stops with an error."""
        if strategy not in STRATEGIES:
            raise StackError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        available = sorted(os.sched_getaffinity(0))
        self.cpus = list(cpus) if cpus else available
        if not 1 <= workers <= 16:
            raise StackError(f"{workers} workers is outside 1..16")
        if strategy == "single":
            workers = 1
        for value, name in ((rcvbuf, "rcvbuf"), (sndbuf, "sndbuf")):
            if value % 4096 or value < 16384:
                raise StackError(f"--{name} must be a multiple of 4096 and at least 16384, not {value}")
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise StackError(f"{address!r} is not an IPv4 address") from None
        self.device = device
        self.address = address
        self.workers = workers
        self.strategy = strategy
        self.stripe = stripe
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.max_connections = max_connections
        self.offload = offload
        self.faults = dict(faults) if faults else None
        if self.faults:
            try:
                FaultInjector(**self.faults)
            except (FaultConfigError, TypeError, ValueError) as exc:
                raise StackError(str(exc)) from None
        self.pcap_path = pcap
        self.digest_every = digest_every
        self.recover = recover and strategy == "misd"
        self.recoveries = 0
        self.ring_size = _pow2(ring_size, 1 << 20)
        mss = mtu - 40
        self.core_config = dict(mss=mss, rcvbuf=rcvbuf, sndbuf=sndbuf,
                                max_connections=max_connections,
                                gso_max=(65535 - 80) if offload else 0,
                                secret=secret if secret is not None else int.from_bytes(os.urandom(8), "little"),
                                **core_options)
        try:
            TcpCore(address, **self.core_config)
        except CoreConfigError as exc:
            raise StackError(str(exc)) from None
        self._lock = threading.RLock()
        self._listeners: dict[int, Listener] = {}
        self._conns: dict[int, Connection] = {}
        self._connecting: dict[int, list] = {}
        self._next_tag = 1
        self._pids: list[int] = []
        self._failure: str | None = None
        self._started = False
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------
    def start(self):
        if self._started:
            return self
        fd = self.device.fileno() if hasattr(self.device, "fileno") else int(self.device)
        self._fd = fd
        os.set_blocking(fd, False)
        self._ring = BroadcastRing(self.ring_size, self.workers if self.strategy == "misd" else 1)
        self._commands = CommandQueue(4096)
        self._events = CommandQueue(8192)
        self._block = MirroredBuffer(_pow2(shared_size(self.workers, self.max_connections, 0)))
        init_shared(self._block, self.workers, self.max_connections, self.rcvbuf, self.sndbuf, 0,
                    self.strategy == "mimd")
        self._view = SharedView(self._block)
        self._rcv = MirroredBuffer(_pow2(self.max_connections * self.rcvbuf))
        self._snd = MirroredBuffer(_pow2(self.max_connections * self.sndbuf))
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._pcap = None
        if self.pcap_path:
            try:
                self._pcap = PcapWriter(self.pcap_path)
                self._pcap.flush()
            except OSError as exc:
                raise StackError(f"cannot write the capture file {self.pcap_path}: {exc.strerror}") from None
        self._state = None
        self._snapshots = None
        self._state_size = TcpCore.state_size(local_address=self.address, **self.core_config)
        if self.recover:
            self._snapshots = MirroredBuffer(_pow2(self.workers * 2 * self._state_size))
        if self.strategy == "mimd":
            size = TcpCore.state_size(local_address=self.address, **self.core_config)
            self._state = MirroredBuffer(_pow2(size))
            TcpCore(self.address, **self.core_config, state_buffer=self._state)
        try:
            if self.strategy == "single":
                self._fork(self._single_main, self.cpus[0])
            else:
                self._fork(self._sequencer_main, None)
                for w in range(self.workers):
                    self._fork(self._worker_main, self.cpus[w % len(self.cpus)], w)
            self._view.go()
        except BaseException:
            self.stop()
            raise
        self._started = True
        self._dispatcher = threading.Thread(target=self._dispatch, name="misdtcp-events", daemon=True)
        self._dispatcher.start()
        return self

    def _fork(self, target, cpu, *args):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                target(*args)
            except BaseException:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        self._pids.append(pid)

    def _fault_injector(self, stream):
        if not self.faults:
            return None
        cfg = dict(self.faults)
        cfg["seed"] = int(cfg.get("seed", 0)) * 1009 + stream
        return FaultInjector(**cfg)

    def _executor(self, core, worker):
        ex = Executor(core, self._block, worker, rcv_fd=self._rcv.fileno(), snd_fd=self._snd.fileno(),
                      sink=1, out_fd=self._fd, offload=self.offload, events=self._events,
                      pcap=self._pcap, faults=self._fault_injector(1 + worker),
                      snapshots=self._snapshots if self.strategy == "misd" else None)
        ex.measure_latency = True       # live traffic: the stamp-to-output latency is worth its 20 ns
        return ex

    def _sequencer_main(self):
        run_sequencer(self._ring, self._commands, self._block, self._fd, self._wake,
                      digest_every=self.digest_every, faults=self._fault_injector(0), pcap=self._pcap,
                      checkpoint_bytes=self.ring_size // 4 if self.recover else 0)

    def _replacement_main(self, w, snapshot, events_after):
        """A new process for worker w: the replica state from its last
        checkpoint, then the log replayed from that checkpoint's position
        (payload copies are idempotent; lifecycle events already posted are
        not posted again)."""
        core = TcpCore(self.address, **self.core_config, replica=w, replicas=self.workers,
                       stripe=self.stripe)
        if snapshot is not None:
            core.load_state(snapshot)
        ex = self._executor(core, w)
        ex.events_after_seqno = events_after
        self._view.go()
        run_misd(ex, self._ring, w)
        ex.flush()

    def _worker_main(self, w):
        if self.strategy == "mimd":
            core = TcpCore(self.address, **self.core_config, state_buffer=self._state, attach=True)
            ex = self._executor(core, w)
            run_mimd(ex, self._ring, self.workers)
        else:
            core = TcpCore(self.address, **self.core_config, replica=w, replicas=self.workers,
                           stripe=self.stripe)
            ex = self._executor(core, w)
            run_misd(ex, self._ring, w)
        ex.flush()

    def _single_main(self):
        core = TcpCore(self.address, **self.core_config)
        ex = self._executor(core, 0)
        run_single_device(ex, self._fd, self._commands, self._block, self._wake)
        ex.flush()

    def stop(self):
        """Stop every process and free every shared area.  Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self._failure is None:
            self._failure = "the stack was stopped"
        if hasattr(self, "_view"):
            self._view.request_stop()
            self._wakeup()
        deadline = time.monotonic() + 2.0
        for pid in list(self._pids):
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
                    break
                time.sleep(0.005)
        self._pids = []
        if hasattr(self, "_dispatcher"):
            self._dispatcher.join(1.0)
        with self._lock:
            for conn in self._conns.values():
                conn.closed = True
            self._conns.clear()
        # The bookkeeping block stays mapped until this object goes away:
        # application threads may still be reading progress words from it.
        # (A memfd leaves nothing behind; it is freed with its last mapping.)
        for name in ("_ring", "_commands", "_events", "_rcv", "_snd", "_state", "_snapshots"):
            area = getattr(self, name, None)
            if area is not None:
                try:
                    area.close()
                except BufferError:
                    pass
        if hasattr(self, "_wake"):
            os.close(self._wake)
            del self._wake
        if getattr(self, "_pcap", None) is not None:
            self._pcap.close()
            self._pcap = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- failure detection ----------------------------------------------------
    def _check(self):
        if self._failure:
            raise StackError(self._failure)

    def _fail(self, message):
        with self._lock:
            if self._failure is None:
                self._failure = message
            for l in self._listeners.values():
                l._cond.notify_all()
            for c in self._conns.values():
                c._cond.notify_all()

    def _watch_processes(self):
        for index, pid in enumerate(self._pids):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                role = "sequencer" if (self.strategy != "single" and index == 0) else "worker"
                how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                       else f"exit status {os.WEXITSTATUS(status)}")
                if role == "worker" and self.recover and not self._stopping:
                    if self._replace_worker(index - 1):
                        continue
                self._fail(f"a {role} process (pid {pid}) died ({how}); the stack stopped")
                return
        if self._view.diverged:
            self._fail(f"replicas diverged at digest round {self._view.diverged_round}; the stack stopped")

    def _replace_worker(self, w) -> bool:
        """Fork a replacement for dead worker w from its last snapshot."""
        cursor = self._ring.consumer_cursor(w)
        snapshot = None
        if cursor:
            snapshot = self._view.snapshot_for(w, cursor, self._snapshots, self._state_size)
            if snapshot is None:
                return False
        events_after = self._view.counters(w)["last_seqno"]
        self._view.mark_restart(w)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.sched_setaffinity(0, {self.cpus[w % len(self.cpus)]})
                self._replacement_main(w, snapshot, events_after)
            except BaseException:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        self._pids[w + 1] = pid
        self.recoveries += 1
        return True

    # -- events ----------------------------------------------------------------
    def _dispatch(self):
        last_watch = 0.0
        while not self._stopping:
            self._events.wait(timeout=0.05)
            for cmd in self._events.drain():
                self._on_event(cmd.kind, cmd.conn, cmd.a)
            now = time.monotonic()
            if now - last_watch > 0.1 and not self._stopping:
                last_watch = now
                self._watch_processes()
                if self._failure:
                    # a dead process means the stack cannot go on: stop the others
                    self._view.request_stop()
                    return

    def _on_event(self, kind, handle, value):
        with self._lock:
            if kind == Event.ACCEPTED:
                conn = Connection(self, handle)
                self._conns[handle] = conn
                listener = self._listeners.get(value)
                if listener is None:
                    self._post(Request.ABORT, handle)
                    return
                listener._ready.append(conn)
                listener._cond.notify_all()
            elif kind == Event.CONNECTED:
                waiting = self._connecting.pop(value, None)
                conn = Connection(self, handle)
                self._conns[handle] = conn
                if waiting is not None:
                    waiting.append(conn)
                    waiting[0].set()
            elif kind == Event.CONNECT_FAILED:
                waiting = self._connecting.pop(value, None)
                if waiting is not None:
                    waiting.append(RESET_NAMES.get(handle, "failed"))
                    waiting[0].set()
            else:
                conn = self._conns.get(handle)
                if conn is None:
                    return
                if kind == Event.PEER_CLOSED:
                    conn.peer_closed_at = value
                elif kind == Event.RESET:
                    conn.reset_reason = RESET_NAMES.get(value, str(value))
                elif kind == Event.CLOSED:
                    conn.closed = True
                    del self._conns[handle]
                conn._cond.notify_all()

    # -- requests ----------------------------------------------------------------
    def _post(self, kind, conn=0, a=0, b=0, c=0):
        self._check()
        while self._commands.post(kind, conn, a, b, c, timeout=0.1) != 0:
            self._check()
        self._wakeup()

    def _wakeup(self):
        if hasattr(self, "_wake") and sequencer_sleeping(self._block):
            try:
                os.eventfd_write(self._wake, 1)
            except BlockingIOError:
                pass

    def listen(self, port: int, backlog: int = 128) -> Listener:
        """Accept connections on `port`.  The backlog (connections not yet
        accepted) is capped at the connection table's size."""
        if not 1 <= port <= 65535:
            raise StackError(f"port {port} is outside 1..65535")
        backlog = max(1, min(backlog, self.max_connections))
        with self._lock:
            if port in self._listeners:
                raise StackError(f"port {port} is already listening")
            listener = Listener(self, port)
            self._listeners[port] = listener
        self._post(Request.LISTEN, 0, port, backlog)
        return listener

    def connect(self, address: str, port: int, *, local_port: int | None = None,
                timeout: float = 10.0) -> Connection:
        raddr = int(ipaddress.IPv4Address(address))
        with self._lock:
            tag = self._next_tag
            self._next_tag += 1
            waiting = [threading.Event()]
            self._connecting[tag] = waiting
        lport = local_port or (32768 + (tag * 7919) % 28000)
        self._post(Request.CONNECT, 0, raddr, (port << 16) | lport, tag)
        if not waiting[0].wait(timeout):
            raise TimeoutError(f"connecting to {address}:{port} timed out")
        result = waiting[1]
        if isinstance(result, str):
            raise ConnectionRefusedError(f"connection to {address}:{port} failed ({result})")
        return result

    # -- statistics -----------------------------------------------------------------
    def worker_counters(self):
        return [self._view.counters(w) for w in range(self.workers)]

    def ring_counters(self):
        return self._ring.counters()

    def core_stats(self):
        """The core's statistics (retransmits, challenge ACKs, ...) and its
        drop counters by reason, as last published by worker 0."""
        return self._view.core_stats(), self._view.core_drops()
