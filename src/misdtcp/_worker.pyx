# cython: language_level=3
"""Replica workers of the MISD runtime (compiled loops).

A worker consumes the event log, runs its replica of the TCP core over every
record, and performs the outputs its replica owns:

* ``ACT_COPY``      memcpy from the frame (still in ring memory) to the
                    connection's shared receive buffer at stream offset % size;
* ``ACT_TRANSMIT``  builds virtio header + headers + payload and hands it to
                    the sink (write(2) on the TUN, /dev/null, or a capture area);
* ``ACT_NOTIFY``    READABLE updates this worker's copy progress for the
                    connection (the application reads up to the minimum over
                    workers); lifecycle events are posted to the application's
                    event queue by worker 0 only.

Three loops share the executor, so strategies differ only in how frames reach
the core:

* ``run_misd``   broadcast: every worker reads every record (its own cursor);
* ``run_mimd``   the foil: workers claim records from one shared cursor and
                 process them on ONE shared core state under a ticket lock (log
                 order is kept), then perform all of that record's outputs;
* ``run_single`` one process, records walked in place without cursors.

Shared bookkeeping (one memfd, see RuntimeHeader in _worker.pxd): start
barrier, stop flag, per-worker counters, per-worker receive progress per
connection slot, the send-acknowledged offset per slot, digest slots for the
replica-divergence check, and capture areas.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset

from misdtcp._system cimport (pollfd, poll, POLLIN, atomic_load_acquire_u64, atomic_store_release_u64,
                              atomic_load_acquire_u32, atomic_store_release_u32,
                              atomic_fetch_add_u64, atomic_fetch_add_u32, atomic_cas_weak_relaxed_u64,
                              monotonic_ns, futex_wait, futex_wake, cpu_relax)
from misdtcp._ring cimport (Ring, RecordHeader, Command, CmdQueue, BroadcastRing, CommandQueue,
                            MirroredBuffer, ring_available, ring_record_at, record_payload,
                            ring_next_position, ring_release, ring_wait, ring_wait_from, cmdq_post, cmdq_try_take,
                            mirror_map, mirror_unmap, REC_FRAME, REC_COMMAND, REC_TICK, REC_DIGEST, REC_STOP,
                            WAIT_READY, WAIT_TIMEOUT, WAIT_STOPPED)
from misdtcp._tcpcore cimport (TcpCore, CoreState, CoreStats, Replica, Action, Conn, ACT_TRANSMIT, ACT_COPY,
                               ACT_NOTIFY, TX_PAYLOAD_STREAM, TX_PAYLOAD_FRAME, N_READABLE,
                               N_WRITABLE, NO_CONN, core_frame, core_tick, core_app_listen,
                               core_app_unlisten, core_app_connect, core_app_accepted,
                               core_app_consumed, core_app_send, core_app_shutdown,
                               core_app_close, core_app_abort, core_digest)
from misdtcp._vnet cimport (virtio_net_hdr, VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID,
                            VNET_GSO_NONE, VNET_GSO_TCPV4, vnet_clear)
from misdtcp._wire cimport (csum_partial, csum_finish, csum_pseudo_v4, IPPROTO_TCP,
                            FRAME_CSUM_PARTIAL, FRAME_CSUM_VALID, DROP_REASON_COUNT)
from misdtcp._pcap cimport PcapWriter, PcapFile, pcap_write, pcap_flush
from misdtcp._faults cimport (FaultInjector, FaultState, HeldFrame, fault_decide, fault_corrupt,
                              fault_hold_for, fault_due, fault_release,
                              FAULT_DROP, FAULT_CORRUPT, FAULT_DUPLICATE, FAULT_REORDER, FAULT_DELAY)

cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void *buf, size_t n)
    ssize_t read(int fd, void *buf, size_t n)

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *ts)
    enum: CLOCK_THREAD_CPUTIME_ID


cdef inline uint64_t _thread_cpu_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef void _prefault(Ring *rg) noexcept nogil:
    """Touch every page of the ring's data area before the start barrier, so
    first-touch page faults are not part of the measured processing (a
    long-running stack takes them once)."""
    cdef uint64_t off = 0
    cdef volatile char sink = 0
    while off < rg.size:
        sink = rg.data[off]
        off += 4096


cdef uint64_t RT_MAGIC = 0x6d69736472756e31ULL   # "misdrun1"
cdef uint32_t SLOT_MASK = (1 << 20) - 1
cdef uint32_t SPIN = 2000
cdef uint64_t WAIT_NS = 50000000ULL


cdef inline uint64_t _tag(uint32_t conn, uint64_t offset) noexcept nogil:
    # A progress word carries the connection's handle generation in its top
    # 16 bits: a slot reused by a new connection never inherits the old
    # connection's progress (offsets stay below 2^48 = 256 TiB).
    return ((<uint64_t>(conn >> 20)) << 48) | (offset & 0xffffffffffffULL)


cdef inline uint64_t _untag(uint32_t conn, uint64_t word) noexcept nogil:
    """The offset of a progress word if it belongs to this connection, else 0."""
    if (word >> 48) != (conn >> 20):
        return 0
    return word & 0xffffffffffffULL


def shared_size(uint32_t nworkers, uint32_t max_conns, uint64_t capture_size):
    """Bytes of the runtime's shared bookkeeping block."""
    return (sizeof(RuntimeHeader) + <uint64_t>MAX_WORKERS * max_conns * 8 + <uint64_t>max_conns * 8
            + <uint64_t>nworkers * capture_size)


