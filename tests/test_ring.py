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

from hypothesis_profiles import examples

from misdtcp import _ring
from misdtcp._ring import BroadcastRing
from misdtcp.runtime.queue import MessageQueue
from misdtcp.runtime.shm import MirroredBuffer
from misdtcp.runtime.vocabulary import Record, Request
from misdtcp.runtime import wait
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


# ---- entries: format, order, data positions -------------------------------------

DATA = 1 << 17          # the smallest data area: one maximal record (RING_MAX_DATA) fits


def test_entries_come_out_in_order_with_their_fields_and_data():
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        for i in range(10):
            seqno = ring.publish(bytes([i]) * i, Record.SEGMENT, frame_flags=i, gso_size=1448, now_ns=1000 + i,
                                 seq=7 * i, ack=99, window=i + 1, tsval=5, tsecr=6, seg_flags=1, tcp_flags=0x10)
            assert seqno == i
        ring.publish(None, Record.TICK, now_ns=2000)
        entries = ring.read(0)
    assert [e.seqno for e in entries] == list(range(11))
    for i, e in enumerate(entries[:10]):
        assert e.kind == Record.SEGMENT and e.data == bytes([i]) * i and e.length == i
        assert (e.frame_flags, e.gso_size, e.now_ns) == (i, 1448, 1000 + i)
        assert (e.seq, e.ack, e.window, e.tsval, e.tsecr, e.seg_flags, e.tcp_flags) == (7 * i, 99, i + 1, 5, 6, 1, 0x10)
    assert entries[10].kind == Record.TICK and entries[10].now_ns == 2000 and entries[10].data == b""


def test_every_entry_is_one_cache_line_and_data_lies_back_to_back():
    assert _ring.DESCRIPTOR_BYTES == 64
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        total = 0
        for length in (0, 1, 3, 8, 13, 64, 1499):
            ring.publish(b"x" * length)
            total += length
            counters = ring.counters()["producer"]
            assert counters["data_cursor"] == total           # no header, no padding in the data area
        assert ring.producer_cursor == 7


def test_pending_entries_are_invisible_until_commit_and_the_last_can_grow_nowhere_else():
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        assert ring.claim(b"one", seq=1) == 0
        assert ring.claim(b"two", seq=2) == 1
        assert ring.read(0) == [] and ring.available() == 0
        ring.commit()
        assert [e.data for e in ring.read(0)] == [b"one", b"two"]


def test_batch_read_takes_everything_available_and_release_moves_the_cursors():
    with BroadcastRing(16, DATA, n_consumers=2) as ring:
        for i in range(5):
            ring.publish(b"%d" % i)
        assert len(ring.read(0)) == 5
        assert ring.read(0) == []
        assert [e.data for e in ring.read(1, max_records=2)] == [b"0", b"1"]
        assert [e.data for e in ring.read(1)] == [b"2", b"3", b"4"]
        assert ring.consumer_cursor(0) == ring.consumer_cursor(1) == ring.producer_cursor == 5
        counters = ring.counters()
        assert counters["producer"]["records"] == 5
        assert [c["records"] for c in counters["consumers"]] == [5, 5]
        assert [c["data_cursor"] for c in counters["consumers"]] == [5, 5]


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


def test_huge_page_buffers_fall_back_to_normal_pages_and_work_either_way():
    with MirroredBuffer(2 << 20, huge_pages=True) as buffer:
        assert isinstance(buffer.huge_pages, bool)
        buffer.view((2 << 20) - 2, 4)[:] = b"edge"
        assert bytes(buffer.view(0, 2)) == b"ge"
    with BroadcastRing(16, 2 << 20, 1, huge_pages=True) as ring:
        assert isinstance(ring.huge_pages, bool)
        ring.publish(b"on whatever pages")
        assert ring.read(0)[0].data == b"on whatever pages"


def test_data_straddling_the_end_of_the_data_area_reads_contiguously():
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        ring.publish(b"a" * (DATA - 64))          # leaves 64 bytes before the end
        ring.read(0)
        data = bytes(range(256)) * 4
        ring.publish(data)                        # starts at S-64, crosses S
        (entry,) = ring.read(0)
        assert entry.data == data
        assert ring.counters()["producer"]["data_cursor"] > DATA


def test_sizes_must_be_powers_of_two_and_hold_a_maximal_record():
    with pytest.raises(ValueError):
        MirroredBuffer(PAGE * 3)
    with pytest.raises(ValueError):
        BroadcastRing(12, DATA)                   # entries: not a power of two
    with pytest.raises(ValueError):
        BroadcastRing(16, PAGE)                   # data: smaller than one maximal record
    with pytest.raises(ValueError):
        BroadcastRing(16, DATA * 3)


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


