# cython: language_level=3
"""The strategy loops: how log positions reach the executor (compiled, nogil).

All strategies share the core, the executor and the log; they differ only in
how descriptors reach a core and who does the outputs:

* ``run_misd``    broadcast: every worker reads every descriptor (its own
                  cursor), runs its replica of the core over it and carries
                  out only the outputs it owns;
* ``run_mimd``    the foil: workers claim descriptors from one shared cursor
                  and process them on ONE shared core state under a ticket
                  lock (log order is kept), then perform all of that
                  record's outputs; progress and events in log order;
* ``run_leader`` / ``run_helper``  the other foil: one process runs the only
                  core and hands the copy work of the stripes it does not own
                  to helpers over single-producer queues (runtime/handoff),
                  copying its own share; no locks;
* ``run_copy_only``  the ceiling: every worker copies the stripes it owns and
                  does nothing else -- no TCP at all;
* ``run_single``  one process walks a log in place, no cursors (the baseline);
* ``run_single_device``  the `single` strategy on a live device: one process
                  reads the device (runtime/intake.pxd), runs the core and
                  performs every output itself -- no ring, no replicas.

Workers walk descriptors at a fixed stride and prefetch PREFETCH_AHEAD of
them ahead; they publish progress once per batch and release the log once
per batch.  Every wait goes through the runtime's one wait policy.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from misdtcp._system cimport (atomic_cas_weak_relaxed_u64, atomic_load_acquire_u32, atomic_load_acquire_u64,
                              atomic_store_release_u32, atomic_store_release_u64, monotonic_ns, poll, pollfd,
                              POLLIN, prefetch, read, thread_cpu_ns)
from misdtcp._tcpcore cimport (CoreState, Replica, NO_CONN, HANDLE_SLOT_MASK, core_dropped, core_frame, core_tick,
                               handle_slot)
from misdtcp._ring cimport (BroadcastRing, Descriptor, Ring, ring_available, ring_bytes, ring_data, ring_descriptor,
                            ring_release, ring_wait_from)
from misdtcp.frameio.ethernet_link cimport (EthernetLink, LinkFrame, LINK_ANSWERED, LINK_IPV4,
                                            link_as_tun_frame, link_init, link_receive)
from misdtcp.frameio.faults cimport FaultInjector
from misdtcp.frameio.packet_ring cimport (PacketRx, RxRing, tpacket2_hdr, rx_next, rx_slot, rx_slot_give_back,
                                          rx_slot_ready)
from misdtcp.frameio.stages cimport EMIT_CORRUPTED, stages_apply, stages_release_due
from misdtcp.runtime.executor cimport (Exec, Executor, apply_request, exec_apply, exec_batch, exec_flush_held,
                                      exec_handle, exec_note_latency, exec_publish_pending, exec_publish_progress,
                                      exec_publish_stats, exec_run_actions, exec_start_walk,
                                      EXEC_MAX_BATCH, EXEC_PREFETCH_AHEAD, exec_signal_ready)
from misdtcp.runtime.readiness cimport READY_READ, ready_touch
from misdtcp.runtime.handoff cimport (CopyWork, Handoff, HandoffQueues, handoff_done, handoff_publish,
                                      handoff_push, handoff_wait)
from misdtcp.runtime.intake cimport Intake, INTAKE_MAX_FRAME, intake_round
from misdtcp.runtime.layout cimport RuntimeHeader, WorkerCounters, progress_word
from misdtcp.runtime.queue cimport Message, MessageQueue, MsgQueue, mq_try_take
from misdtcp.runtime.shm cimport mirror_map
from misdtcp.runtime.vocabulary cimport REC_FRAME, REC_SEGMENT, REC_STOP
from misdtcp.runtime.wait cimport (WAIT_SPIN, WAIT_STOPPED, WAIT_TIMEOUT_NS, WaitCounters, ec_notify, flag_set,
                                   wait_for)
from misdtcp._tcpcore cimport ACT_COPY, ACT_NOTIFY, N_READABLE
from misdtcp.wire.bytes cimport rd32
from misdtcp.wire.frame cimport FRAME_IN_DEVICE, FRAME_VERIFY_CSUM
from misdtcp.wire.ipv4 cimport IP_HDR_LEN
from misdtcp.wire.ipv6 cimport IP6_HDR_LEN
from misdtcp.wire.tcp cimport TH_SYN, TCP_SEQUENCE, TCP_FLAGS
from misdtcp.wire.vnet cimport virtio_net_hdr, VNET_HDR_LEN, vnet_frame_flags, vnet_gso_size

cdef enum:
    PREFETCH_AHEAD = EXEC_PREFETCH_AHEAD
    MAX_BATCH = EXEC_MAX_BATCH
    HANDOFF_END = 0xfffffffe # a mark's handle that tells a helper the log has ended


cdef void _prefault(Ring *rg) noexcept nogil:
    """Touch every page of the log before the start barrier, so first-touch
    page faults are not part of the measured processing (a long-running stack
    takes them once)."""
    cdef uint64_t off = 0
    cdef volatile char sink = 0
    while off < rg.data_size:
        sink = rg.data[off]
        off += 4096
    off = 0
    while off < (rg.entry_mask + 1) * sizeof(Descriptor):
        sink = (<char *>rg.entries)[off]
        off += 4096


cdef bint _go_or_stop(void *context) noexcept nogil:
    cdef RuntimeHeader *h = <RuntimeHeader *>context
    return atomic_load_acquire_u32(&h.go) != 0 or atomic_load_acquire_u32(&h.stop) != 0


cdef void _wait_go(RuntimeHeader *h) noexcept nogil:
    """The start barrier: every process begins together (benchmarks time from here)."""
    while not _go_or_stop(h):
        wait_for(_go_or_stop, h, &h.go_wait.eventcount, NULL, WAIT_SPIN, WAIT_TIMEOUT_NS, NULL)


cdef inline void _begin(Exec *x, Ring *rg, bint prefault) noexcept nogil:
    if prefault:
        _prefault(rg)
    _wait_go(x.h)
    x.cnt.start_ns = monotonic_ns()
    x.cnt.heartbeat_ns = x.cnt.start_ns


cdef inline void _end(Exec *x, uint64_t cpu0) noexcept nogil:
    x.cnt.end_ns = monotonic_ns()
    x.cnt.cpu_ns += thread_cpu_ns() - cpu0
    atomic_store_release_u64(&x.cnt.done, 1)


cdef int _wait_for_log(Exec *x, Ring *rg, uint32_t consumer_id, uint64_t seqno) noexcept nogil:
    """Nothing new past `seqno`: wait.  Returns 0 to go on, 1 to stop (stopped
    and drained)."""
    x.cnt.heartbeat_ns = monotonic_ns()
    if atomic_load_acquire_u32(&x.h.stop) and ring_available(rg) == seqno:
        return 1
    if ring_wait_from(rg, consumer_id, seqno, WAIT_SPIN, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
        if ring_available(rg) == seqno:
            return 1
    return 0


# ---------------------------------------------------------------------------
# misd
# ---------------------------------------------------------------------------

def run_misd(Executor ex, BroadcastRing ring, uint32_t consumer_id, bint prefault=True):
    """Broadcast strategy: this worker replays every descriptor of the log."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef uint64_t end
    cdef bint running = True
    cdef uint64_t cpu0
    ex.attach(ring)
    with nogil:
        _begin(x, rg, prefault)
        cpu0 = thread_cpu_ns()
        exec_start_walk(x, rg, consumer_id)
        while running:
            end = ring_available(rg)
            if end == x.loop_seqno:
                if _wait_for_log(x, rg, consumer_id, x.loop_seqno):
                    break
                continue
            running = exec_batch(x, rg, consumer_id, end)
        _end(x, cpu0)


