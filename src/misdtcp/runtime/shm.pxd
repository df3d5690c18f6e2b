# Shared memory of the runtime: memfd files mapped by every process, mirrored
# where a range must never wrap (ring data, connection buffers).  C-level
# interface for the ring, the queues and the executor; Python owners
# (MirroredBuffer, SlotMap) for set-up and the API.
from libc.stdint cimport uint64_t

cdef uint64_t page_size() noexcept nogil
cdef uint64_t round_up(uint64_t n, uint64_t to) noexcept nogil
cdef int check_size(uint64_t size) except -1
cdef object os_error(str what, int error=*)
cdef uint64_t fd_size(int fd) except? 0
cdef int dup_fd(int fd) except -1
cdef enum:
    HUGE_PAGE = 2 * 1024 * 1024        # the x86-64 huge page misdtcp asks for (MFD_HUGETLB)

cdef int shm_create(const char *name, uint64_t size) noexcept nogil
cdef int shm_create_huge(const char *name, uint64_t size) noexcept nogil
cdef char *mirror_map(int fd, uint64_t offset, uint64_t size, int *error) noexcept nogil
cdef char *mirror_map_aligned(int fd, uint64_t offset, uint64_t size, uint64_t align,
                              int *error) noexcept nogil
cdef void mirror_unmap(char *base, uint64_t size) noexcept nogil


cdef class MirroredBuffer:
    cdef int fd
    cdef char *base
    cdef readonly uint64_t size
    cdef readonly bint huge_pages
    cdef Py_ssize_t exports
    cdef _attach(self, int fd, uint64_t size, uint64_t align)
    cdef void _release(self) noexcept


cdef class SlotMap:
    cdef char *base
    cdef readonly uint64_t size
    cdef Py_ssize_t exports
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
