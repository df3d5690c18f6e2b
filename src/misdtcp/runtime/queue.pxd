# The runtime's message queues: applications post requests to the sequencer
# (the request queue), and worker 0 posts lifecycle events to the
# application (the event queue).  Both are the same bounded multi-producer,
# single-consumer queue of 48-byte messages in shared memory; queue.pyx
# describes the protocol.  Every function here is nogil.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from misdtcp.runtime.wait cimport WaitCounters

ctypedef struct Message:               # 48 bytes
    uint32_t kind                      # a request (REQ_*) or an event (EV_*) of runtime/vocabulary.pxd
    uint32_t handle                    # the connection handle it concerns (0 when none)
    uint64_t a
    uint64_t b
    uint64_t c
    uint64_t record                    # events: the log record they came from (a seqno + 1) ...
    uint64_t index                     # ... and their index among that record's events

ctypedef struct MessageSlot:           # one cache line, so posters do not false-share
    uint64_t sequence                  # Vyukov: pos -> free for ticket pos; pos+1 -> full
    Message message
    uint8_t _pad[8]

ctypedef struct MessageQueueInfo:
    uint64_t magic
    uint32_t version
    uint32_t capacity
    uint64_t control_size
    uint32_t stop
    uint32_t _pad0
    uint8_t _pad[32]

ctypedef struct MessageQueueWait:      # one eventcount word on its own line
    uint32_t eventcount
    uint32_t _pad0
    uint8_t _pad[56]

ctypedef struct MessageQueueControl:
    MessageQueueInfo info
    uint64_t tail                      # next ticket for posters (CAS)
    uint8_t _pad_tail[56]
    uint64_t head                      # next ticket the consumer takes
    uint64_t taken                     # statistics, consumer-written
    uint64_t consumer_wakes            # wakes sent to sleeping posters
    WaitCounters consumer_waits
    uint8_t _pad_head[8]
    MessageQueueWait consumer_wait     # the consumer sleeps here for messages
    MessageQueueWait poster_wait       # posters sleep here for a free slot
    uint64_t poster_full_waits         # statistics shared by posters (atomic adds,
    uint64_t poster_wakes              # only on the slow path)
    WaitCounters poster_waits
    uint8_t _pad_poster[16]

ctypedef struct MsgQueue:              # process-local handle
    MessageQueueControl *ctl
    MessageSlot *slots
    uint64_t mask
    uint32_t capacity


cdef bint mq_try_post(MsgQueue *queue, const Message *message) noexcept nogil
cdef int mq_post(MsgQueue *queue, const Message *message, uint32_t spin_iterations,
                 uint64_t timeout_ns) noexcept nogil
cdef bint mq_try_take(MsgQueue *queue, Message *out) noexcept nogil
cdef int mq_wait(MsgQueue *queue, uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil
cdef void mq_stop(MsgQueue *queue) noexcept nogil


cdef class MessageQueue:
    cdef MsgQueue queue
    cdef int fd
    cdef char *control
    cdef uint64_t map_size
    cdef Py_ssize_t busy               # threads blocked in a nogil call: close() refuses
    cdef _attach(self, int fd, uint64_t total, uint64_t control_size, uint32_t capacity)
    cdef void _release(self) noexcept
    cdef int _message(self, Message *m, uint32_t kind, uint32_t handle, uint64_t a, uint64_t b,
                      uint64_t c, uint64_t record=*, uint64_t index=*) except -1
