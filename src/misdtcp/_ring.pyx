# cython: language_level=3
"""The broadcast ring: the sequencer's event log, read by every worker.

The log is made for replicas.  Every event is one fixed-size 64-byte
``Descriptor`` (one cache line) in a dense entry ring; the bytes an entry refers
to -- a segment's payload, or a whole record for what an entry cannot
describe -- live in a separate data area.  A replica walks the entries at a
fixed stride (so the next entry's address never depends on the current one,
and prefetching ahead is trivial) and touches data bytes only for the payload
stripes it owns.  The producer never overwrites an entry or a data byte until
the slowest consumer has released it (lossless back-pressure); consumers
batch everything available.  Waiting on either side follows the runtime's one
wait policy (runtime/wait.pxd: spin briefly, then park on an eventcount),
with one eventcount per direction of waiting.

Layout
======
One memfd::

    offset 0                 RingControl (every line 64-byte aligned, see _ring.pxd)
        +0    info            magic, version, n_consumers, E, S, offsets, stop, huge pages
        +64   producer        entry cursor (published), data cursor
        +128  producer_stats  records, bytes, full_waits, wakes, wait counters
        +192  consumer_wait   eventcount word consumers sleep on
        +256  producer_wait   eventcount word the producer sleeps on
        +320  consumers[16]   128 bytes each: cursor line (entry, data), statistics line
    entries_offset           E entries of 64 bytes (E a power of two)
    data_offset              the data area, S bytes (a power of two), mapped mirrored

With huge pages the offsets are whole huge pages.  Entry positions (seqnos)
and data positions are uint64 counters that only grow; an entry lives at
``entries[seqno & (E - 1)]`` and a data position at ``data + (pos & (S - 1))``.
The data area is mapped twice back to back (runtime/shm.pyx), so any stretch
of up to S bytes is contiguous: a payload never wraps.

Producer protocol: ``ring_claim`` takes the next entry (pending) and
``ring_data_tail``/``ring_data_grow`` append its bytes; the producer may keep
several entries pending and even grow the last one (coalescing); then
``ring_commit`` stamps each pending entry's ``data_end``, and publishes them
all with one release store of the cursor and at most one wake.

Memory ordering
---------------
* Producer: write entries and data, then **release**-store the entry cursor.
  A consumer's **acquire** load of the cursor that sees the new value therefore
  sees every entry and byte before it.
* Consumer: read entries and data, then **release**-store its cursors (data
  first, then entries).  The producer **acquire**-loads them before reusing
  space, so the consumer's reads happen before the producer's overwrites.

Each cursor line is written by one process only (false sharing avoided).
Statistics are plain single-writer counters in the shared control page,
readable from Python at any time (``counters()``).
"""
from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from misdtcp._system cimport (MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, atomic_load_acquire_u64,
                              atomic_load_relaxed_u64, atomic_store_release_u64, atomic_store_seq_cst_u32,
                              close, counter_add_u64, mmap, monotonic_ns, munmap)
from misdtcp.runtime.shm cimport (HUGE_PAGE, check_size, dup_fd, fd_size, mirror_map_aligned, mirror_unmap,
                                  os_error, page_size, round_up, shm_create, shm_create_huge)
from misdtcp.runtime.wait cimport (WAIT_READY, WAIT_STOPPED, WAIT_SPIN, WAIT_TIMEOUT_NS, ec_notify,
                                   ec_wake_all, flag_set, wait_for, wait_ready_fn)
from misdtcp.frameio.packet_ring cimport RxRing
from misdtcp.runtime.vocabulary cimport REC_FRAME

import collections

from misdtcp.runtime.wait import WaitStatus

RING_MAGIC = 0x474E49525344494D      # "MISDRING" little-endian
LAYOUT_VERSION = 3

MAX_CONSUMERS = RING_MAX_CONSUMERS
MAX_DATA = RING_MAX_DATA
DESCRIPTOR_BYTES = DESCRIPTOR_SIZE

RingEntry = collections.namedtuple(
    "RingEntry", "seqno kind tcp_flags frame_flags window segments seq ack tsval tsecr saddr sport dport "
                 "length gso_size seg_flags reason now_ns data")
