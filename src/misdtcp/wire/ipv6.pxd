# IPv6 (RFC 8200): named field offsets, a zero-copy validating parser that
# walks the extension-header chain, and a header builder.  Addresses stay
# 16 bytes in network order (pointers into the frame, or copies); the core
# keys connections by them (misdtcp's 128-bit key: an IPv4 address is the
# IPv4-mapped ::ffff:a.b.c.d, RFC 4291 §2.5.5.2, which therefore never
# comes from the wire as an IPv6 source).
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memcmp
from misdtcp.wire.bytes cimport rd16, rd32, wr16, wr32
from misdtcp.wire.drops cimport (DROP_NONE, DROP_IP_TRUNCATED, DROP_IP_VERSION, DROP_IP_FRAGMENT,
                                 DROP_PROTOCOL, DROP_IP6_EXT_HEADER, DROP_IP6_EXT_CHAIN, DROP_IP6_ROUTING,
                                 DROP_IP6_OPTION)

# Field offsets in the fixed header (RFC 8200 §3).
cdef enum:
    IP6_VERSION_CLASS_FLOW = 0   # version (4 bits), traffic class (8), flow label (20)
    IP6_PAYLOAD_LENGTH = 4
    IP6_NEXT_HEADER = 6
    IP6_HOP_LIMIT = 7
    IP6_SOURCE = 8
    IP6_DESTINATION = 24
    IP6_HDR_LEN = 40             # misdtcp sends no extension header
    IP6_DEFAULT_HOP_LIMIT = 64   # as Linux's net.ipv6.conf.*.hop_limit
    IP6_MIN_MTU = 1280           # RFC 8200 §5

# Next-header values (IANA "Assigned Internet Protocol Numbers").
cdef enum:
    IPPROTO_HOPOPTS = 0
    IPPROTO_TCP6 = 6
    IPPROTO_ROUTING = 43
    IPPROTO_FRAGMENT = 44
    IPPROTO_ICMPV6 = 58
    IPPROTO_NONE = 59
    IPPROTO_DSTOPTS = 60

cdef enum:
    # RFC 8504 §5.3 lets a host bound what it walks; Linux bounds the
    # options of one header at 8 (net.ipv6.max_hbh_opts_number and
    # max_dst_opts_number); misdtcp bounds the chain at 8 headers too.
    IP6_MAX_EXT_HEADERS = 8
    IP6_MAX_OPTIONS = 8
    IP6_OPT_PAD1 = 0
    IP6_OPT_PADN = 1
    IP6_ROUTING_TYPE0 = 0


ctypedef struct Ipv6Header:
    const uint8_t *saddr     # 16 bytes in the frame
    const uint8_t *daddr
    uint32_t ip_len          # 40 + payload length (trailing padding excluded)
    uint32_t l4_off          # offset of the upper-layer header, after the extension headers
    uint8_t protocol         # the upper-layer protocol (the last next-header value)


cdef inline bint bad_source6(const uint8_t *a) noexcept nogil:
    """Unspecified (::), loopback (::1), multicast (ff00::/8: RFC 4291
    §2.7) or IPv4-mapped (::ffff:0:0/96: Linux's tcp_v6_conn_request drops
    those, and misdtcp keys IPv4 peers by them)."""
    cdef uint32_t w0 = rd32(a), w1 = rd32(a + 4), w2 = rd32(a + 8), w3 = rd32(a + 12)
    if a[0] == 0xff:
        return True
    if w0 == 0 and w1 == 0:
        if w2 == 0 and (w3 == 0 or w3 == 1):
            return True
        if w2 == 0xffff:
            return True
    return False


cdef inline int _ipv6_options(const uint8_t *h, uint32_t hlen) noexcept nogil:
    """The TLV options of a hop-by-hop or destination-options header of
    hlen bytes at h (RFC 8200 §4.2).  Padding is skipped -- at most 7 bytes
    in a row, PadN all zeros, as Linux checks after RFC 4942 §2.1.9.5;
    another option is skipped only when the two high bits of its type say
    so (00), else the packet is discarded (misdtcp sends no Parameter
    Problem); at most IP6_MAX_OPTIONS of them."""
    cdef uint32_t i = 2, olen, k, options = 0, pad = 0
    cdef uint8_t kind
    while i < hlen:
        kind = h[i]
        if kind == IP6_OPT_PAD1:
            pad += 1
            if pad > 7:
                return DROP_IP6_EXT_HEADER
            i += 1
            continue
        if i + 2 > hlen:
            return DROP_IP6_EXT_HEADER
        olen = h[i + 1]
        if i + 2 + olen > hlen:
            return DROP_IP6_EXT_HEADER
        if kind == IP6_OPT_PADN:
            pad += 2 + olen
            if pad > 7:
                return DROP_IP6_EXT_HEADER
            for k in range(olen):
                if h[i + 2 + k] != 0:
                    return DROP_IP6_EXT_HEADER
        else:
            pad = 0
            options += 1
            if options > IP6_MAX_OPTIONS:
                return DROP_IP6_EXT_HEADER
            if (kind >> 6) != 0:
                return DROP_IP6_OPTION
        i += 2 + olen
    return DROP_NONE