# ---------------------------------------------------------------------------
# single (a log in memory)
# ---------------------------------------------------------------------------

def run_single(Executor ex, BroadcastRing ring, bint prefault=True):
    """Sequential baseline: one process walks the log in place (no cursors,
    no atomics, no other process)."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef uint64_t seqno = 0, end, n = 0
    cdef const Descriptor *d
    cdef uint64_t cpu0
    ex.attach(ring)
    with nogil:
        if prefault:
            _prefault(rg)
        cnt.start_ns = monotonic_ns()
        cpu0 = thread_cpu_ns()
        end = ring_available(rg)
        while seqno != end:
            d = ring_descriptor(rg, seqno)
            prefetch(ring_descriptor(rg, seqno + PREFETCH_AHEAD))
            seqno += 1
            n += 1
            if not exec_handle(x, d, seqno - 1):
                break
            if n % MAX_BATCH == 0:
                exec_publish_progress(x)
        exec_publish_progress(x)
        cnt.records += n
        cnt.position += n
        _end(x, cpu0)


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


def run_mimd(Executor ex, BroadcastRing ring, uint32_t nworkers, bint prefault=True):
    """The foil: N workers claim descriptors from ONE shared cursor and
    process them on ONE shared core state, serialised by a ticket lock in log
    order (so the TCP state stays correct), then do all of that descriptor's
    outputs outside the lock.  The core must have been created over shared
    memory (state_buffer) with replicas=1, and the executor with
    shared_state.  The log is given back by the lock holder up to the oldest
    descriptor any worker still works on."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef RuntimeHeader *h = x.h
    cdef uint64_t seqno, end, low, v, released = 0
    cdef uint32_t w
    cdef const Descriptor *d
    cdef bint stop = False
    cdef const uint8_t *frame
    cdef _Turn turn
    cdef _Done done
    cdef WaitCounters waits
    cdef uint64_t cpu0
    if not x.shared_state:
        raise ValueError("run_mimd needs an executor over the shared core state (shared_state=True)")
    ex.attach(ring)
    turn.h = h
    done.h = h
    waits.spins = 0
    waits.sleeps = 0
    waits.timeouts = 0
    with nogil:
        atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
        _begin(x, rg, prefault)
        cpu0 = thread_cpu_ns()
        while not stop:
            seqno = atomic_load_acquire_u64(&h.claim_position)
            end = ring_available(rg)
            if seqno == end:
                if _wait_for_log(x, rg, 0, seqno):
                    break
                continue
            # announce before claiming, so the log is never given back early
            atomic_store_release_u64(&cnt.inflight, seqno)
            if not atomic_cas_weak_relaxed_u64(&h.claim_position, &seqno, seqno + 1):
                continue
            d = ring_descriptor(rg, seqno)
            # the lock: descriptors are applied to the shared state in log order
            turn.ticket = <uint32_t>seqno
            if not _my_turn(&turn):
                cnt.lock_waits += 1
                while wait_for(_my_turn, &turn, &h.turn_wait.eventcount, &h.stop, WAIT_SPIN,
                               WAIT_TIMEOUT_NS, &waits) != 0 and not atomic_load_acquire_u32(&h.stop):
                    cnt.heartbeat_ns = monotonic_ns()
            if not _my_turn(&turn):
                break                                   # stopped while waiting
            frame = exec_apply(x, d, seqno, &stop)
            # give back the log up to the oldest descriptor still in flight
            low = seqno + 1
            for w in range(nworkers):
                v = atomic_load_acquire_u64(&h.counters[w].inflight)
                if v < low:
                    low = v
            if low > released and low != <uint64_t>-1:
                ring_release(rg, 0, low, ring_descriptor(rg, low - 1).data_end, 0)
                released = low
            # unlock: the next ticket may go while we do our outputs
            atomic_store_release_u32(&h.turn, <uint32_t>(seqno + 1))
            ec_notify(&h.turn_wait.eventcount)
            exec_run_actions(x, frame)
            if frame != NULL:
                exec_note_latency(x, d.now_ns)
            # completion in log order: readable data must have no holes left
            # by a slower worker still copying an earlier descriptor
            done.seqno = seqno
            if not _earlier_done(&done):
                cnt.lock_waits += 1
                while wait_for(_earlier_done, &done, &h.done_wait.eventcount, &h.stop, WAIT_SPIN,
                               WAIT_TIMEOUT_NS, &waits) != 0 and not atomic_load_acquire_u32(&h.stop):
                    cnt.heartbeat_ns = monotonic_ns()
            exec_publish_pending(x)
            atomic_store_release_u64(&h.done_seqno, seqno + 1)
            ec_notify(&h.done_wait.eventcount)
            exec_flush_held(x)
            exec_signal_ready(x)
            cnt.heartbeat_ns = monotonic_ns()
            exec_publish_stats(x, cnt.heartbeat_ns)
            atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
            cnt.records += 1
            cnt.position += 1
        cnt.sleeps += waits.sleeps
        cnt.spins += waits.spins
        _end(x, cpu0)
        atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
        # whoever ran the STOP record tells the others
        atomic_store_release_u32(&h.stop, 1)
        ec_notify(&h.turn_wait.eventcount)
        ec_notify(&h.done_wait.eventcount)


