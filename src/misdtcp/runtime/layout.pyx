# cython: language_level=3
"""The runtime's shared bookkeeping block: set-up and read access from Python.

The layout is described in layout.pxd; ``shared_size`` and ``init_shared``
compute every offset once and record it in the header, so the C loops and
this Python view read the same numbers.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

from misdtcp._system cimport (atomic_fence_seq_cst, atomic_load_acquire_u32, atomic_load_acquire_u64,
                              atomic_store_release_u32, atomic_store_release_u64)
from misdtcp._tcpcore cimport CoreStats, handle_slot
from misdtcp.runtime.shm cimport MirroredBuffer
from misdtcp.runtime.wait cimport ec_wake_all
from misdtcp.wire.drops cimport DROP_REASON_COUNT

from misdtcp.wire.drops import DROP_NAMES

cdef uint64_t RT_MAGIC = 0x6d69736472756e32ULL   # "misdrun2"

# The layout is shared between processes: pin the sizes the offsets rely on,
# and that every line some process writes often starts a cache line.
cdef RuntimeHeader _probe
cdef uint64_t _base = <uint64_t>&_probe
_LINE_STARTS = {
    "go": <uint64_t>&_probe.go - _base,
    "go_wait": <uint64_t>&_probe.go_wait - _base,
    "claim_position": <uint64_t>&_probe.claim_position - _base,
    "turn": <uint64_t>&_probe.turn - _base,
    "turn_wait": <uint64_t>&_probe.turn_wait - _base,
    "done_seqno": <uint64_t>&_probe.done_seqno - _base,
    "done_wait": <uint64_t>&_probe.done_wait - _base,
    "sent_wait": <uint64_t>&_probe.sent_wait - _base,
    "sequencer_records": <uint64_t>&_probe.sequencer_records - _base,
    "sequencer_copied": <uint64_t>&_probe.sequencer_copied - _base,
    "counters": <uint64_t>&_probe.counters - _base,
    "digests": <uint64_t>&_probe.digests - _base,
}
if sizeof(ConnInfo) != 192 or sizeof(ConnShare) != 32 or sizeof(ReadyWant) != 16:
    raise ImportError("misdtcp.runtime.layout: ConnInfo, ConnShare or ReadyWant changed size")
if sizeof(WorkerCounters) != 6 * LINE or sizeof(WaitWord) != LINE or any(v % LINE for v in _LINE_STARTS.values()):
    raise ImportError(f"misdtcp.runtime.layout: the shared header is not laid out on cache lines: {_LINE_STARTS}")


cdef inline uint64_t _line(uint64_t n) noexcept nogil:
    return (n + LINE - 1) & ~(<uint64_t>LINE - 1)


cdef uint64_t _row_bytes(uint32_t max_conns) noexcept nogil:
    return _line(<uint64_t>max_conns * 8)


def shared_size(uint32_t nworkers, uint32_t max_conns, uint64_t capture_size):
    """Bytes of the runtime's shared bookkeeping block."""
    return (_line(sizeof(RuntimeHeader)) + MAX_WORKERS * _row_bytes(max_conns) + 2 * _row_bytes(max_conns)
            + <uint64_t>nworkers * _line(capture_size) + _extra_size(nworkers, max_conns))


cdef uint64_t _extra_size(uint32_t nworkers, uint32_t max_conns) noexcept nogil:
    """The readiness words, the connection table and the per-worker shares."""
    return (_line(<uint64_t>max_conns * sizeof(ReadyWant)) + _line(<uint64_t>max_conns * sizeof(ConnInfo))
            + <uint64_t>nworkers * _line(<uint64_t>max_conns * sizeof(ConnShare)))


