"""CUBIC against RFC 9438 itself: W_max and K at a congestion event, and the
window following W_cubic(t) = C (t - K)^3 + W_max (§4.2) through its concave
region, the plateau at W_max and the convex region beyond, over a simulated
ACK clock with stamped time (no real clock: the core reads none).

The oracle is the RFC's formula, not the implementation: C = 0.4,
beta = 0.7, windows in segments, t in seconds since the epoch began.  The
window trails the curve by at most one round trip (the target is W_cubic
one RTT ahead and the window grows toward it over an RTT of ACKs)."""
import math

import pytest

from scapy.layers.inet import TCP

from harness import Harness, Peer, open_connection

MS = 1_000_000
MSS = 1460                    # no timestamps in these runs
C, BETA = 0.4, 0.7
RTT_MS = 100


def cubic_connection():
    h = Harness.create(cc="cubic", sndbuf=16 << 20)
    conn, peer, synack = open_connection(h, Peer(window=65535), ts=False, sack=False, wscale=7)
    snd = synack[TCP].seq + 1
    return h, conn, peer, snd


def cc(h, conn):
    return h.core.conn(conn)["cc"]


def segs(h, conn):
    return h.core.conn(conn)["cwnd"] / MSS


def one_rtt(h, conn, peer, una):
    """Acknowledge what is in flight, one ACK per segment, spread over one
    RTT; the application keeps more to send than the window allows."""
    info = h.core.conn(conn)
    if info["snd_end_off"] - info["bytes_out"] < 4 * info["cwnd"] + (1 << 20):
        h.write(conn, b"c" * (4 * info["cwnd"] + (2 << 20)))
        info = h.core.conn(conn)
    flight = (info["snd_max"] - una) % 2**32
    n = max(1, flight // MSS)
    for i in range(n):
        una = (una + MSS) % 2**32 if i < n - 1 else info["snd_max"]
        h.deliver(peer.segment("A", ack=una, ts=False), after_ms=RTT_MS / n)
    return una


def slow_start_to(h, conn, peer, una, target_segs):
    while segs(h, conn) < target_segs:
        una = one_rtt(h, conn, peer, una)
    return una


def loss_event(h, conn, peer, una):
    """Three duplicate ACKs (the first unacknowledged segment lost), then
    the ACK that ends recovery."""
    for _ in range(3):
        h.deliver(peer.segment("A", ack=una, ts=False), after_ms=1)
    assert h.core.conn(conn)["in_recovery"]
    snd_max = h.core.conn(conn)["snd_max"]
    h.deliver(peer.segment("A", ack=snd_max, ts=False), after_ms=RTT_MS)
    assert not h.core.conn(conn)["in_recovery"]
    return snd_max


def w_cubic(t, w_max, k):
    return C * (t - k) ** 3 + w_max


def test_a_congestion_event_sets_w_max_and_k_and_beta():
    h, conn, peer, una = cubic_connection()
    una = slow_start_to(h, conn, peer, una, 80)
    before = segs(h, conn)
    una = loss_event(h, conn, peer, una)
    state = cc(h, conn)
    # RFC 9438 §4.6: ssthresh = cwnd * beta; §4.7, first event: W_max = cwnd
    assert state["w_max"] == pytest.approx(before)
    assert h.core.conn(conn)["ssthresh"] == int(before * MSS * BETA)
    assert segs(h, conn) == pytest.approx(before * BETA, abs=1 / MSS)
    # the epoch starts with the first ACK in congestion avoidance: K (§4.2 eq. 2)
    una = one_rtt(h, conn, peer, una)
    state = cc(h, conn)
    assert state["cwnd_epoch"] == pytest.approx(before * BETA, abs=0.01)
    assert state["k"] == pytest.approx(math.cbrt((before - state["cwnd_epoch"]) / C), rel=1e-9)
    assert state["k"] == pytest.approx(math.cbrt(before * (1 - BETA) / C), rel=1e-3)


def test_fast_convergence_lowers_w_max_when_the_window_shrank():
    """§4.7: a congestion event below the previous W_max releases bandwidth:
    W_max = cwnd (1 + beta) / 2."""
    h, conn, peer, una = cubic_connection()
    una = slow_start_to(h, conn, peer, una, 80)
    first = segs(h, conn)
    una = loss_event(h, conn, peer, una)
    una = one_rtt(h, conn, peer, una)
    assert segs(h, conn) < first
    second = segs(h, conn)
    una = loss_event(h, conn, peer, una)
    assert cc(h, conn)["w_max"] == pytest.approx(second * (1 + BETA) / 2)


@pytest.mark.slow
def test_the_window_follows_w_cubic_through_concave_plateau_and_convex_regions():
    """W_max = 160 segments and an RTT of 100 ms keep W_cubic above the
    Reno-friendly estimate (§4.3) up to K + 1.5 s, so the window is W_cubic's."""
    h, conn, peer, una = cubic_connection()
    una = slow_start_to(h, conn, peer, una, 160)
    w_max = segs(h, conn)
    una = loss_event(h, conn, peer, una)
    una = one_rtt(h, conn, peer, una)            # the epoch begins
    state = cc(h, conn)
    k, start = state["k"], state["epoch_start_ns"]
    rtt = RTT_MS / 1000
    samples = []
    while (h.now - start) / 1e9 < k + 1.5:
        una = one_rtt(h, conn, peer, una)
        t = (h.now - start) / 1e9
        samples.append((t, segs(h, conn)))
        assert cc(h, conn)["w_est"] < w_cubic(t, w_max, k)      # the cubic region, not Reno's
    for t, w in samples:
        # the window trails W_cubic(t + RTT) by at most one RTT of growth
        low, high = w_cubic(t - rtt, w_max, k), w_cubic(t + 2 * rtt, w_max, k)
        assert low - 1.5 <= w <= high + 1.5, (t, w, low, high)
    # concave up to K: growth per RTT slows as t nears K ...
    early = [w for t, w in samples if t < k / 3]
    near = [w for t, w in samples if k - 0.5 < t < k]
    assert early[1] - early[0] > 2 * (near[-1] - near[-2])
    # ... the plateau sits at W_max ...
    at_k = min(samples, key=lambda s: abs(s[0] - k))[1]
    assert at_k == pytest.approx(w_max, abs=1.5)
    # ... and beyond K the growth is convex: faster and faster
    late = [w for t, w in samples if t > k]
    third = len(late) // 3
    assert late[-1] - late[-third] > late[third] - late[0] >= 0
    assert late[-1] > w_max + 1


def test_reno_friendly_estimate_grows_by_alpha_cubic_then_by_one_above_w_max():
    """A small W_max: the Reno-friendly estimate W_est grows by
    α_cubic = 3(1-β)/(1+β) segments per RTT while below W_max, then by one
    segment per RTT (§4.3)."""
    alpha = 3 * (1 - BETA) / (1 + BETA)
    h, conn, peer, una = cubic_connection()
    una = slow_start_to(h, conn, peer, una, 20)
    una = loss_event(h, conn, peer, una)
    una = one_rtt(h, conn, peer, una)
    w_max = cc(h, conn)["w_max"]
    below = cc(h, conn)["w_est"]
    una = one_rtt(h, conn, peer, una)
    assert cc(h, conn)["w_est"] - below == pytest.approx(alpha, abs=0.1)
    while cc(h, conn)["w_est"] < w_max + 1:
        una = one_rtt(h, conn, peer, una)
    above = cc(h, conn)["w_est"]
    una = one_rtt(h, conn, peer, una)
    assert cc(h, conn)["w_est"] - above == pytest.approx(1.0, abs=0.1)
