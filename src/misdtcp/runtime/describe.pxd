# What the sequencer writes into the log for a validated segment: its
# descriptor (wire/descriptor.pxd), and whether it can be folded into the
# previous one (receive coalescing, as Linux's GRO merges frames before TCP
# sees them).  Done once, at the serial stage, so no replica parses headers
# or options: a replica reads 64 bytes per descriptor.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from misdtcp.runtime.vocabulary cimport REC_SEGMENT
from misdtcp.wire.descriptor cimport Descriptor, SEG_TS, SEG_PEER6
from misdtcp.wire.tcp cimport TcpSegment, TH_ACK, TH_PSH, TH_SYN, TH_URG

cdef enum:
    # A coalesced segment stays below 64 KiB, as a GRO aggregate does, so it
    # is no larger than the GSO super-frames the core already takes.
    COALESCE_MAX_BYTES = 65536 - 512
    COALESCE_MAX_SEGMENTS = 64


cdef inline bint describable(const TcpSegment *seg) noexcept nogil:
    """A descriptor can carry this segment: no SYN (its options), no urgent
    data, no SACK blocks, no option but timestamps (unknown options are
    skipped by the parser, as the core ignores them)."""
    return not (seg.flags & (TH_SYN | TH_URG)) and seg.nsack == 0 and seg.mss == 0 and seg.wscale < 0 \
        and not seg.sack_perm and not seg.wscale_clamped


cdef inline uint16_t wire_segments(uint32_t payload_len, uint16_t gso_size) noexcept nogil:
    """How many wire segments a (super-)segment stands for."""
    if gso_size == 0 or payload_len <= gso_size:
        return 1
    return <uint16_t>((payload_len + gso_size - 1) // gso_size)


cdef inline void describe_segment(Descriptor *d, const TcpSegment *seg, uint16_t frame_flags,
                                  uint16_t gso_size, uint64_t now) noexcept nogil:
    """Fill a REC_SEGMENT descriptor (its `data`, where the payload lies, is
    the caller's; for an IPv6 segment, so is the REC_PEER6 before it)."""
    d.kind = REC_SEGMENT
    d.tcp_flags = <uint8_t>seg.flags
    d.frame_flags = frame_flags
    d.window = seg.wnd
    d.segments = wire_segments(seg.payload_len, gso_size)
    d.seq = seg.seq
    d.ack = seg.ack
    d.seg_flags = (SEG_TS if seg.has_ts else 0) | (SEG_PEER6 if seg.v6 else 0)
    d.tsval = seg.tsval if seg.has_ts else 0
    d.tsecr = seg.tsecr if seg.has_ts else 0
    d.saddr = seg.saddr
    d.sport = seg.sport
    d.dport = seg.dport
    d.length = seg.payload_len
    d.gso_size = gso_size               # as the device said: the core reads the segment size from it
    d.reason = 0
    d.now_ns = now


cdef inline bint can_coalesce(const Descriptor *d, const TcpSegment *seg, uint16_t frame_flags,
                              uint16_t gso_size) noexcept nogil:
    """Can `seg`, whose payload lies right after d's, be folded into d?

    The rules of Linux's tcp_gro_receive, so the result is a segment the
    peer could have sent: same flow, in order, both carry data, the same
    ACK, window and timestamps, flags ACK (PSH may close the run), every
    segment but the last full-sized, at most COALESCE_MAX_BYTES.  (Two IPv6
    segments with the same flags come from the same REC_PEER6 address: the
    sequencer writes a new one, which ends the run, when the peer changes.)"""
    cdef uint32_t unit
    if d.kind != REC_SEGMENT or d.tcp_flags != TH_ACK or d.length == 0 or seg.payload_len == 0:
        return False
    if seg.flags != TH_ACK and seg.flags != (TH_ACK | TH_PSH):
        return False
    if seg.saddr != d.saddr or seg.sport != d.sport or seg.dport != d.dport:
        return False
    if seg.seq != d.seq + d.length or seg.ack != d.ack or seg.wnd != d.window:
        return False
    if d.seg_flags != ((SEG_TS if seg.has_ts else 0) | (SEG_PEER6 if seg.v6 else 0)) or \
            (seg.has_ts and (seg.tsval != d.tsval or seg.tsecr != d.tsecr)):
        return False
    if frame_flags != d.frame_flags:
        return False
    unit = d.gso_size if d.gso_size else d.length
    if d.length % unit or (gso_size and gso_size != unit) or (not gso_size and seg.payload_len > unit):
        return False
    return d.length + seg.payload_len <= COALESCE_MAX_BYTES and \
        d.segments + wire_segments(seg.payload_len, gso_size) <= COALESCE_MAX_SEGMENTS


cdef inline void coalesce(Descriptor *d, const TcpSegment *seg, uint16_t gso_size) noexcept nogil:
    """Fold `seg` into d (can_coalesce said yes)."""
    cdef uint32_t unit = d.gso_size if d.gso_size else d.length
    d.segments += wire_segments(seg.payload_len, gso_size)
    d.length += seg.payload_len
    d.gso_size = <uint16_t>unit
    d.tcp_flags |= <uint8_t>(seg.flags & TH_PSH)
