# cython: language_level=3
"""Python view of the inline range set of ranges.pxd, for tests and tools.
The core uses the inline functions directly on the RangeSet inside each
connection; this wrapper exists so the arithmetic can be property-tested."""
from libc.stdint cimport uint64_t

CAPACITY = MAX_RANGES


cdef class Ranges:
    cdef RangeSet r

    def __cinit__(self):
        self.r.n = 0
        self.r.clock = 0

    def add(self, uint64_t start, uint64_t end):
        """Insert [start, end); returns the index of the covering range or -1."""
        return ranges_add(&self.r, start, end)

    def trim_below(self, uint64_t off):
        ranges_trim_below(&self.r, off)

    def advance(self, uint64_t off):
        return ranges_advance(&self.r, off)

    def total(self):
        return ranges_bytes(&self.r)

    def total_between(self, uint64_t lo, uint64_t hi):
        return ranges_bytes_between(&self.r, lo, hi)

    def contains(self, uint64_t start, uint64_t end):
        return ranges_contains(&self.r, start, end)

    def next_gap(self, uint64_t off):
        """(first offset >= off not covered, start of the next range or None)."""
        cdef uint64_t gap_end
        cdef uint64_t pos = ranges_next_gap(&self.r, off, &gap_end)
        return pos, (None if gap_end == 0xffffffffffffffffULL else gap_end)

    def clear(self):
        ranges_clear(&self.r)

    def ranges(self):
        return [(self.r.start[i], self.r.end[i]) for i in range(self.r.n)]

    def stamps(self):
        return [self.r.stamp[i] for i in range(self.r.n)]

    def __len__(self):
        return self.r.n