def init_shared(MirroredBuffer block, uint32_t nworkers, uint32_t max_conns, uint64_t rcvbuf,
                uint64_t sndbuf, uint64_t capture_size, bint shared_progress=False):
    """`shared_progress`: every worker publishes into one progress row, in
    log order (mimd, where one shared state serves all workers)."""
    cdef RuntimeHeader *h = <RuntimeHeader *>block.base
    if block.size < shared_size(nworkers, max_conns, capture_size):
        raise ValueError("shared block too small")
    memset(h, 0, sizeof(RuntimeHeader))
    h.magic = RT_MAGIC
    h.nworkers = nworkers
    h.max_conns = max_conns
    h.rcvbuf = rcvbuf
    h.sndbuf = sndbuf
    h.capture_size = capture_size
    h.progress_rows = 1 if shared_progress else nworkers


cdef class SharedView:
    """Read access to the runtime's shared block from Python (counters,
    progress, digests) and the few control writes (go, stop)."""
    cdef RuntimeHeader *h
    cdef object block

    def __cinit__(self, MirroredBuffer block):
        self.block = block
        self.h = <RuntimeHeader *>block.base
        if self.h.magic != RT_MAGIC:
            raise ValueError("not a misdtcp runtime block")

    cdef uint64_t *_progress(self, uint32_t worker):
        return <uint64_t *>((<char *>self.h) + sizeof(RuntimeHeader)) + <uint64_t>worker * self.h.max_conns

    cdef uint64_t *_acked(self):
        return <uint64_t *>((<char *>self.h) + sizeof(RuntimeHeader)) + <uint64_t>MAX_WORKERS * self.h.max_conns

    def go(self):
        atomic_store_release_u32(&self.h.go, 1)
        futex_wake(&self.h.go, 1 << 30)

    def request_stop(self):
        atomic_store_release_u32(&self.h.stop, 1)
        futex_wake(&self.h.go, 1 << 30)
        futex_wake(&self.h.turn, 1 << 30)

    @property
    def stopping(self):
        return atomic_load_acquire_u32(&self.h.stop) != 0

    @property
    def diverged(self):
        return atomic_load_acquire_u32(&self.h.diverged) != 0

    @property
    def diverged_round(self):
        return self.h.diverged_round

    def readable(self, uint32_t conn):
        """Receive stream offset every worker has finished copying up to."""
        cdef uint32_t slot = conn & SLOT_MASK
        cdef uint32_t w
        cdef uint64_t v, low = <uint64_t>-1
        for w in range(self.h.progress_rows):
            v = _untag(conn, atomic_load_acquire_u64(&self._progress(w)[slot]))
            if v < low:
                low = v
        return low

    def core_stats(self):
        """The core's replicated statistics as last published (worker 0, or
        the shared state under mimd, which the caller passes instead)."""
        cdef CoreStats c = self.h.core_stats
        return dict(c)

    def core_drops(self):
        from misdtcp._tcpcore import DROP_NAMES
        return {DROP_NAMES[i]: self.h.core_drops[i] for i in range(1, DROP_REASON_COUNT) if self.h.core_drops[i]}

    def snapshot_for(self, uint32_t worker, uint64_t position, MirroredBuffer snapshots, uint64_t size):
        """The snapshot `worker` took at ring `position`, as bytes, or None."""
        cdef uint32_t slot
        for slot in range(2):
            if atomic_load_acquire_u64(&self.h.counters[worker].snap_position[slot]) == position:
                start = (<uint64_t>worker * 2 + slot) * size
                return bytes(snapshots.view(start, size))
        return None

    def mark_restart(self, uint32_t worker):
        self.h.counters[worker].restarts += 1

    def progress(self, uint32_t worker, uint32_t conn):
        """Receive stream offset up to which `worker` has done its copies."""
        return _untag(conn, atomic_load_acquire_u64(&self._progress(worker)[conn & SLOT_MASK]))

    def acked(self, uint32_t conn):
        """Send stream offset the peer has acknowledged (0 for a new connection)."""
        return _untag(conn, atomic_load_acquire_u64(&self._acked()[conn & SLOT_MASK]))

    def counters(self, uint32_t worker):
        cdef WorkerCounters c = self.h.counters[worker]
        return dict(c)

    def digests(self, uint32_t worker):
        return [(self.h.digest_rounds[worker][i], self.h.digests[worker][i]) for i in range(DIGEST_SLOTS)]

    def capture(self, uint32_t worker):
        """The frames worker sent to a capture sink, as a list of bytes."""
        cdef char *base = (<char *>self._acked()) + <uint64_t>self.h.max_conns * 8 \
            + <uint64_t>worker * self.h.capture_size
        cdef uint64_t used = self.h.counters[worker].capture_used
        cdef uint64_t pos = 0
        cdef uint32_t n
        out = []
        while pos + 4 <= used:
            memcpy(&n, base + pos, 4)
            out.append(base[pos + 4:pos + 4 + n])
            pos += 4 + ((n + 3) & ~3)
        return out


