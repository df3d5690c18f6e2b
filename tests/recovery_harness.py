"""Worker recovery at exact log positions, over a replay log (no device).

A `RecoveryBench` lays a replay log (runtime/replay.py, with recovery
checkpoints) under the runtime's shared areas with snapshots on, and runs
each worker in its own forked process, to an exact log position when asked
(the ring's `_set_published` test hook plus the stop flag) -- so a test can
kill a worker exactly where a hazard lies, replace it through the production
recovery code (runtime/recovery.py), and check what the application would
have read: the receive buffer against the log's byte pattern, and the
replicas' digests against the reference replica.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import os
import signal
import time

from misdtcp._tcpcore import SLOT_MASK, TcpCore
from misdtcp.runtime import recovery
from misdtcp.runtime.areas import SharedAreas
from misdtcp.runtime.executor import Executor, Sink
from misdtcp.runtime.loops import run_misd
from misdtcp.runtime.replay import ReplayConfig, build_log
from misdtcp.runtime.replay_image import check_pattern
from misdtcp.runtime.vocabulary import Record

PROT_READ = 1
PAGE = os.sysconf("SC_PAGE_SIZE")


def checkpoint_positions(ring) -> list[int]:
    """Log positions right after each REC_CHECKPOINT (where snapshots are taken)."""
    return [e.seqno + 1 for e in ring.read(0, 0, release=False) if e.kind == Record.CHECKPOINT]


class RecoveryBench:
    """One replay log, the shared areas of a recoverable misd run, and a way
    to run, stop and replace its workers one process at a time."""

    def __init__(self, cfg: ReplayConfig, core_config: dict, workers: int, stripe: int):
        self.log = build_log(cfg, core_config)
        self.core_config = dict(self.log.core_config)
        self.workers = workers
        self.stripe = stripe
        self.address = cfg.server
        self.state_size = TcpCore.state_size(local_address=self.address, **self.core_config)
        self.log.ring.rewind(workers)
        self.checkpoints = checkpoint_positions(self.log.ring)
        self.end = self.log.ring.available()
        self.areas = SharedAreas(workers=workers, max_connections=self.core_config["max_connections"],
                                 rcvbuf=self.core_config["rcvbuf"], sndbuf=self.core_config["sndbuf"],
                                 ring=self.log.ring, shared_progress=False, state_size=self.state_size,
                                 snapshots=True, shared_state=False)
        self.view = self.areas.view
        self.view.go()
        self.pids: list[int] = []

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.areas.close()
        self.log.close()

    # -- processes -------------------------------------------------------------
    def _fork(self, body) -> int:
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
        self.pids.append(pid)
        return pid

    def wait(self, pid: int, timeout: float = 60.0) -> int:
        """Wait for a child; its raw wait status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.remove(pid)
                return status
            time.sleep(0.002)
        raise AssertionError(f"worker process {pid} did not finish within {timeout} s")

    def core(self, worker: int) -> TcpCore:
        return TcpCore(self.address, **self.core_config, replica=worker, replicas=self.workers,
                       stripe=self.stripe)

    def executor(self, core: TcpCore, worker: int) -> Executor:
        a = self.areas
        return Executor(core, a.block, worker, rcv_fd=a.receive.fileno(), snd_fd=a.send.fileno(),
                        sink=Sink.SINK_NULL, events=a.events, snapshots=a.snapshots)

    def run_phases(self, worker: int, phases) -> int:
        """Fork `worker` and run it through `phases`: (position, before) pairs --
        `before(bench)` runs in the worker's process, then the worker applies
        the log up to `position` (None: to the end).  Returns its pid; the
        caller waits for it.  Only one worker runs phases at a time (the
        published count and the stop flag are shared)."""
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
        return self._fork(body)

    def run_to(self, worker: int, position: int | None) -> None:
        """Run `worker` from where its cursor is to `position` (None: the end), in its own process."""
        status = self.wait(self.run_phases(worker, [(position, None)]))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"worker {worker} failed: {status}"

    def replace(self, worker: int) -> recovery.ResumePoint:
        """Replace dead `worker` through runtime/recovery.py and run the
        replacement to the end of the log."""
        point = recovery.resume_point(self.areas, worker, self.state_size)
        assert point is not None, f"no usable snapshot to replace worker {worker}"
        recovery.prepare(self.areas, point)
        self.log.ring._set_published(self.end)
        self.view._clear_stop()

        def body():
            core = self.core(worker)
            recovery.run_replacement(point, core, self.executor(core, worker), self.log.ring)
        status = self.wait(self._fork(body))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"replacement failed: {status}"
        return point

    # -- what the application sees -------------------------------------------------
    def delivered(self) -> int:
        return self.view.readable(self.log.handle)

    def receive_buffer_mismatch(self) -> int:
        """-1 when the receive buffer holds exactly the log's last `rcvbuf`
        bytes of the stream, else the index of the first wrong byte."""
        rcvbuf = self.core_config["rcvbuf"]
        total = self.log.delivered
        slot = self.log.handle & SLOT_MASK
        buf = bytes(self.areas.receive.view(slot * rcvbuf, rcvbuf))
        start = max(0, total - rcvbuf)
        # the buffer holds stream offset o at o % rcvbuf: rotate to stream order
        ordered = buf[start % rcvbuf:] + buf[:start % rcvbuf]
        return check_pattern(ordered[:total - start], start)

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
