# cython: language_level=3
"""C-level interface of misdtcp._ring: shared-memory layout, ring and queue calls.

Other Cython modules (sequencer, workers, buffers) ``cimport`` from here.  The
memory layout and the wait/wake protocol are described in _ring.pyx's module
docstring.  Every function here is ``nogil`` and touches no Python object.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from misdtcp._system cimport atomic_load_acquire_u64


cdef enum:
    CACHE_LINE = 64
    RING_MAX_CONSUMERS = 16
    RECORD_HEADER_SIZE = 32
    RECORD_ALIGN = 8
    # The largest payload the sequencer reserves: a 64 KiB GSO super-segment
    # plus the 12-byte virtio_net_hdr that precedes it on an IFF_VNET_HDR TUN.
    RING_MAX_FRAME = 65536 + 12
    # Spinning burns CPU that, with more processes than cores, the awaited
    # peer needs; a PAUSE is ~40-140 cycles, so 1000 spins is some tens of
    # microseconds: enough to cover a peer that is running, short against a
    # scheduler tick.
    RING_DEFAULT_SPIN = 1000
    # Every futex sleep is bounded so a caller notices a dead peer within 50 ms.
    RING_DEFAULT_TIMEOUT_NS = 50000000


cpdef enum RecordKind:
    REC_FRAME = 1      # bytes read from the TUN (virtio_net_hdr + IP packet)
    REC_COMMAND = 2    # an application request drained from the command queue
    REC_TICK = 3       # idle timer tick: only now_ns matters
    REC_DIGEST = 4     # debug: replicas compare a state digest at this position
    REC_STOP = 5       # end of the log


cpdef enum WaitStatus:
    WAIT_READY = 0     # the awaited condition holds (data available / room free)
    WAIT_TIMEOUT = 1   # nothing happened within the timeout: check the peer is alive
    WAIT_STOPPED = 2   # the stop flag is set


cpdef enum CommandKind:
    # The vocabulary of application -> sequencer requests.  The queue itself
    # does not interpret kind; the runtime does.
    CMD_NOP = 0
    CMD_LISTEN = 1     # conn = listener id, a = port
    CMD_CONNECT = 2    # conn = connection id, a = address, b = port
    CMD_CONSUMED = 3   # a = receive stream offset the application consumed up to
    CMD_SEND = 4       # a = send stream offset the application wrote up to
    CMD_CLOSE = 5      # orderly close (FIN after the queued data)
    CMD_ABORT = 6      # RST


# ---- records ------------------------------------------------------------------

ctypedef struct RecordHeader:          # 32 bytes, at an 8-aligned ring position
    uint32_t length                    # payload bytes following the header
    uint16_t kind                      # RecordKind
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
    uint64_t sleeps                    # futex sleeps waiting for room
    uint64_t wakes                     # FUTEX_WAKE calls for sleeping consumers
    uint64_t timeouts
    uint8_t _pad[16]

ctypedef struct RingWaitLine:          # one per direction of waiting
    uint32_t eventcount                # futex word: epoch << 1 | "someone may sleep" bit
    uint32_t _pad0
    uint8_t _pad[56]

ctypedef struct RingConsumerSlot:      # two lines, written by its consumer only
    uint64_t cursor                    # line 1: everything before it is released
    uint8_t _pad_cursor[56]
    uint64_t records                   # line 2: statistics
    uint64_t bytes
    uint64_t spins                     # waits satisfied while spinning
    uint64_t sleeps                    # futex sleeps
    uint64_t wakes                     # FUTEX_WAKE calls for the sleeping producer
    uint64_t timeouts
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


# ---- command queue ---------------------------------------------------------------

ctypedef struct Command:               # 32 bytes
    uint32_t kind                      # CommandKind
    uint32_t conn
    uint64_t a
    uint64_t b
    uint64_t c

ctypedef struct CommandSlot:           # one cache line, so posters do not false-share
    uint64_t sequence                  # Vyukov: pos -> free for ticket pos; pos+1 -> full
    Command command
    uint8_t _pad[24]

ctypedef struct CommandQueueInfo:
    uint64_t magic
    uint32_t version
    uint32_t capacity
    uint64_t control_size
    uint32_t stop
    uint32_t _pad0
    uint8_t _pad[32]

ctypedef struct CommandQueueControl:
    CommandQueueInfo info
    uint64_t tail                      # next ticket for posters (CAS)
    uint8_t _pad_tail[56]
    uint64_t head                      # next ticket the consumer takes
    uint64_t posted                    # statistics, consumer-written: commands taken
    uint64_t consumer_sleeps
    uint64_t consumer_wakes            # wakes sent to sleeping posters
    uint8_t _pad_head[32]
    RingWaitLine consumer_wait         # the consumer sleeps here for commands
    RingWaitLine poster_wait           # posters sleep here for a free slot
    uint64_t poster_full_waits         # statistics shared by posters (atomic adds,
    uint64_t poster_sleeps             # only on the slow path)
    uint64_t poster_wakes
    uint8_t _pad_poster[40]

ctypedef struct CmdQueue:              # process-local handle
    CommandQueueControl *ctl
    CommandSlot *slots
    uint64_t mask
    uint32_t capacity


# ---- mirrored memory ----------------------------------------------------------------

cdef int shm_create(const char *name, uint64_t size) noexcept nogil
cdef char *mirror_map(int fd, uint64_t offset, uint64_t size, int *error) noexcept nogil
cdef void mirror_unmap(char *base, uint64_t size) noexcept nogil


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


# ---- command queue --------------------------------------------------------------------

cdef bint cmdq_try_post(CmdQueue *queue, const Command *command) noexcept nogil
cdef int cmdq_post(CmdQueue *queue, const Command *command, uint32_t spin_iterations,
                   uint64_t timeout_ns) noexcept nogil
cdef bint cmdq_try_take(CmdQueue *queue, Command *out) noexcept nogil
cdef int cmdq_wait(CmdQueue *queue, uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil
cdef void cmdq_stop(CmdQueue *queue) noexcept nogil


# ---- Python-visible owners (other modules reach the C handles through them) --------------

cdef class MirroredBuffer:
    cdef int fd
    cdef char *base
    cdef readonly uint64_t size
    cdef Py_ssize_t exports
    cdef _attach(self, int fd, uint64_t size)
    cdef void _release(self) noexcept

cdef class BroadcastRing:
    cdef Ring ring
    cdef int fd
    cdef char *control
    cdef uint64_t control_size
    cdef Py_ssize_t exports            # live memoryviews: close() refuses while > 0
    cdef Py_ssize_t busy               # threads blocked in a nogil call: likewise
    cdef _attach(self, int fd, uint64_t control_size, uint64_t size)
    cdef void _release(self) noexcept

cdef class CommandQueue:
    cdef CmdQueue queue
    cdef int fd
    cdef char *control
    cdef uint64_t map_size
    cdef Py_ssize_t busy               # threads blocked in a nogil call: close() refuses
    cdef _attach(self, int fd, uint64_t total, uint64_t control_size, uint32_t capacity)
    cdef void _release(self) noexcept
