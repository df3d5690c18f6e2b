/* Internet checksum (RFC 1071) primitives shared by the wire, fault and
 * device code.  The running sum is a 64-bit accumulator of 16-bit words in
 * network byte order, so partial sums over pieces can be added and folded
 * once.  A piece that starts at an odd byte offset within the checksummed
 * region must be byte-swapped before adding (csum_add_at handles it). */
#ifndef MISDTCP_INET_CSUM_H
#define MISDTCP_INET_CSUM_H
#include <stdint.h>
#include <stddef.h>
#include <string.h>

static inline uint64_t csum_partial(const uint8_t *p, size_t n, uint64_t sum)
{
    /* 8 bytes at a time; carries are kept in the upper bits and folded later. */
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        /* add the four 16-bit big-endian words as native 32-bit halves */
        sum += (w & 0xffffffffu);
        sum += (w >> 32);
        p += 8; n -= 8;
    }
    while (n >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        sum += w;
        p += 2; n -= 2;
    }
    if (n) {
        uint16_t w = 0;
        memcpy(&w, p, 1);
        sum += w;
    }
    return sum;
}

/* Fold to 16 bits.  The value is in *native* order of the words summed
 * above, i.e. it can be stored with memcpy straight into a header field. */
static inline uint16_t csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)sum;
}

static inline uint16_t csum_finish(uint64_t sum)
{
    return (uint16_t)~csum_fold(sum);
}

static inline uint16_t csum_bswap16(uint16_t v)
{
    return (uint16_t)((v >> 8) | (v << 8));
}

/* Sum of a piece that starts at byte offset `at` of the checksummed region. */
static inline uint64_t csum_add_at(uint64_t sum, const uint8_t *p, size_t n, size_t at)
{
    uint16_t piece = csum_fold(csum_partial(p, n, 0));
    if (at & 1)
        piece = csum_bswap16(piece);
    return sum + piece;
}

/* TCP/UDP pseudo-header sum for IPv4: addresses as stored in the packet
 * (network order bytes), protocol and L4 length in host order. */
static inline uint64_t csum_pseudo_v4(const uint8_t *src4, const uint8_t *dst4,
                                      uint8_t proto, uint32_t l4len)
{
    uint8_t ph[12];
    memcpy(ph, src4, 4);
    memcpy(ph + 4, dst4, 4);
    ph[8] = 0;
    ph[9] = proto;
    ph[10] = (uint8_t)(l4len >> 8);
    ph[11] = (uint8_t)l4len;
    return csum_partial(ph, 12, 0);
}

/* TCP/ICMPv6 pseudo-header sum for IPv6 (RFC 8200 §8.1): source and
 * destination addresses as stored in the packet, the upper-layer length as
 * a 32-bit word, three zero bytes and the next-header value. */
static inline uint64_t csum_pseudo_v6(const uint8_t *src16, const uint8_t *dst16,
                                      uint8_t proto, uint32_t l4len)
{
    uint8_t ph[8];
    uint64_t sum = csum_partial(src16, 16, 0);
    sum = csum_partial(dst16, 16, sum);
    ph[0] = (uint8_t)(l4len >> 24);
    ph[1] = (uint8_t)(l4len >> 16);
    ph[2] = (uint8_t)(l4len >> 8);
    ph[3] = (uint8_t)l4len;
    ph[4] = 0;
    ph[5] = 0;
    ph[6] = 0;
    ph[7] = proto;
    return csum_partial(ph, 8, sum);
}
#endif
