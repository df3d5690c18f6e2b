# cython: language_level=3
"""The strategy loops: how log records reach the executor (compiled, nogil).

All strategies share the executor, the core and the log; they differ only in
how records reach the core:

* ``run_misd``    broadcast: every worker reads every record (its own
                  cursor), runs its replica of the core over it and carries
                  out only the outputs it owns;
* ``run_mimd``    the foil: workers claim records from one shared cursor and
                  process them on ONE shared core state under a ticket lock
                  (log order is kept), then perform all of that record's
                  outputs; progress and events are published in log order;
* ``run_single``  one process walks a log in place, no cursors (the baseline);
* ``run_single_device``  the `single` strategy on a live device: one process
                  reads the device (runtime/intake.pxd), runs the core and
                  performs every output itself -- no ring, no replicas.

Every wait goes through the runtime's one wait policy (runtime/wait.pxd).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free

from misdtcp._system cimport (atomic_cas_weak_relaxed_u64, atomic_load_acquire_u32, atomic_load_acquire_u64,
                              atomic_store_release_u32, atomic_store_release_u64, monotonic_ns, poll, pollfd,
                              POLLIN, read, thread_cpu_ns)
from misdtcp._tcpcore cimport CoreState, Replica, core_frame, core_tick
from misdtcp._ring cimport (BroadcastRing, Ring, RecordHeader, record_payload, ring_available, ring_next_position,
                            ring_record_at, ring_release, ring_wait_from)
from misdtcp.frameio.faults cimport FaultInjector
from misdtcp.frameio.stages cimport EMIT_CORRUPTED, stages_release_due
from misdtcp.runtime.executor cimport (Exec, Executor, apply_request, exec_apply_record, exec_flush_held,
                                      exec_handle_record, exec_note_latency, exec_publish_pending,
                                      exec_publish_stats, exec_run_actions)
from misdtcp.runtime.intake cimport Intake, INTAKE_MAX_FRAME, intake_round
from misdtcp.runtime.layout cimport RuntimeHeader, WorkerCounters
from misdtcp.runtime.queue cimport Message, MessageQueue, MsgQueue, mq_try_take
from misdtcp.runtime.vocabulary cimport REC_FRAME, REC_STOP
from misdtcp.runtime.wait cimport (WAIT_SPIN, WAIT_STOPPED, WAIT_TIMEOUT_NS, WaitCounters, ec_notify, flag_set,
                                   wait_for)
from misdtcp.wire.frame cimport FRAME_VERIFY_CSUM
from misdtcp.wire.vnet cimport virtio_net_hdr, VNET_HDR_LEN, vnet_frame_flags, vnet_gso_size


cdef void _prefault(Ring *rg) noexcept nogil:
    """Touch every page of the ring's data area before the start barrier, so
    first-touch page faults are not part of the measured processing (a
    long-running stack takes them once)."""
    cdef uint64_t off = 0
    cdef volatile char sink = 0
    while off < rg.size:
        sink = rg.data[off]
        off += 4096


cdef bint _go_or_stop(void *context) noexcept nogil:
    cdef RuntimeHeader *h = <RuntimeHeader *>context
    return atomic_load_acquire_u32(&h.go) != 0 or atomic_load_acquire_u32(&h.stop) != 0


cdef void _wait_go(RuntimeHeader *h) noexcept nogil:
    """The start barrier: every process begins together (benchmarks time from here)."""
    while not _go_or_stop(h):
        wait_for(_go_or_stop, h, &h.go_wait.eventcount, NULL, WAIT_SPIN, WAIT_TIMEOUT_NS, NULL)


# ---------------------------------------------------------------------------
# misd
# ---------------------------------------------------------------------------

def run_misd(Executor ex, BroadcastRing ring, uint32_t consumer_id):
    """Broadcast strategy: this worker replays every record of the log."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef uint64_t pos, end, n
    cdef RecordHeader *r
    cdef int w
    cdef bint running = True
    cdef uint64_t cpu0
    with nogil:
        _prefault(rg)
        _wait_go(x.h)
        cnt.start_ns = monotonic_ns()
        cpu0 = thread_cpu_ns()
        pos = rg.ctl.consumers[consumer_id].cursor
        x.release_target = pos
        while running:
            end = ring_available(rg, consumer_id)
            if end == pos:
                cnt.heartbeat_ns = monotonic_ns()
                if atomic_load_acquire_u32(&x.h.stop):
                    break
                w = ring_wait_from(rg, consumer_id, pos, WAIT_SPIN, WAIT_TIMEOUT_NS)
                if w == WAIT_STOPPED:
                    # drain what was published before the stop
                    if ring_available(rg, consumer_id) == pos:
                        break
                continue
            n = 0
            while pos != end:
                r = ring_record_at(rg, pos)
                pos = ring_next_position(r, pos)
                x.loop_position = pos
                n += 1
                if not exec_handle_record(x, r):
                    running = False
                    break
            cnt.records += n
            cnt.position += n
            # recoverable mode keeps every record since the last checkpoint in
            # the ring, so a replacement can replay them from the snapshot
            ring_release(rg, consumer_id, x.release_target if x.snapshots != NULL else pos, n)
            exec_flush_held(x)
            exec_publish_stats(x, monotonic_ns())
        cnt.end_ns = monotonic_ns()
        cnt.cpu_ns += thread_cpu_ns() - cpu0
        atomic_store_release_u64(&cnt.done, 1)