cdef class Executor:
    """Per-process: one replica of the core plus everything needed to carry
    out its actions."""
    cdef TcpCore core
    cdef RuntimeHeader *h
    cdef WorkerCounters *cnt
    cdef uint64_t *progress
    cdef uint64_t *acked
    cdef char *capture
    cdef uint64_t capture_size
    cdef uint32_t worker
    cdef uint32_t nworkers
    cdef uint32_t max_conns
    cdef int rcv_fd
    cdef int snd_fd
    cdef uint64_t rcvbuf
    cdef uint64_t sndbuf
    cdef char **rcv_maps
    cdef char **snd_maps
    cdef int sink
    cdef int out_fd
    cdef bint offload
    cdef bint post_events

    cdef CmdQueue *events
    cdef uint8_t *outbuf
    cdef object keep
    cdef public bint measure_latency
    cdef PcapFile *pcap
    cdef int64_t pcap_offset
    cdef FaultState *faults
    cdef uint64_t stats_published_ns
    cdef bint defer_progress
    cdef char *snapshots                 # this worker's two snapshot slots (recoverable mode)
    cdef uint64_t snapshot_size
    cdef public uint64_t events_after_seqno
    cdef uint64_t cur_seqno
    cdef uint64_t release_target
    cdef uint64_t loop_position
    cdef uint32_t npending
    cdef uint32_t pending_kind[16]
    cdef uint32_t pending_conn[16]
    cdef uint64_t pending_value[16]

    def __cinit__(self, TcpCore core, MirroredBuffer block, uint32_t worker, *, int rcv_fd, int snd_fd,
                  int sink=SINK_NULL, int out_fd=-1, bint offload=True, CommandQueue events=None,
                  PcapWriter pcap=None, FaultInjector faults=None, MirroredBuffer snapshots=None):
        self.core = core
        self.h = <RuntimeHeader *>block.base
        self.worker = worker
        self.nworkers = self.h.nworkers
        self.max_conns = self.h.max_conns
        self.cnt = &self.h.counters[worker]
        self.progress = <uint64_t *>((<char *>self.h) + sizeof(RuntimeHeader)) + <uint64_t>worker * self.max_conns
        self.acked = <uint64_t *>((<char *>self.h) + sizeof(RuntimeHeader)) + <uint64_t>MAX_WORKERS * self.max_conns
        self.capture_size = self.h.capture_size
        self.capture = (<char *>self.acked) + <uint64_t>self.max_conns * 8 + <uint64_t>worker * self.capture_size
        self.rcv_fd = rcv_fd
        self.snd_fd = snd_fd
        self.rcvbuf = self.h.rcvbuf
        self.sndbuf = self.h.sndbuf
        self.rcv_maps = <char **>calloc(self.max_conns, sizeof(char *))
        self.snd_maps = <char **>calloc(self.max_conns, sizeof(char *))
        self.outbuf = <uint8_t *>malloc(65536 + 512)
        if self.rcv_maps == NULL or self.snd_maps == NULL or self.outbuf == NULL:
            raise MemoryError()
        self.sink = sink
        self.out_fd = out_fd
        self.offload = offload
        self.events = NULL
        self.post_events = False
        if events is not None:
            self.events = &events.queue
            # replicas all see every event: worker 0 alone tells the application
            self.post_events = worker == 0
        self.defer_progress = False
        self.snapshots = NULL
        self.snapshot_size = 0
        self.events_after_seqno = 0
        self.cur_seqno = 0
        self.release_target = 0
        self.npending = 0
        self.pcap = NULL
        self.faults = NULL
        self.stats_published_ns = 0
        if pcap is not None:
            self.pcap = &pcap.file
            self.pcap_offset = pcap.realtime_offset_ns
        if faults is not None:
            self.faults = &faults.state
        if snapshots is not None:
            self.snapshot_size = core.st.size
            if snapshots.size < <uint64_t>(worker + 1) * 2 * self.snapshot_size:
                raise ValueError("snapshot area too small for this worker")
            self.snapshots = snapshots.base + <uint64_t>worker * 2 * self.snapshot_size
        self.keep = (block, events, pcap, faults, snapshots)

    def __dealloc__(self):
        # mappings are left to process exit (workers are processes that end)
        free(self.rcv_maps)
        free(self.snd_maps)
        free(self.outbuf)

    # -- buffers --------------------------------------------------------------
    cdef char *_rcv(self, uint32_t slot) noexcept nogil:
        cdef int err = 0
        if self.rcv_maps[slot] == NULL:
            self.rcv_maps[slot] = mirror_map(self.rcv_fd, <uint64_t>slot * self.rcvbuf, self.rcvbuf, &err)
        return self.rcv_maps[slot]

    cdef char *_snd(self, uint32_t slot) noexcept nogil:
        cdef int err = 0
        if self.snd_maps[slot] == NULL:
            self.snd_maps[slot] = mirror_map(self.snd_fd, <uint64_t>slot * self.sndbuf, self.sndbuf, &err)
        return self.snd_maps[slot]

    # -- outputs --------------------------------------------------------------
    cdef void _emit(self, uint8_t *buf, uint32_t n) noexcept nogil:
        """Hand one frame (virtio header + IP packet) to the sink, through
        the output fault injector when there is one."""
        cdef uint32_t action
        cdef uint64_t now
        if self.faults != NULL:
            now = monotonic_ns()
            action = fault_decide(self.faults, <int64_t>now)
            if action & FAULT_DROP:
                return
            if action & FAULT_CORRUPT:
                fault_corrupt(self.faults, <virtio_net_hdr *>buf, buf + VNET_HDR_LEN, n - VNET_HDR_LEN)
            if action & (FAULT_REORDER | FAULT_DELAY):
                if fault_hold_for(self.faults, buf, n, 0, action, <int64_t>now) == 0:
                    return
            self._sink(buf, n)
            if action & FAULT_DUPLICATE:
                self._sink(buf, n)
            return
        self._sink(buf, n)

    cdef void flush_held(self) noexcept nogil:
        """Frames held back by the output fault injector that are now due."""
        cdef HeldFrame *held
        if self.faults == NULL:
            return
        held = fault_due(self.faults, <int64_t>monotonic_ns())
        while held != NULL:
            self._sink(held.data, held.length)
            fault_release(self.faults, held)
            held = fault_due(self.faults, <int64_t>monotonic_ns())

    cdef void _sink(self, const uint8_t *buf, uint32_t n) noexcept nogil:
        cdef uint64_t need
        self.cnt.segments_sent += 1
        self.cnt.bytes_sent += n
        if self.pcap != NULL:
            pcap_write(self.pcap, <int64_t>monotonic_ns() + self.pcap_offset, buf + VNET_HDR_LEN,
                       n - VNET_HDR_LEN)
        if self.sink == SINK_FD:
            if write(self.out_fd, buf, n) < 0:
                self.cnt.write_errors += 1
        elif self.sink == SINK_CAPTURE:
            need = 4 + ((n + 3) & ~(<uint32_t>3))
            if self.cnt.capture_used + need > self.capture_size:
                self.cnt.capture_dropped += 1
                return
            memcpy(self.capture + self.cnt.capture_used, &n, 4)
            memcpy(self.capture + self.cnt.capture_used + 4, buf, n)
            self.cnt.capture_used += need

    cdef void publish_stats(self, uint64_t now) noexcept nogil:
        """Worker 0 copies the core's replicated statistics and drop counters
        to shared memory for `misdtcp serve`'s report (about every 20 ms)."""
        cdef CoreState *st
        if self.worker != 0 or now - self.stats_published_ns < 20000000ULL:
            return
        self.stats_published_ns = now
        st = self.core.st
        memcpy(&self.h.core_stats, &st.stats, sizeof(st.stats))
        memcpy(&self.h.core_drops[0], &st.drops[0], sizeof(st.drops))
        atomic_store_release_u64(&self.h.stats_ns, now)

    def flush(self):
        """Write out buffered capture data (process exit)."""
        if self.pcap != NULL:
            pcap_flush(self.pcap)

    cdef void _transmit(self, Action *a, const uint8_t *frame) noexcept nogil:
        cdef virtio_net_hdr *v = <virtio_net_hdr *>self.outbuf
        cdef uint8_t *pkt = self.outbuf + VNET_HDR_LEN
        cdef uint32_t total = a.hdr_len + a.length
        cdef uint32_t slot = a.conn & SLOT_MASK
        cdef char *src
        cdef uint64_t sum
        cdef uint16_t c
        cdef uint32_t l4
        vnet_clear(v)
        memcpy(pkt, a.hdr, a.hdr_len)
        if a.length:
            if (a.code & 0x0f) == TX_PAYLOAD_FRAME:
                memcpy(pkt + a.hdr_len, frame + a.frame_off, a.length)
            else:
                src = self._snd(slot)
                if src == NULL:
                    return
                memcpy(pkt + a.hdr_len, src + (a.stream_off % self.sndbuf), a.length)
                if self.offload:
                    # the header holds the pseudo-header sum: let the kernel finish
                    v.flags = VNET_F_NEEDS_CSUM
                    v.csum_start = a.csum_start
                    v.csum_offset = 16
                    if a.gso_size:
                        v.gso_type = VNET_GSO_TCPV4
                        v.gso_size = a.gso_size
                        v.hdr_len = a.hdr_len
                else:
                    l4 = total - a.csum_start
                    pkt[a.csum_start + 16] = 0
                    pkt[a.csum_start + 17] = 0
                    sum = csum_pseudo_v4(pkt + 12, pkt + 16, IPPROTO_TCP, l4)
                    c = csum_finish(csum_partial(pkt + a.csum_start, l4, sum))
                    memcpy(pkt + a.csum_start + 16, &c, 2)
        self._emit(self.outbuf, VNET_HDR_LEN + total)

    cdef void _post_event(self, uint32_t kind, uint32_t conn, uint64_t value) noexcept nogil:
        cdef Command cmd
        if not self.post_events:
            return
        if self.events_after_seqno and self.cur_seqno <= self.events_after_seqno:
            return                      # a replacement replaying records already announced
        cmd.kind = kind
        cmd.conn = conn
        cmd.a = value
        cmd.b = 0
        cmd.c = 0
        if cmdq_post(self.events, &cmd, SPIN, WAIT_NS) == WAIT_READY:
            self.cnt.events_posted += 1

    cdef void run_actions(self, const uint8_t *frame) noexcept nogil:
        cdef Replica *rx = &self.core.rx
        cdef uint32_t i
        cdef Action *a
        cdef char *dst
        cdef uint32_t slot
        for i in range(rx.nactions):
            a = &rx.actions[i]
            if a.kind == ACT_COPY:
                slot = a.conn & SLOT_MASK
                dst = self._rcv(slot)
                if dst != NULL:
                    memcpy(dst + (a.stream_off % self.rcvbuf), frame + a.frame_off, a.length)
                    self.cnt.copies += 1
                    self.cnt.bytes_copied += a.length
            elif a.kind == ACT_TRANSMIT:
                self._transmit(a, frame)
            elif self.defer_progress:
                # mimd: published in log order once earlier records are done
                if self.npending < 16:
                    self.pending_kind[self.npending] = a.code
                    self.pending_conn[self.npending] = a.conn
                    self.pending_value[self.npending] = a.stream_off
                    self.npending += 1
            elif a.code == N_READABLE:
                # every copy of this worker up to a.stream_off is done (copies
                # come before the notify in the action list)
                atomic_store_release_u64(&self.progress[a.conn & SLOT_MASK], _tag(a.conn, a.stream_off))
            elif a.code == N_WRITABLE:
                if self.worker == 0:
                    atomic_store_release_u64(&self.acked[a.conn & SLOT_MASK], _tag(a.conn, a.stream_off))
            else:
                self._post_event(a.code, a.conn, a.stream_off)
        if rx.overflow:
            self.cnt.action_overflow += rx.overflow
            rx.overflow = 0
        rx.nactions = 0

    cdef inline void note_latency(self, uint64_t stamped_ns) noexcept nogil:
        """Stamp-to-outputs-done time of a frame (live traffic only: one
        clock read per frame, reported by `misdtcp serve`)."""
        cdef uint64_t lat
        if self.measure_latency:
            lat = monotonic_ns() - stamped_ns
            self.cnt.latency_sum_ns += lat
            if lat > self.cnt.latency_max_ns:
                self.cnt.latency_max_ns = lat

    cdef void publish_pending(self) noexcept nogil:
        """mimd: publish the progress of a record once every earlier record's
        outputs are complete (the caller orders this by done_seqno)."""
        cdef uint32_t i
        for i in range(self.npending):
            if self.pending_kind[i] == N_READABLE:
                atomic_store_release_u64(&self.progress[self.pending_conn[i] & SLOT_MASK],
                                         _tag(self.pending_conn[i], self.pending_value[i]))
            elif self.pending_kind[i] == N_WRITABLE:
                atomic_store_release_u64(&self.acked[self.pending_conn[i] & SLOT_MASK],
                                         _tag(self.pending_conn[i], self.pending_value[i]))
            else:
                self._post_event(self.pending_kind[i], self.pending_conn[i], self.pending_value[i])
        self.npending = 0

    # -- one record -------------------------------------------------------------
    cdef bint handle_record(self, CoreState *st, Replica *rx, RecordHeader *r) noexcept nogil:
        """Apply one log record; False on REC_STOP."""
        cdef const uint8_t *p = <const uint8_t *>record_payload(r)
        cdef Command *cmd
        cdef uint64_t rnd
        self.cur_seqno = r.seqno + 1
        self.cnt.last_seqno = r.seqno + 1
        if r.kind == REC_FRAME:
            self.cnt.frames += 1
            if r.length > VNET_HDR_LEN:
                core_frame(st, rx, p + VNET_HDR_LEN, r.length - VNET_HDR_LEN, r.flags, r.gso_size, r.now_ns)
                self.run_actions(p + VNET_HDR_LEN)
                self.note_latency(r.now_ns)
        elif r.kind == REC_COMMAND:
            self.cnt.commands += 1
            cmd = <Command *>p
            _apply_command(st, rx, cmd, r.now_ns)
            self.run_actions(NULL)
        elif r.kind == REC_TICK:
            self.cnt.ticks += 1
            core_tick(st, rx, r.now_ns)
            self.run_actions(NULL)
        elif r.kind == REC_DIGEST:
            memcpy(&rnd, p, 8)
            self._digest(st, rnd)
        elif r.kind == REC_CHECKPOINT:
            self._checkpoint(st, r)
        elif r.kind == REC_STOP:
            return False
        return True

    cdef inline uint64_t _position_after(self, RecordHeader *r) noexcept nogil:
        return self.loop_position            # set by run_misd before each record

    cdef void _checkpoint(self, CoreState *st, RecordHeader *r) noexcept nogil:
        """Snapshot this replica's state into the older of two slots, then
        let the ring reclaim everything before this point: a replacement
        loads the snapshot and replays from exactly here."""
        cdef uint32_t slot
        cdef uint64_t after
        if self.snapshots == NULL:
            return
        slot = <uint32_t>(self.cnt.snapshots % 2)
        after = self._position_after(r)
        memcpy(self.snapshots + slot * self.snapshot_size, st, self.snapshot_size)
        atomic_store_release_u64(&self.cnt.snap_position[slot], after)
        self.cnt.snapshots += 1
        self.release_target = after

    cdef void _digest(self, CoreState *st, uint64_t rnd) noexcept nogil:
        """Publish this replica's state digest for round rnd and compare it
        with the other replicas that already published theirs."""
        cdef uint64_t d = core_digest(st)
        cdef uint32_t slot = rnd % DIGEST_SLOTS
        cdef uint32_t w
        self.h.digests[self.worker][slot] = d
        atomic_store_release_u64(&self.h.digest_rounds[self.worker][slot], rnd + 1)
        self.cnt.digest = d
        self.cnt.digest_round = rnd
        for w in range(self.nworkers):
            if w == self.worker:
                continue
            if atomic_load_acquire_u64(&self.h.digest_rounds[w][slot]) == rnd + 1:
                if self.h.digests[w][slot] != d:
                    self.h.diverged_round = rnd
                    atomic_store_release_u32(&self.h.diverged, 1)


