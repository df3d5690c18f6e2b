"""Replica equivalence: every strategy (misd, leader, mimd) delivers exactly
what the sequential baseline delivers, sends the same segments, and misd's
replicas never diverge.

Each run replays the log of one synthetic connection (with seeded loss,
reordering and duplication) through forked, pinned worker processes.
"""
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hypothesis_profiles import examples

from misdtcp.runtime.replay_image import check_pattern
from misdtcp.runtime.replay import ReplayConfig, build_log
from misdtcp.runtime.replay_run import RuntimeFailure, run_log
from misdtcp.runtime.vocabulary import Record

CORE = dict(rcvbuf=4 << 20, secret=11)


def final_digests(result):
    """The digest each worker published for the last checkpoint round."""
    out = []
    for slots in result.digests:
        if isinstance(slots, int):
            out.append(slots)
            continue
        published = [(rnd, d) for rnd, d in slots if rnd]
        out.append(max(published)[1] if published else None)
    return out


def segments(result):
    """Every frame sent, over all workers, as a sorted list (who sent it
    does not matter, what was sent does)."""
    return sorted(frame for worker in result.captured for frame in worker)


def replay(log, strategy, workers=1, stripe=16384):
    return run_log(log, strategy=strategy, workers=workers, stripe=stripe, core_config=CORE,
                   sink="capture", keep_buffer=True, timeout=60)


@pytest.mark.timeout(240)
@settings(max_examples=examples(12), deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["mtu", "gso"]),
       faults=st.sampled_from([(0, 0, 0), (0.02, 0.02, 0.01), (0.05, 0.0, 0.0), (0.0, 0.05, 0.02)]))
@pytest.mark.slow
def test_misd_matches_single_for_any_loss_reorder_duplication(seed, mode, faults):
    loss, reorder, dup = faults
    total = (1 << 20) if mode == "mtu" else (3 << 20)
    log = build_log(ReplayConfig(total_bytes=total, mode=mode, loss=loss, reorder=reorder,
                                 duplicate=dup, seed=seed, digest_every=64), CORE)
    base = replay(log, "single")
    assert base.delivered == log.delivered == total
    assert check_pattern(base.receive_buffer, 0) == -1
    assert final_digests(base) == [log.reference_digest]
    base_segments = segments(base)
    assert len(base_segments) == log.segments_out
    for workers, stripe in ((1, 16384), (2, 1024), (3, 4096), (4, 16384)):
        r = replay(log, "misd", workers, stripe)
        assert r.delivered == base.delivered, (workers, stripe)
        assert r.receive_buffer == base.receive_buffer, (workers, stripe)
        digests = final_digests(r)
        assert digests == [log.reference_digest] * workers, (workers, stripe)
        assert segments(r) == base_segments, (workers, stripe)
        if workers > 1:
            # the work really was shared: every worker copied and sent something
            assert all(c["bytes_copied"] > 0 for c in r.counters)
            assert all(c["segments_sent"] > 0 for c in r.counters)
            assert sum(c["bytes_copied"] for c in r.counters) >= total
    for workers in (2, 4):
        r = replay(log, "leader", workers, 4096)
        assert r.delivered == base.delivered, ("leader", workers)
        assert r.receive_buffer == base.receive_buffer, ("leader", workers)
        assert segments(r) == base_segments, ("leader", workers)
        # the leader handed copies over: every helper copied something
        assert all(c["bytes_copied"] > 0 for c in r.counters), ("leader", workers)


@pytest.mark.timeout(120)
def test_mimd_matches_single():
    log = build_log(ReplayConfig(total_bytes=2 << 20, mode="mtu", loss=0.02, reorder=0.02, seed=5), CORE)
    base = replay(log, "single")
    r = replay(log, "mimd", 2)
    assert r.delivered == base.delivered
    assert r.receive_buffer == base.receive_buffer
    assert final_digests(r) == [log.reference_digest]
    assert segments(r) == segments(base)


