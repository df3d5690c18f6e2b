# cython: language_level=3
"""The broadcast ring: the sequencer's event log, read by every worker.

One memfd holds a control page and an S-byte data area mapped mirrored
(runtime/shm.pyx), so a record never wraps.  The producer never overwrites a
record until the slowest consumer has released it (lossless back-pressure);
consumers batch everything available.  Waiting on either side follows the
runtime's one wait policy (runtime/wait.pxd: spin briefly, then park on an
eventcount), with one eventcount per direction of waiting.

Broadcast ring (one producer, up to 16 consumers)
=================================================
One memfd: a control page, then the S-byte data area, mapped mirrored::

    file offset 0      RingControl (every line 64-byte aligned, see _ring.pxd)
        +0    info            magic, version, n_consumers, S, control size, stop
        +64   producer        cursor (published end), next_seqno
        +128  producer_stats  records, bytes, full_waits, wakes, wait counters
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

Statistics are plain single-writer counters in the shared control page,
readable from Python at any time (``counters()``).
"""
from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from misdtcp._system cimport (MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, atomic_load_acquire_u64,
                              atomic_load_relaxed_u64, atomic_store_release_u64, atomic_store_seq_cst_u32,
                              close, counter_add_u64, mmap, monotonic_ns, munmap)
from misdtcp.runtime.shm cimport (check_size, dup_fd, fd_size, mirror_map, mirror_unmap, os_error, page_size,
                                  round_up, shm_create)
from misdtcp.runtime.wait cimport (WAIT_READY, WAIT_STOPPED, WAIT_SPIN, WAIT_TIMEOUT_NS, ec_notify,
                                   ec_wake_all, flag_set, wait_for)
from misdtcp.runtime.vocabulary cimport REC_FRAME

import collections

from misdtcp.runtime.wait import WaitStatus

RING_MAGIC = 0x474E49525344494D      # "MISDRING" little-endian
LAYOUT_VERSION = 2

HEADER_SIZE = RECORD_HEADER_SIZE
MAX_CONSUMERS = RING_MAX_CONSUMERS
MAX_FRAME = RING_MAX_FRAME

RingRecord = collections.namedtuple(
    "RingRecord", "seqno kind flags gso_size csum_start csum_offset now_ns payload")

# The layout is shared between processes and across modules: pin it.
if (sizeof(RecordHeader) != 32 or sizeof(RingInfoLine) != 64
        or sizeof(RingProducerLine) != 64 or sizeof(RingProducerStats) != 64
        or sizeof(RingWaitLine) != 64 or sizeof(RingConsumerSlot) != 128
        or sizeof(RingControl) != 5 * 64 + RING_MAX_CONSUMERS * 128):
    raise ImportError("misdtcp._ring: shared-memory structs have an unexpected size")


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


ctypedef struct _RoomWait:
    Ring *ring
    uint64_t position
    uint64_t need


cdef bint _room_ready(void *context) noexcept nogil:
    cdef _RoomWait *w = <_RoomWait *>context
    return _has_room(w.ring, w.position, w.need)


cdef int ring_wait_space(Ring *ring, uint32_t max_len, uint32_t spin_iterations,
                         uint64_t timeout_ns) noexcept nogil:
    """Wait until a record of ``max_len`` fits: WAIT_READY, WAIT_TIMEOUT or WAIT_STOPPED."""
    cdef RingControl *ctl = ring.ctl
    cdef _RoomWait w
    w.ring = ring
    w.position = ctl.producer.cursor
    w.need = record_size(max_len)
    if _has_room(ring, w.position, w.need):
        return WAIT_READY
    counter_add_u64(&ctl.producer_stats.full_waits, 1)
    return wait_for(_room_ready, &w, &ctl.producer_wait.eventcount, &ctl.info.stop,
                    spin_iterations, timeout_ns, &ctl.producer_stats.wait)