cdef void _apply_command(CoreState *st, Replica *rx, Command *cmd, uint64_t now) noexcept nogil:
    if cmd.kind == RT_CONSUMED:
        core_app_consumed(st, rx, cmd.conn, cmd.a, now)
    elif cmd.kind == RT_SEND:
        core_app_send(st, rx, cmd.conn, cmd.a, now)
    elif cmd.kind == RT_LISTEN:
        core_app_listen(st, rx, <uint16_t>cmd.a, <uint32_t>cmd.b, now)
    elif cmd.kind == RT_CONNECT:
        core_app_connect(st, rx, cmd.c, <uint32_t>cmd.a, <uint16_t>(cmd.b >> 16), <uint16_t>cmd.b, now)
    elif cmd.kind == RT_ACCEPTED:
        core_app_accepted(st, rx, cmd.conn, now)
    elif cmd.kind == RT_SHUTDOWN:
        core_app_shutdown(st, rx, cmd.conn, now)
    elif cmd.kind == RT_CLOSE:
        core_app_close(st, rx, cmd.conn, now)
    elif cmd.kind == RT_ABORT:
        core_app_abort(st, rx, cmd.conn, now)
    elif cmd.kind == RT_UNLISTEN:
        core_app_unlisten(st, rx, <uint16_t>cmd.a, now)


