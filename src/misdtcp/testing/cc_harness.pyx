# cython: language_level=3
"""The congestion-control algorithms of core/ (congestion.pxd over reno.pxd
and cubic.pxd) on one CcState, driven from Python: tests feed ACK, loss and
timeout events with stamped times and read the state back, exactly as the
core's connections use them."""
from libc.stdint cimport uint32_t, uint64_t

from misdtcp.core.cc_state cimport CcState, CC_RENO, CC_CUBIC
from misdtcp.core.congestion cimport cc_init, cc_on_ack, cc_on_congestion, cc_on_rto

_ALGOS = {"reno": CC_RENO, "cubic": CC_CUBIC}


cdef class CongestionControl:
    cdef CcState cc

    def __cinit__(self, algo="cubic", uint32_t mss=1448, uint32_t cap=0x7fffffff):
        if algo not in _ALGOS:
            raise ValueError(f"unknown congestion control {algo!r}")
        cc_init(&self.cc, _ALGOS[algo], mss, cap)

    def on_ack(self, uint32_t acked, uint64_t now_ns, uint64_t srtt_ns):
        cc_on_ack(&self.cc, acked, now_ns, srtt_ns)

    def on_congestion(self, uint32_t flight, uint64_t now_ns):
        cc_on_congestion(&self.cc, flight, now_ns)

    def on_rto(self, uint32_t flight, bint first=True):
        cc_on_rto(&self.cc, flight, first)

    def set_window(self, uint32_t cwnd, uint32_t ssthresh):
        """Put the window where a test needs it (as a long transfer would have)."""
        self.cc.cwnd = cwnd
        self.cc.ssthresh = ssthresh

    @property
    def state(self):
        return dict(self.cc)