# ---- back-pressure: entries and data ---------------------------------------------------

def test_producer_waits_for_the_slowest_consumer_on_entries():
    with BroadcastRing(8, DATA, n_consumers=2) as ring:
        published = 0
        while ring.publish(b"x", block=False) is not None:
            published += 1
        assert published == 8
        assert len(ring.read(0)) == 8                         # one consumer catches up...
        assert ring.publish(b"x", block=False) is None        # ...the other still holds the slots
        ring.read(1, max_records=1)
        assert ring.publish(b"y", block=False) == 8           # exactly one slot freed
        assert ring.publish(b"z", block=False) is None
        assert ring.read(1)[-1].seqno == 8                    # nothing was overwritten
        assert [e.data for e in ring.read(0)] == [b"y"]


def test_producer_waits_for_the_slowest_consumer_on_data_bytes():
    with BroadcastRing(1024, DATA, n_consumers=1) as ring:
        chunk = b"d" * (DATA // 4)
        assert [ring.publish(chunk, block=False) for _ in range(5)] == [0, 1, 2, 3, None]
        ring.read(0, max_records=1)
        assert ring.publish(chunk, block=False) == 4
        assert ring.publish(b"!", block=False) is None        # a single byte more does not fit either


def test_wait_space_times_out_then_succeeds_after_release():
    with BroadcastRing(4, DATA, n_consumers=1) as ring:
        while ring.publish(b"y" * 500, block=False) is not None:
            pass
        assert ring.wait_space(1, 500, spin=10, timeout=0.02) == WaitStatus.TIMEOUT
        ring.read(0)
        assert ring.wait_space(1, 500, spin=10, timeout=0.02) == WaitStatus.READY
        counters = ring.counters()["producer"]
        assert counters["full_waits"] >= 1 and counters["timeouts"] == 1


def test_rewind_replays_a_finished_log_to_new_consumers():
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        for i in range(3):
            ring.publish(b"%d" % i)
        ring.read(0)
        ring.rewind(2)
        assert ring.n_consumers == 2
        assert [e.data for e in ring.read(1)] == [b"0", b"1", b"2"]
        assert [e.data for e in ring.read(0)] == [b"0", b"1", b"2"]


# ---- waiting, stop ---------------------------------------------------------------------

def test_consumer_wait_times_out_without_records():
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        started = time.monotonic()
        assert ring.wait(0, spin=10, timeout=0.05) == WaitStatus.TIMEOUT
        assert 0.04 < time.monotonic() - started < 1.0
        assert ring.counters()["consumers"][0]["timeouts"] == 1


def test_spin_budget_shrinks_when_spinning_never_pays():
    """A waiter whose peer never publishes while it spins ends up spinning
    only the floor before it parks (the adaptive half of the wait policy)."""
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        for _ in range(12):
            assert ring.wait(0, spin=512, timeout=0.001) == WaitStatus.TIMEOUT
        consumer = ring.counters()["consumers"][0]
        assert consumer["parks"] == 12
        assert consumer["spin_budget"] == wait.SPIN_FLOOR


def test_spin_budget_grows_to_the_ceiling_while_spinning_pays_and_halves_when_it_does_not():
    budgets = [wait.first_budget(512)]
    for _ in range(8):
        budgets.append(wait.next_budget(budgets[-1], 512, paid=True))
    assert budgets[0] == 128 and budgets[-1] == 512
    assert all(a < b for a, b in zip(budgets, budgets[1:5]))
    assert wait.next_budget(512, 512, paid=False) == 256
    assert wait.next_budget(wait.SPIN_FLOOR, 512, paid=False) == wait.SPIN_FLOOR
    assert wait.next_budget(100, 64, paid=True) == 64


def in_thread(function, *args):
    """Run function(*args) in a thread; returns (thread, list that receives the result)."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(function(*args)))
    thread.start()
    return thread, outcome


def wait_until(predicate, timeout=5.0):
    """Poll a condition (never a fixed sleep before an exact assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)


@pytest.mark.timeout(30)
def test_a_sleeping_consumer_is_woken_by_a_publish():
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        waiter, outcome = in_thread(ring.wait, 0, 0, 5.0)
        try:
            wait_until(lambda: ring.counters()["consumers"][0]["sleeps"] >= 1)   # it reached FUTEX_WAIT
            started = time.monotonic()
            ring.publish(b"wake up")
            waiter.join(timeout=2)
        finally:
            ring.stop()                                       # never unmap under a waiter
            waiter.join()
        assert outcome == [WaitStatus.READY]
        assert time.monotonic() - started < 1.0
        counters = ring.counters()
        assert counters["producer"]["wakes"] == 1
        ring.publish(b"no sleeper now")
        assert ring.counters()["producer"]["wakes"] == 1      # no syscall without a sleeper


@pytest.mark.timeout(30)
def test_stop_wakes_sleepers_but_consumers_drain_first():
    with BroadcastRing(4, DATA, n_consumers=1) as ring:
        waiter, outcome = in_thread(ring.wait, 0, 0, 5.0)
        wait_until(lambda: ring.counters()["consumers"][0]["sleeps"] >= 1)
        started = time.monotonic()
        ring.stop()
        waiter.join()
        assert time.monotonic() - started < 1.0
        assert outcome == [WaitStatus.STOPPED] and ring.stopped
        assert ring.wait_space(1, 16, spin=0, timeout=1.0) == WaitStatus.READY
        while ring.publish(b"z" * 64, block=False) is not None:
            pass
        started = time.monotonic()
        assert ring.publish(b"z" * 64, block=True) is None    # full and stopped: no blocking
        assert ring.wait_space(1, 64, spin=0, timeout=1.0) == WaitStatus.STOPPED
        assert time.monotonic() - started < 0.5


@pytest.mark.timeout(30)
def test_close_refuses_while_a_thread_is_blocked_in_a_wait():
    ring = BroadcastRing(16, DATA, n_consumers=1)
    queue = MessageQueue(2)
    ring_waiter, _ = in_thread(ring.wait, 0, 0, 5.0)
    queue_waiter, _ = in_thread(queue.wait, 0, 5.0)
    wait_until(lambda: ring.counters()["consumers"][0]["sleeps"] >= 1 and queue.counters()["consumer_sleeps"] >= 1)
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
    with BroadcastRing(16, DATA, n_consumers=1) as ring:
        ring.publish(b"last words")
        ring.stop()
        assert ring.wait(0, spin=0, timeout=1.0) == WaitStatus.READY
        assert ring.read(0)[0].data == b"last words"
        assert ring.wait(0, spin=0, timeout=1.0) == WaitStatus.STOPPED


# ---- sharing: from_fd ----------------------------------------------------------------------

def test_from_fd_maps_the_same_ring_memory():
    with BroadcastRing(32, DATA, n_consumers=3) as ring, BroadcastRing.from_fd(ring.fileno()) as other:
        assert (other.entries, other.data_size, other.n_consumers) == (32, DATA, 3)
        ring.publish(b"shared")
        assert other.read(2)[0].data == b"shared"
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
                got = ring.read(0)[0].data
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
    ring = BroadcastRing(16, DATA, n_consumers=2)
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
        assert [e.data for e in ring.read(1)] == [b"record", b"reply"]
        assert queue.take() == (Request.CLOSE, 9, 1, 2, 3, 0, 0)      # requests carry no record
    finally:
        buffer.close()
        ring.close()
        queue.close()


# ---- cleanup ---------------------------------------------------------------------------------

def test_close_releases_fds_and_mappings_and_the_memory_is_memfds_nobody_holds():
    """Shared memory is memfds (never files in /dev/shm); closing gives back
    every fd and mapping, and then no process holds those memfds."""
    from misdtcp.testing.procfs import holders_of, memfds_of
    fds_before = open_fds()
    maps_before = memfd_mappings()
    ours_before = memfds_of([os.getpid()])
    created = set()
    for _ in range(3):
        buffer = MirroredBuffer(PAGE * 4)
        ring = BroadcastRing(64, DATA, n_consumers=4)
        attached = BroadcastRing.from_fd(ring.fileno())
        queue = MessageQueue(64)
        view = buffer.view(0, 8)
        assert len(open_fds()) == len(fds_before) + 4
        for fd in (buffer.fileno(), ring.fileno(), attached.fileno(), queue.fileno()):
            assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:misdtcp")
        created |= memfds_of([os.getpid()]) - ours_before
        assert len(memfd_mappings()) > len(maps_before)
        view.release()
        for shared in (buffer, ring, attached, queue):
            shared.close()
            shared.close()                                    # idempotent
    assert open_fds() == fds_before
    assert memfd_mappings() == maps_before
    assert len(created) == 9 and holders_of(created) == set()


def test_dropping_the_last_reference_also_releases_everything():
    fds_before = open_fds()
    maps_before = memfd_mappings()
    MirroredBuffer(PAGE)
    BroadcastRing(16, DATA, 2)
    MessageQueue(16)
    assert open_fds() == fds_before
    assert memfd_mappings() == maps_before


# ---- property: cursor arithmetic -------------------------------------------------------------

@settings(max_examples=examples(150), deadline=None)
@given(
    start=st.sampled_from([(0, 0), (8, 3), (2**32 - 4, DATA - 5), (2**63, 2**63 + 1), (2**64 - 5, 2**64 - 200)]),
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.integers(0, DATA // 3)),
            st.tuples(st.just("read"), st.integers(0, 1), st.integers(0, 4)),
        ),
        max_size=60,
    ),
)
def test_ring_matches_a_model_of_cursors_and_sizes(start, operations):
    """Whatever the interleaving, and even across the 2^64 wrap of the
    cursors: an entry fits iff the slowest consumer left a slot and enough
    data bytes; consumers see exactly the published entries, in order, intact."""
    entries, start_seqno, start_data = 8, start[0], start[1]
    with BroadcastRing(entries, DATA, n_consumers=2) as ring:
        ring._start_at(start_seqno, start_data)
        published = []                       # data of each entry
        read_upto = [0, 0]
        for operation in operations:
            if operation[0] == "publish":
                length = operation[1]
                data = bytes((len(published) + i) & 0xFF for i in range(length))
                slowest = min(read_upto)
                in_flight = sum(len(d) for d in published[slowest:])
                fits = len(published) - slowest < entries and in_flight + length <= DATA
                seqno = ring.publish(data, block=False)
                assert (seqno is not None) == fits
                if fits:
                    assert seqno == (start_seqno + len(published)) % 2**64
                    published.append(data)
            else:
                _, consumer, limit = operation
                got = ring.read(consumer, max_records=limit)
                expected = published[read_upto[consumer]:]
                if limit:
                    expected = expected[:limit]
                assert [e.data for e in got] == expected
                assert [e.seqno for e in got] == [(start_seqno + read_upto[consumer] + i) % 2**64
                                                  for i in range(len(expected))]
                read_upto[consumer] += len(got)
            assert ring.producer_cursor == (start_seqno + len(published)) % 2**64
            counters = ring.counters()
            assert counters["producer"]["data_cursor"] == (start_data + sum(map(len, published))) % 2**64
            for consumer in (0, 1):
                assert ring.consumer_cursor(consumer) == (start_seqno + read_upto[consumer]) % 2**64
                assert counters["consumers"][consumer]["data_cursor"] == \
                    (start_data + sum(map(len, published[:read_upto[consumer]]))) % 2**64


