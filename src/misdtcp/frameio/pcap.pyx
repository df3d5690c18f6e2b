# cython: language_level=3
"""pcap capture of the frames that cross the device, both directions in one file,
and a reader for tests and tools.

Format: classic pcap (not pcapng), link type LINKTYPE_RAW (101: every record
is a bare IPv4/IPv6 packet, no vnet header), nanosecond timestamps by
default.  Frames are written exactly as they crossed the TUN, so a GSO
super-frame is one record of up to 64 KiB whose IPv4 ``tot_len`` covers it
all; tshark and Wireshark decode it as one large TCP segment ("TCP segment of
a reassembled PDU" / large length), which is what the stack saw.  The default
snaplen (262144) keeps super-frames whole.

The hot path is ``pcap_write`` (nogil): it copies one record into a 256 KiB
buffer and issues one write() when the buffer is full, so capture costs one
memcpy per frame.  Timestamps are wall-clock nanoseconds; code that holds
CLOCK_MONOTONIC stamps adds ``realtime_offset_ns``.
"""
import os
import struct
import time

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from misdtcp._system cimport errno, EINTR, iovec, writev
from misdtcp._system cimport write as c_write

cdef enum:
    RECORD_HEADER = 16
    BUFFER_BYTES = 262144

LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
MAGIC_MICROSECONDS = 0xA1B2C3D4
MAGIC_NANOSECONDS = 0xA1B23C4D


class PcapError(OSError):
    """Writing the capture file failed; the message names the file and the reason."""


cdef int _write_all(int fd, const uint8_t *p, size_t n) noexcept nogil:
    cdef ssize_t done
    while n > 0:
        done = c_write(fd, p, n)
        if done < 0:
            if errno == EINTR:
                continue
            return errno
        p += done
        n -= <size_t>done
    return 0


