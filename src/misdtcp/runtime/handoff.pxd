# The `leader` foil's hand-off of copy work: one single-producer,
# single-consumer queue per helper, in shared memory.  The leader (the only
# process that runs the TCP core) appends the stripes a helper owns and, at
# the end of each batch, a mark that tells the helper which copy progress to
# publish and how far it may release the log; the helper copies and follows
# the marks.  No locks: one writer per cursor, each cursor on its own line,
# the producer publishes once per batch, waiting follows runtime/wait.pxd.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from misdtcp.runtime.wait cimport WaitCounters

ctypedef struct CopyWork:              # 32 bytes
    uint64_t source                    # copy: where the bytes lie (see release); mark: the log's data position to release
    uint64_t stream_off                # copy: receive-stream offset; mark: readable offset of `handle`
    uint32_t length                    # copy: bytes; 0 for a mark
    uint32_t handle                    # the connection (mark: NO_CONN when no progress to publish)
    uint64_t release                   # mark: the log seqno to release up to; copy: 1 when `source` is an
                                       # offset in the device's receive ring (FRAME_IN_DEVICE), else 0

ctypedef struct HandoffControl:        # one per helper: producer line, consumer line, two wait lines
    uint64_t tail                      # written by the leader: work published
    uint8_t _pad_tail[56]
    uint64_t head                      # written by the helper: work done
    uint8_t _pad_head[56]
    uint32_t work_wait                 # eventcount: the helper sleeps here for work
    uint32_t _pad0
    uint8_t _pad_work[56]
    uint32_t room_wait                 # eventcount: the leader sleeps here for room
    uint32_t _pad1
    uint8_t _pad_room[56]
    WaitCounters helper_waits
    WaitCounters leader_waits

ctypedef struct Handoff:               # process-local handle
    HandoffControl *ctl
    CopyWork *slots
    uint64_t mask
    uint64_t pending_tail              # producer: written, not yet published
    uint32_t *stop                     # the runtime's stop flag


cdef int handoff_push(Handoff *q, const CopyWork *work) noexcept nogil
cdef void handoff_publish(Handoff *q) noexcept nogil
cdef uint64_t handoff_wait(Handoff *q, uint64_t head) noexcept nogil
cdef void handoff_done(Handoff *q, uint64_t head) noexcept nogil


cdef class HandoffQueues:
    cdef char *base
    cdef uint64_t map_size
    cdef int fd
    cdef readonly uint32_t count
    cdef readonly uint64_t capacity
    cdef Handoff *handles
    cdef Handoff *queue(self, uint32_t i, uint32_t *stop)
