"""The in-order fast path (header prediction) gives exactly what the slow
path gives: the same actions, in the same order, and the same replicated
state after every log position -- over whole streams with loss, reordering,
duplication, window changes, timestamps, GSO and coalesced segments, for a
single replica and for replicas that own part of the output."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hypothesis_profiles import examples

from misdtcp._tcpcore import TcpCore
from misdtcp.runtime.replay import ReplayConfig, build_log
from misdtcp.runtime.replay_image import apply_descriptor

CORE = dict(rcvbuf=1 << 20, secret=17)


def walk(log, **identity):
    """Apply every position of the log to a core with the fast path on and to
    one with it off; return the number of positions and the fast path's hits."""
    fast = TcpCore(log.config.server, **log.core_config, fast_path=True, **identity)
    slow = TcpCore(log.config.server, **log.core_config, fast_path=False, **identity)
    for seqno in range(log.descriptors):
        a = apply_descriptor(fast, log.ring, seqno)
        b = apply_descriptor(slow, log.ring, seqno)
        assert a == b, f"actions differ at log position {seqno}"
        assert fast.digest() == slow.digest(), f"state differs after log position {seqno}"
    assert slow.fast_path_hits == 0
    assert fast.drops() == slow.drops() and fast.stats() == slow.stats()
    return log.descriptors, fast.fast_path_hits


@pytest.mark.timeout(300)
@settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["mtu", "gso"]), coalesce=st.booleans(),
       faults=st.sampled_from([(0, 0, 0), (0.03, 0.03, 0.01), (0.08, 0.0, 0.0), (0.0, 0.06, 0.03)]),
       identity=st.sampled_from([{}, dict(replica=1, replicas=3, stripe=4096)]))
def test_fast_path_matches_the_slow_path_over_whole_streams(seed, mode, coalesce, faults, identity):
    loss, reorder, dup = faults
    log = build_log(ReplayConfig(total_bytes=(1 << 20) if mode == "mtu" else (3 << 20), mode=mode, loss=loss,
                                 reorder=reorder, duplicate=dup, seed=seed, coalesce=coalesce,
                                 consume_every=64 << 10), CORE)
    try:
        walk(log, **identity)
    finally:
        log.close()


@pytest.mark.timeout(120)
def test_fast_path_takes_the_in_order_segments_of_a_clean_stream():
    """Without faults nearly every data segment is in order: the fast path
    must be the one that takes them (else it is dead code and measures nothing)."""
    log = build_log(ReplayConfig(total_bytes=2 << 20, mode="mtu", seed=2, coalesce=False), CORE)
    try:
        positions, hits = walk(log)
        data_segments = log.sequencer["segments"]
        assert hits >= 0.95 * data_segments, (hits, data_segments)
    finally:
        log.close()
