# Readiness: how an application that waits on a file descriptor (selectors,
# asyncio's add_reader) learns that a connection became readable or writable,
# without a system call per frame and without a thread polling shared memory.
# docs/DESIGN.md, "Readiness", has the whole picture; this is the workers' half.
#
# Progress is published as words in shared memory (a worker's copy progress
# per connection, worker 0's acknowledged send offset), with no event: that is
# what keeps the receive path free of system calls.  An application that is
# about to wait ARMS an interest in the slot's ReadyWant word (layout.pxd):
# "tell me once the readable end passes `seen`" -- store, full fence, re-read
# the progress (SharedView.arm_read).  Each worker records which connections
# it published progress for during a batch of records (ready_touch: one
# compare in the common case of one busy connection); at the end of the batch
# it issues ONE full fence and, for those connections only, loads the want
# word.  If it is armed and the condition holds (the minimum over every
# worker's progress, so the worker that completes the range is the one that
# sees it), it claims the word with a CAS to 0 -- one-shot, so exactly one
# worker tells -- and posts a READABLE (or WRITABLE) message on the event
# queue.  The application's event thread turns that message into a write on
# the connection's eventfd.
#
# Why no wake-up is lost: the application stores want then reads progress;
# a worker stores progress then reads want; both with a full fence between
# (Dekker's pattern, as in wait.pxd).  At least one of them sees the other's
# store: either the application sees the data and does not wait, or the
# worker sees the armed word and posts.  Between workers the same argument
# holds pairwise: the last worker to publish its part of a range sees every
# other worker's store, so the minimum it computes is the final one.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from misdtcp._system cimport atomic_cas_u64, atomic_fence_seq_cst, atomic_load_acquire_u64
from misdtcp._tcpcore cimport N_READABLE, N_WRITABLE, handle_slot
from misdtcp.runtime.layout cimport (RuntimeHeader, ReadyWant, layout_acked, layout_progress, layout_ready,
                                     progress_offset_of)
from misdtcp.runtime.queue cimport Message, MsgQueue, mq_post
from misdtcp.runtime.wait cimport WAIT_SPIN, WAIT_TIMEOUT_NS

cdef enum:
    READY_READ = 1
    READY_WRITE = 2
    READY_TOUCH_MAX = 8

ctypedef struct ReadyTouched:            # connections whose progress this worker published in a batch
    uint32_t n
    uint32_t overflow                    # more than READY_TOUCH_MAX: check every armed slot
    uint32_t handle[8]
    uint8_t kinds[8]


cdef inline void ready_touch(ReadyTouched *t, uint32_t handle, uint8_t kind) noexcept nogil:
    """Note that this worker published progress of `kind` for `handle`."""
    if t.n and t.handle[t.n - 1] == handle:
        t.kinds[t.n - 1] |= kind
    elif t.n < READY_TOUCH_MAX:
        t.handle[t.n] = handle
        t.kinds[t.n] = kind
        t.n += 1
    else:
        t.overflow = 1


cdef inline uint64_t ready_readable(RuntimeHeader *h, uint32_t handle) noexcept nogil:
    """The readable end: the minimum copy progress over the progress rows."""
    cdef uint32_t row, slot = handle_slot(handle)
    cdef uint64_t v, low = <uint64_t>-1
    for row in range(h.progress_rows):
        v = progress_offset_of(handle, atomic_load_acquire_u64(&layout_progress(h, row)[slot]))
        if v < low:
            low = v
    return low


cdef inline void _ready_post(MsgQueue *events, uint32_t kind, uint32_t handle, uint64_t value) noexcept nogil:
    cdef Message m
    m.kind = kind
    m.handle = handle
    m.a = value
    m.b = 0
    m.c = 0
    m.record = 0            # not an announced event: a replacement need not skip it
    m.index = 0
    mq_post(events, &m, WAIT_SPIN, WAIT_TIMEOUT_NS)


cdef inline void _ready_check(RuntimeHeader *h, MsgQueue *events, uint32_t handle, uint8_t kinds) noexcept nogil:
    cdef ReadyWant *want = &layout_ready(h)[handle_slot(handle)]
    cdef uint64_t w, threshold, now
    if kinds & READY_READ:
        w = atomic_load_acquire_u64(&want.read)
        threshold = progress_offset_of(handle, w)       # seen + 1, or 0: not armed (for this handle)
        if threshold:
            now = ready_readable(h, handle)
            if now >= threshold and atomic_cas_u64(&want.read, &w, 0):
                _ready_post(events, N_READABLE, handle, now)
    if kinds & READY_WRITE:
        w = atomic_load_acquire_u64(&want.write)
        threshold = progress_offset_of(handle, w)
        if threshold:
            now = progress_offset_of(handle, atomic_load_acquire_u64(&layout_acked(h)[handle_slot(handle)]))
            if now >= threshold and atomic_cas_u64(&want.write, &w, 0):
                _ready_post(events, N_WRITABLE, handle, now)


cdef inline void ready_signal(RuntimeHeader *h, MsgQueue *events, ReadyTouched *t) noexcept nogil:
    """End of a batch: tell the application about armed interests that the
    progress published in this batch satisfied (one fence per batch)."""
    cdef uint32_t i, slot
    cdef uint64_t w
    cdef ReadyWant *wants
    if t.n == 0 and not t.overflow:
        return
    if events != NULL:
        atomic_fence_seq_cst()
        if t.overflow:
            # many connections in one batch: look at every armed slot
            wants = layout_ready(h)
            for slot in range(h.max_conns):
                w = atomic_load_acquire_u64(&wants[slot].read) | atomic_load_acquire_u64(&wants[slot].write)
                if w:
                    _ready_check(h, events, <uint32_t>((w >> 48) << 20) | slot, READY_READ | READY_WRITE)
        else:
            for i in range(t.n):
                _ready_check(h, events, t.handle[i], t.kinds[i])
    t.n = 0
    t.overflow = 0
