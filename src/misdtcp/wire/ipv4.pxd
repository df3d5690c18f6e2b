# IPv4 (RFC 791): named field offsets, a zero-copy validating parser and a
# header builder.  Addresses are kept as host-order uint32
# (10.77.0.2 == 0x0a4d0002).
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy
from misdtcp.wire.bytes cimport rd16, rd32, wr16, wr32
from misdtcp.wire.checksum cimport csum_partial, csum_fold, csum_finish
from misdtcp.wire.drops cimport (DROP_NONE, DROP_IP_TRUNCATED, DROP_IP_VERSION, DROP_IP_HEADER_LENGTH,
                                 DROP_IP_CHECKSUM, DROP_IP_FRAGMENT)

# Field offsets in the header (RFC 791 §3.1).
cdef enum:
    IP_VERSION_IHL = 0
    IP_TOS = 1
    IP_TOTAL_LENGTH = 2
    IP_IDENT = 4
    IP_FLAGS_FRAGMENT = 6
    IP_TTL = 8
    IP_PROTOCOL = 9
    IP_CHECKSUM = 10
    IP_SOURCE = 12
    IP_DESTINATION = 16
    IP_HDR_LEN = 20          # without options: what misdtcp sends

cdef enum:
    IP_FLAG_DF = 0x4000
    IP_MF_AND_OFFSET = 0x3fff
    IP_DEFAULT_TTL = 64

cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6

ctypedef struct Ipv4Header:
    uint32_t saddr
    uint32_t daddr
    uint32_t ip_len          # total length (trailing padding excluded)
    uint32_t l4_off          # offset of the transport header in the frame
    uint8_t protocol


cdef inline bint bad_source(uint32_t a) noexcept nogil:
    """Zero, broadcast, loopback (127/8), multicast or reserved (>= 224/4)."""
    cdef uint32_t top = a >> 24
    return a == 0 or a == 0xffffffffu or top == 127 or top >= 224


cdef inline int parse_ipv4(const uint8_t *f, uint32_t n, Ipv4Header *ip) noexcept nogil:
    """Validate the IPv4 header of f[0:n] (RFC 791, RFC 1122 §3.2.1)."""
    cdef uint32_t ihl, tot
    if n < IP_HDR_LEN:
        return DROP_IP_TRUNCATED
    if (f[IP_VERSION_IHL] >> 4) != 4:
        return DROP_IP_VERSION
    ihl = (f[IP_VERSION_IHL] & 0x0f) * 4
    if ihl < IP_HDR_LEN or ihl > n:
        return DROP_IP_HEADER_LENGTH
    tot = rd16(f + IP_TOTAL_LENGTH)
    if tot < ihl or tot > n:
        return DROP_IP_TRUNCATED
    if csum_fold(csum_partial(f, ihl, 0)) != 0xffff:
        return DROP_IP_CHECKSUM
    # MF set or a non-zero fragment offset: misdtcp does not reassemble.
    if (rd16(f + IP_FLAGS_FRAGMENT) & IP_MF_AND_OFFSET) != 0:
        return DROP_IP_FRAGMENT
    ip.ip_len = tot
    ip.saddr = rd32(f + IP_SOURCE)
    ip.daddr = rd32(f + IP_DESTINATION)
    ip.l4_off = ihl
    ip.protocol = f[IP_PROTOCOL]
    return DROP_NONE


cdef inline void write_ipv4_header(uint8_t *p, uint32_t saddr, uint32_t daddr, uint8_t proto,
                                   uint32_t total_len, uint16_t ident) noexcept nogil:
    """IPv4 header without options, DF set (we do not fragment), TTL 64,
    header checksum filled in."""
    cdef uint16_t c
    p[IP_VERSION_IHL] = 0x45
    p[IP_TOS] = 0
    wr16(p + IP_TOTAL_LENGTH, <uint16_t>total_len)
    wr16(p + IP_IDENT, ident)
    wr16(p + IP_FLAGS_FRAGMENT, IP_FLAG_DF)
    p[IP_TTL] = IP_DEFAULT_TTL
    p[IP_PROTOCOL] = proto
    p[IP_CHECKSUM] = 0
    p[IP_CHECKSUM + 1] = 0
    wr32(p + IP_SOURCE, saddr)
    wr32(p + IP_DESTINATION, daddr)
    c = csum_finish(csum_partial(p, IP_HDR_LEN, 0))
    memcpy(p + IP_CHECKSUM, &c, 2)
