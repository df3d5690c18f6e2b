# The replica worker of the MISD runtime: shared bookkeeping and the
# executor that turns the core's actions into copies and writes.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from misdtcp._tcpcore cimport TcpCore, CoreState, Replica, CoreStats
from misdtcp._wire cimport DROP_REASON_COUNT
from misdtcp._ring cimport Ring, Command

cdef enum:
    MAX_WORKERS = 16
    DIGEST_SLOTS = 64

# Application -> core requests, as Command.kind in REC_COMMAND records.
cdef enum:
    RT_LISTEN = 1       # a = port, b = backlog
    RT_CONNECT = 2      # a = remote address, b = rport << 16 | lport, c = tag
    RT_ACCEPTED = 3     # conn
    RT_CONSUMED = 4     # conn, a = receive stream offset consumed
    RT_SEND = 5         # conn, a = send stream offset written
    RT_SHUTDOWN = 6     # conn
    RT_CLOSE = 7        # conn
    RT_ABORT = 8        # conn
    RT_UNLISTEN = 9     # a = port

# Where transmitted segments go.
# Ring record kinds the runtime adds to _ring's RecordKind (the ring itself
# does not interpret kinds).
cdef enum:
    REC_CHECKPOINT = 6  # workers snapshot their replica state here (recovery)

cdef enum:
    SINK_NULL = 0       # count only
    SINK_FD = 1         # write(2) to a file descriptor (the TUN, or /dev/null)
    SINK_CAPTURE = 2    # append to a per-worker capture area (tests)

ctypedef struct WorkerCounters:          # 256 bytes: its own cache lines
    uint64_t pid
    uint64_t records
    uint64_t frames
    uint64_t commands
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
    uint64_t pad[1]

ctypedef struct RuntimeHeader:
    uint64_t magic
    uint32_t nworkers
    uint32_t max_conns
    uint32_t go                          # start barrier
    uint32_t stop
    uint32_t diverged                    # a digest mismatch was seen
    uint32_t failed
    uint64_t diverged_round
    uint64_t rcvbuf
    uint64_t sndbuf
    uint64_t capture_size
    # mimd: a shared claim cursor and a ticket lock over the shared core
    uint64_t claim_position
    uint64_t claim_seqno
    uint32_t turn                        # futex word: ticket now served
    uint32_t turn_waiters
    uint32_t sequencer_sleeping          # set while the sequencer sits in poll()
    uint32_t progress_rows               # misd: one progress row per worker; mimd/single: one shared row
    uint64_t sequencer_records
    uint64_t sequencer_heartbeat_ns
    uint64_t done_seqno                  # mimd: records whose outputs are complete, in log order
    uint64_t stats_ns                    # when worker 0 last published the core statistics
    CoreStats core_stats
    uint64_t core_drops[DROP_REASON_COUNT]
    uint64_t digests[MAX_WORKERS][DIGEST_SLOTS]
    uint64_t digest_rounds[MAX_WORKERS][DIGEST_SLOTS]
    WorkerCounters counters[MAX_WORKERS]
