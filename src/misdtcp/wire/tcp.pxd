# TCP (RFC 9293 §3.1): named field offsets, flags, options, and zero-copy
# parsing and building.  Parsing fills a `TcpSegment` C struct from a pointer
# into the frame (no copy, no Python object); building writes headers into a
# caller's buffer.  The inline functions are compiled into every module that
# cimports them (the TCP core's hot path), so a frame costs no cross-module
# call to parse.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t
from misdtcp.wire.bytes cimport rd16, rd32, wr16, wr32
from misdtcp.wire.checksum cimport csum_partial, csum_fold, csum_pseudo_v4, csum_pseudo_v6
from misdtcp.wire.drops cimport DROP_NONE, DROP_TCP_HEADER, DROP_TCP_CHECKSUM, DROP_TCP_OPTIONS
from misdtcp.wire.frame cimport FRAME_CSUM_PARTIAL, FRAME_CSUM_VALID, FRAME_VERIFY_CSUM
from misdtcp.wire.ipv4 cimport IP_SOURCE, IP_DESTINATION, IPPROTO_TCP
from misdtcp.wire.ipv6 cimport IP6_SOURCE, IP6_DESTINATION

# Field offsets in the header (RFC 9293 §3.1).
cdef enum:
    TCP_SOURCE_PORT = 0
    TCP_DESTINATION_PORT = 2
    TCP_SEQUENCE = 4
    TCP_ACKNOWLEDGMENT = 8
    TCP_DATA_OFFSET = 12     # high nibble: header length in 32-bit words
    TCP_FLAGS = 13
    TCP_WINDOW = 14
    TCP_CHECKSUM = 16
    TCP_URGENT = 18
    TCP_HDR_LEN = 20         # without options
    TCP_MAX_HDR = 60
    MAX_HDR = 100            # IPv6 (no extension headers) + TCP with full options
    MAX_SACK_BLOCKS = 4

# TCP flag bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR)
cdef enum:
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_PSH = 0x08
    TH_ACK = 0x10
    TH_URG = 0x20
    TH_ECE = 0x40
    TH_CWR = 0x80

# TCP option kinds (IANA)
cdef enum:
    TCPOPT_EOL = 0
    TCPOPT_NOP = 1
    TCPOPT_MSS = 2
    TCPOPT_WSCALE = 3
    TCPOPT_SACK_PERM = 4
    TCPOPT_SACK = 5
    TCPOPT_TIMESTAMP = 8

# Results of option parsing (RFC 9293 §3.1: an option with a bad length is a
# malformed segment; we drop the segment rather than guess).
cdef enum:
    OPT_OK = 0
    OPT_MALFORMED = 1

ctypedef struct TcpSegment:
    # from the network header (see ipv4.pxd, ipv6.pxd)
    uint32_t saddr           # IPv4: the source; IPv6: the last 32 bits of saddr6
    uint32_t daddr
    uint32_t ip_len          # IPv4 total length, IPv6 40 + payload length (trailing padding excluded)
    uint8_t v6               # it came over IPv6: saddr6 holds the source
    uint8_t saddr6[16]       # IPv6 source address, network order (IPv6 only)
    # TCP
    uint32_t tcp_off         # offset of the TCP header in the frame
    uint16_t sport
    uint16_t dport
    uint32_t seq
    uint32_t ack
    uint16_t flags
    uint16_t wnd             # raw 16-bit window field (unscaled)
    uint16_t urg
    uint16_t hdr_len         # TCP header length in bytes
    uint32_t payload_off     # offset of the payload in the frame
    uint32_t payload_len
    # options
    uint16_t mss             # 0 when absent
    int8_t wscale            # -1 when absent; already clamped to <= 14
    uint8_t sack_perm
    uint8_t has_ts
    uint8_t nsack
    uint8_t wscale_clamped   # the peer sent wscale > 14 (RFC 7323 §2.3)
    uint32_t tsval
    uint32_t tsecr
    uint32_t sack_left[MAX_SACK_BLOCKS]
    uint32_t sack_right[MAX_SACK_BLOCKS]

# What the builder should put in a TCP header's options.
ctypedef struct TcpOptionsOut:
    uint16_t mss             # 0: none
    int8_t wscale            # -1: none
    uint8_t sack_perm
    uint8_t has_ts
    uint8_t nsack
    uint32_t tsval
    uint32_t tsecr
    uint32_t sack_left[MAX_SACK_BLOCKS]
    uint32_t sack_right[MAX_SACK_BLOCKS]


