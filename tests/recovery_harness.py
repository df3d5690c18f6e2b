"""Worker recovery at exact log positions, over a replay log (no device).

A `RecoveryBench` lays a replay log (runtime/replay.py, with recovery
checkpoints) under the runtime's shared areas with snapshots on, and runs
each misd worker in its own forked process.  The bench plays the sequencer
and the application, as a live stack would order them: it publishes the log
(the ring's `_set_published` test hook) and lets a record that says the
application consumed the stream up to C through only once every worker's
published progress reaches C -- after reading those bytes out of the
receive buffer and checking them against the log's byte pattern, which is
what an application would have read.  So a test can stop or kill a worker
at an exact position, let the others go as far as a live stack would, replace
the dead one through the production recovery code (runtime/recovery.py), and
see every byte the application reads and the replicas' final digests.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import os
import signal
import struct
import time

from misdtcp._tcpcore import SLOT_MASK, TcpCore
from misdtcp.runtime import recovery
from misdtcp.runtime.areas import SharedAreas
from misdtcp.runtime.executor import Executor, Sink
from misdtcp.runtime.loops import run_misd
from misdtcp.runtime.replay import ReplayConfig, build_log
from misdtcp.runtime.replay_image import check_pattern
from misdtcp.runtime.vocabulary import Record, Request

PROT_READ = 1
PAGE = os.sysconf("SC_PAGE_SIZE")
_MESSAGE = struct.Struct("<IIQQQ")


class Blocked(Exception):
    """The application cannot go on: it waits for progress no running worker will make."""


def checkpoint_positions(ring) -> list[int]:
    """Log positions right after each REC_CHECKPOINT (where snapshots are taken)."""
    return [e.seqno + 1 for e in ring.read(0, 0, release=False) if e.kind == Record.CHECKPOINT]


def consumption_records(ring) -> list[tuple[int, int]]:
    """(seqno, offset) of every request record saying the application consumed up to offset."""
    out = []
    for e in ring.read(0, 0, release=False):
        if e.kind == Record.REQUEST:
            kind, _handle, a, _b, _c = _MESSAGE.unpack(bytes(e.data[:_MESSAGE.size]))
            if kind == Request.CONSUMED:
                out.append((e.seqno, a))
    return out


class RecoveryBench:
    """One replay log, the shared areas of a recoverable misd run, its
    workers as processes, and the application that reads what they deliver."""

    def __init__(self, cfg: ReplayConfig, core_config: dict, workers: int, stripe: int):
        self.log = build_log(cfg, core_config)
        self.core_config = dict(self.log.core_config)
        self.rcvbuf = self.core_config["rcvbuf"]
        self.workers = workers
        self.stripe = stripe
        self.address = cfg.server
        self.state_size = TcpCore.state_size(local_address=self.address, **self.core_config)
        self.log.ring.rewind(workers)
        self.checkpoints = checkpoint_positions(self.log.ring)
        self.consumptions = consumption_records(self.log.ring)
        self.end = self.log.ring.available()
        self.areas = SharedAreas(workers=workers, max_connections=self.core_config["max_connections"],
                                 rcvbuf=self.rcvbuf, sndbuf=self.core_config["sndbuf"],
                                 ring=self.log.ring, shared_progress=False, state_size=self.state_size,
                                 snapshots=True, shared_state=False)
        self.view = self.areas.view
        self.view.go()
        self.running: dict[int, int] = {}        # worker -> pid
        self.published = 0
        self.consumed = 0                        # what the application has read and checked
        self.log.ring._set_published(0)

    def close(self) -> None:
        for pid in list(self.running.values()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.running.clear()
        self.areas.close()
        self.log.close()

    # -- worker processes ----------------------------------------------------------
    def core(self, worker: int) -> TcpCore:
        return TcpCore(self.address, **self.core_config, replica=worker, replicas=self.workers,
                       stripe=self.stripe)

    def executor(self, core: TcpCore, worker: int) -> Executor:
        a = self.areas
        return Executor(core, a.block, worker, rcv_fd=a.receive.fileno(), snd_fd=a.send.fileno(),
                        sink=Sink.SINK_NULL, events=a.events, snapshots=a.snapshots)

    def _fork(self, worker: int, body) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                faulthandler.disable()          # a deliberate SIGSEGV is not a crash report
                body()
            except BaseException:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        self.running[worker] = pid
        return pid

    def start(self, worker: int, before=None) -> int:
        """A worker process applying the log as far as it is published, to
        REC_STOP; `before(bench)` runs in it first."""
        def body():
            if before is not None:
                before(self)
            core = self.core(worker)
            run_misd(self.executor(core, worker), self.log.ring, worker, False)
        return self._fork(worker, body)

    def run_phases(self, worker: int, phases) -> int:
        """One worker alone, in phases: (position, before) pairs --
        `before(bench)` runs in the worker's process, then it applies the log
        up to `position` (None: the end) and the next phase begins.  For a
        single worker only (nobody else waits on the application)."""
        def body():
            core = self.core(worker)
            ex = self.executor(core, worker)
            for position, before in phases:
                if before is not None:
                    before(self)
                if position is None:
                    self.log.ring._set_published(self.end)
                    self.view._clear_stop()
                else:
                    self.log.ring._set_published(position)
                    self.view.request_stop()
                run_misd(ex, self.log.ring, worker, False)
        self.published = self.end if phases[-1][0] is None else phases[-1][0]
        return self._fork(worker, body)

    def replace(self, worker: int, until: int | None = None) -> recovery.ResumePoint:
        """Replace dead `worker` through runtime/recovery.py; the replacement
        runs on, or with `until` applies the log up to there and ends (it
        dies part-way through its replay) -- only while no other worker
        reads the log (stop them first: `pause`)."""
        assert worker not in self.running
        point = recovery.resume_point(self.areas, worker, self.state_size)
        assert point is not None, f"no usable snapshot to replace worker {worker}"
        recovery.prepare(self.areas, point)

        def body():
            if until is not None:
                self.log.ring._set_published(until)
                self.view.request_stop()
            core = self.core(worker)
            recovery.run_replacement(point, self.areas, self.state_size, core, self.executor(core, worker))
        self._fork(worker, body)
        if until is not None:
            status = self.reap(worker)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"replacement failed: {status}"
            assert self.view.counters(worker)["last_seqno"] == until
            self.log.ring._set_published(self.published)
            self.view._clear_stop()
        return point

    def pause(self, workers, sig=signal.SIGSTOP) -> None:
        """SIGSTOP (or, with SIGCONT, resume) running workers."""
        for w in workers:
            os.kill(self.running[w], sig)

    def kill(self, worker: int, sig=signal.SIGKILL) -> int:
        """Signal a worker and reap it; its raw wait status."""
        pid = self.running.pop(worker)
        os.kill(pid, sig)
        return os.waitpid(pid, 0)[1]

    def reap(self, worker: int, timeout: float = 60.0) -> int:
        """Wait for a worker to end by itself; its raw wait status."""
        pid = self.running[worker]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del self.running[worker]
                return status
            time.sleep(0.002)
        raise AssertionError(f"worker {worker} did not end within {timeout} s")

    def idle_at(self, worker: int, position: int, timeout: float = 30.0) -> None:
        """Wait until `worker` has applied everything up to `position` and
        published it (it went back to waiting for the log after its batch)."""
        deadline = time.monotonic() + timeout
        while self.view.counters(worker)["last_seqno"] < position:
            if worker not in self.running or os.waitpid(self.running[worker], os.WNOHANG)[0]:
                raise AssertionError(f"worker {worker} ended before position {position}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker} did not reach position {position}")
            time.sleep(0.001)
        after = time.monotonic_ns()
        while self.view.counters(worker)["heartbeat_ns"] <= after:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker} did not go idle at position {position}")
            time.sleep(0.001)

    # -- the sequencer and the application ----------------------------------------
    def _min_progress(self) -> int:
        return min(self.view.progress(w, self.log.handle) for w in range(self.workers))

    def read(self, upto: int) -> None:
        """The application reads [consumed, upto) and checks every byte."""
        while self.consumed < upto:
            n = min(upto - self.consumed, self.rcvbuf - self.consumed % self.rcvbuf)   # not past the slot
            slot = self.log.handle & SLOT_MASK
            data = bytes(self.areas.receive.view(slot * self.rcvbuf + self.consumed % self.rcvbuf, n))
            bad = check_pattern(data, self.consumed)
            assert bad == -1, f"the application read a wrong byte at stream offset {self.consumed + bad}"
            self.consumed += n

    def advance(self, target: int | None = None, timeout: float = 30.0) -> None:
        """Publish the log up to `target` (None: its end).  A consumption
        record goes out only once every worker's progress covers it (the
        application reads and checks those bytes first).  Raises Blocked
        when that progress can come from no running worker."""
        target = self.end if target is None else target
        pending = [(s, c) for s, c in self.consumptions if s >= self.published]
        while self.published < target:
            if pending and pending[0][0] == self.published:
                seqno, upto = pending[0]
                deadline = time.monotonic() + timeout
                while self._min_progress() < upto:
                    if all(self.view.counters(w)["last_seqno"] >= self.published for w in self.running):
                        for w in self.running:
                            self.idle_at(w, self.published)
                        if self._min_progress() < upto:
                            raise Blocked(f"consumption to {upto} waits for a worker that is not running")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"progress never reached {upto}")
                    time.sleep(0.001)
                self.read(upto)
                pending.pop(0)
                self.published = seqno + 1
            else:
                nxt = pending[0][0] if pending else self.end
                self.published = min(nxt, target)
            self.log.ring._set_published(self.published)

    def advance_until_blocked(self) -> None:
        try:
            self.advance()
        except Blocked:
            pass

    def finish(self, timeout: float = 60.0) -> None:
        """Publish the rest, let every worker reach REC_STOP, read the rest."""
        self.advance()
        for w in list(self.running):
            status = self.reap(w, timeout)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"worker {w} failed: {status}"
        self.read(self.log.delivered)

    # -- what the application and the replicas end with ------------------------------
    def last_lap_mismatch(self) -> int:
        """-1 when the receive buffer holds exactly the stream's last `rcvbuf`
        bytes, else the index of the first wrong one (for a worker that ran
        alone, when the application model was not in play)."""
        total = self.log.delivered
        slot = self.log.handle & SLOT_MASK
        buf = bytes(self.areas.receive.view(slot * self.rcvbuf, self.rcvbuf))
        start = max(0, total - self.rcvbuf)
        ordered = buf[start % self.rcvbuf:] + buf[:start % self.rcvbuf]     # stream order
        return check_pattern(ordered[:total - start], start)

    def delivered(self) -> int:
        return self.view.readable(self.log.handle)

    def final_digest(self, worker: int):
        published = [(rnd, d) for rnd, d in self.view.digests(worker) if rnd]
        return max(published)[1] if published else None


def protect_snapshot_page(bench: RecoveryBench, worker: int, slot: int, offset: int) -> None:
    """Make one page of a snapshot slot read-only in the calling process: the
    next snapshot copy into that slot dies there, part-way (a worker killed
    in the middle of the copy)."""
    base = ctypes.addressof(ctypes.c_char.from_buffer(memoryview(bench.areas.snapshots)))
    address = base + (worker * 2 + slot) * bench.state_size + offset
    page = address - address % PAGE
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mprotect(ctypes.c_void_p(page), ctypes.c_size_t(PAGE), PROT_READ) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")


def small_log_config(**overrides) -> ReplayConfig:
    settings = dict(total_bytes=1 << 20, mode="mtu", seed=3, consume_every=8 << 10, checkpoint_every=40)
    settings.update(overrides)
    return ReplayConfig(**settings)
