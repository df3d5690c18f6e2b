"""Run one event log under a strategy: `single`, `misd` or `mimd`.

All three use the same TCP core, the same executor (copies, ACK building,
writes) and the same log; they differ only in how records reach the core:

* ``single``  one pinned process walks the log in place — the baseline;
* ``misd``    N pinned workers, each a replica replaying every record and
              performing only the outputs it owns (stripes of payload,
              round-robin ACKs/segments);
* ``mimd``    N pinned workers claiming records from one shared cursor and
              updating ONE shared core state under a lock (in log order),
              then performing all of that record's outputs — the foil.

Workers are forked processes.  Nothing outlives `run_log`: children are
reaped (killed on timeout or error) and every shared-memory area is a memfd
that disappears with its last mapping.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from misdtcp._replay import load_image
from misdtcp.runtime.replay import replay_core_config
from misdtcp._ring import BroadcastRing, MirroredBuffer
from misdtcp._tcpcore import TcpCore
from misdtcp._worker import (Executor, SharedView, init_shared, run_mimd, run_misd, run_single,
                             shared_size)

STRATEGIES = ("single", "misd", "mimd")
SINKS = {"null": 0, "fd": 1, "capture": 2}


class RuntimeFailure(RuntimeError):
    """A worker died, hung, or replicas diverged."""


def _pow2(n: int, minimum: int = 4096) -> int:
    size = minimum
    while size < n:
        size <<= 1
    return size


@dataclass
class RunResult:
    strategy: str
    workers: int
    stripe: int
    delivered: int                    # bytes every worker finished copying
    elapsed_ns: int                   # earliest worker start to latest worker end
    counters: list = field(default_factory=list)
    digests: list = field(default_factory=list)
    receive_buffer: bytes | None = None
    captured: list = field(default_factory=list)
    ring: dict = field(default_factory=dict)          # the ring's own counters (sleeps, wakes, ...)

    @property
    def gbps(self) -> float:
        return self.delivered * 8 / self.elapsed_ns if self.elapsed_ns else 0.0


def _pin(cpu):
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def run_log(log, *, strategy: str = "misd", workers: int = 1, stripe: int = 16384,
            core_config: dict | None = None, sink: str = "null", cpus=None,
            keep_buffer: bool = False, timeout: float = 60.0, out_fd: int = -1,
            offload: bool = True, debug_worker_config=None, replica=None) -> RunResult:
    """Replay `log` (a ReplayLog) under one strategy and measure it.

    `replica=(r, n, stripe)` with the single strategy: one process does
    exactly the work replica r of n would (replicated processing plus only
    its own outputs) — for splitting a worker's time into replicated and
    owned work.  `debug_worker_config(w) -> dict` overrides core options per
    worker; it exists to test the divergence check."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if strategy == "single":
        workers = 1
    if not 1 <= workers <= 16:
        raise ValueError("workers must be between 1 and 16")
    core_config = replay_core_config(core_config if core_config is not None else log.core_config)
    if log.core_config and core_config != log.core_config:
        raise ValueError("core_config differs from the one the log was built with: replicas would diverge")
    rcvbuf = core_config["rcvbuf"]
    sndbuf = core_config["sndbuf"]
    max_conns = core_config["max_connections"]
    if rcvbuf % 4096 or sndbuf % 4096:
        raise ValueError("rcvbuf and sndbuf must be multiples of 4096 (they are mirrored mappings)")
    cpu_list = list(cpus) if cpus else sorted(os.sched_getaffinity(0))
    capture_size = (64 << 20) if sink == "capture" else 0

    image = log.image
    ring = BroadcastRing(_pow2(len(image.data) + 65536, 1 << 16),
                         workers if strategy == "misd" else 1)
    load_image(ring, image.data, image.records)
    block = MirroredBuffer(_pow2(shared_size(workers, max_conns, capture_size)))
    init_shared(block, workers, max_conns, rcvbuf, sndbuf, capture_size, strategy == "mimd")
    view = SharedView(block)
    rcv = MirroredBuffer(_pow2(max_conns * rcvbuf))
    snd = MirroredBuffer(_pow2(max_conns * sndbuf))
    state = None
    shared_core = None
    if strategy == "mimd":
        size = TcpCore.state_size(local_address=log.config.server, **core_config)
        state = MirroredBuffer(_pow2(size))
        shared_core = TcpCore(log.config.server, **core_config, state_buffer=state)

    pids = []
    try:
        for w in range(workers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 0
                try:
                    _pin(cpu_list[w % len(cpu_list)])
                    if strategy == "mimd":
                        core = TcpCore(log.config.server, **core_config, state_buffer=state, attach=True)
                    elif strategy == "misd":
                        cfg = dict(core_config)
                        if debug_worker_config is not None:
                            cfg.update(debug_worker_config(w))
                        core = TcpCore(log.config.server, **cfg, replica=w, replicas=workers,
                                       stripe=stripe)
                    elif replica is not None:
                        r_index, r_count, r_stripe = replica
                        core = TcpCore(log.config.server, **core_config, replica=r_index,
                                       replicas=r_count, stripe=r_stripe)
                    else:
                        core = TcpCore(log.config.server, **core_config)
                    ex = Executor(core, block, w, rcv_fd=rcv.fileno(), snd_fd=snd.fileno(),
                                  sink=SINKS[sink], out_fd=out_fd, offload=offload)
                    if strategy == "misd":
                        run_misd(ex, ring, w)
                    elif strategy == "mimd":
                        run_mimd(ex, ring, workers)
                    else:
                        run_single(ex, ring)
                except BaseException:  # noqa: BLE001 - report through the exit code
                    import traceback
                    traceback.print_exc()
                    code = 1
                os._exit(code)
            pids.append(pid)
        view.go()
        deadline = time.monotonic() + timeout
        alive = set(pids)
        while alive:
            for pid in list(alive):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    alive.discard(pid)
                    if status != 0:
                        raise RuntimeFailure(f"worker process {pid} failed (wait status {status})")
            if view.diverged:
                raise RuntimeFailure(f"replicas diverged at digest round {view.diverged_round}")
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"run did not finish within {timeout:.0f} s")
            if alive:
                time.sleep(0.002)
        pids = []
        counters = [view.counters(w) for w in range(workers)]
        if view.diverged:
            raise RuntimeFailure(f"replicas diverged at digest round {view.diverged_round}")
        start = min(c["start_ns"] for c in counters)
        end = max(c["end_ns"] for c in counters)
        conn = log.conn
        delivered = view.readable(conn)
        result = RunResult(strategy, workers, stripe, delivered, end - start, counters,
                           [view.digests(w) for w in range(workers)])
        if keep_buffer:
            slot = conn & ((1 << 20) - 1)
            result.receive_buffer = bytes(rcv.view(slot * rcvbuf, min(delivered, rcvbuf)))
        if sink == "capture":
            result.captured = [view.capture(w) for w in range(workers)]
        if shared_core is not None:
            result.digests = [shared_core.digest()]
        result.ring = ring.counters()
        return result
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for area in (ring, block, rcv, snd, state):
            if area is not None:
                area.close()