cdef inline int parse_ipv6(const uint8_t *f, uint32_t head, uint32_t n, Ipv6Header *ip) noexcept nogil:
    """Validate the IPv6 header of an n-byte frame whose first `head` bytes
    are at f, and walk its extension headers (which must lie in the head)
    to the upper-layer header.

    RFC 8200 §4: hop-by-hop options only right after the fixed header;
    destination options and hop-by-hop options walked option by option;
    a routing header with segments left dropped (a host forwards nothing;
    RFC 5095: type 0 is never executed), one with none left skipped (§4.4);
    a fragment header with an offset or more fragments dropped as IPv4
    fragments are (misdtcp does not reassemble), an atomic fragment (offset
    0, no more fragments) processed as a whole packet (RFC 6946 §4, as
    Linux); anything else -- no next header, ESP, AH, mobility -- is not a
    protocol misdtcp speaks."""
    cdef uint32_t plen, end, limit, off = IP6_HDR_LEN, hlen, headers = 0
    cdef uint8_t nh
    cdef int r
    if n < IP6_HDR_LEN or head < IP6_HDR_LEN:
        return DROP_IP_TRUNCATED
    if (f[IP6_VERSION_CLASS_FLOW] >> 4) != 6:
        return DROP_IP_VERSION
    plen = rd16(f + IP6_PAYLOAD_LENGTH)
    # a payload length of 0 announces a jumbogram (RFC 2675), which a
    # 64 KiB device never carries: the packet is shorter than it says
    if plen == 0 or IP6_HDR_LEN + plen > n:
        return DROP_IP_TRUNCATED
    end = IP6_HDR_LEN + plen
    limit = head if head < end else end
    nh = f[IP6_NEXT_HEADER]
    while nh != IPPROTO_TCP6 and nh != IPPROTO_ICMPV6:
        if nh != IPPROTO_HOPOPTS and nh != IPPROTO_DSTOPTS and nh != IPPROTO_ROUTING and \
                nh != IPPROTO_FRAGMENT:
            return DROP_PROTOCOL
        if nh == IPPROTO_HOPOPTS and headers != 0:
            return DROP_IP6_EXT_HEADER          # RFC 8200 §4.1: only immediately after the IPv6 header
        headers += 1
        if headers > IP6_MAX_EXT_HEADERS:
            return DROP_IP6_EXT_CHAIN
        if off + 8 > limit:
            return DROP_IP6_EXT_HEADER
        if nh == IPPROTO_FRAGMENT:
            if (rd16(f + off + 2) & 0xfff9) != 0:   # fragment offset (13 bits) or M set
                return DROP_IP_FRAGMENT
            hlen = 8
        else:
            hlen = (<uint32_t>f[off + 1] + 1) * 8
            if off + hlen > limit:
                return DROP_IP6_EXT_HEADER
            if nh == IPPROTO_ROUTING:
                if f[off + 3] != 0:              # segments left
                    return DROP_IP6_ROUTING
            else:
                r = _ipv6_options(f + off, hlen)
                if r != DROP_NONE:
                    return r
        nh = f[off]
        off += hlen
    ip.saddr = f + IP6_SOURCE
    ip.daddr = f + IP6_DESTINATION
    ip.ip_len = end
    ip.l4_off = off
    ip.protocol = nh
    return DROP_NONE


cdef inline void write_ipv6_header(uint8_t *p, const uint8_t *saddr, const uint8_t *daddr, uint8_t proto,
                                   uint32_t payload_len, uint32_t flow_label) noexcept nogil:
    """IPv6 header without extension headers: traffic class 0, the
    connection's flow label (RFC 6437), hop limit 64."""
    wr32(p + IP6_VERSION_CLASS_FLOW, (<uint32_t>6 << 28) | (flow_label & 0xfffff))
    wr16(p + IP6_PAYLOAD_LENGTH, <uint16_t>payload_len)
    p[IP6_NEXT_HEADER] = proto
    p[IP6_HOP_LIMIT] = IP6_DEFAULT_HOP_LIMIT
    memcpy(p + IP6_SOURCE, saddr, 16)
    memcpy(p + IP6_DESTINATION, daddr, 16)