# ---------------------------------------------------------------------------
# leader and helpers (the other foil)
# ---------------------------------------------------------------------------

cdef inline char *_receive_area(Exec *x, uint32_t handle) noexcept nogil:
    cdef int err = 0
    cdef uint32_t slot = handle_slot(handle)
    if x.rcv_maps[slot] == NULL:
        x.rcv_maps[slot] = mirror_map(x.rcv_fd, <uint64_t>slot * x.rcvbuf, x.rcvbuf, &err)
    return x.rcv_maps[slot]


cdef void _copy_piece(Exec *x, uint32_t handle, uint64_t stream_off, const uint8_t *src,
                      uint32_t length) noexcept nogil:
    cdef char *dst = _receive_area(x, handle)
    if dst != NULL:
        memcpy(dst + (stream_off % x.rcvbuf), src, length)
        x.cnt.copies += 1
        x.cnt.bytes_copied += length


def run_leader(Executor ex, BroadcastRing ring, HandoffQueues queues, uint32_t nworkers, uint64_t stripe,
               bint prefault=True):
    """The leader: runs the only core (replicas=1) over every descriptor and
    carries out every output itself except the copies of stripes it does not
    own: those go to the helper that owns them (stripe s belongs to worker
    s % nworkers, as in misd).  At the end of each batch every helper gets a
    mark: the readable offsets to publish once its copies are done, and how
    far it may release the log."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef Replica *rx = x.rx
    cdef uint64_t seqno, end, n, data_end
    cdef const Descriptor *d
    cdef const uint8_t *frame
    cdef bint stop = False
    cdef uint64_t cpu0, s, e, piece_end, idx
    cdef uint32_t i, owner, h
    cdef uint32_t readable_handle = NO_CONN
    cdef uint64_t readable_off = 0
    cdef CopyWork work
    cdef Handoff **helpers = <Handoff **>calloc(nworkers, sizeof(Handoff *))
    if helpers == NULL:
        raise MemoryError()
    for i in range(1, nworkers):
        helpers[i] = queues.queue(i - 1, &x.h.stop)
    ex.attach(ring)
    with nogil:
        _begin(x, rg, prefault)
        cpu0 = thread_cpu_ns()
        seqno = rg.ctl.consumers[0].cursor
        data_end = rg.ctl.consumers[0].data_cursor
        while not stop:
            end = ring_available(rg)
            if end == seqno:
                if _wait_for_log(x, rg, 0, seqno):
                    break
                continue
            if end - seqno > MAX_BATCH:
                end = seqno + MAX_BATCH
            n = 0
            while seqno != end and not stop:
                d = ring_descriptor(rg, seqno)
                prefetch(ring_descriptor(rg, seqno + PREFETCH_AHEAD))
                frame = exec_apply(x, d, seqno, &stop)
                seqno += 1
                data_end = d.data_end
                n += 1
                # hand the copies of other workers' stripes over; the rest as usual
                for i in range(rx.nactions):
                    if rx.actions[i].kind == ACT_COPY:
                        s = rx.actions[i].stream_off
                        e = s + rx.actions[i].length
                        while s < e:
                            idx = s // stripe
                            piece_end = (idx + 1) * stripe
                            if piece_end > e:
                                piece_end = e
                            owner = <uint32_t>(idx % nworkers)
                            if owner == 0:
                                _copy_piece(x, rx.actions[i].handle, s,
                                            frame + rx.actions[i].frame_off + (s - rx.actions[i].stream_off),
                                            <uint32_t>(piece_end - s))
                            else:
                                work.source = d.data + rx.actions[i].frame_off + (s - rx.actions[i].stream_off) \
                                    if d.kind == REC_SEGMENT else \
                                    d.data + VNET_HDR_LEN + rx.actions[i].frame_off + (s - rx.actions[i].stream_off)
                                work.stream_off = s
                                work.length = <uint32_t>(piece_end - s)
                                work.handle = rx.actions[i].handle
                                work.release = (d.frame_flags & FRAME_IN_DEVICE) != 0
                                handoff_push(helpers[owner], &work)
                            s = piece_end
                        rx.actions[i].kind = 0           # done here: the executor skips it
                    elif rx.actions[i].kind == ACT_NOTIFY and rx.actions[i].code == N_READABLE:
                        readable_handle = rx.actions[i].handle
                        readable_off = rx.actions[i].stream_off
                exec_run_actions(x, frame)
                if frame != NULL:
                    exec_note_latency(x, d.now_ns)
            exec_publish_progress(x)
            for i in range(1, nworkers):
                work.source = data_end
                work.stream_off = readable_off
                work.length = 0
                work.handle = readable_handle
                work.release = seqno
                handoff_push(helpers[i], &work)
                handoff_publish(helpers[i])
            readable_handle = NO_CONN
            cnt.records += n
            cnt.position += n
            ring_release(rg, 0, seqno, data_end, n)
            exec_flush_held(x)
            exec_signal_ready(x)
            exec_publish_stats(x, monotonic_ns())
        for i in range(1, nworkers):
            work.source = data_end
            work.stream_off = 0
            work.length = 0
            work.handle = HANDOFF_END
            work.release = seqno
            handoff_push(helpers[i], &work)
            handoff_publish(helpers[i])
        _end(x, cpu0)
    free(helpers)


def run_helper(Executor ex, BroadcastRing ring, HandoffQueues queues, uint32_t worker, bint prefault=True):
    """A helper of the leader: copies what it is handed, publishes its
    progress and releases the log where the marks say."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef Handoff *q = queues.queue(worker - 1, &x.h.stop)
    cdef uint64_t head = 0, tail, records = 0
    cdef CopyWork *w
    cdef uint64_t cpu0
    cdef bint running = True
    ex.attach(ring)
    with nogil:
        _begin(x, rg, prefault)
        cpu0 = thread_cpu_ns()
        while running:
            tail = handoff_wait(q, head)
            if tail == head:
                break
            while head != tail:
                w = &q.slots[head & q.mask]
                if w.length:
                    _copy_piece(x, w.handle, w.stream_off,
                                <const uint8_t *>(rg.device + w.source if w.release else ring_data(rg, w.source)),
                                w.length)
                else:
                    if w.handle != NO_CONN and w.handle != HANDOFF_END:
                        atomic_store_release_u64(&x.progress[handle_slot(w.handle)],
                                                 progress_word(w.handle, w.stream_off))
                        ready_touch(&x.touched, w.handle, READY_READ)
                    ring_release(rg, worker, w.release, w.source, w.release - records)
                    records = w.release
                    if w.handle == HANDOFF_END:
                        running = False
                head += 1
            handoff_done(q, head)
            exec_signal_ready(x)
            cnt.records = records
            cnt.position = records
        _end(x, cpu0)