cdef inline int parse_tcp_options(const uint8_t *p, uint32_t n, TcpSegment *seg) noexcept nogil:
    """Parse the option bytes p[0:n] into seg.  Never reads past p + n.

    Unknown options are skipped by their length.  Known options with a wrong
    length, a zero or overrunning length, are OPT_MALFORMED: RFC 9293 §3.1
    requires "a TCP implementation MUST be prepared to handle an illegal
    option length (e.g., zero)", and the safe handling is to drop the segment.
    """
    cdef uint32_t i = 0
    cdef uint8_t kind, olen
    cdef uint32_t k
    seg.mss = 0
    seg.wscale = -1
    seg.sack_perm = 0
    seg.has_ts = 0
    seg.nsack = 0
    seg.wscale_clamped = 0
    while i < n:
        kind = p[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            return OPT_MALFORMED
        olen = p[i + 1]
        if olen < 2 or i + olen > n:
            return OPT_MALFORMED
        if kind == TCPOPT_MSS:
            if olen != 4:
                return OPT_MALFORMED
            seg.mss = rd16(p + i + 2)
        elif kind == TCPOPT_WSCALE:
            if olen != 3:
                return OPT_MALFORMED
            # RFC 7323 §2.3: a shift count above 14 is used as 14 (and logged).
            if p[i + 2] > 14:
                seg.wscale = 14
                seg.wscale_clamped = 1
            else:
                seg.wscale = <int8_t>p[i + 2]
        elif kind == TCPOPT_SACK_PERM:
            if olen != 2:
                return OPT_MALFORMED
            seg.sack_perm = 1
        elif kind == TCPOPT_TIMESTAMP:
            if olen != 10:
                return OPT_MALFORMED
            seg.has_ts = 1
            seg.tsval = rd32(p + i + 2)
            seg.tsecr = rd32(p + i + 6)
        elif kind == TCPOPT_SACK:
            if olen < 10 or (olen - 2) % 8 != 0:
                return OPT_MALFORMED
            k = 0
            while k < <uint32_t>(olen - 2) // 8 and seg.nsack < MAX_SACK_BLOCKS:
                seg.sack_left[seg.nsack] = rd32(p + i + 2 + 8 * k)
                seg.sack_right[seg.nsack] = rd32(p + i + 6 + 8 * k)
                seg.nsack += 1
                k += 1
        i += olen
    return OPT_OK


cdef inline uint32_t write_tcp_options(uint8_t *p, const TcpOptionsOut *o) noexcept nogil:
    """Write options at p; returns their length, padded to a multiple of 4.

    Layouts follow the ones Linux sends (NOP padding so 32-bit fields stay
    aligned), which is also what RFC 7323 Appendix A recommends.
    """
    cdef uint32_t n = 0
    cdef uint32_t k
    if o.mss:
        p[0] = TCPOPT_MSS
        p[1] = 4
        wr16(p + 2, o.mss)
        n = 4
    if o.sack_perm and o.has_ts:
        p[n] = TCPOPT_SACK_PERM
        p[n + 1] = 2
        p[n + 2] = TCPOPT_TIMESTAMP
        p[n + 3] = 10
        wr32(p + n + 4, o.tsval)
        wr32(p + n + 8, o.tsecr)
        n += 12
    else:
        if o.has_ts:
            p[n] = TCPOPT_NOP
            p[n + 1] = TCPOPT_NOP
            p[n + 2] = TCPOPT_TIMESTAMP
            p[n + 3] = 10
            wr32(p + n + 4, o.tsval)
            wr32(p + n + 8, o.tsecr)
            n += 12
        if o.sack_perm:
            p[n] = TCPOPT_NOP
            p[n + 1] = TCPOPT_NOP
            p[n + 2] = TCPOPT_SACK_PERM
            p[n + 3] = 2
            n += 4
    if o.wscale >= 0:
        p[n] = TCPOPT_NOP
        p[n + 1] = TCPOPT_WSCALE
        p[n + 2] = 3
        p[n + 3] = <uint8_t>o.wscale
        n += 4
    if o.nsack:
        p[n] = TCPOPT_NOP
        p[n + 1] = TCPOPT_NOP
        p[n + 2] = TCPOPT_SACK
        p[n + 3] = <uint8_t>(2 + 8 * o.nsack)
        n += 4
        k = 0
        while k < o.nsack:
            wr32(p + n, o.sack_left[k])
            wr32(p + n + 4, o.sack_right[k])
            n += 8
            k += 1
    return n


cdef inline uint32_t write_tcp_header(uint8_t *p, uint16_t sport, uint16_t dport, uint32_t seq,
                                      uint32_t ack, uint16_t flags, uint16_t wnd,
                                      const TcpOptionsOut *opts) noexcept nogil:
    """TCP header with options at p; checksum field left zero.  Returns the
    header length."""
    cdef uint32_t olen = write_tcp_options(p + TCP_HDR_LEN, opts)
    cdef uint32_t hlen = TCP_HDR_LEN + olen
    wr16(p + TCP_SOURCE_PORT, sport)
    wr16(p + TCP_DESTINATION_PORT, dport)
    wr32(p + TCP_SEQUENCE, seq)
    wr32(p + TCP_ACKNOWLEDGMENT, ack)
    p[TCP_DATA_OFFSET] = <uint8_t>((hlen // 4) << 4)
    p[TCP_FLAGS] = <uint8_t>flags
    wr16(p + TCP_WINDOW, wnd)
    p[TCP_CHECKSUM] = 0
    p[TCP_CHECKSUM + 1] = 0
    p[TCP_URGENT] = 0
    p[TCP_URGENT + 1] = 0
    return hlen


cdef inline int parse_tcp(const uint8_t *f, uint32_t head, const uint8_t *rest, uint32_t frame_flags,
                          TcpSegment *seg) noexcept nogil:
    """Validate and parse the TCP header that follows a parsed IPv4 or IPv6
    header (seg.tcp_off, seg.ip_len and seg.v6 are set from it).

    The frame's first `head` bytes are at f; a frame read split in two (the
    headers into one buffer, the payload straight to its place) continues at
    `rest`.  The TCP header itself must lie within the head."""
    cdef uint32_t off = seg.tcp_off
    cdef uint32_t l4len = seg.ip_len - off
    cdef uint32_t hlen, first
    cdef uint64_t sum
    cdef const uint8_t *t = f + off
    if l4len < TCP_HDR_LEN or off + TCP_HDR_LEN > head:
        return DROP_TCP_HEADER
    hlen = (t[TCP_DATA_OFFSET] >> 4) * 4
    if hlen < TCP_HDR_LEN or hlen > l4len or off + hlen > head:
        return DROP_TCP_HEADER
    if (frame_flags & FRAME_VERIFY_CSUM) or not (frame_flags & (FRAME_CSUM_PARTIAL | FRAME_CSUM_VALID)):
        first = head - off if l4len > head - off else l4len
        if seg.v6:
            sum = csum_partial(t, first, csum_pseudo_v6(f + IP6_SOURCE, f + IP6_DESTINATION, IPPROTO_TCP, l4len))
        else:
            sum = csum_partial(t, first, csum_pseudo_v4(f + IP_SOURCE, f + IP_DESTINATION, IPPROTO_TCP, l4len))
        if first < l4len:
            # `first` is the TCP header length here: a multiple of 4, so the
            # second part's 16-bit words line up with the first's
            sum = csum_partial(rest, l4len - first, sum)
        if csum_fold(sum) != 0xffff:
            return DROP_TCP_CHECKSUM
    seg.sport = rd16(t + TCP_SOURCE_PORT)
    seg.dport = rd16(t + TCP_DESTINATION_PORT)
    seg.seq = rd32(t + TCP_SEQUENCE)
    seg.ack = rd32(t + TCP_ACKNOWLEDGMENT)
    seg.flags = t[TCP_FLAGS]
    seg.wnd = rd16(t + TCP_WINDOW)
    seg.urg = rd16(t + TCP_URGENT)
    seg.hdr_len = <uint16_t>hlen
    seg.payload_off = off + hlen
    seg.payload_len = l4len - hlen
    if hlen > TCP_HDR_LEN:
        if parse_tcp_options(t + TCP_HDR_LEN, hlen - TCP_HDR_LEN, seg) != OPT_OK:
            return DROP_TCP_OPTIONS
    else:
        seg.mss = 0
        seg.wscale = -1
        seg.sack_perm = 0
        seg.has_ts = 0
        seg.nsack = 0
        seg.wscale_clamped = 0
    return DROP_NONE