cdef void _wait_go(RuntimeHeader *h) noexcept nogil:
    while atomic_load_acquire_u32(&h.go) == 0 and atomic_load_acquire_u32(&h.stop) == 0:
        futex_wait(&h.go, 0, WAIT_NS)


# ---------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------

def run_misd(Executor ex, BroadcastRing ring, uint32_t consumer_id):
    """Broadcast strategy: this worker replays every record of the log."""
    cdef Ring *rg = &ring.ring
    cdef CoreState *st = ex.core.st
    cdef Replica *rx = &ex.core.rx
    cdef WorkerCounters *cnt = ex.cnt
    cdef uint64_t pos, end, n
    cdef RecordHeader *r
    cdef int w
    cdef bint running = True
    cdef uint64_t cpu0
    with nogil:
        _prefault(rg)
        _wait_go(ex.h)
        cnt.start_ns = monotonic_ns()
        cpu0 = _thread_cpu_ns()
        pos = rg.ctl.consumers[consumer_id].cursor
        ex.release_target = pos
        while running:
            end = ring_available(rg, consumer_id)
            if end == pos:
                cnt.heartbeat_ns = monotonic_ns()
                if atomic_load_acquire_u32(&ex.h.stop):
                    break
                w = ring_wait_from(rg, consumer_id, pos, SPIN, WAIT_NS)
                if w == WAIT_STOPPED:
                    # drain what was published before the stop
                    if ring_available(rg, consumer_id) == pos:
                        break
                continue
            n = 0
            while pos != end:
                r = ring_record_at(rg, pos)
                pos = ring_next_position(r, pos)
                ex.loop_position = pos
                n += 1
                if not ex.handle_record(st, rx, r):
                    running = False
                    break
            cnt.records += n
            cnt.position += n
            # recoverable mode keeps every record since the last checkpoint in
            # the ring, so a replacement can replay them from the snapshot
            ring_release(rg, consumer_id, ex.release_target if ex.snapshots != NULL else pos, n)
            ex.flush_held()
            ex.publish_stats(monotonic_ns())
        cnt.end_ns = monotonic_ns()
        cnt.cpu_ns += _thread_cpu_ns() - cpu0
        atomic_store_release_u64(&cnt.done, 1)