# ---------------------------------------------------------------------------
# copy-only (the ceiling)
# ---------------------------------------------------------------------------

def run_copy_only(Executor ex, BroadcastRing ring, uint32_t worker, uint32_t nworkers, uint64_t stripe,
                  uint32_t handle, bint prefault=True):
    """The memory-bandwidth ceiling of the parallel part: every worker reads
    the log and copies the stripes it owns to the receive buffer, nothing
    else -- no TCP.  Stream offsets come from sequence numbers relative to
    the first SYN in the log (so it is meant for logs of one connection).
    Publishes the end of the stream it has seen as its progress."""
    cdef Ring *rg = &ring.ring
    cdef Exec *x = &ex.x
    cdef WorkerCounters *cnt = x.cnt
    cdef uint64_t seqno, end, n, data_end, cpu0, s, e, piece_end, idx, top = 0
    cdef const Descriptor *d
    cdef const uint8_t *f
    cdef uint32_t base = 0
    cdef bint have_base = False, running = True
    cdef uint64_t off64, last_off = 0
    cdef uint32_t last_seq = 0
    cdef uint32_t ipl
    ex.attach(ring)
    with nogil:
        _begin(x, rg, prefault)
        cpu0 = thread_cpu_ns()
        seqno = rg.ctl.consumers[worker].cursor
        data_end = rg.ctl.consumers[worker].data_cursor
        while running:
            end = ring_available(rg)
            if end == seqno:
                if _wait_for_log(x, rg, worker, seqno):
                    break
                continue
            if end - seqno > MAX_BATCH:
                end = seqno + MAX_BATCH
            n = 0
            while seqno != end:
                d = ring_descriptor(rg, seqno)
                prefetch(ring_descriptor(rg, seqno + PREFETCH_AHEAD))
                seqno += 1
                n += 1
                data_end = d.data_end
                if d.kind == REC_STOP:
                    running = False
                    break
                if d.kind == REC_FRAME and not have_base and d.length >= VNET_HDR_LEN + IP_HDR_LEN + 20:
                    f = <const uint8_t *>ring_bytes(rg, d) + VNET_HDR_LEN
                    ipl = IP6_HDR_LEN if (f[0] >> 4) == 6 else (f[0] & 0x0f) * 4
                    if f[ipl + TCP_FLAGS] & TH_SYN:
                        base = rd32(f + ipl + TCP_SEQUENCE) + 1
                        have_base = True
                        last_seq = base
                    continue
                if d.kind != REC_SEGMENT or not have_base or d.length == 0:
                    continue
                off64 = last_off + <uint64_t>(<int64_t>(<int32_t>(d.seq - last_seq)))
                last_off = off64
                last_seq = d.seq
                s = off64
                e = off64 + d.length
                if e > top:
                    top = e
                while s < e:
                    idx = s // stripe
                    piece_end = (idx + 1) * stripe
                    if piece_end > e:
                        piece_end = e
                    if idx % nworkers == worker:
                        _copy_piece(x, handle, s, <const uint8_t *>ring_bytes(rg, d) + (s - off64),
                                    <uint32_t>(piece_end - s))
                    s = piece_end
            atomic_store_release_u64(&x.progress[0], progress_word(handle, top))
            cnt.records += n
            cnt.position += n
            ring_release(rg, worker, seqno, data_end, n)
        _end(x, cpu0)


