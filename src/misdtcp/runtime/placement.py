"""Where the runtime's processes run: which CPU each is pinned to, and
whether replica 0 runs inside the sequencer's loop.

Two placements of a live misd stack:

* ``separate``  the sequencer is a process of its own, pinned to the first
                CPU no worker uses (or, when every CPU has a worker, to the
                CPU of the last worker); worker w is pinned to CPU w (mod the
                CPUs allowed);
* ``inline``    replica 0 runs inside the sequencer's loop: after each batch
                it publishes, the sequencer walks the new descriptors with
                worker 0's executor.  One process fewer, no wake-up and no
                cache line moved between cores for the log's first reader;
                workers 1..N-1 are processes as before.  Replica 0 then lives
                and dies with the sequencer (it cannot be replaced alone).

``auto`` picks inline when the workers leave no CPU for the sequencer --
the case where a separate sequencer competes with a worker for its core --
and separate otherwise (bench/e2e.py measures both: see the README).
"""
from __future__ import annotations

from dataclasses import dataclass

PLACEMENTS = ("auto", "inline", "separate")


class PlacementError(ValueError):
    """A placement that cannot be used (one sentence)."""


@dataclass(frozen=True)
class Placement:
    inline: bool                  # replica 0 runs in the sequencer's loop
    worker_cpus: tuple            # CPU of worker w (index w); inline: worker 0's is the sequencer's
    sequencer_cpu: int

    @property
    def name(self) -> str:
        return "inline" if self.inline else "separate"

    def processes(self, workers: int) -> int:
        """Processes of the runtime: the sequencer plus the workers that are not inline."""
        return workers if self.inline else 1 + workers


def place(requested: str, *, workers: int, cpus: list, replicated: bool) -> Placement:
    """Resolve a requested placement for `workers` workers on the allowed
    `cpus`.  Only a replicated strategy (misd) can run a replica inline."""
    if requested not in PLACEMENTS:
        raise PlacementError(f"placement {requested!r} is not one of {', '.join(PLACEMENTS)}")
    if not cpus:
        raise PlacementError("no CPU to run on")
    if requested == "inline" and not replicated:
        raise PlacementError("only the misd strategy can run replica 0 inside the sequencer (inline)")
    inline = requested == "inline" or (requested == "auto" and replicated and len(cpus) <= workers)
    worker_cpus = tuple(cpus[w % len(cpus)] for w in range(workers))
    if inline:
        sequencer_cpu = worker_cpus[0]
    elif workers < len(cpus):
        sequencer_cpu = cpus[workers]
    else:
        sequencer_cpu = worker_cpus[-1]
    return Placement(inline, worker_cpus, sequencer_cpu)
