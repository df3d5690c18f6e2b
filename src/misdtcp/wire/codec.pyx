# cython: language_level=3
"""Python helpers over the wire formats, for tests, tools and the control
path.  The hot path uses the inline functions of the wire .pxd files directly."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from misdtcp.wire.checksum cimport csum_partial, csum_finish, csum_pseudo_v4, csum_pseudo_v6
from misdtcp.wire.frame cimport FRAME_CSUM_PARTIAL, FRAME_CSUM_VALID, FRAME_VERIFY_CSUM
from misdtcp.wire.ipv4 cimport IP_SOURCE, IP_DESTINATION, IPPROTO_TCP
from misdtcp.wire.ipv6 cimport IP6_HDR_LEN, IP6_SOURCE, IP6_DESTINATION
from misdtcp.wire.tcp cimport (TcpSegment, TcpOptionsOut, OPT_OK, MAX_SACK_BLOCKS, TCP_CHECKSUM,
                               TCP_HDR_LEN, TCP_MAX_HDR, parse_tcp_options, write_tcp_options)


def internet_checksum(data, uint64_t initial=0):
    """RFC 1071 checksum of data, as the 16-bit value to store (big-endian int)."""
    cdef const unsigned char[::1] v = data
    cdef uint16_t c = csum_finish(csum_partial(&v[0] if v.shape[0] else <const uint8_t *>b"", v.shape[0], initial))
    cdef uint8_t *b = <uint8_t *>&c
    return (b[0] << 8) | b[1]


def finish_tcp_packet(header, payload=b""):
    """Complete an IPv4/TCP or IPv6/TCP packet whose TCP checksum field holds
    the folded pseudo-header sum (the NEEDS_CSUM convention of Transmit
    actions)."""
    cdef bytearray pkt = bytearray(header) + bytearray(payload)
    cdef unsigned char[::1] v = pkt
    cdef bint v6 = (v[0] >> 4) == 6
    cdef uint32_t ihl = IP6_HDR_LEN if v6 else (v[0] & 0x0f) * 4
    cdef uint32_t l4 = v.shape[0] - ihl
    cdef uint64_t pseudo
    cdef uint16_t c
    v[ihl + TCP_CHECKSUM] = 0
    v[ihl + TCP_CHECKSUM + 1] = 0
    if v6:
        pseudo = csum_pseudo_v6(&v[IP6_SOURCE], &v[IP6_DESTINATION], IPPROTO_TCP, l4)
    else:
        pseudo = csum_pseudo_v4(&v[IP_SOURCE], &v[IP_DESTINATION], IPPROTO_TCP, l4)
    c = csum_finish(csum_partial(&v[ihl], l4, pseudo))
    memcpy(&v[ihl + TCP_CHECKSUM], &c, 2)
    return bytes(pkt)


def parse_options(data):
    """Parse TCP option bytes; returns a dict, or None when malformed."""
    cdef const unsigned char[::1] v = data
    cdef TcpSegment seg
    if parse_tcp_options(&v[0] if v.shape[0] else <const uint8_t *>b"", v.shape[0], &seg) != OPT_OK:
        return None
    return {
        "mss": seg.mss or None,
        "wscale": seg.wscale if seg.wscale >= 0 else None,
        "wscale_clamped": bool(seg.wscale_clamped),
        "sack_permitted": bool(seg.sack_perm),
        "timestamp": (seg.tsval, seg.tsecr) if seg.has_ts else None,
        "sack": [(seg.sack_left[i], seg.sack_right[i]) for i in range(seg.nsack)],
    }


def build_options(mss=0, wscale=-1, sack_permitted=False, timestamp=None, sack=()):
    """Encode TCP options as the core sends them."""
    cdef TcpOptionsOut o
    cdef uint8_t buf[64]
    cdef uint32_t n
    o.mss = mss
    o.wscale = wscale
    o.sack_perm = sack_permitted
    o.has_ts = timestamp is not None
    if timestamp is not None:
        o.tsval, o.tsecr = timestamp
    o.nsack = len(sack)
    if o.nsack > MAX_SACK_BLOCKS:
        raise ValueError("at most 4 SACK blocks")
    for i, (l, r) in enumerate(sack):
        o.sack_left[i] = l
        o.sack_right[i] = r
    n = write_tcp_options(buf, &o)
    if n > TCP_MAX_HDR - TCP_HDR_LEN:
        # RFC 9293 §3.1: at most 40 bytes of options (data offset <= 15)
        raise ValueError(f"these options need {n} bytes; a TCP header has room for 40")
    return PyBytes_FromStringAndSize(<char *>buf, n)


# Device metadata flags of a frame, for Python callers of TcpCore.frame().
CSUM_PARTIAL = FRAME_CSUM_PARTIAL
CSUM_VALID = FRAME_CSUM_VALID
VERIFY_CSUM = FRAME_VERIFY_CSUM
