# cython: language_level=3
"""Shared-memory primitives of the MISD runtime: mirrored buffers, the broadcast
ring (sequencer -> every worker) and the command queue (applications -> sequencer).

Everything lives in memfd files, so nothing ever appears in /dev/shm and the
memory disappears with the last fd and mapping.  A child created by fork()
inherits the mappings; another process can map the same memory from the fd
(``from_fd``; pass the fd with SCM_RIGHTS or open /proc/<pid>/fd/<n>).

Mirrored mapping
================
A memfd of S bytes (a power of two, at least one page) is mapped twice, back to
back, inside a 2*S reservation::

    base                      base+S                    base+2S
    | file [0, S)             | file [0, S) again       |

so ``base[i] is base[i + S]`` and every range [i, i+len) with i < S and
len <= S is contiguous.  A ring record never wraps, and an application reads
any readable stretch of a receive buffer as one memoryview without a copy.

Broadcast ring (one producer, up to 16 consumers)
=================================================
One memfd: a control page, then the S-byte data area, mapped mirrored::

    file offset 0      RingControl (every line 64-byte aligned, see _ring.pxd)
        +0    info            magic, version, n_consumers, S, control size, stop
        +64   producer        cursor (published end), next_seqno
        +128  producer_stats  records, bytes, full_waits, sleeps, wakes, timeouts
        +192  consumer_wait   eventcount word consumers sleep on
        +256  producer_wait   eventcount word the producer sleeps on
        +320  consumers[16]   128 bytes each: cursor line, statistics line
    file offset PAGE   data area, S bytes

Cursors are uint64 byte positions that only grow; a position maps to
``data + (position & (S - 1))``.  All comparisons use unsigned differences, so
they stay correct when a cursor wraps past 2^64.  Records start 8-aligned::

    | RecordHeader (32 B) | payload (length B) | pad to 8 |

The producer may write [producer cursor, slowest consumer cursor + S): it never
overwrites a byte some consumer has not released (lossless back-pressure).
Each cursor sits alone on its cache line so that the producer's stores and each
consumer's stores never invalidate each other's lines (false sharing).

Memory ordering
---------------
* Producer: write header + payload, then **release**-store the cursor.  A
  consumer's **acquire** load of the cursor that sees the new value therefore
  sees the whole record.
* Consumer: read records, then **release**-store its own cursor.  The producer
  **acquire**-loads consumer cursors before reusing space, so the consumer's
  reads happen before the producer's overwrites (no write-after-read race).

Sleeping (eventcount over a futex)
----------------------------------
Waiters spin briefly with PAUSE, then sleep on a 32-bit futex word.  With
more processes than cores (this machine has 2) pure spinning starves the very
process being waited for.  Each direction has one word: ``epoch << 1 | S``
where S means "someone may be asleep".

    sleeper                                   waker (after publishing)
    w = fetch_or(word, 1) | 1   (seq_cst)     full fence
    re-check condition -> done if true        w = load(word)
    futex_wait(word, w, timeout)              if w & 1: CAS(word, w, (w + 2) & ~1)
    loop                                      and futex_wake(word, all)

This is Dekker's pattern: the sleeper writes the word then reads the
condition; the waker writes the condition then reads the word, each with a full
barrier in between, so at least one of them sees the other.  If the waker
missed the bit, the sleeper's re-check sees the data.  If it saw the bit it
bumps the epoch, so a sleeper that has not reached FUTEX_WAIT yet gets EAGAIN
(the kernel compares the word and queues atomically) and one already queued is
woken.  No lost wake-ups, and a waker makes a syscall only when a sleeper
announced itself since the last wake: a producer racing ahead of descheduled
consumers does not pay a FUTEX_WAKE per record.  The cost on the hot path is
one full fence per publish (per batch on the consumer side).

Futexes are used without FUTEX_PRIVATE_FLAG: the words are in MAP_SHARED
memory used by several processes.  Every sleep has a timeout (callers pass
50-100 ms) and waits return WAIT_TIMEOUT, so a caller notices a dead peer.

Command queue (many posters, one consumer)
==========================================
A bounded Vyukov queue: a memfd with a control page then ``capacity`` 64-byte
slots, each ``{uint64 sequence; Command (32 B)}``.  A poster takes ticket
``pos`` by CAS on ``tail`` when ``slot[pos].sequence == pos`` (free), writes the
command, and release-stores ``sequence = pos + 1`` (full).  The consumer takes
``head`` when ``sequence == head + 1`` and release-stores
``sequence = head + capacity`` (free for the next lap).  Commands come out in
ticket order, so each poster's commands stay in its own order; nothing is ever
dropped: a poster facing a full queue spins, then sleeps on the eventcount.
A poster that dies between winning its ticket and publishing blocks the queue
at that slot; the runtime treats a dead application process as fatal anyway.

Statistics are plain single-writer counters in the shared pages, readable
from Python at any time (``counters()``).
"""
from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from libc.limits cimport INT_MAX

from misdtcp._system cimport (
    MAP_ANONYMOUS, MAP_FAILED, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE,
    MAP_SHARED, MFD_CLOEXEC, PROT_NONE, PROT_READ, PROT_WRITE, _SC_PAGESIZE,
    atomic_cas_u32, atomic_cas_weak_relaxed_u64, atomic_fence_seq_cst,
    atomic_fetch_add_u64, atomic_fetch_or_u32, atomic_load_acquire_u64,
    atomic_load_relaxed_u32, atomic_load_relaxed_u64, atomic_store_release_u64,
    atomic_store_relaxed_u64, atomic_store_seq_cst_u32, close, counter_add_u64, cpu_relax,
    dup, errno, fstat, ftruncate, futex_wait, futex_wake, memfd_create, mmap,
    monotonic_ns, munmap, stat, sysconf,
)

import collections
import os

RING_MAGIC = 0x474E49525344494D      # "MISDRING" little-endian
CMDQ_MAGIC = 0x51444D435344494D      # "MISDCMDQ"
LAYOUT_VERSION = 1

DEFAULT_SPIN = RING_DEFAULT_SPIN
DEFAULT_TIMEOUT_NS = RING_DEFAULT_TIMEOUT_NS

HEADER_SIZE = RECORD_HEADER_SIZE
MAX_CONSUMERS = RING_MAX_CONSUMERS
MAX_FRAME = RING_MAX_FRAME

Record = collections.namedtuple(
    "Record", "seqno kind flags gso_size csum_start csum_offset now_ns payload")
QueuedCommand = collections.namedtuple("QueuedCommand", "kind conn a b c")

# The layout is shared between processes and across modules: pin it.
if (sizeof(RecordHeader) != 32 or sizeof(RingInfoLine) != 64
        or sizeof(RingProducerLine) != 64 or sizeof(RingProducerStats) != 64
        or sizeof(RingWaitLine) != 64 or sizeof(RingConsumerSlot) != 128
        or sizeof(RingControl) != 5 * 64 + RING_MAX_CONSUMERS * 128
        or sizeof(Command) != 32 or sizeof(CommandSlot) != 64
        or sizeof(CommandQueueControl) != 6 * 64):
    raise ImportError("misdtcp._ring: shared-memory structs have an unexpected size")