# ---- cross-process stress ------------------------------------------------------------------------

STRESS_RECORDS = 2_000_000
STRESS_SEED = 0x5EED


@pytest.mark.timeout(60)
def test_three_consumer_processes_see_two_million_records_intact_and_in_order():
    """More processes (4) than cores (2) and a log that holds 64 entries and
    256 KiB of data (a few 64 KiB records): the producer is held back all the
    time and everyone has to sleep on futexes.  Each consumer checks the
    fields, the data positions and the whole data pattern of every entry."""
    ring = BroadcastRing(64, 256 * 1024, n_consumers=3)
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
    assert min(lengths) == 0 and max(lengths) <= _ring.MAX_DATA
    assert any(n > 4096 for n in lengths) and sum(n > 60000 for n in lengths) > 0


# ---- command queue ----------------------------------------------------------------------------------

def test_command_queue_is_fifo_and_refuses_when_full():
    with MessageQueue(4) as queue:
        assert [queue.try_post(Request.CONSUMED, 1, i, i * 2, i * 3) for i in range(5)] == \
            [True, True, True, True, False]
        assert queue.take() == (Request.CONSUMED, 1, 0, 0, 0, 0, 0)
        assert queue.try_post(Request.SEND, 2, 99)
        assert [c.a for c in queue.drain()] == [1, 2, 3, 99]
        assert queue.take() is None
        assert queue.post(Request.CLOSE, timeout=0.01) == WaitStatus.READY
        assert queue.drain(max_messages=5) == [(Request.CLOSE, 0, 0, 0, 0, 0, 0)]


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
            wait_until(lambda: queue.counters()["consumer_sleeps"] >= 1)   # it reached FUTEX_WAIT
            started = time.monotonic()
            queue.post(Request.LISTEN, 0, 5201)
            waiter.join(timeout=2)
        finally:
            queue.stop()
            waiter.join()
        assert outcome == [WaitStatus.READY]
        assert time.monotonic() - started < 1.0               # woken, not timed out
        assert queue.take() == (Request.LISTEN, 0, 5201, 0, 0, 0, 0)
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
