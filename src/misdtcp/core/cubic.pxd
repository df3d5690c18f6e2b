# CUBIC (RFC 9438): window growth as a cubic function of the time since the
# last congestion event, with a Reno-friendly estimate.  Windows in segments,
# time in seconds, all from stamped event times (never a clock).
from libc.stdint cimport uint32_t, uint64_t
from libc.math cimport cbrt
from misdtcp.core.cc_state cimport CcState, cc_grow

# RFC 9438 §5: C = 0.4, beta_cubic = 0.7 (written inline below as literals).


cdef inline void cubic_on_ack(CcState *cc, uint32_t acked, uint64_t now_ns, uint64_t srtt_ns) noexcept nogil:
    # RFC 9438 §4.2-4.3, per ACK, in segments.
    cdef double segs = <double>cc.cwnd / cc.mss
    cdef double t, target, w_cubic, alpha
    cdef uint64_t whole
    if cc.epoch_start_ns == 0:
        cc.epoch_start_ns = now_ns
        if cc.after_timeout:
            # §4.8: the first congestion-avoidance stage after a timeout
            # grows from where it starts, as after a new W_max: K = 0,
            # W_max = W_est = cwnd now
            cc.after_timeout = 0
            cc.k = 0
            cc.w_max = segs
        elif segs < cc.w_max:
            cc.k = cbrt((cc.w_max - segs) / 0.4)
        else:
            cc.k = 0
            cc.w_max = segs
        cc.w_est = segs
        cc.cwnd_epoch = segs
    t = <double>(now_ns - cc.epoch_start_ns + srtt_ns) / 1e9
    w_cubic = 0.4 * (t - cc.k) * (t - cc.k) * (t - cc.k) + cc.w_max
    # Reno-friendly estimate (§4.3): alpha = 3(1-beta)/(1+beta) until W_est
    # reaches the window the last reduction started from, then 1 (Reno's
    # own increase), so CUBIC is never slower than Reno
    alpha = 1.0 if cc.w_est >= cc.cwnd_prior else 3.0 * (1.0 - 0.7) / (1.0 + 0.7)
    cc.w_est += alpha * (<double>acked / cc.mss) / segs
    if w_cubic < cc.w_est:
        target = cc.w_est
    else:
        target = w_cubic
        if target > 1.5 * segs:
            target = 1.5 * segs
    if target > segs:
        # grow by (target - cwnd) / cwnd per acknowledged segment (§4.2).
        # A large window near W_max grows by a fraction of a byte per ACK:
        # keep the fractions, or the window never grows there
        cc.grow_frac += (target - segs) / segs * acked
        if cc.grow_frac >= cc.mss:
            whole = <uint64_t>(cc.grow_frac / cc.mss)
            cc_grow(cc, whole * cc.mss)
            cc.grow_frac -= <double>(whole * cc.mss)


cdef inline uint64_t cubic_on_congestion(CcState *cc) noexcept nogil:
    """RFC 9438 §4.6-4.7: fast convergence, multiplicative decrease by beta;
    returns the new ssthresh (floored by the caller)."""
    cdef double segs = <double>cc.cwnd / cc.mss
    if segs < cc.w_max:
        cc.w_max = segs * (1.0 + 0.7) / 2.0
    else:
        cc.w_max = segs
    cc.cwnd_prior = segs
    cc.epoch_start_ns = 0
    return <uint64_t>(cc.cwnd * 0.7)


cdef inline uint64_t cubic_on_rto(CcState *cc) noexcept nogil:
    """RFC 9438 §4.8: on a timeout ssthresh is set with beta_cubic (as on a
    loss); the growth curve restarts at the next congestion-avoidance stage
    (K = 0, W_max = the window there) instead of aiming back at the window
    that timed out."""
    cc.cwnd_prior = <double>cc.cwnd / cc.mss
    cc.after_timeout = 1
    cc.epoch_start_ns = 0
    return <uint64_t>(cc.cwnd * 0.7)
