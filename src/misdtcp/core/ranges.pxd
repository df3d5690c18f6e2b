# Byte-range tracking without payload (the smoltcp "assembler" idea).
#
# The receiver records which stream offsets past rcv_nxt have arrived
# (the out-of-order "islands"); the sender records which of its bytes the
# peer has SACKed.  Neither copy holds bytes: payload goes straight to its
# final offset in the receive buffer, so reassembly is bookkeeping only.
#
# Ranges are half-open [start, end) in 64-bit stream offsets (no wrap),
# kept sorted and disjoint (touching ranges are merged).  Capacity is fixed
# so the structure lives inside the replicated connection state and costs
# no allocation.  A `stamp` per range orders them by most recent update,
# which is what RFC 2018 §4 asks of the SACK blocks a receiver reports.
from libc.stdint cimport uint32_t, uint64_t

cdef enum:
    MAX_RANGES = 16

ctypedef struct RangeSet:
    uint32_t n
    uint32_t clock                    # last stamp handed out
    uint64_t start[MAX_RANGES]
    uint64_t end[MAX_RANGES]
    uint32_t stamp[MAX_RANGES]


cdef inline void ranges_clear(RangeSet *r) noexcept nogil:
    r.n = 0


cdef inline void _ranges_remove_at(RangeSet *r, uint32_t i) noexcept nogil:
    cdef uint32_t j = i
    while j + 1 < r.n:
        r.start[j] = r.start[j + 1]
        r.end[j] = r.end[j + 1]
        r.stamp[j] = r.stamp[j + 1]
        j += 1
    r.n -= 1


cdef inline int ranges_add(RangeSet *r, uint64_t s, uint64_t e) noexcept nogil:
    """Insert [s, e), merging with overlapping or touching ranges.

    Returns the index of the range that now contains [s, e), or -1 when the
    set is full and the range touches none of the existing ones (the caller
    drops the data; the peer will retransmit it).
    """
    cdef uint32_t i = 0, j
    cdef uint32_t k
    if e <= s:
        return -1
    r.clock += 1
    # first range whose end reaches s
    while i < r.n and r.end[i] < s:
        i += 1
    if i == r.n or r.start[i] > e:
        # no overlap: insert at i
        if r.n == MAX_RANGES:
            return -1
        k = r.n
        while k > i:
            r.start[k] = r.start[k - 1]
            r.end[k] = r.end[k - 1]
            r.stamp[k] = r.stamp[k - 1]
            k -= 1
        r.start[i] = s
        r.end[i] = e
        r.stamp[i] = r.clock
        r.n += 1
        return <int>i
    # overlap or touch with range i: extend it and swallow followers
    if s < r.start[i]:
        r.start[i] = s
    if e > r.end[i]:
        r.end[i] = e
    r.stamp[i] = r.clock
    j = i + 1
    while j < r.n and r.start[j] <= r.end[i]:
        if r.end[j] > r.end[i]:
            r.end[i] = r.end[j]
        _ranges_remove_at(r, j)
    return <int>i


cdef inline void ranges_trim_below(RangeSet *r, uint64_t off) noexcept nogil:
    """Forget everything below off."""
    while r.n and r.end[0] <= off:
        _ranges_remove_at(r, 0)
    if r.n and r.start[0] < off:
        r.start[0] = off


cdef inline void ranges_trim_above(RangeSet *r, uint64_t off) noexcept nogil:
    """Forget everything at or above off."""
    while r.n and r.start[r.n - 1] >= off:
        r.n -= 1
    if r.n and r.end[r.n - 1] > off:
        r.end[r.n - 1] = off


cdef inline uint64_t ranges_advance(RangeSet *r, uint64_t off) noexcept nogil:
    """If the first range starts at or below off, consume it and return its
    end (the new contiguous edge); otherwise return off unchanged."""
    cdef uint64_t edge = off
    while r.n and r.start[0] <= edge:
        if r.end[0] > edge:
            edge = r.end[0]
        _ranges_remove_at(r, 0)
    return edge


cdef inline uint64_t ranges_bytes(const RangeSet *r) noexcept nogil:
    cdef uint64_t total = 0
    cdef uint32_t i
    for i in range(r.n):
        total += r.end[i] - r.start[i]
    return total


cdef inline uint64_t ranges_bytes_between(const RangeSet *r, uint64_t lo, uint64_t hi) noexcept nogil:
    """Bytes of the set inside [lo, hi)."""
    cdef uint64_t total = 0, s, e
    cdef uint32_t i
    for i in range(r.n):
        s = r.start[i] if r.start[i] > lo else lo
        e = r.end[i] if r.end[i] < hi else hi
        if e > s:
            total += e - s
    return total


cdef inline bint ranges_contains(const RangeSet *r, uint64_t s, uint64_t e) noexcept nogil:
    """True when [s, e) lies entirely inside one range."""
    cdef uint32_t i
    for i in range(r.n):
        if r.start[i] <= s and e <= r.end[i]:
            return True
    return False


cdef inline uint64_t ranges_next_gap(const RangeSet *r, uint64_t off, uint64_t *gap_end) noexcept nogil:
    """First offset >= off not covered by the set; *gap_end receives the
    start of the next range above it (or UINT64_MAX when there is none)."""
    cdef uint32_t i
    cdef uint64_t pos = off
    for i in range(r.n):
        if r.end[i] <= pos:
            continue
        if r.start[i] <= pos:
            pos = r.end[i]
            continue
        gap_end[0] = r.start[i]
        return pos
    gap_end[0] = 0xffffffffffffffffULL
    return pos
