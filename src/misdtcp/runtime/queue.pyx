# cython: language_level=3
"""The message queues of the runtime: requests from applications to the
sequencer, lifecycle events from worker 0 to the application.

A bounded Vyukov queue: a memfd with a control page then ``capacity`` 64-byte
slots, each ``{uint64 sequence; Message (32 B)}``.  A poster takes ticket
``pos`` by CAS on ``tail`` when ``slot[pos].sequence == pos`` (free), writes the
message, and release-stores ``sequence = pos + 1`` (full).  The consumer takes
``head`` when ``sequence == head + 1`` and release-stores
``sequence = head + capacity`` (free for the next lap).  Messages come out in
ticket order, so each poster's messages stay in its own order; nothing is ever
dropped: a poster facing a full queue waits (runtime/wait.pxd) until there is
room.  A poster that dies between winning its ticket and publishing blocks the
queue at that slot; the runtime treats a dead application process as fatal.
"""
import collections

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memset

from misdtcp._system cimport (MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, atomic_cas_weak_relaxed_u64,
                              atomic_fetch_add_u64, atomic_load_acquire_u64, atomic_load_relaxed_u64,
                              atomic_store_release_u64, atomic_store_relaxed_u64, atomic_store_seq_cst_u32,
                              close, counter_add_u64, mmap, munmap)
from misdtcp.runtime.shm cimport dup_fd, fd_size, os_error, page_size, round_up, shm_create
from misdtcp.runtime.wait cimport (WAIT_READY, WAIT_SPIN, WAIT_TIMEOUT_NS, ec_notify, ec_wake_all, flag_set,
                                   wait_for)

from misdtcp.runtime.wait import WaitStatus

QUEUE_MAGIC = 0x51444D435344494D      # "MISDCMDQ"
LAYOUT_VERSION = 3

PostedMessage = collections.namedtuple("PostedMessage", "kind handle a b c record index")

if sizeof(Message) != 48 or sizeof(MessageSlot) != 64 or sizeof(MessageQueueControl) != 6 * 64:
    raise ImportError("misdtcp.runtime.queue: shared-memory structs have an unexpected size")


cdef bint mq_try_post(MsgQueue *queue, const Message *message) noexcept nogil:
    """Append ``message``; False if the queue is full (nothing written)."""
    cdef MessageQueueControl *ctl = queue.ctl
    cdef uint64_t position = atomic_load_relaxed_u64(&ctl.tail)
    cdef MessageSlot *slot
    cdef int64_t lap
    while True:
        slot = &queue.slots[position & queue.mask]
        # Acquire: pairs with the consumer's release when it freed the slot,
        # so its read of the previous message happens before our overwrite.
        lap = <int64_t>(atomic_load_acquire_u64(&slot.sequence) - position)
        if lap == 0:
            # Free for ticket `position`: claim it.  Relaxed CAS is enough, the
            # message is published by the release store of `sequence` below.
            if atomic_cas_weak_relaxed_u64(&ctl.tail, &position, position + 1):
                break
        elif lap < 0:
            return False          # still holds the message of ticket position - capacity
        else:
            position = atomic_load_relaxed_u64(&ctl.tail)     # another poster took it
    slot.message = message[0]
    atomic_store_release_u64(&slot.sequence, position + 1)
    if ec_notify(&ctl.consumer_wait.eventcount):
        atomic_fetch_add_u64(&ctl.poster_wakes, 1)
    return True


ctypedef struct _PostWait:
    MsgQueue *queue
    const Message *message


cdef bint _posted(void *context) noexcept nogil:
    cdef _PostWait *w = <_PostWait *>context
    return mq_try_post(w.queue, w.message)


cdef int mq_post(MsgQueue *queue, const Message *message, uint32_t spin_iterations,
                 uint64_t timeout_ns) noexcept nogil:
    """Append ``message``, waiting for room: WAIT_READY once posted,
    WAIT_TIMEOUT (not posted) after ``timeout_ns``, WAIT_STOPPED (not posted)."""
    cdef _PostWait w
    if mq_try_post(queue, message):
        return WAIT_READY
    atomic_fetch_add_u64(&queue.ctl.poster_full_waits, 1)
    w.queue = queue
    w.message = message
    return wait_for(_posted, &w, &queue.ctl.poster_wait.eventcount, &queue.ctl.info.stop,
                    spin_iterations, timeout_ns, &queue.ctl.poster_waits)


cdef bint mq_try_take(MsgQueue *queue, Message *out) noexcept nogil:
    """Take the oldest message into ``out``; False if none is ready.

    "Not ready" includes a poster that has its ticket but has not finished
    writing: messages leave strictly in ticket order.
    """
    cdef MessageQueueControl *ctl = queue.ctl
    cdef uint64_t position = ctl.head                        # we are its only writer
    cdef MessageSlot *slot = &queue.slots[position & queue.mask]
    # Acquire: pairs with the poster's release, so the message bytes are complete.
    if atomic_load_acquire_u64(&slot.sequence) != position + 1:
        return False
    out[0] = slot.message
    # Release: our copy above happens before a poster of the next lap reuses it.
    atomic_store_release_u64(&slot.sequence, position + queue.capacity)
    atomic_store_relaxed_u64(&ctl.head, position + 1)
    counter_add_u64(&ctl.taken, 1)
    if ec_notify(&ctl.poster_wait.eventcount):
        counter_add_u64(&ctl.consumer_wakes, 1)
    return True


