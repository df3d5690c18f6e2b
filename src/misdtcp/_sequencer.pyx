# cython: language_level=3
"""The sequencer: the single writer of the event log (compiled loop).

It does as little as possible, because it is the serial fraction:

1. drains the application command queue into REC_COMMAND records (so every
   application request enters the log at one position, seen by all replicas);
2. reads the TUN straight into ring memory — one copy, done by the kernel —
   translates the virtio header into frame flags and publishes REC_FRAME;
3. when the link is idle, publishes REC_TICK records so timers fire;
4. optionally passes frames through the seeded fault injector, and writes
   REC_DIGEST checkpoints for the replica-divergence check.

Time stamps come from CLOCK_MONOTONIC here and only here: replicas never
read a clock.  When idle it sleeps in poll() on the TUN and an eventfd that
applications write only when it says it is asleep.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy

from misdtcp._system cimport (pollfd, poll, POLLIN, atomic_load_acquire_u32, atomic_store_release_u32, atomic_fence_seq_cst,
                              monotonic_ns)
from misdtcp._ring cimport (Ring, Command, CmdQueue, BroadcastRing, CommandQueue, MirroredBuffer,
                            ring_try_reserve, ring_wait_space, ring_commit, ring_stop, cmdq_try_take,
                            REC_FRAME, REC_COMMAND, REC_TICK, REC_DIGEST, REC_STOP, WAIT_STOPPED)
from misdtcp._vnet cimport virtio_net_hdr, VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID, vnet_is_gso
from misdtcp._wire cimport FRAME_CSUM_PARTIAL, FRAME_CSUM_VALID, FRAME_VERIFY_CSUM
from misdtcp._worker cimport RuntimeHeader, REC_CHECKPOINT
from misdtcp._pcap cimport PcapWriter, PcapFile, pcap_write, pcap_flush
from misdtcp._faults cimport (FaultInjector, FaultState, HeldFrame, fault_decide, fault_corrupt,
                              fault_hold_for, fault_due, fault_release, fault_next_due_ns,
                              FAULT_DROP, FAULT_CORRUPT, FAULT_DUPLICATE, FAULT_REORDER, FAULT_DELAY)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)


cdef extern from "<errno.h>" nogil:
    int errno
    enum: EAGAIN, EINTR

cdef enum:
    MAX_RECORD = 65536 + 64
    SPIN = 1000
    BATCH = 64           # frames read per round before looking at commands again

cdef uint64_t WAIT_NS = 50000000ULL


cdef inline uint16_t _frame_flags(const virtio_net_hdr *v) noexcept nogil:
    cdef uint16_t f = 0
    if v.flags & VNET_F_NEEDS_CSUM:
        f |= FRAME_CSUM_PARTIAL
    elif v.flags & VNET_F_DATA_VALID:
        f |= FRAME_CSUM_VALID
    return f


cdef inline char *_reserve(Ring *rg, uint32_t n, RuntimeHeader *h) noexcept nogil:
    """Room for a record, waiting (spin, then futex) while the slowest
    worker is a whole ring behind; NULL once stopping."""
    cdef char *p
    while True:
        p = ring_try_reserve(rg, n)
        if p != NULL:
            return p
        if atomic_load_acquire_u32(&h.stop):
            return NULL
        if ring_wait_space(rg, n, SPIN, WAIT_NS) == WAIT_STOPPED:
            return NULL


cdef inline bint _publish_copy(Ring *rg, RuntimeHeader *h, const uint8_t *data, uint32_t n,
                               uint16_t kind, uint64_t now) noexcept nogil:
    cdef char *p = _reserve(rg, n, h)
    cdef const virtio_net_hdr *v
    cdef uint16_t flags = 0, gso = 0
    if p == NULL:
        return False
    memcpy(p, data, n)
    if kind == REC_FRAME:
        v = <const virtio_net_hdr *>p
        flags = _frame_flags(v)
        if vnet_is_gso(v):
            gso = v.gso_size
    ring_commit(rg, n, kind, flags, gso, 0, 0, now)
    h.sequencer_records += 1
    return True


def run_sequencer(BroadcastRing ring, CommandQueue commands, MirroredBuffer block, int tun_fd,
                  int wake_fd, *, uint64_t tick_ns=5000000, uint64_t digest_every=0,
                  FaultInjector faults=None, PcapWriter pcap=None, uint64_t checkpoint_bytes=0):
    """Run until the runtime's stop flag is set; then publish REC_STOP.
    With `pcap`, every frame that enters the log is captured (after fault
    injection: what the stack really received)."""
    cdef Ring *rg = &ring.ring
    cdef CmdQueue *q = &commands.queue
    cdef RuntimeHeader *h = <RuntimeHeader *>block.base
    cdef FaultState *fs = &faults.state if faults is not None else NULL
    cdef Command cmd
    cdef char *p
    cdef ssize_t n
    cdef uint64_t now, last = 0, since_digest = 0, digest_round = 0
    cdef uint32_t action, i, got
    cdef virtio_net_hdr *v
    cdef HeldFrame *held
    cdef pollfd fds[2]
    cdef int timeout_ms
    cdef int64_t due
    cdef uint8_t dbuf[8]
    cdef uint16_t flags, gso
    cdef PcapFile *pf = &pcap.file if pcap is not None else NULL
    cdef uint64_t last_checkpoint = 0
    cdef int64_t pcap_offset = pcap.realtime_offset_ns if pcap is not None else 0
    with nogil:
        fds[0].fd = tun_fd
        fds[0].events = POLLIN
        fds[1].fd = wake_fd
        fds[1].events = POLLIN
        while not atomic_load_acquire_u32(&h.stop):
            now = monotonic_ns()
            h.sequencer_heartbeat_ns = now
            got = 0
            # 1. application requests, in the order they were posted
            while cmdq_try_take(q, &cmd):
                if not _publish_copy(rg, h, <const uint8_t *>&cmd, sizeof(Command), REC_COMMAND, now):
                    break
                got += 1
            # 2. frames, read straight into the ring
            i = 0
            while i < BATCH:
                p = _reserve(rg, MAX_RECORD, h)
                if p == NULL:
                    break
                n = read(tun_fd, p, MAX_RECORD)
                if n <= <ssize_t>VNET_HDR_LEN:
                    break
                i += 1
                got += 1
                now = monotonic_ns()
                v = <virtio_net_hdr *>p
                if fs != NULL:
                    action = fault_decide(fs, <int64_t>now)
                    if action & FAULT_DROP:
                        continue
                    if action & FAULT_CORRUPT:
                        fault_corrupt(fs, v, <uint8_t *>p + VNET_HDR_LEN, <uint32_t>n - VNET_HDR_LEN)
                    if action & (FAULT_REORDER | FAULT_DELAY):
                        if fault_hold_for(fs, <const uint8_t *>p, <uint32_t>n, 0, action, <int64_t>now) == 0:
                            continue
                    flags = _frame_flags(v)
                    gso = v.gso_size if vnet_is_gso(v) else 0
                    if action & FAULT_CORRUPT:
                        flags = FRAME_VERIFY_CSUM
                    ring_commit(rg, <uint32_t>n, REC_FRAME, flags, gso, 0, 0, now)
                    h.sequencer_records += 1
                    if pf != NULL:
                        pcap_write(pf, <int64_t>now + pcap_offset, <const uint8_t *>p + VNET_HDR_LEN,
                                   <uint32_t>n - VNET_HDR_LEN)
                    if action & FAULT_DUPLICATE:
                        _publish_copy(rg, h, <const uint8_t *>p, <uint32_t>n, REC_FRAME, now)
                else:
                    ring_commit(rg, <uint32_t>n, REC_FRAME, _frame_flags(v),
                                v.gso_size if vnet_is_gso(v) else 0, 0, 0, now)
                    h.sequencer_records += 1
                    if pf != NULL:
                        pcap_write(pf, <int64_t>now + pcap_offset, <const uint8_t *>p + VNET_HDR_LEN,
                                   <uint32_t>n - VNET_HDR_LEN)
                since_digest += 1
                if digest_every and since_digest >= digest_every:
                    since_digest = 0
                    memcpy(dbuf, &digest_round, 8)
                    _publish_copy(rg, h, dbuf, 8, REC_DIGEST, now)
                    digest_round += 1
            # recovery checkpoints: workers snapshot their state here and the
            # ring reclaims space only up to the latest one
            if checkpoint_bytes and rg.ctl.producer.cursor - last_checkpoint >= checkpoint_bytes:
                last_checkpoint = rg.ctl.producer.cursor
                _publish_copy(rg, h, dbuf, 0, REC_CHECKPOINT, now)
            # held frames that are due (reorder / delay)
            if fs != NULL:
                held = fault_due(fs, <int64_t>monotonic_ns())
                while held != NULL:
                    _publish_copy(rg, h, held.data, held.length, REC_FRAME, monotonic_ns())
                    fault_release(fs, held)
                    got += 1
                    held = fault_due(fs, <int64_t>monotonic_ns())
            if got:
                last = now
                continue
            # 3. idle: a tick when timers may be due, then sleep in poll()
            now = monotonic_ns()
            if now - last >= tick_ns:
                _publish_copy(rg, h, dbuf, 0, REC_TICK, now)
                last = now
            timeout_ms = <int>(tick_ns // 1000000) or 1
            if fs != NULL:
                due = fault_next_due_ns(fs)
                if due > 0 and due - <int64_t>now < <int64_t>timeout_ms * 1000000:
                    timeout_ms = <int>((due - <int64_t>now) // 1000000) + 1
            atomic_store_release_u32(&h.sequencer_sleeping, 1)
            atomic_fence_seq_cst()
            if cmdq_try_take(q, &cmd):
                atomic_store_release_u32(&h.sequencer_sleeping, 0)
                _publish_copy(rg, h, <const uint8_t *>&cmd, sizeof(Command), REC_COMMAND, monotonic_ns())
                continue
            poll(fds, 2, timeout_ms)
            atomic_store_release_u32(&h.sequencer_sleeping, 0)
            if fds[1].revents & POLLIN:
                read(wake_fd, dbuf, 8)
        # the end of the log
        if pf != NULL:
            pcap_flush(pf)
        memcpy(dbuf, &digest_round, 8)
        _publish_copy_final(rg, dbuf, monotonic_ns())


cdef void _publish_copy_final(Ring *rg, uint8_t *dbuf, uint64_t now) noexcept nogil:
    # STOP may find the ring full if a worker is dead; give up after a wait.
    cdef char *p = ring_try_reserve(rg, 8)
    if p == NULL:
        if ring_wait_space(rg, 8, SPIN, WAIT_NS) != 0:
            ring_stop(rg)
            return
        p = ring_try_reserve(rg, 8)
        if p == NULL:
            ring_stop(rg)
            return
    memcpy(p, dbuf, 8)
    ring_commit(rg, 8, REC_STOP, 0, 0, 0, 0, now)


def sequencer_sleeping(MirroredBuffer block):
    return atomic_load_acquire_u32(&(<RuntimeHeader *>block.base).sequencer_sleeping) != 0
