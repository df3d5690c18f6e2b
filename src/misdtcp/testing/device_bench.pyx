# cython: language_level=3
"""The device's own ceiling, in C (a Python loop would measure Python):
how fast one process can read frames from a TUN, fed by the kernel as fast
as it can send datagrams.  Used by bench/tun_ceiling.py; nothing in the
stack imports this module.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from misdtcp._system cimport iovec, mmsghdr, monotonic_ns, poll, pollfd, POLLIN, read, sendmmsg

cdef enum:
    READ_BUFFER = 65536 + 64
    MAX_BATCH = 256


def read_for(int fd, double seconds):
    """Read frames from the non-blocking `fd` for `seconds` (poll()ing while
    it is empty, as the sequencer does).  Returns a dict: frames, bytes (what
    read() returned, vnet headers included), ns, polls."""
    cdef uint8_t *buf = <uint8_t *>malloc(READ_BUFFER)
    cdef uint64_t frames = 0, nbytes = 0, polls = 0, start, end, now
    cdef long n
    cdef pollfd p
    if buf == NULL:
        raise MemoryError()
    p.fd = fd
    p.events = POLLIN
    with nogil:
        start = monotonic_ns()
        end = start + <uint64_t>(seconds * 1e9)
        now = start
        while now < end:
            n = read(fd, buf, READ_BUFFER)
            if n > 0:
                frames += 1
                nbytes += <uint64_t>n
                if frames % 64 == 0:
                    now = monotonic_ns()
                continue
            polls += 1
            poll(&p, 1, 1)
            now = monotonic_ns()
        now = monotonic_ns()
    free(buf)
    return {"frames": frames, "bytes": nbytes, "ns": now - start, "polls": polls}


def udp_blast(int sock_fd, double seconds, uint32_t payload=1472, uint32_t batch=64):
    """Send datagrams of `payload` bytes on the connected UDP socket `sock_fd`
    with sendmmsg, `batch` per call, for `seconds`.  Returns (datagrams
    sent, calls that found the socket full)."""
    cdef uint8_t *data = <uint8_t *>malloc(payload if payload else 1)
    cdef mmsghdr *msgs = <mmsghdr *>malloc(MAX_BATCH * sizeof(mmsghdr))
    cdef iovec *iov = <iovec *>malloc(MAX_BATCH * sizeof(iovec))
    cdef uint64_t sent = 0, full = 0, end
    cdef uint32_t i
    cdef int r
    if data == NULL or msgs == NULL or iov == NULL:
        free(data); free(msgs); free(iov)
        raise MemoryError()
    if batch > MAX_BATCH:
        batch = MAX_BATCH
    memset(data, 0x5a, payload)
    memset(msgs, 0, MAX_BATCH * sizeof(mmsghdr))
    for i in range(batch):
        iov[i].iov_base = data
        iov[i].iov_len = payload
        msgs[i].msg_hdr.msg_iov = &iov[i]
        msgs[i].msg_hdr.msg_iovlen = 1
    with nogil:
        end = monotonic_ns() + <uint64_t>(seconds * 1e9)
        while monotonic_ns() < end:
            r = sendmmsg(sock_fd, msgs, batch, 0)
            if r > 0:
                sent += <uint64_t>r
            else:
                full += 1
    free(data)
    free(msgs)
    free(iov)
    return sent, full
