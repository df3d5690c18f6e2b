# The Internet checksum (RFC 1071), with incremental helpers and the IPv4
# and IPv6 pseudo-header sums (RFC 9293 §3.1, RFC 8200 §8.1).  The C
# implementations live in include/inet_csum.h so the hot path inlines them.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "inet_csum.h" nogil:
    uint64_t csum_partial(const uint8_t *p, size_t n, uint64_t sum)
    uint16_t csum_fold(uint64_t sum)
    uint16_t csum_finish(uint64_t sum)
    uint64_t csum_add_at(uint64_t sum, const uint8_t *p, size_t n, size_t at)
    uint64_t csum_pseudo_v4(const uint8_t *src4, const uint8_t *dst4, uint8_t proto, uint32_t l4len)
    uint64_t csum_pseudo_v6(const uint8_t *src16, const uint8_t *dst16, uint8_t proto, uint32_t l4len)