def init_shared(MirroredBuffer block, uint32_t nworkers, uint32_t max_conns, uint64_t rcvbuf,
                uint64_t sndbuf, uint64_t capture_size, bint shared_progress=False):
    """Lay out the block.  `shared_progress`: every worker publishes into one
    progress row, in log order (mimd, where one shared state serves all)."""
    cdef RuntimeHeader *h = <RuntimeHeader *>block.base
    cdef uint64_t total = shared_size(nworkers, max_conns, capture_size)
    if block.size < total:
        raise ValueError("shared block too small")
    if not 1 <= nworkers <= MAX_WORKERS:
        raise ValueError(f"{nworkers} workers is outside 1..{MAX_WORKERS}")
    memset(h, 0, sizeof(RuntimeHeader))
    h.nworkers = nworkers
    h.max_conns = max_conns
    h.progress_rows = 1 if shared_progress else nworkers
    h.rcvbuf = rcvbuf
    h.sndbuf = sndbuf
    h.capture_size = _line(capture_size)
    h.row_bytes = _row_bytes(max_conns)
    h.progress_offset = _line(sizeof(RuntimeHeader))
    h.acked_offset = h.progress_offset + MAX_WORKERS * h.row_bytes
    h.sent_offset = h.acked_offset + h.row_bytes
    h.capture_offset = h.sent_offset + h.row_bytes
    h.ready_offset = h.capture_offset + <uint64_t>nworkers * h.capture_size
    h.conntable_offset = h.ready_offset + _line(<uint64_t>max_conns * sizeof(ReadyWant))
    h.shares_offset = h.conntable_offset + _line(<uint64_t>max_conns * sizeof(ConnInfo))
    h.shares_row_bytes = _line(<uint64_t>max_conns * sizeof(ConnShare))
    h.total_size = total
    h.magic = RT_MAGIC


cdef dict _conn_info(ConnInfo *r):
    return {"handle": r.handle, "state": r.state, "lport": r.lport, "raddr": r.raddr, "rport": r.rport,
            "snd_mss": r.snd_mss, "cwnd": r.cwnd, "ssthresh": r.ssthresh, "snd_wnd": r.snd_wnd,
            "rcv_wnd": r.rcv_wnd, "srtt_ns": r.srtt_ns, "rttvar_ns": r.rttvar_ns, "rto_ns": r.rto_ns,
            "retransmits": r.retransmits, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out,
            "segs_in": r.segs_in, "segs_out": r.segs_out, "rcv_nxt_off": r.rcv_nxt_off,
            "consumed_off": r.consumed_off, "snd_end_off": r.snd_end_off, "snd_una_off": r.snd_una_off,
            "raddr6": bytes(r.raddr6[:16]) if r.v6 else None}


