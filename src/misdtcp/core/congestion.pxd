# Congestion control, one interface over one file per algorithm (reno.pxd,
# cubic.pxd), like aioquic's congestion/ package: the algorithm sees only
# ACK, loss and RTO events and the stamped time, never a clock, so every
# replica computes the same cwnd.  Slow start and the window floors are
# common to all algorithms and live here.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from misdtcp.core.cc_state cimport CcState, CC_RENO, CC_CUBIC, cc_grow
from misdtcp.core.reno cimport reno_on_ack, reno_on_congestion, reno_on_rto
from misdtcp.core.cubic cimport cubic_on_ack, cubic_on_congestion, cubic_on_rto


cdef inline void cc_init(CcState *cc, uint8_t algo, uint32_t mss, uint32_t cap) noexcept nogil:
    cc.algo = algo
    cc.mss = mss
    # RFC 6928 initial window: 10 segments, bounded as in §2.
    cc.cwnd = 10 * mss
    cc.ssthresh = 0x7fffffff
    cc.bytes_acked = 0
    cc.w_max = 0
    cc.k = 0
    cc.w_est = 0
    cc.cwnd_epoch = 0
    cc.epoch_start_ns = 0
    cc.cwnd_cap = cap
    cc.after_timeout = 0
    cc.cwnd_prior = 0
    cc.grow_frac = 0


cdef inline void cc_on_ack(CcState *cc, uint32_t acked, uint64_t now_ns, uint64_t srtt_ns) noexcept nogil:
    """New data acknowledged outside of loss recovery."""
    if cc.cwnd < cc.ssthresh:
        # Slow start, counting bytes (RFC 3465); GSO ACKs cover many segments.
        cc_grow(cc, acked)
        return
    if cc.algo == CC_CUBIC:
        cubic_on_ack(cc, acked, now_ns, srtt_ns)
    else:
        reno_on_ack(cc, acked)


cdef inline void cc_on_congestion(CcState *cc, uint32_t flight, uint64_t now_ns) noexcept nogil:
    """Loss detected by duplicate ACKs or SACK: enter fast recovery."""
    cdef uint64_t w
    if cc.algo == CC_CUBIC:
        w = cubic_on_congestion(cc)
    else:
        w = reno_on_congestion(cc, flight)
    if w < 2 * cc.mss:
        w = 2 * cc.mss
    cc.ssthresh = <uint32_t>w
    cc.cwnd = cc.ssthresh
    cc.bytes_acked = 0
    cc.grow_frac = 0


cdef inline void cc_on_rto(CcState *cc, uint32_t flight, bint first) noexcept nogil:
    """Retransmission timeout (RFC 5681 §3.1 eq. (4) and the loss window).
    first: the first expiry since data was last acknowledged.  A segment
    that times out again was already retransmitted by the timer, and
    RFC 5681 §3.1 holds ssthresh then: recomputed from the one-segment
    flight of a retransmission, it would collapse to 2 MSS (and CUBIC's
    W_max to one segment) after two timeouts in a row."""
    cdef uint64_t w
    if first:
        if cc.algo == CC_CUBIC:
            w = cubic_on_rto(cc)
        else:
            w = reno_on_rto(cc, flight)
        if w < 2 * cc.mss:
            w = 2 * cc.mss
        cc.ssthresh = <uint32_t>w
    cc.cwnd = cc.mss
    cc.bytes_acked = 0
    cc.grow_frac = 0
