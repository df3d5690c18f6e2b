# The runtime's shared bookkeeping block (one memfd, mapped by every process):
# the layout, its offsets computed once (layout.pyx: layout_init) and named,
# and inline accessors.  After Agrona's descriptors: every word a process
# writes often sits on a cache line no other process writes, and the sizes
# are checked when the module is imported.
#
#     RuntimeHeader                       control, mimd's lock, statistics
#     progress rows  [row][max_conns]     copy progress per connection slot:
#                                         one row per worker (misd), one shared
#                                         row (mimd, single); rows 64-aligned
#     acked          [max_conns]          send-stream offset the peer acknowledged
#     sent           [max_conns]          data segments written to the device, in the
#                                         connection's segment order (the ordered hand-off
#                                         between send owners)
#     capture areas  [nworkers]           frames a capture sink kept (tests)
#     ready          [max_conns]          interests the application armed (readiness.pxd)
#     conn table     [max_conns]          every connection as worker 0 last published it
#     shares         [nworkers][max_conns] what each worker did for each connection
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from misdtcp._tcpcore cimport CoreStats
from misdtcp.runtime.wait cimport WaitCounters
from misdtcp.wire.drops cimport DROP_REASON_COUNT

cdef enum:
    MAX_WORKERS = 16
    DIGEST_SLOTS = 64
    LINE = 64

ctypedef struct WorkerCounters:          # 384 bytes: six cache lines of its own, written by its worker
    uint64_t pid
    uint64_t records
    uint64_t frames
    uint64_t requests
    uint64_t ticks
    uint64_t copies
    uint64_t bytes_copied
    uint64_t segments_sent
    uint64_t bytes_sent
    uint64_t write_errors
    uint64_t spins
    uint64_t sleeps
    uint64_t start_ns
    uint64_t end_ns
    uint64_t heartbeat_ns
    uint64_t position                    # log records processed
    uint64_t capture_used
    uint64_t capture_dropped
    uint64_t events_posted
    uint64_t digest
    uint64_t digest_round
    uint64_t lock_waits                  # mimd only
    uint64_t action_overflow
    uint64_t done
    uint64_t inflight                    # mimd: ring position being worked on (or ~0)
    uint64_t latency_sum_ns              # frame stamped -> its outputs done
    uint64_t latency_max_ns
    uint64_t last_seqno                  # seqno of the last record this worker applied
    uint64_t snapshots                   # checkpoints taken (recoverable mode)
    uint64_t snap_position[2]            # ring position right after each snapshot's checkpoint
    uint64_t restarts                    # times this worker was replaced from a snapshot
    uint64_t cpu_ns                      # this worker's CPU time inside its loop (thread clock)
    WaitCounters order_waits             # waits for an earlier owner's segments to be written
    uint64_t tx_skipped                  # a replacement's segments its predecessor had written
    uint64_t event_waits                 # events that found the event queue full and waited for room
    uint64_t applied_high                # the furthest any process of this worker applied (recovery:
                                         # a replacement replays behind it, and may die doing so)
    uint64_t announced_record            # worker 0: the last event it posted (record seqno + 1 ...
    uint64_t announced_index             # ... and index), stored right after the post
    uint64_t tx_batches                  # packet ring: sendmmsg batches written (segments_sent / this:
                                         # frames per system call)
    uint8_t _pad_counters[40]

ctypedef struct WaitWord:                # an eventcount on its own line
    uint32_t eventcount
    uint32_t _pad0
    uint8_t _pad[56]

ctypedef struct RuntimeHeader:
    # line 0: geometry and configuration (written once at set-up)
    uint64_t magic
    uint32_t nworkers
    uint32_t max_conns
    uint32_t progress_rows               # misd: one progress row per worker; mimd/single: one shared row
    uint32_t _pad0
    uint64_t rcvbuf
    uint64_t sndbuf
    uint64_t capture_size
    uint64_t progress_offset             # byte offsets from the start of the block
    uint64_t row_bytes                   # one progress row, rounded up to a cache line
    # line 1: control (written rarely)
    uint32_t go                          # start barrier
    uint32_t stop
    uint32_t diverged                    # a digest mismatch was seen
    uint32_t sequencer_sleeping          # set while the sequencer sits in poll()
    uint64_t diverged_round
    uint64_t acked_offset
    uint64_t capture_offset
    uint64_t total_size
    uint64_t sent_offset
    uint8_t _pad1[8]
    WaitWord go_wait                     # workers sleep here for the start barrier
    # mimd: the shared claim cursor, the ticket lock and completion in log order,
    # each on its own line (the foil gets no false sharing either)
    uint64_t claim_position
    uint8_t _pad2[56]
    uint32_t turn                        # ticket now served
    uint32_t _pad3
    uint8_t _pad4[56]
    WaitWord turn_wait
    uint64_t done_seqno                  # records whose outputs are complete, in log order
    uint8_t _pad5[56]
    WaitWord done_wait
    WaitWord sent_wait                   # send owners wait here for an earlier owner's segments
    # the sequencer's line (it publishes its statistics about every millisecond)
    uint64_t sequencer_records
    uint64_t sequencer_heartbeat_ns
    uint64_t sequencer_frames            # frames taken from the device
    uint64_t sequencer_coalesced         # of them, folded into the previous descriptor
    uint64_t sequencer_cpu_ns            # its thread's CPU time so far
    uint64_t sequencer_inline_ns         # of that, time inside replica 0 (inline placement)
    uint64_t sequencer_read_ns           # time reading and describing frames (waits for room left out)
    uint64_t sequencer_in_place          # frames the log points at where the device put them (packet ring)
    # the sequencer's second line: its device
    uint64_t sequencer_copied            # frames whose bytes it copied into the log (moved, staged)
    uint64_t sequencer_arp_replies       # ARP requests for the stack's address it answered
    uint64_t sequencer_slot_waits        # times it waited for the consumers to free device slots
    uint64_t sequencer_slots_held        # device slots held for the consumers right now
    uint8_t _pad6[32]
    WorkerCounters counters[MAX_WORKERS]
    uint64_t digests[MAX_WORKERS][DIGEST_SLOTS]
    uint64_t digest_rounds[MAX_WORKERS][DIGEST_SLOTS]
    # worker 0's published copy of the core's statistics
    uint64_t stats_ns                    # when worker 0 last published them
    CoreStats core_stats
    uint64_t core_drops[DROP_REASON_COUNT]
    # geometry of the areas added for `misdtcp ss` and readiness (set once)
    uint64_t ready_offset
    uint64_t conntable_offset
    uint64_t shares_offset
    uint64_t shares_row_bytes
    # worker 0's connection table: a seqlock (odd while it writes), when, how many rows
    uint64_t conntable_seq
    uint64_t conntable_ns
    uint64_t conntable_rows