# ---------------------------------------------------------------------------
# single (a log in memory)
# ---------------------------------------------------------------------------

def run_single(Executor ex, BroadcastRing ring):
    """Sequential baseline: one process walks the records in place (no
    cursors, no atomics, no other process)."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef uint64_t pos = 0, end, n = 0
    cdef RecordHeader *r
    cdef uint64_t cpu0
    with nogil:
        _prefault(rg)
        cnt.start_ns = monotonic_ns()
        cpu0 = thread_cpu_ns()
        end = ring_available(rg, 0)
        while pos != end:
            r = ring_record_at(rg, pos)
            pos = ring_next_position(r, pos)
            n += 1
            if not exec_handle_record(x, r):
                break
        cnt.records += n
        cnt.position += n
        cnt.end_ns = monotonic_ns()
        cnt.cpu_ns += thread_cpu_ns() - cpu0
        atomic_store_release_u64(&cnt.done, 1)


# ---------------------------------------------------------------------------
# mimd (the foil)
# ---------------------------------------------------------------------------

ctypedef struct _Turn:
    RuntimeHeader *h
    uint32_t ticket


cdef bint _my_turn(void *context) noexcept nogil:
    cdef _Turn *t = <_Turn *>context
    return atomic_load_acquire_u32(&t.h.turn) == t.ticket


ctypedef struct _Done:
    RuntimeHeader *h
    uint64_t seqno


cdef bint _earlier_done(void *context) noexcept nogil:
    cdef _Done *d = <_Done *>context
    return atomic_load_acquire_u64(&d.h.done_seqno) == d.seqno


def run_mimd(Executor ex, BroadcastRing ring, uint32_t nworkers):
    """The foil: N workers claim records from ONE shared cursor and process
    them on ONE shared core state, serialised by a ticket lock in log order
    (so the TCP state stays correct), then do all of that record's outputs
    outside the lock.  The core must have been created over shared memory
    (state_buffer) with replicas=1, and the executor with shared_state.  The
    ring's space is given back by the lock holder up to the oldest record any
    worker still works on."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef RuntimeHeader *h = x.h
    cdef uint64_t pos, nxt, end, low, v, released = 0
    cdef uint32_t w
    cdef RecordHeader *r
    cdef bint stop = False
    cdef const uint8_t *frame
    cdef _Turn turn
    cdef _Done done
    cdef WaitCounters waits
    cdef uint64_t cpu0
    if not x.shared_state:
        raise ValueError("run_mimd needs an executor over the shared core state (shared_state=True)")
    turn.h = h
    done.h = h
    waits.spins = 0
    waits.sleeps = 0
    waits.timeouts = 0
    with nogil:
        atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
        _prefault(rg)
        _wait_go(h)
        cnt.start_ns = monotonic_ns()
        cpu0 = thread_cpu_ns()
        while not stop:
            pos = atomic_load_acquire_u64(&h.claim_position)
            end = ring_available(rg, 0)
            if pos == end:
                cnt.heartbeat_ns = monotonic_ns()
                if atomic_load_acquire_u32(&h.stop):
                    break
                if ring_wait_from(rg, 0, pos, WAIT_SPIN, WAIT_TIMEOUT_NS) == WAIT_STOPPED and \
                        ring_available(rg, 0) == pos:
                    break
                continue
            # announce before claiming, so the space is never given back early
            atomic_store_release_u64(&cnt.inflight, pos)
            r = ring_record_at(rg, pos)
            nxt = ring_next_position(r, pos)
            if not atomic_cas_weak_relaxed_u64(&h.claim_position, &pos, nxt):
                continue
            # the lock: records are applied to the shared state in log order
            turn.ticket = <uint32_t>r.seqno
            if not _my_turn(&turn):
                cnt.lock_waits += 1
                while wait_for(_my_turn, &turn, &h.turn_wait.eventcount, &h.stop, WAIT_SPIN,
                               WAIT_TIMEOUT_NS, &waits) != 0 and not atomic_load_acquire_u32(&h.stop):
                    pass
            if not _my_turn(&turn):
                break                                   # stopped while waiting
            frame = exec_apply_record(x, r, &stop)
            # give back ring space up to the oldest record still in flight
            low = nxt
            for w in range(nworkers):
                v = atomic_load_acquire_u64(&h.counters[w].inflight)
                if v < low:
                    low = v
            if low > released and low != <uint64_t>-1:
                ring_release(rg, 0, low, 0)
                released = low
            # unlock: the next ticket may go while we do our outputs
            atomic_store_release_u32(&h.turn, <uint32_t>(r.seqno + 1))
            ec_notify(&h.turn_wait.eventcount)
            exec_run_actions(x, frame)
            if frame != NULL:
                exec_note_latency(x, r.now_ns)
            # completion in log order: readable data must have no holes left
            # by a slower worker still copying an earlier record
            done.seqno = r.seqno
            if not _earlier_done(&done):
                cnt.lock_waits += 1
                while wait_for(_earlier_done, &done, &h.done_wait.eventcount, &h.stop, WAIT_SPIN,
                               WAIT_TIMEOUT_NS, &waits) != 0 and not atomic_load_acquire_u32(&h.stop):
                    pass
            exec_publish_pending(x)
            atomic_store_release_u64(&h.done_seqno, r.seqno + 1)
            ec_notify(&h.done_wait.eventcount)
            exec_flush_held(x)
            exec_publish_stats(x, monotonic_ns())
            atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
            cnt.records += 1
            cnt.position += 1
        cnt.sleeps += waits.sleeps
        cnt.spins += waits.spins
        cnt.end_ns = monotonic_ns()
        cnt.cpu_ns += thread_cpu_ns() - cpu0
        atomic_store_release_u64(&cnt.done, 1)
        atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
        # whoever ran the STOP record tells the others
        atomic_store_release_u32(&h.stop, 1)
        ec_notify(&h.turn_wait.eventcount)
        ec_notify(&h.done_wait.eventcount)


