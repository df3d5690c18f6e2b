# The deterministic TCP core: C-level interface for the runtime.
#
# State lives in one contiguous, pointer-free block (`CoreState` followed by
# the connection array and the hash table), so that it can be placed in
# shared memory (the `mimd` strategy), copied to restore a replica, and
# digested.  Everything that differs between replicas — which outputs this
# replica owns, and the list of actions it produced — lives in `Replica`.
#
# Inputs: core_frame, core_tick and the core_app_* requests, each stamped
# with `now` (nanoseconds of the sequencer's monotonic clock).  Outputs:
# `Action` records appended to the replica's action list, drained by the
# caller after every event.
#
# A connection is named by a 32-bit handle: its slot in the connection array
# in the low HANDLE_SLOT_BITS bits, the slot's generation above them, so a
# stale handle of a reused slot is refused.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from misdtcp.wire.tcp cimport MAX_HDR, TcpSegment
from misdtcp.wire.drops cimport DROP_REASON_COUNT
from misdtcp.core.ranges cimport RangeSet
from misdtcp.core.cc_state cimport CcState
from misdtcp.wire.descriptor cimport Descriptor

# RFC 9293 §3.3.2 states
cdef enum TcpState:
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10

cdef enum ActionKind:
    ACT_TRANSMIT = 1     # send hdr[0:hdr_len] + payload
    ACT_COPY = 2         # frame[frame_off:+length] -> receive stream offset stream_off
    ACT_NOTIFY = 3       # tell the application: code, value

# ACT_TRANSMIT payload sources and flags (Action.code)
cdef enum:
    TX_PAYLOAD_NONE = 0
    TX_PAYLOAD_STREAM = 1   # send stream [stream_off, +length); TCP checksum field holds the pseudo-header sum
    TX_PAYLOAD_FRAME = 2    # input frame [frame_off, +length); checksums complete (ICMP echo reply)
    TX_RETRANSMIT = 0x10
    TX_SEQUENCED = 0x20     # a data or FIN segment: Action.pad is its index in the connection's
                            # data-segment order (the order they must reach the wire in)
    TX_ORDERED = 0x40       # ... and the first of a new owner: write it only once the connection's
                            # earlier segments are written (see _emit_tcp)

# ACT_NOTIFY codes (Action.code); Action.stream_off carries the value
cdef enum NotifyCode:
    N_ACCEPTED = 1        # value: local port of the listener
    N_CONNECTED = 2       # value: the tag of the app_connect request
    N_READABLE = 3        # value: receive stream offset up to which data is in order
    N_WRITABLE = 4        # value: send stream offset acknowledged by the peer
    N_PEER_CLOSED = 5     # value: final length of the receive stream
    N_RESET = 6           # value: reason (R_*)
    N_CLOSED = 7          # the connection is gone; its handle is dead
    N_CONNECT_FAILED = 8  # value: the tag; handle field: reason (R_*)
    N_URGENT = 9          # value: receive stream offset where the urgent data ends (RFC 6093)

cdef enum ResetReason:
    R_RESET_BY_PEER = 1
    R_REFUSED = 2
    R_TIMED_OUT = 3
    R_ABORTED = 4
    R_NO_MEMORY = 5
    # ICMP errors (RFC 1122 §4.2.3.9): hard ones abort an opening connection;
    # soft ones are kept and reported if the connection later times out
    R_NET_UNREACHABLE = 6
    R_HOST_UNREACHABLE = 7
    R_PROTO_UNREACHABLE = 8
    R_HOST_DOWN = 9
    R_NO_NETWORK = 10
    R_PROTOCOL_ERROR = 11

