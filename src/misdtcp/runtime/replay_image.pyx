# cython: language_level=3
"""Fast helpers for the replay frame source (the NIC-DMA model).

Payload bytes follow a pattern derived from the stream offset, so delivered
data can be checked anywhere without keeping a copy of the source;
`apply_descriptor` lets the replay source's reference replica follow the log
it builds.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp

from misdtcp._ring cimport BroadcastRing, Descriptor, Ring, ring_data, ring_descriptor, ring_release
from misdtcp._tcpcore cimport TcpCore, core_entry, core_frame, core_dropped, core_tick, core_peer6
from misdtcp.wire.descriptor cimport peer6_of
from misdtcp.runtime.executor cimport apply_request
from misdtcp.runtime.vocabulary cimport REC_SEGMENT, REC_FRAME, REC_DROPPED, REC_REQUEST, REC_TICK, REC_PEER6
from misdtcp.wire.vnet cimport VNET_HDR_LEN

# A prime period, so the pattern does not line up with any power-of-two
# buffer size, stripe or MSS.
cdef enum:
    PERIOD = 65521

cdef uint8_t PATTERN[PERIOD + 65536]
cdef bint _ready = False


cdef void _init_pattern() noexcept:
    global _ready
    cdef uint64_t i, x = 0x9e3779b97f4a7c15ULL
    for i in range(PERIOD):
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        PATTERN[i] = <uint8_t>(x >> 24)
    for i in range(65536):
        PATTERN[PERIOD + i] = PATTERN[i % PERIOD]
    _ready = True

_init_pattern()


def pattern(uint64_t offset, uint32_t length):
    """The payload bytes of stream [offset, offset + length)."""
    cdef bytearray out = bytearray(length)
    cdef uint8_t[::1] v = out
    cdef uint32_t done = 0, n
    cdef uint64_t o
    while done < length:
        o = (offset + done) % PERIOD
        n = length - done
        if n > 65536:
            n = 65536
        memcpy(&v[done], &PATTERN[o], n)
        done += n
    return bytes(out)


def check_pattern(const uint8_t[::1] data, uint64_t offset):
    """Index of the first byte of data that differs from the pattern at
    stream offset `offset`, or -1 when all match."""
    cdef uint64_t done = 0, n, o, i
    cdef uint64_t length = data.shape[0]
    cdef long long bad = -1
    with nogil:
        while done < length and bad < 0:
            o = (offset + done) % PERIOD
            n = length - done
            if n > 65536:
                n = 65536
            if memcmp(&data[done], &PATTERN[o], n) != 0:
                for i in range(n):
                    if data[done + i] != PATTERN[o + i]:
                        bad = <long long>(done + i)
                        break
            done += n
    return bad


def apply_descriptor(TcpCore core, BroadcastRing ring, uint64_t seqno):
    """Run log position `seqno` through `core` exactly as a worker with one
    replica would, and return the core's actions as Python tuples (the
    replay source's reference replica uses this to follow the log it builds)."""
    cdef Ring *rg = &ring.ring
    cdef const Descriptor *d = ring_descriptor(rg, seqno)
    cdef const uint8_t *p = <const uint8_t *>ring_data(rg, d.data)
    cdef const uint8_t *frame = NULL
    core.rx.nactions = 0
    if d.kind == REC_SEGMENT:
        core_entry(core.st, &core.rx, d)
        frame = p
    elif d.kind == REC_FRAME:
        frame = p + VNET_HDR_LEN
        core_frame(core.st, &core.rx, frame, d.length - VNET_HDR_LEN, d.frame_flags, d.gso_size, d.now_ns)
    elif d.kind == REC_DROPPED:
        core_dropped(core.st, &core.rx, d.reason, d.now_ns)
    elif d.kind == REC_PEER6:
        core_peer6(core.st, peer6_of(d))
    elif d.kind == REC_REQUEST:
        apply_request(core.st, &core.rx, p, d.now_ns)
    elif d.kind == REC_TICK:
        core_tick(core.st, &core.rx, d.now_ns)
    return core._drain(frame)


def action_bytes(BroadcastRing ring, uint64_t seqno, uint32_t offset, uint32_t length):
    """The bytes a Copy action of log position `seqno` refers to (its
    frame_offset counts from the payload of a REC_SEGMENT, from the IP
    header of a REC_FRAME): for checking copies made from the log."""
    cdef Ring *rg = &ring.ring
    cdef const Descriptor *d = ring_descriptor(rg, seqno)
    cdef const char *p = ring_data(rg, d.data)
    if d.kind == REC_FRAME:
        p += VNET_HDR_LEN
    return p[offset:offset + length]


def release_to(BroadcastRing ring, uint32_t consumer_id, uint64_t seqno):
    """Release every log position before `seqno` for `consumer_id` (a Python
    consumer that applied them with apply_descriptor)."""
    cdef Ring *rg = &ring.ring
    cdef uint64_t start = rg.ctl.consumers[consumer_id].cursor
    if seqno == start:
        return
    ring_release(rg, consumer_id, seqno, ring_descriptor(rg, seqno - 1).data_end, seqno - start)
