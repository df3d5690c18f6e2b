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

    pid = bench.run_phases(0, [(p0, None), (None, arm)])
    status = bench.wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, "the copy did not die part-way"
    counters = bench.view.counters(0)
    assert bench.log.ring.consumer_cursor(0) == p0       # the log is held from the first checkpoint
    assert counters["snap_position"][1] == p1
    # the half-written slot claims nothing
    assert bench.view.snapshot_for(0, p0, bench.areas.snapshots, bench.state_size) is None
    assert counters["snap_position"][0] == 0

    point = bench.replace(0)
    assert point.seqno == p1                              # the intact slot
    assert bench.delivered() == bench.log.delivered
    assert bench.receive_buffer_mismatch() == -1
    assert bench.final_digest(0) == bench.log.reference_digest
