# cython: language_level=3
"""The sequencer: the single writer of the event log (compiled loop).

It does as little as possible, because it is the serial fraction:

1. drains the request queue into REC_REQUEST records (so every application
   request enters the log at one position, seen by all replicas);
2. takes frames from the device (runtime/intake.pxd) straight into ring
   memory -- one copy, done by the kernel -- through the input frame stages
   (faults, pcap), and publishes each as a REC_FRAME record;
3. when the link is idle, publishes REC_TICK records so timers fire;
4. writes REC_DIGEST records for the replica-divergence check and
   REC_CHECKPOINT records for worker recovery.

Time stamps come from CLOCK_MONOTONIC here and only here: replicas never
read a clock.  When idle it sleeps in poll() on the device and an eventfd that
applications write only when it says it is asleep.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy

from misdtcp._system cimport (pollfd, poll, POLLIN, atomic_load_acquire_u32, atomic_store_release_u32,
                              atomic_fence_seq_cst, monotonic_ns, read)
from misdtcp._ring cimport (BroadcastRing, Ring, ring_try_reserve, ring_wait_space, ring_commit, ring_stop)
from misdtcp.frameio.faults cimport FaultInjector
from misdtcp.frameio.pcap cimport PcapWriter, pcap_flush
from misdtcp.frameio.stages cimport EMIT_IN_PLACE, EMIT_CORRUPTED, stages_release_due, stages_next_due_ns
from misdtcp.runtime.intake cimport Intake, INTAKE_MAX_FRAME, intake_round
from misdtcp.runtime.layout cimport RuntimeHeader
from misdtcp.runtime.queue cimport Message, MessageQueue, MsgQueue, mq_try_take
from misdtcp.runtime.shm cimport MirroredBuffer
from misdtcp.runtime.vocabulary cimport REC_FRAME, REC_REQUEST, REC_TICK, REC_DIGEST, REC_STOP, REC_CHECKPOINT
from misdtcp.runtime.wait cimport WAIT_SPIN, WAIT_STOPPED, WAIT_TIMEOUT_NS
from misdtcp.wire.frame cimport FRAME_VERIFY_CSUM
from misdtcp.wire.vnet cimport virtio_net_hdr, vnet_frame_flags, vnet_gso_size

cdef enum:
    BATCH = 64           # frames read per round before looking at requests again


ctypedef struct Sequencer:
    Ring *ring
    RuntimeHeader *h
    MsgQueue *requests
    Intake intake
    uint64_t digest_every
    uint64_t since_digest
    uint64_t digest_round


cdef char *_reserve(Sequencer *s, uint32_t n) noexcept nogil:
    """Room for a record, waiting (the one wait policy) while the slowest
    worker is a whole ring behind; NULL once stopping."""
    cdef char *p
    while True:
        p = ring_try_reserve(s.ring, n)
        if p != NULL:
            return p
        if atomic_load_acquire_u32(&s.h.stop):
            return NULL
        if ring_wait_space(s.ring, n, WAIT_SPIN, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
            return NULL


cdef bint _publish(Sequencer *s, const uint8_t *data, uint32_t n, uint16_t kind, uint16_t flags,
                   uint16_t gso_size, uint64_t now) noexcept nogil:
    """A record whose payload is copied in (requests, ticks, frames that went
    through the fault injector's pool or were duplicated)."""
    cdef char *p = _reserve(s, n)
    if p == NULL:
        return False
    if n:
        memcpy(p, data, n)
    ring_commit(s.ring, n, kind, flags, gso_size, 0, 0, now)
    s.h.sequencer_records += 1
    return True


cdef uint8_t *_frame_buffer(void *context, uint32_t room) noexcept nogil:
    """The device reads the next frame straight into ring memory."""
    return <uint8_t *>_reserve(<Sequencer *>context, room)


cdef void _frame_in(void *context, uint8_t *frame, uint32_t n, uint32_t how) noexcept nogil:
    """Publish one frame: where it lies in the ring if it is still there,
    else as a copy; then a digest record every `digest_every` frames."""
    cdef Sequencer *s = <Sequencer *>context
    cdef const virtio_net_hdr *v = <const virtio_net_hdr *>frame
    cdef uint16_t flags = FRAME_VERIFY_CSUM if how & EMIT_CORRUPTED else vnet_frame_flags(v)
    cdef uint8_t dbuf[8]
    if how & EMIT_IN_PLACE:
        ring_commit(s.ring, n, REC_FRAME, flags, vnet_gso_size(v), 0, 0, s.intake.now)
        s.h.sequencer_records += 1
    elif not _publish(s, frame, n, REC_FRAME, flags, vnet_gso_size(v), s.intake.now):
        return
    s.since_digest += 1
    if s.digest_every and s.since_digest >= s.digest_every:
        s.since_digest = 0
        memcpy(dbuf, &s.digest_round, 8)
        _publish(s, dbuf, 8, REC_DIGEST, 0, 0, s.intake.now)
        s.digest_round += 1


def run_sequencer(BroadcastRing ring, MessageQueue requests, MirroredBuffer block, int device_fd,
                  int wake_fd, *, uint64_t tick_ns=5000000, uint64_t digest_every=0,
                  FaultInjector faults=None, PcapWriter pcap=None, uint64_t checkpoint_bytes=0):
    """Run until the runtime's stop flag is set; then publish REC_STOP.
    With `pcap`, every frame that enters the log is captured (after fault
    injection: what the stack really received)."""
    cdef Sequencer s
    cdef Message message
    cdef uint64_t now, last = 0, last_checkpoint = 0
    cdef uint32_t got
    cdef pollfd fds[2]
    cdef int timeout_ms
    cdef int64_t due
    cdef uint8_t dbuf[8]
    s.ring = &ring.ring
    s.h = <RuntimeHeader *>block.base
    s.requests = &requests.queue
    s.digest_every = digest_every
    s.since_digest = 0
    s.digest_round = 0
    s.intake.fd = device_fd
    s.intake.batch = BATCH
    s.intake.now = 0
    s.intake.stages.faults = &faults.state if faults is not None else NULL
    s.intake.stages.pcap = &pcap.file if pcap is not None else NULL
    s.intake.stages.pcap_offset_ns = pcap.realtime_offset_ns if pcap is not None else 0
    with nogil:
        fds[0].fd = device_fd
        fds[0].events = POLLIN
        fds[1].fd = wake_fd
        fds[1].events = POLLIN
        while not atomic_load_acquire_u32(&s.h.stop):
            now = monotonic_ns()
            s.h.sequencer_heartbeat_ns = now
            got = 0
            # 1. application requests, in the order they were posted
            while mq_try_take(s.requests, &message):
                if not _publish(&s, <const uint8_t *>&message, sizeof(Message), REC_REQUEST, 0, 0, now):
                    break
                got += 1
            # 2. frames, read straight into the ring
            got += intake_round(&s.intake, _frame_buffer, _frame_in, &s)
            # recovery checkpoints: workers snapshot their state here and the
            # ring reclaims space only up to the latest one
            if checkpoint_bytes and s.ring.ctl.producer.cursor - last_checkpoint >= checkpoint_bytes:
                last_checkpoint = s.ring.ctl.producer.cursor
                _publish(&s, dbuf, 0, REC_CHECKPOINT, 0, 0, now)
            # held frames that are due (reorder / delay)
            got += stages_release_due(&s.intake.stages, monotonic_ns(), _frame_in, &s)
            if got:
                last = now
                continue
            # 3. idle: a tick when timers may be due, then sleep in poll()
            now = monotonic_ns()
            if now - last >= tick_ns:
                _publish(&s, dbuf, 0, REC_TICK, 0, 0, now)
                last = now
            timeout_ms = <int>(tick_ns // 1000000) or 1
            due = stages_next_due_ns(&s.intake.stages)
            if due - <int64_t>now < <int64_t>timeout_ms * 1000000:
                timeout_ms = <int>((due - <int64_t>now) // 1000000) + 1
            atomic_store_release_u32(&s.h.sequencer_sleeping, 1)
            atomic_fence_seq_cst()
            if mq_try_take(s.requests, &message):
                atomic_store_release_u32(&s.h.sequencer_sleeping, 0)
                _publish(&s, <const uint8_t *>&message, sizeof(Message), REC_REQUEST, 0, 0, monotonic_ns())
                continue
            poll(fds, 2, timeout_ms)
            atomic_store_release_u32(&s.h.sequencer_sleeping, 0)
            if fds[1].revents & POLLIN:
                read(wake_fd, dbuf, 8)
        # the end of the log
        if s.intake.stages.pcap != NULL:
            pcap_flush(s.intake.stages.pcap)
        memcpy(dbuf, &s.digest_round, 8)
        _publish_stop(s.ring, dbuf, monotonic_ns())


cdef void _publish_stop(Ring *rg, uint8_t *dbuf, uint64_t now) noexcept nogil:
    # STOP may find the ring full if a worker is dead; give up after a wait.
    cdef char *p = ring_try_reserve(rg, 8)
    if p == NULL:
        if ring_wait_space(rg, 8, WAIT_SPIN, WAIT_TIMEOUT_NS) != 0:
            ring_stop(rg)
            return
        p = ring_try_reserve(rg, 8)
        if p == NULL:
            ring_stop(rg)
            return
    memcpy(p, dbuf, 8)
    ring_commit(rg, 8, REC_STOP, 0, 0, 0, 0, now)
