"""The strategies: how log positions reach the TCP core, one small class each.

All share the core, the executor, the log and the benchmarks; they differ in
which processes run, how many core states there are, and which loop of
runtime/loops.pyx feeds them:

* ``single``     one process, one core (on a live device: no log at all) -- the baseline;
* ``misd``       the design: N workers, each a full replica of the core that
                 replays every descriptor and performs only the outputs it owns;
* ``mimd``       a foil: N workers claim descriptors from one shared cursor and
                 update ONE shared core state under a lock;
* ``leader``     a foil: one process runs the only core and hands the copies
                 of the stripes it does not own to N-1 helpers over
                 single-producer queues, copying its own share; no locks;
* ``copy-only``  the ceiling (replay only): N workers copy the stripes they own
                 and do nothing else -- this machine's memory bandwidth for the
                 parallel part.

`STRATEGIES` is the registry; `get(name)` looks one up with a one-sentence
error for people.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from misdtcp._tcpcore import TcpCore
from misdtcp.runtime.handoff import HandoffQueues
from misdtcp.runtime.loops import run_copy_only, run_helper, run_leader, run_mimd, run_misd, run_single


@dataclass
class Run:
    """What one worker of a strategy needs besides its executor and the log."""
    worker: int
    workers: int
    stripe: int
    handle: int = 0               # the connection a copy-only run follows
    shared: Any = None            # what the strategy created before the workers were forked
    prefault: bool = True


class Strategy:
    name = ""
    replicated = False            # every worker holds its own replica of the core
    shared_state = False          # one core state in shared memory for every worker
    sequencer = True              # live: a sequencer process feeds workers through the log
    live = True                   # can serve a live device (copy-only cannot: it runs no TCP)

    def workers(self, requested: int) -> int:
        return requested

    def ring_consumers(self, workers: int) -> int:
        """Cursors the log keeps (one per process that releases it)."""
        return 1

    @property
    def shared_progress(self) -> bool:
        """One progress row for everyone (one core state produces it, in order)."""
        return not self.replicated

    def prepare(self, workers: int) -> Any:
        """Shared resources to create before the workers are forked."""
        return None

    def core(self, address: str, config: dict, run: Run, state=None) -> TcpCore:
        """The core this worker runs."""
        return TcpCore(address, **config)

    def run_log(self, executor, ring, run: Run) -> None:
        """Feed the executor from the log until REC_STOP (replay or live)."""
        raise NotImplementedError


class Single(Strategy):
    name = "single"
    sequencer = False

    def workers(self, requested):
        return 1

    def run_log(self, executor, ring, run):
        run_single(executor, ring, run.prefault)


class Misd(Strategy):
    name = "misd"
    replicated = True

    def ring_consumers(self, workers):
        return workers

    def core(self, address, config, run, state=None):
        return TcpCore(address, **config, replica=run.worker, replicas=run.workers, stripe=run.stripe)

    def run_log(self, executor, ring, run):
        run_misd(executor, ring, run.worker, run.prefault)


class Mimd(Strategy):
    name = "mimd"
    shared_state = True

    def core(self, address, config, run, state=None):
        return TcpCore(address, **config, state_buffer=state, attach=True)

    def run_log(self, executor, ring, run):
        run_mimd(executor, ring, run.workers, run.prefault)


class Leader(Strategy):
    name = "leader"

    def ring_consumers(self, workers):
        return workers

    @property
    def shared_progress(self):
        return False              # every copier publishes its own progress row

    def prepare(self, workers):
        return HandoffQueues(max(workers - 1, 1))

    def run_log(self, executor, ring, run):
        if run.worker == 0:
            run_leader(executor, ring, run.shared, run.workers, run.stripe, run.prefault)
        else:
            run_helper(executor, ring, run.shared, run.worker, run.prefault)


class CopyOnly(Strategy):
    name = "copy-only"
    live = False

    def ring_consumers(self, workers):
        return workers

    @property
    def shared_progress(self):
        return False

    def run_log(self, executor, ring, run):
        run_copy_only(executor, ring, run.worker, run.workers, run.stripe, run.handle, run.prefault)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Single(), Misd(), Mimd(), Leader(), CopyOnly())}
LIVE_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.live)


def get(name: str, *, live: bool = False) -> Strategy:
    plan = STRATEGIES.get(name)
    names = LIVE_STRATEGIES if live else tuple(STRATEGIES)
    if plan is None or name not in names:
        raise ValueError(f"strategy {name!r} is not one of {', '.join(names)}")
    return plan
