# The descriptor of one log position: a TCP segment described completely
# (everything a replica needs, in one cache line), or a reference to a record
# in the log's data area (a frame with unusual options, ICMP, a request).  The
# sequencer validates a frame once and writes its descriptor; every replica
# reads descriptors only, and touches payload bytes only for the stripes it
# owns -- in the log's data area, or where a packet-ring device put them.  `kind` is the runtime's vocabulary (runtime/vocabulary.pxd).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    DESCRIPTOR_SIZE = 64

ctypedef struct Descriptor:            # 64 bytes, one cache line
    uint8_t kind                       # REC_SEGMENT, REC_DROPPED or another record kind (REC_*)
    uint8_t tcp_flags                  # segment: the TCP flags
    uint16_t frame_flags               # device metadata of the frame (FRAME_CSUM_*), FRAME_IN_DEVICE
    uint16_t window                    # segment: the raw 16-bit window field
    uint16_t segments                  # segment: wire segments it stands for (GSO, coalescing)
    uint32_t seq                       # segment: sequence number of the first payload byte
    uint32_t ack
    uint32_t tsval                     # segment: RFC 7323 timestamps (has_ts)
    uint32_t tsecr
    uint32_t saddr                     # segment: the peer's address and ports
    uint16_t sport
    uint16_t dport
    uint32_t length                    # payload (segment) or record bytes in the data area
    uint16_t gso_size                  # segment size of a GSO super-frame, else 0
    uint8_t has_ts
    uint8_t reason                     # REC_DROPPED: why (wire/drops.pxd)
    uint64_t data                      # data-area position of the descriptor's bytes (FRAME_IN_DEVICE:
                                       # their offset in the device's receive ring, which takes no data area)
    uint64_t data_end                  # data-area position after them (set at commit)
    uint64_t now_ns                    # the sequencer's CLOCK_MONOTONIC stamp