RingEntry.__doc__ = "One published log entry and its data bytes, as Python sees them (tests, tools)."

# The layout is shared between processes and across modules: pin it.
if (sizeof(Descriptor) != DESCRIPTOR_SIZE or sizeof(RingInfoLine) != 64
        or sizeof(RingProducerLine) != 64 or sizeof(RingProducerStats) != 64
        or sizeof(RingWaitLine) != 64 or sizeof(RingConsumerSlot) != 128
        or sizeof(RingControl) != 5 * 64 + RING_MAX_CONSUMERS * 128):
    raise ImportError("misdtcp._ring: shared-memory structs have an unexpected size")


# =============================================================================
# Producer
# =============================================================================

cdef inline void _refresh_slowest(Ring *ring) noexcept nogil:
    """The cursors of the consumers furthest behind (entries and data).

    Acquire loads: a consumer release-stores its cursors after reading the
    entries and data before them, so its reads happen before we overwrite.
    Lags are unsigned differences, correct across a 2^64 wrap."""
    cdef uint64_t entry_pos = ring.ctl.producer.cursor
    cdef uint64_t data_pos = ring.ctl.producer.data_cursor
    cdef uint64_t lag, max_entry_lag = 0, max_data_lag = 0
    cdef uint32_t i
    for i in range(ring.n_consumers):
        lag = data_pos - atomic_load_acquire_u64(&ring.ctl.consumers[i].data_cursor)
        if lag > max_data_lag:
            max_data_lag = lag
        lag = entry_pos - atomic_load_acquire_u64(&ring.ctl.consumers[i].cursor)
        if lag > max_entry_lag:
            max_entry_lag = lag
    ring.cached_entry_min = entry_pos - max_entry_lag
    ring.cached_data_min = data_pos - max_data_lag


cdef inline bint _fits(Ring *ring, uint32_t entries, uint64_t data_bytes) noexcept nogil:
    cdef uint64_t entry_end = ring.ctl.producer.cursor + ring.pending + entries
    cdef uint64_t data_end = ring.data_tail + data_bytes
    return (entry_end - ring.cached_entry_min <= ring.entry_mask + 1
            and data_end - ring.cached_data_min <= ring.data_size)


cdef bint ring_has_room(Ring *ring, uint32_t entries, uint64_t data_bytes) noexcept nogil:
    """Room for `entries` more pending entries and `data_bytes` more data.

    The cached cursors can only be behind the true ones, so a "yes" from them
    is safe; only a "no" is worth the cross-core loads of every consumer."""
    if _fits(ring, entries, data_bytes):
        return True
    _refresh_slowest(ring)
    return _fits(ring, entries, data_bytes)


cdef Descriptor *ring_claim(Ring *ring, uint32_t data_bytes) noexcept nogil:
    """The next entry, pending until ring_commit(), with room for `data_bytes`
    of its data at ring_data_tail(); NULL if there is no room (or the request
    can never fit).  The entry's `data` is set to where its bytes start; the
    caller fills in the rest and calls ring_data_grow() for what it wrote."""
    cdef Descriptor *entry
    if data_bytes > ring.data_size or not ring_has_room(ring, 1, data_bytes):
        return NULL
    entry = &ring.entries[(ring.ctl.producer.cursor + ring.pending) & ring.entry_mask]
    ring.pending += 1
    entry.data = ring.data_tail
    entry.length = 0
    entry.frame_flags = 0               # a reused entry keeps no FRAME_IN_DEVICE of before
    return entry


ctypedef struct _RoomWait:
    Ring *ring
    uint32_t entries
    uint64_t data_bytes


cdef bint _room_ready(void *context) noexcept nogil:
    cdef _RoomWait *w = <_RoomWait *>context
    return ring_has_room(w.ring, w.entries, w.data_bytes)


