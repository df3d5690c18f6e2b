# Buffered pcap writer callable per frame from nogil code.  One PcapWriter
# belongs to one thread; several processes can share one file by opening it
# with append=True (O_APPEND, and every write() carries whole records only).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

ctypedef struct PcapFile:
    int fd
    uint8_t *buf
    size_t used
    size_t cap
    uint32_t snaplen
    int nanosecond            # 1: nanosecond timestamps (magic a1b23c4d), 0: microseconds
    uint64_t frames
    uint64_t bytes_written
    int error                 # errno of the first failed write, then every write fails fast
    int flush_each            # 1: one write() per record (a live capture merged in time order)

cdef int pcap_write(PcapFile *f, int64_t ts_ns, const uint8_t *data, uint32_t length) noexcept nogil
cdef int pcap_flush(PcapFile *f) noexcept nogil

cdef class PcapWriter:
    cdef PcapFile file
    cdef readonly object path
    cdef readonly uint32_t linktype
    cdef readonly int64_t realtime_offset_ns