cdef uint64_t _page_size() noexcept nogil:
    return <uint64_t>sysconf(_SC_PAGESIZE)


cdef uint64_t _round_up(uint64_t n, uint64_t to) noexcept nogil:
    return (n + to - 1) // to * to


def _check_size(uint64_t size):
    if size < _page_size() or size & (size - 1):
        raise ValueError(
            f"shared buffer size must be a power of two of at least one page "
            f"({_page_size()} bytes), not {size}")


def _oserror(what, int error=0):
    """OSError for a failed call: ``error`` if given, else the current errno."""
    cdef int e = error if error else errno
    return OSError(e, f"{what}: {os.strerror(e)}")


# =============================================================================
# Mirrored memory
# =============================================================================

cdef int shm_create(const char *name, uint64_t size) noexcept nogil:
    """A memfd of ``size`` zero bytes; on failure -errno.

    MFD_CLOEXEC: fork() children inherit it (what the runtime wants) but
    programs we exec (an iperf3 client in a test) do not.
    """
    cdef int fd = memfd_create(name, MFD_CLOEXEC)
    cdef int error
    if fd < 0:
        return -errno
    if ftruncate(fd, <long>size) != 0:
        error = errno
        close(fd)
        return -error
    return fd


cdef char *mirror_map(int fd, uint64_t offset, uint64_t size, int *error) noexcept nogil:
    """Map file bytes [offset, offset+size) twice back to back; NULL and *error on failure.

    The PROT_NONE reservation claims 2*size of address space first so the two
    MAP_FIXED mappings cannot land on anything else; MAP_FIXED then replaces
    the reservation's pages in place.
    """
    cdef void *base = mmap(NULL, 2 * size, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    cdef void *first
    cdef void *second
    if base == MAP_FAILED:
        error[0] = errno
        return NULL
    first = mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, <long>offset)
    if first != MAP_FAILED:
        second = mmap(<char *>base + size, size, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_FIXED, fd, <long>offset)
        if second != MAP_FAILED:
            return <char *>base
    error[0] = errno
    munmap(base, 2 * size)
    return NULL


cdef void mirror_unmap(char *base, uint64_t size) noexcept nogil:
    if base != NULL:
        munmap(base, 2 * size)


cdef uint64_t _fd_size(int fd) except? 0:
    cdef stat st
    if fstat(fd, &st) != 0:
        raise _oserror("fstat")
    return <uint64_t>st.st_size


cdef int _dup_fd(int fd) except -1:
    cdef int copy = dup(fd)
    if copy < 0:
        raise _oserror("dup")
    return copy


