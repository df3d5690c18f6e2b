# Reno (RFC 5681) with byte counting (RFC 3465): the congestion-avoidance
# and loss responses.  Slow start is shared by every algorithm (congestion.pxd).
from libc.stdint cimport uint32_t, uint64_t
from misdtcp.core.cc_state cimport CcState, cc_grow


cdef inline void reno_on_ack(CcState *cc, uint32_t acked) noexcept nogil:
    """Congestion avoidance: one MSS per cwnd of acknowledged bytes."""
    cc.bytes_acked += acked
    if cc.bytes_acked >= cc.cwnd:
        cc.bytes_acked -= cc.cwnd
        cc_grow(cc, cc.mss)


cdef inline uint64_t reno_on_congestion(CcState *cc, uint32_t flight) noexcept nogil:
    """RFC 5681 eq. (4): the new ssthresh is FlightSize / 2 (floored by the caller)."""
    return flight // 2


cdef inline uint64_t reno_on_rto(CcState *cc, uint32_t flight) noexcept nogil:
    return flight // 2
