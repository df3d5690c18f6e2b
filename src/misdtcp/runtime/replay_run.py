"""Run one replay log under a strategy and measure it (benchmarks, equivalence tests).

The log (runtime/replay.py) is already in ring memory, as a NIC with
header/data split would have put it there; each run rewinds it, then the
strategy's workers (runtime/strategies.py) run it to the end, pinned, and the
result says what each did, how long it took and what was delivered.

Nothing outlives `run_log`: children are reaped (killed on timeout or error)
and every shared-memory area is a memfd that disappears with its last mapping.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from misdtcp._tcpcore import SLOT_MASK, TcpCore
from misdtcp.runtime import strategies
from misdtcp.runtime.strategies import Run
from misdtcp.runtime.areas import SharedAreas
from misdtcp.runtime.executor import Executor, Sink
from misdtcp.runtime.replay import replay_core_config
from misdtcp.runtime.supervisor import Supervisor

SINKS = {"null": Sink.SINK_NULL, "fd": Sink.SINK_FD, "capture": Sink.SINK_CAPTURE}


class RuntimeFailure(RuntimeError):
    """A worker died, hung, or replicas diverged."""


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
    huge_pages: bool = False                          # the receive buffers were on huge pages

    @property
    def gbps(self) -> float:
        return self.delivered * 8 / self.elapsed_ns if self.elapsed_ns else 0.0


def run_log(log, *, strategy: str = "misd", workers: int = 1, stripe: int = 16384,
            core_config: dict | None = None, sink: str = "null", cpus=None,
            keep_buffer: bool = False, timeout: float = 60.0, out_fd: int = -1,
            offload: bool = True, debug_worker_config=None, replica=None, prefault: bool = True,
            huge_pages: bool = False, readiness: bool = True) -> RunResult:
    """Replay `log` (a ReplayLog) under one strategy and measure it.

    `replica=(r, n, stripe)` with the single strategy: one process does
    exactly the work replica r of n would (replicated processing plus only
    its own outputs) -- for splitting a worker's time into replicated and
    owned work.  `debug_worker_config(w) -> dict` overrides core options per
    worker; it exists to test the divergence check.  `huge_pages`: back the
    receive buffers by huge pages where the system offers them."""
    plan = strategies.get(strategy)
    workers = plan.workers(workers)
    if not 1 <= workers <= 16:
        raise ValueError("workers must be between 1 and 16")
    core_config = replay_core_config(core_config if core_config is not None else log.core_config, log.config)
    if log.core_config and core_config != log.core_config:
        raise ValueError("core_config differs from the one the log was built with: replicas would diverge")
    if core_config["rcvbuf"] % 4096 or core_config["sndbuf"] % 4096:
        raise ValueError("rcvbuf and sndbuf must be multiples of 4096 (they are mirrored mappings)")
    cpu_list = list(cpus) if cpus else sorted(os.sched_getaffinity(0))
    address = log.config.local_address
    state_size = TcpCore.state_size(local_address=address, **core_config)
    log.ring.rewind(plan.ring_consumers(workers))
    areas = SharedAreas(workers=workers, max_connections=core_config["max_connections"],
                        rcvbuf=core_config["rcvbuf"], sndbuf=core_config["sndbuf"], ring=log.ring,
                        shared_progress=plan.shared_progress, state_size=state_size, snapshots=False,
                        shared_state=plan.shared_state, capture_size=(64 << 20) if sink == "capture" else 0,
                        huge_pages=huge_pages)
    supervisor = Supervisor()
    shared = plan.prepare(workers)
    try:
        shared_core = None
        if plan.shared_state:
            shared_core = TcpCore(address, **core_config, state_buffer=areas.state)

        def worker_main(w):
            run = Run(worker=w, workers=workers, stripe=stripe, handle=log.handle, shared=shared,
                      prefault=prefault)
            if replica is not None:
                r_index, r_count, r_stripe = replica
                core = TcpCore(address, **core_config, replica=r_index, replicas=r_count, stripe=r_stripe)
            else:
                config = dict(core_config)
                if debug_worker_config is not None:
                    config.update(debug_worker_config(w))
                core = plan.core(address, config, run, areas.state)
            executor = Executor(core, areas.block, w, rcv_fd=areas.receive.fileno(), snd_fd=areas.send.fileno(),
                                sink=SINKS[sink], out_fd=out_fd, offload=offload,
                                shared_state=plan.shared_state)
            executor.readiness = readiness       # off only to measure its cost (bench/readiness.py)
            plan.run_log(executor, log.ring, run)

        for w in range(workers):
            supervisor.spawn(f"worker {w}", cpu_list[w % len(cpu_list)], worker_main, w)
        view = areas.view
        view.go()
        deadline = time.monotonic() + timeout
        while supervisor.pids:
            for ended in supervisor.reap():
                if not ended.clean:
                    raise RuntimeFailure(f"{ended.role} (pid {ended.pid}) failed ({ended.how})")
            if view.diverged:
                raise RuntimeFailure(f"replicas diverged at digest round {view.diverged_round}")
            if view.lost_actions is not None:
                raise RuntimeFailure(view.lost_actions)
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"run did not finish within {timeout:.0f} s")
            if supervisor.pids:
                time.sleep(0.002)
        counters = [view.counters(w) for w in range(workers)]
        if view.diverged:
            raise RuntimeFailure(f"replicas diverged at digest round {view.diverged_round}")
        if view.lost_actions is not None:
            raise RuntimeFailure(view.lost_actions)
        start = min(c["start_ns"] for c in counters)
        end = max(c["end_ns"] for c in counters)
        delivered = view.readable(log.handle)
        result = RunResult(strategy, workers, stripe, delivered, end - start, counters,
                           [view.digests(w) for w in range(workers)])
        if keep_buffer:
            slot = log.handle & SLOT_MASK
            rcvbuf = core_config["rcvbuf"]
            result.receive_buffer = bytes(areas.receive.view(slot * rcvbuf, min(delivered, rcvbuf)))
        if sink == "capture":
            result.captured = [view.capture(w) for w in range(workers)]
        if shared_core is not None:
            result.digests = [shared_core.digest()]
        result.ring = log.ring.counters()
        result.huge_pages = areas.receive.huge_pages
        return result
    finally:
        supervisor.stop(grace=0.0)
        areas.close()
        if shared is not None:
            shared.close()
