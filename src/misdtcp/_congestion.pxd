# Congestion control (one interface, two algorithms): Reno (RFC 5681 with
# RFC 3465 byte counting) and CUBIC (RFC 9438).
#
# Like aioquic's congestion/ package, the algorithm sees only ACK, loss and
# RTO events and the stamped time, never a clock, so every replica computes
# the same cwnd.  All state is one plain struct inside the connection.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.math cimport cbrt

cdef enum:
    CC_RENO = 0
    CC_CUBIC = 1

ctypedef struct CcState:
    uint8_t algo
    uint32_t mss
    uint32_t cwnd              # bytes
    uint32_t ssthresh          # bytes
    uint64_t bytes_acked       # congestion-avoidance byte counter (RFC 3465)
    # CUBIC (RFC 9438 §4), windows in segments, time in seconds
    double w_max
    double k
    double w_est
    double cwnd_epoch          # cwnd at the start of the epoch, segments
    uint64_t epoch_start_ns    # 0: no epoch yet
    uint32_t cwnd_cap          # upper bound, bytes (keeps arithmetic in range)

# RFC 9438 §5: C = 0.4, beta_cubic = 0.7 (written inline below as literals).


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


cdef inline void _cc_grow(CcState *cc, uint64_t add) noexcept nogil:
    cdef uint64_t w = cc.cwnd + add
    if w > cc.cwnd_cap:
        w = cc.cwnd_cap
    cc.cwnd = <uint32_t>w


cdef inline void _cubic_ca(CcState *cc, uint32_t acked, uint64_t now_ns, uint64_t srtt_ns) noexcept nogil:
    # RFC 9438 §4.2-4.3, per ACK, in segments.
    cdef double segs = <double>cc.cwnd / cc.mss
    cdef double t, target, w_cubic
    if cc.epoch_start_ns == 0:
        cc.epoch_start_ns = now_ns
        if segs < cc.w_max:
            cc.k = cbrt((cc.w_max - segs) / 0.4)
        else:
            cc.k = 0
            cc.w_max = segs
        cc.w_est = segs
        cc.cwnd_epoch = segs
    t = <double>(now_ns - cc.epoch_start_ns + srtt_ns) / 1e9
    w_cubic = 0.4 * (t - cc.k) * (t - cc.k) * (t - cc.k) + cc.w_max
    # Reno-friendly estimate (§4.3): alpha = 3(1-beta)/(1+beta)
    cc.w_est += (3.0 * (1.0 - 0.7) / (1.0 + 0.7)) * (<double>acked / cc.mss) / segs
    if w_cubic < cc.w_est:
        target = cc.w_est
    else:
        target = w_cubic
        if target > 1.5 * segs:
            target = 1.5 * segs
    if target > segs:
        # grow by (target - cwnd) / cwnd per acknowledged segment
        cc.bytes_acked += <uint64_t>((target - segs) / segs * acked)
        if cc.bytes_acked >= cc.mss:
            _cc_grow(cc, (cc.bytes_acked // cc.mss) * cc.mss)
            cc.bytes_acked %= cc.mss


cdef inline void cc_on_ack(CcState *cc, uint32_t acked, uint64_t now_ns, uint64_t srtt_ns) noexcept nogil:
    """New data acknowledged outside of loss recovery."""
    if cc.cwnd < cc.ssthresh:
        # Slow start, counting bytes (RFC 3465); GSO ACKs cover many segments.
        _cc_grow(cc, acked)
        return
    if cc.algo == CC_CUBIC:
        _cubic_ca(cc, acked, now_ns, srtt_ns)
        return
    # Reno congestion avoidance: one MSS per cwnd of acknowledged bytes.
    cc.bytes_acked += acked
    if cc.bytes_acked >= cc.cwnd:
        cc.bytes_acked -= cc.cwnd
        _cc_grow(cc, cc.mss)


cdef inline void cc_on_congestion(CcState *cc, uint32_t flight, uint64_t now_ns) noexcept nogil:
    """Loss detected by duplicate ACKs or SACK: enter fast recovery."""
    cdef double segs = <double>cc.cwnd / cc.mss
    cdef uint64_t w
    if cc.algo == CC_CUBIC:
        # RFC 9438 §4.6-4.7: fast convergence, multiplicative decrease by beta.
        if segs < cc.w_max:
            cc.w_max = segs * (1.0 + 0.7) / 2.0
        else:
            cc.w_max = segs
        w = <uint64_t>(cc.cwnd * 0.7)
        cc.epoch_start_ns = 0
    else:
        # RFC 5681 eq. (4): ssthresh = max(FlightSize / 2, 2 * SMSS)
        w = flight // 2
    if w < 2 * cc.mss:
        w = 2 * cc.mss
    cc.ssthresh = <uint32_t>w
    cc.cwnd = cc.ssthresh
    cc.bytes_acked = 0


cdef inline void cc_on_rto(CcState *cc, uint32_t flight) noexcept nogil:
    """Retransmission timeout (RFC 5681 §3.1 eq. (4) and loss window)."""
    cdef uint64_t w = flight // 2
    cdef double segs = <double>cc.cwnd / cc.mss
    if cc.algo == CC_CUBIC:
        cc.w_max = segs
        cc.epoch_start_ns = 0
        w = <uint64_t>(cc.cwnd * 0.7)
    if w < 2 * cc.mss:
        w = 2 * cc.mss
    cc.ssthresh = <uint32_t>w
    cc.cwnd = cc.mss
    cc.bytes_acked = 0