cdef int ring_wait_space(Ring *ring, uint32_t entries, uint64_t data_bytes, uint32_t spin_iterations,
                         uint64_t timeout_ns) noexcept nogil:
    """Wait until `entries` more entries and `data_bytes` more data fit:
    WAIT_READY, WAIT_TIMEOUT or WAIT_STOPPED."""
    cdef RingControl *ctl = ring.ctl
    cdef _RoomWait w
    w.ring = ring
    w.entries = entries
    w.data_bytes = data_bytes
    if ring_has_room(ring, entries, data_bytes):
        return WAIT_READY
    counter_add_u64(&ctl.producer_stats.full_waits, 1)
    return wait_for(_room_ready, &w, &ctl.producer_wait.eventcount, &ctl.info.stop,
                    spin_iterations, timeout_ns, &ctl.producer_stats.wait)


cdef void ring_commit(Ring *ring) noexcept nogil:
    """Publish every pending entry: one release store, at most one wake."""
    cdef RingControl *ctl = ring.ctl
    cdef uint64_t seqno = ctl.producer.cursor
    cdef uint32_t i
    cdef uint64_t end
    cdef Descriptor *entry
    if ring.pending == 0:
        return
    # data_end: the data-area position after an entry's bytes, which is where
    # the next entry with bytes in the data area begins (entries whose bytes
    # lie in the device take none), or the tail
    end = ring.data_tail
    i = ring.pending
    while i > 0:
        i -= 1
        entry = &ring.entries[(seqno + i) & ring.entry_mask]
        entry.data_end = end
        if not (entry.frame_flags & FRAME_IN_DEVICE):
            end = entry.data
    counter_add_u64(&ctl.producer_stats.records, ring.pending)
    counter_add_u64(&ctl.producer_stats.bytes, ring.data_tail - ctl.producer.data_cursor)
    ctl.producer.data_cursor = ring.data_tail
    # Release: the entries and data written above become visible no later than
    # the new cursor, which is all a consumer looks at.
    atomic_store_release_u64(&ctl.producer.cursor, seqno + ring.pending)
    ring.pending = 0
    if ec_notify(&ctl.consumer_wait.eventcount):
        counter_add_u64(&ctl.producer_stats.wakes, 1)


cdef void ring_stop(Ring *ring) noexcept nogil:
    """Set the stop flag and wake every sleeper on both sides."""
    atomic_store_seq_cst_u32(&ring.ctl.info.stop, 1)
    ec_wake_all(&ring.ctl.consumer_wait.eventcount)
    ec_wake_all(&ring.ctl.producer_wait.eventcount)


# =============================================================================
# Consumers
# =============================================================================

cdef void ring_release(Ring *ring, uint32_t consumer_id, uint64_t seqno, uint64_t data_position,
                       uint64_t records) noexcept nogil:
    """Give back every entry before `seqno` and every data byte before
    `data_position` (the data_end of the last released entry).

    Release stores, data first: our reads of those entries and bytes happen
    before the producer, after its acquire loads, overwrites them."""
    cdef RingConsumerSlot *slot = &ring.ctl.consumers[consumer_id]
    cdef uint64_t old = slot.data_cursor
    atomic_store_release_u64(&slot.data_cursor, data_position)
    atomic_store_release_u64(&slot.cursor, seqno)
    counter_add_u64(&slot.records, records)
    counter_add_u64(&slot.bytes, data_position - old)
    if ec_notify(&ring.ctl.producer_wait.eventcount):
        counter_add_u64(&slot.wakes, 1)


cdef uint64_t ring_released(Ring *ring) noexcept nogil:
    """The entries every consumer has released (the slowest cursor; the
    producer's cached copy is refreshed)."""
    _refresh_slowest(ring)
    return ring.cached_entry_min


ctypedef struct _ReleasedWait:
    Ring *ring
    uint64_t seqno
    wait_ready_fn also
    void *also_context


cdef bint _released_ready(void *context) noexcept nogil:
    cdef _ReleasedWait *w = <_ReleasedWait *>context
    if <int64_t>(ring_released(w.ring) - w.seqno) >= 0:
        return True
    return w.also != NULL and w.also(w.also_context)