cdef class SharedView:
    """Read access to the runtime's shared block from Python (counters,
    progress, digests) and the few control writes (go, stop)."""

    def __cinit__(self, MirroredBuffer block):
        self.block = block
        self.h = <RuntimeHeader *>block.base
        if self.h.magic != RT_MAGIC:
            raise ValueError("not a misdtcp runtime block")

    def go(self):
        atomic_store_release_u32(&self.h.go, 1)
        ec_wake_all(&self.h.go_wait.eventcount)

    def request_stop(self):
        atomic_store_release_u32(&self.h.stop, 1)
        ec_wake_all(&self.h.go_wait.eventcount)
        ec_wake_all(&self.h.turn_wait.eventcount)
        ec_wake_all(&self.h.done_wait.eventcount)
        ec_wake_all(&self.h.sent_wait.eventcount)

    def _clear_stop(self):
        """Test hook: let loops that returned on the stop flag run again (the
        recovery tests run a worker in phases, to exact log positions)."""
        atomic_store_release_u32(&self.h.stop, 0)

    @property
    def stopping(self):
        return atomic_load_acquire_u32(&self.h.stop) != 0

    @property
    def diverged(self):
        return atomic_load_acquire_u32(&self.h.diverged) != 0

    @property
    def diverged_round(self):
        return self.h.diverged_round

    @property
    def lost_actions(self):
        """None, or one sentence if a worker's core found its action list
        full and lost actions -- copies, segments or events never carried
        out: the stack can no longer be right and must stop."""
        cdef uint32_t w
        cdef uint64_t n
        for w in range(self.h.nworkers):
            n = self.h.counters[w].action_overflow
            if n:
                return f"worker {w} lost {n} action{'s' if n != 1 else ''} because its action list was full"
        return None

    @property
    def sequencer_sleeping(self):
        return atomic_load_acquire_u32(&self.h.sequencer_sleeping) != 0

    def sequencer(self):
        """The sequencer's published counters (about every millisecond)."""
        return {"records": self.h.sequencer_records, "frames": self.h.sequencer_frames,
                "coalesced": self.h.sequencer_coalesced, "cpu_ns": self.h.sequencer_cpu_ns,
                "inline_ns": self.h.sequencer_inline_ns, "read_ns": self.h.sequencer_read_ns,
                "in_place": self.h.sequencer_in_place, "copied": self.h.sequencer_copied,
                "arp_replies": self.h.sequencer_arp_replies, "slot_waits": self.h.sequencer_slot_waits,
                "slots_held": self.h.sequencer_slots_held}

    def readable(self, uint32_t handle):
        """Receive stream offset every worker has finished copying up to."""
        cdef uint32_t slot = handle_slot(handle)
        cdef uint32_t row
        cdef uint64_t v, low = <uint64_t>-1
        for row in range(self.h.progress_rows):
            v = progress_offset_of(handle, atomic_load_acquire_u64(&layout_progress(self.h, row)[slot]))
            if v < low:
                low = v
        return low

    def progress(self, uint32_t worker, uint32_t handle):
        """Receive stream offset up to which `worker` has done its copies."""
        return progress_offset_of(handle, atomic_load_acquire_u64(
            &layout_progress(self.h, worker)[handle_slot(handle)]))

    def progress_row(self, uint32_t worker):
        """The progress words `worker` published, one uint64 per connection slot, as bytes."""
        cdef uint64_t *row = layout_progress(self.h, worker)
        return (<char *>row)[:self.h.max_conns * 8]

    def acked_row(self):
        """The acknowledged-offset words (worker 0 publishes them), as bytes."""
        cdef uint64_t *row = layout_acked(self.h)
        return (<char *>row)[:self.h.max_conns * 8]

    def acked(self, uint32_t handle):
        """Send stream offset the peer has acknowledged (0 for a new connection)."""
        return progress_offset_of(handle, atomic_load_acquire_u64(&layout_acked(self.h)[handle_slot(handle)]))

    # -- readiness (runtime/readiness.pxd): the application's side -------------
    def arm_read(self, uint32_t handle, uint64_t seen):
        """Ask the workers for one READABLE message once the readable end
        passes `seen`; returns the readable end read after arming (the caller
        does not wait if it already passed).  Dekker's pattern with the
        workers: store, full fence, load -- they store progress, fence, load
        this word -- so at least one side sees the other."""
        cdef ReadyWant *want = &layout_ready(self.h)[handle_slot(handle)]
        atomic_store_release_u64(&want.read, progress_word(handle, seen + 1))
        atomic_fence_seq_cst()
        return self.readable(handle)

    def arm_write(self, uint32_t handle, uint64_t seen):
        """Ask for one WRITABLE message once the acknowledged send offset
        passes `seen`; returns the acknowledged offset read after arming."""
        cdef ReadyWant *want = &layout_ready(self.h)[handle_slot(handle)]
        atomic_store_release_u64(&want.write, progress_word(handle, seen + 1))
        atomic_fence_seq_cst()
        return self.acked(handle)

    def disarm(self, uint32_t handle):
        cdef ReadyWant *want = &layout_ready(self.h)[handle_slot(handle)]
        atomic_store_release_u64(&want.read, 0)
        atomic_store_release_u64(&want.write, 0)

    def armed(self, uint32_t handle):
        """(read, write): whether each interest is still armed (not yet told)."""
        cdef ReadyWant *want = &layout_ready(self.h)[handle_slot(handle)]
        return (progress_offset_of(handle, atomic_load_acquire_u64(&want.read)) != 0,
                progress_offset_of(handle, atomic_load_acquire_u64(&want.write)) != 0)

    # -- the connection table (worker 0 publishes it with the statistics) -------
    def connection_table(self):
        """Every connection as worker 0 last published it: (published_ns,
        [dict per connection]).  A seqlock: retried while worker 0 writes."""
        cdef uint64_t before, after, rows, i
        cdef ConnInfo *table = layout_conntable(self.h)
        cdef ConnInfo row
        for _ in range(1000):
            before = atomic_load_acquire_u64(&self.h.conntable_seq)
            if before & 1:
                continue
            rows = self.h.conntable_rows
            out = []
            for i in range(min(rows, self.h.max_conns)):
                row = table[i]
                if row.in_use:
                    out.append(_conn_info(&row))
            when = self.h.conntable_ns
            atomic_fence_seq_cst()
            after = atomic_load_acquire_u64(&self.h.conntable_seq)
            if before == after:
                return when, out
        return 0, []

    def shares(self, uint32_t handle):
        """Per worker: bytes copied, segments and bytes sent for this connection."""
        cdef uint32_t w
        cdef ConnShare s
        out = []
        for w in range(self.h.nworkers):
            s = layout_shares(self.h, w)[handle_slot(handle)]
            if s.handle == handle:
                out.append({"bytes_copied": s.bytes_copied, "segments_sent": s.segments_sent,
                            "bytes_sent": s.bytes_sent})
            else:
                out.append({"bytes_copied": 0, "segments_sent": 0, "bytes_sent": 0})
        return out

    @property
    def stats_ns(self):
        """When worker 0 last published the core's statistics (CLOCK_MONOTONIC ns)."""
        return atomic_load_acquire_u64(&self.h.stats_ns)

    def core_stats(self):
        """The core's replicated statistics as worker 0 last published them."""
        cdef CoreStats c = self.h.core_stats
        return dict(c)

    def core_drops(self):
        return {DROP_NAMES[i]: self.h.core_drops[i] for i in range(1, DROP_REASON_COUNT) if self.h.core_drops[i]}

    def snapshot_for(self, uint32_t worker, uint64_t position, MirroredBuffer snapshots, uint64_t size):
        """The snapshot `worker` took at ring `position`, as bytes, or None
        (a slot being overwritten claims no position)."""
        cdef uint32_t slot
        for slot in range(2):
            if atomic_load_acquire_u64(&self.h.counters[worker].snap_position[slot]) == position:
                start = (<uint64_t>worker * 2 + slot) * size
                return bytes(snapshots.view(start, size))
        return None

    def latest_snapshot(self, uint32_t worker, uint64_t not_before, MirroredBuffer snapshots, uint64_t size):
        """The newest intact snapshot of `worker` taken at or after ring
        position `not_before`, as (position, bytes), or None."""
        cdef uint32_t slot, best = 2
        cdef uint64_t pos, best_pos = 0
        for slot in range(2):
            pos = atomic_load_acquire_u64(&self.h.counters[worker].snap_position[slot])
            if pos and pos >= not_before and pos > best_pos:
                best, best_pos = slot, pos
        if best == 2:
            return None
        start = (<uint64_t>worker * 2 + best) * size
        data = bytes(snapshots.view(start, size))
        # the worker is dead, so the slot cannot change under us; check anyway
        if atomic_load_acquire_u64(&self.h.counters[worker].snap_position[best]) != best_pos:
            return None
        return best_pos, data

    def mark_restart(self, uint32_t worker, uint64_t applied_high):
        """A replacement takes over: its predecessor's heartbeat no longer
        counts, and `applied_high` is the furthest any process of this
        worker applied so far."""
        self.h.counters[worker].restarts += 1
        self.h.counters[worker].heartbeat_ns = 0
        self.h.counters[worker].applied_high = applied_high

    def liveness(self, uint32_t worker):
        """(heartbeat_ns, last_seqno) of `worker`: the watchdog's view of it."""
        return (atomic_load_acquire_u64(&self.h.counters[worker].heartbeat_ns),
                atomic_load_acquire_u64(&self.h.counters[worker].last_seqno))

    @property
    def sequencer_heartbeat_ns(self):
        return atomic_load_acquire_u64(&self.h.sequencer_heartbeat_ns)

    def counters(self, uint32_t worker):
        cdef WorkerCounters c = self.h.counters[worker]
        out = dict(c)
        del out["_pad_counters"]
        return out

    def digests(self, uint32_t worker):
        return [(self.h.digest_rounds[worker][i], self.h.digests[worker][i]) for i in range(DIGEST_SLOTS)]

    def capture(self, uint32_t worker):
        """The frames worker sent to a capture sink, as a list of bytes."""
        cdef char *base = layout_capture(self.h, worker)
        cdef uint64_t used = self.h.counters[worker].capture_used
        cdef uint64_t pos = 0
        cdef uint32_t n
        out = []
        while pos + 4 <= used:
            memcpy(&n, base + pos, 4)
            out.append(base[pos + 4:pos + 4 + n])
            pos += 4 + ((n + 3) & ~3)
        return out
