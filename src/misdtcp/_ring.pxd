# cython: language_level=3
"""C-level interface of misdtcp._ring: the event log's shared layout and calls.

The log is a broadcast ring of fixed-size 64-byte entries (one cache line
each, read at a fixed stride so the next entry's address never depends on the
current one) plus a mirrored data area that holds the bytes entries refer to:
segment payloads, and whole records for what an entry cannot describe
(frames with unusual options, ICMP, requests).  A replica reads entries only;
it touches data bytes only for the payload stripes it owns.

Other Cython modules (the sequencer, the strategy loops, the replay source)
``cimport`` from here.  The memory layout is described in _ring.pyx's module
docstring; waiting follows runtime/wait.pxd.  Every function here is
``nogil`` and touches no Python object.  What an entry's ``kind`` means is the
runtime's vocabulary (runtime/vocabulary.pxd).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from misdtcp._system cimport atomic_load_acquire_u64
from misdtcp.runtime.wait cimport WaitCounters, wait_ready_fn
from misdtcp.wire.descriptor cimport Descriptor, DESCRIPTOR_SIZE
from misdtcp.wire.frame cimport FRAME_IN_DEVICE, FRAME_STRIDED


cdef enum:
    CACHE_LINE = 64
    RING_MAX_CONSUMERS = 16
    # The largest data one entry may claim: a 64 KiB GSO super-segment plus
    # its virtio-net header, with room to spare.
    RING_MAX_DATA = 65536 + 128


# ---- ring control block (first page of the ring's memfd) ----------------------
# Each struct is exactly one or two 64-byte cache lines; the sizes are checked
# when the module is imported.

ctypedef struct RingInfoLine:          # written once at creation, then read-only
    uint64_t magic
    uint32_t version
    uint32_t n_consumers
    uint64_t entry_count               # E: entries in the ring (a power of two)
    uint64_t data_size                 # S: bytes in the mirrored data area (a power of two)
    uint64_t entries_offset            # file offsets of the entries and the data area
    uint64_t data_offset
    uint32_t stop                      # set once, by ring_stop()
    uint32_t huge_pages                # the memfd is backed by huge pages
    uint8_t _pad[8]

ctypedef struct RingProducerLine:      # written by the producer only
    uint64_t cursor                    # entries published (the next entry's seqno)
    uint64_t data_cursor               # data-area position after the last published entry's bytes
    uint8_t _pad[48]

ctypedef struct RingProducerStats:     # written by the producer only
    uint64_t records                   # entries published
    uint64_t bytes                     # data-area bytes published
    uint64_t full_waits                # a claim found no room and had to wait
    uint64_t wakes                     # FUTEX_WAKE calls for sleeping consumers
    WaitCounters wait                  # how the waits for room ended

ctypedef struct RingWaitLine:          # one per direction of waiting
    uint32_t eventcount                # futex word: epoch << 1 | "someone may sleep" bit
    uint32_t _pad0
    uint8_t _pad[56]

ctypedef struct RingConsumerSlot:      # two lines, written by its consumer only
    uint64_t cursor                    # line 1: entries before it are released ...
    uint64_t data_cursor               # ... and data-area bytes before this
    uint8_t _pad_cursor[48]
    uint64_t records                   # line 2: statistics
    uint64_t bytes
    uint64_t wakes                     # FUTEX_WAKE calls for the sleeping producer
    WaitCounters wait                  # how this consumer's waits ended
    uint8_t _pad_stats[8]

ctypedef struct RingControl:
    RingInfoLine info
    RingProducerLine producer
    RingProducerStats producer_stats
    RingWaitLine consumer_wait         # consumers sleep here for entries
    RingWaitLine producer_wait         # the producer sleeps here for room
    RingConsumerSlot consumers[16]     # RING_MAX_CONSUMERS

ctypedef struct Ring:                  # process-local handle (not shared)
    RingControl *ctl
    Descriptor *entries
    uint64_t entry_mask
    char *data                         # mirrored: data[i] == data[i + size]
    uint64_t data_size
    uint64_t data_mask
    uint32_t n_consumers
    # producer-side state
    uint64_t cached_entry_min          # last known slowest consumer's entry cursor
    uint64_t cached_data_min           # ... and data cursor
    uint32_t pending                   # entries claimed, not yet committed
    uint64_t data_tail                 # data-area position after the pending entries' bytes
    # the device's receive ring, where FRAME_IN_DEVICE descriptors point
    # (wire/frame.pxd); mapped before the processes fork, so at the same
    # address in every process
    char *device
    uint64_t device_size
    uint64_t device_stride             # bytes from one slot to the next (FRAME_STRIDED runs)


# ---- producer ------------------------------------------------------------------------

cdef bint ring_has_room(Ring *ring, uint32_t entries, uint64_t data_bytes) noexcept nogil
cdef Descriptor *ring_claim(Ring *ring, uint32_t data_bytes) noexcept nogil
cdef int ring_wait_space(Ring *ring, uint32_t entries, uint64_t data_bytes, uint32_t spin_iterations,
                         uint64_t timeout_ns) noexcept nogil
cdef void ring_commit(Ring *ring) noexcept nogil
cdef void ring_stop(Ring *ring) noexcept nogil


cdef inline char *ring_data_tail(Ring *ring) noexcept nogil:
    """Where the next data byte of the pending entries goes (mirrored: any
    stretch of up to the data-area size is contiguous)."""
    return ring.data + (ring.data_tail & ring.data_mask)


cdef inline void ring_data_grow(Ring *ring, uint64_t n) noexcept nogil:
    """The pending entries' bytes grew by n (the caller wrote them at the tail;
    it checked the room with ring_has_room first)."""
    ring.data_tail += n


cdef inline Descriptor *ring_last_pending(Ring *ring) noexcept nogil:
    """The last claimed, not yet committed entry, or NULL."""
    if ring.pending == 0:
        return NULL
    return &ring.entries[(ring.ctl.producer.cursor + ring.pending - 1) & ring.entry_mask]


# ---- consumers -------------------------------------------------------------------------

cdef inline uint64_t ring_available(Ring *ring) noexcept nogil:
    """Entries published (acquire: their bytes and data are visible)."""
    return atomic_load_acquire_u64(&ring.ctl.producer.cursor)

cdef inline Descriptor *ring_descriptor(Ring *ring, uint64_t seqno) noexcept nogil:
    return &ring.entries[seqno & ring.entry_mask]

cdef inline char *ring_data(Ring *ring, uint64_t position) noexcept nogil:
    return ring.data + (position & ring.data_mask)

cdef inline char *ring_bytes(Ring *ring, const Descriptor *d) noexcept nogil:
    """Where a descriptor's bytes lie: in the data area, or (FRAME_IN_DEVICE)
    in the device's receive ring, `data` bytes from its start (with
    FRAME_STRIDED, where the first of its segments lies; the next ones are
    `device_stride` bytes apart)."""
    if d.frame_flags & FRAME_IN_DEVICE:
        return ring.device + d.data
    return ring.data + (d.data & ring.data_mask)

cdef inline uint64_t ring_consumer_cursor(Ring *ring, uint32_t consumer_id) noexcept nogil:
    return ring.ctl.consumers[consumer_id].cursor

cdef void ring_release(Ring *ring, uint32_t consumer_id, uint64_t seqno, uint64_t data_position,
                       uint64_t records) noexcept nogil
cdef uint64_t ring_released(Ring *ring) noexcept nogil
cdef int ring_wait_released(Ring *ring, uint64_t seqno, uint32_t spin_iterations, uint64_t timeout_ns,
                            wait_ready_fn also, void *also_context) noexcept nogil
cdef int ring_wait_from(Ring *ring, uint32_t consumer_id, uint64_t seqno,
                        uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil


# ---- the Python-visible owner (other modules reach the C handle through it) --------------

cdef class BroadcastRing:
    cdef Ring ring
    cdef int fd
    cdef char *control
    cdef uint64_t control_size
    cdef char *entries_map
    cdef uint64_t entries_map_size
    cdef Py_ssize_t exports            # live memoryviews: close() refuses while > 0
    cdef Py_ssize_t busy               # threads blocked in a nogil call: likewise
    cdef _attach(self, int fd, uint64_t entries_offset, uint64_t entry_count, uint64_t data_offset,
                 uint64_t data_size, bint huge)
    cdef void _release(self) noexcept
    cdef bytes _entry_bytes(self, Descriptor *e)