def run_single(Executor ex, BroadcastRing ring):
    """Sequential baseline: one process walks the records in place (no
    cursors, no atomics, no other process)."""
    cdef Ring *rg = &ring.ring
    cdef CoreState *st = ex.core.st
    cdef Replica *rx = &ex.core.rx
    cdef WorkerCounters *cnt = ex.cnt
    cdef uint64_t pos = 0, end, n = 0
    cdef RecordHeader *r
    cdef uint64_t cpu0
    with nogil:
        _prefault(rg)
        cnt.start_ns = monotonic_ns()
        cpu0 = _thread_cpu_ns()
        end = ring_available(rg, 0)
        while pos != end:
            r = ring_record_at(rg, pos)
            pos = ring_next_position(r, pos)
            n += 1
            if not ex.handle_record(st, rx, r):
                break
        cnt.records += n
        cnt.position += n
        cnt.end_ns = monotonic_ns()
        cnt.cpu_ns += _thread_cpu_ns() - cpu0
        atomic_store_release_u64(&cnt.done, 1)


cdef inline void _turn_wait(RuntimeHeader *h, uint32_t ticket, WorkerCounters *cnt) noexcept nogil:
    cdef uint32_t seen, i
    i = 0
    while True:
        seen = atomic_load_acquire_u32(&h.turn)
        if seen == ticket:
            return
        if atomic_load_acquire_u32(&h.stop):
            return
        if i < SPIN:
            cpu_relax()
            i += 1
            continue
        cnt.lock_waits += 1
        atomic_fetch_add_u32(&h.turn_waiters, 1)
        futex_wait(&h.turn, seen, 1000000)
        atomic_fetch_add_u32(&h.turn_waiters, <uint32_t>-1)