cdef int ring_wait_released(Ring *ring, uint64_t seqno, uint32_t spin_iterations, uint64_t timeout_ns,
                            wait_ready_fn also, void *also_context) noexcept nogil:
    """The producer waits until every consumer has released the entries
    before `seqno` -- or `also(also_context)` holds (may be NULL): WAIT_READY,
    WAIT_TIMEOUT or WAIT_STOPPED.  Consumers wake it as they release (the
    producer's side of the ring's wait)."""
    cdef _ReleasedWait w
    w.ring = ring
    w.seqno = seqno
    w.also = also
    w.also_context = also_context
    return wait_for(_released_ready, &w, &ring.ctl.producer_wait.eventcount, &ring.ctl.info.stop,
                    spin_iterations, timeout_ns, &ring.ctl.producer_stats.wait)


ctypedef struct _EntryWait:
    Ring *ring
    uint64_t seqno


cdef bint _entry_ready(void *context) noexcept nogil:
    cdef _EntryWait *w = <_EntryWait *>context
    return atomic_load_acquire_u64(&w.ring.ctl.producer.cursor) != w.seqno


cdef int ring_wait_from(Ring *ring, uint32_t consumer_id, uint64_t seqno,
                        uint32_t spin_iterations, uint64_t timeout_ns) noexcept nogil:
    """Wait until the entry `seqno` is published.  WAIT_READY when it is (even
    after stop: the log is drained first), WAIT_STOPPED when stopped and
    drained, WAIT_TIMEOUT after `timeout_ns`.  A consumer may read ahead of what
    it releases (a worker keeps entries since its last checkpoint; claimers
    share one cursor), so it says where it is.  Statistics go to
    `consumer_id`'s slot."""
    cdef _EntryWait w
    w.ring = ring
    w.seqno = seqno
    return wait_for(_entry_ready, &w, &ring.ctl.consumer_wait.eventcount, &ring.ctl.info.stop,
                    spin_iterations, timeout_ns, &ring.ctl.consumers[consumer_id].wait)


# =============================================================================
# The Python owner
# =============================================================================