cdef char *ring_reserve(Ring *ring, uint32_t max_len) noexcept nogil:
    """Like ring_try_reserve but waits for room; NULL only if stopped (or too big).

    Waits in WAIT_TIMEOUT_NS slices forever: a producer that must notice a
    dead consumer uses ring_try_reserve + ring_wait_space itself.
    """
    cdef char *payload
    if record_size(max_len) > ring.size:
        return NULL
    while True:
        payload = ring_try_reserve(ring, max_len)
        if payload != NULL:
            return payload
        if ring_wait_space(ring, max_len, WAIT_SPIN, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
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
    if ec_notify(&ctl.consumer_wait.eventcount):
        counter_add_u64(&ctl.producer_stats.wakes, 1)
    return seqno


cdef void ring_stop(Ring *ring) noexcept nogil:
    """Set the stop flag and wake every sleeper on both sides."""
    atomic_store_seq_cst_u32(&ring.ctl.info.stop, 1)
    ec_wake_all(&ring.ctl.consumer_wait.eventcount)
    ec_wake_all(&ring.ctl.producer_wait.eventcount)


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
    if ec_notify(&ring.ctl.producer_wait.eventcount):
        counter_add_u64(&slot.wakes, 1)


ctypedef struct _RecordWait:
    Ring *ring
    uint64_t position


cdef bint _record_ready(void *context) noexcept nogil:
    cdef _RecordWait *w = <_RecordWait *>context
    return atomic_load_acquire_u64(&w.ring.ctl.producer.cursor) != w.position


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
    cdef _RecordWait w
    w.ring = ring
    w.position = position
    return wait_for(_record_ready, &w, &ring.ctl.consumer_wait.eventcount, &ring.ctl.info.stop,
                    spin_iterations, timeout_ns, &ring.ctl.consumers[consumer_id].wait)


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
        check_size(size)
        if not 1 <= n_consumers <= RING_MAX_CONSUMERS:
            raise ValueError(f"n_consumers must be 1..{RING_MAX_CONSUMERS}, not {n_consumers}")
        cdef RingInfoLine *info
        control_size = round_up(sizeof(RingControl), page_size())
        encoded = name.encode()
        fd = shm_create(encoded, control_size + size)
        if fd < 0:
            raise os_error("memfd_create", -fd)
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
            error = os_error("mmap")
            self._release()
            raise error
        self.control = <char *>control
        self.control_size = control_size
        self.ring.ctl = <RingControl *>control
        self.ring.data = mirror_map(fd, control_size, size, &error_code)
        if self.ring.data == NULL:
            error = os_error("mmap", error_code)
            self._release()
            raise error
        self.ring.size = size
        self.ring.mask = size - 1

    @classmethod
    def from_fd(cls, int fd):
        """Map the ring whose memfd is ``fd`` (duplicated; the caller keeps its fd)."""
        cdef BroadcastRing self = cls.__new__(cls)
        cdef int own = dup_fd(fd)
        cdef RingControl *ctl
        cdef uint64_t total
        cdef uint64_t control_size = round_up(sizeof(RingControl), page_size())
        try:
            total = fd_size(own)
            if total <= control_size:
                raise ValueError("fd is not a misdtcp ring (too small)")
        except BaseException:
            close(own)
            raise
        # Map the control page alone first to learn the geometry.
        ctl = <RingControl *>mmap(NULL, control_size, PROT_READ, MAP_SHARED, own, 0)
        if <void *>ctl == MAP_FAILED:
            error = os_error("mmap")
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

    def wait_space(self, uint32_t max_len, uint32_t spin=WAIT_SPIN, double timeout=0.05):
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
        return flag_set(&self.ring.ctl.info.stop)

    # ---- consumer ---------------------------------------------------------------

    def available(self, uint32_t consumer_id):
        """End position of the published records."""
        self._check_consumer(consumer_id)
        return ring_available(&self.ring, consumer_id)

    def read(self, uint32_t consumer_id, uint64_t max_records=0, bint release=True):
        """Copy out the available records (all, or at most ``max_records``) as
        RingRecord tuples and, unless ``release`` is false, release them."""
        self._check_consumer(consumer_id)
        cdef uint64_t position = ring_consumer_cursor(&self.ring, consumer_id)
        cdef uint64_t end = ring_available(&self.ring, consumer_id)
        cdef RecordHeader *header
        records = []
        while position != end and (max_records == 0 or <uint64_t>len(records) < max_records):
            header = ring_record_at(&self.ring, position)
            records.append(RingRecord(header.seqno, header.kind, header.flags, header.gso_size,
                                  header.csum_start, header.csum_offset, header.now_ns,
                                  record_payload(header)[:header.length]))
            position = ring_next_position(header, position)
        if release and records:
            ring_release(&self.ring, consumer_id, position, len(records))
        return records

    def release(self, uint32_t consumer_id, uint64_t position, uint64_t records=0):
        self._check_consumer(consumer_id)
        ring_release(&self.ring, consumer_id, position, records)

    def wait(self, uint32_t consumer_id, uint32_t spin=WAIT_SPIN, double timeout=0.05):
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
            "spins": atomic_load_relaxed_u64(&p.wait.spins),
            "sleeps": atomic_load_relaxed_u64(&p.wait.sleeps),
            "wakes": atomic_load_relaxed_u64(&p.wakes),
            "timeouts": atomic_load_relaxed_u64(&p.wait.timeouts),
        }
        consumers = []
        for i in range(self.ring.n_consumers):
            c = &self.ring.ctl.consumers[i]
            consumers.append({
                "cursor": atomic_load_acquire_u64(&c.cursor),
                "records": atomic_load_relaxed_u64(&c.records),
                "bytes": atomic_load_relaxed_u64(&c.bytes),
                "spins": atomic_load_relaxed_u64(&c.wait.spins),
                "sleeps": atomic_load_relaxed_u64(&c.wait.sleeps),
                "wakes": atomic_load_relaxed_u64(&c.wakes),
                "timeouts": atomic_load_relaxed_u64(&c.wait.timeouts),
            })
        return {"producer": producer, "consumers": consumers}


def record_bytes(uint32_t length):
    """Ring bytes a record with ``length`` payload bytes takes (header + padding)."""
    return record_size(length)