cdef inline void _record_header(PcapFile *f, uint8_t *out, int64_t ts_ns, uint32_t length) noexcept nogil:
    cdef uint32_t fields[4]
    cdef uint32_t incl = length if length < f.snaplen else f.snaplen
    if ts_ns < 0:
        ts_ns = 0
    fields[0] = <uint32_t>(ts_ns // 1000000000)
    if f.nanosecond:
        fields[1] = <uint32_t>(ts_ns % 1000000000)
    else:
        fields[1] = <uint32_t>((ts_ns % 1000000000) // 1000)
    fields[2] = incl
    fields[3] = length
    memcpy(out, fields, RECORD_HEADER)  # host byte order: readers detect it from the magic


cdef int pcap_flush(PcapFile *f) noexcept nogil:
    cdef int err
    if f.error:
        return -1
    if f.used:
        err = _write_all(f.fd, f.buf, f.used)
        f.used = 0
        if err:
            f.error = err
            return -1
    return 0


cdef int pcap_write(PcapFile *f, int64_t ts_ns, const uint8_t *data, uint32_t length) noexcept nogil:
    """Append one record; -1 after a write error (kept in f.error)."""
    cdef uint32_t incl = length if length < f.snaplen else f.snaplen
    cdef size_t need = RECORD_HEADER + incl
    cdef uint8_t header[RECORD_HEADER]
    cdef iovec iov[2]
    cdef ssize_t done
    if f.error or f.fd < 0:
        return -1
    if f.used + need > f.cap:
        if pcap_flush(f) != 0:
            return -1
    if need > f.cap:
        # bigger than the buffer (only with a huge snaplen): one writev so the
        # record stays a single append
        _record_header(f, header, ts_ns, length)
        iov[0].iov_base = header
        iov[0].iov_len = RECORD_HEADER
        iov[1].iov_base = <void *>data
        iov[1].iov_len = incl
        done = writev(f.fd, iov, 2)
        if done != <ssize_t>need:
            f.error = errno if done < 0 else 5  # EIO for a short write
            return -1
    else:
        _record_header(f, f.buf + f.used, ts_ns, length)
        memcpy(f.buf + f.used + RECORD_HEADER, data, incl)
        f.used += need
    f.frames += 1
    f.bytes_written += need
    if f.flush_each:
        return pcap_flush(f)
    return 0


cdef class PcapWriter:
    """Write frames to ``path`` (created, or appended to with ``append=True``)."""

    def __cinit__(self, *args, **kwargs):
        self.file.fd = -1
        self.file.buf = NULL

    def __init__(self, path, uint32_t linktype=LINKTYPE_RAW, bint nanosecond=True,
                 uint32_t snaplen=262144, bint append=False, bint flush_each=False):
        """`flush_each`: every record reaches the file with its own write(),
        so a reader merging several processes' captures sees each record
        within microseconds of its timestamp (runtime/capture.py)."""
        if linktype not in (LINKTYPE_RAW, LINKTYPE_IPV4):
            raise ValueError(f"link type must be {LINKTYPE_RAW} (raw IP) or {LINKTYPE_IPV4} (IPv4), not {linktype}.")
        if not 64 <= snaplen <= 262144:
            raise ValueError(f"snaplen must be between 64 and 262144, not {snaplen}.")
        self.path = os.fspath(path)
        self.linktype = linktype
        self.file.snaplen = snaplen
        self.file.nanosecond = nanosecond
        self.file.flush_each = flush_each
        self.file.cap = BUFFER_BYTES
        self.file.buf = <uint8_t *>malloc(BUFFER_BYTES)
        if self.file.buf == NULL:
            raise MemoryError("cannot allocate the pcap buffer.")
        self.realtime_offset_ns = time.time_ns() - time.monotonic_ns()
        magic = MAGIC_NANOSECONDS if nanosecond else MAGIC_MICROSECONDS
        try:
            if append and os.path.exists(self.path) and os.path.getsize(self.path) >= 24:
                with open(self.path, "rb") as existing:
                    head = existing.read(24)
                found = int.from_bytes(head[:4], "little")
                found_link = int.from_bytes(head[20:24], "little")
                if found != magic or found_link != linktype:
                    raise PcapError(f"{self.path} is a capture with another timestamp unit or link type; cannot append.")
                self.file.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            else:
                self.file.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
                header = (magic.to_bytes(4, "little") + (2).to_bytes(2, "little") + (4).to_bytes(2, "little")
                          + bytes(8) + snaplen.to_bytes(4, "little") + linktype.to_bytes(4, "little"))
                os.write(self.file.fd, header)
        except OSError as exc:
            if isinstance(exc, PcapError):
                raise
            raise PcapError(exc.errno, f"cannot open capture file {self.path}: {exc.strerror}.") from None

    def __dealloc__(self):
        if self.file.fd >= 0:
            pcap_flush(&self.file)
            os.close(self.file.fd)
        free(self.file.buf)

    def write(self, frame, ts_ns=None, Py_ssize_t offset=0):
        """Record ``frame[offset:]`` (offset = vnet header length to skip) at ``ts_ns`` (default now)."""
        cdef const uint8_t[::1] view = frame
        cdef int64_t ts = time.time_ns() if ts_ns is None else ts_ns
        if not 0 <= offset <= view.shape[0]:
            raise ValueError(f"offset {offset} is outside the {view.shape[0]}-byte frame.")
        if self.file.fd < 0:
            raise PcapError(f"capture file {self.path} is closed.")
        if pcap_write(&self.file, ts, &view[0] + offset if view.shape[0] else NULL,
                      <uint32_t>(view.shape[0] - offset)) != 0:
            raise PcapError(self.file.error, f"writing capture file {self.path} failed: {os.strerror(self.file.error)}.")

    def flush(self):
        if self.file.fd >= 0 and pcap_flush(&self.file) != 0:
            raise PcapError(self.file.error, f"writing capture file {self.path} failed: {os.strerror(self.file.error)}.")

    def close(self):
        if self.file.fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self.file.fd)
                self.file.fd = -1

    @property
    def frames(self):
        return self.file.frames

    @property
    def closed(self):
        return self.file.fd < 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_pcap(path):
    """Yield ``(ts_ns, captured_bytes, original_length)`` for every record of a classic pcap file."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise PcapError(f"{os.fspath(path)} is too short to be a pcap file.")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (MAGIC_MICROSECONDS, MAGIC_NANOSECONDS):
                break
        else:
            raise PcapError(f"{os.fspath(path)} is not a classic pcap file (magic {head[:4].hex()}).")
        scale = 1 if magic == MAGIC_NANOSECONDS else 1000
        record = struct.Struct(order + "IIII")
        while True:
            raw = f.read(16)
            if not raw:
                return
            if len(raw) < 16:
                raise PcapError(f"{os.fspath(path)} ends inside a record header.")
            sec, frac, incl, orig = record.unpack(raw)
            data = f.read(incl)
            if len(data) < incl:
                raise PcapError(f"{os.fspath(path)} ends inside a record.")
            yield sec * 1_000_000_000 + frac * scale, data, orig
