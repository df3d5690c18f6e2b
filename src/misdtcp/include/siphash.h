/* SipHash-2-4 (Aumasson & Bernstein), 64-bit output, for the keyed functions
 * RFC 6528 asks for (ISNs), SYN cookies and per-connection timestamp offsets.
 * Deterministic for a given key, so every replica computes the same ISN. */
#ifndef MISDTCP_SIPHASH_H
#define MISDTCP_SIPHASH_H
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND                                                     \
    do {                                                              \
        v0 += v1; v1 = SIP_ROTL(v1, 13); v1 ^= v0; v0 = SIP_ROTL(v0, 32); \
        v2 += v3; v3 = SIP_ROTL(v3, 16); v3 ^= v2;                    \
        v0 += v3; v3 = SIP_ROTL(v3, 21); v3 ^= v0;                    \
        v2 += v1; v1 = SIP_ROTL(v1, 17); v1 ^= v2; v2 = SIP_ROTL(v2, 32); \
    } while (0)

static inline uint64_t siphash24(const uint8_t *in, size_t inlen, uint64_t k0, uint64_t k1)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = ((uint64_t)inlen) << 56;
    const uint8_t *end = in + inlen - (inlen % 8);
    uint64_t m;
    int left = (int)(inlen & 7);
    for (; in != end; in += 8) {
        memcpy(&m, in, 8);   /* little-endian hosts only (x86-64, aarch64) */
        v3 ^= m;
        SIP_ROUND; SIP_ROUND;
        v0 ^= m;
    }
    switch (left) {
    case 7: b |= ((uint64_t)in[6]) << 48; /* fall through */
    case 6: b |= ((uint64_t)in[5]) << 40; /* fall through */
    case 5: b |= ((uint64_t)in[4]) << 32; /* fall through */
    case 4: b |= ((uint64_t)in[3]) << 24; /* fall through */
    case 3: b |= ((uint64_t)in[2]) << 16; /* fall through */
    case 2: b |= ((uint64_t)in[1]) << 8;  /* fall through */
    case 1: b |= ((uint64_t)in[0]); break;
    case 0: break;
    }
    v3 ^= b;
    SIP_ROUND; SIP_ROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIP_ROUND; SIP_ROUND; SIP_ROUND; SIP_ROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}
#endif
