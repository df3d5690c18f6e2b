"""Congestion control (core/congestion.pxd, reno.pxd, cubic.pxd): the
responses to repeated timeouts (RFC 5681 §3.1), CUBIC after a timeout
(RFC 9438 §4.8), CUBIC's Reno-friendly alpha (§4.3), and growth that is a
fraction of a byte per ACK (§4.2) -- on the core's connections and on one
CcState driven event by event (testing/cc_harness)."""
import pytest
from scapy.layers.inet import TCP

from harness import Harness, Peer, open_connection
from misdtcp.testing.cc_harness import CongestionControl

MS = 1_000_000
SEC = 1_000_000_000
FULL = 1448


@pytest.mark.parametrize("cc", ["cubic", "reno"])
def test_back_to_back_timeouts_hold_ssthresh(cc):
    """RFC 5681 §3.1: when a segment already retransmitted by the timer
    times out again, ssthresh is held.  Recomputed from the one-segment
    flight of the retransmission it collapsed to 2 MSS (and CUBIC's W_max to
    a single segment) after the second timeout."""
    h = Harness.create(cc=cc)
    conn, peer, _ = open_connection(h, Peer(window=65535))
    h.write(conn, b"x" * (10 * FULL))                  # the initial window, all lost

    def until_timeout(n):
        while h.core.conn(conn)["backoff"] < n:
            h.run_timers(1)
        return h.core.conn(conn)

    first = until_timeout(1)
    assert first["cwnd"] == FULL
    assert first["ssthresh"] == (7 * FULL if cc == "cubic" else 5 * FULL)
    second = until_timeout(2)                          # the retransmission times out too
    assert second["cwnd"] == FULL
    assert second["ssthresh"] == first["ssthresh"]
    if cc == "cubic":
        assert second["cc"]["cwnd_prior"] == 10        # the window that first timed out


def test_cubic_after_a_timeout_starts_a_new_curve():
    """RFC 9438 §4.8: after a timeout, the first congestion-avoidance stage
    uses K = 0 and W_max = W_est = the window at its start -- it does not
    aim back (concave) at the window that timed out."""
    cc = CongestionControl("cubic", mss=1000)
    cc.set_window(120 * 1000, 0x7fffffff)
    cc.on_congestion(120 * 1000, SEC)                  # an earlier loss: W_max = 120
    cc.set_window(100 * 1000, 84 * 1000)               # grown back to 100 when the timeout comes
    cc.on_rto(100 * 1000, first=True)
    s = cc.state
    assert s["cwnd"] == 1000 and s["ssthresh"] == 70 * 1000
    now = SEC
    while cc.state["cwnd"] < cc.state["ssthresh"]:    # slow start back to ssthresh
        now += MS
        cc.on_ack(1000, now, 50 * MS)
    at_ca = cc.state["cwnd"] / 1000
    cc.on_ack(1000, now + MS, 50 * MS)                 # the first ACK of congestion avoidance
    s = cc.state
    assert s["k"] == 0
    assert s["w_max"] == at_ca and s["w_est"] >= at_ca


def test_cubic_reno_friendly_alpha_becomes_one_past_the_prior_window():
    """RFC 9438 §4.3: W_est grows by alpha_cubic = 3(1-beta)/(1+beta) per
    window until it reaches the window of the last reduction, then by 1
    (Reno's increase)."""
    cc = CongestionControl("cubic", mss=1000)
    cc.set_window(100 * 1000, 0x7fffffff)
    cc.on_congestion(100 * 1000, SEC)                  # cwnd 70, cwnd_prior 100
    now = SEC
    cc.on_ack(1000, now, 100 * MS)                      # starts the epoch: W_est = 70

    def one_window():
        nonlocal now
        before = cc.state["w_est"]
        for _ in range(cc.state["cwnd"] // 1000):
            cc.on_ack(1000, now, 100 * MS)
        now += 100 * MS
        return cc.state["w_est"] - before

    assert one_window() == pytest.approx(3 * 0.3 / 1.7, rel=0.05)
    while cc.state["w_est"] < 100:
        one_window()
    assert one_window() == pytest.approx(1.0, rel=0.05)


def test_cubic_keeps_growth_smaller_than_a_byte_per_ack():
    """RFC 9438 §4.2: cwnd grows by (target - cwnd) / cwnd per acknowledged
    segment.  With a large window and small ACKs that is a fraction of a byte
    per ACK; truncated to whole bytes it was zero, and the window never grew."""
    cc = CongestionControl("cubic", mss=1448)
    cc.set_window(1000 * 1448, 1000 * 1448)            # in congestion avoidance at 1000 segments
    start = cc.state["cwnd"]
    for _ in range(40_000):                             # 100-byte ACKs at a steady 1 s into the epoch
        cc.on_ack(100, SEC, SEC)
    assert cc.state["cwnd"] >= start + 1448