@pytest.mark.timeout(120)
def test_stripes_split_copies_by_stream_offset():
    """owner = offset // stripe % N: with 2 workers and 4 KiB stripes each
    worker copies exactly the stripes it owns."""
    total = 1 << 20
    log = build_log(ReplayConfig(total_bytes=total, mode="gso", seed=3), CORE)
    r = replay(log, "misd", 2, 4096)
    assert [c["bytes_copied"] for c in r.counters] == [total // 2, total // 2]


@pytest.mark.timeout(120)
def test_more_workers_than_cores_still_complete():
    """Workers > cores: waiting must sleep (futex), not spin forever."""
    cpus = len(os.sched_getaffinity(0))
    log = build_log(ReplayConfig(total_bytes=4 << 20, mode="mtu", seed=9), CORE)
    r = run_log(log, strategy="misd", workers=cpus + 2, core_config=CORE, timeout=60)
    assert r.delivered == 4 << 20
    assert all(c["records"] == log.descriptors for c in r.counters)


@pytest.mark.timeout(120)
def test_divergence_is_detected_loudly():
    """Replicas with different secrets compute different ISN-dependent state:
    the digest check must catch it and the run must fail, not deliver."""
    log = build_log(ReplayConfig(total_bytes=1 << 20, mode="mtu", seed=1, digest_every=16), CORE)
    with pytest.raises(RuntimeFailure, match="diverged"):
        run_log(log, strategy="misd", workers=2, core_config=CORE, timeout=60,
                debug_worker_config=lambda w: {"secret": CORE["secret"] + w})


@pytest.mark.timeout(120)
def test_a_full_action_list_stops_the_run_loudly():
    """A core whose action list is full loses what it asked for -- here the
    owned copies of a 63 KiB super-frame cut into 512-byte stripes, 62 each
    plus the ACK and the event, in a list of 64 -- so delivered bytes would
    be missing without a word.  The runtime treats it as fatal, in one
    sentence."""
    config = dict(CORE, action_capacity=64)
    log = build_log(ReplayConfig(total_bytes=1 << 20, mode="gso", seed=2), config)
    with pytest.raises(RuntimeFailure, match=r"^worker \d lost \d+ actions? because its action list was full$"):
        run_log(log, strategy="misd", workers=2, stripe=512, core_config=config, timeout=60)
    assert run_log(log, strategy="misd", workers=2, stripe=16384, core_config=config, timeout=60).delivered == 1 << 20


@pytest.mark.timeout(120)
def test_coalescing_changes_how_many_descriptors_not_what_is_delivered():
    """The sequencer's receive coalescing folds in-order segments into fewer
    descriptors; the stream delivered is the same byte for byte, and the
    receiver still acknowledges every aggregate of two segments or more at
    once (like Linux's GRO), so the sender gets an ACK at least per such
    aggregate."""
    total = 2 << 20
    plain = build_log(ReplayConfig(total_bytes=total, mode="mtu", seed=4, coalesce=False), CORE)
    folded = build_log(ReplayConfig(total_bytes=total, mode="mtu", seed=4, coalesce=True), CORE)
    assert folded.sequencer["coalesced"] > 0 and plain.sequencer["coalesced"] == 0
    assert folded.descriptors < plain.descriptors / 4
    aggregates = [e for e in folded.ring.read(0, release=False) if e.kind == Record.SEGMENT and e.segments >= 2]
    a = replay(plain, "misd", 2)
    b = replay(folded, "misd", 2)
    assert a.delivered == b.delivered == total
    assert a.receive_buffer == b.receive_buffer
    assert len(aggregates) > 16
    assert len(segments(b)) >= len(aggregates)


@pytest.mark.timeout(120)
def test_copy_only_copies_the_stream_and_nothing_else():
    """The ceiling run copies every byte to its place, and sends nothing."""
    total = 2 << 20
    log = build_log(ReplayConfig(total_bytes=total, mode="gso", seed=8), CORE)
    r = replay(log, "copy-only", 2, 4096)
    assert r.delivered == total
    assert check_pattern(r.receive_buffer, 0) == -1
    assert [c["bytes_copied"] for c in r.counters] == [total // 2, total // 2]
    assert r.captured == [[], []]