# ---------------------------------------------------------------------------
# single on a live device
# ---------------------------------------------------------------------------

ctypedef struct _Direct:
    Intake intake
    uint8_t *buffer
    Exec *x


cdef uint8_t *_direct_buffer(void *context, uint32_t room) noexcept nogil:
    return (<_Direct *>context).buffer


cdef void _direct_frame(void *context, uint8_t *frame, uint32_t n, uint32_t how) noexcept nogil:
    """Run the core on one frame straight from the device, and its outputs."""
    cdef _Direct *d = <_Direct *>context
    cdef const virtio_net_hdr *v = <const virtio_net_hdr *>frame
    cdef uint32_t flags = FRAME_VERIFY_CSUM if how & EMIT_CORRUPTED else vnet_frame_flags(v)
    d.x.cnt.frames += 1
    core_frame(d.x.st, d.x.rx, frame + VNET_HDR_LEN, n - VNET_HDR_LEN, flags, vnet_gso_size(v), d.intake.now)
    exec_run_actions(d.x, frame + VNET_HDR_LEN)
    exec_note_latency(d.x, d.intake.now)


def run_single_device(Executor ex, int device_fd, MessageQueue requests, int wake_fd,
                      uint64_t tick_ns=5000000, FaultInjector input_faults=None):
    """The `single` strategy on a live device: one process reads the device,
    runs the core and performs every output itself -- no ring, no replicas.
    Input frames pass through the same stages as the sequencer's (capture
    shared with the executor's output, `input_faults` for the faults)."""
    cdef Exec *x = &ex.x
    cdef CoreState *st = x.st
    cdef Replica *rx = x.rx
    cdef WorkerCounters *cnt = x.cnt
    cdef RuntimeHeader *h = x.h
    cdef MsgQueue *q = &requests.queue
    cdef Message message
    cdef _Direct d
    cdef uint64_t now, last = 0
    cdef uint32_t got
    cdef pollfd fds[2]
    cdef uint8_t scratch[8]
    d.buffer = <uint8_t *>malloc(INTAKE_MAX_FRAME)
    if d.buffer == NULL:
        raise MemoryError()
    d.x = x
    d.intake.fd = device_fd
    d.intake.batch = 64
    d.intake.now = 0
    d.intake.stages.pcap = x.out_stages.pcap
    d.intake.stages.pcap_offset_ns = x.out_stages.pcap_offset_ns
    d.intake.stages.faults = &input_faults.state if input_faults is not None else NULL
    with nogil:
        fds[0].fd = device_fd
        fds[0].events = POLLIN
        fds[1].fd = wake_fd
        fds[1].events = POLLIN
        cnt.start_ns = monotonic_ns()
        while not atomic_load_acquire_u32(&h.stop):
            now = monotonic_ns()
            cnt.heartbeat_ns = now
            got = 0
            while mq_try_take(q, &message):
                cnt.requests += 1
                apply_request(st, rx, <const uint8_t *>&message, now)
                exec_run_actions(x, NULL)
                got += 1
            got += intake_round(&d.intake, _direct_buffer, _direct_frame, &d)
            got += stages_release_due(&d.intake.stages, monotonic_ns(), _direct_frame, &d)
            cnt.records += got
            exec_flush_held(x)
            now = monotonic_ns()
            exec_publish_stats(x, now)
            if got:
                last = now
                continue
            if now - last >= tick_ns:
                cnt.ticks += 1
                core_tick(st, rx, now)
                exec_run_actions(x, NULL)
                last = now
            atomic_store_release_u32(&h.sequencer_sleeping, 1)
            if mq_try_take(q, &message):
                atomic_store_release_u32(&h.sequencer_sleeping, 0)
                cnt.requests += 1
                apply_request(st, rx, <const uint8_t *>&message, monotonic_ns())
                exec_run_actions(x, NULL)
                continue
            poll(fds, 2, <int>(tick_ns // 1000000) or 1)
            atomic_store_release_u32(&h.sequencer_sleeping, 0)
            if fds[1].revents & POLLIN:
                read(wake_fd, scratch, 8)
        cnt.end_ns = monotonic_ns()
    free(d.buffer)
