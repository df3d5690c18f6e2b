# Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982).
#
# Every comparison of TCP sequence or acknowledgement numbers in misdtcp goes
# through these helpers: a plain `<` on two uint32 sequence numbers is wrong
# as soon as the space wraps, and wrap is reached after 4 GiB of one
# connection (a few seconds at the speeds this stack targets).
from libc.stdint cimport uint32_t, int32_t


cdef inline int32_t seq_diff(uint32_t a, uint32_t b) noexcept nogil:
    """a - b as a signed distance (valid while |a - b| < 2**31)."""
    return <int32_t>(a - b)


cdef inline bint seq_lt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0


cdef inline bint seq_le(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) <= 0


cdef inline bint seq_gt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) > 0


cdef inline bint seq_ge(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) >= 0


cdef inline uint32_t seq_max(uint32_t a, uint32_t b) noexcept nogil:
    return b if <int32_t>(a - b) < 0 else a


cdef inline uint32_t seq_min(uint32_t a, uint32_t b) noexcept nogil:
    return a if <int32_t>(a - b) < 0 else b


cdef inline bint seq_in(uint32_t x, uint32_t lo, uint32_t hi) noexcept nogil:
    """lo <= x < hi in sequence space."""
    return <int32_t>(x - lo) >= 0 and <int32_t>(x - hi) < 0