# Per-connection socket options (core_app_setopt), set on a connection or on
# a listener (whose connections inherit them).  Values: booleans, bytes, or
# seconds for the keep-alive times.
cdef enum ConnOption:
    OPT_NODELAY = 1      # 1: Nagle off (RFC 9293 §3.7.4 lets the application disable it)
    OPT_MAXSEG = 2       # clamp of the MSS we announce and send (0: none)
    OPT_RCVBUF = 3       # receive buffer, bytes (at most the configured rcvbuf)
    OPT_SNDBUF = 4       # send buffer, bytes (at most the configured sndbuf)
    OPT_KEEPALIVE = 5    # RFC 1122 §4.2.3.6 keep-alives on/off
    OPT_KEEPIDLE = 6     # idle seconds before the first keep-alive
    OPT_KEEPINTVL = 7    # seconds between unanswered keep-alives
    OPT_KEEPCNT = 8      # unanswered keep-alives before the connection is reset

cdef enum:
    MAX_LISTENERS = 16
    NO_CONN = 0xffffffff
    HANDLE_SLOT_BITS = 20
    HANDLE_SLOT_MASK = (1 << 20) - 1


cdef inline uint32_t handle_slot(uint32_t handle) noexcept nogil:
    """The connection-array slot a handle names."""
    return handle & HANDLE_SLOT_MASK

ctypedef struct Action:
    uint8_t kind
    uint8_t code
    uint16_t hdr_len
    uint32_t handle          # the connection (NO_CONN for connectionless replies)
    uint32_t length
    uint32_t frame_off
    uint16_t gso_size        # transmit: segment size when length > it (GSO)
    uint16_t csum_start      # transmit: offset of the L4 header in hdr
    uint32_t pad
    uint64_t stream_off
    uint8_t hdr[MAX_HDR]

ctypedef struct CoreConfig:
    uint32_t local_addr
    uint8_t local_addr6[16]      # our IPv6 address (network order), when ipv6
    uint8_t ipv6                 # the stack has an IPv6 address: it speaks IPv6
    uint32_t max_conns
    uint32_t rcvbuf
    uint32_t sndbuf
    uint16_t mss                 # what we advertise over IPv4 (MTU - 40; over IPv6 20 less: MTU - 60)
    uint8_t rcv_wscale           # our window scale (RFC 7323 §2)
    uint8_t cc_algo
    uint8_t timestamps
    uint8_t sack
    uint8_t nagle
    uint8_t syn_cookies
    uint8_t rfc1337              # ignore RST in TIME-WAIT (RFC 1337 §3); RFC 9293's default is to close
    uint32_t gso_max             # largest payload per transmit action; <= mss: no GSO
    uint32_t backlog_default
    uint32_t challenge_ack_limit # per second, global on average; the budget of each second is drawn (RFC 5961 §7)
    uint64_t msl_ns
    uint64_t delack_ns
    uint64_t rto_min_ns
    uint64_t rto_max_ns
    uint64_t rto_initial_ns
    uint32_t max_retries         # RTO expiries before the connection is reset
    uint32_t synack_retries      # SYN-ACK retransmissions before a half-open passive connection is dropped
    uint32_t burst               # max transmit actions per event per connection
    uint64_t secret0
    uint64_t secret1
    uint64_t fin_wait2_ns        # a closed connection waits this long in FIN-WAIT-2 (Linux tcp_fin_timeout)
    uint64_t oow_interval_ns     # at most one ACK to invalid segments per connection per interval

ctypedef struct Listener:
    uint16_t port
    uint16_t active
    uint32_t backlog
    uint32_t pending             # SYN-RECEIVED + established-not-accepted
    # options the listener's connections start with (OPT_*; 0: the configured default)
    uint8_t nodelay
    uint8_t keepalive
    uint16_t user_mss
    uint32_t rcvbuf
    uint32_t sndbuf
    uint32_t keep_cnt
    uint64_t keep_idle_ns
    uint64_t keep_intvl_ns

