"""The broadcast ring, command queue and mirrored buffers of the MISD runtime.

Single-process tests pin down the record format, ordering, back-pressure and
the mirrored mapping; the cross-process tests run more processes than this
machine has cores, so they only pass if the futex sleep/wake path is right.
"""
import ctypes
import multiprocessing
import os
import signal
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from misdtcp import _ring
from misdtcp._ring import BroadcastRing, record_bytes
from misdtcp.runtime.queue import MessageQueue
from misdtcp.runtime.shm import MirroredBuffer
from misdtcp.runtime.vocabulary import Record, Request
from misdtcp.runtime.wait import WaitStatus
from misdtcp.testing import ring_harness

PAGE = os.sysconf("SC_PAGESIZE")
FORK = multiprocessing.get_context("fork")


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def memfd_mappings():
    with open("/proc/self/maps") as maps:
        return [line for line in maps if "memfd:misdtcp" in line]


def run_children(targets, timeout):
    """Start one forked process per (function, args); return their results in order."""
    results = FORK.SimpleQueue()

    def child(index, function, args):
        # Die with the test process even if it is killed outright, so a hung
        # run never leaves spinning orphans behind (PR_SET_PDEATHSIG = 1).
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        try:
            results.put((index, function(*args)))
        except BaseException as error:  # report, never hang the parent
            results.put((index, error))

    processes = [FORK.Process(target=child, args=(i, f, a)) for i, (f, a) in enumerate(targets)]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + timeout
        collected = {}
        while len(collected) < len(processes):
            if results.empty():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"children still running after {timeout}s")
                if any(p.exitcode not in (None, 0) for p in processes):
                    time.sleep(0.2)
                    if results.empty():
                        raise RuntimeError([p.exitcode for p in processes])
                time.sleep(0.01)
                continue
            index, value = results.get()
            if isinstance(value, BaseException):
                raise value
            collected[index] = value
        return [collected[i] for i in range(len(processes))]
    finally:
        for process in processes:
            process.join(timeout=1)
            if process.is_alive():
                process.kill()
                process.join()


# ---- records: format, order, alignment --------------------------------------------

def test_records_come_out_in_order_with_their_header_fields():
    with BroadcastRing(PAGE * 4, n_consumers=1) as ring:
        for i in range(10):
            seqno = ring.publish(bytes([i]) * i, Record.FRAME, flags=i, gso_size=1448,
                                 csum_start=34, csum_offset=16, now_ns=1000 + i)
            assert seqno == i
        ring.publish(b"", Record.TICK, now_ns=2000)
        records = ring.read(0)
    assert [r.seqno for r in records] == list(range(11))
    for i, record in enumerate(records[:10]):
        assert record.kind == Record.FRAME
        assert record.payload == bytes([i]) * i
        assert (record.flags, record.gso_size, record.csum_start, record.csum_offset) == (i, 1448, 34, 16)
        assert record.now_ns == 1000 + i
    assert records[10].kind == Record.TICK and records[10].now_ns == 2000


def test_every_record_starts_8_aligned_after_a_32_byte_header():
    assert _ring.HEADER_SIZE == 32
    assert [record_bytes(n) for n in (0, 1, 7, 8, 9, 1500)] == [32, 40, 40, 40, 48, 1536]
    with BroadcastRing(PAGE * 4, n_consumers=1) as ring:
        position = 0
        for length in (0, 1, 3, 8, 13, 64, 1499):
            ring.publish(b"x" * length)
            position += record_bytes(length)
            assert ring.producer_cursor == position
            assert position % 8 == 0


