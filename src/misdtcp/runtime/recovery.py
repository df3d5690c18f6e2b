"""Worker recovery (misd): where a replacement for a dead worker starts.

A replica is a pure function of the log, so a dead worker is replaced by a
new process that loads the worker's latest replica snapshot and replays the
log from that snapshot's position (docs/DESIGN.md, "Recovery").
`resume_point` decides where, from what the dead worker left in shared
memory; `prepare` makes the shared state ready for the replacement;
`run_replacement` is the replacement's body.  LiveRuntime uses all three, and
so do the tests that kill a worker at an exact log position.

What makes the replay exact:

* snapshots: a slot being written claims no position (executor
  `_checkpoint`), so only a whole snapshot is ever loaded;
* copies: the replacement skips copies below the progress its predecessor
  published and publishes none below it (executor `exec_run_actions`),
  while replaying what any process of the worker had applied (a replacement
  killed part-way through its replay had applied less than the first);
* events: each carries its record and index, and the event queue keeps the
  last one the predecessor finished posting, so the replacement announces
  exactly what follows it (executor `_post_event`).

A ResumePoint is a few numbers (it travels to the forker); the replacement
reads the snapshot and its predecessor's rows from shared memory itself --
nothing writes them while the worker is dead.
"""
from __future__ import annotations

from dataclasses import dataclass

from misdtcp.runtime.loops import run_misd


@dataclass(frozen=True)
class ResumePoint:
    """What a replacement for `worker` starts from."""
    worker: int
    seqno: int                  # the first log position it applies
    from_snapshot: bool         # the state at `seqno` is a snapshot (else: the initial state, seqno 0)
    applied: int                # the furthest log position a process of this worker had applied
    announced: tuple[int, int]  # worker 0: the last event it announced (record seqno + 1, index)


def resume_point(areas, worker: int, state_size: int) -> ResumePoint | None:
    """Where a replacement for dead `worker` starts, or None when no usable
    snapshot exists (the stack cannot recover this worker).

    The log is held from the worker's cursor (its last checkpoint when it
    last released); any intact snapshot at or after the cursor will do, and
    the newest replays least.  A slot the worker died writing claims no
    position, so it is never taken."""
    view = areas.view
    cursor = areas.ring.consumer_cursor(worker)
    found = view.latest_snapshot(worker, cursor, areas.snapshots, state_size)
    if found is not None:
        seqno, from_snapshot = found[0], True
    elif cursor == 0:
        seqno, from_snapshot = 0, False     # nothing released yet: the initial state replays it all
    else:
        return None
    counters = view.counters(worker)
    announced = (0, 0)
    if worker == 0:
        # events carry the record and index they came from; worker 0 also
        # notes the last it posted, right after posting it (the queue may
        # have moved on: it carries every worker's readiness messages too)
        announced = (counters["announced_record"], counters["announced_index"])
        last = areas.events.last_posted(recorded_only=True)
        if last is not None:
            announced = max(announced, (last.record, last.index))
    # a replacement that died part-way through its replay applied less than
    # its predecessor did: the copy floor holds up to the furthest of them
    applied = max(counters["last_seqno"], counters["applied_high"])
    return ResumePoint(worker, seqno, from_snapshot, applied, announced)


def prepare(areas, point: ResumePoint) -> None:
    """Make the shared state ready for the replacement (the dead worker is
    reaped: nothing else writes its rows or its cursor)."""
    areas.ring.resume_consumer(point.worker, point.seqno)
    if point.worker == 0:
        areas.events.abandon_claim()        # killed between claiming a slot and filling it
    areas.view.mark_restart(point.worker, point.applied)


def run_replacement(point: ResumePoint, areas, state_size: int, core, executor) -> None:
    """The replacement's body: the replica state at the resume point, then
    the log replayed from there (copies already done are not redone, events
    already announced are not announced again)."""
    view = areas.view
    if point.from_snapshot:
        state = view.snapshot_for(point.worker, point.seqno, areas.snapshots, state_size)
        if state is None:
            raise RuntimeError(f"the snapshot of worker {point.worker} at {point.seqno} is gone")
        core.load_state(state)
    executor.resume_after(view.progress_row(point.worker), view.acked_row() if point.worker == 0 else None,
                          point.applied)
    executor.announced_through(*point.announced)
    run_misd(executor, areas.ring, point.worker, False)
    executor.flush()