ctypedef struct Conn:
    uint8_t state
    uint8_t in_use
    uint8_t passive
    uint8_t accepted
    uint8_t ts_ok
    uint8_t sack_ok
    uint8_t snd_wscale
    uint8_t rcv_wscale
    uint8_t fin_pending          # the application shut down its sending side
    uint8_t app_closed           # the application closed: nothing more is read
    uint8_t ack_now              # emit an ACK at the end of this event
    uint8_t delack_armed
    uint8_t in_recovery
    uint8_t rtt_timing
    uint8_t backoff
    uint8_t persist_backoff
    uint8_t nagle
    uint8_t notified_readable
    uint8_t v6                   # an IPv6 connection: raddr6 is the peer, IPv6 headers go out
    uint16_t dupacks
    uint16_t lport
    uint16_t rport
    uint16_t snd_mss
    uint16_t rcv_mss             # estimate of the peer's segment size (ACK policy)
    uint16_t gen                 # handle generation (stale handles are refused)
    uint32_t raddr               # IPv4: the peer; IPv6: the last 32 bits of raddr6 (the hash and the
                                 # first compare use it either way)
    uint8_t raddr6[16]           # IPv6: the peer's address (network order); IPv4: unused
    uint32_t listener
    uint64_t tag
    # --- receive side (RFC 9293 §3.3.1) ---
    uint32_t irs
    uint32_t rcv_nxt
    uint32_t rcv_adv             # right edge of the window we advertised
    uint32_t last_ack_sent
    uint32_t ts_recent
    uint32_t segs_unacked        # bytes received since the last ACK
    uint64_t ts_recent_ns
    uint64_t rcv_nxt_off         # receive stream offset of rcv_nxt
    uint64_t consumed_off        # what the application has consumed
    uint64_t fin_off             # stream offset of the peer's FIN, or NO_OFF
    uint32_t rcv_buf
    uint32_t flow_label          # IPv6 flow label of every segment sent (RFC 6437 §3: keyed hash of the flow)
    RangeSet ooo                 # out-of-order ranges past rcv_nxt
    # --- send side ---
    uint32_t iss
    uint32_t snd_una
    uint32_t snd_nxt
    uint32_t snd_max
    uint32_t snd_wnd
    uint32_t snd_wl1
    uint32_t snd_wl2
    uint32_t max_snd_wnd
    uint32_t recover             # RFC 6582
    uint32_t high_rxt            # RFC 6675 HighRxt
    uint32_t rtt_seq
    uint32_t ts_offset
    uint64_t snd_end_off         # send stream bytes the application has provided
    uint32_t snd_buf
    uint32_t retries
    uint64_t rtt_start_ns
    uint64_t srtt_ns
    uint64_t rttvar_ns
    uint64_t rto_ns
    CcState cc
    RangeSet sacked              # send stream offsets the peer SACKed
    # --- timers (absolute ns; 0 = not armed) ---
    uint64_t rto_at
    uint64_t delack_at
    uint64_t persist_at
    uint64_t timewait_at
    # --- ownership counters (replicated) and statistics ---
    uint64_t tx_count            # ACKs emitted (their round-robin owner)
    uint32_t tx_data_index       # data and FIN segments emitted, in order (the write order)
    uint32_t _pad_tx
    uint64_t tx_data_stripe      # the send stripe the last of them started in
    uint64_t segs_in
    uint64_t bytes_in
    uint64_t segs_out
    uint64_t bytes_out
    uint64_t retransmits
    uint64_t dup_segs
    # --- added after the first release (appended to keep the layout) ---
    uint32_t snd_sml             # end of the last small segment sent (Minshall's Nagle)
    uint16_t user_mss            # OPT_MAXSEG (0: none)
    uint8_t keepalive            # OPT_KEEPALIVE
    uint8_t keep_probes          # keep-alives sent and not answered
    uint32_t keep_cnt
    uint32_t pad2
    uint64_t keep_idle_ns
    uint64_t keep_intvl_ns
    uint64_t keep_at             # keep-alive timer (absolute ns; 0 = not armed)
    uint64_t last_rcv_ns         # when the last acceptable segment arrived
    uint64_t fin2_at             # FIN-WAIT-2 timer of a closed connection
    uint8_t recover_valid        # `recover` guards fast retransmit (RFC 6582 §3.2) until SND.UNA passes it
    uint8_t oow_acked            # last_oow_ack_ns is set
    uint8_t pad3[6]
    uint64_t last_oow_ack_ns     # last ACK sent to an out-of-window, PAWS-failed or challenged segment
    # --- RFC 6675 rescue, RFC 8985 tail loss probe, RFC 2883 D-SACK ---
    uint32_t rescue_end          # RescueRxt + 1: a rescue retransmission waits until SND.UNA passes it
    uint8_t rescue_valid
    uint8_t tlp_active           # a loss probe is outstanding (TLP.end_seq is valid)
    uint8_t tlp_retrans          # the probe retransmitted data (rather than sending new data)
    uint8_t tlp_dsack            # a D-SACK reported the probe as a duplicate: it repaired nothing
    uint32_t tlp_start           # first sequence number of the probe
    uint32_t tlp_end             # TLP.end_seq
    uint64_t tlp_at              # loss-probe timer (absolute ns; 0 = not armed)
    uint64_t lost_off            # unSACKed send-stream bytes below this are lost (RACK, partial ACKs)
    uint8_t dsack                # a D-SACK block waits for the next ACK we send
    uint8_t pad4[3]
    uint32_t dsack_left
    uint32_t dsack_right
    uint8_t soft_error           # R_* of the last ICMP soft error (reported instead of a timeout)
    uint8_t snd_up_valid         # urgent data to send: segments before SND.UP carry URG
    uint8_t rcv_up_valid
    uint8_t pad5
    uint32_t snd_up              # SND.UP: the octet after the urgent data (RFC 6093)
    uint64_t rcv_up              # receive stream offset where the peer's urgent data ends