cdef class BroadcastRing:
    """The event log in shared memory: one producer, ``n_consumers`` consumers.

    ``BroadcastRing(entries, data_size, n_consumers)`` creates it; forked
    children use the same object; ``BroadcastRing.from_fd(fd)`` maps it in
    another process.  Other Cython modules use ``ring.ring`` (the C ``Ring``)
    with the nogil functions of _ring.pxd; the Python methods exist for
    set-up, tests and statistics.  The buffer protocol exports the mirrored
    data area (2 * data_size bytes).  `huge_pages` asks for a huge-page
    memfd where the system offers one (``self.huge_pages`` says what it got).
    """

    def __cinit__(self):
        self.fd = -1
        self.control = NULL
        self.control_size = 0
        self.entries_map = NULL
        self.entries_map_size = 0
        self.exports = 0
        self.busy = 0
        memset(&self.ring, 0, sizeof(Ring))

    def __init__(self, uint64_t entries=1 << 16, uint64_t data_size=1 << 24, uint32_t n_consumers=1, *,
                 str name="misdtcp-ring", bint huge_pages=False):
        cdef RingInfoLine *info
        cdef int fd = -1
        cdef uint64_t unit
        if entries < 2 or entries & (entries - 1):
            raise ValueError(f"the entry count must be a power of two of at least 2, not {entries}")
        check_size(data_size)
        if data_size < RING_MAX_DATA:
            raise ValueError(f"the data area must hold at least one maximal record ({RING_MAX_DATA} bytes)")
        if not 1 <= n_consumers <= RING_MAX_CONSUMERS:
            raise ValueError(f"n_consumers must be 1..{RING_MAX_CONSUMERS}, not {n_consumers}")
        encoded = name.encode()
        huge = False
        if huge_pages and data_size % HUGE_PAGE == 0:
            unit = HUGE_PAGE
            entries_offset = round_up(sizeof(RingControl), unit)
            data_offset = entries_offset + round_up(entries * DESCRIPTOR_SIZE, unit)
            fd = shm_create_huge(encoded, data_offset + data_size)
            if fd >= 0:
                try:
                    self._attach(fd, entries_offset, entries, data_offset, data_size, True)
                    huge = True
                except OSError:
                    fd = -1             # no pages in the pool: normal pages instead
        if not huge:
            unit = page_size()
            entries_offset = round_up(sizeof(RingControl), unit)
            data_offset = entries_offset + round_up(entries * DESCRIPTOR_SIZE, unit)
            fd = shm_create(encoded, data_offset + data_size)
            if fd < 0:
                raise os_error("memfd_create", -fd)
            self._attach(fd, entries_offset, entries, data_offset, data_size, False)
        # A fresh memfd reads as zeros: cursors, counters and words start at 0.
        info = &self.ring.ctl.info
        info.version = LAYOUT_VERSION
        info.n_consumers = n_consumers
        info.entry_count = entries
        info.data_size = data_size
        info.entries_offset = entries_offset
        info.data_offset = data_offset
        info.huge_pages = huge
        atomic_store_release_u64(&info.magic, RING_MAGIC)
        self.ring.n_consumers = n_consumers

    cdef _attach(self, int fd, uint64_t entries_offset, uint64_t entry_count, uint64_t data_offset,
                 uint64_t data_size, bint huge):
        cdef void *mapped
        cdef int error_code = 0
        self.fd = fd
        self.control_size = entries_offset
        mapped = mmap(NULL, entries_offset, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if mapped == MAP_FAILED:
            error = os_error("mmap")
            self._release()
            raise error
        self.control = <char *>mapped
        self.ring.ctl = <RingControl *>mapped
        self.entries_map_size = data_offset - entries_offset
        mapped = mmap(NULL, self.entries_map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, <long>entries_offset)
        if mapped == MAP_FAILED:
            error = os_error("mmap")
            self._release()
            raise error
        self.entries_map = <char *>mapped
        self.ring.entries = <Descriptor *>mapped
        self.ring.entry_mask = entry_count - 1
        self.ring.data = mirror_map_aligned(fd, data_offset, data_size, HUGE_PAGE if huge else 0, &error_code)
        if self.ring.data == NULL:
            error = os_error("mmap", error_code)
            self._release()
            raise error
        self.ring.data_size = data_size
        self.ring.data_mask = data_size - 1

    @classmethod
    def from_fd(cls, int fd):
        """Map the ring whose memfd is ``fd`` (duplicated; the caller keeps its fd)."""
        cdef BroadcastRing self = cls.__new__(cls)
        cdef int own = dup_fd(fd)
        cdef RingControl *ctl
        cdef uint64_t total
        cdef uint64_t first = round_up(sizeof(RingControl), page_size())
        try:
            total = fd_size(own)
            if total <= first:
                raise ValueError("fd is not a misdtcp ring (too small)")
        except BaseException:
            close(own)
            raise
        # Map the control block alone first to learn the geometry (a huge-page
        # memfd must be mapped in whole huge pages).
        ctl = <RingControl *>mmap(NULL, first, PROT_READ, MAP_SHARED, own, 0)
        if <void *>ctl == MAP_FAILED:
            ctl = <RingControl *>mmap(NULL, HUGE_PAGE, PROT_READ, MAP_SHARED, own, 0)
            first = HUGE_PAGE
        if <void *>ctl == MAP_FAILED:
            error = os_error("mmap")
            close(own)
            raise error
        magic = atomic_load_acquire_u64(&ctl.info.magic)
        version = ctl.info.version
        n_consumers = ctl.info.n_consumers
        entries = ctl.info.entry_count
        data_size = ctl.info.data_size
        entries_offset = ctl.info.entries_offset
        data_offset = ctl.info.data_offset
        huge = ctl.info.huge_pages
        munmap(ctl, first)
        if (magic != RING_MAGIC or version != LAYOUT_VERSION or total != data_offset + data_size):
            close(own)
            raise ValueError("fd is not a misdtcp ring of this layout version")
        self._attach(own, entries_offset, entries, data_offset, data_size, huge)
        self.ring.n_consumers = n_consumers
        # whoever maps the ring may become its (single) producer: pick up where
        # the previous one left off
        self.ring.data_tail = self.ring.ctl.producer.data_cursor
        _refresh_slowest(&self.ring)
        return self

    cdef void _release(self) noexcept:
        mirror_unmap(self.ring.data, self.ring.data_size)
        self.ring.data = NULL
        if self.entries_map != NULL:
            munmap(self.entries_map, self.entries_map_size)
            self.entries_map = NULL
            self.ring.entries = NULL
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
        PyBuffer_FillInfo(buffer, self, self.ring.data, <Py_ssize_t>(2 * self.ring.data_size), 0, flags)
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
    def entries(self):
        return self.ring.entry_mask + 1

    @property
    def data_size(self):
        return self.ring.data_size

    @property
    def huge_pages(self):
        self._check_open()
        return bool(self.ring.ctl.info.huge_pages)

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

    def _start_at(self, uint64_t seqno, uint64_t data_position):
        """Test hook: move every cursor of an unused ring (e.g. near 2^64)."""
        self._check_open()
        if self.ring.ctl.producer.cursor != 0 or self.ring.pending:
            raise RuntimeError("_start_at only on a ring nothing was published to")
        for i in range(self.ring.n_consumers):
            atomic_store_release_u64(&self.ring.ctl.consumers[i].data_cursor, data_position)
            atomic_store_release_u64(&self.ring.ctl.consumers[i].cursor, seqno)
        self.ring.ctl.producer.data_cursor = data_position
        atomic_store_release_u64(&self.ring.ctl.producer.cursor, seqno)
        self.ring.data_tail = data_position
        self.ring.cached_entry_min = seqno
        self.ring.cached_data_min = data_position

    def _set_published(self, uint64_t count):
        """Test hook: make only the first `count` entries of a finished log
        visible to its consumers (a worker then runs up to exactly there), or
        more of them again.  `count` must not exceed what was written."""
        self._check_open()
        if self.ring.pending:
            raise RuntimeError("_set_published only on a log with nothing pending")
        atomic_store_release_u64(&self.ring.ctl.producer.cursor, count)
        ec_notify(&self.ring.ctl.consumer_wait.eventcount)

    def rewind(self, uint32_t n_consumers):
        """Make a finished log readable again from the start by `n_consumers`
        new consumers (a benchmark replays one log many times).  Only while
        no process uses the ring."""
        self._check_open()
        if not 1 <= n_consumers <= RING_MAX_CONSUMERS:
            raise ValueError(f"n_consumers must be 1..{RING_MAX_CONSUMERS}, not {n_consumers}")
        if self.ring.ctl.producer.cursor > self.ring.entry_mask + 1 or \
                self.ring.ctl.producer.data_cursor > self.ring.data_size:
            raise ValueError("the log has wrapped around: its start is gone")
        memset(&self.ring.ctl.consumers[0], 0, sizeof(RingConsumerSlot) * RING_MAX_CONSUMERS)
        self.ring.ctl.info.n_consumers = n_consumers
        self.ring.ctl.info.stop = 0
        self.ring.n_consumers = n_consumers

    def attach_device(self, RxRing device):
        """Resolve FRAME_IN_DEVICE descriptors (wire/frame.pxd) into
        `device`'s receive ring: call before forking the processes that read
        the log."""
        self._check_open()
        if device.closed:
            raise ValueError("the device's receive ring is closed")
        self.ring.device = <char *>device.rx.base
        self.ring.device_size = device.rx.size
        self.ring.device_stride = device.rx.slot_size

    # ---- producer --------------------------------------------------------------

    def wait_space(self, uint32_t entries=1, uint64_t data_bytes=0, uint32_t spin=WAIT_SPIN,
                   double timeout=0.05):
        """Block (GIL released) until that much fits; returns a WaitStatus."""
        self._check_open()
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef int rc
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = ring_wait_space(&self.ring, entries, data_bytes, spin, timeout_ns)
        self.busy -= 1
        return WaitStatus(rc)

    def claim(self, const uint8_t[:] data=None, uint16_t kind=REC_FRAME, *, uint16_t frame_flags=0,
              uint16_t gso_size=0, now_ns=None, bint block=True, **fields):
        """Claim the next entry, with `data` as its bytes and the named entry
        fields (e.g. seq=..., tcp_flags=...); it stays pending -- invisible to
        consumers -- until commit().  Returns its seqno, or None if `block` is
        false and there is no room, or if the ring was stopped."""
        self._check_open()
        cdef uint32_t length = 0 if data is None else <uint32_t>data.shape[0]
        cdef Descriptor *entry = NULL
        cdef uint64_t seqno
        cdef int rc
        if length > self.ring.data_size:
            raise ValueError(f"{length} bytes do not fit a {self.ring.data_size}-byte data area")
        for name in fields:
            if name not in _ENTRY_FIELDS:
                raise ValueError(f"{name!r} is not a log entry field")
        if frame_flags & FRAME_IN_DEVICE:
            raise ValueError("an entry claimed here has its bytes in the data area, not in a device (FRAME_IN_DEVICE)")
        stamp = monotonic_ns() if now_ns is None else now_ns
        while True:
            entry = ring_claim(&self.ring, length)
            if entry != NULL or not block:
                break
            ring_commit(&self.ring)         # the consumers must see what is pending to free room
            self.busy += 1
            with nogil:
                rc = ring_wait_space(&self.ring, 1, length, WAIT_SPIN, WAIT_TIMEOUT_NS)
            self.busy -= 1
            if rc == WAIT_STOPPED:
                return None
        if entry == NULL:
            return None
        seqno = self.ring.ctl.producer.cursor + self.ring.pending - 1
        entry.kind = kind
        entry.frame_flags = frame_flags
        entry.gso_size = gso_size
        entry.now_ns = stamp
        for name, value in fields.items():
            _set_field(entry, name, value)
        if length:
            memcpy(ring_data_tail(&self.ring), &data[0], length)
            ring_data_grow(&self.ring, length)
        entry.length = length
        return seqno

    def commit(self):
        """Publish every pending entry."""
        self._check_open()
        ring_commit(&self.ring)

    def publish(self, const uint8_t[:] data=None, uint16_t kind=REC_FRAME, *, uint16_t frame_flags=0,
                uint16_t gso_size=0, now_ns=None, bint block=True, **fields):
        """claim() and commit() one entry; returns its seqno or None."""
        seqno = self.claim(data, kind, frame_flags=frame_flags, gso_size=gso_size, now_ns=now_ns, block=block,
                           **fields)
        if seqno is not None:
            ring_commit(&self.ring)
        return seqno

    def stop(self):
        self._check_open()
        ring_stop(&self.ring)

    @property
    def stopped(self):
        self._check_open()
        return flag_set(&self.ring.ctl.info.stop)

    # ---- consumer ---------------------------------------------------------------

    def available(self):
        """Seqno after the last published entry."""
        self._check_open()
        return ring_available(&self.ring)

    cdef bytes _entry_bytes(self, Descriptor *e):
        """An entry's bytes, gathered from the device's slots for a
        FRAME_STRIDED run."""
        cdef char *p = ring_bytes(&self.ring, e)
        cdef uint32_t done = 0, k
        if not (e.frame_flags & FRAME_STRIDED) or e.gso_size == 0:
            return p[:e.length]
        out = bytearray()
        while done < e.length:
            k = min(<uint32_t>e.gso_size, e.length - done)
            out += p[:k]
            p += self.ring.device_stride
            done += k
        return bytes(out)

    def read(self, uint32_t consumer_id, uint64_t max_records=0, bint release=True):
        """Copy out the available entries (all, or at most ``max_records``) as
        RingEntry tuples with their data and, unless ``release`` is false,
        release them."""
        self._check_consumer(consumer_id)
        cdef uint64_t seqno = ring_consumer_cursor(&self.ring, consumer_id)
        cdef uint64_t end = ring_available(&self.ring)
        cdef uint64_t data_end = self.ring.ctl.consumers[consumer_id].data_cursor
        cdef Descriptor *e
        records = []
        while seqno != end and (max_records == 0 or <uint64_t>len(records) < max_records):
            e = ring_descriptor(&self.ring, seqno)
            records.append(RingEntry(seqno, e.kind, e.tcp_flags, e.frame_flags, e.window, e.segments, e.seq,
                                     e.ack, e.tsval, e.tsecr, e.saddr, e.sport, e.dport, e.length, e.gso_size,
                                     e.seg_flags, e.reason, e.now_ns, self._entry_bytes(e)))
            data_end = e.data_end
            seqno += 1
        if release and records:
            ring_release(&self.ring, consumer_id, seqno, data_end, len(records))
        return records

    def resume_consumer(self, uint32_t consumer_id, uint64_t seqno):
        """Move a dead consumer's cursor forward to `seqno` (an entry it had
        read, not yet released): its replacement starts there.  Only while no
        process consumes as `consumer_id`."""
        self._check_consumer(consumer_id)
        cdef RingConsumerSlot *slot = &self.ring.ctl.consumers[consumer_id]
        cdef uint64_t cursor = slot.cursor
        if seqno == cursor:
            return
        if seqno < cursor or seqno > ring_available(&self.ring):
            raise ValueError(f"position {seqno} is outside the held part of the log [{cursor}, "
                             f"{ring_available(&self.ring)}]")
        ring_release(&self.ring, consumer_id, seqno, ring_descriptor(&self.ring, seqno - 1).data_end, 0)

    def wait(self, uint32_t consumer_id, uint32_t spin=WAIT_SPIN, double timeout=0.05):
        """Block (GIL released) until an entry past this consumer's released
        cursor is published; returns a WaitStatus."""
        self._check_consumer(consumer_id)
        cdef uint64_t timeout_ns = <uint64_t>(timeout * 1e9)
        cdef uint64_t seqno = ring_consumer_cursor(&self.ring, consumer_id)
        cdef int rc
        self.busy += 1          # close() refuses while a thread is blocked in here
        with nogil:
            rc = ring_wait_from(&self.ring, consumer_id, seqno, spin, timeout_ns)
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
            "data_cursor": atomic_load_relaxed_u64(&self.ring.ctl.producer.data_cursor),
            "records": atomic_load_relaxed_u64(&p.records),
            "bytes": atomic_load_relaxed_u64(&p.bytes),
            "full_waits": atomic_load_relaxed_u64(&p.full_waits),
            "spins": atomic_load_relaxed_u64(&p.wait.spins),
            "sleeps": atomic_load_relaxed_u64(&p.wait.sleeps),
            "wakes": atomic_load_relaxed_u64(&p.wakes),
            "timeouts": atomic_load_relaxed_u64(&p.wait.timeouts),
            "parks": p.wait.parks,
            "spin_budget": p.wait.budget,
        }
        consumers = []
        for i in range(self.ring.n_consumers):
            c = &self.ring.ctl.consumers[i]
            consumers.append({
                "cursor": atomic_load_acquire_u64(&c.cursor),
                "data_cursor": atomic_load_acquire_u64(&c.data_cursor),
                "records": atomic_load_relaxed_u64(&c.records),
                "bytes": atomic_load_relaxed_u64(&c.bytes),
                "spins": atomic_load_relaxed_u64(&c.wait.spins),
                "sleeps": atomic_load_relaxed_u64(&c.wait.sleeps),
                "wakes": atomic_load_relaxed_u64(&c.wakes),
                "timeouts": atomic_load_relaxed_u64(&c.wait.timeouts),
                "parks": c.wait.parks,
                "spin_budget": c.wait.budget,
            })
        return {"producer": producer, "consumers": consumers}


_ENTRY_FIELDS = ("tcp_flags", "window", "segments", "seq", "ack", "tsval", "tsecr", "saddr", "sport",
                 "dport", "seg_flags", "reason")


cdef void _set_field(Descriptor *e, str name, object value) except *:
    if name == "tcp_flags":
        e.tcp_flags = value
    elif name == "window":
        e.window = value
    elif name == "segments":
        e.segments = value
    elif name == "seq":
        e.seq = value
    elif name == "ack":
        e.ack = value
    elif name == "tsval":
        e.tsval = value
    elif name == "tsecr":
        e.tsecr = value
    elif name == "saddr":
        e.saddr = value
    elif name == "sport":
        e.sport = value
    elif name == "dport":
        e.dport = value
    elif name == "seg_flags":
        e.seg_flags = value
    elif name == "reason":
        e.reason = value
