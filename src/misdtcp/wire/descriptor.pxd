# The descriptor of one log position: a TCP segment described completely
# (everything a replica needs, in one cache line), or a reference to a record
# in the log's data area (a frame with unusual options, ICMP, a request).  The
# sequencer validates a frame once and writes its descriptor; every replica
# reads descriptors only, and touches payload bytes only for the stripes it
# owns -- in the log's data area, or where a packet-ring device put them.
# `kind` is the runtime's vocabulary (runtime/vocabulary.pxd).
#
# An IPv6 source address does not fit beside everything else: a segment from
# an IPv6 peer says SEG_PEER6, and its address is the one the last REC_PEER6
# descriptor named (the sequencer writes one whenever the IPv6 peer changes;
# every replica keeps it as replicated state, so it survives checkpoints).
# A bulk flow costs one REC_PEER6 for all its segments.
#
# Two flag fields, never mixed: frame_flags holds the device's metadata
# (wire/frame.pxd FRAME_*: checksum state, FRAME_IN_DEVICE, FRAME_STRIDED),
# seg_flags what the segment itself carried (SEG_TS, SEG_PEER6).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef enum:
    DESCRIPTOR_SIZE = 64

# Descriptor.seg_flags
cdef enum:
    SEG_TS = 1                         # tsval and tsecr hold the segment's RFC 7323 timestamps
    SEG_PEER6 = 2                      # from the IPv6 peer of the last REC_PEER6; saddr is its last 32 bits

ctypedef struct Descriptor:            # 64 bytes, one cache line
    uint8_t kind                       # REC_SEGMENT, REC_DROPPED or another record kind (REC_*)
    uint8_t tcp_flags                  # segment: the TCP flags
    uint16_t frame_flags               # device metadata of the frame (wire/frame.pxd FRAME_*)
    uint16_t window                    # segment: the raw 16-bit window field
    uint16_t segments                  # segment: wire segments it stands for (GSO, coalescing)
    uint32_t seq                       # segment: sequence number of the first payload byte
    uint32_t ack
    uint32_t tsval                     # segment: RFC 7323 timestamps (SEG_TS)
    uint32_t tsecr
    uint32_t saddr                     # segment: the peer's address and ports
    uint16_t sport
    uint16_t dport
    uint32_t length                    # payload (segment) or record bytes in the data area
    uint16_t gso_size                  # segment size of a GSO super-frame, else 0
    uint8_t seg_flags                  # segment: SEG_TS, SEG_PEER6
    uint8_t reason                     # REC_DROPPED: why (wire/drops.pxd)
    uint64_t data                      # data-area position of the descriptor's bytes (FRAME_IN_DEVICE:
                                       # their offset in the device's receive ring, which takes no data area)
    uint64_t data_end                  # data-area position after them (set at commit)
    uint64_t now_ns                    # the sequencer's CLOCK_MONOTONIC stamp


cdef inline void describe_peer6(Descriptor *d, const uint8_t *addr) noexcept nogil:
    """A REC_PEER6 descriptor's address: the 16 bytes over seq, ack, tsval
    and tsecr (contiguous, at offsets 8..23), in network order."""
    memcpy(&d.seq, addr, 16)


cdef inline const uint8_t *peer6_of(const Descriptor *d) noexcept nogil:
    return <const uint8_t *>&d.seq