ctypedef struct ReadyWant:               # one slot's armed interests (runtime/readiness.pxd), 16 bytes
    uint64_t read                        # progress_word(handle, seen + 1): tell me once readable end > seen
    uint64_t write                       # progress_word(handle, acked + 1): tell me once acked > that

ctypedef struct ConnInfo:                # 192 bytes: one connection as worker 0 last published it
    uint32_t handle
    uint8_t in_use
    uint8_t state
    uint16_t lport
    uint32_t raddr
    uint16_t rport
    uint16_t snd_mss
    uint32_t cwnd
    uint32_t ssthresh
    uint32_t snd_wnd
    uint32_t rcv_wnd
    uint64_t srtt_ns
    uint64_t rttvar_ns
    uint64_t rto_ns
    uint64_t retransmits
    uint64_t bytes_in
    uint64_t bytes_out
    uint64_t segs_in
    uint64_t segs_out
    uint64_t rcv_nxt_off                 # receive stream offset of rcv_nxt
    uint64_t consumed_off                # what the application consumed (as the log delivered it)
    uint64_t snd_end_off                 # send stream bytes the application provided
    uint64_t snd_una_off                 # send stream offset of snd_una
    uint8_t raddr6[16]                   # an IPv6 peer's address (raddr: its last 32 bits)
    uint8_t v6
    uint8_t _pad[47]

ctypedef struct ConnShare:               # 32 bytes: what one worker did for one connection slot
    uint32_t handle                      # the connection these counts belong to
    uint32_t _pad
    uint64_t bytes_copied
    uint64_t segments_sent
    uint64_t bytes_sent


cdef inline uint64_t *layout_progress(RuntimeHeader *h, uint32_t row) noexcept nogil:
    """Copy progress words of one row (indexed by connection slot)."""
    return <uint64_t *>((<char *>h) + h.progress_offset + row * h.row_bytes)


cdef inline uint64_t *layout_acked(RuntimeHeader *h) noexcept nogil:
    """Acknowledged send-stream offsets (indexed by connection slot)."""
    return <uint64_t *>((<char *>h) + h.acked_offset)


cdef inline uint64_t *layout_sent(RuntimeHeader *h) noexcept nogil:
    """Data segments written per connection slot (a progress word: the
    handle's generation over the count)."""
    return <uint64_t *>((<char *>h) + h.sent_offset)


cdef inline char *layout_capture(RuntimeHeader *h, uint32_t worker) noexcept nogil:
    return (<char *>h) + h.capture_offset + <uint64_t>worker * h.capture_size


cdef inline ReadyWant *layout_ready(RuntimeHeader *h) noexcept nogil:
    return <ReadyWant *>((<char *>h) + h.ready_offset)


cdef inline ConnInfo *layout_conntable(RuntimeHeader *h) noexcept nogil:
    return <ConnInfo *>((<char *>h) + h.conntable_offset)


cdef inline ConnShare *layout_shares(RuntimeHeader *h, uint32_t worker) noexcept nogil:
    return <ConnShare *>((<char *>h) + h.shares_offset + worker * h.shares_row_bytes)


cdef inline uint64_t progress_word(uint32_t handle, uint64_t offset) noexcept nogil:
    # A progress word carries the connection's handle generation in its top
    # 16 bits: a slot reused by a new connection never inherits the old
    # connection's progress (offsets stay below 2^48 = 256 TiB).
    return ((<uint64_t>(handle >> 20)) << 48) | (offset & 0xffffffffffffULL)


cdef inline uint64_t progress_offset_of(uint32_t handle, uint64_t word) noexcept nogil:
    """The offset of a progress word if it belongs to this connection, else 0."""
    if (word >> 48) != (handle >> 20):
        return 0
    return word & 0xffffffffffffULL


cdef class SharedView:
    cdef RuntimeHeader *h
    cdef object block
