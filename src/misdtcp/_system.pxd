# cython: language_level=3
"""The one place that declares the libc / Linux calls used by misdtcp's Cython code.

Other modules ``from misdtcp._system cimport ...``; nothing else declares
``cdef extern`` blocks for system headers.  This file has no ``.pyx``: it only
holds declarations and a few tiny inline wrappers (futex, monotonic clock),
so it compiles into whichever module cimports it.

Python.h (always included first by Cython) comes with ``_GNU_SOURCE`` defined
by pyconfig.h on Linux, which is what makes ``memfd_create``, ``MAP_*`` and the
``CPU_*`` macros visible.
"""
from libc.stdint cimport uint32_t, uint64_t, int64_t


# ---- atomics (src/misdtcp/include/atomics.h) --------------------------------

cdef extern from "atomics.h" nogil:
    uint64_t atomic_load_acquire_u64(const uint64_t *p)
    uint64_t atomic_load_relaxed_u64(const uint64_t *p)
    uint64_t atomic_load_seq_cst_u64(const uint64_t *p)
    void atomic_store_release_u64(uint64_t *p, uint64_t v)
    void atomic_store_relaxed_u64(uint64_t *p, uint64_t v)
    bint atomic_cas_weak_relaxed_u64(uint64_t *p, uint64_t *expected, uint64_t desired)
    bint atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired)
    void counter_add_u64(uint64_t *p, uint64_t v)
    uint64_t atomic_fetch_add_u64(uint64_t *p, uint64_t v)

    uint32_t atomic_load_acquire_u32(const uint32_t *p)
    uint32_t atomic_load_relaxed_u32(const uint32_t *p)
    uint32_t atomic_load_seq_cst_u32(const uint32_t *p)
    void atomic_store_release_u32(uint32_t *p, uint32_t v)
    void atomic_store_seq_cst_u32(uint32_t *p, uint32_t v)
    uint32_t atomic_fetch_add_u32(uint32_t *p, uint32_t v)
    uint32_t atomic_exchange_u32(uint32_t *p, uint32_t v)
    uint32_t atomic_fetch_or_u32(uint32_t *p, uint32_t v)
    bint atomic_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired)

    void atomic_fence_seq_cst()
    void cpu_relax()


# ---- compiler builtins ------------------------------------------------------

cdef extern from *:
    # GCC/Clang: fetch the cache line at addr for reading (no fault if invalid)
    void prefetch "__builtin_prefetch" (const void *addr) nogil


# ---- errno ------------------------------------------------------------------

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EAGAIN
        EINTR
        ETIMEDOUT
        EINVAL


# ---- time -------------------------------------------------------------------

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    enum:
        CLOCK_MONOTONIC
        CLOCK_THREAD_CPUTIME_ID
    int clock_gettime(clockid_t clk, timespec *ts)


# ---- unistd / fcntl / stat ----------------------------------------------------

cdef extern from "<unistd.h>" nogil:
    ctypedef long off_t
    long syscall(long number, ...)
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)
    int close(int fd)
    int dup(int fd)
    int ftruncate(int fd, off_t length)
    long sysconf(int name)
    enum:
        _SC_PAGESIZE

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t readv(int fd, const iovec *iov, int iovcnt)
    ssize_t writev(int fd, const iovec *iov, int iovcnt)

cdef extern from "<sys/socket.h>" nogil:   # datagram batches (sendmmsg), packet sockets
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int setsockopt(int fd, int level, int name, const void *value, unsigned int length)
    int getsockopt(int fd, int level, int name, void *value, unsigned int *length)

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat:
        off_t st_size
    int fstat(int fd, stat *buf)


# ---- memory mapping and memfd ---------------------------------------------------

cdef extern from "<sys/mman.h>" nogil:
    void *MAP_FAILED
    enum:
        PROT_NONE
        PROT_READ
        PROT_WRITE
        MAP_SHARED
        MAP_PRIVATE
        MAP_ANONYMOUS
        MAP_FIXED
        MAP_NORESERVE
        MAP_POPULATE
        MFD_CLOEXEC
        MFD_HUGETLB
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
    int munmap(void *addr, size_t length)
    int memfd_create(const char *name, unsigned int flags)


# ---- futex ----------------------------------------------------------------------

cdef extern from "<sys/syscall.h>" nogil:
    enum:
        SYS_futex

cdef extern from "<linux/futex.h>" nogil:
    # Deliberately no FUTEX_PRIVATE_FLAG anywhere in misdtcp: the words live in
    # MAP_SHARED memory used by several processes, and a private futex is keyed
    # by (mm, address), so a wake from another process would never find the sleeper.
    enum:
        FUTEX_WAIT
        FUTEX_WAKE


# ---- CPU affinity ------------------------------------------------------------------

cdef extern from "<sched.h>" nogil:
    ctypedef struct cpu_set_t:
        pass
    ctypedef int pid_t
    void CPU_ZERO(cpu_set_t *set)
    void CPU_SET(int cpu, cpu_set_t *set)
    bint CPU_ISSET(int cpu, cpu_set_t *set)
    int sched_setaffinity(pid_t pid, size_t cpusetsize, const cpu_set_t *mask)
    int sched_getaffinity(pid_t pid, size_t cpusetsize, cpu_set_t *mask)
    int sched_getcpu()
    int sched_yield()


cdef extern from "<poll.h>" nogil:   # the sequencer's idle sleep on the TUN and its wake-up eventfd
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN


# ---- small inline wrappers -------------------------------------------------------

cdef inline uint64_t monotonic_ns() noexcept nogil:
    """CLOCK_MONOTONIC in nanoseconds (the sequencer's time stamp, wait deadlines)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline uint64_t thread_cpu_ns() noexcept nogil:
    """CPU time of the calling thread in nanoseconds (a worker's busy time)."""
    cdef timespec ts
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline int futex_wait(uint32_t *word, uint32_t expected, uint64_t timeout_ns) noexcept nogil:
    """Sleep while ``*word == expected``, at most ``timeout_ns`` (relative).

    Returns 0 when woken, otherwise the errno: EAGAIN (the word had already
    changed: the kernel compares and queues atomically, which is what makes the
    wait free of lost wake-ups), ETIMEDOUT, or EINTR (a signal).
    """
    cdef timespec ts
    ts.tv_sec = <time_t>(timeout_ns // 1000000000ULL)
    ts.tv_nsec = <long>(timeout_ns % 1000000000ULL)
    if syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, <void *>0, 0) == 0:
        return 0
    return errno


cdef inline int futex_wake(uint32_t *word, int count) noexcept nogil:
    """Wake up to ``count`` sleepers on ``word``; returns how many were woken."""
    return <int>syscall(SYS_futex, word, FUTEX_WAKE, count, <void *>0, <void *>0, 0)