cdef bint _has_message(void *context) noexcept nogil:
    cdef MsgQueue *queue = <MsgQueue *>context
    cdef uint64_t position = queue.ctl.head
    return atomic_load_acquire_u64(&queue.slots[position & queue.mask].sequence) == position + 1


cdef int mq_wait(MsgQueue *queue, uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil:
    """Consumer: wait for a message.  WAIT_READY / WAIT_TIMEOUT / WAIT_STOPPED
    (stopped and empty)."""
    return wait_for(_has_message, queue, &queue.ctl.consumer_wait.eventcount, &queue.ctl.info.stop,
                    spin_iterations, timeout_ns, &queue.ctl.consumer_waits)


cdef void mq_stop(MsgQueue *queue) noexcept nogil:
    atomic_store_seq_cst_u32(&queue.ctl.info.stop, 1)
    ec_wake_all(&queue.ctl.consumer_wait.eventcount)
    ec_wake_all(&queue.ctl.poster_wait.eventcount)


cdef class MessageQueue:
    """Bounded multi-producer, single-consumer queue of 48-byte messages in shared memory.

    Posters in any process (forked, or mapped with ``from_fd``) call ``post``;
    the sequencer drains with ``mq_try_take`` (or ``take``/``drain`` here).
    """

    def __cinit__(self):
        self.fd = -1
        self.control = NULL
        self.map_size = 0
        self.busy = 0
        memset(&self.queue, 0, sizeof(MsgQueue))

    def __init__(self, uint32_t capacity=1024, *, str name="misdtcp-queue"):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two >= 2, not {capacity}")
        control_size = round_up(sizeof(MessageQueueControl), page_size())
        cdef MessageQueueInfo *info
        total = round_up(control_size + <uint64_t>capacity * sizeof(MessageSlot), page_size())
        encoded = name.encode()
        fd = shm_create(encoded, total)
        if fd < 0:
            raise os_error("memfd_create", -fd)
        self._attach(fd, total, control_size, capacity)
        info = &self.queue.ctl.info
        info.version = LAYOUT_VERSION
        info.capacity = capacity
        info.control_size = control_size
        # Slot i starts free for ticket i (Vyukov's initial state).
        for i in range(capacity):
            self.queue.slots[i].sequence = i
        atomic_store_release_u64(&info.magic, QUEUE_MAGIC)

    cdef _attach(self, int fd, uint64_t total, uint64_t control_size, uint32_t capacity):
        cdef void *base
        self.fd = fd
        base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if base == MAP_FAILED:
            error = os_error("mmap")
            self._release()
            raise error
        self.control = <char *>base
        self.map_size = total
        self.queue.ctl = <MessageQueueControl *>base
        self.queue.slots = <MessageSlot *>(<char *>base + control_size)
        self.queue.capacity = capacity
        self.queue.mask = capacity - 1

    @classmethod
    def from_fd(cls, int fd):
        """Map the queue whose memfd is ``fd`` (duplicated; the caller keeps its fd)."""
        cdef MessageQueue self = cls.__new__(cls)
        cdef int own = dup_fd(fd)
        cdef uint64_t control_size = round_up(sizeof(MessageQueueControl), page_size())
        cdef MessageQueueInfo *info
        try:
            total = fd_size(own)
            if total < control_size:
                raise ValueError("fd is not a misdtcp message queue (too small)")
        except BaseException:
            close(own)
            raise
        self._attach(own, total, control_size, 2)
        info = &self.queue.ctl.info
        capacity = info.capacity
        if (atomic_load_acquire_u64(&info.magic) != QUEUE_MAGIC or info.version != LAYOUT_VERSION
                or info.control_size != control_size
                or total != round_up(control_size + capacity * sizeof(MessageSlot), page_size())):
            self._release()
            raise ValueError("fd is not a misdtcp message queue of this layout version")
        self.queue.capacity = capacity
        self.queue.mask = capacity - 1
        return self

    cdef void _release(self) noexcept:
        if self.control != NULL:
            munmap(self.control, self.map_size)
            self.control = NULL
            self.queue.ctl = NULL
            self.queue.slots = NULL
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def _check_open(self):
        if self.control == NULL:
            raise ValueError("MessageQueue is closed")

    def close(self):
        if self.busy:
            raise RuntimeError(f"cannot close: {self.busy} thread(s) blocked in this queue; stop() it first")
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        self._release()

    def fileno(self):
        self._check_open()
        return self.fd

    @property
    def closed(self):
        return self.control == NULL

    @property
    def capacity(self):
        return self.queue.capacity

    cdef int _message(self, Message *m, uint32_t kind, uint32_t handle, uint64_t a, uint64_t b,
                             uint64_t c, uint64_t record=0, uint64_t index=0) except -1:
        self._check_open()
        m.kind = kind
        m.handle = handle
        m.a = a
        m.b = b
        m.c = c
        m.record = record         # events: the executor's record and index; requests: 0, or more
        m.index = index           # arguments (REQ_CONNECT6, runtime/vocabulary.pxd)
        return 0

    def try_post(self, uint32_t kind, uint32_t handle=0, uint64_t a=0, uint64_t b=0, uint64_t c=0,
                 uint64_t record=0, uint64_t index=0):
        """Post without waiting; False if the queue is full."""
        cdef Message message
        self._message(&message, kind, handle, a, b, c, record, index)
        return mq_try_post(&self.queue, &message)

    def post(self, uint32_t kind, uint32_t handle=0, uint64_t a=0, uint64_t b=0, uint64_t c=0,
             uint32_t spin=WAIT_SPIN, double timeout=0.05, uint64_t record=0, uint64_t index=0):
        """Post, waiting (GIL released) for room; returns a WaitStatus (READY = posted)."""
        cdef Message message
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        self._message(&message, kind, handle, a, b, c, record, index)
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = mq_post(&self.queue, &message, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    def take(self):
        """The oldest message as a PostedMessage tuple, or None."""
        self._check_open()
        cdef Message m
        if not mq_try_take(&self.queue, &m):
            return None
        return PostedMessage(m.kind, m.handle, m.a, m.b, m.c, m.record, m.index)

    def drain(self, uint64_t max_messages=0):
        """Every ready message (at most ``max_messages`` if non-zero), in order."""
        self._check_open()
        cdef Message m
        messages = []
        while (max_messages == 0 or <uint64_t>len(messages) < max_messages) and \
                mq_try_take(&self.queue, &m):
            messages.append(PostedMessage(m.kind, m.handle, m.a, m.b, m.c, m.record, m.index))
        return messages

    def last_posted(self, bint recorded_only=False):
        """The newest message a poster finished posting (whether taken since
        or not), or None.  For a dead worker 0's event queue: what it
        announced last (`recorded_only`: skipping messages without a record,
        the readiness messages every worker posts).  A ticket claimed but
        not (yet) published is skipped; the search ends at a slot a later
        lap reused."""
        self._check_open()
        cdef uint64_t tail = atomic_load_acquire_u64(&self.queue.ctl.tail)
        cdef uint64_t position = tail
        cdef uint64_t sequence
        cdef MessageSlot *slot
        while position and tail - position < self.queue.capacity:
            position -= 1
            slot = &self.queue.slots[position & self.queue.mask]
            sequence = atomic_load_acquire_u64(&slot.sequence)
            if sequence == position + 1 or sequence == position + self.queue.capacity:
                m = slot.message
                if recorded_only and m.record == 0:
                    continue
                return PostedMessage(m.kind, m.handle, m.a, m.b, m.c, m.record, m.index)
            if sequence != position:
                return None
        return None

    def abandon_claim(self):
        """For a queue with one poster that died: give back the ticket it
        claimed but never published (its slot would hold the consumer up
        forever).  Returns True if there was one.  Only while nobody posts."""
        self._check_open()
        cdef uint64_t tail = atomic_load_acquire_u64(&self.queue.ctl.tail)
        if tail and atomic_load_acquire_u64(&self.queue.slots[(tail - 1) & self.queue.mask].sequence) == tail - 1:
            atomic_store_release_u64(&self.queue.ctl.tail, tail - 1)
            return True
        return False

    def wait(self, uint32_t spin=WAIT_SPIN, double timeout=0.05):
        """Consumer: block (GIL released) until a message is ready; returns a WaitStatus."""
        self._check_open()
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = mq_wait(&self.queue, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    def stop(self):
        self._check_open()
        mq_stop(&self.queue)

    @property
    def stopped(self):
        self._check_open()
        return flag_set(&self.queue.ctl.info.stop)

    def counters(self):
        self._check_open()
        cdef MessageQueueControl *ctl = self.queue.ctl
        return {
            "tail": atomic_load_relaxed_u64(&ctl.tail),
            "head": atomic_load_relaxed_u64(&ctl.head),
            "taken": atomic_load_relaxed_u64(&ctl.taken),
            "consumer_sleeps": atomic_load_relaxed_u64(&ctl.consumer_waits.sleeps),
            "consumer_wakes": atomic_load_relaxed_u64(&ctl.consumer_wakes),
            "poster_full_waits": atomic_load_relaxed_u64(&ctl.poster_full_waits),
            "poster_sleeps": atomic_load_relaxed_u64(&ctl.poster_waits.sleeps),
            "poster_wakes": atomic_load_relaxed_u64(&ctl.poster_wakes),
        }
