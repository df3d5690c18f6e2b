# The executor: one replica of the core plus everything needed to carry out
# the actions that replica owns (copies into the receive buffers, segments
# built and written, progress and events published).  The strategy loops
# (runtime/loops.pyx) differ only in how records reach it.
#
# The per-process state is one C struct (`Exec`) and the work is C functions
# over it, so every loop -- and every callback a loop hands to the frame
# stages -- runs without the GIL and without a Python object per packet.
# The `Executor` class owns an Exec and keeps its Python resources alive.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from misdtcp._tcpcore cimport TcpCore, CoreState, Replica, Action
from misdtcp._ring cimport Ring
from misdtcp.wire.descriptor cimport Descriptor
from misdtcp.frameio.stages cimport FrameStages
from misdtcp.runtime.layout cimport ConnShare, RuntimeHeader, WorkerCounters
from misdtcp.runtime.readiness cimport ReadyTouched
from misdtcp.runtime.queue cimport MsgQueue
from misdtcp._system cimport iovec, mmsghdr

# Where transmitted segments go.
cpdef enum Sink:
    SINK_NULL = 0       # count only
    SINK_FD = 1         # writev(2) to a file descriptor (the TUN, a packet socket, or /dev/null)
    SINK_CAPTURE = 2    # append to a per-worker capture area (tests)

cdef enum:
    EXEC_PREFETCH_AHEAD = 8   # descriptors (one cache line each) fetched ahead of the one applied
    EXEC_MAX_BATCH = 256      # descriptors applied before progress is published and the log released
    MAX_PENDING = 16    # mimd: progress and events of one record, published in log order
    MAX_STORES = 8      # progress words held back until the end of a batch

cdef enum:
    TX_BATCH = 32             # frames a packet-ring worker hands its socket in one sendmmsg
    TX_HEAD_ROOM = 160        # virtio-net + Ethernet + IP/TCP headers of one queued frame (12 + 14 + 120)

ctypedef struct TxQueue:                 # frames built, not yet handed to the kernel (packet ring)
    uint32_t n
    mmsghdr msgs[TX_BATCH]
    iovec iov[TX_BATCH * 2]              # per frame: the headers (copied here), the payload (where it lies)
    uint8_t head[TX_BATCH][TX_HEAD_ROOM]
    uint64_t *word[TX_BATCH]             # the connection's `sent` word to advance once written (NULL: none)
    uint32_t handle[TX_BATCH]
    uint32_t count[TX_BATCH]

ctypedef struct HeldStore:               # a progress word to publish at the end of the batch
    uint64_t *word
    uint64_t value

ctypedef struct Exec:
    CoreState *st                       # this replica's core state (mimd: the shared one)
    Replica *rx                         # this replica's identity and action list
    RuntimeHeader *h
    Ring *ring                          # the log the loop feeds from (data positions resolve here)
    WorkerCounters *cnt
    uint64_t *progress                  # this worker's progress row
    uint64_t *acked
    uint64_t *sent                      # data segments written per connection (the write order)
    char *capture
    uint64_t capture_size
    uint32_t worker
    uint32_t nworkers
    uint32_t max_conns
    int rcv_fd
    int snd_fd
    uint64_t rcvbuf
    uint64_t sndbuf
    char **rcv_maps
    char **snd_maps
    int sink
    int out_fd
    bint ethernet                       # the device takes Ethernet frames: `eth` goes before every IP packet
    uint8_t eth[16]                     # the link header: the kernel end's MAC, ours, IPv4 (14 bytes)
    uint32_t strided_unit               # the record applied is a FRAME_STRIDED run of such segments (0: not)
    bint batch_tx                       # queue frames and write them with one sendmmsg per batch
    TxQueue tx
    bint offload
    bint post_events
    bint shared_state                   # mimd: one core state for every worker
    bint defer_progress
    bint measure_latency
    MsgQueue *events
    uint8_t *outbuf
    FrameStages out_stages
    uint64_t stats_published_ns
    char *snapshots                     # this worker's two snapshot slots (recoverable mode)
    uint64_t snapshot_size
    uint64_t events_after_seqno         # a replacement: the predecessor announced events up to
    uint32_t events_after_index         # ... this record (seqno + 1) and this index in it
    uint32_t event_index                # events of the record being applied, so far
    uint64_t event_record               # ... and that record (seqno + 1)
    uint64_t *copy_floor                # a replacement: the progress row its predecessor published
    uint64_t *acked_floor               # ... and (worker 0) the acknowledged offsets it published
    uint64_t floor_until                # both in force while replaying records up to this seqno
    uint64_t cur_seqno
    uint64_t release_seqno              # recoverable mode: release the log only up to the last checkpoint
    uint64_t release_data
    uint64_t loop_seqno                 # the seqno after the descriptor being applied
    uint64_t loop_data                  # and the data position after its bytes
    uint32_t nheld
    HeldStore held[8]
    uint32_t npending
    uint32_t pending_kind[16]
    uint32_t pending_handle[16]
    uint64_t pending_value[16]
    # readiness and `misdtcp ss` (runtime/readiness.pxd, runtime/conntable.pxd)
    bint readiness                      # tell armed applications about the progress published
    ReadyTouched touched
    ConnShare *shares                   # this worker's per-connection counters


cdef void exec_run_actions(Exec *x, const uint8_t *frame) noexcept nogil
cdef void exec_publish_progress(Exec *x) noexcept nogil
cdef const uint8_t *exec_apply(Exec *x, const Descriptor *d, uint64_t seqno, bint *stop) noexcept nogil
cdef bint exec_handle(Exec *x, const Descriptor *d, uint64_t seqno) noexcept nogil
cdef void exec_note_latency(Exec *x, uint64_t stamped_ns) noexcept nogil
cdef void exec_publish_pending(Exec *x) noexcept nogil
cdef void exec_flush_held(Exec *x) noexcept nogil
cdef void exec_flush_tx(Exec *x) noexcept nogil
cdef void exec_publish_stats(Exec *x, uint64_t now) noexcept nogil
cdef void exec_signal_ready(Exec *x) noexcept nogil
cdef bint exec_batch(Exec *x, Ring *rg, uint32_t consumer_id, uint64_t end) noexcept nogil
cdef void exec_start_walk(Exec *x, Ring *rg, uint32_t consumer_id) noexcept nogil
cdef void apply_request(CoreState *st, Replica *rx, const uint8_t *message, uint64_t now) noexcept nogil


cdef class Executor:
    cdef Exec x
    cdef TcpCore core
    cdef object keep