cdef inline void _done_wait(RuntimeHeader *h, uint64_t seq, WorkerCounters *cnt) noexcept nogil:
    cdef uint32_t i = 0
    while atomic_load_acquire_u64(&h.done_seqno) != seq:
        if atomic_load_acquire_u32(&h.stop):
            return
        cpu_relax()
        i += 1
        if i > SPIN:
            cnt.lock_waits += 1
            sched_yield()
            i = 0


def run_mimd(Executor ex, BroadcastRing ring, uint32_t nworkers):
    """The foil: N workers claim records from ONE shared cursor and process
    them on ONE shared core state, serialised by a ticket lock in log order
    (so the TCP state stays correct), then do all of that record's outputs
    outside the lock.  The core must have been created over shared memory
    (state_buffer) with replicas=1.  The ring's space is given back by the
    lock holder up to the oldest record any worker still works on."""
    cdef Ring *rg = &ring.ring
    cdef CoreState *st = ex.core.st
    cdef Replica *rx = &ex.core.rx
    cdef WorkerCounters *cnt = ex.cnt
    cdef RuntimeHeader *h = ex.h
    cdef uint64_t pos, nxt, end, seq, low, v, released = 0
    cdef uint32_t w
    cdef RecordHeader *r
    cdef bint running = True
    cdef const uint8_t *p
    # one shared state: progress goes to one row, published in log order
    ex.defer_progress = True
    ex.progress = <uint64_t *>((<char *>h) + sizeof(RuntimeHeader))
    # one shared state produces each event once, in whichever worker ran the
    # record: every worker posts the events of its records (in log order)
    ex.post_events = ex.events != NULL
    cdef uint64_t cpu0
    with nogil:
        atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
        _prefault(rg)
        _wait_go(h)
        cnt.start_ns = monotonic_ns()
        cpu0 = _thread_cpu_ns()
        while running:
            pos = atomic_load_acquire_u64(&h.claim_position)
            end = ring_available(rg, 0)
            if pos == end:
                cnt.heartbeat_ns = monotonic_ns()
                if atomic_load_acquire_u32(&h.stop):
                    break
                if ring_wait_from(rg, 0, pos, SPIN, WAIT_NS) == WAIT_STOPPED and ring_available(rg, 0) == pos:
                    break
                continue
            # announce before claiming, so the space is never given back early
            atomic_store_release_u64(&cnt.inflight, pos)
            r = ring_record_at(rg, pos)
            nxt = ring_next_position(r, pos)
            if not atomic_cas_weak_relaxed_u64(&h.claim_position, &pos, nxt):
                continue
            seq = r.seqno
            # the lock: records are applied to the shared state in log order
            _turn_wait(h, <uint32_t>seq, cnt)
            if atomic_load_acquire_u32(&h.turn) != <uint32_t>seq:
                break                                   # stopped while waiting
            p = <const uint8_t *>record_payload(r)
            rx.nactions = 0
            ex.cur_seqno = seq + 1
            cnt.last_seqno = seq + 1
            if r.kind == REC_FRAME:
                cnt.frames += 1
                if r.length > VNET_HDR_LEN:
                    core_frame(st, rx, p + VNET_HDR_LEN, r.length - VNET_HDR_LEN, r.flags,
                               r.gso_size, r.now_ns)
            elif r.kind == REC_COMMAND:
                cnt.commands += 1
                _apply_command(st, rx, <Command *>p, r.now_ns)
            elif r.kind == REC_TICK:
                cnt.ticks += 1
                core_tick(st, rx, r.now_ns)
            elif r.kind == REC_STOP:
                running = False
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
            atomic_store_release_u32(&h.turn, <uint32_t>(seq + 1))
            if atomic_load_acquire_u32(&h.turn_waiters):
                futex_wake(&h.turn, 1 << 30)
            ex.run_actions(p + VNET_HDR_LEN if r.kind == REC_FRAME else NULL)
            if r.kind == REC_FRAME:
                ex.note_latency(r.now_ns)
            # completion in log order: readable data must have no holes left
            # by a slower worker still copying an earlier record
            _done_wait(h, seq, cnt)
            ex.publish_pending()
            atomic_store_release_u64(&h.done_seqno, seq + 1)
            ex.flush_held()
            ex.publish_stats(monotonic_ns())
            atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
            cnt.records += 1
            cnt.position += 1
        cnt.end_ns = monotonic_ns()
        cnt.cpu_ns += _thread_cpu_ns() - cpu0
        atomic_store_release_u64(&cnt.done, 1)
        atomic_store_release_u64(&cnt.inflight, <uint64_t>-1)
        # whoever ran the STOP record tells the others
        atomic_store_release_u32(&h.stop, 1)
        futex_wake(&h.turn, 1 << 30)


