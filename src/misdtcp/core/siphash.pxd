# SipHash-2-4 (include/siphash.h): the keyed hash behind ISNs (RFC 6528),
# SYN cookies, timestamp offsets and the replica-state digest.
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "siphash.h" nogil:
    uint64_t siphash24(const uint8_t *data, size_t n, uint64_t k0, uint64_t k1)