# ---------------------------------------------------------------------------
# single on a live device
# ---------------------------------------------------------------------------

ctypedef struct _Direct:
    Intake intake
    uint8_t *buffer
    Exec *x
    bint device_ring             # frames come from a packet ring's slots (else read() on the fd)
    PacketRx rx
    EthernetLink link
    uint32_t head                # the next slot to look at


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


cdef uint32_t _direct_slots(_Direct *d) noexcept nogil:
    """A packet ring: up to a batch of frames straight from their slots --
    the link step, the core on the IP packet where it lies, its outputs (the
    copies into the receive buffer among them) -- each slot given back as
    soon as its frame is done.  Returns how many slots were taken."""
    cdef uint32_t count = 0, n
    cdef tpacket2_hdr *h
    cdef LinkFrame lf
    cdef int r
    while count < d.intake.batch:
        h = rx_slot(&d.rx, d.head)
        if not rx_slot_ready(h):
            break
        d.intake.now = monotonic_ns()
        r = link_receive(&d.link, h, &lf)
        if r == LINK_IPV4 and (d.intake.stages.faults != NULL or d.intake.stages.pcap != NULL):
            n = link_as_tun_frame(&lf, d.buffer, INTAKE_MAX_FRAME)
            if n:
                stages_apply(&d.intake.stages, d.buffer, n, d.intake.now, _direct_frame, d)
        elif r == LINK_IPV4:
            d.x.cnt.frames += 1
            core_frame(d.x.st, d.x.rx, lf.ip, lf.ip_len, lf.flags, lf.gso_size, d.intake.now)
            exec_run_actions(d.x, lf.ip)
            exec_note_latency(d.x, d.intake.now)
        elif r != LINK_ANSWERED:
            d.x.cnt.frames += 1
            core_dropped(d.x.st, d.x.rx, r, d.intake.now)
            exec_run_actions(d.x, NULL)
        rx_slot_give_back(h)
        d.head = rx_next(&d.rx, d.head)
        count += 1
    return count