ctypedef struct CoreStats:
    uint64_t frames
    uint64_t tcp_segments
    uint64_t icmp_echo
    uint64_t acks_out
    uint64_t segs_out
    uint64_t data_bytes_out
    uint64_t rst_out
    uint64_t challenge_acks
    uint64_t challenge_acks_suppressed
    uint64_t retransmits
    uint64_t fast_retransmits
    uint64_t rto_expired
    uint64_t syn_cookies_sent
    uint64_t syn_cookies_accepted
    uint64_t conns_opened
    uint64_t conns_closed
    uint64_t wscale_clamped
    uint64_t zero_window_probes
    uint64_t half_open_evicted   # SYN-RECEIVED entries freed for a valid cookie ACK
    uint64_t keepalive_probes
    uint64_t oow_acks_suppressed # ACKs not sent to out-of-window or PAWS-failed segments (rate limit)
    uint64_t tail_loss_probes    # RFC 8985 §7
    uint64_t rescue_retransmits  # RFC 6675 NextSeg rule 4
    uint64_t dsacks_sent         # RFC 2883
    uint64_t icmp_errors         # ICMP errors taken for a connection
    uint64_t icmp_aborts         # connections an ICMP hard error ended while opening
    uint64_t pmtu_reductions     # MSS lowered by a fragmentation-needed (RFC 1191) or Packet Too Big
                                 # (RFC 8201) message
    uint64_t icmp6_echo          # ICMPv6 echo requests answered (RFC 4443 §4.2)

