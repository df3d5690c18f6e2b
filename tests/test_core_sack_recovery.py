"""SACK-based loss recovery against RFC 6675's own definitions: when
recovery begins (§5 steps (1.a), (1.b)), IsLost, pipe (SetPipe), NextSeg's
order (lost holes first, then new data), HighRxt (no hole sent twice),
partial ACKs, and the end of recovery at RecoveryPoint.

Every scenario sends a flight of segments 0..N-1 and answers with ACKs whose
SACK blocks say which arrived; expectations are segment numbers, computed
from the RFC's rules with DupThresh = 3.  Cases where the core does not yet
follow the RFC are marked xfail with issue 12's wording."""
import pytest
from scapy.layers.inet import TCP

from harness import Harness, Peer, open_connection

FULL = 1448                    # MSS 1460 minus the timestamp option
DUPTHRESH = 3


def flight(segments, backlog=0):
    """A connection that sent `segments` full segments and has `backlog`
    more segments of data waiting for the window."""
    h = Harness.create(sndbuf=16 << 20)
    conn, peer, synack = open_connection(h, Peer(window=65535), ts=True, sack=True, wscale=7)
    snd = synack[TCP].seq + 1
    out = h.write(conn, b"s" * ((segments + backlog) * FULL))
    assert len([p for p in out if len(p[TCP].payload)]) == segments
    return h, conn, peer, snd


