# cython: language_level=3
"""Shared memory for the runtime: memfd files, mirrored mappings, and the
application's view of one connection's buffer.

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
"""
import os

from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdint cimport uint64_t

from misdtcp._system cimport (MAP_ANONYMOUS, MAP_FAILED, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED,
                              MFD_CLOEXEC, MFD_HUGETLB, PROT_NONE, PROT_READ, PROT_WRITE, _SC_PAGESIZE, close, dup, errno,
                              fstat, ftruncate, memfd_create, mmap, munmap, stat, sysconf)


cdef uint64_t page_size() noexcept nogil:
    return <uint64_t>sysconf(_SC_PAGESIZE)


cdef uint64_t round_up(uint64_t n, uint64_t to) noexcept nogil:
    return (n + to - 1) // to * to


cdef int check_size(uint64_t size) except -1:
    if size < page_size() or size & (size - 1):
        raise ValueError(
            f"shared buffer size must be a power of two of at least one page "
            f"({page_size()} bytes), not {size}")
    return 0


cdef object os_error(str what, int error=0):
    """OSError for a failed call: ``error`` if given, else the current errno."""
    cdef int e = error if error else errno
    return OSError(e, f"{what}: {os.strerror(e)}")


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


cdef int shm_create_huge(const char *name, uint64_t size) noexcept nogil:
    """A memfd of ``size`` zero bytes backed by huge pages (MFD_HUGETLB), or
    -errno when the system offers none (no huge-page pool, or ``size`` not a
    multiple of HUGE_PAGE).  Pages come from the pool when they are mapped:
    a mapping can still fail with ENOMEM, and callers fall back then too."""
    cdef int fd
    cdef int error
    if size % HUGE_PAGE:
        return -22                      # EINVAL
    fd = memfd_create(name, MFD_CLOEXEC | MFD_HUGETLB)
    if fd < 0:
        return -errno
    if ftruncate(fd, <long>size) != 0:
        error = errno
        close(fd)
        return -error
    return fd


cdef char *mirror_map(int fd, uint64_t offset, uint64_t size, int *error) noexcept nogil:
    """Map file bytes [offset, offset+size) twice back to back; NULL and *error on failure.

    Regions that are whole huge pages are mapped at a huge-page boundary, so
    the same call maps a huge-page memfd (which requires it) and a normal one."""
    if size % HUGE_PAGE == 0 and offset % HUGE_PAGE == 0:
        return mirror_map_aligned(fd, offset, size, HUGE_PAGE, error)
    return mirror_map_aligned(fd, offset, size, 0, error)


cdef char *mirror_map_aligned(int fd, uint64_t offset, uint64_t size, uint64_t align,
                              int *error) noexcept nogil:
    """mirror_map, with the first byte at a multiple of `align` (huge pages
    must be mapped at huge-page boundaries; 0: any page boundary).

    The PROT_NONE reservation claims the address space first so the two
    MAP_FIXED mappings cannot land on anything else; MAP_FIXED then replaces
    the reservation's pages in place, and the unused slack of an aligned
    reservation is given back."""
    cdef uint64_t slack = align if align else 0
    cdef char *reserved = <char *>mmap(NULL, 2 * size + slack, PROT_NONE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    cdef char *base
    cdef void *first
    cdef void *second
    cdef uint64_t lead
    if <void *>reserved == MAP_FAILED:
        error[0] = errno
        return NULL
    base = reserved
    if align:
        lead = (align - (<uint64_t>reserved % align)) % align
        base = reserved + lead
        if lead:
            munmap(reserved, lead)
        if slack - lead:
            munmap(base + 2 * size, slack - lead)
    first = mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, <long>offset)
    if first != MAP_FAILED:
        second = mmap(base + size, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, <long>offset)
        if second != MAP_FAILED:
            return base
    error[0] = errno
    munmap(base, 2 * size)
    return NULL


cdef void mirror_unmap(char *base, uint64_t size) noexcept nogil:
    if base != NULL:
        munmap(base, 2 * size)


cdef uint64_t fd_size(int fd) except? 0:
    cdef stat st
    if fstat(fd, &st) != 0:
        raise os_error("fstat")
    return <uint64_t>st.st_size


cdef int dup_fd(int fd) except -1:
    cdef int copy = dup(fd)
    if copy < 0:
        raise os_error("dup")
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
        self.huge_pages = False

    def __init__(self, uint64_t size, *, str name="misdtcp-buffer", bint huge_pages=False):
        """`huge_pages`: back the buffer by huge pages where the system offers
        them (a huge-page pool, a size that is whole huge pages); otherwise,
        and if mapping them fails, fall back to normal pages
        (``self.huge_pages`` says which it got)."""
        cdef int fd
        check_size(size)
        encoded = name.encode()
        if huge_pages:
            fd = shm_create_huge(encoded, size)
            if fd >= 0:
                try:
                    self._attach(fd, size, HUGE_PAGE)
                    self.huge_pages = True
                    return
                except OSError:
                    pass                # no pages in the pool: normal pages instead
        fd = shm_create(encoded, size)
        if fd < 0:
            raise os_error("memfd_create", -fd)
        self._attach(fd, size, 0)

    cdef _attach(self, int fd, uint64_t size, uint64_t align):
        """Map ``fd`` (which this object now owns) mirrored."""
        cdef int error_code = 0
        self.fd = fd
        self.size = size
        self.base = mirror_map_aligned(fd, 0, size, align, &error_code) if align else \
            mirror_map(fd, 0, size, &error_code)
        if self.base == NULL:
            error = os_error("mmap", error_code)
            self._release()
            raise error

    @classmethod
    def from_fd(cls, int fd):
        """Map the memfd ``fd`` of another MirroredBuffer (e.g. from another process)."""
        cdef MirroredBuffer self = cls.__new__(cls)
        cdef int own = dup_fd(fd)
        try:
            size = fd_size(own)
            check_size(size)
        except BaseException:
            close(own)
            raise
        self._attach(own, size, 0)
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


cdef class SlotMap:
    """The application's mirrored mapping of one connection's buffer (its
    region of the receive or send memfd), so any stretch of up to `size`
    bytes at any stream offset is one contiguous, zero-copy memoryview."""
    def __cinit__(self, int fd, uint64_t offset, uint64_t size):
        cdef int err = 0
        self.base = mirror_map(fd, offset, size, &err)
        if self.base == NULL:
            raise OSError(err, f"cannot map a connection buffer: {os.strerror(err)}")
        self.size = size
        self.exports = 0

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        self.shape[0] = <Py_ssize_t>(2 * self.size)
        self.strides[0] = 1
        buffer.buf = self.base
        buffer.obj = self
        buffer.len = <Py_ssize_t>(2 * self.size)
        buffer.readonly = 0
        buffer.itemsize = 1
        buffer.format = "B"
        buffer.ndim = 1
        buffer.shape = self.shape
        buffer.strides = self.strides
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1

    def view(self, uint64_t offset, uint64_t length):
        """Bytes [offset, offset + length) of the stream, modulo the size."""
        if length > self.size:
            raise ValueError(f"at most {self.size} bytes at once, not {length}")
        start = offset % self.size
        return memoryview(self)[start:start + length]

    def __dealloc__(self):
        if self.base != NULL:
            mirror_unmap(self.base, self.size)
            self.base = NULL