def test_batch_read_takes_everything_available_and_release_moves_the_cursor():
    with BroadcastRing(PAGE * 4, n_consumers=2) as ring:
        for i in range(5):
            ring.publish(b"%d" % i)
        assert len(ring.read(0)) == 5
        assert ring.read(0) == []
        assert [r.payload for r in ring.read(1, max_records=2)] == [b"0", b"1"]
        assert [r.payload for r in ring.read(1)] == [b"2", b"3", b"4"]
        assert ring.consumer_cursor(0) == ring.consumer_cursor(1) == ring.producer_cursor
        counters = ring.counters()
        assert counters["producer"]["records"] == 5
        assert [c["records"] for c in counters["consumers"]] == [5, 5]


# ---- mirrored memory -----------------------------------------------------------------

def test_mirrored_buffer_range_across_the_end_is_one_contiguous_view():
    with MirroredBuffer(PAGE) as buffer:
        view = buffer.view(PAGE - 3, 6)
        view[:] = b"abcdef"
        assert bytes(buffer.view(PAGE - 3, 6)) == b"abcdef"
        assert bytes(buffer.view(0, 3)) == b"def"               # the same bytes, seen at the start
        assert bytes(buffer.view(5 * PAGE - 3, 6)) == b"abcdef"  # stream offsets wrap modulo the size
        view.release()


def test_mirrored_buffer_view_is_zero_copy():
    with MirroredBuffer(PAGE * 2) as buffer:
        view = buffer.view(100, 10)
        buffer.view(100, 10)[:] = b"0123456789"
        assert bytes(view) == b"0123456789"
        view.release()


def test_ring_record_straddling_the_end_of_the_data_area_reads_contiguously():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        ring.publish(b"a" * (PAGE - 64 - 32))     # leaves 64 bytes before the end
        ring.read(0)
        payload = bytes(range(256)) * 4
        ring.publish(payload)                     # header at S-64, payload crosses S
        (record,) = ring.read(0)
        assert record.payload == payload
        assert ring.producer_cursor > PAGE


def test_buffer_size_must_be_a_power_of_two_of_pages():
    with pytest.raises(ValueError):
        MirroredBuffer(PAGE * 3)
    with pytest.raises(ValueError):
        BroadcastRing(1000)


def test_close_is_refused_while_a_view_is_alive():
    buffer = MirroredBuffer(PAGE)
    view = buffer.view(0, 10)
    with pytest.raises(BufferError):
        buffer.close()
    view.release()
    buffer.close()
    assert buffer.closed
    with pytest.raises(ValueError):
        buffer.view(0, 1)


# ---- producer API: reserve / commit, back-pressure ------------------------------------

def test_reserve_then_commit_publishes_only_the_committed_length():
    with BroadcastRing(PAGE * 2, n_consumers=1) as ring:
        area = ring.try_reserve(2000)
        area[:5] = b"hello"
        assert ring.read(0) == []                              # nothing visible before commit
        area.release()
        assert ring.commit(5, Record.FRAME, now_ns=7) == 0
        (record,) = ring.read(0)
        assert record.payload == b"hello" and record.now_ns == 7
        assert ring.producer_cursor == record_bytes(5)


def test_commit_needs_a_reserve_and_must_fit_it():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        with pytest.raises(RuntimeError):
            ring.commit(0)
        ring.try_reserve(16).release()
        with pytest.raises(ValueError):
            ring.commit(17)
        ring.commit(16)
        with pytest.raises(ValueError):
            ring.try_reserve(PAGE)                            # header + PAGE > ring


def test_producer_cannot_reserve_while_the_slowest_consumer_is_behind():
    with BroadcastRing(PAGE, n_consumers=2) as ring:
        published = 0
        while ring.publish(b"x" * 100, block=False) is not None:
            published += 1
        assert published == PAGE // record_bytes(100)
        assert ring.try_reserve(100) is None
        assert len(ring.read(0)) == published                 # one consumer catches up...
        assert ring.try_reserve(100) is None                  # ...the other still holds the space
        ring.read(1, max_records=1)
        area = ring.try_reserve(100)                          # exactly one record's room freed
        assert area is not None
        area.release()
        ring.commit(100)
        assert ring.try_reserve(100) is None
        assert ring.read(1)[-1].seqno == published            # nothing was overwritten
        assert ring.read(0)[0].seqno == published