def sack(h, peer, snd, ack_segment, *blocks):
    """An ACK for everything below segment `ack_segment`, SACKing [a, b) segment ranges."""
    edges = tuple((snd + x * FULL) % 2**32 for a, b in blocks for x in (a, b))
    ack = peer.segment("A", ack=(snd + ack_segment * FULL) % 2**32, options=[
        ("NOP", None), ("NOP", None), ("Timestamp", (peer.tsval, peer.ts_recent)),
        ("NOP", None), ("NOP", None), ("SAck", edges)])
    out = h.deliver(ack)
    return [((p[TCP].seq - snd) % 2**32) // FULL for p in out if len(p[TCP].payload)]


def cwnd_segments(h, conn):
    return h.core.conn(conn)["cwnd"] // FULL


def test_recovery_begins_once_dupthresh_segments_are_sacked_above_the_hole():
    """(1.b): IsLost(HighACK + 1) -- more than (DupThresh - 1) * SMSS bytes
    SACKed above segment 0 -- starts recovery; two segments do not."""
    h, conn, peer, snd = flight(10)
    assert sack(h, peer, snd, 0, (1, 3)) == []
    assert not h.core.conn(conn)["in_recovery"]
    assert sack(h, peer, snd, 0, (1, 4)) == [0]
    info = h.core.conn(conn)
    assert info["in_recovery"] and h.core.stats()["fast_retransmits"] == 1
    assert info["recover"] == (snd + 10 * FULL) % 2**32           # RecoveryPoint = HighData


def test_dupthresh_duplicate_acks_begin_recovery_even_when_they_sack_little():
    """(1.a): the DupThresh-th duplicate ACK starts recovery even though
    what it SACKs (less than a segment each time) makes nothing IsLost."""
    h, conn, peer, snd = flight(10)
    for k in range(DUPTHRESH - 1):
        edges = (snd + FULL, snd + FULL + 100 * (k + 1))
        assert h.deliver(peer.segment("A", ack=snd, options=[
            ("NOP", None), ("NOP", None), ("Timestamp", (peer.tsval, peer.ts_recent)),
            ("NOP", None), ("NOP", None), ("SAck", edges)])) == []
        assert not h.core.conn(conn)["in_recovery"]
    out = h.deliver(peer.segment("A", ack=snd, options=[
        ("NOP", None), ("NOP", None), ("Timestamp", (peer.tsval, peer.ts_recent)),
        ("NOP", None), ("NOP", None), ("SAck", (snd + FULL, snd + FULL + 300))]))
    assert [((p[TCP].seq - snd) % 2**32) // FULL for p in out if len(p[TCP].payload)] == [0]
    assert h.core.conn(conn)["in_recovery"]


def test_lost_holes_go_first_in_order_then_new_data_up_to_cwnd_minus_pipe():
    """Holes 0, 3 and 6, each with at least DupThresh segments SACKed above:
    all three are lost, nothing of the flight is in the pipe, so NextSeg
    gives 0, 3, 6 (rule 1) and then new data (rule 2) until pipe = cwnd."""
    h, conn, peer, snd = flight(10, backlog=30)
    sent = sack(h, peer, snd, 0, (7, 10), (4, 6), (1, 3))
    cwnd = cwnd_segments(h, conn)
    assert cwnd == h.core.conn(conn)["ssthresh"] // FULL          # RFC 6675 §5 step (4.2)
    assert sent == [0, 3, 6] + list(range(10, 10 + cwnd - 3))


def test_a_sack_that_empties_the_pipe_sends_new_data_and_no_hole_twice():
    """HighRxt: the holes already retransmitted are not sent again; a newly
    SACKed segment leaves the pipe, so exactly one new segment goes out."""
    h, conn, peer, snd = flight(10, backlog=30)
    first = sack(h, peer, snd, 0, (7, 10), (4, 6), (1, 3))
    next_new = first[-1] + 1
    assert sack(h, peer, snd, 0, (10, 11), (7, 10), (4, 6)) == [next_new]
    assert sack(h, peer, snd, 0, (10, 12), (7, 10), (4, 6)) == [next_new + 1]


def test_a_partial_ack_keeps_recovery_and_counts_retransmitted_holes_in_the_pipe():
    """A cumulative ACK below RecoveryPoint: recovery goes on; the holes
    retransmitted and not yet acknowledged stay in the pipe (SetPipe (b)),
    so what is sent is what the acknowledged segments made room for."""
    h, conn, peer, snd = flight(10, backlog=30)
    first = sack(h, peer, snd, 0, (7, 10), (4, 6), (1, 3))
    sack(h, peer, snd, 0, (10, 11), (7, 10), (4, 6))
    # 0..2 acknowledged: 3 and 6 (retransmitted) and the new segments are the pipe
    out = sack(h, peer, snd, 3, (10, 11), (7, 10), (4, 6))
    assert h.core.conn(conn)["in_recovery"]
    in_flight_new = [s for s in first if s >= 10] + [first[-1] + 1]
    pipe = 2 + len([s for s in in_flight_new if s != 10])
    assert len(out) == cwnd_segments(h, conn) - pipe
    assert all(s > max(in_flight_new) for s in out)               # new data only


def test_recovery_ends_when_recovery_point_is_acknowledged():
    h, conn, peer, snd = flight(10, backlog=30)
    sack(h, peer, snd, 0, (7, 10), (4, 6), (1, 3))
    ssthresh = h.core.conn(conn)["ssthresh"]
    sack(h, peer, snd, 9, (10, 12))
    assert h.core.conn(conn)["in_recovery"]                         # 9 < RecoveryPoint (10)
    h.deliver(peer.segment("A", ack=(snd + 12 * FULL) % 2**32))
    info = h.core.conn(conn)
    assert not info["in_recovery"] and info["sacked_ranges"] == []
    assert info["cwnd"] == ssthresh                                 # RFC 6675 §5 (deflate to ssthresh)


def test_a_hole_with_fewer_than_dupthresh_segments_sacked_above_is_not_lost():
    """Holes 0 and 8; only segment 9 is SACKed above 8, so IsLost(8) is
    false: 8 stays in the pipe and NextSeg gives new data (rule 2) before it."""
    h, conn, peer, snd = flight(10, backlog=30)
    sent = sack(h, peer, snd, 0, (9, 10), (1, 8))
    cwnd = cwnd_segments(h, conn)
    assert sent == [0] + list(range(10, 10 + cwnd - 2))


def test_an_unsacked_tail_is_rescued_once_after_the_partial_ack_not_at_entry():
    """Holes 0 and 9 (the tail), nothing more to send.  At the entry ACK
    NextSeg gives only 0: §5 (4.3) sets RescueRxt with HighRxt so the tail is
    not rescued prematurely.  The partial ACK that covers 0's retransmission
    makes 9 the head: it goes at once (not after the RTO), and once -- the
    rescue retransmission (rule 4) must not send it a second time."""
    h, conn, peer, snd = flight(10)
    assert sack(h, peer, snd, 0, (1, 9)) == [0]
    partial = peer.segment("A", ack=(snd + 9 * FULL) % 2**32, options=[
        ("NOP", None), ("NOP", None), ("Timestamp", (peer.tsval, peer.ts_recent))])
    out = h.deliver(partial)
    assert [((p[TCP].seq - snd) % 2**32) // FULL for p in out if len(p[TCP].payload)] == [9]