cdef class SlotMap:
    """The application's mirrored mapping of one connection's buffer (its
    region of the receive or send memfd), so any stretch of up to `size`
    bytes at any stream offset is one contiguous, zero-copy memoryview."""
    cdef char *base
    cdef readonly uint64_t size
    cdef Py_ssize_t exports
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __cinit__(self, int fd, uint64_t offset, uint64_t size):
        cdef int err = 0
        self.base = mirror_map(fd, offset, size, &err)
        if self.base == NULL:
            import os
            raise OSError(err, f"cannot map a connection buffer: {os.strerror(err)}")
        self.size = size
        self.exports = 0

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        self.shape[0] = <Py_ssize_t>(2 * self.size)
        self.strides[0] = 1
        buffer.buf = self.base
        buffer.obj = self
        buffer.len = <Py_ssize_t>(2 * self.size)
        buffer.readonly = 0
        buffer.itemsize = 1
        buffer.format = "B"
        buffer.ndim = 1
        buffer.shape = self.shape
        buffer.strides = self.strides
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1

    def view(self, uint64_t offset, uint64_t length):
        """Bytes [offset, offset + length) of the stream, modulo the size."""
        if length > self.size:
            raise ValueError(f"at most {self.size} bytes at once, not {length}")
        start = offset % self.size
        return memoryview(self)[start:start + length]

    def __dealloc__(self):
        if self.base != NULL:
            mirror_unmap(self.base, self.size)
            self.base = NULL


def run_single_device(Executor ex, int tun_fd, CommandQueue commands, MirroredBuffer block,
                      int wake_fd, uint64_t tick_ns=5000000):
    """The `single` strategy on a live device: one process reads the TUN,
    runs the core and performs every output itself — no ring, no replicas."""
    cdef CoreState *st = ex.core.st
    cdef Replica *rx = &ex.core.rx
    cdef WorkerCounters *cnt = ex.cnt
    cdef RuntimeHeader *h = ex.h
    cdef CmdQueue *q = &commands.queue
    cdef Command cmd
    cdef uint8_t *buf = <uint8_t *>malloc(65536 + 64)
    cdef ssize_t n
    cdef uint64_t now, last = 0
    cdef uint32_t got, i
    cdef virtio_net_hdr *v
    cdef uint16_t flags
    cdef pollfd fds[2]
    cdef uint8_t scratch[8]
    if buf == NULL:
        raise MemoryError()
    with nogil:
        fds[0].fd = tun_fd
        fds[0].events = POLLIN
        fds[1].fd = wake_fd
        fds[1].events = POLLIN
        cnt.start_ns = monotonic_ns()
        while not atomic_load_acquire_u32(&h.stop):
            got = 0
            now = monotonic_ns()
            cnt.heartbeat_ns = now
            while cmdq_try_take(q, &cmd):
                cnt.commands += 1
                _apply_command(st, rx, &cmd, now)
                ex.run_actions(NULL)
                got += 1
            i = 0
            while i < 64:
                n = read(tun_fd, buf, 65536 + 64)
                if n <= <ssize_t>VNET_HDR_LEN:
                    break
                i += 1
                got += 1
                now = monotonic_ns()
                v = <virtio_net_hdr *>buf
                flags = 0
                if v.flags & VNET_F_NEEDS_CSUM:
                    flags = FRAME_CSUM_PARTIAL
                elif v.flags & VNET_F_DATA_VALID:
                    flags = FRAME_CSUM_VALID
                cnt.frames += 1
                core_frame(st, rx, buf + VNET_HDR_LEN, <uint32_t>(n - VNET_HDR_LEN), flags,
                           v.gso_size if v.gso_type != VNET_GSO_NONE else 0, now)
                ex.run_actions(buf + VNET_HDR_LEN)
                ex.note_latency(now)
            cnt.records += got
            ex.flush_held()
            ex.publish_stats(now)
            if got:
                last = now
                continue
            now = monotonic_ns()
            if now - last >= tick_ns:
                cnt.ticks += 1
                core_tick(st, rx, now)
                ex.run_actions(NULL)
                last = now
            atomic_store_release_u32(&h.sequencer_sleeping, 1)
            if cmdq_try_take(q, &cmd):
                atomic_store_release_u32(&h.sequencer_sleeping, 0)
                cnt.commands += 1
                _apply_command(st, rx, &cmd, monotonic_ns())
                ex.run_actions(NULL)
                continue
            poll(fds, 2, <int>(tick_ns // 1000000) or 1)
            atomic_store_release_u32(&h.sequencer_sleeping, 0)
            if fds[1].revents & POLLIN:
                read(wake_fd, scratch, 8)
        cnt.end_ns = monotonic_ns()
    free(buf)


# ---------------------------------------------------------------------------
# The request and record vocabulary for the control path (the Python API and
# the replay source), taken from the C enums so there is one definition.
# ---------------------------------------------------------------------------

import enum as _enum


class Request(_enum.IntEnum):
    """Application -> core requests (Command.kind of REC_COMMAND records)."""
    LISTEN = RT_LISTEN
    CONNECT = RT_CONNECT
    ACCEPTED = RT_ACCEPTED
    CONSUMED = RT_CONSUMED
    SEND = RT_SEND
    SHUTDOWN = RT_SHUTDOWN
    CLOSE = RT_CLOSE
    ABORT = RT_ABORT
    UNLISTEN = RT_UNLISTEN


class Record(_enum.IntEnum):
    """Kinds of event-log records (the ring's and the runtime's)."""
    FRAME = REC_FRAME
    COMMAND = REC_COMMAND
    TICK = REC_TICK
    DIGEST = REC_DIGEST
    STOP = REC_STOP
    CHECKPOINT = REC_CHECKPOINT