def test_wait_space_times_out_then_succeeds_after_release():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        while ring.publish(b"y" * 500, block=False) is not None:
            pass
        assert ring.wait_space(500, spin=10, timeout=0.02) == WaitStatus.TIMEOUT
        ring.read(0)
        assert ring.wait_space(500, spin=10, timeout=0.02) == WaitStatus.READY
        counters = ring.counters()["producer"]
        assert counters["full_waits"] >= 1 and counters["timeouts"] == 1


# ---- waiting, stop ---------------------------------------------------------------------

def test_consumer_wait_times_out_without_records():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        started = time.monotonic()
        assert ring.wait(0, spin=10, timeout=0.05) == WaitStatus.TIMEOUT
        assert 0.04 < time.monotonic() - started < 1.0
        assert ring.counters()["consumers"][0]["timeouts"] == 1


def in_thread(function, *args):
    """Run function(*args) in a thread; returns (thread, list that receives the result)."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(function(*args)))
    thread.start()
    return thread, outcome


@pytest.mark.timeout(30)
def test_a_sleeping_consumer_is_woken_by_a_publish():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        waiter, outcome = in_thread(ring.wait, 0, 0, 5.0)
        try:
            time.sleep(0.2)                                   # let it reach FUTEX_WAIT
            started = time.monotonic()
            ring.publish(b"wake up")
            waiter.join(timeout=2)
        finally:
            ring.stop()                                       # never unmap under a waiter
            waiter.join()
        assert outcome == [WaitStatus.READY]
        assert time.monotonic() - started < 1.0
        counters = ring.counters()
        assert counters["consumers"][0]["sleeps"] >= 1
        assert counters["producer"]["wakes"] == 1
        ring.publish(b"no sleeper now")
        assert ring.counters()["producer"]["wakes"] == 1      # no syscall without a sleeper


@pytest.mark.timeout(30)
def test_stop_wakes_sleepers_but_consumers_drain_first():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        waiter, outcome = in_thread(ring.wait, 0, 0, 5.0)
        time.sleep(0.2)
        started = time.monotonic()
        ring.stop()
        waiter.join()
        assert time.monotonic() - started < 1.0
        assert outcome == [WaitStatus.STOPPED] and ring.stopped
        assert ring.wait_space(16, spin=0, timeout=1.0) == WaitStatus.READY
        while ring.publish(b"z" * 64, block=False) is not None:
            pass
        started = time.monotonic()
        assert ring.publish(b"z" * 64, block=True) is None    # full and stopped: no blocking
        assert ring.wait_space(64, spin=0, timeout=1.0) == WaitStatus.STOPPED
        assert time.monotonic() - started < 0.5


@pytest.mark.timeout(30)
def test_close_refuses_while_a_thread_is_blocked_in_a_wait():
    ring = BroadcastRing(PAGE, n_consumers=1)
    queue = MessageQueue(2)
    ring_waiter, _ = in_thread(ring.wait, 0, 0, 5.0)
    queue_waiter, _ = in_thread(queue.wait, 0, 5.0)
    time.sleep(0.1)
    with pytest.raises(RuntimeError):
        ring.close()
    with pytest.raises(RuntimeError):
        queue.close()
    ring.stop()
    queue.stop()
    ring_waiter.join()
    queue_waiter.join()
    ring.close()
    queue.close()


def test_records_published_before_stop_are_still_delivered():
    with BroadcastRing(PAGE, n_consumers=1) as ring:
        ring.publish(b"last words")
        ring.stop()
        assert ring.wait(0, spin=0, timeout=1.0) == WaitStatus.READY
        assert ring.read(0)[0].payload == b"last words"
        assert ring.wait(0, spin=0, timeout=1.0) == WaitStatus.STOPPED


# ---- sharing: from_fd ----------------------------------------------------------------------

def test_from_fd_maps_the_same_ring_memory():
    with BroadcastRing(PAGE * 2, n_consumers=3) as ring, BroadcastRing.from_fd(ring.fileno()) as other:
        assert (other.size, other.n_consumers) == (PAGE * 2, 3)
        ring.publish(b"shared")
        assert other.read(2)[0].payload == b"shared"
        assert ring.consumer_cursor(2) == other.producer_cursor


def test_from_fd_rejects_memory_that_is_not_a_ring():
    with MirroredBuffer(PAGE * 4) as buffer:
        with pytest.raises(ValueError):
            BroadcastRing.from_fd(buffer.fileno())
        with pytest.raises(ValueError):
            MessageQueue.from_fd(buffer.fileno())


def _attach_through_proc(kind, path, expected):
    """Runs in a spawned (not forked) interpreter: nothing is inherited but a path."""
    from misdtcp import _ring as ring_module
    from misdtcp.runtime import queue as queue_module
    from misdtcp.runtime import shm as shm_module

    fd = os.open(path, os.O_RDWR)
    try:
        if kind == "buffer":
            with shm_module.MirroredBuffer.from_fd(fd) as buffer:
                got = bytes(buffer.view(0, len(expected)))
                buffer.view(PAGE - 1, 2)[:] = b"!?"
            return got
        if kind == "ring":
            with ring_module.BroadcastRing.from_fd(fd) as ring:
                got = ring.read(0)[0].payload
                ring.publish(b"reply")
            return got
        with queue_module.MessageQueue.from_fd(fd) as queue:
            queue.post(Request.CLOSE, 9, 1, 2, 3)
        return b""
    finally:
        os.close(fd)


@pytest.mark.timeout(60)
def test_another_process_maps_buffer_ring_and_queue_from_the_fd():
    spawn = multiprocessing.get_context("spawn")
    buffer = MirroredBuffer(PAGE)
    ring = BroadcastRing(PAGE, n_consumers=2)
    queue = MessageQueue(8)
    try:
        buffer.view(0, 5)[:] = b"hello"
        ring.publish(b"record")

        def proc_path(obj):
            return f"/proc/{os.getpid()}/fd/{obj.fileno()}"

        with spawn.Pool(1) as pool:
            assert pool.apply(_attach_through_proc, ("buffer", proc_path(buffer), b"hello")) == b"hello"
            assert pool.apply(_attach_through_proc, ("ring", proc_path(ring), b"")) == b"record"
            pool.apply(_attach_through_proc, ("queue", proc_path(queue), b""))
        assert bytes(buffer.view(PAGE - 1, 2)) == b"!?" and bytes(buffer.view(0, 1)) == b"?"
        assert [r.payload for r in ring.read(1)] == [b"record", b"reply"]
        assert queue.take() == (Request.CLOSE, 9, 1, 2, 3)
    finally:
        buffer.close()
        ring.close()
        queue.close()


# ---- cleanup ---------------------------------------------------------------------------------

def test_close_releases_fds_and_mappings_and_leaves_nothing_in_dev_shm():
    shm_before = sorted(os.listdir("/dev/shm"))
    fds_before = open_fds()
    maps_before = memfd_mappings()
    for _ in range(3):
        buffer = MirroredBuffer(PAGE * 4)
        ring = BroadcastRing(PAGE * 8, n_consumers=4)
        attached = BroadcastRing.from_fd(ring.fileno())
        queue = MessageQueue(64)
        view = buffer.view(0, 8)
        assert len(open_fds()) == len(fds_before) + 4
        assert len(memfd_mappings()) > len(maps_before)
        view.release()
        for shared in (buffer, ring, attached, queue):
            shared.close()
            shared.close()                                    # idempotent
    assert open_fds() == fds_before
    assert memfd_mappings() == maps_before
    assert sorted(os.listdir("/dev/shm")) == shm_before


def test_dropping_the_last_reference_also_releases_everything():
    fds_before = open_fds()
    maps_before = memfd_mappings()
    MirroredBuffer(PAGE)
    BroadcastRing(PAGE, 2)
    MessageQueue(16)
    assert open_fds() == fds_before
    assert memfd_mappings() == maps_before


# ---- property: cursor arithmetic and record sizes ----------------------------------------------

@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from([0, 8, PAGE - 8, 2**32 - 16, 2**63, 2**64 - 3 * PAGE - 8, 2**64 - 40]),
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.integers(0, 1500)),
            st.tuples(st.just("read"), st.integers(0, 1), st.integers(0, 4)),
        ),
        max_size=60,
    ),
)
def test_ring_matches_a_model_of_cursors_and_sizes(start, operations):
    """Whatever the interleaving, and even across the 2^64 wrap of the cursors:
    a record fits iff the slowest consumer left room; consumers see exactly the
    published records, in order, intact."""
    size = PAGE
    with BroadcastRing(size, n_consumers=2) as ring:
        ring._start_at(start)
        published = []                       # (ring bytes, payload)
        read_upto = [0, 0]
        for operation in operations:
            if operation[0] == "publish":
                length = operation[1]
                payload = bytes((len(published) + i) & 0xFF for i in range(length))
                in_flight = sum(b for b, _ in published[min(read_upto):])
                fits = in_flight + record_bytes(length) <= size
                seqno = ring.publish(payload, block=False)
                assert (seqno is not None) == fits
                if fits:
                    assert seqno == len(published)
                    published.append((record_bytes(length), payload))
            else:
                _, consumer, limit = operation
                records = ring.read(consumer, max_records=limit)
                expected = published[read_upto[consumer]:]
                if limit:
                    expected = expected[:limit]
                assert [r.payload for r in records] == [p for _, p in expected]
                assert [r.seqno for r in records] == list(
                    range(read_upto[consumer], read_upto[consumer] + len(expected)))
                read_upto[consumer] += len(records)
            total = sum(b for b, _ in published)
            assert ring.producer_cursor == (start + total) % 2**64
            for consumer in (0, 1):
                consumed = sum(b for b, _ in published[:read_upto[consumer]])
                assert ring.consumer_cursor(consumer) == (start + consumed) % 2**64


# ---- cross-process stress ------------------------------------------------------------------------

STRESS_RECORDS = 2_000_000
STRESS_SEED = 0x5EED


@pytest.mark.timeout(60)
def test_three_consumer_processes_see_two_million_records_intact_and_in_order():
    """More processes (4) than cores (2) and a 256 KiB ring that holds only a
    few 64 KiB records: the producer is held back all the time and everyone
    has to sleep on futexes.  Each consumer checks seqno, header, length and
    the whole payload pattern of every record."""
    ring = BroadcastRing(256 * 1024, n_consumers=3)
    try:
        started = time.monotonic()
        results = run_children(
            [(ring_harness.stress_produce, (ring, STRESS_RECORDS, STRESS_SEED))]
            + [(ring_harness.stress_consume, (ring, cid, STRESS_SEED)) for cid in range(3)],
            timeout=45,
        )
        elapsed = time.monotonic() - started
        counters = ring.counters()
    finally:
        ring.close()
    for records, errors, first_bad in results[1:]:
        assert (records, errors, first_bad) == (STRESS_RECORDS, 0, -1)
    producer = counters["producer"]
    assert producer["records"] == STRESS_RECORDS + 1                 # + REC_STOP
    assert producer["full_waits"] > 0                                # back-pressure happened
    for consumer in counters["consumers"]:
        assert consumer["records"] == STRESS_RECORDS + 1
        assert consumer["cursor"] == producer["cursor"]
    consumer_sleeps = sum(c["sleeps"] for c in counters["consumers"])
    assert consumer_sleeps > 0 and producer["sleeps"] > 0            # the futex path ran...
    assert producer["wakes"] > 0 and sum(c["wakes"] for c in counters["consumers"]) > 0
    # ...without lost wake-ups: a sleeper nobody wakes only gets out through its
    # 50 ms timeout.  A few timeouts can come from the scheduler alone on a
    # loaded machine; a lost-wake-up bug makes hundreds.
    sleeps = consumer_sleeps + producer["sleeps"]
    assert producer["timeouts"] + sum(c["timeouts"] for c in counters["consumers"]) <= 3 + sleeps // 1000
    print(f"\nstress: {STRESS_RECORDS} records x 3 consumers in {elapsed:.1f}s; {counters}")


@pytest.mark.timeout(60)
def test_stress_record_lengths_cover_small_and_gso_sized_frames():
    lengths = [ring_harness.stress_length_of(STRESS_SEED, s) for s in range(20000)]
    assert min(lengths) == 1 and max(lengths) <= _ring.MAX_FRAME
    assert any(n > 4096 for n in lengths) and sum(n > 60000 for n in lengths) > 0


# ---- command queue ----------------------------------------------------------------------------------

def test_command_queue_is_fifo_and_refuses_when_full():
    with MessageQueue(4) as queue:
        assert [queue.try_post(Request.CONSUMED, 1, i, i * 2, i * 3) for i in range(5)] == \
            [True, True, True, True, False]
        assert queue.take() == (Request.CONSUMED, 1, 0, 0, 0)
        assert queue.try_post(Request.SEND, 2, 99)
        assert [c.a for c in queue.drain()] == [1, 2, 3, 99]
        assert queue.take() is None
        assert queue.post(Request.CLOSE, timeout=0.01) == WaitStatus.READY
        assert queue.drain(max_messages=5) == [(Request.CLOSE, 0, 0, 0, 0)]


def test_command_queue_post_times_out_when_full_and_nobody_drains():
    with MessageQueue(2) as queue:
        queue.post(1)
        queue.post(2)
        assert queue.post(3, spin=10, timeout=0.02) == WaitStatus.TIMEOUT
        assert [c.kind for c in queue.drain()] == [1, 2]       # the timed-out post left no trace
        counters = queue.counters()
        assert counters["poster_full_waits"] == 1 and counters["poster_sleeps"] >= 1


@pytest.mark.timeout(30)
def test_a_waiting_command_consumer_is_woken_by_a_post():
    with MessageQueue(16) as queue:
        waiter, outcome = in_thread(queue.wait, 0, 5.0)
        try:
            time.sleep(0.2)
            started = time.monotonic()
            queue.post(Request.LISTEN, 0, 5201)
            waiter.join(timeout=2)
        finally:
            queue.stop()
            waiter.join()
        assert outcome == [WaitStatus.READY]
        assert time.monotonic() - started < 1.0               # woken, not timed out
        assert queue.take() == (Request.LISTEN, 0, 5201, 0, 0)
        assert queue.counters()["consumer_sleeps"] >= 1


@pytest.mark.timeout(60)
def test_posters_in_four_processes_are_delivered_exactly_once_in_their_order():
    posters, per_poster = 4, 200_000
    queue = MessageQueue(64)                   # small: posters keep running into a full queue
    try:
        results = run_children(
            [(ring_harness.queue_stress_drain, (queue, posters, per_poster))]
            + [(ring_harness.queue_stress_post, (queue, p, per_poster)) for p in range(posters)],
            timeout=45,
        )
        counters = queue.counters()
    finally:
        queue.close()
    taken, errors = results[0]
    assert (taken, errors) == (posters * per_poster, 0)
    assert counters["head"] == counters["tail"] == posters * per_poster
    assert counters["poster_full_waits"] > 0 and counters["poster_sleeps"] > 0
