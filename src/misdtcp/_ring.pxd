# cython: language_level=3
"""C-level interface of misdtcp._ring: the broadcast ring's shared layout and calls.

Other Cython modules (the sequencer, the strategy loops, the replay source)
``cimport`` from here.  The memory layout is described in _ring.pyx's module
docstring; waiting follows runtime/wait.pxd.  Every function here is
``nogil`` and touches no Python object.  The ring carries records; what a
record's ``kind`` means is the runtime's vocabulary (runtime/vocabulary.pxd).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from misdtcp._system cimport atomic_load_acquire_u64
from misdtcp.runtime.wait cimport WaitCounters


cdef enum:
    CACHE_LINE = 64
    RING_MAX_CONSUMERS = 16
    RECORD_HEADER_SIZE = 32
    RECORD_ALIGN = 8
    # The largest payload the sequencer reserves: a 64 KiB GSO super-segment
    # plus the 12-byte virtio_net_hdr that precedes it on an IFF_VNET_HDR TUN.
    RING_MAX_FRAME = 65536 + 12


# ---- records ------------------------------------------------------------------

ctypedef struct RecordHeader:          # 32 bytes, at an 8-aligned ring position
    uint32_t length                    # payload bytes following the header
    uint16_t kind                      # what the record is (runtime/vocabulary.pxd)
    uint16_t flags                     # device metadata (checksum partial / valid)
    uint16_t gso_size
    uint16_t csum_start
    uint16_t csum_offset
    uint16_t reserved
    uint64_t now_ns                    # the sequencer's CLOCK_MONOTONIC stamp
    uint64_t seqno                     # record number in the log, from 0


# ---- ring control block (first page of the ring's memfd) ----------------------
# Each struct is exactly one or two 64-byte cache lines; the sizes are checked
# when the module is imported.

ctypedef struct RingInfoLine:          # written once at creation, then read-only
    uint64_t magic
    uint32_t version
    uint32_t n_consumers
    uint64_t data_size                 # S: bytes in the mirrored data area
    uint64_t control_size              # file offset of the data area
    uint32_t stop                      # set once, by ring_stop()
    uint32_t _pad0
    uint8_t _pad[24]

ctypedef struct RingProducerLine:      # written by the producer only
    uint64_t cursor                    # end of the last published record
    uint64_t next_seqno
    uint8_t _pad[48]

ctypedef struct RingProducerStats:     # written by the producer only
    uint64_t records
    uint64_t bytes                     # ring bytes, headers and padding included
    uint64_t full_waits                # reserve found no room and had to wait
    uint64_t wakes                     # FUTEX_WAKE calls for sleeping consumers
    WaitCounters wait                  # how the waits for room ended
    uint8_t _pad[8]

ctypedef struct RingWaitLine:          # one per direction of waiting
    uint32_t eventcount                # futex word: epoch << 1 | "someone may sleep" bit
    uint32_t _pad0
    uint8_t _pad[56]

ctypedef struct RingConsumerSlot:      # two lines, written by its consumer only
    uint64_t cursor                    # line 1: everything before it is released
    uint8_t _pad_cursor[56]
    uint64_t records                   # line 2: statistics
    uint64_t bytes
    uint64_t wakes                     # FUTEX_WAKE calls for the sleeping producer
    WaitCounters wait                  # how this consumer's waits ended
    uint8_t _pad_stats[16]

ctypedef struct RingControl:
    RingInfoLine info
    RingProducerLine producer
    RingProducerStats producer_stats
    RingWaitLine consumer_wait         # consumers sleep here for records
    RingWaitLine producer_wait         # the producer sleeps here for room
    RingConsumerSlot consumers[16]     # RING_MAX_CONSUMERS

ctypedef struct Ring:                  # process-local handle (not shared)
    RingControl *ctl
    char *data                         # mirrored: data[i] == data[i + size]
    uint64_t size
    uint64_t mask
    uint32_t n_consumers
    uint64_t cached_min                # producer: last known slowest consumer cursor
    uint32_t reserved                  # producer: 1 between a reserve and its commit
    uint32_t reserved_max              # producer: payload room of the pending reserve


# ---- ring: producer ----------------------------------------------------------------

cdef inline uint64_t record_size(uint32_t length) noexcept nogil:
    """Ring bytes taken by a record with ``length`` payload bytes."""
    return (<uint64_t>RECORD_HEADER_SIZE + length + (RECORD_ALIGN - 1)) & ~(<uint64_t>RECORD_ALIGN - 1)

cdef char *ring_try_reserve(Ring *ring, uint32_t max_len) noexcept nogil
cdef int ring_wait_space(Ring *ring, uint32_t max_len, uint32_t spin_iterations,
                         uint64_t timeout_ns) noexcept nogil
cdef char *ring_reserve(Ring *ring, uint32_t max_len) noexcept nogil
cdef uint64_t ring_commit(Ring *ring, uint32_t length, uint16_t kind, uint16_t flags,
                          uint16_t gso_size, uint16_t csum_start, uint16_t csum_offset,
                          uint64_t now_ns) noexcept nogil
cdef void ring_stop(Ring *ring) noexcept nogil


# ---- ring: consumers ------------------------------------------------------------------

cdef inline uint64_t ring_available(Ring *ring, uint32_t consumer_id) noexcept nogil:
    """End of the published records (acquire: their bytes are visible)."""
    return atomic_load_acquire_u64(&ring.ctl.producer.cursor)

cdef inline uint64_t ring_next_seqno(Ring *ring) noexcept nogil:
    """The seqno the next ring_commit() will stamp (producer side)."""
    return ring.ctl.producer.next_seqno

cdef inline uint64_t ring_consumer_cursor(Ring *ring, uint32_t consumer_id) noexcept nogil:
    return ring.ctl.consumers[consumer_id].cursor

cdef inline RecordHeader *ring_record_at(Ring *ring, uint64_t position) noexcept nogil:
    return <RecordHeader *>(ring.data + (position & ring.mask))

cdef inline char *record_payload(RecordHeader *header) noexcept nogil:
    return (<char *>header) + RECORD_HEADER_SIZE

cdef inline uint64_t ring_next_position(RecordHeader *header, uint64_t position) noexcept nogil:
    return position + record_size(header.length)

cdef void ring_release(Ring *ring, uint32_t consumer_id, uint64_t new_position,
                       uint64_t records) noexcept nogil
cdef int ring_wait(Ring *ring, uint32_t consumer_id, uint32_t spin_iterations,
                   uint64_t timeout_ns) noexcept nogil
cdef int ring_wait_from(Ring *ring, uint32_t consumer_id, uint64_t position,
                        uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil


# ---- the Python-visible owner (other modules reach the C handle through it) --------------

cdef class BroadcastRing:
    cdef Ring ring
    cdef int fd
    cdef char *control
    cdef uint64_t control_size
    cdef Py_ssize_t exports            # live memoryviews: close() refuses while > 0
    cdef Py_ssize_t busy               # threads blocked in a nogil call: likewise
    cdef _attach(self, int fd, uint64_t control_size, uint64_t size)
    cdef void _release(self) noexcept