def run_single_device(Executor ex, int device_fd, MessageQueue requests, int wake_fd,
                      uint64_t tick_ns=5000000, FaultInjector input_faults=None, RxRing device_ring=None,
                      bytes link_mac=None, bytes peer_mac=None):
    """The `single` strategy on a live device: one process reads the device,
    runs the core and performs every output itself -- no ring, no replicas.
    Input frames pass through the same stages as the sequencer's (capture
    shared with the executor's output, `input_faults` for the faults).
    `device_ring`: frames come from this packet ring (its socket is
    `device_fd`), with the stack's `link_mac` and the kernel end's
    `peer_mac`."""
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
    d.device_ring = device_ring is not None
    d.head = 0
    if d.device_ring:
        if device_ring.closed:
            free(d.buffer)
            raise ValueError("the device's receive ring is closed")
        if link_mac is None or peer_mac is None or len(link_mac) != 6 or len(peer_mac) != 6:
            free(d.buffer)
            raise ValueError("a packet-ring device needs its own and its peer's 6-byte MAC address")
        d.rx = device_ring.rx
        link_init(&d.link, <const uint8_t *><const char *>link_mac, <const uint8_t *><const char *>peer_mac,
                  st.cfg.local_addr, d.rx.fd)
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
            got += _direct_slots(&d) if d.device_ring else intake_round(&d.intake, _direct_buffer, _direct_frame, &d)
            got += stages_release_due(&d.intake.stages, monotonic_ns(), _direct_frame, &d)
            exec_publish_progress(x)
            cnt.records += got
            exec_flush_held(x)
            exec_signal_ready(x)
            now = monotonic_ns()
            exec_publish_stats(x, now)
            if got:
                last = now
                continue
            if now - last >= tick_ns:
                cnt.ticks += 1
                core_tick(st, rx, now)
                exec_run_actions(x, NULL)
                exec_publish_progress(x)
                last = now
            atomic_store_release_u32(&h.sequencer_sleeping, 1)
            if mq_try_take(q, &message):
                atomic_store_release_u32(&h.sequencer_sleeping, 0)
                cnt.requests += 1
                apply_request(st, rx, <const uint8_t *>&message, monotonic_ns())
                exec_run_actions(x, NULL)
                exec_publish_progress(x)
                continue
            poll(fds, 2, <int>(tick_ns // 1000000) or 1)
            atomic_store_release_u32(&h.sequencer_sleeping, 0)
            if fds[1].revents & POLLIN:
                read(wake_fd, scratch, 8)
        cnt.end_ns = monotonic_ns()
    free(d.buffer)
