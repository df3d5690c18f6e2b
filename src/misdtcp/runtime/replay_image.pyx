# cython: language_level=3
"""Fast helpers for the replay frame source (the NIC-DMA model).

The replay source builds a synthetic connection's log once as an *image*: a
sequence of ring records laid out exactly as the sequencer would publish
them.  `load_image` places it in a fresh ring's data area and publishes it
in one step, as a NIC that has DMA'd frames into memory would, so a
benchmark measures the stack's own work and not frame generation.

Payload bytes follow a pattern derived from the stream offset, so delivered
data can be checked anywhere without keeping a copy of the source.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp

from misdtcp._ring cimport BroadcastRing, Ring, RecordHeader, ring_record_at, ring_next_position
from misdtcp._system cimport atomic_store_release_u64

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


def load_image(BroadcastRing ring, const uint8_t[::1] image, uint64_t records):
    """Copy a log image to the start of an unused ring and publish it."""
    cdef Ring *rg = &ring.ring
    if rg.ctl.producer.cursor != 0:
        raise ValueError("the ring has already been written to")
    if <uint64_t>image.shape[0] > rg.size:
        raise ValueError(f"log image of {image.shape[0]} bytes does not fit a ring of {rg.size}")
    memcpy(rg.data, &image[0], image.shape[0])
    rg.ctl.producer.next_seqno = records
    atomic_store_release_u64(&rg.ctl.producer.cursor, image.shape[0])


def image_records(const uint8_t[::1] image):
    """(kind, length, seqno, now_ns) of every record in an image (tests)."""
    cdef uint64_t pos = 0
    cdef const RecordHeader *r
    out = []
    while pos < <uint64_t>image.shape[0]:
        r = <const RecordHeader *>&image[pos]
        out.append((r.kind, r.length, r.seqno, r.now_ns))
        pos += (32 + r.length + 7) & ~(<uint64_t>7)
    return out
