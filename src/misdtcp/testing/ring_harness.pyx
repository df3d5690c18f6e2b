# cython: language_level=3
"""Stress and benchmark loops for the broadcast ring and the message queues,
in C: a Python loop would measure Python.  Used by tests/test_ring.py and
bench/ring_hop.py; nothing in the stack imports this module.

Producers stamp each entry's data with a pattern derived from its seqno, so
consumers in other processes verify every byte and the order without sharing
anything but the ring.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from misdtcp._system cimport monotonic_ns
from misdtcp._ring cimport (RING_MAX_DATA, BroadcastRing, Descriptor, Ring, ring_available, ring_claim,
                            ring_commit, ring_consumer_cursor, ring_data, ring_data_grow, ring_data_tail,
                            ring_descriptor, ring_release, ring_stop, ring_wait_from, ring_wait_space)
from misdtcp.runtime.queue cimport Message, MessageQueue, mq_post, mq_try_take, mq_wait
from misdtcp.runtime.vocabulary cimport REC_FRAME, REC_STOP, REQ_SEND
from misdtcp.runtime.wait cimport WAIT_READY, WAIT_STOPPED, WAIT_TIMEOUT, WAIT_SPIN, WAIT_TIMEOUT_NS


cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    # splitmix64 finalizer: a cheap bijective scramble.
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline uint32_t _stress_length(uint64_t seed, uint64_t seqno) noexcept nogil:
    """Data length of stress entry ``seqno``: 0..4096, one in 64 up to a GSO super-frame."""
    cdef uint64_t h = _mix64(seed ^ (seqno * 0x9E3779B97F4A7C15ULL))
    if (h & 63) == 0:
        return <uint32_t>(4097 + (h >> 8) % (RING_MAX_DATA - 4096))
    return <uint32_t>((h >> 8) % 4097)


cdef inline uint32_t _stress_batch(uint64_t seed, uint64_t seqno) noexcept nogil:
    """How many entries the producer keeps pending before it commits: 1..16."""
    return <uint32_t>(1 + (_mix64(seed * 31 + seqno) >> 11) % 16)


cdef inline void _stress_fill(char *data, uint32_t length, uint64_t seqno) noexcept nogil:
    # Word i of entry s is mix(s) + i * golden: any misplaced, stale or torn
    # word shows.  Data positions are not aligned: words go through memcpy.
    cdef uint64_t base = _mix64(seqno + 1)
    cdef uint32_t n = length >> 3, i
    cdef uint64_t word
    for i in range(n):
        word = base + i * 0x9E3779B97F4A7C15ULL
        memcpy(data + (i << 3), &word, 8)
    if length & 7:
        word = base + n * 0x9E3779B97F4A7C15ULL
        memcpy(data + (n << 3), &word, length & 7)


cdef inline bint _stress_check(const char *data, uint32_t length, uint64_t seqno) noexcept nogil:
    cdef uint64_t base = _mix64(seqno + 1)
    cdef uint32_t n = length >> 3, i
    cdef uint64_t bad = 0, word, expected
    for i in range(n):
        memcpy(&word, data + (i << 3), 8)
        bad |= word ^ (base + i * 0x9E3779B97F4A7C15ULL)
    if length & 7:
        expected = base + n * 0x9E3779B97F4A7C15ULL
        bad |= <uint64_t>(memcmp(data + (n << 3), &expected, length & 7) != 0)
    return bad == 0


def stress_length_of(uint64_t seed, uint64_t seqno):
    return _stress_length(seed, seqno)


def stress_produce(BroadcastRing ring, uint64_t count, uint64_t seed, uint32_t spin=WAIT_SPIN):
    """Publish ``count`` pattern entries, committed in seeded batches of 1..16,
    then one REC_STOP; returns how often it had to wait for room."""
    ring._check_open()
    cdef Ring *r = &ring.ring
    cdef uint64_t seqno
    cdef uint32_t length, batch = 0
    cdef Descriptor *d
    cdef uint64_t waits = 0
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        for seqno in range(count):
            length = _stress_length(seed, seqno)
            d = ring_claim(r, length)
            while d == NULL:
                ring_commit(r)                  # the consumers must see the pending ones to free room
                waits += 1
                if ring_wait_space(r, 1, length, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                d = ring_claim(r, length)
            if d == NULL:
                break
            d.kind = REC_FRAME
            d.seq = <uint32_t>seqno
            d.ack = <uint32_t>(seqno >> 32)
            d.window = <uint16_t>seqno
            d.now_ns = seed + seqno * 7
            d.length = length
            _stress_fill(ring_data_tail(r), length, seqno)
            ring_data_grow(r, length)
            batch += 1
            if batch >= _stress_batch(seed, seqno):
                ring_commit(r)
                batch = 0
        ring_commit(r)
        if ring_wait_space(r, 1, 0, spin, 10000000000ULL) != WAIT_STOPPED:
            d = ring_claim(r, 0)
            if d != NULL:
                d.kind = REC_STOP
                d.length = 0
                ring_commit(r)
    ring.busy -= 1
    return waits


def stress_consume(BroadcastRing ring, uint32_t consumer_id, uint64_t seed,
                   uint32_t spin=WAIT_SPIN, double idle_limit=20.0):
    """Verify every entry until REC_STOP.  Returns (entries, errors, first_bad_seqno).

    Checks: fields derived from the seqno, the length from the seed, data
    positions back to back (each entry's data starts where the previous one's
    ended), and the data pattern.  Gives up (counting one error) after
    ``idle_limit`` seconds without an entry, or on an entry whose data
    position is unreadable; giving up stops the ring, so the producer and
    the other consumers end instead of waiting for us forever."""
    ring._check_consumer(consumer_id)
    cdef Ring *r = &ring.ring
    cdef uint64_t seqno = ring_consumer_cursor(r, consumer_id)
    cdef uint64_t data_pos = r.ctl.consumers[consumer_id].data_cursor
    cdef uint64_t end, records = 0, errors = 0, batch
    cdef int64_t first_bad = -1
    cdef Descriptor *d
    cdef bint done = False, bad, gave_up = False
    cdef uint64_t idle_ns = <uint64_t>(idle_limit * 1e9), idle_since = 0
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while not done:
            end = ring_available(r)
            if end == seqno:
                if idle_since == 0:
                    idle_since = monotonic_ns()
                elif monotonic_ns() - idle_since > idle_ns:
                    errors += 1
                    gave_up = True
                    break
                if ring_wait_from(r, consumer_id, seqno, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            idle_since = 0
            batch = 0
            while seqno != end:
                d = ring_descriptor(r, seqno)
                batch += 1
                if d.kind == REC_STOP:
                    seqno += 1
                    data_pos = d.data_end
                    done = True
                    break
                bad = d.kind != REC_FRAME or d.seq != <uint32_t>seqno or d.ack != <uint32_t>(seqno >> 32)
                bad = bad or d.window != <uint16_t>seqno or d.now_ns != seed + seqno * 7
                bad = bad or d.length != _stress_length(seed, seqno)
                bad = bad or d.data != data_pos or d.data_end != d.data + d.length
                if not bad:
                    bad = not _stress_check(ring_data(r, d.data), d.length, seqno)
                if bad:
                    errors += 1
                    if first_bad < 0:
                        first_bad = <int64_t>seqno
                    if d.data_end - data_pos > r.data_size:
                        # Unreadable data positions: nothing after this can be trusted.
                        done = gave_up = True
                        break
                records += 1
                data_pos = d.data_end
                seqno += 1
            ring_release(r, consumer_id, seqno, data_pos, batch)
        if gave_up:
            ring_stop(r)
    ring.busy -= 1
    return records, errors, first_bad


def bench_produce(BroadcastRing ring, uint64_t count, uint32_t data_len, uint32_t batch=16,
                  uint32_t spin=WAIT_SPIN):
    """Publish ``count`` entries with ``data_len`` bytes each (written in full,
    as a device read would), committed ``batch`` at a time, then REC_STOP.
    Returns (start_ns, end_ns)."""
    ring._check_open()
    cdef Ring *r = &ring.ring
    cdef uint64_t i, start, finish
    cdef Descriptor *d
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        start = monotonic_ns()
        for i in range(count):
            d = ring_claim(r, data_len)
            while d == NULL:
                ring_commit(r)
                if ring_wait_space(r, 1, data_len, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                d = ring_claim(r, data_len)
            if d == NULL:
                break
            d.kind = REC_FRAME
            d.length = data_len
            d.now_ns = i
            memset(ring_data_tail(r), <int>(i & 0xff), data_len)
            ring_data_grow(r, data_len)
            if (i + 1) % batch == 0:
                ring_commit(r)
        ring_commit(r)
        finish = monotonic_ns()
        if ring_wait_space(r, 1, 0, spin, 10000000000ULL) != WAIT_STOPPED:
            d = ring_claim(r, 0)
            if d != NULL:
                d.kind = REC_STOP
                d.length = 0
                ring_commit(r)
    ring.busy -= 1
    return start, finish


def bench_consume(BroadcastRing ring, uint32_t consumer_id, bint touch_data=True, uint32_t spin=WAIT_SPIN):
    """Consume until REC_STOP, reading each descriptor and (``touch_data``)
    the first and last byte of its data.  Returns (first_entry_ns, end_ns,
    entries, checksum)."""
    ring._check_consumer(consumer_id)
    cdef Ring *r = &ring.ring
    cdef uint64_t seqno = ring_consumer_cursor(r, consumer_id)
    cdef uint64_t end, records = 0, batch, checksum = 0, first = 0, data_end = 0
    cdef Descriptor *d
    cdef char *data
    cdef bint done = False
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while not done:
            end = ring_available(r)
            if end == seqno:
                if ring_wait_from(r, consumer_id, seqno, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            if first == 0:
                first = monotonic_ns()
            batch = 0
            while seqno != end:
                d = ring_descriptor(r, seqno)
                batch += 1
                seqno += 1
                data_end = d.data_end
                if d.kind == REC_STOP:
                    done = True
                    break
                if touch_data and d.length:
                    data = ring_data(r, d.data)
                    checksum += <uint8_t>data[0] + <uint8_t>data[d.length - 1]
                checksum += d.length
                records += 1
            ring_release(r, consumer_id, seqno, data_end, batch)
    ring.busy -= 1
    return first, monotonic_ns(), records, checksum


def queue_stress_post(MessageQueue queue, uint32_t poster_id, uint64_t count,
                      uint32_t spin=WAIT_SPIN):
    """Post ``count`` messages (handle = poster_id, a = 0..count-1); returns timeouts seen."""
    queue._check_open()
    cdef Message message
    cdef uint64_t i, timeouts = 0
    cdef int rc
    message.kind = REQ_SEND
    message.handle = poster_id
    message.record = 0
    message.index = 0
    queue.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        for i in range(count):
            message.a = i
            message.b = _mix64(i ^ (<uint64_t>poster_id << 40))
            message.c = i * 3
            rc = mq_post(&queue.queue, &message, spin, WAIT_TIMEOUT_NS)
            while rc == WAIT_TIMEOUT:
                timeouts += 1
                rc = mq_post(&queue.queue, &message, spin, WAIT_TIMEOUT_NS)
            if rc == WAIT_STOPPED:
                break
    queue.busy -= 1
    return timeouts


def queue_stress_drain(MessageQueue queue, uint32_t n_posters, uint64_t per_poster,
                       uint32_t spin=WAIT_SPIN, double idle_limit=20.0):
    """Take n_posters * per_poster messages, checking each poster's sequence is
    exactly 0, 1, 2, ... with intact fields.  Returns (taken, errors)."""
    queue._check_open()
    if n_posters > 64:
        raise ValueError("at most 64 posters")
    cdef uint64_t next_expected[64]
    cdef uint64_t total = <uint64_t>n_posters * per_poster, taken = 0, errors = 0
    cdef uint64_t idle_ns = <uint64_t>(idle_limit * 1e9), idle_since = 0
    cdef Message message
    cdef uint32_t p
    memset(next_expected, 0, sizeof(next_expected))
    queue.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while taken < total:
            if not mq_try_take(&queue.queue, &message):
                if idle_since == 0:
                    idle_since = monotonic_ns()
                elif monotonic_ns() - idle_since > idle_ns:
                    errors += 1
                    break
                if mq_wait(&queue.queue, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            idle_since = 0
            taken += 1
            p = message.handle
            if (message.kind != REQ_SEND or p >= n_posters or message.a != next_expected[p]
                    or message.b != _mix64(message.a ^ (<uint64_t>p << 40))
                    or message.c != message.a * 3):
                errors += 1
            if p < n_posters:
                next_expected[p] = message.a + 1
    queue.busy -= 1
    return taken, errors
