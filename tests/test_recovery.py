"""Worker recovery at the exact log positions where it could go wrong
(runtime/recovery.py; docs/DESIGN.md, "Recovery").

Each test runs misd workers over a replay log in forked processes, kills or
stops one exactly where a hazard lies, replaces it through the production
recovery code, and checks what the application reads -- the receive buffer
against the log's byte pattern -- and the replicas' digests against the
reference replica.
"""
import os
import signal

import pytest

from misdtcp.runtime import recovery

from recovery_harness import RecoveryBench, protect_snapshot_page, small_log_config

CORE = dict(rcvbuf=64 << 10, sndbuf=64 << 10, max_connections=64, secret=5)


@pytest.fixture
def bench_factory():
    made = []

    def make(workers=1, stripe=4096, **cfg):
        bench = RecoveryBench(small_log_config(**cfg), CORE, workers, stripe)
        made.append(bench)
        return bench
    yield make
    for bench in made:
        bench.close()


@pytest.mark.timeout(120)
def test_a_worker_dying_inside_a_snapshot_copy_leaves_no_slot_recovery_can_load(bench_factory):
    """Two checkpoints in one batch: the log is still held from the first,
    the second fills the other slot, the third overwrites the first's slot
    and the worker dies in the middle of that copy.  The half-written slot
    must claim no position, and the replacement must start from the intact
    one and deliver byte-exact."""
    bench = bench_factory(workers=1, checkpoint_every=8)
    p0, p1, p2 = bench.checkpoints[:3]
    assert p2 - p0 < 200, "the second and third checkpoints must fall in one batch"
    middle = bench.state_size // 2

    def arm(b):
        protect_snapshot_page(b, 0, slot=0, offset=middle)

    bench.run_phases(0, [(p0, None), (None, arm)])
    status = bench.reap(0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, "the copy did not die part-way"
    counters = bench.view.counters(0)
    assert bench.log.ring.consumer_cursor(0) == p0       # the log is held from the first checkpoint
    assert counters["snap_position"][1] == p1
    # the half-written slot claims nothing
    assert bench.view.snapshot_for(0, p0, bench.areas.snapshots, bench.state_size) is None
    assert counters["snap_position"][0] == 0

    point = bench.replace(0)
    assert point.seqno == p1                              # the intact slot
    status = bench.reap(0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert bench.delivered() == bench.log.delivered
    assert bench.last_lap_mismatch() == -1
    assert bench.final_digest(0) == bench.log.reference_digest


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers,victim,after", [(3, 0, 0), (3, 1, 1), (3, 2, 0), (3, 2, 2), (2, 1, 1)])
def test_replayed_copies_never_overwrite_newer_data_a_buffer_lap_ahead(bench_factory, workers, victim, after):
    """rcvbuf / stripe = 16 stripes.  A worker dies; the others go on as far
    as the application lets them (it consumes only what every worker has
    copied, so up to the dead worker's last published progress), which puts
    newer bytes one buffer lap ahead of what the dead worker had copied.
    With 3 workers those bytes belong to another worker, so the
    replacement's replay from its last checkpoint must not copy the old lap
    over them: nothing would repair it before the application reads it.
    (With 2 workers the next lap is the victim's own stripe and its replay
    rewrites it before anyone can read it.)  The victim dies 80 % of the
    way from checkpoint `after` to the next one (or to the end)."""
    bench = bench_factory(workers=workers, stripe=4096, checkpoint_every=200)
    marks = bench.checkpoints + [bench.end]
    stop_at = marks[after] + (marks[after + 1] - marks[after]) * 4 // 5
    held = [p for p in bench.checkpoints if p <= stop_at]
    assert held[-1] == marks[after] < stop_at
    for w in range(workers):
        bench.start(w)
    bench.advance(stop_at)
    bench.idle_at(victim, stop_at)
    bench.kill(victim)
    bench.advance_until_blocked()            # the others run on as far as a live stack lets them
    for w in bench.running:
        bench.idle_at(w, bench.published)
    point = bench.replace(victim)
    assert point.seqno == held[-1]
    bench.finish()                           # every byte the application reads is checked
    assert bench.delivered() == bench.log.delivered
    assert [bench.final_digest(w) for w in range(workers)] == [bench.log.reference_digest] * workers


@pytest.mark.timeout(180)
@pytest.mark.parametrize("victim", [0, 1])
def test_a_replacement_killed_part_way_through_its_replay_is_replaced_just_as_exactly(bench_factory, victim):
    """A worker dies; its replacement dies too, half-way through replaying
    what the first had done (its own last position is then behind the
    first's); the next replacement must still skip every copy below what
    the first had published, up to where the first had got -- not only up
    to where the second had got."""
    workers = 3
    bench = bench_factory(workers=workers, stripe=4096, checkpoint_every=200)
    marks = bench.checkpoints + [bench.end]
    stop_at = marks[1] + (marks[2] - marks[1]) * 4 // 5
    for w in range(workers):
        bench.start(w)
    bench.advance(stop_at)
    bench.idle_at(victim, stop_at)
    bench.kill(victim)
    bench.advance_until_blocked()
    others = [w for w in bench.running]
    for w in others:
        bench.idle_at(w, bench.published)
    bench.pause(others)                                  # nobody else reads while the log is cut short
    first = recovery.resume_point(bench.areas, victim, bench.state_size)
    halfway = first.seqno + (first.applied - first.seqno) // 2
    assert first.seqno < halfway < first.applied
    bench.replace(victim, until=halfway)                 # the second one dies there
    bench.pause(others, signal.SIGCONT)
    third = bench.replace(victim)
    assert third.seqno == first.seqno and third.applied == first.applied
    bench.finish()                                       # every byte the application reads is checked
    assert bench.delivered() == bench.log.delivered
    assert [bench.final_digest(w) for w in range(workers)] == [bench.log.reference_digest] * workers
