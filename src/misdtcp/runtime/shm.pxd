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
cdef int shm_create(const char *name, uint64_t size) noexcept nogil
cdef char *mirror_map(int fd, uint64_t offset, uint64_t size, int *error) noexcept nogil
cdef void mirror_unmap(char *base, uint64_t size) noexcept nogil


cdef class MirroredBuffer:
    cdef int fd
    cdef char *base
    cdef readonly uint64_t size
    cdef Py_ssize_t exports
    cdef _attach(self, int fd, uint64_t size)
    cdef void _release(self) noexcept


cdef class SlotMap:
    cdef char *base
    cdef readonly uint64_t size
    cdef Py_ssize_t exports
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