ctypedef struct CoreState:
    uint64_t magic
    uint64_t size                # bytes of the whole block
    CoreConfig cfg
    uint64_t now_ns              # time of the last event
    uint64_t next_timer_ns       # earliest armed timer over all connections (0: none)
    uint64_t events
    uint32_t nconns
    uint32_t high_slot           # slots >= this are all free
    uint32_t hash_mask
    uint32_t nlisteners
    uint64_t conns_offset
    uint64_t hash_offset
    uint64_t hash_mul            # keys of the connection hash, drawn from the secret (odd)
    uint64_t hash_add
    uint64_t hash_mul6[3]        # ... and the multipliers of an IPv6 address's first 96 bits
    uint64_t challenge_second    # the second (now // 1 s) challenge_left belongs to
    uint32_t challenge_left      # challenge ACKs this second may still send
    uint16_t ip_ident
    uint16_t challenge_drawn     # challenge_left was drawn for challenge_second
    Listener listeners[MAX_LISTENERS]
    uint64_t drops[DROP_REASON_COUNT]
    CoreStats stats
    # last, and left out of the digest: how the log names IPv6 peers, not TCP
    # state (a core fed frames has none, and must digest as one fed the log)
    uint8_t peer6[16]            # the IPv6 address of the last REC_PEER6 record: the source of the
                                 # SEG_PEER6 segment descriptors that follow (wire/descriptor.pxd)

ctypedef struct Replica:
    uint32_t replica             # this replica's index
    uint32_t replicas            # how many replicas share the log
    uint64_t stripe              # bytes per ownership stripe of the receive stream
    uint64_t send_stripe         # bytes per ownership stripe of the send stream
    Action *actions
    uint32_t nactions
    uint32_t capacity
    uint64_t overflow            # actions lost for want of room (a runtime bug if ever non-zero)
    bint fast_path               # take the in-order fast path (header prediction); the results are
                                 # the slow path's exactly, so replicas may differ in this
    uint64_t fast_path_hits      # segments the fast path took

cdef uint64_t core_state_size(const CoreConfig *cfg) noexcept nogil
cdef void core_init(CoreState *st, const CoreConfig *cfg) noexcept nogil
cdef void core_frame(CoreState *st, Replica *rx, const uint8_t *frame, uint32_t n,
                     uint32_t flags, uint32_t gso_size, uint64_t now) noexcept nogil
cdef void core_entry(CoreState *st, Replica *rx, const Descriptor *e) noexcept nogil
cdef void core_dropped(CoreState *st, Replica *rx, uint32_t reason, uint64_t now) noexcept nogil
cdef void core_peer6(CoreState *st, const uint8_t *addr) noexcept nogil
cdef void core_tick(CoreState *st, Replica *rx, uint64_t now) noexcept nogil
cdef int core_app_listen(CoreState *st, Replica *rx, uint16_t port, uint32_t backlog, uint64_t now) noexcept nogil
cdef int core_app_unlisten(CoreState *st, Replica *rx, uint16_t port, uint64_t now) noexcept nogil
cdef int core_app_connect(CoreState *st, Replica *rx, uint64_t tag, uint32_t raddr, const uint8_t *raddr6,
                          uint16_t rport, uint16_t lport, uint16_t user_mss, uint32_t rcvbuf,
                          uint64_t now) noexcept nogil
cdef int core_app_accepted(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil
cdef int core_app_consumed(CoreState *st, Replica *rx, uint32_t handle, uint64_t off, uint64_t now) noexcept nogil
cdef int core_app_send(CoreState *st, Replica *rx, uint32_t handle, uint64_t upto, bint urgent,
                       uint64_t now) noexcept nogil
cdef int core_app_shutdown(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil
cdef int core_app_close(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil
cdef int core_app_abort(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil
cdef int core_app_setopt(CoreState *st, Replica *rx, uint32_t target, bint listener, uint32_t option,
                         uint64_t value, uint64_t now) noexcept nogil
cdef uint64_t core_digest(const CoreState *st) noexcept nogil
cdef Conn *core_conn(CoreState *st, uint32_t handle) noexcept nogil


cdef class TcpCore:
    cdef CoreState *st
    cdef Replica rx
    cdef bint owns_state
    cdef object _keepalive
    cdef void _reset_actions(self) noexcept nogil
    cdef list _drain(self, const uint8_t *frame)
