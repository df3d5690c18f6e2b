# A frame addressed to this stack, validated once: the IPv4 header or the
# IPv6 header and its extension headers, the addresses, then TCP (header,
# checksum unless the device vouched for it, options) or ICMP / ICMPv6.
# The same checks whether the TCP core runs them on a frame (core_frame) or
# the sequencer runs them once for every replica (the log then carries the
# result: a segment entry, an ICMP frame, or the drop reason).
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcmp, memcpy
from misdtcp.wire.bytes cimport rd32
from misdtcp.wire.drops cimport (DROP_NONE, DROP_NOT_FOR_US, DROP_BAD_SOURCE, DROP_PROTOCOL, DROP_BAD_GSO,
                                 DROP_TCP_FLAGS, DROP_IP_HEADER_LENGTH)
from misdtcp.wire.ipv6 cimport Ipv6Header, IPPROTO_ICMPV6, bad_source6, parse_ipv6
from misdtcp.wire.ipv4 cimport Ipv4Header, IPPROTO_ICMP, IPPROTO_TCP, bad_source, parse_ipv4
from misdtcp.wire.tcp cimport TcpSegment, TH_SYN, TH_FIN, TH_RST, TH_ACK, parse_tcp

cdef enum:
    FRAME_IS_ICMP = 255      # not a drop reason: an ICMP message for us (seg holds the IPv4 part)
    FRAME_IS_ICMP6 = 254     # not a drop reason: an ICMPv6 message for us (seg holds the IPv6 part)


cdef inline int validate_frame(const uint8_t *f, uint32_t n, uint32_t frame_flags, uint32_t gso_size,
                               uint32_t local_addr, const uint8_t *local_addr6, TcpSegment *seg) noexcept nogil:
    """DROP_NONE with `seg` filled for a well-formed TCP segment to us,
    FRAME_IS_ICMP / FRAME_IS_ICMP6 for ICMP / ICMPv6 to us, or the reason to
    drop the frame (whose n bytes are contiguous at f).  `local_addr6`: the
    stack's IPv6 address (16 bytes), NULL when it speaks IPv4 only."""
    return validate_frame_split(f, n, NULL, n, frame_flags, gso_size, local_addr, local_addr6, seg)


cdef inline int validate_frame_split(const uint8_t *f, uint32_t head, const uint8_t *rest, uint32_t n,
                                     uint32_t frame_flags, uint32_t gso_size, uint32_t local_addr,
                                     const uint8_t *local_addr6, TcpSegment *seg) noexcept nogil:
    """validate_frame for a frame of n bytes read in two parts: the first
    `head` bytes (all of its headers) at f, the rest at `rest`."""
    cdef Ipv4Header ip
    cdef int r
    if n and (f[0] >> 4) == 6:
        return _validate_ipv6(f, head, rest, n, frame_flags, gso_size, local_addr6, seg)
    r = parse_ipv4(f, n, &ip)
    if r != DROP_NONE:
        return r
    if ip.l4_off > head:
        return DROP_IP_HEADER_LENGTH
    seg.saddr = ip.saddr
    seg.daddr = ip.daddr
    seg.ip_len = ip.ip_len
    seg.tcp_off = ip.l4_off
    seg.v6 = 0
    if seg.daddr != local_addr:
        return DROP_NOT_FOR_US
    if bad_source(seg.saddr) or seg.saddr == local_addr:
        # our own address as the source is a spoof ("land" attack): we would
        # open a connection to ourselves and answer it (found by fuzzing)
        return DROP_BAD_SOURCE
    if ip.protocol == IPPROTO_ICMP:
        return FRAME_IS_ICMP
    if ip.protocol != IPPROTO_TCP:
        return DROP_PROTOCOL
    return _validate_tcp(f, head, rest, frame_flags, gso_size, seg)


cdef inline int _validate_ipv6(const uint8_t *f, uint32_t head, const uint8_t *rest, uint32_t n,
                               uint32_t frame_flags, uint32_t gso_size, const uint8_t *local_addr6,
                               TcpSegment *seg) noexcept nogil:
    """The IPv6 half of validate_frame_split: header, extension headers,
    addresses (the same rules as IPv4: ours as the destination, never a
    source no host can have, never our own)."""
    cdef Ipv6Header ip
    cdef int r = parse_ipv6(f, head, n, &ip)
    if r != DROP_NONE:
        return r
    if ip.l4_off > head:
        return DROP_IP_HEADER_LENGTH
    seg.v6 = 1
    memcpy(seg.saddr6, ip.saddr, 16)
    seg.saddr = rd32(ip.saddr + 12)
    seg.daddr = rd32(ip.daddr + 12)
    seg.ip_len = ip.ip_len
    seg.tcp_off = ip.l4_off
    if local_addr6 == NULL or memcmp(ip.daddr, local_addr6, 16) != 0:
        return DROP_NOT_FOR_US
    if bad_source6(ip.saddr) or memcmp(ip.saddr, local_addr6, 16) == 0:
        return DROP_BAD_SOURCE
    if ip.protocol == IPPROTO_ICMPV6:
        return FRAME_IS_ICMP6
    return _validate_tcp(f, head, rest, frame_flags, gso_size, seg)


cdef inline int _validate_tcp(const uint8_t *f, uint32_t head, const uint8_t *rest, uint32_t frame_flags,
                              uint32_t gso_size, TcpSegment *seg) noexcept nogil:
    """The TCP header after either IP header, and the segment's sanity."""
    cdef uint16_t fl
    cdef int r = parse_tcp(f, head, rest, frame_flags, seg)
    if r != DROP_NONE:
        return r
    if gso_size and (gso_size < 64 or gso_size > 65535 - 40):
        return DROP_BAD_GSO
    fl = seg.flags
    if (fl & TH_SYN) and (fl & (TH_FIN | TH_RST)) or not (fl & (TH_SYN | TH_RST | TH_ACK)) \
            or seg.sport == 0 or seg.dport == 0:
        return DROP_TCP_FLAGS
    return DROP_NONE
