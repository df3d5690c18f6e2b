# Wire formats: IPv4, TCP, ICMP echo — zero-copy views over frame bytes.
#
# Parsing fills a `TcpSegment` C struct from a pointer into the frame (no
# copy, no Python object); building writes headers into a caller's buffer.
# The inline functions here are compiled into every module that cimports them
# (the TCP core's hot path), so a frame costs no cross-module call to parse.
#
# Byte order: multi-byte fields are read big-endian explicitly; addresses are
# kept as host-order uint32 (10.77.0.2 == 0x0a4d0002).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int8_t
from libc.string cimport memcpy

cdef extern from "inet_csum.h" nogil:
    uint64_t csum_partial(const uint8_t *p, size_t n, uint64_t sum)
    uint16_t csum_fold(uint64_t sum)
    uint16_t csum_finish(uint64_t sum)
    uint64_t csum_add_at(uint64_t sum, const uint8_t *p, size_t n, size_t at)
    uint64_t csum_pseudo_v4(const uint8_t *src4, const uint8_t *dst4, uint8_t proto, uint32_t l4len)

cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IP_HDR_LEN = 20
    TCP_HDR_LEN = 20
    TCP_MAX_HDR = 60
    MAX_HDR = 80            # IPv4 (no options) + TCP with full options
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
    # IPv4
    uint32_t saddr
    uint32_t daddr
    uint32_t ip_off          # offset of the IP header in the frame
    uint32_t ip_len          # IPv4 total length (trailing padding excluded)
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


cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) |
            (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


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


cdef inline void write_ipv4_header(uint8_t *p, uint32_t saddr, uint32_t daddr, uint8_t proto,
                                   uint32_t total_len, uint16_t ident) noexcept nogil:
    """IPv4 header without options, DF set (we do not fragment), TTL 64,
    header checksum filled in."""
    p[0] = 0x45
    p[1] = 0
    wr16(p + 2, <uint16_t>total_len)
    wr16(p + 4, ident)
    p[6] = 0x40        # DF
    p[7] = 0
    p[8] = 64
    p[9] = proto
    p[10] = 0
    p[11] = 0
    wr32(p + 12, saddr)
    wr32(p + 16, daddr)
    cdef uint16_t c = csum_finish(csum_partial(p, 20, 0))
    memcpy(p + 10, &c, 2)


cdef inline uint32_t write_tcp_header(uint8_t *p, uint16_t sport, uint16_t dport, uint32_t seq,
                                      uint32_t ack, uint16_t flags, uint16_t wnd,
                                      const TcpOptionsOut *opts) noexcept nogil:
    """TCP header with options at p; checksum field left zero.  Returns the
    header length."""
    cdef uint32_t olen = write_tcp_options(p + 20, opts)
    cdef uint32_t hlen = 20 + olen
    wr16(p, sport)
    wr16(p + 2, dport)
    wr32(p + 4, seq)
    wr32(p + 8, ack)
    p[12] = <uint8_t>((hlen // 4) << 4)
    p[13] = <uint8_t>flags
    wr16(p + 14, wnd)
    p[16] = 0
    p[17] = 0
    p[18] = 0
    p[19] = 0
    return hlen


# Device metadata that comes with a frame (from the virtio_net_hdr of a TUN
# read, or set by a replay source).
cdef enum:
    FRAME_CSUM_PARTIAL = 1   # L4 checksum holds only the pseudo-header sum (NEEDS_CSUM): do not verify
    FRAME_CSUM_VALID = 2     # L4 checksum already verified by the device
    FRAME_VERIFY_CSUM = 4    # force verification (fault injector completed a partial checksum)

# Why a frame or segment was dropped.  Index into the core's drop counters;
# DROP_NAMES in _tcpcore.pyx gives the printable names, in this order.
cdef enum:
    DROP_NONE = 0
    DROP_IP_TRUNCATED        # shorter than an IPv4 header, or than its total length
    DROP_IP_VERSION
    DROP_IP_HEADER_LENGTH
    DROP_IP_CHECKSUM
    DROP_IP_FRAGMENT
    DROP_NOT_FOR_US
    DROP_BAD_SOURCE          # broadcast, multicast, loopback or zero source
    DROP_PROTOCOL            # neither TCP nor ICMP
    DROP_ICMP                # ICMP other than a well-formed echo request
    DROP_TCP_HEADER          # data offset < 5 or beyond the segment
    DROP_TCP_CHECKSUM
    DROP_TCP_OPTIONS         # malformed option lengths
    DROP_TCP_FLAGS           # nonsensical flag combinations (SYN+FIN, SYN+RST, no ACK on data)
    DROP_BAD_GSO             # GSO metadata inconsistent with the frame
    DROP_NO_CONNECTION       # no connection or listener (a RST was sent when appropriate)
    DROP_LISTEN_BAD          # segment to a listener that is not a SYN
    DROP_BACKLOG_FULL        # no slot and no cookie possible
    DROP_TABLE_FULL          # connection table full
    DROP_BAD_COOKIE
    DROP_PAWS                # RFC 7323 §5 timestamp too old
    DROP_OUT_OF_WINDOW       # RFC 9293 acceptability test failed (an ACK was sent)
    DROP_RST_CHALLENGED      # RFC 5961 §3: in-window RST not at rcv_nxt
    DROP_RST_OUT_OF_WINDOW
    DROP_SYN_CHALLENGED      # RFC 5961 §4: SYN in a synchronized state
    DROP_ACK_UNSENT          # RFC 5961 §5: acknowledges data never sent
    DROP_ACK_TOO_OLD         # RFC 5961 §5: older than the max window behind snd_una
    DROP_SYN_SENT_BAD        # unacceptable segment in SYN-SENT
    DROP_REASSEMBLY_FULL     # too many out-of-order ranges
    DROP_AFTER_CLOSE         # data for a connection the application closed (RST sent)
    DROP_DATA_AFTER_FIN      # data (or another FIN) after the peer's FIN was taken
    DROP_REASON_COUNT


cdef inline bint bad_source(uint32_t a) noexcept nogil:
    cdef uint32_t top = a >> 24
    return a == 0 or a == 0xffffffffu or top == 127 or top >= 224


cdef inline int parse_ipv4(const uint8_t *f, uint32_t n, TcpSegment *seg) noexcept nogil:
    """Validate the IPv4 header of f[0:n] (RFC 791, RFC 1122 §3.2.1)."""
    cdef uint32_t ihl, tot
    if n < IP_HDR_LEN:
        return DROP_IP_TRUNCATED
    if (f[0] >> 4) != 4:
        return DROP_IP_VERSION
    ihl = (f[0] & 0x0f) * 4
    if ihl < IP_HDR_LEN or ihl > n:
        return DROP_IP_HEADER_LENGTH
    tot = rd16(f + 2)
    if tot < ihl or tot > n:
        return DROP_IP_TRUNCATED
    if csum_fold(csum_partial(f, ihl, 0)) != 0xffff:
        return DROP_IP_CHECKSUM
    # MF set or a non-zero fragment offset: misdtcp does not reassemble.
    if (rd16(f + 6) & 0x3fff) != 0:
        return DROP_IP_FRAGMENT
    seg.ip_off = 0
    seg.ip_len = tot
    seg.saddr = rd32(f + 12)
    seg.daddr = rd32(f + 16)
    seg.tcp_off = ihl
    return DROP_NONE


cdef inline int parse_tcp(const uint8_t *f, uint32_t frame_flags, TcpSegment *seg) noexcept nogil:
    """Validate and parse the TCP header that follows a parsed IPv4 header."""
    cdef uint32_t off = seg.tcp_off
    cdef uint32_t l4len = seg.ip_len - off
    cdef uint32_t hlen
    cdef const uint8_t *t = f + off
    if l4len < TCP_HDR_LEN:
        return DROP_TCP_HEADER
    hlen = (t[12] >> 4) * 4
    if hlen < TCP_HDR_LEN or hlen > l4len:
        return DROP_TCP_HEADER
    if (frame_flags & FRAME_VERIFY_CSUM) or not (frame_flags & (FRAME_CSUM_PARTIAL | FRAME_CSUM_VALID)):
        if csum_fold(csum_partial(t, l4len, csum_pseudo_v4(f + 12, f + 16, IPPROTO_TCP, l4len))) != 0xffff:
            return DROP_TCP_CHECKSUM
    seg.sport = rd16(t)
    seg.dport = rd16(t + 2)
    seg.seq = rd32(t + 4)
    seg.ack = rd32(t + 8)
    seg.flags = t[13]
    seg.wnd = rd16(t + 14)
    seg.urg = rd16(t + 18)
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
