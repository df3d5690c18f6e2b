"""The strategies: how log records reach the TCP core, one small class each.

All share the core, the executor, the log and the benchmarks; they differ in
which processes run, how many core states there are, and which loop of
runtime/loops.pyx feeds them:

* ``single``  one process, one core, no ring on a live device -- the baseline;
* ``misd``    the design: a sequencer and N workers, each a full replica of
              the core that replays every record and performs only the
              outputs it owns;
* ``mimd``    the foil: a sequencer and N workers that claim records from one
              shared cursor and update ONE shared core state under a lock.

`STRATEGIES` is the registry; `get(name)` looks one up with a one-sentence
error for people.
"""
from __future__ import annotations

from misdtcp._tcpcore import TcpCore
from misdtcp.runtime.loops import run_mimd, run_misd, run_single


class Strategy:
    name = ""
    replicated = False            # every worker holds its own replica of the core
    shared_state = False          # one core state in shared memory for every worker
    sequencer = True              # live: a sequencer process feeds workers through the ring

    def workers(self, requested: int) -> int:
        return requested

    def ring_consumers(self, workers: int) -> int:
        """Cursors the ring keeps (one per replica; claimers share one)."""
        return 1

    @property
    def shared_progress(self) -> bool:
        """One progress row for everyone (one core state produces it)."""
        return not self.replicated

    def core(self, address: str, config: dict, worker: int, workers: int, stripe: int,
             state=None) -> TcpCore:
        """The core this worker runs."""
        return TcpCore(address, **config)

    def run_log(self, executor, ring, worker: int, workers: int) -> None:
        """Feed the executor from the ring until REC_STOP (replay or live)."""
        raise NotImplementedError


class Single(Strategy):
    name = "single"
    sequencer = False

    def workers(self, requested: int) -> int:
        return 1

    def run_log(self, executor, ring, worker, workers):
        run_single(executor, ring)


class Misd(Strategy):
    name = "misd"
    replicated = True

    def ring_consumers(self, workers):
        return workers

    def core(self, address, config, worker, workers, stripe, state=None):
        return TcpCore(address, **config, replica=worker, replicas=workers, stripe=stripe)

    def run_log(self, executor, ring, worker, workers):
        run_misd(executor, ring, worker)


class Mimd(Strategy):
    name = "mimd"
    shared_state = True

    def core(self, address, config, worker, workers, stripe, state=None):
        return TcpCore(address, **config, state_buffer=state, attach=True)

    def run_log(self, executor, ring, worker, workers):
        run_mimd(executor, ring, workers)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Single(), Misd(), Mimd())}


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"strategy {name!r} is not one of {', '.join(STRATEGIES)}") from None