cdef class MirroredBuffer:
    """S bytes of shared memory mapped twice, so any range [i, i+n) is contiguous.

    ``MirroredBuffer(size)`` creates it (a memfd); ``MirroredBuffer.from_fd(fd)``
    maps an existing one (the fd is duplicated; the caller keeps its own).
    The buffer protocol exports the whole 2*S mapping; ``view(offset, n)``
    returns the n bytes at ``offset % S`` as a writable memoryview.  Like
    ``mmap``, ``close()`` refuses while views are alive (BufferError), since
    unmapping under a live view would turn a stale read into a crash.
    """

    def __cinit__(self):
        self.fd = -1
        self.base = NULL
        self.size = 0
        self.exports = 0

    def __init__(self, uint64_t size, *, str name="misdtcp-buffer"):
        _check_size(size)
        encoded = name.encode()
        fd = shm_create(encoded, size)
        if fd < 0:
            raise _oserror("memfd_create", -fd)
        self._attach(fd, size)

    cdef _attach(self, int fd, uint64_t size):
        """Map ``fd`` (which this object now owns) mirrored."""
        cdef int error_code = 0
        self.fd = fd
        self.size = size
        self.base = mirror_map(fd, 0, size, &error_code)
        if self.base == NULL:
            error = _oserror("mmap", error_code)
            self._release()
            raise error

    @classmethod
    def from_fd(cls, int fd):
        """Map the memfd ``fd`` of another MirroredBuffer (e.g. from another process)."""
        cdef MirroredBuffer self = cls.__new__(cls)
        cdef int own = _dup_fd(fd)
        try:
            size = _fd_size(own)
            _check_size(size)
        except BaseException:
            close(own)
            raise
        self._attach(own, size)
        return self

    cdef void _release(self) noexcept:
        mirror_unmap(self.base, self.size)
        self.base = NULL
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def fileno(self):
        self._check_open()
        return self.fd

    @property
    def closed(self):
        return self.base == NULL

    def _check_open(self):
        if self.base == NULL:
            raise ValueError("MirroredBuffer is closed")

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        self._check_open()
        PyBuffer_FillInfo(buffer, self, self.base, <Py_ssize_t>(2 * self.size), 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1

    def view(self, uint64_t offset, uint64_t length):
        """The ``length`` bytes at stream ``offset`` (taken modulo the size), zero-copy."""
        self._check_open()
        if length > self.size:
            raise ValueError(f"a view is at most the buffer size ({self.size}), not {length}")
        start = offset & (self.size - 1)
        return memoryview(self)[start:start + length]

    def close(self):
        if self.exports:
            raise BufferError(f"cannot close: {self.exports} memoryview(s) still exported")
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        # A live memoryview holds a reference to us, so exports is 0 here.
        self._release()


# =============================================================================
# Eventcount: sleep / wake without lost wake-ups (protocol in the docstring)
# =============================================================================

cdef inline uint32_t _ec_prepare_sleep(uint32_t *word) noexcept nogil:
    """Announce a sleeper; returns the word's value to pass to futex_wait.

    Must be followed by a re-check of the condition: the seq_cst RMW orders our
    announcement before that re-check (Dekker with the waker's fence).
    """
    return atomic_fetch_or_u32(word, 1) | 1


cdef inline bint _ec_notify(uint32_t *word) noexcept nogil:
    """Called after publishing; wakes every sleeper if one announced itself.

    The fence orders the publishing store before the load of the word (x86
    would otherwise let the load pass the store in the store buffer, and a
    sleeper could miss the data while we miss its bit).  Returns True when a
    FUTEX_WAKE was issued.
    """
    cdef uint32_t w
    atomic_fence_seq_cst()
    w = atomic_load_relaxed_u32(word)
    while w & 1:
        # New epoch, bit cleared: sleepers still on their way to FUTEX_WAIT
        # with the old value get EAGAIN; queued ones are woken below.  If the
        # CAS fails another waker bumped the epoch (w is reloaded) and its wake
        # covers everyone who announced before our fence.
        if atomic_cas_u32(word, &w, (w + 2) & ~(<uint32_t>1)):
            futex_wake(word, INT_MAX)
            return True
    return False


cdef inline void _ec_wake_all(uint32_t *word) noexcept nogil:
    """Unconditional bump + wake (used by stop)."""
    cdef uint32_t w = atomic_load_relaxed_u32(word)
    while not atomic_cas_u32(word, &w, (w + 2) & ~(<uint32_t>1)):
        pass
    futex_wake(word, INT_MAX)


cdef inline bint _stopped(uint32_t *flag) noexcept nogil:
    return atomic_load_relaxed_u32(flag) != 0


# =============================================================================
# Broadcast ring: producer
# =============================================================================

cdef inline uint64_t _slowest_cursor(Ring *ring, uint64_t producer_position) noexcept nogil:
    """Cursor of the consumer furthest behind ``producer_position``.

    Acquire loads: a consumer release-stores its cursor after reading the
    records before it, so its reads happen before we overwrite that space.
    The lag is an unsigned difference, correct across a 2^64 wrap.
    """
    cdef uint64_t lag, max_lag = 0
    cdef uint32_t i
    for i in range(ring.n_consumers):
        lag = producer_position - atomic_load_acquire_u64(&ring.ctl.consumers[i].cursor)
        if lag > max_lag:
            max_lag = lag
    return producer_position - max_lag


cdef inline bint _has_room(Ring *ring, uint64_t position, uint64_t need) noexcept nogil:
    # The cached cursor can only be behind the true one, so a "yes" from it is
    # safe; only a "no" is worth the cross-core loads of every consumer cursor.
    if (position - ring.cached_min) + need <= ring.size:
        return True
    ring.cached_min = _slowest_cursor(ring, position)
    return (position - ring.cached_min) + need <= ring.size


cdef char *ring_try_reserve(Ring *ring, uint32_t max_len) noexcept nogil:
    """Payload area for a record of up to ``max_len`` bytes, or NULL if no room.

    NULL also when ``record_size(max_len)`` exceeds the ring (a caller bug).
    The area stays reserved until ring_commit(); nothing is visible before.
    """
    cdef uint64_t need = record_size(max_len)
    cdef uint64_t position = ring.ctl.producer.cursor      # we are its only writer
    if need > ring.size or not _has_room(ring, position, need):
        return NULL
    ring.reserved = 1
    ring.reserved_max = max_len
    return ring.data + (position & ring.mask) + RECORD_HEADER_SIZE


cdef int ring_wait_space(Ring *ring, uint32_t max_len, uint32_t spin_iterations,
                         uint64_t timeout_ns) noexcept nogil:
    """Wait until a record of ``max_len`` fits: WAIT_READY, WAIT_TIMEOUT or WAIT_STOPPED."""
    cdef RingControl *ctl = ring.ctl
    cdef uint64_t need = record_size(max_len)
    cdef uint64_t position = ctl.producer.cursor
    cdef uint64_t deadline, now
    cdef uint32_t i, seen
    if _has_room(ring, position, need):
        return WAIT_READY
    counter_add_u64(&ctl.producer_stats.full_waits, 1)
    for i in range(spin_iterations):
        cpu_relax()
        if _has_room(ring, position, need):
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
    deadline = monotonic_ns() + timeout_ns
    while True:
        seen = _ec_prepare_sleep(&ctl.producer_wait.eventcount)
        if _has_room(ring, position, need):
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
        now = monotonic_ns()
        if now >= deadline:
            counter_add_u64(&ctl.producer_stats.timeouts, 1)
            return WAIT_TIMEOUT
        counter_add_u64(&ctl.producer_stats.sleeps, 1)
        futex_wait(&ctl.producer_wait.eventcount, seen, deadline - now)
        # Check before announcing again: a waker cleared the bit, and leaving
        # it set when we do not sleep would cost the next waker a syscall.
        if _has_room(ring, position, need):
            return WAIT_READY


cdef char *ring_reserve(Ring *ring, uint32_t max_len) noexcept nogil:
    """Like ring_try_reserve but waits for room; NULL only if stopped (or too big).

    Waits in RING_DEFAULT_TIMEOUT_NS slices forever: a producer that must notice a
    dead consumer uses ring_try_reserve + ring_wait_space itself.
    """
    cdef char *payload
    if record_size(max_len) > ring.size:
        return NULL
    while True:
        payload = ring_try_reserve(ring, max_len)
        if payload != NULL:
            return payload
        if ring_wait_space(ring, max_len, RING_DEFAULT_SPIN, RING_DEFAULT_TIMEOUT_NS) == WAIT_STOPPED:
            return NULL


cdef uint64_t ring_commit(Ring *ring, uint32_t length, uint16_t kind, uint16_t flags,
                          uint16_t gso_size, uint16_t csum_start, uint16_t csum_offset,
                          uint64_t now_ns) noexcept nogil:
    """Publish the reserved record with ``length`` payload bytes; returns its seqno.

    Precondition: a successful reserve with ``max_len >= length`` (the Python
    wrapper checks it; the C fast path trusts the sequencer).
    """
    cdef RingControl *ctl = ring.ctl
    cdef uint64_t position = ctl.producer.cursor
    cdef uint64_t seqno = ctl.producer.next_seqno
    cdef uint64_t size = record_size(length)
    cdef RecordHeader *header = <RecordHeader *>(ring.data + (position & ring.mask))
    header.length = length
    header.kind = kind
    header.flags = flags
    header.gso_size = gso_size
    header.csum_start = csum_start
    header.csum_offset = csum_offset
    header.reserved = 0
    header.now_ns = now_ns
    header.seqno = seqno
    ctl.producer.next_seqno = seqno + 1
    ring.reserved = 0
    ring.reserved_max = 0
    # Release: the header and payload stores above become visible no later
    # than the new cursor, which is all a consumer looks at.
    atomic_store_release_u64(&ctl.producer.cursor, position + size)
    counter_add_u64(&ctl.producer_stats.records, 1)
    counter_add_u64(&ctl.producer_stats.bytes, size)
    if _ec_notify(&ctl.consumer_wait.eventcount):
        counter_add_u64(&ctl.producer_stats.wakes, 1)
    return seqno


cdef void ring_stop(Ring *ring) noexcept nogil:
    """Set the stop flag and wake every sleeper on both sides."""
    atomic_store_seq_cst_u32(&ring.ctl.info.stop, 1)
    _ec_wake_all(&ring.ctl.consumer_wait.eventcount)
    _ec_wake_all(&ring.ctl.producer_wait.eventcount)


# =============================================================================
# Broadcast ring: consumers
# =============================================================================

cdef void ring_release(Ring *ring, uint32_t consumer_id, uint64_t new_position,
                       uint64_t records) noexcept nogil:
    """Give back everything before ``new_position`` (``records`` records).

    Release store: our reads of those records happen before the producer,
    after its acquire load of this cursor, overwrites them.
    """
    cdef RingConsumerSlot *slot = &ring.ctl.consumers[consumer_id]
    cdef uint64_t old = slot.cursor
    atomic_store_release_u64(&slot.cursor, new_position)
    counter_add_u64(&slot.records, records)
    counter_add_u64(&slot.bytes, new_position - old)
    if _ec_notify(&ring.ctl.producer_wait.eventcount):
        counter_add_u64(&slot.wakes, 1)


cdef inline bint _has_records(Ring *ring, RingConsumerSlot *slot) noexcept nogil:
    return atomic_load_acquire_u64(&ring.ctl.producer.cursor) != slot.cursor


cdef int ring_wait(Ring *ring, uint32_t consumer_id, uint32_t spin_iterations,
                   uint64_t timeout_ns) noexcept nogil:
    """Wait until a record past this consumer's released cursor is published.

    WAIT_READY when there is one (even after stop: the log is drained first),
    WAIT_STOPPED when stopped and drained, WAIT_TIMEOUT after ``timeout_ns``.
    """
    return ring_wait_from(ring, consumer_id, ring.ctl.consumers[consumer_id].cursor,
                          spin_iterations, timeout_ns)


cdef int ring_wait_from(Ring *ring, uint32_t consumer_id, uint64_t position,
                        uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil:
    """Wait until a record at or past ``position`` is published.

    For consumers that read ahead of what they release (a worker that keeps
    records since its last checkpoint, or claimers sharing one cursor): the
    released cursor lags, so waiting on it would return at once and spin.
    Statistics go to ``consumer_id``'s slot.
    """
    cdef RingControl *ctl = ring.ctl
    cdef RingConsumerSlot *slot = &ctl.consumers[consumer_id]
    cdef uint64_t deadline, now
    cdef uint32_t i, seen
    if atomic_load_acquire_u64(&ctl.producer.cursor) != position:
        return WAIT_READY
    for i in range(spin_iterations):
        cpu_relax()
        if atomic_load_acquire_u64(&ctl.producer.cursor) != position:
            counter_add_u64(&slot.spins, 1)
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
    deadline = monotonic_ns() + timeout_ns
    while True:
        seen = _ec_prepare_sleep(&ctl.consumer_wait.eventcount)
        if atomic_load_acquire_u64(&ctl.producer.cursor) != position:
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
        now = monotonic_ns()
        if now >= deadline:
            counter_add_u64(&slot.timeouts, 1)
            return WAIT_TIMEOUT
        counter_add_u64(&slot.sleeps, 1)
        futex_wait(&ctl.consumer_wait.eventcount, seen, deadline - now)
        # Check before announcing again: a waker cleared the bit, and leaving
        # it set when we do not sleep would cost the next waker a syscall.
        if atomic_load_acquire_u64(&ctl.producer.cursor) != position:
            return WAIT_READY


# =============================================================================
# Broadcast ring: Python owner
# =============================================================================

cdef class BroadcastRing:
    """A broadcast ring in shared memory: one producer, ``n_consumers`` consumers.

    ``BroadcastRing(size, n_consumers)`` creates it; forked children use the
    same object; ``BroadcastRing.from_fd(fd)`` maps it in another process.
    Other Cython modules use ``ring.ring`` (the C ``Ring``) with the nogil
    functions of _ring.pxd; the Python methods exist for set-up, tests and
    statistics.  The buffer protocol exports the mirrored data area (2*size).
    """

    def __cinit__(self):
        self.fd = -1
        self.control = NULL
        self.control_size = 0
        self.exports = 0
        self.busy = 0
        memset(&self.ring, 0, sizeof(Ring))

    def __init__(self, uint64_t size=1 << 20, uint32_t n_consumers=1, *,
                 str name="misdtcp-ring"):
        _check_size(size)
        if not 1 <= n_consumers <= RING_MAX_CONSUMERS:
            raise ValueError(f"n_consumers must be 1..{RING_MAX_CONSUMERS}, not {n_consumers}")
        cdef RingInfoLine *info
        control_size = _round_up(sizeof(RingControl), _page_size())
        encoded = name.encode()
        fd = shm_create(encoded, control_size + size)
        if fd < 0:
            raise _oserror("memfd_create", -fd)
        self._attach(fd, control_size, size)
        # A fresh memfd reads as zeros: cursors, counters and words start at 0.
        info = &self.ring.ctl.info
        info.version = LAYOUT_VERSION
        info.n_consumers = n_consumers
        info.data_size = size
        info.control_size = control_size
        atomic_store_release_u64(&info.magic, RING_MAGIC)
        self.ring.n_consumers = n_consumers

    cdef _attach(self, int fd, uint64_t control_size, uint64_t size):
        cdef void *control
        cdef int error_code = 0
        self.fd = fd
        control = mmap(NULL, control_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if control == MAP_FAILED:
            error = _oserror("mmap")
            self._release()
            raise error
        self.control = <char *>control
        self.control_size = control_size
        self.ring.ctl = <RingControl *>control
        self.ring.data = mirror_map(fd, control_size, size, &error_code)
        if self.ring.data == NULL:
            error = _oserror("mmap", error_code)
            self._release()
            raise error
        self.ring.size = size
        self.ring.mask = size - 1

    @classmethod
    def from_fd(cls, int fd):
        """Map the ring whose memfd is ``fd`` (duplicated; the caller keeps its fd)."""
        cdef BroadcastRing self = cls.__new__(cls)
        cdef int own = _dup_fd(fd)
        cdef RingControl *ctl
        cdef uint64_t total
        cdef uint64_t control_size = _round_up(sizeof(RingControl), _page_size())
        try:
            total = _fd_size(own)
            if total <= control_size:
                raise ValueError("fd is not a misdtcp ring (too small)")
        except BaseException:
            close(own)
            raise
        # Map the control page alone first to learn the geometry.
        ctl = <RingControl *>mmap(NULL, control_size, PROT_READ, MAP_SHARED, own, 0)
        if <void *>ctl == MAP_FAILED:
            error = _oserror("mmap")
            close(own)
            raise error
        magic = atomic_load_acquire_u64(&ctl.info.magic)
        version = ctl.info.version
        n_consumers = ctl.info.n_consumers
        size = ctl.info.data_size
        stored_control = ctl.info.control_size
        munmap(ctl, control_size)
        if (magic != RING_MAGIC or version != LAYOUT_VERSION or stored_control != control_size
                or total != control_size + size):
            close(own)
            raise ValueError("fd is not a misdtcp ring of this layout version")
        self._attach(own, control_size, size)
        self.ring.n_consumers = n_consumers
        return self

    cdef void _release(self) noexcept:
        mirror_unmap(self.ring.data, self.ring.size)
        self.ring.data = NULL
        if self.control != NULL:
            munmap(self.control, self.control_size)
            self.control = NULL
            self.ring.ctl = NULL
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def _check_open(self):
        if self.ring.data == NULL:
            raise ValueError("BroadcastRing is closed")

    def close(self):
        """Unmap and close the fd (this process only; other mappings live on)."""
        if self.exports:
            raise BufferError(f"cannot close: {self.exports} memoryview(s) still exported")
        if self.busy:
            raise RuntimeError(f"cannot close: {self.busy} thread(s) blocked in this ring; stop() it first")
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        self._release()

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        self._check_open()
        PyBuffer_FillInfo(buffer, self, self.ring.data, <Py_ssize_t>(2 * self.ring.size), 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1

    # ---- geometry ------------------------------------------------------------

    def fileno(self):
        self._check_open()
        return self.fd

    @property
    def closed(self):
        return self.ring.data == NULL

    @property
    def size(self):
        return self.ring.size

    @property
    def n_consumers(self):
        return self.ring.n_consumers

    @property
    def producer_cursor(self):
        self._check_open()
        return atomic_load_acquire_u64(&self.ring.ctl.producer.cursor)

    def consumer_cursor(self, uint32_t consumer_id):
        self._check_consumer(consumer_id)
        return atomic_load_acquire_u64(&self.ring.ctl.consumers[consumer_id].cursor)

    def _check_consumer(self, uint32_t consumer_id):
        self._check_open()
        if consumer_id >= self.ring.n_consumers:
            raise ValueError(f"consumer id {consumer_id} out of range (n_consumers={self.ring.n_consumers})")

    def _start_at(self, uint64_t position):
        """Test hook: move every cursor of an unused ring to ``position`` (e.g. near 2^64)."""
        self._check_open()
        if self.ring.ctl.producer.next_seqno != 0 or self.ring.reserved:
            raise RuntimeError("_start_at only on a ring nothing was published to")
        for i in range(self.ring.n_consumers):
            atomic_store_release_u64(&self.ring.ctl.consumers[i].cursor, position)
        atomic_store_release_u64(&self.ring.ctl.producer.cursor, position)
        self.ring.cached_min = position

    # ---- producer --------------------------------------------------------------

    def try_reserve(self, uint32_t max_len):
        """Writable memoryview of the payload area, or None when the ring has no room."""
        self._check_open()
        if record_size(max_len) > self.ring.size:
            raise ValueError(f"a record of {max_len} bytes does not fit a {self.ring.size}-byte ring")
        payload = ring_try_reserve(&self.ring, max_len)
        if payload == NULL:
            return None
        start = payload - self.ring.data
        return memoryview(self)[start:start + max_len]

    def wait_space(self, uint32_t max_len, uint32_t spin=RING_DEFAULT_SPIN, double timeout=0.05):
        """Block (GIL released) until ``max_len`` fits; returns a WaitStatus."""
        self._check_open()
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = ring_wait_space(&self.ring, max_len, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    def commit(self, uint32_t length, uint16_t kind=REC_FRAME, uint16_t flags=0,
               uint16_t gso_size=0, uint16_t csum_start=0, uint16_t csum_offset=0, now_ns=None):
        """Publish the reserved record; returns its seqno."""
        self._check_open()
        if not self.ring.reserved:
            raise RuntimeError("commit without a successful reserve")
        if length > self.ring.reserved_max:
            raise ValueError(f"commit of {length} bytes exceeds the reserved {self.ring.reserved_max}")
        stamp = monotonic_ns() if now_ns is None else now_ns
        return ring_commit(&self.ring, length, kind, flags, gso_size, csum_start, csum_offset, stamp)

    def publish(self, const uint8_t[:] payload, uint16_t kind=REC_FRAME, uint16_t flags=0,
                uint16_t gso_size=0, uint16_t csum_start=0, uint16_t csum_offset=0,
                now_ns=None, bint block=True):
        """Reserve, copy ``payload`` in, commit.  Returns the seqno, or None if
        ``block`` is false and there is no room, or if the ring was stopped."""
        self._check_open()
        cdef uint32_t length = <uint32_t>payload.shape[0]
        cdef char *area
        if record_size(length) > self.ring.size:
            raise ValueError(f"a record of {length} bytes does not fit a {self.ring.size}-byte ring")
        stamp = monotonic_ns() if now_ns is None else now_ns
        if block:
            self.busy += 1          # close() refuses while a thread is blocked in here
            with nogil:
                area = ring_reserve(&self.ring, length)
            self.busy -= 1
        else:
            area = ring_try_reserve(&self.ring, length)
        if area == NULL:
            return None
        if length:
            memcpy(area, &payload[0], length)
        return ring_commit(&self.ring, length, kind, flags, gso_size, csum_start, csum_offset, stamp)

    def stop(self):
        self._check_open()
        ring_stop(&self.ring)

    @property
    def stopped(self):
        self._check_open()
        return _stopped(&self.ring.ctl.info.stop)

    # ---- consumer ---------------------------------------------------------------

    def available(self, uint32_t consumer_id):
        """End position of the published records."""
        self._check_consumer(consumer_id)
        return ring_available(&self.ring, consumer_id)

    def read(self, uint32_t consumer_id, uint64_t max_records=0, bint release=True):
        """Copy out the available records (all, or at most ``max_records``) as
        Record tuples and, unless ``release`` is false, release them."""
        self._check_consumer(consumer_id)
        cdef uint64_t position = ring_consumer_cursor(&self.ring, consumer_id)
        cdef uint64_t end = ring_available(&self.ring, consumer_id)
        cdef RecordHeader *header
        records = []
        while position != end and (max_records == 0 or <uint64_t>len(records) < max_records):
            header = ring_record_at(&self.ring, position)
            records.append(Record(header.seqno, header.kind, header.flags, header.gso_size,
                                  header.csum_start, header.csum_offset, header.now_ns,
                                  record_payload(header)[:header.length]))
            position = ring_next_position(header, position)
        if release and records:
            ring_release(&self.ring, consumer_id, position, len(records))
        return records

    def release(self, uint32_t consumer_id, uint64_t position, uint64_t records=0):
        self._check_consumer(consumer_id)
        ring_release(&self.ring, consumer_id, position, records)

    def wait(self, uint32_t consumer_id, uint32_t spin=RING_DEFAULT_SPIN, double timeout=0.05):
        """Block (GIL released) until a record is available; returns a WaitStatus."""
        self._check_consumer(consumer_id)
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = ring_wait(&self.ring, consumer_id, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    # ---- statistics ---------------------------------------------------------------

    def counters(self):
        """Snapshot of the shared statistics: {'producer': {...}, 'consumers': [{...}]}."""
        self._check_open()
        cdef RingProducerStats *p = &self.ring.ctl.producer_stats
        cdef RingConsumerSlot *c
        producer = {
            "cursor": atomic_load_acquire_u64(&self.ring.ctl.producer.cursor),
            "records": atomic_load_relaxed_u64(&p.records),
            "bytes": atomic_load_relaxed_u64(&p.bytes),
            "full_waits": atomic_load_relaxed_u64(&p.full_waits),
            "sleeps": atomic_load_relaxed_u64(&p.sleeps),
            "wakes": atomic_load_relaxed_u64(&p.wakes),
            "timeouts": atomic_load_relaxed_u64(&p.timeouts),
        }
        consumers = []
        for i in range(self.ring.n_consumers):
            c = &self.ring.ctl.consumers[i]
            consumers.append({
                "cursor": atomic_load_acquire_u64(&c.cursor),
                "records": atomic_load_relaxed_u64(&c.records),
                "bytes": atomic_load_relaxed_u64(&c.bytes),
                "spins": atomic_load_relaxed_u64(&c.spins),
                "sleeps": atomic_load_relaxed_u64(&c.sleeps),
                "wakes": atomic_load_relaxed_u64(&c.wakes),
                "timeouts": atomic_load_relaxed_u64(&c.timeouts),
            })
        return {"producer": producer, "consumers": consumers}


def record_bytes(uint32_t length):
    """Ring bytes a record with ``length`` payload bytes takes (header + padding)."""
    return record_size(length)


# =============================================================================
# Command queue
# =============================================================================

cdef bint cmdq_try_post(CmdQueue *queue, const Command *command) noexcept nogil:
    """Append ``command``; False if the queue is full (nothing written)."""
    cdef CommandQueueControl *ctl = queue.ctl
    cdef uint64_t position = atomic_load_relaxed_u64(&ctl.tail)
    cdef CommandSlot *slot
    cdef int64_t lap
    while True:
        slot = &queue.slots[position & queue.mask]
        # Acquire: pairs with the consumer's release when it freed the slot,
        # so its read of the previous command happens before our overwrite.
        lap = <int64_t>(atomic_load_acquire_u64(&slot.sequence) - position)
        if lap == 0:
            # Free for ticket `position`: claim it.  Relaxed CAS is enough, the
            # command is published by the release store of `sequence` below.
            if atomic_cas_weak_relaxed_u64(&ctl.tail, &position, position + 1):
                break
        elif lap < 0:
            return False          # still holds the command of ticket position - capacity
        else:
            position = atomic_load_relaxed_u64(&ctl.tail)     # another poster took it
    slot.command = command[0]
    atomic_store_release_u64(&slot.sequence, position + 1)
    if _ec_notify(&ctl.consumer_wait.eventcount):
        atomic_fetch_add_u64(&ctl.poster_wakes, 1)
    return True


cdef inline bint _cmdq_has_room(CmdQueue *queue) noexcept nogil:
    cdef uint64_t position = atomic_load_relaxed_u64(&queue.ctl.tail)
    cdef CommandSlot *slot = &queue.slots[position & queue.mask]
    return <int64_t>(atomic_load_acquire_u64(&slot.sequence) - position) >= 0


cdef int cmdq_post(CmdQueue *queue, const Command *command, uint32_t spin_iterations,
                   uint64_t timeout_ns) noexcept nogil:
    """Append ``command``, waiting for room; WAIT_READY once posted,
    WAIT_TIMEOUT (not posted) after ``timeout_ns``, WAIT_STOPPED (not posted)."""
    cdef CommandQueueControl *ctl = queue.ctl
    cdef uint64_t deadline = 0, now
    cdef uint32_t i, seen
    if cmdq_try_post(queue, command):
        return WAIT_READY
    atomic_fetch_add_u64(&ctl.poster_full_waits, 1)
    for i in range(spin_iterations):
        cpu_relax()
        if _cmdq_has_room(queue) and cmdq_try_post(queue, command):
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
    deadline = monotonic_ns() + timeout_ns
    while True:
        seen = _ec_prepare_sleep(&ctl.poster_wait.eventcount)
        if _cmdq_has_room(queue):
            if cmdq_try_post(queue, command):
                return WAIT_READY
            continue              # another poster won the free slot: look again
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
        now = monotonic_ns()
        if now >= deadline:
            return WAIT_TIMEOUT
        atomic_fetch_add_u64(&ctl.poster_sleeps, 1)
        futex_wait(&ctl.poster_wait.eventcount, seen, deadline - now)
        if _cmdq_has_room(queue) and cmdq_try_post(queue, command):
            return WAIT_READY


cdef bint cmdq_try_take(CmdQueue *queue, Command *out) noexcept nogil:
    """Take the oldest command into ``out``; False if none is ready.

    "Not ready" includes a poster that has its ticket but has not finished
    writing: commands leave strictly in ticket order.
    """
    cdef CommandQueueControl *ctl = queue.ctl
    cdef uint64_t position = ctl.head                        # we are its only writer
    cdef CommandSlot *slot = &queue.slots[position & queue.mask]
    # Acquire: pairs with the poster's release, so the command bytes are complete.
    if atomic_load_acquire_u64(&slot.sequence) != position + 1:
        return False
    out[0] = slot.command
    # Release: our copy above happens before a poster of the next lap reuses it.
    atomic_store_release_u64(&slot.sequence, position + queue.capacity)
    atomic_store_relaxed_u64(&ctl.head, position + 1)
    counter_add_u64(&ctl.posted, 1)
    if _ec_notify(&ctl.poster_wait.eventcount):
        counter_add_u64(&ctl.consumer_wakes, 1)
    return True


cdef inline bint _cmdq_has_command(CmdQueue *queue) noexcept nogil:
    cdef uint64_t position = queue.ctl.head
    return atomic_load_acquire_u64(&queue.slots[position & queue.mask].sequence) == position + 1


cdef int cmdq_wait(CmdQueue *queue, uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil:
    """Consumer: wait for a command.  WAIT_READY / WAIT_TIMEOUT / WAIT_STOPPED
    (stopped and empty)."""
    cdef CommandQueueControl *ctl = queue.ctl
    cdef uint64_t deadline, now
    cdef uint32_t i, seen
    if _cmdq_has_command(queue):
        return WAIT_READY
    for i in range(spin_iterations):
        cpu_relax()
        if _cmdq_has_command(queue):
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
    deadline = monotonic_ns() + timeout_ns
    while True:
        seen = _ec_prepare_sleep(&ctl.consumer_wait.eventcount)
        if _cmdq_has_command(queue):
            return WAIT_READY
        if _stopped(&ctl.info.stop):
            return WAIT_STOPPED
        now = monotonic_ns()
        if now >= deadline:
            return WAIT_TIMEOUT
        counter_add_u64(&ctl.consumer_sleeps, 1)
        futex_wait(&ctl.consumer_wait.eventcount, seen, deadline - now)
        if _cmdq_has_command(queue):
            return WAIT_READY


cdef void cmdq_stop(CmdQueue *queue) noexcept nogil:
    atomic_store_seq_cst_u32(&queue.ctl.info.stop, 1)
    _ec_wake_all(&queue.ctl.consumer_wait.eventcount)
    _ec_wake_all(&queue.ctl.poster_wait.eventcount)


cdef class CommandQueue:
    """Bounded multi-producer, single-consumer queue of 32-byte commands in shared memory.

    Posters in any process (forked, or mapped with ``from_fd``) call ``post``;
    the sequencer drains with ``cmdq_try_take`` (or ``take``/``drain`` here).
    """

    def __cinit__(self):
        self.fd = -1
        self.control = NULL
        self.map_size = 0
        self.busy = 0
        memset(&self.queue, 0, sizeof(CmdQueue))

    def __init__(self, uint32_t capacity=1024, *, str name="misdtcp-cmdq"):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two >= 2, not {capacity}")
        control_size = _round_up(sizeof(CommandQueueControl), _page_size())
        cdef CommandQueueInfo *info
        total = _round_up(control_size + <uint64_t>capacity * sizeof(CommandSlot), _page_size())
        encoded = name.encode()
        fd = shm_create(encoded, total)
        if fd < 0:
            raise _oserror("memfd_create", -fd)
        self._attach(fd, total, control_size, capacity)
        info = &self.queue.ctl.info
        info.version = LAYOUT_VERSION
        info.capacity = capacity
        info.control_size = control_size
        # Slot i starts free for ticket i (Vyukov's initial state).
        for i in range(capacity):
            self.queue.slots[i].sequence = i
        atomic_store_release_u64(&info.magic, CMDQ_MAGIC)

    cdef _attach(self, int fd, uint64_t total, uint64_t control_size, uint32_t capacity):
        cdef void *base
        self.fd = fd
        base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if base == MAP_FAILED:
            error = _oserror("mmap")
            self._release()
            raise error
        self.control = <char *>base
        self.map_size = total
        self.queue.ctl = <CommandQueueControl *>base
        self.queue.slots = <CommandSlot *>(<char *>base + control_size)
        self.queue.capacity = capacity
        self.queue.mask = capacity - 1

    @classmethod
    def from_fd(cls, int fd):
        """Map the queue whose memfd is ``fd`` (duplicated; the caller keeps its fd)."""
        cdef CommandQueue self = cls.__new__(cls)
        cdef int own = _dup_fd(fd)
        cdef uint64_t control_size = _round_up(sizeof(CommandQueueControl), _page_size())
        cdef CommandQueueInfo *info
        try:
            total = _fd_size(own)
            if total < control_size:
                raise ValueError("fd is not a misdtcp command queue (too small)")
        except BaseException:
            close(own)
            raise
        self._attach(own, total, control_size, 2)
        info = &self.queue.ctl.info
        capacity = info.capacity
        if (atomic_load_acquire_u64(&info.magic) != CMDQ_MAGIC or info.version != LAYOUT_VERSION
                or info.control_size != control_size
                or total != _round_up(control_size + capacity * sizeof(CommandSlot), _page_size())):
            self._release()
            raise ValueError("fd is not a misdtcp command queue of this layout version")
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
            raise ValueError("CommandQueue is closed")

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

    def try_post(self, uint32_t kind, uint32_t conn=0, uint64_t a=0, uint64_t b=0, uint64_t c=0):
        """Post without waiting; False if the queue is full."""
        self._check_open()
        cdef Command command
        command.kind = kind
        command.conn = conn
        command.a = a
        command.b = b
        command.c = c
        return cmdq_try_post(&self.queue, &command)

    def post(self, uint32_t kind, uint32_t conn=0, uint64_t a=0, uint64_t b=0, uint64_t c=0,
             uint32_t spin=RING_DEFAULT_SPIN, double timeout=0.05):
        """Post, waiting (GIL released) for room; returns a WaitStatus (READY = posted)."""
        self._check_open()
        cdef Command command
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        command.kind = kind
        command.conn = conn
        command.a = a
        command.b = b
        command.c = c
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = cmdq_post(&self.queue, &command, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    def take(self):
        """The oldest command as a Command tuple, or None."""
        self._check_open()
        cdef Command command
        if not cmdq_try_take(&self.queue, &command):
            return None
        return QueuedCommand(command.kind, command.conn, command.a, command.b, command.c)

    def drain(self, uint64_t max_commands=0):
        """Every ready command (at most ``max_commands`` if non-zero), in order."""
        self._check_open()
        cdef Command command
        commands = []
        while (max_commands == 0 or <uint64_t>len(commands) < max_commands) and \
                cmdq_try_take(&self.queue, &command):
            commands.append(QueuedCommand(command.kind, command.conn, command.a, command.b, command.c))
        return commands

    def wait(self, uint32_t spin=RING_DEFAULT_SPIN, double timeout=0.05):
        self._check_open()
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = cmdq_wait(&self.queue, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    def stop(self):
        self._check_open()
        cmdq_stop(&self.queue)

    @property
    def stopped(self):
        self._check_open()
        return _stopped(&self.queue.ctl.info.stop)

    def counters(self):
        self._check_open()
        cdef CommandQueueControl *ctl = self.queue.ctl
        return {
            "tail": atomic_load_relaxed_u64(&ctl.tail),
            "head": atomic_load_relaxed_u64(&ctl.head),
            "taken": atomic_load_relaxed_u64(&ctl.posted),
            "consumer_sleeps": atomic_load_relaxed_u64(&ctl.consumer_sleeps),
            "consumer_wakes": atomic_load_relaxed_u64(&ctl.consumer_wakes),
            "poster_full_waits": atomic_load_relaxed_u64(&ctl.poster_full_waits),
            "poster_sleeps": atomic_load_relaxed_u64(&ctl.poster_sleeps),
            "poster_wakes": atomic_load_relaxed_u64(&ctl.poster_wakes),
        }


# =============================================================================
# Test and benchmark helpers (C loops: a Python loop would measure Python)
# =============================================================================

cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    # splitmix64 finalizer: a cheap bijective scramble.
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline uint32_t _stress_length(uint64_t seed, uint64_t seqno) noexcept nogil:
    """Payload length of stress record ``seqno``: 1..4096, one in 64 up to 65548."""
    cdef uint64_t h = _mix64(seed ^ (seqno * 0x9E3779B97F4A7C15ULL))
    if (h & 63) == 0:
        return <uint32_t>(4097 + (h >> 8) % (RING_MAX_FRAME - 4096))
    return <uint32_t>(1 + (h >> 8) % 4096)


cdef inline void _stress_fill(char *payload, uint32_t length, uint64_t seqno) noexcept nogil:
    # Word i of record s is mix(s) + i * golden: any misplaced, stale or torn
    # word shows.  The payload is 8-aligned (8-aligned record + 32-byte header).
    cdef uint64_t base = _mix64(seqno + 1)
    cdef uint64_t *words = <uint64_t *>payload
    cdef uint32_t n = length >> 3, i
    cdef uint64_t last
    for i in range(n):
        words[i] = base + i * 0x9E3779B97F4A7C15ULL
    if length & 7:
        last = base + n * 0x9E3779B97F4A7C15ULL
        memcpy(payload + (n << 3), &last, length & 7)


cdef inline bint _stress_check(const char *payload, uint32_t length, uint64_t seqno) noexcept nogil:
    cdef uint64_t base = _mix64(seqno + 1)
    cdef const uint64_t *words = <const uint64_t *>payload
    cdef uint32_t n = length >> 3, i
    cdef uint64_t bad = 0, last
    for i in range(n):
        bad |= words[i] ^ (base + i * 0x9E3779B97F4A7C15ULL)
    if length & 7:
        last = base + n * 0x9E3779B97F4A7C15ULL
        bad |= <uint64_t>(memcmp(payload + (n << 3), &last, length & 7) != 0)
    return bad == 0


def _stress_length_of(uint64_t seed, uint64_t seqno):
    return _stress_length(seed, seqno)


def _stress_produce(BroadcastRing ring, uint64_t count, uint64_t seed,
                    uint32_t spin=RING_DEFAULT_SPIN):
    """Publish ``count`` pattern records then one REC_STOP; returns the wait counts."""
    ring._check_open()
    cdef Ring *r = &ring.ring
    cdef uint64_t seqno
    cdef uint32_t length
    cdef char *payload
    cdef uint64_t waits = 0
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        for seqno in range(count):
            length = _stress_length(seed, seqno)
            payload = ring_try_reserve(r, length)
            while payload == NULL:
                waits += 1
                if ring_wait_space(r, length, spin, RING_DEFAULT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                payload = ring_try_reserve(r, length)
            if payload == NULL:
                break
            _stress_fill(payload, length, ring_next_seqno(r))
            ring_commit(r, length, REC_FRAME, <uint16_t>seqno, <uint16_t>(length & 0xffff),
                        <uint16_t>(seqno >> 16), <uint16_t>(seqno >> 32), seed + seqno * 7)
        payload = ring_reserve(r, 0)
        if payload != NULL:
            ring_commit(r, 0, REC_STOP, 0, 0, 0, 0, 0)
    ring.busy -= 1
    return waits


def _stress_consume(BroadcastRing ring, uint32_t consumer_id, uint64_t seed,
                    uint32_t spin=RING_DEFAULT_SPIN, double idle_limit=20.0):
    """Verify every record until REC_STOP.  Returns (records, errors, first_bad_seqno).

    Checks: seqnos contiguous from the consumer's first, 8-aligned positions,
    header fields, length from the seed, and the payload pattern.  Gives up
    (counting one error) after ``idle_limit`` seconds without a record, or on
    a record whose framing is unreadable; giving up stops the ring, so the
    producer and the other consumers end instead of waiting for us forever.
    """
    ring._check_consumer(consumer_id)
    cdef Ring *r = &ring.ring
    cdef uint64_t position = ring_consumer_cursor(r, consumer_id)
    cdef uint64_t end, expected = 0, records = 0, errors = 0, batch
    cdef int64_t first_bad = -1
    cdef RecordHeader *header
    cdef bint done = False, bad, gave_up = False
    cdef uint64_t idle_ns = <uint64_t>(idle_limit * 1e9), idle_since = 0
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while not done:
            end = ring_available(r, consumer_id)
            if end == position:
                if idle_since == 0:
                    idle_since = monotonic_ns()
                elif monotonic_ns() - idle_since > idle_ns:
                    errors += 1
                    gave_up = True
                    break
                if ring_wait(r, consumer_id, spin, RING_DEFAULT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            idle_since = 0
            batch = 0
            # Signed distance: a corrupt length overshooting `end` stops the loop.
            while <int64_t>(end - position) > 0:
                header = ring_record_at(r, position)
                batch += 1
                if header.kind == REC_STOP:
                    position = ring_next_position(header, position)
                    done = True
                    break
                bad = (position & (RECORD_ALIGN - 1)) != 0
                bad = bad or header.seqno != expected or header.kind != REC_FRAME
                bad = bad or header.length != _stress_length(seed, expected)
                bad = bad or header.flags != <uint16_t>expected
                bad = bad or header.now_ns != seed + expected * 7
                bad = bad or header.csum_start != <uint16_t>(expected >> 16)
                if not bad:
                    bad = not _stress_check(record_payload(header), header.length, expected)
                if bad:
                    errors += 1
                    if first_bad < 0:
                        first_bad = <int64_t>expected
                    if header.length > RING_MAX_FRAME:
                        # Unreadable framing: nothing after it can be trusted.
                        done = gave_up = True
                        break
                records += 1
                expected = header.seqno + 1
                position = ring_next_position(header, position)
            ring_release(r, consumer_id, position, batch)
        if gave_up:
            ring_stop(r)
    ring.busy -= 1
    return records, errors, first_bad


def _bench_produce(BroadcastRing ring, uint64_t count, uint32_t payload_len,
                   uint32_t spin=RING_DEFAULT_SPIN):
    """Publish ``count`` records of ``payload_len`` bytes (payload written in full,
    as the kernel's TUN read would) then REC_STOP.  Returns (start_ns, end_ns)."""
    ring._check_open()
    cdef Ring *r = &ring.ring
    cdef uint64_t i, start, finish
    cdef char *payload
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        start = monotonic_ns()
        for i in range(count):
            payload = ring_try_reserve(r, payload_len)
            while payload == NULL:
                if ring_wait_space(r, payload_len, spin, RING_DEFAULT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                payload = ring_try_reserve(r, payload_len)
            if payload == NULL:
                break
            memset(payload, <int>(i & 0xff), payload_len)
            ring_commit(r, payload_len, REC_FRAME, 0, 0, 0, 0, i)
        finish = monotonic_ns()
        payload = ring_reserve(r, 0)
        if payload != NULL:
            ring_commit(r, 0, REC_STOP, 0, 0, 0, 0, 0)
    ring.busy -= 1
    return start, finish


def _bench_consume(BroadcastRing ring, uint32_t consumer_id, uint32_t spin=RING_DEFAULT_SPIN):
    """Consume until REC_STOP, reading each header and the payload's first and
    last byte.  Returns (first_record_ns, end_ns, records, checksum)."""
    ring._check_consumer(consumer_id)
    cdef Ring *r = &ring.ring
    cdef uint64_t position = ring_consumer_cursor(r, consumer_id)
    cdef uint64_t end, records = 0, batch, checksum = 0, first = 0
    cdef RecordHeader *header
    cdef char *payload
    cdef bint done = False
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while not done:
            end = ring_available(r, consumer_id)
            if end == position:
                if ring_wait(r, consumer_id, spin, RING_DEFAULT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            if first == 0:
                first = monotonic_ns()
            batch = 0
            while position != end:
                header = ring_record_at(r, position)
                batch += 1
                if header.kind == REC_STOP:
                    done = True
                    position = ring_next_position(header, position)
                    break
                payload = record_payload(header)
                if header.length:
                    checksum += <uint8_t>payload[0] + <uint8_t>payload[header.length - 1]
                records += 1
                position = ring_next_position(header, position)
            ring_release(r, consumer_id, position, batch)
    ring.busy -= 1
    return first, monotonic_ns(), records, checksum


def _cmdq_stress_post(CommandQueue queue, uint32_t poster_id, uint64_t count,
                      uint32_t spin=RING_DEFAULT_SPIN):
    """Post ``count`` commands (conn = poster_id, a = 0..count-1); returns timeouts seen."""
    queue._check_open()
    cdef Command command
    cdef uint64_t i, timeouts = 0
    cdef int rc
    command.kind = CMD_SEND
    command.conn = poster_id
    queue.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        for i in range(count):
            command.a = i
            command.b = _mix64(i ^ (<uint64_t>poster_id << 40))
            command.c = i * 3
            rc = cmdq_post(&queue.queue, &command, spin, RING_DEFAULT_TIMEOUT_NS)
            while rc == WAIT_TIMEOUT:
                timeouts += 1
                rc = cmdq_post(&queue.queue, &command, spin, RING_DEFAULT_TIMEOUT_NS)
            if rc == WAIT_STOPPED:
                break
    queue.busy -= 1
    return timeouts


def _cmdq_stress_drain(CommandQueue queue, uint32_t n_posters, uint64_t per_poster,
                       uint32_t spin=RING_DEFAULT_SPIN, double idle_limit=20.0):
    """Take n_posters * per_poster commands, checking each poster's sequence is
    exactly 0, 1, 2, ... with intact fields.  Returns (taken, errors)."""
    queue._check_open()
    if n_posters > 64:
        raise ValueError("at most 64 posters")
    cdef uint64_t next_expected[64]
    cdef uint64_t total = <uint64_t>n_posters * per_poster, taken = 0, errors = 0
    cdef uint64_t idle_ns = <uint64_t>(idle_limit * 1e9), idle_since = 0
    cdef Command command
    cdef uint32_t p
    memset(next_expected, 0, sizeof(next_expected))
    queue.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while taken < total:
            if not cmdq_try_take(&queue.queue, &command):
                if idle_since == 0:
                    idle_since = monotonic_ns()
                elif monotonic_ns() - idle_since > idle_ns:
                    errors += 1
                    break
                if cmdq_wait(&queue.queue, spin, RING_DEFAULT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            idle_since = 0
            taken += 1
            p = command.conn
            if (command.kind != CMD_SEND or p >= n_posters or command.a != next_expected[p]
                    or command.b != _mix64(command.a ^ (<uint64_t>p << 40))
                    or command.c != command.a * 3):
                errors += 1
            if p < n_posters:
                next_expected[p] = command.a + 1
    queue.busy -= 1
    return taken, errors
