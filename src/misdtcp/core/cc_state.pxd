# The congestion-control state every algorithm works on: one plain struct
# inside the replicated connection state (no pointers, no allocation), so
# every replica computes the same cwnd from the same events.
from libc.stdint cimport uint8_t, uint32_t, uint64_t

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
    uint8_t after_timeout      # the next congestion-avoidance stage follows a timeout (RFC 9438 §4.8)
    double cwnd_prior          # cwnd when ssthresh was last set, segments (RFC 9438 §4.3's alpha switch)
    double grow_frac           # congestion-avoidance growth not yet a whole MSS, bytes (fractions kept)


cdef inline void cc_grow(CcState *cc, uint64_t add) noexcept nogil:
    cdef uint64_t w = cc.cwnd + add
    if w > cc.cwnd_cap:
        w = cc.cwnd_cap
    cc.cwnd = <uint32_t>w
