# cython: language_level=3
"""Copy-work hand-off queues for the `leader` foil (see handoff.pxd)."""
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free

from misdtcp._system cimport (MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, atomic_load_acquire_u64,
                              atomic_store_release_u64, close, mmap, munmap)
from misdtcp.runtime.shm cimport os_error, page_size, round_up, shm_create
from misdtcp.runtime.wait cimport (WAIT_READY, WAIT_SPIN, WAIT_STOPPED, WAIT_TIMEOUT_NS, ec_notify, flag_set,
                                   wait_for)

if sizeof(CopyWork) != 32 or sizeof(HandoffControl) != 5 * 64:
    raise ImportError("misdtcp.runtime.handoff: shared-memory structs have an unexpected size")


cdef bint _has_room(void *context) noexcept nogil:
    cdef Handoff *q = <Handoff *>context
    return q.pending_tail - atomic_load_acquire_u64(&q.ctl.head) <= q.mask


cdef int handoff_push(Handoff *q, const CopyWork *work) noexcept nogil:
    """Append one piece of work (published by handoff_publish); waits while
    the helper is a whole queue behind.  WAIT_STOPPED once stopping."""
    cdef int rc
    while not _has_room(q):
        handoff_publish(q)              # the helper must see what is pending to make room
        rc = wait_for(_has_room, q, &q.ctl.room_wait, q.stop, WAIT_SPIN, WAIT_TIMEOUT_NS,
                      &q.ctl.leader_waits)
        if rc == WAIT_STOPPED:
            return rc
    q.slots[q.pending_tail & q.mask] = work[0]
    q.pending_tail += 1
    return WAIT_READY


cdef void handoff_publish(Handoff *q) noexcept nogil:
    """Release-store the tail: the helper sees every pushed piece at once."""
    if q.pending_tail != q.ctl.tail:
        atomic_store_release_u64(&q.ctl.tail, q.pending_tail)
        ec_notify(&q.ctl.work_wait)


ctypedef struct _WorkWait:
    Handoff *q
    uint64_t head


cdef bint _has_work(void *context) noexcept nogil:
    cdef _WorkWait *w = <_WorkWait *>context
    return atomic_load_acquire_u64(&w.q.ctl.tail) != w.head


cdef uint64_t handoff_wait(Handoff *q, uint64_t head) noexcept nogil:
    """The helper waits for work past `head`; returns the published tail
    (== head once stopping with nothing left)."""
    cdef _WorkWait w
    w.q = q
    w.head = head
    while not _has_work(&w):
        if wait_for(_has_work, &w, &q.ctl.work_wait, q.stop, WAIT_SPIN, WAIT_TIMEOUT_NS,
                    &q.ctl.helper_waits) == WAIT_STOPPED and not _has_work(&w):
            return head
    return atomic_load_acquire_u64(&q.ctl.tail)


cdef void handoff_done(Handoff *q, uint64_t head) noexcept nogil:
    """The helper is done with everything before `head`: the leader may reuse it."""
    atomic_store_release_u64(&q.ctl.head, head)
    ec_notify(&q.ctl.room_wait)


cdef class HandoffQueues:
    """`count` hand-off queues of `capacity` pieces each, in one memfd
    (forked children inherit the mapping)."""

    def __cinit__(self, uint32_t count, uint64_t capacity=1 << 16):
        cdef uint64_t each
        cdef void *mapped
        cdef uint32_t i
        self.base = NULL
        self.fd = -1
        self.handles = NULL
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two, not {capacity}")
        self.count = count
        self.capacity = capacity
        each = round_up(sizeof(HandoffControl) + capacity * sizeof(CopyWork), page_size())
        self.map_size = max(each * count, page_size())
        self.fd = shm_create(b"misdtcp-handoff", self.map_size)
        if self.fd < 0:
            raise os_error("memfd_create", -self.fd)
        mapped = mmap(NULL, self.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        if mapped == MAP_FAILED:
            raise os_error("mmap")
        self.base = <char *>mapped
        self.handles = <Handoff *>calloc(max(count, 1), sizeof(Handoff))
        if self.handles == NULL:
            raise MemoryError()
        for i in range(count):
            self.handles[i].ctl = <HandoffControl *>(self.base + i * each)
            self.handles[i].slots = <CopyWork *>(self.base + i * each + sizeof(HandoffControl))
            self.handles[i].mask = capacity - 1
            self.handles[i].pending_tail = 0

    cdef Handoff *queue(self, uint32_t i, uint32_t *stop):
        self.handles[i].stop = stop
        return &self.handles[i]

    def close(self):
        if self.base != NULL:
            munmap(self.base, self.map_size)
            self.base = NULL
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        self.close()
        free(self.handles)
