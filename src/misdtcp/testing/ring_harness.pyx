# cython: language_level=3
"""Stress and benchmark loops for the broadcast ring and the message queues,
in C: a Python loop would measure Python.  Used by tests/test_ring.py and
bench/ring_hop.py; nothing in the stack imports this module.

Producers stamp each record's payload with a pattern derived from its seqno,
so consumers in other processes verify every byte and the order without
sharing anything but the ring.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from misdtcp._system cimport monotonic_ns
from misdtcp._ring cimport (RECORD_ALIGN, RING_MAX_FRAME, BroadcastRing, Ring, RecordHeader, record_payload, ring_available, ring_commit,
                            ring_consumer_cursor, ring_next_position, ring_next_seqno, ring_record_at,
                            ring_release, ring_reserve, ring_stop, ring_try_reserve, ring_wait, ring_wait_space)
from misdtcp.runtime.queue cimport Message, MessageQueue, mq_post, mq_try_take, mq_wait
from misdtcp.runtime.vocabulary cimport REC_FRAME, REC_STOP, REQ_SEND
from misdtcp.runtime.wait cimport WAIT_READY, WAIT_STOPPED, WAIT_TIMEOUT, WAIT_SPIN, WAIT_TIMEOUT_NS


cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    # splitmix64 finalizer: a cheap bijective scramble.
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline uint32_t _stress_length(uint64_t seed, uint64_t seqno) noexcept nogil:
    """Payload length of stress record ``seqno``: 1..4096, one in 64 up to 65548."""
    cdef uint64_t h = _mix64(seed ^ (seqno * 0x9E3779B97F4A7C15ULL))
    if (h & 63) == 0:
        return <uint32_t>(4097 + (h >> 8) % (RING_MAX_FRAME - 4096))
    return <uint32_t>(1 + (h >> 8) % 4096)


cdef inline void _stress_fill(char *payload, uint32_t length, uint64_t seqno) noexcept nogil:
    # Word i of record s is mix(s) + i * golden: any misplaced, stale or torn
    # word shows.  The payload is 8-aligned (8-aligned record + 32-byte header).
    cdef uint64_t base = _mix64(seqno + 1)
    cdef uint64_t *words = <uint64_t *>payload
    cdef uint32_t n = length >> 3, i
    cdef uint64_t last
    for i in range(n):
        words[i] = base + i * 0x9E3779B97F4A7C15ULL
    if length & 7:
        last = base + n * 0x9E3779B97F4A7C15ULL
        memcpy(payload + (n << 3), &last, length & 7)


cdef inline bint _stress_check(const char *payload, uint32_t length, uint64_t seqno) noexcept nogil:
    cdef uint64_t base = _mix64(seqno + 1)
    cdef const uint64_t *words = <const uint64_t *>payload
    cdef uint32_t n = length >> 3, i
    cdef uint64_t bad = 0, last
    for i in range(n):
        bad |= words[i] ^ (base + i * 0x9E3779B97F4A7C15ULL)
    if length & 7:
        last = base + n * 0x9E3779B97F4A7C15ULL
        bad |= <uint64_t>(memcmp(payload + (n << 3), &last, length & 7) != 0)
    return bad == 0


def stress_length_of(uint64_t seed, uint64_t seqno):
    return _stress_length(seed, seqno)


def stress_produce(BroadcastRing ring, uint64_t count, uint64_t seed,
                    uint32_t spin=WAIT_SPIN):
    """Publish ``count`` pattern records then one REC_STOP; returns the wait counts."""
    ring._check_open()
    cdef Ring *r = &ring.ring
    cdef uint64_t seqno
    cdef uint32_t length
    cdef char *payload
    cdef uint64_t waits = 0
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        for seqno in range(count):
            length = _stress_length(seed, seqno)
            payload = ring_try_reserve(r, length)
            while payload == NULL:
                waits += 1
                if ring_wait_space(r, length, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                payload = ring_try_reserve(r, length)
            if payload == NULL:
                break
            _stress_fill(payload, length, ring_next_seqno(r))
            ring_commit(r, length, REC_FRAME, <uint16_t>seqno, <uint16_t>(length & 0xffff),
                        <uint16_t>(seqno >> 16), <uint16_t>(seqno >> 32), seed + seqno * 7)
        payload = ring_reserve(r, 0)
        if payload != NULL:
            ring_commit(r, 0, REC_STOP, 0, 0, 0, 0, 0)
    ring.busy -= 1
    return waits


def stress_consume(BroadcastRing ring, uint32_t consumer_id, uint64_t seed,
                    uint32_t spin=WAIT_SPIN, double idle_limit=20.0):
    """Verify every record until REC_STOP.  Returns (records, errors, first_bad_seqno).

    Checks: seqnos contiguous from the consumer's first, 8-aligned positions,
    header fields, length from the seed, and the payload pattern.  Gives up
    (counting one error) after ``idle_limit`` seconds without a record, or on
    a record whose framing is unreadable; giving up stops the ring, so the
    producer and the other consumers end instead of waiting for us forever.
    """
    ring._check_consumer(consumer_id)
    cdef Ring *r = &ring.ring
    cdef uint64_t position = ring_consumer_cursor(r, consumer_id)
    cdef uint64_t end, expected = 0, records = 0, errors = 0, batch
    cdef int64_t first_bad = -1
    cdef RecordHeader *header
    cdef bint done = False, bad, gave_up = False
    cdef uint64_t idle_ns = <uint64_t>(idle_limit * 1e9), idle_since = 0
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while not done:
            end = ring_available(r, consumer_id)
            if end == position:
                if idle_since == 0:
                    idle_since = monotonic_ns()
                elif monotonic_ns() - idle_since > idle_ns:
                    errors += 1
                    gave_up = True
                    break
                if ring_wait(r, consumer_id, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            idle_since = 0
            batch = 0
            # Signed distance: a corrupt length overshooting `end` stops the loop.
            while <int64_t>(end - position) > 0:
                header = ring_record_at(r, position)
                batch += 1
                if header.kind == REC_STOP:
                    position = ring_next_position(header, position)
                    done = True
                    break
                bad = (position & (RECORD_ALIGN - 1)) != 0
                bad = bad or header.seqno != expected or header.kind != REC_FRAME
                bad = bad or header.length != _stress_length(seed, expected)
                bad = bad or header.flags != <uint16_t>expected
                bad = bad or header.now_ns != seed + expected * 7
                bad = bad or header.csum_start != <uint16_t>(expected >> 16)
                if not bad:
                    bad = not _stress_check(record_payload(header), header.length, expected)
                if bad:
                    errors += 1
                    if first_bad < 0:
                        first_bad = <int64_t>expected
                    if header.length > RING_MAX_FRAME:
                        # Unreadable framing: nothing after it can be trusted.
                        done = gave_up = True
                        break
                records += 1
                expected = header.seqno + 1
                position = ring_next_position(header, position)
            ring_release(r, consumer_id, position, batch)
        if gave_up:
            ring_stop(r)
    ring.busy -= 1
    return records, errors, first_bad


def bench_produce(BroadcastRing ring, uint64_t count, uint32_t payload_len,
                   uint32_t spin=WAIT_SPIN):
    """Publish ``count`` records of ``payload_len`` bytes (payload written in full,
    as the kernel's TUN read would) then REC_STOP.  Returns (start_ns, end_ns)."""
    ring._check_open()
    cdef Ring *r = &ring.ring
    cdef uint64_t i, start, finish
    cdef char *payload
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        start = monotonic_ns()
        for i in range(count):
            payload = ring_try_reserve(r, payload_len)
            while payload == NULL:
                if ring_wait_space(r, payload_len, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                payload = ring_try_reserve(r, payload_len)
            if payload == NULL:
                break
            memset(payload, <int>(i & 0xff), payload_len)
            ring_commit(r, payload_len, REC_FRAME, 0, 0, 0, 0, i)
        finish = monotonic_ns()
        payload = ring_reserve(r, 0)
        if payload != NULL:
            ring_commit(r, 0, REC_STOP, 0, 0, 0, 0, 0)
    ring.busy -= 1
    return start, finish


def bench_consume(BroadcastRing ring, uint32_t consumer_id, uint32_t spin=WAIT_SPIN):
    """Consume until REC_STOP, reading each header and the payload's first and
    last byte.  Returns (first_record_ns, end_ns, records, checksum)."""
    ring._check_consumer(consumer_id)
    cdef Ring *r = &ring.ring
    cdef uint64_t position = ring_consumer_cursor(r, consumer_id)
    cdef uint64_t end, records = 0, batch, checksum = 0, first = 0
    cdef RecordHeader *header
    cdef char *payload
    cdef bint done = False
    ring.busy += 1          # close() refuses while a thread is blocked in here
    with nogil:
        while not done:
            end = ring_available(r, consumer_id)
            if end == position:
                if ring_wait(r, consumer_id, spin, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
                    break
                continue
            if first == 0:
                first = monotonic_ns()
            batch = 0
            while position != end:
                header = ring_record_at(r, position)
                batch += 1
                if header.kind == REC_STOP:
                    done = True
                    position = ring_next_position(header, position)
                    break
                payload = record_payload(header)
                if header.length:
                    checksum += <uint8_t>payload[0] + <uint8_t>payload[header.length - 1]
                records += 1
                position = ring_next_position(header, position)
            ring_release(r, consumer_id, position, batch)
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
