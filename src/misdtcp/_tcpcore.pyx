# cython: language_level=3
"""The deterministic, sans-I/O TCP core (RFC 9293 and friends).

A replica of the core is a pure function of its event log.  It never reads
a clock, a random source or a device: every event carries `now` stamped by
the sequencer, ISNs and SYN cookies come from a keyed hash of the 4-tuple
and that time (RFC 6528), and the core holds no payload — it emits *actions*:

* ``ACT_COPY``      frame bytes -> receive stream offset (the runtime copies),
* ``ACT_TRANSMIT``  a built IPv4+TCP header plus a range of the send stream
                    (or of the input frame, for ICMP echo replies),
* ``ACT_NOTIFY``    accepted / connected / readable / writable / peer closed /
                    reset / closed.

Replication: every replica runs every event and updates all of its state;
it *emits* only the outputs it owns (`Replica.replica` of `Replica.replicas`):

* payload copies by stripe of receive-stream offset: owner = off // stripe % N,
  so a retransmission cut differently lands on the same owner;
* pure ACKs round-robin by the connection's `tx_count`, which every replica
  advances identically;
* data (and FIN) segments by stripe of send-stream offset: owner =
  off // send_stripe % N, so one replica writes a whole run of consecutive
  segments and a retransmission goes to the replica that sent the original.
  Where the owner changes, the new owner's first segment carries TX_ORDERED
  and its index in the connection's segment order: the runtime writes it only
  after the earlier ones are written, so the wire order is the sequence order
  (a peer that saw segments reordered would take them for losses);
* control segments (SYN, SYN-ACK, RST, challenge ACKs, probes, ICMP): replica 0.

The segment-arrival processing follows RFC 9293 §3.10.7 step by step: one
function per step (`_check_sequence`, `_check_rst`, `_check_syn`,
`_process_ack`, `_process_text`, `_process_fin`), called in order by
`_segment_synchronized`.  RFC 5961 (blind-injection defences), RFC 7323
(timestamps, PAWS, window scale), RFC 2018/6675 (SACK), RFC 6298 (RTO),
RFC 6582 (NewReno) and RFC 1122 (delayed ACK, SWS avoidance) rules are cited
where they apply.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, int8_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy, memcmp

from misdtcp.core.siphash cimport siphash24
from misdtcp.wire.seq cimport seq_lt, seq_le, seq_gt, seq_ge, seq_max, seq_min, seq_in, seq_diff
from misdtcp.wire.bytes cimport rd16, rd32, wr16, wr32
from misdtcp.wire.checksum cimport csum_partial, csum_fold, csum_finish, csum_pseudo_v4, csum_pseudo_v6
from misdtcp.wire.drops cimport *
from misdtcp.wire.frame cimport FRAME_CSUM_PARTIAL, FRAME_CSUM_VALID, FRAME_VERIFY_CSUM
from misdtcp.wire.icmp cimport *
from misdtcp.wire.ipv4 cimport (Ipv4Header, IP_HDR_LEN, IP_SOURCE, IP_DESTINATION, IPPROTO_ICMP, IPPROTO_TCP,
                                bad_source, parse_ipv4, write_ipv4_header)
from misdtcp.wire.ipv6 cimport (IP6_HDR_LEN, IP6_SOURCE, IP6_DESTINATION, IP6_NEXT_HEADER, IP6_MIN_MTU,
                                IPPROTO_ICMPV6, bad_source6, write_ipv6_header)
from misdtcp.wire.icmp6 cimport *
from misdtcp.wire.tcp cimport *
from misdtcp.wire.validate cimport FRAME_IS_ICMP, FRAME_IS_ICMP6, validate_frame
from misdtcp.wire.descriptor cimport Descriptor, SEG_TS, SEG_PEER6
from misdtcp.core.ranges cimport (RangeSet, MAX_RANGES, ranges_clear, ranges_add, ranges_trim_below,
                                  ranges_trim_above, ranges_advance, ranges_bytes, ranges_bytes_between,
                                  ranges_next_gap, ranges_contains)
from misdtcp.core.cc_state cimport CcState, CC_RENO, CC_CUBIC
from misdtcp.core.congestion cimport cc_init, cc_on_ack, cc_on_congestion, cc_on_rto

cdef uint64_t MAGIC = 0x6d69736474637031ULL
cdef uint64_t NO_OFF = 0xffffffffffffffffULL
# RFC 7323 §5.5: a ts_recent older than 24 days is no longer used for PAWS.
cdef uint64_t PAWS_IDLE_NS = 24ULL * 86400ULL * 1000000000ULL
cdef uint64_t MS = 1000000ULL
cdef uint64_t SEC = 1000000000ULL
# RFC 1122 §4.2.3.6: the keep-alive interval "MUST default to no less than two
# hours"; interval and count as Linux (tcp_keepalive_intvl 75 s, probes 9).
cdef uint64_t KEEP_IDLE_DEFAULT_NS = 7200ULL * 1000000000ULL
cdef uint64_t KEEP_INTVL_DEFAULT_NS = 75ULL * 1000000000ULL
cdef uint32_t KEEP_CNT_DEFAULT = 9
# SYN-cookie MSS table (3 bits), the values Linux encodes.
cdef uint16_t COOKIE_MSS[8]
COOKIE_MSS[:] = [536, 1300, 1440, 1460, 4312, 8960, 1220, 1360]

STATE_NAMES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
               "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

NOTIFY_NAMES = {1: "accepted", 2: "connected", 3: "readable", 4: "writable",
                5: "peer_closed", 6: "reset", 7: "closed", 8: "connect_failed", 9: "urgent"}
RESET_NAMES = {1: "reset_by_peer", 2: "refused", 3: "timed_out", 4: "aborted", 5: "no_memory",
               6: "net_unreachable", 7: "host_unreachable", 8: "protocol_unreachable", 9: "host_down",
               10: "no_network", 11: "protocol_error"}


# ---------------------------------------------------------------------------
# State block layout
# ---------------------------------------------------------------------------

cdef inline uint32_t _hash_size(uint32_t max_conns) noexcept nogil:
    cdef uint32_t h = 16
    while h < 2 * max_conns:
        h <<= 1
    return h


cdef uint64_t core_state_size(const CoreConfig *cfg) noexcept nogil:
    cdef uint64_t base = (sizeof(CoreState) + 63) & ~(<uint64_t>63)
    cdef uint64_t conns = (<uint64_t>cfg.max_conns * sizeof(Conn) + 63) & ~(<uint64_t>63)
    return base + conns + <uint64_t>_hash_size(cfg.max_conns) * sizeof(uint32_t)


cdef inline Conn *_conns(CoreState *st) noexcept nogil:
    return <Conn *>((<uint8_t *>st) + st.conns_offset)


cdef inline uint32_t *_htab(CoreState *st) noexcept nogil:
    return <uint32_t *>((<uint8_t *>st) + st.hash_offset)


cdef void core_init(CoreState *st, const CoreConfig *cfg) noexcept nogil:
    cdef uint64_t size = core_state_size(cfg)
    cdef uint32_t i, hs = _hash_size(cfg.max_conns)
    memset(st, 0, size)
    st.magic = MAGIC
    st.size = size
    st.cfg = cfg[0]
    st.conns_offset = (sizeof(CoreState) + 63) & ~(<uint64_t>63)
    st.hash_offset = st.conns_offset + ((<uint64_t>cfg.max_conns * sizeof(Conn) + 63) & ~(<uint64_t>63))
    st.hash_mask = hs - 1
    st.hash_mul = siphash24(<const uint8_t *>b"hash-mul", 8, cfg.secret0, cfg.secret1) | 1
    st.hash_add = siphash24(<const uint8_t *>b"hash-add", 8, cfg.secret0, cfg.secret1)
    st.hash_mul6[0] = siphash24(<const uint8_t *>b"hash-v6a", 8, cfg.secret0, cfg.secret1)
    st.hash_mul6[1] = siphash24(<const uint8_t *>b"hash-v6b", 8, cfg.secret0, cfg.secret1)
    st.hash_mul6[2] = siphash24(<const uint8_t *>b"hash-v6c", 8, cfg.secret0, cfg.secret1)
    cdef uint32_t *h = _htab(st)
    for i in range(hs):
        h[i] = NO_CONN


cdef inline uint32_t _tuple_hash(const CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport,
                                 uint16_t lport) noexcept nogil:
    """Keyed multiply-add-shift hashing (Dietzfelbinger; universal for a
    random odd multiplier): with the multiplier and addend drawn from the
    secret, a remote sender cannot compute 4-tuples that share a bucket --
    an unkeyed, invertible mix let it fill one probe chain at will.  One
    multiplication per IPv4 lookup; an IPv6 address (raddr6, else NULL;
    raddr holds its last 32 bits) adds its first 96 bits, each 32-bit word
    by a multiplier of its own (vector multiply-shift).  Every replica
    draws the same keys."""
    cdef uint64_t x = (<uint64_t>raddr << 32) | (<uint64_t>rport << 16) | lport
    cdef uint64_t h = st.hash_mul * x + st.hash_add
    if raddr6 != NULL:
        h += st.hash_mul6[0] * rd32(raddr6) + st.hash_mul6[1] * rd32(raddr6 + 4) + \
            st.hash_mul6[2] * rd32(raddr6 + 8)
    return <uint32_t>(h >> 32)


cdef inline uint32_t _conn_hash(const CoreState *st, const Conn *c) noexcept nogil:
    return _tuple_hash(st, c.raddr, c.raddr6 if c.v6 else NULL, c.rport, c.lport)


cdef uint32_t _lookup(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport,
                      uint16_t lport) noexcept nogil:
    """The slot of the connection with this 4-tuple, or NO_CONN.  The key is
    the whole address: raddr6 (16 bytes) for IPv6, NULL for IPv4; an IPv4
    lookup costs one more byte compare than before IPv6 came."""
    cdef uint32_t *h = _htab(st)
    cdef Conn *conns = _conns(st)
    cdef uint32_t i = _tuple_hash(st, raddr, raddr6, rport, lport) & st.hash_mask
    cdef uint32_t slot
    cdef Conn *c
    cdef uint8_t v6 = raddr6 != NULL
    while True:
        slot = h[i]
        if slot == NO_CONN:
            return NO_CONN
        c = &conns[slot]
        if c.raddr == raddr and c.rport == rport and c.lport == lport and c.v6 == v6 and \
                (not v6 or memcmp(c.raddr6, raddr6, 16) == 0):
            return slot
        i = (i + 1) & st.hash_mask


cdef inline uint32_t _seg_lookup(CoreState *st, TcpSegment *seg) noexcept nogil:
    return _lookup(st, seg.saddr, seg.saddr6 if seg.v6 else NULL, seg.sport, seg.dport)


cdef void _hash_insert(CoreState *st, uint32_t slot) noexcept nogil:
    cdef Conn *c = &_conns(st)[slot]
    cdef uint32_t *h = _htab(st)
    cdef uint32_t i = _conn_hash(st, c) & st.hash_mask
    while h[i] != NO_CONN:
        i = (i + 1) & st.hash_mask
    h[i] = slot


cdef void _hash_remove(CoreState *st, uint32_t slot) noexcept nogil:
    # Linear probing with backward-shift deletion: no tombstones, so lookups
    # stay short however many connections come and go.
    cdef Conn *conns = _conns(st)
    cdef Conn *c = &conns[slot]
    cdef uint32_t *h = _htab(st)
    cdef uint32_t i = _conn_hash(st, c) & st.hash_mask
    cdef uint32_t j, k
    while h[i] != slot:
        if h[i] == NO_CONN:
            return
        i = (i + 1) & st.hash_mask
    j = i
    while True:
        j = (j + 1) & st.hash_mask
        if h[j] == NO_CONN:
            break
        k = _conn_hash(st, &conns[h[j]]) & st.hash_mask
        # move h[j] to i if its home k is not cyclically in (i, j]
        if (i <= j and (k <= i or k > j)) or (i > j and (k <= i and k > j)):
            h[i] = h[j]
            i = j
    h[i] = NO_CONN


cdef inline uint32_t _handle(Conn *c, uint32_t slot) noexcept nogil:
    return slot | (<uint32_t>c.gen << HANDLE_SLOT_BITS)


cdef Conn *core_conn(CoreState *st, uint32_t handle) noexcept nogil:
    cdef uint32_t slot = handle_slot(handle)
    cdef Conn *c
    if slot >= st.cfg.max_conns:
        return NULL
    c = &_conns(st)[slot]
    if not c.in_use or c.gen != (handle >> HANDLE_SLOT_BITS):
        return NULL
    return c


cdef inline uint32_t _slot_of(CoreState *st, Conn *c) noexcept nogil:
    return <uint32_t>(c - _conns(st))


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------

cdef inline Action *_action(CoreState *st, Replica *rx) noexcept nogil:
    cdef Action *a
    if rx.nactions >= rx.capacity:
        rx.overflow += 1
        return NULL
    a = &rx.actions[rx.nactions]
    rx.nactions += 1
    return a


cdef void _notify(CoreState *st, Replica *rx, uint32_t handle, uint8_t code, uint64_t value) noexcept nogil:
    cdef Action *a = _action(st, rx)
    if a == NULL:
        return
    a.kind = ACT_NOTIFY
    a.code = code
    a.handle = handle
    a.stream_off = value
    a.length = 0
    a.hdr_len = 0


cdef void _copy(CoreState *st, Replica *rx, uint32_t handle, uint32_t frame_off, uint64_t stream_off,
                uint32_t length) noexcept nogil:
    """Emit the payload copies this replica owns, split at stripe edges."""
    cdef Action *a
    cdef uint64_t s = stream_off, e = stream_off + length, piece_end, idx
    if length == 0:
        return
    if rx.replicas <= 1:
        a = _action(st, rx)
        if a != NULL:
            a.kind = ACT_COPY
            a.code = 0
            a.handle = handle
            a.frame_off = frame_off
            a.stream_off = stream_off
            a.length = length
            a.hdr_len = 0
        return
    while s < e:
        idx = s // rx.stripe
        piece_end = (idx + 1) * rx.stripe
        if piece_end > e:
            piece_end = e
        if idx % rx.replicas == rx.replica:
            a = _action(st, rx)
            if a != NULL:
                a.kind = ACT_COPY
                a.code = 0
                a.handle = handle
                a.frame_off = frame_off + <uint32_t>(s - stream_off)
                a.stream_off = s
                a.length = <uint32_t>(piece_end - s)
                a.hdr_len = 0
        s = piece_end


# ---------------------------------------------------------------------------
# Time, timers, keyed functions
# ---------------------------------------------------------------------------

cdef inline void _arm(CoreState *st, uint64_t at) noexcept nogil:
    if at and (st.next_timer_ns == 0 or at < st.next_timer_ns):
        st.next_timer_ns = at


cdef inline uint32_t _ts_clock(Conn *c, uint64_t now) noexcept nogil:
    # RFC 7323 §5.4: a 1 ms clock, offset per connection so the value does
    # not reveal uptime.
    return <uint32_t>(now // MS) + c.ts_offset


cdef uint64_t _keyed(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport, uint16_t lport,
                     uint32_t extra, uint32_t salt) noexcept nogil:
    """SipHash of the 4-tuple (both addresses whole: 16 bytes each over IPv6,
    raddr6 != NULL), `extra` and `salt` under the secret."""
    cdef uint8_t buf[44]
    if raddr6 != NULL:
        memcpy(buf, st.cfg.local_addr6, 16)
        memcpy(buf + 16, raddr6, 16)
        wr16(buf + 32, lport)
        wr16(buf + 34, rport)
        wr32(buf + 36, extra)
        wr32(buf + 40, salt)
        return siphash24(buf, 44, st.cfg.secret0, st.cfg.secret1)
    wr32(buf, st.cfg.local_addr)
    wr32(buf + 4, raddr)
    wr16(buf + 8, lport)
    wr16(buf + 10, rport)
    wr32(buf + 12, extra)
    wr32(buf + 16, salt)
    return siphash24(buf, 20, st.cfg.secret0, st.cfg.secret1)


cdef uint32_t _isn(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport, uint16_t lport,
                   uint64_t now) noexcept nogil:
    # RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey),
    # M a 4-microsecond timer taken from the stamped time.
    return <uint32_t>(now // 4000) + <uint32_t>_keyed(st, raddr, raddr6, rport, lport, 0, 1)


cdef uint32_t _ts_offset(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport,
                         uint16_t lport) noexcept nogil:
    return <uint32_t>_keyed(st, raddr, raddr6, rport, lport, 0, 2)


cdef uint32_t _flow_label(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport,
                          uint16_t lport) noexcept nogil:
    """RFC 6437 §3 (and RFC 6438's aim, load spreading): a flow label per
    connection, uniformly distributed and not guessable from outside --
    a keyed hash of the 4-tuple under the secret, the same in every replica
    and for every segment of the flow (a stateless reply to a flow gets the
    label the connection would have).  Zero means "unlabelled", so never 0."""
    cdef uint32_t label = <uint32_t>_keyed(st, raddr, raddr6, rport, lport, 0, 3) & 0xfffff
    return label if label else 1


cdef inline void _rto_arm(CoreState *st, Conn *c) noexcept nogil:
    c.rto_at = st.now_ns + c.rto_ns
    _arm(st, c.rto_at)


# ---------------------------------------------------------------------------
# Connection lifecycle
# ---------------------------------------------------------------------------

cdef Conn *_alloc(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport,
                  uint16_t lport) noexcept nogil:
    """A free slot for the 4-tuple (raddr6: the IPv6 peer, else NULL)."""
    cdef Conn *conns = _conns(st)
    cdef uint32_t slot
    cdef uint16_t gen
    cdef Conn *c
    if st.nconns >= st.cfg.max_conns:
        return NULL
    # Lowest free slot: deterministic, and keeps the timer scan short.
    slot = 0
    while conns[slot].in_use:
        slot += 1
    c = &conns[slot]
    gen = <uint16_t>((c.gen + 1) & 0xfff)
    memset(c, 0, sizeof(Conn))
    c.gen = gen
    c.in_use = 1
    c.raddr = raddr
    if raddr6 != NULL:
        c.v6 = 1
        memcpy(c.raddr6, raddr6, 16)
        c.flow_label = _flow_label(st, raddr, raddr6, rport, lport)
    c.rport = rport
    c.lport = lport
    c.listener = NO_CONN
    c.fin_off = NO_OFF
    c.rcv_buf = st.cfg.rcvbuf
    c.snd_buf = st.cfg.sndbuf
    c.nagle = st.cfg.nagle
    c.rto_ns = st.cfg.rto_initial_ns
    c.keep_idle_ns = KEEP_IDLE_DEFAULT_NS
    c.keep_intvl_ns = KEEP_INTVL_DEFAULT_NS
    c.keep_cnt = KEEP_CNT_DEFAULT
    c.snd_mss = 536                      # RFC 9293 §3.7.1 default until the peer says
    c.rcv_mss = 536
    c.ts_offset = _ts_offset(st, raddr, raddr6, rport, lport)
    st.nconns += 1
    if slot + 1 > st.high_slot:
        st.high_slot = slot + 1
    _hash_insert(st, slot)
    st.stats.conns_opened += 1
    return c


cdef void _release(CoreState *st, Replica *rx, Conn *c, bint notify) noexcept nogil:
    cdef uint32_t slot = _slot_of(st, c)
    cdef Listener *l
    if c.passive and not c.accepted and c.listener < MAX_LISTENERS:
        l = &st.listeners[c.listener]
        if l.pending:
            l.pending -= 1
    if notify:
        _notify(st, rx, _handle(c, slot), N_CLOSED, 0)
    _hash_remove(st, slot)
    c.in_use = 0
    c.state = CLOSED
    st.nconns -= 1
    st.stats.conns_closed += 1
    while st.high_slot and not _conns(st)[st.high_slot - 1].in_use:
        st.high_slot -= 1


cdef void _reset_conn(CoreState *st, Replica *rx, Conn *c, uint8_t reason) noexcept nogil:
    """The connection is gone because of a RST, a timeout or an abort."""
    cdef uint32_t h = _handle(c, _slot_of(st, c))
    if c.state == SYN_SENT or (c.state == SYN_RECEIVED and not c.passive):
        _notify(st, rx, <uint32_t>reason, N_CONNECT_FAILED, c.tag)
    elif not (c.passive and not c.accepted and c.state == SYN_RECEIVED):
        # a passive connection still in SYN-RECEIVED was never announced
        _notify(st, rx, h, N_RESET, reason)
    _release(st, rx, c, not (c.passive and c.state == SYN_RECEIVED))


cdef void _enter_time_wait(CoreState *st, Conn *c) noexcept nogil:
    c.state = TIME_WAIT
    c.rto_at = 0
    c.persist_at = 0
    c.timewait_at = st.now_ns + 2 * st.cfg.msl_ns
    _arm(st, c.timewait_at)


# ---------------------------------------------------------------------------
# Output: building segments
# ---------------------------------------------------------------------------

cdef inline uint16_t _local_mss(CoreState *st, bint v6) noexcept nogil:
    """The device's MSS for the family: MTU - 40 over IPv4, MTU - 60 over
    IPv6 (its header is 20 bytes longer; RFC 8200 §8.3)."""
    return st.cfg.mss - 20 if v6 else st.cfg.mss


cdef inline uint16_t _adv_mss(CoreState *st, Conn *c) noexcept nogil:
    """The MSS we announce: the device's, or less if the application
    clamped it (TCP_MAXSEG before the SYN)."""
    cdef uint16_t mss = _local_mss(st, c.v6)
    if c.user_mss and c.user_mss < mss:
        return c.user_mss
    return mss


cdef inline uint8_t _wscale_for(uint32_t rcvbuf) noexcept nogil:
    """RFC 7323 §2.3: the smallest shift that lets the 16-bit window field
    cover the receive buffer (at most 14)."""
    cdef uint8_t shift = 0
    while (<uint64_t>65535 << shift) < rcvbuf and shift < 14:
        shift += 1
    return shift


cdef inline uint32_t _smss(Conn *c) noexcept nogil:
    """Payload bytes per full-sized segment we send.  RFC 6691 §2 / RFC 9293
    §3.7.1: the MSS option counts data only, so the sender MUST reduce the
    data by the TCP options it includes — 12 bytes of timestamp option on
    every segment (Linux's mss_cache does the same).  Sending snd_mss bytes
    plus options would exceed the peer's MTU."""
    return c.snd_mss - 12 if c.ts_ok else c.snd_mss


cdef uint16_t _window_field(CoreState *st, Conn *c, bint syn) noexcept nogil:
    """The window to advertise, with receiver-side SWS avoidance.

    RFC 1122 §4.2.3.3 / RFC 9293 §3.8.6.2.2: the right edge moves forward
    only by at least min(buffer / 2, MSS); it never moves back (RFC 9293
    §3.8.6: shrinking the window is strongly discouraged).  Every replica
    computes this identically from the consumed offset delivered in the log.

    With window scaling the field is the window >> scale (RFC 7323 §2.3).
    Rounding it down would offer an edge short of RCV.ADV after every
    segment -- the edge would move back.  It is rounded up instead, and
    RCV.ADV becomes exactly the edge the peer sees; to leave room for that,
    an edge offered from free buffer space is a whole number of units at
    least one unit short of the buffer's end.  Rounded-up edges (each less
    than a unit further) creep forward while the application
    does not read; the one case left -- an edge rounded up past the end of
    the buffer, which must never be accepted into -- falls back to rounding
    down, moving the edge back by less than one unit right before the
    window closes.
    """
    cdef uint32_t shift = 0 if syn else c.rcv_wscale
    cdef uint32_t unit = <uint32_t>1 << shift
    cdef int64_t free = <int64_t>c.rcv_buf - <int64_t>(c.rcv_nxt_off - c.consumed_off)
    cdef int64_t space
    cdef uint64_t maxw
    cdef uint32_t edge, thresh, wnd
    if free < 0:
        free = 0
    space = free - (unit - 1)
    if space < 0:
        space = 0
    maxw = (<uint64_t>65535) << shift
    if <uint64_t>space > maxw:
        space = <int64_t>maxw
    edge = c.rcv_nxt + <uint32_t>space
    thresh = c.rcv_buf // 2
    if thresh > c.rcv_mss:
        thresh = c.rcv_mss
    if seq_gt(edge, c.rcv_adv):
        if <uint32_t>(edge - c.rcv_adv) >= thresh or seq_le(c.rcv_adv, c.rcv_nxt) and space >= thresh \
                or <uint64_t>space == maxw or <uint64_t>free >= c.rcv_buf:
            # an edge offered from free space is a whole number of units,
            # so the field below needs no rounding now
            edge = c.rcv_nxt + ((<uint32_t>space >> shift) << shift)
            if seq_gt(edge, c.rcv_adv):
                c.rcv_adv = edge
    if seq_le(c.rcv_adv, c.rcv_nxt):
        return 0
    wnd = c.rcv_adv - c.rcv_nxt
    if syn:
        return <uint16_t>(wnd if wnd < 65535 else 65535)
    wnd = (wnd + unit - 1) >> shift
    if wnd > 65535:
        wnd = 65535
    if (<uint64_t>wnd << shift) <= <uint64_t>free:
        c.rcv_adv = c.rcv_nxt + (wnd << shift)
    else:
        wnd = <uint32_t>(free >> shift)
    return <uint16_t>wnd


cdef uint32_t _sack_blocks(Conn *c, TcpOptionsOut *o, uint32_t max_blocks, bint dsack) noexcept nogil:
    """RFC 2018 §4: the first block holds the most recently received data,
    the rest follow in order of recency.  RFC 2883 §4: a D-SACK block
    reporting a duplicate segment goes first of all."""
    cdef uint32_t used[MAX_RANGES]
    cdef uint32_t i, j, best, n = 0, first = 0
    cdef uint32_t best_stamp
    cdef RangeSet *r = &c.ooo
    if not c.sack_ok or max_blocks == 0:
        return 0
    if dsack:
        o.sack_left[0] = c.dsack_left
        o.sack_right[0] = c.dsack_right
        n = 1
        first = 1
    for i in range(r.n):
        used[i] = 0
    while n < max_blocks and n - first < r.n:
        best = MAX_RANGES
        best_stamp = 0
        for j in range(r.n):
            if not used[j] and (best == MAX_RANGES or r.stamp[j] > best_stamp):
                best = j
                best_stamp = r.stamp[j]
        used[best] = 1
        o.sack_left[n] = c.rcv_nxt + <uint32_t>(r.start[best] - c.rcv_nxt_off)
        o.sack_right[n] = c.rcv_nxt + <uint32_t>(r.end[best] - c.rcv_nxt_off)
        n += 1
    o.nsack = <uint8_t>n
    return n


cdef void _note_duplicate(CoreState *st, Conn *c, uint32_t left, uint32_t right, bint island) noexcept nogil:
    """RFC 2883 §4: the next ACK reports [left, right), data received twice,
    in a D-SACK block -- so the sender can tell a spurious retransmission
    (and a loss probe that repaired nothing) from a loss.  island: the
    range is an out-of-order island we hold (checked by the caller); else
    it lies below RCV.NXT."""
    cdef uint32_t top = c.irs + 1 + <uint32_t>c.rcv_nxt_off       # end of the data received
    cdef uint32_t back = <uint32_t>(c.rcv_nxt_off if c.rcv_nxt_off < 0x7fffffff else 0x7fffffff)
    if not c.sack_ok:
        return
    if island:
        c.dsack = 1
        c.dsack_left = left
        c.dsack_right = right
        return
    # only data we really hold: not the SYN's or the FIN's sequence number,
    # nothing from before the data began (or 2^31 back, where sequence
    # comparisons end)
    if seq_lt(left, top - back):
        left = top - back
    if seq_gt(right, top):
        right = top
    if not seq_lt(left, right):
        return
    c.dsack = 1
    c.dsack_left = left
    c.dsack_right = right


cdef inline bint _owns_next(Replica *rx, Conn *c) noexcept nogil:
    """Round-robin ownership of pure ACKs over replicas; every replica
    advances tx_count identically."""
    cdef bint mine = rx.replicas <= 1 or (c.tx_count % rx.replicas) == rx.replica
    c.tx_count += 1
    return mine


cdef void _emit_tcp(CoreState *st, Replica *rx, Conn *c, uint32_t seq, uint16_t flags,
                    uint64_t stream_off, uint32_t length, bint control, bint rexmit) noexcept nogil:
    """Build and emit one TCP segment of connection c (or its GSO super-
    segment when length > snd_mss).  State effects of sending an ACK are
    applied in every replica; the header is built only by the owner."""
    cdef TcpOptionsOut o
    cdef bint syn = (flags & TH_SYN) != 0
    cdef uint16_t wnd = _window_field(st, c, syn)
    cdef bint mine
    cdef Action *a
    cdef uint32_t hl, l4len
    cdef uint32_t ipl = IP6_HDR_LEN if c.v6 else IP_HDR_LEN
    cdef uint64_t sum
    cdef uint16_t csum
    cdef uint32_t slot = _slot_of(st, c)
    cdef uint32_t nsack, room, owner = 0, index = 0
    cdef uint64_t stripe
    cdef bint ordered = False, sequenced = False
    cdef bint dsack = c.dsack and (flags & TH_ACK) and not syn
    if dsack:
        st.stats.dsacks_sent += 1
    if rexmit and c.rtt_timing and seq_le(seq, c.rtt_seq) and \
            seq_lt(c.rtt_seq, seq + length + (1 if flags & (TH_SYN | TH_FIN) else 0)):
        # Karn (RFC 6298 §3): the timed segment is sent again, so its ACK
        # can no longer tell which transmission it answers
        c.rtt_timing = 0
    if flags & TH_ACK:
        c.dsack = 0
        c.last_ack_sent = c.rcv_nxt
        c.delack_at = 0
        c.delack_armed = 0
        c.segs_unacked = 0
        c.ack_now = 0
        if length == 0 and not (flags & (TH_SYN | TH_FIN | TH_RST)):
            st.stats.acks_out += 1
    st.stats.segs_out += 1
    c.segs_out += 1
    if length:
        st.stats.data_bytes_out += length
        c.bytes_out += length
    if rexmit:
        st.stats.retransmits += 1
        c.retransmits += 1
    # The IP identification is replicated state: every replica advances it,
    # not only the one that builds the header (else digests diverge).
    st.ip_ident += 1
    if control:
        mine = rx.replica == 0
    elif length or (flags & TH_FIN):
        # data: owned by stripe of its first byte, written in segment order
        # (the replicated state is the stripe, the same for any replica count)
        stripe = (stream_off if length else _seq_stream(c, seq)) // rx.send_stripe
        if rx.replicas > 1:
            owner = <uint32_t>(stripe % rx.replicas)
            ordered = owner != <uint32_t>(c.tx_data_stripe % rx.replicas)
        c.tx_data_stripe = stripe
        index = c.tx_data_index
        c.tx_data_index += 1
        sequenced = True
        mine = owner == rx.replica
    else:
        mine = _owns_next(rx, c)
    if not mine:
        return
    a = _action(st, rx)
    if a == NULL:
        return
    o.mss = 0
    o.wscale = -1
    o.sack_perm = 0
    o.has_ts = 0
    o.nsack = 0
    if syn:
        o.mss = _adv_mss(st, c)
        # RFC 7323 §2.2: the active open offers; the passive side answers
        # only an offer (then rcv_wscale/snd_wscale were set from it)
        if c.state == SYN_SENT or c.rcv_wscale or c.snd_wscale:
            o.wscale = <int8_t>c.rcv_wscale
        o.sack_perm = c.sack_ok
    if c.ts_ok:
        o.has_ts = 1
        o.tsval = _ts_clock(c, st.now_ns)
        o.tsecr = c.ts_recent
    if (flags & TH_ACK) and not syn:
        nsack = 3 if c.ts_ok else 4
        if length:
            # SACK blocks on a data segment must fit beside a full segment's
            # payload within the MSS (RFC 6691): 4 bytes + 8 per block.
            room = _smss(c) - (length if length < _smss(c) else _smss(c))
            nsack = (room - 4) // 8 if room >= 12 else 0
            if nsack > 4:
                nsack = 4
        if nsack:
            _sack_blocks(c, &o, nsack, dsack)
    hl = write_tcp_header(a.hdr + ipl, c.lport, c.rport, seq, c.rcv_nxt if (flags & TH_ACK) else 0,
                          flags, wnd, &o)
    if c.snd_up_valid and not syn and seq_gt(c.snd_up, seq):
        # RFC 9293 §3.8.5 / RFC 6093: every segment before SND.UP says where
        # the urgent data ends (SEG.SEQ + SEG.UP is the octet after it); a
        # pointer beyond 64 KiB reads 0xffff until the segments catch up
        a.hdr[ipl + TCP_FLAGS] |= TH_URG
        wr16(a.hdr + ipl + TCP_URGENT, <uint16_t>(c.snd_up - seq if c.snd_up - seq < 0xffff else 0xffff))
    l4len = hl + length
    if c.v6:
        write_ipv6_header(a.hdr, st.cfg.local_addr6, c.raddr6, IPPROTO_TCP, l4len, c.flow_label)
        sum = csum_pseudo_v6(a.hdr + IP6_SOURCE, a.hdr + IP6_DESTINATION, IPPROTO_TCP, l4len)
    else:
        write_ipv4_header(a.hdr, st.cfg.local_addr, c.raddr, IPPROTO_TCP, IP_HDR_LEN + l4len, st.ip_ident)
        sum = csum_pseudo_v4(a.hdr + 12, a.hdr + 16, IPPROTO_TCP, l4len)
    if length:
        # NEEDS_CSUM convention: the field holds the folded pseudo-header sum;
        # the runtime (or the device's checksum offload) adds header+payload.
        csum = csum_fold(sum)
    else:
        csum = csum_finish(csum_partial(a.hdr + ipl, hl, sum))
    memcpy(a.hdr + ipl + TCP_CHECKSUM, &csum, 2)
    a.kind = ACT_TRANSMIT
    a.code = (TX_PAYLOAD_STREAM if length else TX_PAYLOAD_NONE) | (TX_RETRANSMIT if rexmit else 0) \
        | (TX_SEQUENCED | (TX_ORDERED if ordered else 0) if sequenced else 0)
    a.pad = index
    a.handle = _handle(c, slot)
    a.hdr_len = <uint16_t>(ipl + hl)
    a.csum_start = <uint16_t>ipl
    a.length = length
    a.stream_off = stream_off
    a.frame_off = 0
    a.gso_size = <uint16_t>(_smss(c) if length > _smss(c) else 0)


cdef inline void _send_ack(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    _emit_tcp(st, rx, c, c.snd_nxt, TH_ACK, 0, 0, False, False)


cdef void _send_control_ack(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """An ACK sent in answer to an unacceptable segment (RFC 9293 §3.10.7.4)."""
    _emit_tcp(st, rx, c, c.snd_nxt, TH_ACK, 0, 0, True, False)


cdef void _send_syn(CoreState *st, Replica *rx, Conn *c, bint rexmit) noexcept nogil:
    cdef uint16_t flags = TH_SYN
    if c.state == SYN_RECEIVED:
        flags |= TH_ACK
    _emit_tcp(st, rx, c, c.iss, flags, 0, 0, True, rexmit)
    if seq_lt(c.snd_max, c.iss + 1):
        c.snd_max = c.iss + 1
    c.snd_nxt = c.iss + 1


cdef inline uint32_t _reply_ip_len(TcpSegment *seg) noexcept nogil:
    """Where the TCP header of a reply to seg starts: after our IP header."""
    return IP6_HDR_LEN if seg.v6 else IP_HDR_LEN


cdef void _finish_stateless(CoreState *st, Action *a, TcpSegment *seg, uint32_t tcp_hlen) noexcept nogil:
    """Complete a connectionless TCP reply (RST, SYN-cookie SYN-ACK) to seg
    whose TCP header is already in a.hdr (at _reply_ip_len): IP header,
    checksum, action fields."""
    cdef uint64_t sum
    cdef uint16_t csum
    cdef uint32_t ipl = _reply_ip_len(seg)
    if seg.v6:
        write_ipv6_header(a.hdr, st.cfg.local_addr6, seg.saddr6, IPPROTO_TCP, tcp_hlen,
                          _flow_label(st, seg.saddr, seg.saddr6, seg.sport, seg.dport))
        sum = csum_pseudo_v6(a.hdr + IP6_SOURCE, a.hdr + IP6_DESTINATION, IPPROTO_TCP, tcp_hlen)
    else:
        write_ipv4_header(a.hdr, st.cfg.local_addr, seg.saddr, IPPROTO_TCP, IP_HDR_LEN + tcp_hlen, st.ip_ident)
        sum = csum_pseudo_v4(a.hdr + 12, a.hdr + 16, IPPROTO_TCP, tcp_hlen)
    csum = csum_finish(csum_partial(a.hdr + ipl, tcp_hlen, sum))
    memcpy(a.hdr + ipl + TCP_CHECKSUM, &csum, 2)
    a.kind = ACT_TRANSMIT
    a.code = TX_PAYLOAD_NONE
    a.handle = NO_CONN
    a.hdr_len = <uint16_t>(ipl + tcp_hlen)
    a.csum_start = <uint16_t>ipl
    a.length = 0
    a.stream_off = 0
    a.gso_size = 0


cdef void _send_rst_reply(CoreState *st, Replica *rx, const uint8_t *f, TcpSegment *seg) noexcept nogil:
    """RST for a segment that matches no connection (RFC 9293 §3.10.7.1):
    if the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>, else
    <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.  Never answer a RST."""
    cdef Action *a
    cdef TcpOptionsOut o
    cdef uint32_t seglen, hl
    if seg.flags & TH_RST:
        return
    st.stats.rst_out += 1
    st.ip_ident += 1                 # replicated: advanced by every replica
    if rx.replica != 0:
        return
    a = _action(st, rx)
    if a == NULL:
        return
    o.mss = 0
    o.wscale = -1
    o.sack_perm = 0
    o.has_ts = 0
    o.nsack = 0
    seglen = seg.payload_len + (1 if seg.flags & TH_SYN else 0) + (1 if seg.flags & TH_FIN else 0)
    if seg.flags & TH_ACK:
        hl = write_tcp_header(a.hdr + _reply_ip_len(seg), seg.dport, seg.sport, seg.ack, 0, TH_RST, 0, &o)
    else:
        hl = write_tcp_header(a.hdr + _reply_ip_len(seg), seg.dport, seg.sport, 0, seg.seq + seglen,
                              TH_RST | TH_ACK, 0, &o)
    _finish_stateless(st, a, seg, hl)


cdef void _send_rst(CoreState *st, Replica *rx, Conn *c, uint32_t seq) noexcept nogil:
    st.stats.rst_out += 1
    _emit_tcp(st, rx, c, seq, TH_RST | TH_ACK, 0, 0, True, False)


cdef bint _oow_rate_limited(CoreState *st, Conn *c) noexcept nogil:
    """At most one ACK per oow_interval per connection in answer to invalid
    segments (Linux's __tcp_oow_rate_limited, tcp_invalid_ratelimit):
    two stacks that disagree about sequence numbers would otherwise ACK
    each other forever, and an attacker could make us send without limit."""
    if c.oow_acked and st.now_ns - c.last_oow_ack_ns < st.cfg.oow_interval_ns:
        return True
    c.oow_acked = 1
    c.last_oow_ack_ns = st.now_ns
    return False


cdef void _invalid_ack(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """The ACK RFC 9293 §3.10.7.4 and RFC 7323 §5.3 send to an unacceptable
    or PAWS-failed segment, rate-limited per connection -- except for data
    without SYN: a retransmission whose ACK was lost, not an ACK loop (as
    Linux's tcp_oow_rate_limited)."""
    if (seg.payload_len == 0 or (seg.flags & TH_SYN)) and _oow_rate_limited(st, c):
        st.stats.oow_acks_suppressed += 1
        return
    _send_control_ack(st, rx, c)


cdef void _challenge_ack(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """RFC 5961 §3.2, §4.2, §5.2 challenge ACKs, rate-limited (§7) first per
    connection, then by a global budget.  A fixed global budget is the
    side channel of CVE-2016-5696: an off-path attacker spends it and counts
    the challenge ACKs of a connection it cannot see.  So, as in Linux, each
    second's budget is drawn at random from [limit/2, 3*limit/2) -- here
    from a keyed hash of the second and the secret, which an observer cannot
    predict and every replica draws alike."""
    cdef uint64_t second = st.now_ns // SEC
    cdef uint32_t half
    if _oow_rate_limited(st, c):
        st.stats.challenge_acks_suppressed += 1
        return
    if second != st.challenge_second or not st.challenge_drawn:
        st.challenge_second = second
        st.challenge_drawn = 1
        st.challenge_left = 0
        if st.cfg.challenge_ack_limit:
            half = (st.cfg.challenge_ack_limit + 1) >> 1
            st.challenge_left = half + <uint32_t>(_keyed(st, 0, NULL, 0, 0, <uint32_t>second,
                                                         <uint32_t>(second >> 32) ^ 3) %
                                                  st.cfg.challenge_ack_limit)
    if st.challenge_left == 0:
        st.stats.challenge_acks_suppressed += 1
        return
    st.challenge_left -= 1
    st.stats.challenge_acks += 1
    _send_control_ack(st, rx, c)


# ---------------------------------------------------------------------------
# Output: the send loop (data, FIN, recovery retransmissions)
# ---------------------------------------------------------------------------

cdef inline uint32_t _stream_seq(Conn *c, uint64_t off) noexcept nogil:
    return c.iss + 1 + <uint32_t>off


cdef inline uint64_t _seq_stream(Conn *c, uint32_t seq) noexcept nogil:
    # Send-stream offset of a sequence number in [snd_una - 2^31, snd_una + 2^31).
    # snd_una's own offset is recovered from the 64-bit end of the stream.
    cdef uint64_t una_off = c.snd_end_off - <uint32_t>(_stream_seq(c, c.snd_end_off) - c.snd_una)
    return una_off + <uint64_t>(<int64_t>seq_diff(seq, c.snd_una))


cdef inline uint32_t _flight(Conn *c) noexcept nogil:
    return c.snd_max - c.snd_una


cdef inline bint _fin_sent(Conn *c) noexcept nogil:
    return c.fin_pending and seq_gt(c.snd_max, _stream_seq(c, c.snd_end_off))


cdef uint64_t _lost_boundary(Conn *c) noexcept nogil:
    """RFC 6675 IsLost() as a boundary: every unSACKed send-stream byte
    below the returned offset is lost.  IsLost(S) holds when DupThresh (3)
    discontiguous SACKed blocks lie above S, or more than (DupThresh - 1) *
    SMSS SACKed bytes do; both only grow as S goes down.  Bytes marked lost
    otherwise (lost_off: RACK's rule for a loss probe, the head after a
    partial ACK) count too."""
    cdef RangeSet *r = &c.sacked
    cdef uint64_t boundary = c.lost_off
    cdef uint64_t need = 2 * <uint64_t>_smss(c) + 1, above = 0, blen
    cdef int i
    if r.n >= 3 and r.start[r.n - 3] > boundary:
        boundary = r.start[r.n - 3]
    i = <int>r.n - 1
    while i >= 0:
        blen = r.end[i] - r.start[i]
        if above + blen >= need:
            # the bytes of this block above S, plus those above it, reach need
            if r.end[i] - (need - above) > boundary:
                boundary = r.end[i] - (need - above)
            break
        above += blen
        i -= 1
    return boundary


cdef uint32_t _pipe(Conn *c) noexcept nogil:
    """RFC 6675 §4 SetPipe(): over the unSACKed bytes outstanding, one for
    each not deemed lost, and one more for each retransmitted (at or below
    HighRxt) -- a lost byte that was sent again is in flight once more."""
    cdef uint64_t una = _seq_stream(c, c.snd_una)
    cdef uint64_t top = _seq_stream(c, c.snd_max)
    cdef uint64_t hrx, lost, pos, gap_end, a, b, pipe = 0
    if c.sacked.n == 0 and c.lost_off <= una:
        return <uint32_t>(top - una)
    hrx = _seq_stream(c, c.high_rxt)
    if hrx < una or not c.in_recovery:
        hrx = una
    lost = _lost_boundary(c)
    pos = una
    while pos < top:
        pos = ranges_next_gap(&c.sacked, pos, &gap_end)
        if pos >= top:
            break
        if gap_end > top:
            gap_end = top
        a = pos if pos > lost else lost          # not lost: [max(pos, lost), gap_end)
        if gap_end > a:
            pipe += gap_end - a
        b = gap_end if gap_end < hrx else hrx    # retransmitted: [pos, min(gap_end, hrx))
        if b > pos:
            pipe += b - pos
        pos = gap_end
    return <uint32_t>pipe


cdef bint _next_hole(Conn *c, bint lost_only, uint64_t *start, uint64_t *length) noexcept nogil:
    """RFC 6675 NextSeg() rules 1 and 3: the first unSACKed byte above
    HighRxt and below the highest SACKed byte -- that IsLost() when
    lost_only (rule 1) -- and the segment of up to SMSS from it."""
    cdef uint64_t una = _seq_stream(c, c.snd_una)
    cdef uint64_t hrx = _seq_stream(c, c.high_rxt)
    cdef uint64_t high_sack, pos, gap_end, n
    if hrx < una:
        hrx = una
    high_sack = c.sacked.end[c.sacked.n - 1] if c.sacked.n else una
    if lost_only and c.lost_off > high_sack:
        # bytes marked lost (the head after a partial ACK, RACK) need no
        # SACK above them (rule 1's test (1.b) is what IsLost() requires)
        high_sack = c.lost_off
    pos = ranges_next_gap(&c.sacked, hrx, &gap_end)
    if pos >= high_sack or pos >= c.snd_end_off:
        return False
    if lost_only and pos >= _lost_boundary(c):
        return False
    if gap_end > _seq_stream(c, c.snd_max):
        gap_end = _seq_stream(c, c.snd_max)
    n = gap_end - pos
    if n > _smss(c):
        n = _smss(c)
    if pos + n > c.snd_end_off:
        n = c.snd_end_off - pos
    start[0] = pos
    length[0] = n
    return True


cdef bint _retransmit_hole(CoreState *st, Replica *rx, Conn *c, bint lost_only) noexcept nogil:
    """Retransmit NextSeg()'s rule 1 (lost_only) or rule 3 segment and move
    HighRxt past it (RFC 6675 §5, step C.2).  False when there is none."""
    cdef uint64_t pos, length
    if not _next_hole(c, lost_only, &pos, &length):
        return False
    _emit_tcp(st, rx, c, _stream_seq(c, pos), TH_ACK | (TH_PSH if pos + length == c.snd_end_off else 0),
              pos, <uint32_t>length, False, True)
    c.high_rxt = _stream_seq(c, pos + length)
    return True


cdef bint _rescue_retransmit(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """RFC 6675 NextSeg() rule 4, the rescue retransmission: once per
    recovery, when rules 1-3 find nothing, resend one segment holding the
    highest unSACKed byte outstanding -- a loss at the tail of the window
    has no SACKs above it and would otherwise wait for the RTO.  RescueRxt
    becomes RecoveryPoint; HighRxt is left alone."""
    cdef uint64_t una = _seq_stream(c, c.snd_una)
    cdef uint64_t top = _seq_stream(c, c.snd_max)
    cdef uint64_t data_top = top if top <= c.snd_end_off else c.snd_end_off
    cdef uint64_t start, i
    if c.rescue_valid and not seq_gt(c.snd_una, c.rescue_end):
        return False
    # the highest unSACKed data byte: below the last SACKed range that reaches the top
    while data_top > una:
        i = 0
        while i < c.sacked.n and not (c.sacked.start[i] < data_top <= c.sacked.end[i]):
            i += 1
        if i == c.sacked.n:
            break
        data_top = c.sacked.start[i]
    if data_top <= una:
        return False
    if not seq_gt(_stream_seq(c, data_top), c.high_rxt):
        return False        # rule 1 already resent it in this recovery (a partial ACK's new head)
    start = data_top - _smss(c) if data_top - una > _smss(c) else una
    st.stats.rescue_retransmits += 1
    _emit_tcp(st, rx, c, _stream_seq(c, start), TH_ACK | (TH_PSH if data_top == c.snd_end_off else 0),
              start, <uint32_t>(data_top - start), False, True)
    c.rescue_end = c.recover
    c.rescue_valid = 1
    return True


cdef inline void _output(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    _output_segments(st, rx, c, False)


cdef void _output_segments(CoreState *st, Replica *rx, Conn *c, bint sws_override) noexcept nogil:
    """Send what the windows allow: retransmissions in recovery, new data,
    and the FIN.  Nagle (RFC 896 / RFC 9293 §3.7.4) and sender-side SWS
    avoidance (RFC 9293 §3.8.6.2.1) decide about small segments;
    sws_override: the override timer expired (RFC 1122 §4.2.3.4), send a
    window-limited small segment anyway."""
    cdef uint32_t budget = st.cfg.burst
    cdef bint sws_held = False
    cdef uint64_t nxt_off, avail, win_off, seg_len, limit
    cdef uint32_t wnd, cwnd, fin_seq
    cdef uint16_t flags
    cdef bint rexmit, sent_any = False, sent_new = False
    cdef bint can_fin
    if c.state != ESTABLISHED and c.state != CLOSE_WAIT and c.state != FIN_WAIT_1 \
            and c.state != CLOSING and c.state != LAST_ACK:
        return
    # SACK-based loss recovery (RFC 6675 §5 step C): while the pipe leaves
    # room, NextSeg() rule 1 first -- the lost holes -- then new data below.
    if c.in_recovery and c.sack_ok:
        while budget and _pipe(c) + _smss(c) <= c.cc.cwnd:
            if not _retransmit_hole(st, rx, c, True):
                break
            budget -= 1
            sent_any = True
    while budget:
        nxt_off = _seq_stream(c, c.snd_nxt)
        avail = c.snd_end_off - nxt_off if c.snd_end_off > nxt_off else 0
        wnd = c.snd_wnd
        cwnd = c.cc.cwnd
        if c.in_recovery and c.sack_ok:
            # RFC 6675: new data only while pipe leaves room
            limit = _pipe(c)
            if limit + _smss(c) > cwnd:
                break
            win_off = nxt_off + (cwnd - limit)
        else:
            win_off = _seq_stream(c, c.snd_una) + (cwnd if cwnd < wnd else wnd)
        if win_off > _seq_stream(c, c.snd_una) + wnd:
            win_off = _seq_stream(c, c.snd_una) + wnd
        rexmit = seq_lt(c.snd_nxt, c.snd_max)
        if avail:
            if win_off <= nxt_off:
                break
            seg_len = win_off - nxt_off
            if seg_len > avail:
                seg_len = avail
            limit = st.cfg.gso_max if st.cfg.gso_max > _smss(c) else _smss(c)
            if seg_len > limit:
                seg_len = limit
            if seg_len > _smss(c):
                # keep super-segments a whole number of MSS unless at the end
                if seg_len < avail:
                    seg_len -= seg_len % _smss(c)
            if seg_len < _smss(c) and seg_len < avail:
                # limited by the window: wait for it to open unless it is at
                # least half the largest window the peer offered (SWS avoidance)
                if seg_len == 0 or (seg_len < c.max_snd_wnd // 2 and not sws_override):
                    sws_held = seg_len != 0
                    break
                sws_override = False        # the override sends one segment
            if seg_len < _smss(c) and seg_len == avail and not rexmit:
                # Nagle (RFC 9293 §3.7.4) in Minshall's variant, as Linux:
                # a small segment waits only while an earlier *small* segment
                # is unacknowledged.  Classic Nagle would also hold the tail
                # of every bulk write behind its full-sized segments, costing
                # a delayed-ACK round trip per write for no saving.
                if c.nagle and seq_gt(c.snd_sml, c.snd_una) and seq_le(c.snd_sml, c.snd_max) \
                        and not c.fin_pending:
                    break
            flags = TH_ACK
            can_fin = False
            if nxt_off + seg_len == c.snd_end_off:
                flags |= TH_PSH
                if c.fin_pending and win_off >= nxt_off + seg_len:
                    can_fin = True
            if can_fin:
                flags |= TH_FIN
            _emit_tcp(st, rx, c, c.snd_nxt, flags, nxt_off, <uint32_t>seg_len, False, rexmit)
            if seg_len < _smss(c):
                c.snd_sml = c.snd_nxt + <uint32_t>seg_len
            if not c.rtt_timing and not rexmit:
                c.rtt_timing = 1
                c.rtt_seq = c.snd_nxt
                c.rtt_start_ns = st.now_ns
            c.snd_nxt += <uint32_t>seg_len + (1 if can_fin else 0)
            sent_any = True
            sent_new |= not rexmit
        elif c.fin_pending:
            fin_seq = _stream_seq(c, c.snd_end_off)
            if c.snd_nxt != fin_seq:
                break
            _emit_tcp(st, rx, c, c.snd_nxt, TH_ACK | TH_FIN, 0, 0, False, rexmit)
            c.snd_nxt += 1
            sent_any = True
            sent_new |= not rexmit
        else:
            break
        if seq_gt(c.snd_nxt, c.snd_max):
            c.snd_max = c.snd_nxt
        budget -= 1
    if c.in_recovery and c.sack_ok and budget:
        # NextSeg() rules 3 and 4 only when rule 2 has no new data to send
        # (none left, or the peer's window is full): the holes not yet
        # deemed lost, then the one rescue retransmission of the tail
        nxt_off = _seq_stream(c, c.snd_nxt)
        if (nxt_off >= c.snd_end_off and not (c.fin_pending and not _fin_sent(c))) or \
                _seq_stream(c, c.snd_una) + c.snd_wnd <= nxt_off:
            while budget and _pipe(c) + _smss(c) <= c.cc.cwnd:
                if not _retransmit_hole(st, rx, c, False) and not _rescue_retransmit(st, rx, c):
                    break
                budget -= 1
                sent_any = True
    if sent_new and not c.in_recovery:
        _tlp_arm(st, c)
    if c.snd_max != c.snd_una:
        if c.rto_at == 0:
            _rto_arm(st, c)
        c.persist_at = 0
    elif (c.snd_wnd == 0 or sws_held) and (c.snd_end_off > _seq_stream(c, c.snd_nxt) or
                                           (c.fin_pending and not _fin_sent(c))):
        # RFC 9293 §3.8.6.1: zero window with data waiting -> persist timer.
        # RFC 1122 §4.2.3.4: a window too small to use (SWS avoidance) with
        # nothing in flight gets no ACK to wake us either: the same timer is
        # the override that sends what fits (Linux's probe timer does both).
        if c.persist_at == 0:
            c.persist_at = st.now_ns + (c.rto_ns << c.persist_backoff)
            _arm(st, c.persist_at)


# ---------------------------------------------------------------------------
# Input helpers
# ---------------------------------------------------------------------------

cdef inline uint32_t _seg_len(TcpSegment *seg) noexcept nogil:
    return seg.payload_len + (1 if seg.flags & TH_SYN else 0) + (1 if seg.flags & TH_FIN else 0)


cdef void _apply_syn_options(CoreState *st, Conn *c, TcpSegment *seg) noexcept nogil:
    """Negotiate MSS, window scale, SACK and timestamps from a SYN."""
    cdef uint16_t mss = seg.mss if seg.mss else 536
    if mss > _adv_mss(st, c):
        mss = _adv_mss(st, c)
    if mss < 64:
        mss = 64                          # a zero or tiny MSS must not stall us
    c.snd_mss = mss
    c.rcv_mss = mss
    if seg.wscale >= 0:
        c.snd_wscale = <uint8_t>seg.wscale
        if c.state != SYN_SENT:
            # passive: answer the offer with our shift (the active side
            # keeps the one its SYN offered)
            c.rcv_wscale = _wscale_for(c.rcv_buf)
        if seg.wscale_clamped:
            st.stats.wscale_clamped += 1
    else:
        # RFC 7323 §2.2: both sides must send the option for scaling to apply
        c.snd_wscale = 0
        c.rcv_wscale = 0
    c.sack_ok = st.cfg.sack and seg.sack_perm
    c.ts_ok = st.cfg.timestamps and seg.has_ts
    if c.ts_ok:
        c.ts_recent = seg.tsval
        c.ts_recent_ns = st.now_ns
        # full-sized segments carry 12 bytes of timestamp option
        c.rcv_mss = mss - 12
    cc_init(&c.cc, st.cfg.cc_algo, _smss(c), 0x7fffffff)


cdef void _rtt_sample(CoreState *st, Conn *c, uint64_t rtt) noexcept nogil:
    """RFC 6298 §2 (alpha = 1/8, beta = 1/4, K = 4, G = 1 ms)."""
    cdef uint64_t err, rto
    if rtt == 0:
        rtt = 1
    if c.srtt_ns == 0:
        c.srtt_ns = rtt
        c.rttvar_ns = rtt // 2
    else:
        err = c.srtt_ns - rtt if c.srtt_ns > rtt else rtt - c.srtt_ns
        c.rttvar_ns = (3 * c.rttvar_ns + err) // 4
        c.srtt_ns = (7 * c.srtt_ns + rtt) // 8
    rto = c.srtt_ns + (4 * c.rttvar_ns if 4 * c.rttvar_ns > MS else MS)
    # RFC 6298 §2.4 asks for a floor of 1 s (SHOULD); like Linux (TCP_RTO_MIN)
    # the core's default is 200 ms.  The 1 s floor guards against spurious
    # timeouts with coarse clocks and delayed ACKs of up to 500 ms; here the
    # clock is the sequencer's nanosecond clock, RTT samples are exact, and
    # the delayed ACKs a path really has are inside SRTT + 4 RTTVAR after a
    # few samples.  On the LAN and data-centre paths this stack serves, a
    # 1 s floor would make every loss the timer repairs cost a second; the
    # price is an occasional spurious retransmission, which backoff bounds.
    if rto < st.cfg.rto_min_ns:
        rto = st.cfg.rto_min_ns
    if rto > st.cfg.rto_max_ns:
        rto = st.cfg.rto_max_ns
    c.rto_ns = rto


cdef inline void _rto_after_syn_timeout(CoreState *st, Conn *c) noexcept nogil:
    """RFC 6298 (5.7): if the SYN (or SYN-ACK) timed out, the RTO is
    re-initialized to 3 seconds when data transmission begins -- the first
    RTO of 1 s was too short for this path, and Karn's rule left no sample
    to learn from."""
    if c.retransmits and c.srtt_ns == 0 and st.cfg.rto_initial_ns < 3 * SEC:
        c.rto_ns = 3 * SEC if 3 * SEC <= st.cfg.rto_max_ns else st.cfg.rto_max_ns


cdef void _update_window(Conn *c, TcpSegment *seg) noexcept nogil:
    # RFC 9293 §3.10.7.4 "fifth": SND.WND update guarded by WL1/WL2
    if seq_lt(c.snd_wl1, seg.seq) or (c.snd_wl1 == seg.seq and seq_le(c.snd_wl2, seg.ack)):
        c.snd_wnd = (<uint32_t>seg.wnd) << c.snd_wscale
        c.snd_wl1 = seg.seq
        c.snd_wl2 = seg.ack
        if c.snd_wnd > c.max_snd_wnd:
            c.max_snd_wnd = c.snd_wnd
        if c.snd_wnd:
            c.persist_backoff = 0


cdef void _take_sack(Conn *c, TcpSegment *seg) noexcept nogil:
    """Record SACK blocks (RFC 2018) that lie inside [snd_una, snd_max]."""
    cdef uint32_t i
    cdef uint32_t l, r
    if not c.sack_ok:
        return
    for i in range(seg.nsack):
        l = seg.sack_left[i]
        r = seg.sack_right[i]
        if not seq_lt(l, r) or seq_lt(l, c.snd_una) or seq_gt(r, c.snd_max):
            continue       # D-SACK or bogus block: not scoreboard information
        ranges_add(&c.sacked, _seq_stream(c, l), _seq_stream(c, r))


cdef void _enter_recovery(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    # RFC 6582 §3.2 step 2 / RFC 6675 §5 step 4
    c.in_recovery = 1
    c.recover = c.snd_max
    c.recover_valid = 1
    cc_on_congestion(&c.cc, _flight(c), st.now_ns)
    st.stats.fast_retransmits += 1
    c.rtt_timing = 0                       # Karn
    c.high_rxt = c.snd_una
    c.tlp_at = 0
    if c.sack_ok and c.sacked.n:
        # RFC 6675 §5 (4.3): resend the first segment presumed dropped, at
        # HighACK + 1; HighRxt and RescueRxt become its end, so neither it
        # nor a premature rescue goes again
        if not _retransmit_hole(st, rx, c, False):
            _retransmit_first(st, rx, c)
        c.rescue_end = c.high_rxt
        c.rescue_valid = 1
    else:
        _retransmit_first(st, rx, c)
        c.cc.cwnd = c.cc.ssthresh + 3 * _smss(c)


cdef void _retransmit_first(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """Resend the segment at snd_una (fast retransmit, partial ACK, RTO)."""
    cdef uint64_t off = _seq_stream(c, c.snd_una)
    cdef uint64_t length
    if c.state == SYN_SENT or c.state == SYN_RECEIVED:
        _send_syn(st, rx, c, True)
        return
    if off < c.snd_end_off:
        length = c.snd_end_off - off
        if length > _smss(c):
            length = _smss(c)
        _emit_tcp(st, rx, c, c.snd_una, TH_ACK | (TH_PSH if off + length == c.snd_end_off else 0),
                  off, <uint32_t>length, False, True)
        if seq_gt(_stream_seq(c, off + length), c.high_rxt):
            c.high_rxt = _stream_seq(c, off + length)
    elif _fin_sent(c):
        _emit_tcp(st, rx, c, c.snd_una, TH_ACK | TH_FIN, 0, 0, False, True)


# ---------------------------------------------------------------------------
# Segment arrival: RFC 9293 §3.10.7.4, step by step
# ---------------------------------------------------------------------------

cdef bint _check_paws(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 7323 §5.3 R1: drop a segment whose TSval is older than ts_recent."""
    if not c.ts_ok or not seg.has_ts or (seg.flags & TH_RST):
        return True
    if seq_lt(seg.tsval, c.ts_recent) and st.now_ns - c.ts_recent_ns < PAWS_IDLE_NS:
        st.drops[DROP_PAWS] += 1
        _invalid_ack(st, rx, c, seg)
        return False
    return True


cdef bint _acceptable(Conn *c, TcpSegment *seg) noexcept nogil:
    """The four cases of RFC 9293 §3.10.7.4 "first"."""
    cdef uint32_t wnd = c.rcv_adv - c.rcv_nxt if seq_gt(c.rcv_adv, c.rcv_nxt) else 0
    cdef uint32_t slen = _seg_len(seg)
    if slen == 0:
        if wnd == 0:
            return seg.seq == c.rcv_nxt
        return seq_in(seg.seq, c.rcv_nxt, c.rcv_nxt + wnd)
    if wnd == 0:
        # RFC 9293 §3.10.7.4: with a zero window "special allowance should be
        # made to accept valid ACKs, URGs, and RSTs".  A segment exactly at
        # rcv_nxt is let through so its ACK and window are processed (the
        # peer may be sending data of its own while we have none to read);
        # _process_text trims all of its payload.  Linux does the same.
        return seg.seq == c.rcv_nxt
    return seq_in(seg.seq, c.rcv_nxt, c.rcv_nxt + wnd) or \
        seq_in(seg.seq + slen - 1, c.rcv_nxt, c.rcv_nxt + wnd)


cdef bint _check_time_wait(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 9293 §3.10.7.4: in TIME-WAIT "the only thing that can arrive in
    this state is a retransmission of the remote FIN.  Acknowledge it, and
    restart the 2 MSL timeout."  The peer has sent all it will, so only a
    bare ACK or a RST at RCV.NXT is taken further (as Linux's
    tcp_timewait_state_process); the FIN retransmission -- its FIN is the
    octet before RCV.NXT -- restarts the timer, and nothing else does: any
    FIN restarting it would let an off-path sender hold the connection in
    TIME-WAIT forever."""
    if seg.seq == c.rcv_nxt and _seg_len(seg) == 0:
        return True
    if seg.flags & TH_RST:
        st.drops[DROP_RST_OUT_OF_WINDOW] += 1
        return False
    st.drops[DROP_TIME_WAIT] += 1
    if (seg.flags & TH_FIN) and seg.seq + _seg_len(seg) == c.rcv_nxt:
        _enter_time_wait(st, c)
    _invalid_ack(st, rx, c, seg)
    return False


cdef bint _check_sequence(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    if c.state == TIME_WAIT:
        return _check_time_wait(st, rx, c, seg)
    if _acceptable(c, seg):
        return True
    if seg.flags & TH_RST:
        st.drops[DROP_RST_OUT_OF_WINDOW] += 1
        return False
    st.drops[DROP_OUT_OF_WINDOW] += 1
    if seq_lt(seg.seq, c.rcv_nxt) and seg.payload_len:
        c.dup_segs += 1
        if seq_le(seg.seq + seg.payload_len, c.rcv_nxt):
            _note_duplicate(st, c, seg.seq, seg.seq + seg.payload_len, False)
    _invalid_ack(st, rx, c, seg)
    return False


cdef bint _check_rst(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 5961 §3.2: only a RST exactly at rcv_nxt resets; any other
    in-window RST gets a challenge ACK."""
    if not (seg.flags & TH_RST):
        return True
    if seg.seq != c.rcv_nxt:
        st.drops[DROP_RST_CHALLENGED] += 1
        _challenge_ack(st, rx, c)
        return False
    if c.state == TIME_WAIT and st.cfg.rfc1337:
        # RFC 1337 §3 (TWA1): a RST must not assassinate TIME-WAIT
        st.drops[DROP_RST_TIME_WAIT] += 1
        return False
    if c.state == TIME_WAIT or c.state == CLOSING or c.state == LAST_ACK:
        _release(st, rx, c, True)
        return False
    _reset_conn(st, rx, c, R_REFUSED if c.state == SYN_RECEIVED and not c.passive else R_RESET_BY_PEER)
    return False


cdef bint _check_syn(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 5961 §4.2: a SYN in a synchronized state gets a challenge ACK."""
    if not (seg.flags & TH_SYN):
        return True
    st.drops[DROP_SYN_CHALLENGED] += 1
    _challenge_ack(st, rx, c)
    return False


cdef bint _process_ack(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg, bint update_ts) noexcept nogil:
    """RFC 9293 §3.10.7.4 "fifth", with RFC 5961 §5.2 ACK validation,
    RFC 6298 RTT/RTO, RFC 6582/6675 recovery.  update_ts: the segment's
    TSval becomes TS.Recent once the ACK is found acceptable (RFC 7323
    §4.3).  Returns False to stop processing the segment."""
    cdef uint32_t acked, h, i
    cdef uint64_t rtt
    cdef bint fin_acked
    cdef uint32_t old_wnd
    if not (seg.flags & TH_ACK):
        return False
    h = _handle(c, _slot_of(st, c))
    if c.state == SYN_RECEIVED:
        if seq_gt(seg.ack, c.snd_una) and seq_le(seg.ack, c.snd_max):
            c.state = ESTABLISHED
            c.snd_una = seg.ack
            c.snd_wnd = (<uint32_t>seg.wnd) << c.snd_wscale
            c.max_snd_wnd = c.snd_wnd
            c.snd_wl1 = seg.seq
            c.snd_wl2 = seg.ack
            c.rto_at = 0
            c.retries = 0
            c.backoff = 0
            if c.rtt_timing:
                _rtt_sample(st, c, st.now_ns - c.rtt_start_ns)
                c.rtt_timing = 0
            _rto_after_syn_timeout(st, c)
            _keepalive_start(st, c)
            if c.passive:
                _notify(st, rx, h, N_ACCEPTED, c.lport)
            else:
                _notify(st, rx, h, N_CONNECTED, c.tag)
        else:
            # RFC 9293 §3.10.7.4: "form a reset segment <SEQ=SEG.ACK><CTL=RST>"
            _send_rst_reply(st, rx, NULL, seg)
            return False
    # RFC 5961 §5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT]
    if seq_gt(seg.ack, c.snd_max):
        st.drops[DROP_ACK_UNSENT] += 1
        _challenge_ack(st, rx, c)
        return False
    if seq_lt(seg.ack, c.snd_una - c.max_snd_wnd) and c.max_snd_wnd:
        st.drops[DROP_ACK_TOO_OLD] += 1
        _challenge_ack(st, rx, c)
        return False
    if update_ts:
        c.ts_recent = seg.tsval
        c.ts_recent_ns = st.now_ns
    if c.tlp_active and c.tlp_retrans:
        for i in range(seg.nsack):
            # RFC 2883: a block below the cumulative ACK reports a duplicate;
            # one over the probe says the probe repaired nothing (RFC 8985 §7.4)
            if seq_le(seg.sack_right[i], seg.ack) and seq_lt(seg.sack_left[i], c.tlp_end) and \
                    seq_gt(seg.sack_right[i], c.tlp_start):
                c.tlp_dsack = 1
    _take_sack(c, seg)
    if seq_gt(seg.ack, c.snd_una):
        acked = seg.ack - c.snd_una
        # RTT: timestamps (RFC 7323 §4.1) or one timed segment (Karn, RFC 6298 §3)
        if c.ts_ok and seg.has_ts and seg.tsecr:
            rtt = <uint64_t>(<uint32_t>(_ts_clock(c, st.now_ns) - seg.tsecr)) * MS
            if rtt < 60 * SEC:
                _rtt_sample(st, c, rtt if rtt else MS // 2)
            c.rtt_timing = 0
        elif c.rtt_timing and seq_gt(seg.ack, c.rtt_seq):
            _rtt_sample(st, c, st.now_ns - c.rtt_start_ns)
            c.rtt_timing = 0
        fin_acked = _fin_sent(c) and seg.ack == c.snd_max
        c.snd_una = seg.ack
        if seq_lt(c.snd_nxt, c.snd_una):
            c.snd_nxt = c.snd_una
        if c.snd_up_valid and seq_ge(c.snd_una, c.snd_up):
            c.snd_up_valid = 0                  # the urgent data is delivered
        if c.recover_valid and seq_gt(c.snd_una, c.recover):
            # the cumulative ACK covers `recover`: the guard has done its job.
            # Dropping it now, while the two are close, keeps it from being
            # compared 2^31 later, when the sequence comparison would flip.
            c.recover_valid = 0
        ranges_trim_below(&c.sacked, _seq_stream(c, c.snd_una))
        c.dupacks = 0
        c.backoff = 0
        c.retries = 0
        if c.in_recovery:
            if seq_ge(seg.ack, c.recover):
                # full ACK: leave recovery (RFC 6582 §3.2 step 3, RFC 6675 §5)
                c.in_recovery = 0
                c.cc.cwnd = c.cc.ssthresh
                c.sacked.n = 0
                c.lost_off = 0
                c.rescue_valid = 0
            elif c.sack_ok:
                # partial ACK: the segment now at the head was lost too --
                # it was sent before what this ACK covers (RFC 6582 §3.2
                # step 5's rule; Linux marks the head lost the same way);
                # NextSeg() resends it
                if _seq_stream(c, c.snd_una) + 1 > c.lost_off:
                    c.lost_off = _seq_stream(c, c.snd_una) + 1
            else:
                # partial ACK (RFC 6582 §3.2 step 5): retransmit, deflate
                _retransmit_first(st, rx, c)
                if c.cc.cwnd > acked:
                    c.cc.cwnd -= acked
                else:
                    c.cc.cwnd = _smss(c)
                c.cc.cwnd += _smss(c)
        else:
            cc_on_ack(&c.cc, acked, st.now_ns, c.srtt_ns)
        if c.tlp_active and seq_ge(c.snd_una, c.tlp_end):
            # the loss probe is acknowledged (RFC 8985 §7.4): if it was a
            # retransmission no D-SACK called a duplicate, it repaired a
            # loss -- respond as to a fast recovery
            c.tlp_active = 0
            if c.tlp_retrans and not c.tlp_dsack and not c.in_recovery:
                cc_on_congestion(&c.cc, acked + _flight(c), st.now_ns)
        if c.snd_una == c.snd_max:
            c.rto_at = 0
            c.tlp_at = 0
        else:
            _rto_arm(st, c)
            _tlp_arm(st, c)
        _notify(st, rx, h, N_WRITABLE, _seq_stream(c, c.snd_una) if not fin_acked else c.snd_end_off)
        if fin_acked:
            if c.state == FIN_WAIT_1:
                c.state = FIN_WAIT_2
                _fin_wait2_start(st, c)
            elif c.state == CLOSING:
                _enter_time_wait(st, c)
            elif c.state == LAST_ACK:
                _release(st, rx, c, True)
                return False
        _update_window(c, seg)
    else:
        old_wnd = c.snd_wnd
        _update_window(c, seg)
        # RFC 5681 §2 duplicate ACK (with RFC 6675's "SACK info" leniency)
        if seg.ack == c.snd_una and seg.payload_len == 0 and \
                not (seg.flags & (TH_SYN | TH_FIN)) and c.snd_max != c.snd_una and \
                (c.snd_wnd == old_wnd or seg.nsack):
            c.dupacks += 1
            # RFC 6582 §3.2 step 2: no new recovery until the ACK covers `recover`
            if not c.in_recovery and not c.recover_valid and c.dupacks == 3:
                _enter_recovery(st, rx, c)
            elif c.in_recovery and not c.sack_ok:
                c.cc.cwnd += _smss(c)    # RFC 6582 step 4: inflate
    if c.tlp_active and not c.in_recovery and ranges_contains(&c.sacked, _seq_stream(c, c.tlp_start),
                                                              _seq_stream(c, c.tlp_start) + 1):
        # RACK (RFC 8985 §6.2): the probe was delivered, and everything
        # still unSACKed below it was sent at least a PTO (2 SRTT) earlier --
        # longer than any reordering window: lost
        if _seq_stream(c, c.tlp_start) > c.lost_off:
            c.lost_off = _seq_stream(c, c.tlp_start)
    # RFC 6675 §5 (4): recovery also starts when IsLost(HighACK + 1), however
    # few duplicate ACKs arrived (DupThresh discontiguous SACKed blocks, or
    # more than 2 SMSS SACKed, above the head)
    if c.sack_ok and not c.in_recovery and not c.recover_valid and c.snd_max != c.snd_una and \
            (c.sacked.n or c.lost_off) and _lost_boundary(c) > _seq_stream(c, c.snd_una):
        _enter_recovery(st, rx, c)
    return True


cdef void _check_urg(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 9293 §3.10.7.4 "sixth, check the URG bit": RCV.UP <- max(RCV.UP,
    SEG.SEQ + SEG.UP), the urgent pointer pointing at the octet after the
    urgent data (RFC 6093), and the application is told when it moves
    (MUST-32) -- as a stream offset, so it knows how much urgent data
    remains (MUST-33).  The data itself stays in line: RFC 6093 §6 finds
    the out-of-band byte of the BSD API broken and asks for in-line use."""
    cdef int64_t d
    cdef uint64_t off
    if not (seg.flags & TH_URG) or seg.urg == 0:
        return
    if c.state != ESTABLISHED and c.state != FIN_WAIT_1 and c.state != FIN_WAIT_2:
        return
    d = <int64_t>seq_diff(seg.seq + seg.urg, c.rcv_nxt)
    if d < 0 and <uint64_t>(-d) > c.rcv_nxt_off:
        return
    off = <uint64_t>(<int64_t>c.rcv_nxt_off + d)
    if (c.rcv_up_valid and off <= c.rcv_up) or off <= c.consumed_off:
        return
    c.rcv_up = off
    c.rcv_up_valid = 1
    _notify(st, rx, _handle(c, _slot_of(st, c)), N_URGENT, off)


cdef void _deliver_in_order(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """After rcv_nxt moved: merge out-of-order ranges, handle a queued FIN,
    tell the application."""
    cdef uint64_t edge = ranges_advance(&c.ooo, c.rcv_nxt_off)
    if edge != c.rcv_nxt_off:
        c.rcv_nxt += <uint32_t>(edge - c.rcv_nxt_off)
        c.rcv_nxt_off = edge
    _notify(st, rx, _handle(c, _slot_of(st, c)), N_READABLE, c.rcv_nxt_off)


cdef void _process_text(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 9293 §3.10.7.4 "seventh": place the payload.  Bytes before
    rcv_nxt and beyond the advertised window are trimmed; the rest is
    copied straight to its stream offset (ACT_COPY), in order or not."""
    cdef uint32_t start = seg.seq, end, trim
    cdef uint32_t plen = seg.payload_len
    cdef uint32_t poff = seg.payload_off
    cdef uint32_t right
    cdef int64_t space
    cdef uint64_t off
    cdef bint had_holes = c.ooo.n != 0
    cdef uint32_t h
    if plen == 0:
        return
    if c.state != ESTABLISHED and c.state != FIN_WAIT_1 and c.state != FIN_WAIT_2:
        # RFC 9293 §3.10.7.4 "seventh": the peer already sent its FIN, so
        # ignore the text — but count it (found by fuzzing: it was silent)
        st.drops[DROP_DATA_AFTER_FIN] += 1
        return
    if c.app_closed:
        # RFC 9293 §3.10.4 / RFC 2525: data for a closed receiver -> reset
        st.drops[DROP_AFTER_CLOSE] += 1
        _send_rst(st, rx, c, c.snd_nxt)
        _reset_conn(st, rx, c, R_ABORTED)
        return
    h = _handle(c, _slot_of(st, c))
    if seq_lt(start, c.rcv_nxt):
        trim = c.rcv_nxt - start
        _note_duplicate(st, c, start, c.rcv_nxt, False)
        start = c.rcv_nxt
        poff += trim
        plen -= trim
        c.dup_segs += 1
    right = c.rcv_adv if seq_gt(c.rcv_adv, c.rcv_nxt) else c.rcv_nxt
    space = <int64_t>c.rcv_buf - <int64_t>(c.rcv_nxt_off - c.consumed_off)
    if space < 0:
        space = 0
    if seq_gt(right, c.rcv_nxt + <uint32_t>space):
        # RCV.ADV stays within the buffer, unless the application shrank
        # it (SO_RCVBUF): never accept more than the buffer holds
        right = c.rcv_nxt + <uint32_t>space
    if c.fin_off != NO_OFF and c.fin_off >= c.rcv_nxt_off and \
            seq_lt(c.rcv_nxt + <uint32_t>(c.fin_off - c.rcv_nxt_off), right):
        # RFC 9293 §3.10.7.4: the FIN's sequence number ends the stream;
        # bytes past a FIN already seen are not data (found by fuzzing)
        right = c.rcv_nxt + <uint32_t>(c.fin_off - c.rcv_nxt_off)
    end = start + plen
    if seq_gt(end, right):
        plen = plen - (end - right) if seq_lt(start, right) else 0
        end = right
        seg.flags &= ~TH_FIN         # the FIN lay beyond what we keep
    if plen == 0:
        c.ack_now = 1
        return
    c.segs_in += 1
    c.bytes_in += plen
    off = c.rcv_nxt_off + <uint32_t>(start - c.rcv_nxt)
    if (seg.flags & TH_FIN) and c.fin_off == NO_OFF:
        # Record the FIN's stream offset now, while rcv_nxt still relates to
        # this segment, and forget islands past it *before* placing the data:
        # else a hole fill merges them and carries rcv_nxt over the FIN
        # (found by fuzzing: the FIN was then never taken).
        c.fin_off = off + plen
        ranges_trim_above(&c.ooo, c.fin_off)
    if start == c.rcv_nxt:
        _copy(st, rx, h, poff, off, plen)
        c.rcv_nxt = end
        c.rcv_nxt_off += plen
        _deliver_in_order(st, rx, c)
        if had_holes:
            c.ack_now = 1            # RFC 5681 §4.2: ACK hole-filling data at once
    else:
        if ranges_contains(&c.ooo, off, off + plen):
            _note_duplicate(st, c, start, end, True)      # an island we already hold
        if ranges_add(&c.ooo, off, off + plen) < 0:
            st.drops[DROP_REASSEMBLY_FULL] += 1
            c.ack_now = 1
            return
        _copy(st, rx, h, poff, off, plen)
        c.ack_now = 1                # RFC 5681 §4.2: out-of-order -> immediate (dup) ACK
    # ACK policy (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2): at least every
    # second full-sized segment; otherwise a delayed ACK.
    # Counting bytes makes a GSO super-segment of k MSS count as k segments.
    c.segs_unacked += plen
    if c.segs_unacked >= 2 * <uint32_t>c.rcv_mss:
        c.ack_now = 1
    elif not c.ack_now and not c.delack_armed:
        c.delack_armed = 1
        c.delack_at = st.now_ns + st.cfg.delack_ns
        _arm(st, c.delack_at)


cdef void _process_fin(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 9293 §3.10.7.4 "eighth".  A FIN that arrives ahead of a hole is
    remembered by its stream offset and takes effect when the hole fills."""
    cdef uint64_t fin_off
    if (seg.flags & TH_FIN) and seg.payload_len == 0 and c.fin_off != NO_OFF and \
            c.rcv_nxt_off == c.fin_off and \
            (c.state == CLOSE_WAIT or c.state == CLOSING or c.state == LAST_ACK):
        # a second, in-window FIN after the one taken: not part of the stream
        # (data with it was counted by _process_text; found by fuzzing)
        st.drops[DROP_DATA_AFTER_FIN] += 1
        return
    if (seg.flags & TH_FIN) and c.fin_off == NO_OFF and seq_ge(seg.seq + seg.payload_len, c.rcv_nxt):
        fin_off = c.rcv_nxt_off + <uint32_t>(seg.seq + seg.payload_len - c.rcv_nxt)
        if c.state == ESTABLISHED or c.state == FIN_WAIT_1 or c.state == FIN_WAIT_2 or \
                c.state == SYN_RECEIVED:
            c.fin_off = fin_off
            # out-of-order bytes past the FIN are not part of the stream: a
            # hole fill must not carry rcv_nxt over the FIN (found by fuzzing)
            ranges_trim_above(&c.ooo, fin_off)
    if c.fin_off == NO_OFF or c.rcv_nxt_off != c.fin_off:
        if (seg.flags & TH_FIN) and c.fin_off != NO_OFF:
            # a FIN ahead of a hole is out of order: immediate duplicate ACK
            # (RFC 5681 §4.2), also for its retransmissions (found by fuzzing)
            c.ack_now = 1
        return
    if c.state != ESTABLISHED and c.state != FIN_WAIT_1 and c.state != FIN_WAIT_2 \
            and c.state != SYN_RECEIVED:
        return
    c.rcv_nxt += 1
    # nothing lies past the FIN: stale islands would make SACK blocks (sequence
    # numbers computed from rcv_nxt, which now counts the FIN) off by one
    ranges_clear(&c.ooo)
    c.ack_now = 1
    c.delack_armed = 0
    c.delack_at = 0
    _notify(st, rx, _handle(c, _slot_of(st, c)), N_PEER_CLOSED, c.fin_off)
    if c.state == ESTABLISHED or c.state == SYN_RECEIVED:
        c.state = CLOSE_WAIT
    elif c.state == FIN_WAIT_1:
        if c.snd_una == c.snd_max and _fin_sent(c):
            _enter_time_wait(st, c)
        else:
            c.state = CLOSING
    elif c.state == FIN_WAIT_2:
        _enter_time_wait(st, c)


cdef void _segment_synchronized(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """States SYN-RECEIVED through TIME-WAIT."""
    cdef uint32_t slot = _slot_of(st, c)
    cdef uint16_t gen = c.gen
    cdef bint left_edge
    # SYN-RECEIVED: a retransmitted SYN gets the SYN-ACK again.
    if c.state == SYN_RECEIVED and (seg.flags & TH_SYN) and not (seg.flags & TH_ACK) \
            and seg.seq == c.irs:
        _send_syn(st, rx, c, True)
        return
    if c.state == SYN_RECEIVED and not c.passive and (seg.flags & TH_SYN) and (seg.flags & TH_ACK) \
            and seg.seq == c.irs and seg.ack == c.snd_nxt:
        # Simultaneous open (RFC 9293 §3.5, figure 8): the peer's SYN-ACK
        # repeats the SYN we took in SYN-SENT and acknowledges ours.  Its SYN
        # lies before RCV.NXT, so the acceptability test would drop it (and
        # RFC 5961 would challenge the SYN): take the SYN off and process the
        # rest as the ACK that establishes the connection, as Linux does.
        seg.seq += 1
        seg.flags &= ~TH_SYN
    if not _check_paws(st, rx, c, seg):
        return
    if not _check_sequence(st, rx, c, seg):
        return
    # an acceptable segment: the peer is alive (RFC 1122 §4.2.3.6)
    c.last_rcv_ns = st.now_ns
    c.keep_probes = 0
    if not _check_rst(st, rx, c, seg):
        return
    if not _check_syn(st, rx, c, seg):
        return
    # RFC 7323 §4.3 (3): remember TSval of the segment at the left edge --
    # decided against Last.ACK.sent as the segment arrived, applied only
    # once its ACK is accepted (§5.3 R3; Linux's tcp_ack does the same): a
    # segment with a far-ahead TSval and an unacceptable ACK must not poison
    # TS.Recent, or PAWS drops every real segment after it.  _process_ack
    # takes it between validating the ACK and acting on it, so what the ACK
    # makes us send echoes this segment.
    left_edge = c.ts_ok and seg.has_ts and seq_le(seg.seq, c.last_ack_sent) and \
        seq_lt(c.last_ack_sent, seg.seq + _seg_len(seg) + (1 if _seg_len(seg) == 0 else 0))
    if not _process_ack(st, rx, c, seg, left_edge):
        return
    if not c.in_use or c.gen != gen:
        return
    _check_urg(st, rx, c, seg)
    _process_text(st, rx, c, seg)
    if not c.in_use or c.gen != gen:
        return
    _process_fin(st, rx, c, seg)
    _output(st, rx, c)
    if c.ack_now:
        _send_ack(st, rx, c)


cdef void _segment_syn_sent(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg) noexcept nogil:
    """RFC 9293 §3.10.7.3."""
    cdef uint32_t h = _handle(c, _slot_of(st, c))
    if seg.flags & TH_ACK:
        if seq_le(seg.ack, c.iss) or seq_gt(seg.ack, c.snd_max):
            st.drops[DROP_SYN_SENT_BAD] += 1
            if not (seg.flags & TH_RST):
                _send_rst_reply(st, rx, NULL, seg)
            return
    if seg.flags & TH_RST:
        if seg.flags & TH_ACK:
            _reset_conn(st, rx, c, R_REFUSED)
        else:
            st.drops[DROP_SYN_SENT_BAD] += 1
        return
    if not (seg.flags & TH_SYN):
        st.drops[DROP_SYN_SENT_BAD] += 1
        return
    c.irs = seg.seq
    c.rcv_nxt = seg.seq + 1
    c.last_ack_sent = c.rcv_nxt
    c.rcv_adv = c.rcv_nxt
    if seg.payload_len:
        # not queued either (nor is a FIN with it): our ACK covers only the
        # SYN and the peer sends the rest again
        st.drops[DROP_SYN_DATA] += 1
    _apply_syn_options(st, c, seg)
    if seg.flags & TH_ACK:
        c.snd_una = seg.ack
        c.rto_at = 0
        c.retries = 0
        if c.rtt_timing:
            _rtt_sample(st, c, st.now_ns - c.rtt_start_ns)
            c.rtt_timing = 0
        c.state = ESTABLISHED
        # RFC 7323 §2.2: the window of a SYN-ACK is never scaled
        c.snd_wnd = seg.wnd
        c.max_snd_wnd = c.snd_wnd
        c.snd_wl1 = seg.seq
        c.snd_wl2 = seg.ack
        c.last_rcv_ns = st.now_ns
        _rto_after_syn_timeout(st, c)
        _keepalive_start(st, c)
        _notify(st, rx, h, N_CONNECTED, c.tag)
        _send_ack(st, rx, c)
        _output(st, rx, c)
    else:
        # simultaneous open (RFC 9293 §3.5 figure 8)
        c.state = SYN_RECEIVED
        _send_syn(st, rx, c, False)


cdef uint32_t _cookie_make(CoreState *st, TcpSegment *seg, uint32_t mss_idx, uint64_t now) noexcept nogil:
    cdef uint32_t t = <uint32_t>(now // (64 * SEC))
    cdef uint32_t h = <uint32_t>_keyed(st, seg.saddr, seg.saddr6 if seg.v6 else NULL, seg.sport, seg.dport,
                                       seg.seq, 0x1000 + t)
    return (h & 0xffffff00U) | ((t & 0x1f) << 3) | mss_idx


cdef int _cookie_check(CoreState *st, TcpSegment *seg, uint64_t now) noexcept nogil:
    """Returns the MSS index encoded in a valid cookie (ACK - 1), or -1."""
    cdef uint32_t cookie = seg.ack - 1
    cdef uint32_t irs = seg.seq - 1
    cdef uint32_t t = <uint32_t>(now // (64 * SEC))
    cdef uint32_t tc = (cookie >> 3) & 0x1f
    cdef uint32_t cand, h
    cdef int age
    for age in range(2):
        cand = t - <uint32_t>age
        if (cand & 0x1f) != tc:
            continue
        h = <uint32_t>_keyed(st, seg.saddr, seg.saddr6 if seg.v6 else NULL, seg.sport, seg.dport, irs,
                             0x1000 + cand)
        if (h & 0xffffff00U) == (cookie & 0xffffff00U):
            return <int>(cookie & 7)
    return -1


cdef void _syn_cookie_reply(CoreState *st, Replica *rx, const uint8_t *f, TcpSegment *seg) noexcept nogil:
    """Answer a SYN statelessly (the backlog is full).  MSS goes in the ISN;
    with timestamps, window scale and SACK go in the low bits of TSval."""
    cdef uint32_t i, mss_idx = 0
    cdef uint16_t peer_mss = seg.mss if seg.mss else 536
    cdef uint16_t local_mss = _local_mss(st, seg.v6)
    cdef Action *a
    cdef TcpOptionsOut o
    cdef uint32_t hl, isn, tsval
    for i in range(8):
        if COOKIE_MSS[i] <= peer_mss and COOKIE_MSS[i] <= local_mss and COOKIE_MSS[i] >= COOKIE_MSS[mss_idx]:
            mss_idx = i
    isn = _cookie_make(st, seg, mss_idx, st.now_ns)
    st.stats.syn_cookies_sent += 1
    st.ip_ident += 1                 # replicated: advanced by every replica
    if rx.replica != 0:
        return
    a = _action(st, rx)
    if a == NULL:
        return
    o.mss = local_mss
    o.wscale = -1
    o.sack_perm = 0
    o.has_ts = 0
    o.nsack = 0
    if st.cfg.timestamps and seg.has_ts:
        o.has_ts = 1
        tsval = <uint32_t>(st.now_ns // MS) + _ts_offset(st, seg.saddr, seg.saddr6 if seg.v6 else NULL,
                                                         seg.sport, seg.dport)
        # low 5 bits: wscale (0..14, 15 = none) and SACK-permitted
        tsval = (tsval & ~(<uint32_t>0x1f)) | ((<uint32_t>(seg.wscale if seg.wscale >= 0 else 15) & 0xf) << 1) \
            | (1 if (seg.sack_perm and st.cfg.sack) else 0)
        o.tsval = tsval
        o.tsecr = seg.tsval
        if seg.wscale >= 0:
            o.wscale = <int8_t>st.cfg.rcv_wscale
        o.sack_perm = seg.sack_perm and st.cfg.sack
    hl = write_tcp_header(a.hdr + _reply_ip_len(seg), seg.dport, seg.sport, isn, seg.seq + 1,
                          TH_SYN | TH_ACK, <uint16_t>(st.cfg.rcvbuf if st.cfg.rcvbuf < 65535 else 65535), &o)
    _finish_stateless(st, a, seg, hl)


cdef uint32_t _accept_queue(CoreState *st, int li) noexcept nogil:
    """Connections of listener li that are established but not yet accepted."""
    cdef Conn *conns = _conns(st)
    cdef uint32_t i, n = 0
    for i in range(st.high_slot):
        if conns[i].in_use and conns[i].passive and not conns[i].accepted and \
                conns[i].listener == <uint32_t>li and conns[i].state != SYN_RECEIVED:
            n += 1
    return n


cdef bint _evict_half_open(CoreState *st, Replica *rx) noexcept nogil:
    """Free the slot of the stalest passive half-open connection (most SYN-ACK
    retransmissions, then lowest slot: deterministic for the replicas).

    A completed handshake (a valid cookie ACK) outranks a half-open entry:
    without this a flood of spoofed SYNs fills the table with half-open
    connections that live for max_retries SYN-ACK timeouts, and every cookie
    ACK finds no slot ("table_full") until they expire -- a blind attacker
    locks legitimate clients out for minutes (found by the SYN flood test).
    FreeBSD's syncache drops its oldest entry the same way."""
    cdef Conn *conns = _conns(st)
    cdef Conn *victim = NULL
    cdef uint32_t i
    for i in range(st.high_slot):
        if conns[i].in_use and conns[i].passive and not conns[i].accepted and \
                conns[i].state == SYN_RECEIVED and (victim == NULL or conns[i].retries > victim.retries):
            victim = &conns[i]
    if victim == NULL:
        return False
    st.stats.half_open_evicted += 1
    _release(st, rx, victim, False)       # never announced to the application
    return True


cdef void _inherit(CoreState *st, Conn *c, Listener *l) noexcept nogil:
    """A passive connection starts with its listener's socket options."""
    if l.nodelay:
        c.nagle = 0
    if l.user_mss:
        c.user_mss = l.user_mss
    if l.rcvbuf:
        c.rcv_buf = l.rcvbuf
    if l.sndbuf:
        c.snd_buf = l.sndbuf
    c.keepalive = l.keepalive
    if l.keep_idle_ns:
        c.keep_idle_ns = l.keep_idle_ns
    if l.keep_intvl_ns:
        c.keep_intvl_ns = l.keep_intvl_ns
    if l.keep_cnt:
        c.keep_cnt = l.keep_cnt


cdef int _find_listener(CoreState *st, uint16_t port) noexcept nogil:
    cdef uint32_t i
    for i in range(MAX_LISTENERS):
        if st.listeners[i].active and st.listeners[i].port == port:
            return <int>i
    return -1


cdef void _segment_listen(CoreState *st, Replica *rx, const uint8_t *f, TcpSegment *seg, int li) noexcept nogil:
    """RFC 9293 §3.10.7.2, plus SYN cookies when the backlog is full."""
    cdef Listener *l = &st.listeners[li]
    cdef Conn *c
    cdef int mss_idx
    cdef uint32_t tsbits
    if seg.flags & TH_RST:
        st.drops[DROP_LISTEN_BAD] += 1
        return
    if seg.flags & TH_ACK:
        if not (seg.flags & TH_SYN) and st.cfg.syn_cookies:
            mss_idx = _cookie_check(st, seg, st.now_ns)
            if mss_idx >= 0:
                # Only the accept queue bounds a cookie connection, as in
                # Linux: `pending` also counts the half-open connections whose
                # flood made us send cookies, so checking it would refuse
                # every cookie (found by fuzzing).
                if _accept_queue(st, li) >= l.backlog:
                    st.drops[DROP_BACKLOG_FULL] += 1
                    return
                if st.nconns >= st.cfg.max_conns:
                    _evict_half_open(st, rx)
                c = _alloc(st, seg.saddr, seg.saddr6 if seg.v6 else NULL, seg.sport, seg.dport)
                if c == NULL:
                    st.drops[DROP_TABLE_FULL] += 1
                    return
                st.stats.syn_cookies_accepted += 1
                c.passive = 1
                c.listener = <uint32_t>li
                _inherit(st, c, l)
                l.pending += 1
                c.irs = seg.seq - 1
                c.iss = seg.ack - 1
                c.rcv_nxt = seg.seq
                # the cookie SYN-ACK advertised min(rcvbuf, 65535) unscaled:
                # data on this ACK lies inside that window and is accepted
                c.rcv_adv = c.rcv_nxt + (st.cfg.rcvbuf if st.cfg.rcvbuf < 65535 else 65535)
                # our SYN is still unacknowledged: the ACK being processed
                # acknowledges it (SND.UNA < SEG.ACK, RFC 9293 §3.10.7.4)
                c.snd_una = c.iss
                c.snd_nxt = c.iss + 1
                c.snd_max = c.iss + 1
                c.snd_sml = c.iss
                c.snd_mss = COOKIE_MSS[mss_idx]
                c.rcv_mss = c.snd_mss
                c.snd_wscale = 0
                c.rcv_wscale = 0
                if st.cfg.timestamps and seg.has_ts:
                    tsbits = seg.tsecr & 0x1f
                    c.ts_ok = 1
                    c.ts_recent = seg.tsval
                    c.ts_recent_ns = st.now_ns
                    if ((tsbits >> 1) & 0xf) != 15:
                        c.snd_wscale = <uint8_t>((tsbits >> 1) & 0xf)
                        c.rcv_wscale = st.cfg.rcv_wscale
                    c.sack_ok = tsbits & 1
                if c.ts_ok:
                    c.rcv_mss = c.snd_mss - 12
                cc_init(&c.cc, st.cfg.cc_algo, _smss(c), 0x7fffffff)
                c.state = SYN_RECEIVED
                c.last_ack_sent = c.rcv_nxt
                _segment_synchronized(st, rx, c, seg)
                return
            st.drops[DROP_BAD_COOKIE] += 1
        else:
            st.drops[DROP_LISTEN_BAD] += 1
        _send_rst_reply(st, rx, f, seg)
        return
    if not (seg.flags & TH_SYN):
        st.drops[DROP_LISTEN_BAD] += 1
        return
    if seg.payload_len:
        # data on a SYN is not queued (RFC 9293 §3.10.7.2 allows either);
        # the SYN-ACK acknowledges only the SYN, so the peer sends it again
        st.drops[DROP_SYN_DATA] += 1
    if l.pending >= l.backlog or st.nconns >= st.cfg.max_conns:
        if st.cfg.syn_cookies:
            _syn_cookie_reply(st, rx, f, seg)
        else:
            st.drops[DROP_BACKLOG_FULL] += 1
        return
    c = _alloc(st, seg.saddr, seg.saddr6 if seg.v6 else NULL, seg.sport, seg.dport)
    if c == NULL:
        st.drops[DROP_TABLE_FULL] += 1
        return
    l.pending += 1
    c.passive = 1
    c.listener = <uint32_t>li
    _inherit(st, c, l)
    c.irs = seg.seq
    c.rcv_nxt = seg.seq + 1
    c.last_ack_sent = c.rcv_nxt
    c.rcv_adv = c.rcv_nxt
    c.iss = _isn(st, seg.saddr, seg.saddr6 if seg.v6 else NULL, seg.sport, seg.dport, st.now_ns)
    c.snd_una = c.iss
    c.snd_nxt = c.iss
    c.snd_max = c.iss
    c.snd_sml = c.iss
    _apply_syn_options(st, c, seg)
    if seg.wscale < 0:
        c.snd_wscale = 0
        c.rcv_wscale = 0
    c.state = SYN_RECEIVED
    c.rtt_timing = 1
    c.rtt_seq = c.iss
    c.rtt_start_ns = st.now_ns
    _send_syn(st, rx, c, False)
    _rto_arm(st, c)


cdef inline uint8_t _timeout_reason(Conn *c) noexcept nogil:
    """Why a connection that timed out ended: the last ICMP soft error it
    got, if any, says more than 'timed out' (RFC 1122 §4.2.3.9: make it
    available to the application; Linux reports sk_err_soft the same way)."""
    return c.soft_error if c.soft_error else R_TIMED_OUT


cdef void _icmp_error(CoreState *st, Replica *rx, const uint8_t *f, uint32_t off, uint32_t n) noexcept nogil:
    """An ICMP destination-unreachable, time-exceeded or parameter-problem
    message quoting a segment we sent (RFC 792: the IP header and at least
    8 bytes of TCP).  RFC 5927 §4.1: acted on only when the quoted
    sequence number lies in SND.UNA..SND.NXT of a connection of ours, so a
    blind attacker must guess it.

    * Fragmentation needed (RFC 1191; every segment goes out with DF): the
      MSS drops to fit the next-hop MTU (not below Linux's 552-byte floor)
      and what is in flight is sent again cut to it -- it did not get
      through -- without touching the congestion window, as Linux's
      tcp_simple_retransmit.
    * RFC 1122 §4.2.3.9: protocol and port unreachable are hard errors; so
      are the codes saying the destination is unknown, isolated,
      prohibited or filtered (RFC 1812; Linux's icmp_err_convert does the
      same).  A hard error aborts a connection still opening (RFC 5461 §4;
      connect() fails with the matching errno).  Net and host unreachable
      (also for a TOS), source route failed, time exceeded and parameter
      problem are soft: the connection carries on, and a later timeout
      reports the error instead of ETIMEDOUT.  In a synchronized state
      every error is soft (RFC 5461 §4)."""
    cdef const uint8_t *q = f + off + ICMP_HDR_LEN
    cdef uint32_t qn = n - ICMP_HDR_LEN
    cdef uint32_t qihl, raddr, qseq, mtu
    cdef uint16_t lport, rport
    cdef uint8_t kind = f[off + ICMP_TYPE]
    cdef uint8_t code = f[off + ICMP_CODE]
    cdef uint8_t reason = 0
    cdef bint hard = False
    cdef Conn *c
    if qn < IP_HDR_LEN or (q[0] >> 4) != 4:
        st.drops[DROP_ICMP] += 1
        return
    qihl = (q[0] & 0x0f) * 4
    if qihl < IP_HDR_LEN or qn < qihl + 8 or q[9] != IPPROTO_TCP or rd32(q + IP_SOURCE) != st.cfg.local_addr:
        st.drops[DROP_ICMP] += 1
        return
    raddr = rd32(q + IP_DESTINATION)
    lport = rd16(q + qihl)
    rport = rd16(q + qihl + 2)
    qseq = rd32(q + qihl + 4)
    c = _icmp_conn(st, raddr, NULL, rport, lport, qseq)
    if c == NULL:
        return
    if kind == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED:
        mtu = rd16(f + off + 6)                 # RFC 1191 §4: next-hop MTU in the low 16 bits
        if mtu < 68:
            st.drops[DROP_ICMP] += 1            # no usable MTU (pre-RFC 1191 routers)
            return
        if mtu < 552:
            mtu = 552
        _lower_mss(st, rx, c, mtu - IP_HDR_LEN - TCP_HDR_LEN)
        return
    if kind == ICMP_DEST_UNREACH:
        if code == ICMP_PROT_UNREACH:
            reason, hard = R_PROTO_UNREACHABLE, True
        elif code == ICMP_PORT_UNREACH:
            reason, hard = R_REFUSED, True
        elif code == ICMP_NET_UNKNOWN or code == ICMP_NET_ANO:
            reason, hard = R_NET_UNREACHABLE, True
        elif code == ICMP_HOST_UNKNOWN:
            reason, hard = R_HOST_DOWN, True
        elif code == ICMP_HOST_ISOLATED:
            reason, hard = R_NO_NETWORK, True
        elif code == ICMP_HOST_ANO or code == ICMP_PKT_FILTERED or code == ICMP_PREC_VIOLATION or \
                code == ICMP_PREC_CUTOFF:
            reason, hard = R_HOST_UNREACHABLE, True
        elif code == ICMP_NET_UNREACH or code == ICMP_NET_UNR_TOS:
            reason = R_NET_UNREACHABLE
        else:
            reason = R_HOST_UNREACHABLE         # host unreachable (for TOS), source route failed, unknown codes
    elif kind == ICMP_TIME_EXCEEDED:
        reason = R_HOST_UNREACHABLE
    else:
        reason = R_PROTOCOL_ERROR
    _icmp_report(st, rx, c, reason, hard)


cdef Conn *_icmp_conn(CoreState *st, uint32_t raddr, const uint8_t *raddr6, uint16_t rport, uint16_t lport,
                      uint32_t qseq) noexcept nogil:
    """The connection an ICMP or ICMPv6 error is about (the quoted segment's
    4-tuple), if the quoted sequence number lies in SND.UNA..SND.NXT (RFC
    5927 §4.1); else NULL, the error counted as dropped."""
    cdef uint32_t slot = _lookup(st, raddr, raddr6, rport, lport)
    cdef Conn *c
    if slot == NO_CONN:
        st.drops[DROP_ICMP_NO_CONNECTION] += 1
        return NULL
    c = &_conns(st)[slot]
    if c.state == LISTEN or c.state == TIME_WAIT or not (seq_ge(qseq, c.snd_una) and seq_lt(qseq, c.snd_max)):
        st.drops[DROP_ICMP_STALE] += 1
        return NULL
    st.stats.icmp_errors += 1
    return c


cdef void _lower_mss(CoreState *st, Replica *rx, Conn *c, uint32_t mss) noexcept nogil:
    """Path MTU discovery (RFC 1191, RFC 8201): the path takes segments of at
    most `mss` bytes.  Only ever lowered; what is in flight is sent again cut
    to it -- it did not get through -- without touching the congestion
    window, as Linux's tcp_simple_retransmit."""
    if mss >= c.snd_mss:
        return
    st.stats.pmtu_reductions += 1
    c.snd_mss = <uint16_t>mss
    c.cc.mss = _smss(c)
    if c.state >= ESTABLISHED and c.snd_max != c.snd_una:
        c.snd_nxt = c.snd_una
        c.high_rxt = c.snd_una
        _output(st, rx, c)


cdef void _icmp_report(CoreState *st, Replica *rx, Conn *c, uint8_t reason, bint hard) noexcept nogil:
    """RFC 1122 §4.2.3.9 with RFC 5461 §4: a hard error aborts a connection
    still opening; anything else is kept as the soft error a later timeout
    reports."""
    if hard and (c.state == SYN_SENT or c.state == SYN_RECEIVED):
        st.stats.icmp_aborts += 1
        _reset_conn(st, rx, c, reason)
        return
    c.soft_error = reason


cdef void _icmp_input(CoreState *st, Replica *rx, const uint8_t *f, TcpSegment *seg) noexcept nogil:
    """RFC 792: an echo request gets its reply (same identifier, sequence
    and data); errors about our segments go to _icmp_error; the rest
    (source quench -- RFC 6633 --, redirects, replies) is counted and
    dropped."""
    cdef uint32_t off = seg.tcp_off
    cdef uint32_t n = seg.ip_len - off
    cdef Action *a
    cdef uint64_t sum
    cdef uint16_t csum
    if n < ICMP_HDR_LEN or csum_fold(csum_partial(f + off, n, 0)) != 0xffff:
        st.drops[DROP_ICMP] += 1
        return
    if f[off + ICMP_TYPE] == ICMP_DEST_UNREACH or f[off + ICMP_TYPE] == ICMP_TIME_EXCEEDED or \
            f[off + ICMP_TYPE] == ICMP_PARAMETER_PROBLEM:
        _icmp_error(st, rx, f, off, n)
        return
    if f[off + ICMP_TYPE] != ICMP_ECHO_REQUEST or f[off + ICMP_CODE] != 0:
        st.drops[DROP_ICMP] += 1
        return
    st.stats.icmp_echo += 1
    st.ip_ident += 1                 # replicated: advanced by every replica
    if rx.replica != 0:
        return
    a = _action(st, rx)
    if a == NULL:
        return
    write_ipv4_header(a.hdr, st.cfg.local_addr, seg.saddr, IPPROTO_ICMP, IP_HDR_LEN + n, st.ip_ident)
    a.hdr[IP_HDR_LEN + ICMP_TYPE] = ICMP_ECHO_REPLY
    a.hdr[IP_HDR_LEN + ICMP_CODE] = 0
    a.hdr[IP_HDR_LEN + ICMP_CHECKSUM] = 0
    a.hdr[IP_HDR_LEN + ICMP_CHECKSUM + 1] = 0
    memcpy(a.hdr + IP_HDR_LEN + ICMP_REST, f + off + ICMP_REST, 4)     # identifier, sequence
    sum = csum_partial(a.hdr + IP_HDR_LEN, ICMP_HDR_LEN, 0)
    sum = csum_partial(f + off + ICMP_HDR_LEN, n - ICMP_HDR_LEN, sum)
    csum = csum_finish(sum)
    memcpy(a.hdr + IP_HDR_LEN + ICMP_CHECKSUM, &csum, 2)
    a.kind = ACT_TRANSMIT
    a.code = TX_PAYLOAD_FRAME
    a.handle = NO_CONN
    a.hdr_len = IP_HDR_LEN + ICMP_HDR_LEN
    a.csum_start = IP_HDR_LEN
    a.length = n - ICMP_HDR_LEN
    a.frame_off = off + ICMP_HDR_LEN
    a.stream_off = 0
    a.gso_size = 0


cdef void _icmp6_error(CoreState *st, Replica *rx, const uint8_t *f, uint32_t off, uint32_t n) noexcept nogil:
    """An ICMPv6 error quoting a segment we sent (RFC 4443 §2.4: as much of
    the packet as fits; we need its IPv6 header -- ours carry no extension
    headers -- and 8 bytes of TCP), acted on as ICMP errors are (RFC 5927
    §4.1: only with the quoted sequence number in SND.UNA..SND.NXT):

    * Packet Too Big (RFC 8201 §4): the MSS drops to fit the MTU it
      reports, never below the IPv6 minimum of 1280 (§5.1: a smaller MTU is
      taken as 1280), and what is in flight is sent again cut to it.
    * Destination unreachable as for IPv4 and as Linux's icmpv6_err_convert:
      port unreachable is a hard error (refused); administratively
      prohibited, failed policy and reject route are hard (host
      unreachable, as IPv4's "filtered"); no route (net unreachable),
      beyond scope and address unreachable (host unreachable) are soft.
    * Time exceeded is soft (host unreachable), parameter problem soft
      (protocol error), as for IPv4."""
    cdef const uint8_t *q = f + off + ICMP6_HDR_LEN
    cdef uint32_t qn = n - ICMP6_HDR_LEN
    cdef uint32_t qseq, mtu
    cdef uint16_t lport, rport
    cdef uint8_t kind = f[off + ICMP6_TYPE]
    cdef uint8_t code = f[off + ICMP6_CODE]
    cdef uint8_t reason
    cdef bint hard = False
    cdef Conn *c
    if qn < IP6_HDR_LEN + 8 or (q[0] >> 4) != 6 or q[IP6_NEXT_HEADER] != IPPROTO_TCP or \
            memcmp(q + IP6_SOURCE, st.cfg.local_addr6, 16) != 0:
        st.drops[DROP_ICMP] += 1
        return
    lport = rd16(q + IP6_HDR_LEN)
    rport = rd16(q + IP6_HDR_LEN + 2)
    qseq = rd32(q + IP6_HDR_LEN + 4)
    c = _icmp_conn(st, rd32(q + IP6_DESTINATION + 12), q + IP6_DESTINATION, rport, lport, qseq)
    if c == NULL:
        return
    if kind == ICMP6_PACKET_TOO_BIG:
        mtu = rd32(f + off + ICMP6_DATA)
        if mtu < IP6_MIN_MTU:
            mtu = IP6_MIN_MTU
        _lower_mss(st, rx, c, mtu - IP6_HDR_LEN - TCP_HDR_LEN)
        return
    if kind == ICMP6_DEST_UNREACH:
        if code == ICMP6_PORT_UNREACH:
            reason, hard = R_REFUSED, True
        elif code == ICMP6_ADMIN_PROHIBITED or code == ICMP6_POLICY_FAIL or code == ICMP6_REJECT_ROUTE:
            reason, hard = R_HOST_UNREACHABLE, True
        elif code == ICMP6_NO_ROUTE:
            reason = R_NET_UNREACHABLE
        else:
            reason = R_HOST_UNREACHABLE         # beyond scope, address unreachable, unknown codes
    elif kind == ICMP6_TIME_EXCEEDED:
        reason = R_HOST_UNREACHABLE
    else:
        reason = R_PROTOCOL_ERROR
    _icmp_report(st, rx, c, reason, hard)


cdef void _icmp6_input(CoreState *st, Replica *rx, const uint8_t *f, TcpSegment *seg) noexcept nogil:
    """RFC 4443: an echo request gets its reply (same identifier, sequence
    and data, §4.2); errors about our segments go to _icmp6_error; anything
    else -- a malformed message, a bad checksum (it covers the
    pseudo-header, §2.3), neighbour discovery (a TUN has no link layer),
    replies, informational types we do not know (§2.4 (b): silently
    discarded) -- is counted and dropped."""
    cdef uint32_t off = seg.tcp_off
    cdef uint32_t n = seg.ip_len - off
    cdef uint8_t kind
    cdef Action *a
    cdef uint64_t sum
    cdef uint16_t csum
    if n < ICMP6_HDR_LEN or csum_fold(csum_partial(f + off, n, csum_pseudo_v6(f + IP6_SOURCE, f + IP6_DESTINATION,
                                                                         IPPROTO_ICMPV6, n))) != 0xffff:
        st.drops[DROP_ICMP] += 1
        return
    kind = f[off + ICMP6_TYPE]
    if kind == ICMP6_DEST_UNREACH or kind == ICMP6_PACKET_TOO_BIG or kind == ICMP6_TIME_EXCEEDED or \
            kind == ICMP6_PARAMETER_PROBLEM:
        _icmp6_error(st, rx, f, off, n)
        return
    if kind != ICMP6_ECHO_REQUEST or f[off + ICMP6_CODE] != 0 or n > 65535 - IP6_HDR_LEN:
        st.drops[DROP_ICMP] += 1
        return
    st.stats.icmp6_echo += 1
    st.ip_ident += 1                 # replicated: advanced by every replica, as for every reply
    if rx.replica != 0:
        return
    a = _action(st, rx)
    if a == NULL:
        return
    write_ipv6_header(a.hdr, st.cfg.local_addr6, seg.saddr6, IPPROTO_ICMPV6, n,
                      _flow_label(st, seg.saddr, seg.saddr6, 0, 0))
    a.hdr[IP6_HDR_LEN + ICMP6_TYPE] = ICMP6_ECHO_REPLY
    a.hdr[IP6_HDR_LEN + ICMP6_CODE] = 0
    a.hdr[IP6_HDR_LEN + ICMP6_CHECKSUM] = 0
    a.hdr[IP6_HDR_LEN + ICMP6_CHECKSUM + 1] = 0
    memcpy(a.hdr + IP6_HDR_LEN + ICMP6_DATA, f + off + ICMP6_DATA, 4)     # identifier, sequence
    sum = csum_pseudo_v6(a.hdr + IP6_SOURCE, a.hdr + IP6_DESTINATION, IPPROTO_ICMPV6, n)
    sum = csum_partial(a.hdr + IP6_HDR_LEN, ICMP6_HDR_LEN, sum)
    sum = csum_partial(f + off + ICMP6_HDR_LEN, n - ICMP6_HDR_LEN, sum)
    csum = csum_finish(sum)
    memcpy(a.hdr + IP6_HDR_LEN + ICMP6_CHECKSUM, &csum, 2)
    a.kind = ACT_TRANSMIT
    a.code = TX_PAYLOAD_FRAME
    a.handle = NO_CONN
    a.hdr_len = IP6_HDR_LEN + ICMP6_HDR_LEN
    a.csum_start = IP6_HDR_LEN
    a.length = n - ICMP6_HDR_LEN
    a.frame_off = off + ICMP6_HDR_LEN
    a.stream_off = 0
    a.gso_size = 0


cdef inline void _event_start(CoreState *st, Replica *rx, uint64_t now) noexcept nogil:
    """What every frame-like event does first: take the stamped time, count
    it, and fire the timers that are due."""
    if now > st.now_ns:
        st.now_ns = now
    st.events += 1
    st.stats.frames += 1
    if st.next_timer_ns and st.now_ns >= st.next_timer_ns:
        core_tick(st, rx, st.now_ns)


cdef inline bint _fast_path(CoreState *st, Replica *rx, Conn *c, TcpSegment *seg, uint32_t slot) noexcept nogil:
    """Header prediction (as BSD's tcp_input and Linux's tcp_rcv_established):
    the next in-order data segment of an established connection that
    acknowledges nothing new, while nothing of ours is in flight, and nothing
    is unusual (no holes, no FIN seen, no recovery, room in the window, PAWS
    fine).  It does exactly what _segment_synchronized would -- the same
    state, the same actions in the same order -- only without the checks
    that cannot fire.  Returns False, having changed nothing, when the
    segment is not such a one; the slow path then runs.
    (tests/test_core_fast_path.py compares both over whole streams.)"""
    cdef uint32_t plen = seg.payload_len
    cdef uint32_t end
    if c.state != ESTABLISHED or (seg.flags & (TH_SYN | TH_FIN | TH_RST | TH_URG | TH_ACK)) != TH_ACK:
        return False
    if seg.seq != c.rcv_nxt or seg.ack != c.snd_una or c.snd_una != c.snd_max or plen == 0:
        return False
    if c.ooo.n or c.fin_off != NO_OFF or c.app_closed or c.in_recovery or seg.nsack:
        return False
    end = seg.seq + plen
    if not seq_gt(c.rcv_adv, c.rcv_nxt) or seq_gt(end, c.rcv_adv):
        return False
    if <int64_t>plen > <int64_t>c.rcv_buf - <int64_t>(c.rcv_nxt_off - c.consumed_off):
        return False                            # past a shrunk buffer: the slow path trims
    if c.ts_ok and seg.has_ts:
        if seq_lt(seg.tsval, c.ts_recent) and st.now_ns - c.ts_recent_ns < PAWS_IDLE_NS:
            return False                        # PAWS (RFC 7323 §5.3): the slow path drops it
        # RFC 7323 §4.3 (3): the segment covers last_ack_sent: remember its TSval
        if seq_le(seg.seq, c.last_ack_sent) and seq_lt(c.last_ack_sent, end):
            c.ts_recent = seg.tsval
            c.ts_recent_ns = st.now_ns
    c.last_rcv_ns = st.now_ns                   # an acceptable segment (keep-alive, RFC 1122 §4.2.3.6)
    c.keep_probes = 0
    _update_window(c, seg)                      # RFC 9293 §3.10.7.4 "fifth"
    c.segs_in += 1                              # "seventh": the text, in order
    c.bytes_in += plen
    _copy(st, rx, _handle(c, slot), seg.payload_off, c.rcv_nxt_off, plen)
    c.rcv_nxt = end
    c.rcv_nxt_off += plen
    _notify(st, rx, _handle(c, slot), N_READABLE, c.rcv_nxt_off)
    # ACK policy: at least every second full-sized segment, else delayed
    c.segs_unacked += plen
    if c.segs_unacked >= 2 * <uint32_t>c.rcv_mss:
        c.ack_now = 1
    elif not c.ack_now and not c.delack_armed:
        c.delack_armed = 1
        c.delack_at = st.now_ns + st.cfg.delack_ns
        _arm(st, c.delack_at)
    # _output sends nothing while everything the application gave is acknowledged
    if c.fin_pending or c.snd_end_off != _seq_stream(c, c.snd_una):
        _output(st, rx, c)
    if c.ack_now:
        _send_ack(st, rx, c)
    return True


cdef void _segment(CoreState *st, Replica *rx, TcpSegment *seg, uint32_t gso_size) noexcept nogil:
    """A validated TCP segment addressed to us: find its connection (or
    listener) and run RFC 9293's segment-arrival processing."""
    cdef int li
    cdef uint32_t slot
    cdef Conn *c
    st.stats.tcp_segments += 1
    slot = _seg_lookup(st, seg)
    if slot == NO_CONN:
        li = _find_listener(st, seg.dport)
        if li >= 0:
            _segment_listen(st, rx, NULL, seg, li)
        else:
            st.drops[DROP_NO_CONNECTION] += 1
            _send_rst_reply(st, rx, NULL, seg)
        return
    c = &_conns(st)[slot]
    if gso_size and gso_size > c.rcv_mss and gso_size <= _local_mss(st, c.v6):
        c.rcv_mss = <uint16_t>gso_size
    elif not gso_size and seg.payload_len > c.rcv_mss and seg.payload_len <= _local_mss(st, c.v6):
        c.rcv_mss = <uint16_t>seg.payload_len
    if rx.fast_path and _fast_path(st, rx, c, seg, slot):
        rx.fast_path_hits += 1
        return
    if c.state == SYN_SENT:
        _segment_syn_sent(st, rx, c, seg)
    else:
        _segment_synchronized(st, rx, c, seg)


cdef void core_frame(CoreState *st, Replica *rx, const uint8_t *f, uint32_t n,
                     uint32_t flags, uint32_t gso_size, uint64_t now) noexcept nogil:
    """One whole frame from the device (or replay source).  Copy actions
    refer to offsets in `f`."""
    cdef TcpSegment seg
    cdef int r
    _event_start(st, rx, now)
    r = validate_frame(f, n, flags, gso_size, st.cfg.local_addr, st.cfg.local_addr6 if st.cfg.ipv6 else NULL,
                       &seg)
    if r == FRAME_IS_ICMP:
        _icmp_input(st, rx, f, &seg)
    elif r == FRAME_IS_ICMP6:
        _icmp6_input(st, rx, f, &seg)
    elif r != DROP_NONE:
        st.drops[r] += 1
    else:
        _segment(st, rx, &seg, gso_size)


cdef void core_entry(CoreState *st, Replica *rx, const Descriptor *e) noexcept nogil:
    """One segment the sequencer validated and described in a log entry (the
    same processing core_frame would give the frame).  Copy actions refer to
    offsets from the start of the entry's payload."""
    cdef TcpSegment seg
    _event_start(st, rx, e.now_ns)
    seg.saddr = e.saddr
    seg.daddr = st.cfg.local_addr
    seg.v6 = (e.seg_flags & SEG_PEER6) != 0
    if seg.v6:
        memcpy(seg.saddr6, st.peer6, 16)
    seg.ip_len = 0
    seg.tcp_off = 0
    seg.sport = e.sport
    seg.dport = e.dport
    seg.seq = e.seq
    seg.ack = e.ack
    seg.flags = e.tcp_flags
    seg.wnd = e.window
    seg.urg = 0
    seg.hdr_len = TCP_HDR_LEN
    seg.payload_off = 0
    seg.payload_len = e.length
    seg.mss = 0
    seg.wscale = -1
    seg.sack_perm = 0
    seg.has_ts = e.seg_flags & SEG_TS
    seg.nsack = 0
    seg.wscale_clamped = 0
    seg.tsval = e.tsval
    seg.tsecr = e.tsecr
    _segment(st, rx, &seg, e.gso_size)


cdef void core_dropped(CoreState *st, Replica *rx, uint32_t reason, uint64_t now) noexcept nogil:
    """A frame the sequencer's validation dropped: counted as core_frame would."""
    _event_start(st, rx, now)
    st.drops[reason] += 1


cdef void core_peer6(CoreState *st, const uint8_t *addr) noexcept nogil:
    """A REC_PEER6 record: the IPv6 source of the SEG_PEER6 segments that
    follow.  Not an event (no time, no count): replicated state only."""
    memcpy(st.peer6, addr, 16)


# ---------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------

cdef void _on_rto(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """RFC 6298 §5.4-5.7 and RFC 5681 §3.1 on a retransmission timeout."""
    c.rto_at = 0
    if c.snd_una == c.snd_max and c.state != SYN_SENT and c.state != SYN_RECEIVED:
        return
    c.retries += 1
    # A passive half-open connection gives up after synack_retries (Linux's
    # tcp_synack_retries = 5, about a minute), so a SYN flood's leftovers clear
    # the table soon; established ones after max_retries.
    if c.retries > (st.cfg.synack_retries if (c.state == SYN_RECEIVED and c.passive) else st.cfg.max_retries):
        if c.state != SYN_SENT:
            # in SYN-SENT there is nothing to reset and no rcv_nxt to put in
            # the ACK field (RFC 9293 §3.10.5 ABORT: "delete the TCB")
            _send_rst(st, rx, c, c.snd_nxt)
        _reset_conn(st, rx, c, _timeout_reason(c))
        return
    st.stats.rto_expired += 1
    if c.state != SYN_SENT and c.state != SYN_RECEIVED:
        cc_on_rto(&c.cc, _flight(c), c.backoff == 0)
    c.in_recovery = 0
    c.recover = c.snd_max
    c.recover_valid = 1
    c.lost_off = 0
    c.rescue_valid = 0
    c.tlp_active = 0
    c.tlp_at = 0
    c.dupacks = 0
    c.rtt_timing = 0                        # Karn's rule
    ranges_clear(&c.sacked)                 # RFC 6675 §5.1: SACK info may be reneged
    c.rto_ns *= 2
    if c.rto_ns > st.cfg.rto_max_ns:
        c.rto_ns = st.cfg.rto_max_ns
    if c.backoff < 255:
        c.backoff += 1
    c.snd_nxt = c.snd_una
    c.high_rxt = c.snd_una
    _retransmit_first(st, rx, c)
    if c.state != SYN_SENT and c.state != SYN_RECEIVED:
        c.snd_nxt = c.high_rxt if seq_gt(c.high_rxt, c.snd_una) else c.snd_una
        if _fin_sent(c) and c.snd_una == _stream_seq(c, c.snd_end_off):
            c.snd_nxt = c.snd_max
    _rto_arm(st, c)


cdef void _keepalive_start(CoreState *st, Conn *c) noexcept nogil:
    """Arm the keep-alive timer keep_idle from now (a connection just became
    synchronized, or the application just turned keep-alives on), as Linux
    does; an armed timer is left alone."""
    if not c.keepalive or c.state < ESTABLISHED or c.state == TIME_WAIT or c.keep_at:
        return
    c.keep_at = st.now_ns + c.keep_idle_ns
    _arm(st, c.keep_at)


cdef void _on_keepalive(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """RFC 1122 §4.2.3.6 / RFC 9293 §3.8.4: after keep_idle without a
    segment from the peer, send a keep-alive -- an ACK at SND.UNA - 1, which
    the peer must answer -- every keep_intvl; after keep_cnt unanswered ones
    the peer is gone: reset (Linux tcp_keepalive_timer).  While data is in
    flight the retransmission timer watches the connection instead."""
    cdef uint64_t elapsed
    c.keep_at = 0
    if not c.keepalive or c.state < ESTABLISHED or c.state == TIME_WAIT:
        return
    if c.snd_max != c.snd_una or c.snd_end_off > _seq_stream(c, c.snd_nxt):
        c.keep_at = st.now_ns + c.keep_idle_ns
        _arm(st, c.keep_at)
        return
    elapsed = st.now_ns - c.last_rcv_ns
    if elapsed >= c.keep_idle_ns:
        if c.keep_probes >= c.keep_cnt:
            _send_rst(st, rx, c, c.snd_nxt)
            _reset_conn(st, rx, c, _timeout_reason(c))
            return
        st.stats.keepalive_probes += 1
        c.keep_probes += 1
        _emit_tcp(st, rx, c, c.snd_una - 1, TH_ACK, 0, 0, True, False)
        c.keep_at = st.now_ns + c.keep_intvl_ns
    else:
        c.keep_at = c.last_rcv_ns + c.keep_idle_ns
    _arm(st, c.keep_at)


cdef void _on_fin_wait2(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """A connection the application closed does not wait in FIN-WAIT-2 for
    a FIN that may never come (RFC 9293 §3.6 lets the wait be bounded):
    after fin_wait2_ns it is reset, as Linux does with tcp_fin_timeout."""
    c.fin2_at = 0
    if c.state != FIN_WAIT_2:
        return
    _send_rst(st, rx, c, c.snd_nxt)
    _reset_conn(st, rx, c, R_TIMED_OUT)


cdef void _fin_wait2_start(CoreState *st, Conn *c) noexcept nogil:
    if c.state == FIN_WAIT_2 and c.app_closed and st.cfg.fin_wait2_ns and not c.fin2_at:
        c.fin2_at = st.now_ns + st.cfg.fin_wait2_ns
        _arm(st, c.fin2_at)


cdef void _tlp_arm(CoreState *st, Conn *c) noexcept nogil:
    """RFC 8985 §7.2: (re)start the loss-probe timer after sending new data
    or on an ACK of new data: PTO = 2 SRTT (at least 10 ms, as Linux), plus
    the peer's worst-case delayed-ACK time (200 ms) when one segment is in
    flight, or 1 s before any RTT sample.  Not in recovery, not with a probe
    outstanding, and not when the RTO would come first."""
    cdef uint64_t pto
    c.tlp_at = 0
    if not c.sack_ok or c.in_recovery or c.tlp_active or c.snd_max == c.snd_una or \
            (c.state != ESTABLISHED and c.state != CLOSE_WAIT):
        return
    if c.srtt_ns:
        pto = 2 * c.srtt_ns
        if pto < 10 * MS:
            pto = 10 * MS
        if _flight(c) <= _smss(c):
            pto += 200 * MS
    else:
        pto = SEC
    if c.rto_at and st.now_ns + pto >= c.rto_at:
        return
    c.tlp_at = st.now_ns + pto
    _arm(st, c.tlp_at)


cdef void _on_tlp(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """RFC 8985 §7.3, the tail loss probe: no ACK for a PTO while data is in
    flight -- the tail of the window may be lost, with no SACK above it to
    start recovery.  Send one segment to draw an ACK with SACK information:
    new data if there is some and the window allows, else the last segment
    sent again.  Its ACK either repairs the loss or, SACKing the probe,
    marks what lies below it lost (see _process_ack)."""
    cdef uint64_t una_off, nxt_off, top_off, data_top, avail, room, start, n
    cdef uint16_t flags
    c.tlp_at = 0
    if c.in_recovery or c.tlp_active or c.snd_max == c.snd_una or \
            (c.state != ESTABLISHED and c.state != CLOSE_WAIT):
        return
    una_off = _seq_stream(c, c.snd_una)
    nxt_off = _seq_stream(c, c.snd_nxt)
    top_off = _seq_stream(c, c.snd_max)
    avail = c.snd_end_off - nxt_off if c.snd_end_off > nxt_off else 0
    room = una_off + c.snd_wnd - nxt_off if una_off + c.snd_wnd > nxt_off else 0
    if avail and room and c.snd_nxt == c.snd_max:
        n = avail if avail < room else room
        if n > _smss(c):
            n = _smss(c)
        flags = TH_ACK | (TH_PSH if nxt_off + n == c.snd_end_off else 0)
        c.tlp_start = c.snd_nxt
        _emit_tcp(st, rx, c, c.snd_nxt, flags, nxt_off, <uint32_t>n, False, False)
        c.snd_nxt += <uint32_t>n
        c.snd_max = c.snd_nxt
        c.tlp_retrans = 0
    else:
        data_top = top_off if top_off < c.snd_end_off else c.snd_end_off
        if data_top > una_off and ranges_contains(&c.sacked, data_top - 1, data_top):
            return                          # the tail is SACKed: nothing to probe with
        flags = TH_ACK
        if _fin_sent(c) and c.snd_max == _stream_seq(c, c.snd_end_off) + 1:
            flags |= TH_FIN
        if data_top > una_off:
            start = data_top - _smss(c) if data_top - una_off > _smss(c) else una_off
            if data_top == c.snd_end_off:
                flags |= TH_PSH
            c.tlp_start = _stream_seq(c, start)
            _emit_tcp(st, rx, c, c.tlp_start, flags, start, <uint32_t>(data_top - start), False, True)
        elif flags & TH_FIN:
            c.tlp_start = _stream_seq(c, c.snd_end_off)
            _emit_tcp(st, rx, c, c.tlp_start, flags, 0, 0, False, True)
        else:
            return
        c.tlp_retrans = 1
    st.stats.tail_loss_probes += 1
    c.tlp_active = 1
    c.tlp_dsack = 0
    c.tlp_end = c.snd_max
    _rto_arm(st, c)                         # the RTO covers the probe (§7.3)


cdef void _on_persist(CoreState *st, Replica *rx, Conn *c) noexcept nogil:
    """Zero-window probe (RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17): a segment
    at snd_una - 1 the receiver must answer with an ACK and its window."""
    c.persist_at = 0
    if c.snd_wnd != 0:
        _output_segments(st, rx, c, True)
        return
    st.stats.zero_window_probes += 1
    _emit_tcp(st, rx, c, c.snd_una - 1, TH_ACK, 0, 0, True, False)
    if c.persist_backoff < 6:
        c.persist_backoff += 1
    c.persist_at = st.now_ns + (c.rto_ns << c.persist_backoff)
    if c.persist_at - st.now_ns > st.cfg.rto_max_ns:
        c.persist_at = st.now_ns + st.cfg.rto_max_ns
    _arm(st, c.persist_at)


cdef void core_tick(CoreState *st, Replica *rx, uint64_t now) noexcept nogil:
    cdef uint32_t i
    cdef Conn *c
    cdef Conn *conns = _conns(st)
    cdef uint64_t nxt = 0
    cdef uint16_t gen
    if now > st.now_ns:
        st.now_ns = now
    now = st.now_ns
    if st.next_timer_ns == 0 or now < st.next_timer_ns:
        return
    st.next_timer_ns = 0
    for i in range(st.high_slot):
        c = &conns[i]
        if not c.in_use:
            continue
        gen = c.gen
        if c.timewait_at and now >= c.timewait_at:
            c.timewait_at = 0
            _release(st, rx, c, True)
            continue
        if c.delack_at and now >= c.delack_at:
            c.delack_at = 0
            c.delack_armed = 0
            _send_ack(st, rx, c)
        if c.rto_at and now >= c.rto_at:
            _on_rto(st, rx, c)
            if not c.in_use or c.gen != gen:
                continue
        if c.persist_at and now >= c.persist_at:
            _on_persist(st, rx, c)
        if c.keep_at and now >= c.keep_at:
            _on_keepalive(st, rx, c)
            if not c.in_use or c.gen != gen:
                continue
        if c.fin2_at and now >= c.fin2_at:
            _on_fin_wait2(st, rx, c)
            if not c.in_use or c.gen != gen:
                continue
        if c.tlp_at and now >= c.tlp_at:
            _on_tlp(st, rx, c)
        # re-collect the earliest deadline of this connection
        if c.timewait_at and (nxt == 0 or c.timewait_at < nxt):
            nxt = c.timewait_at
        if c.delack_at and (nxt == 0 or c.delack_at < nxt):
            nxt = c.delack_at
        if c.rto_at and (nxt == 0 or c.rto_at < nxt):
            nxt = c.rto_at
        if c.persist_at and (nxt == 0 or c.persist_at < nxt):
            nxt = c.persist_at
        if c.keep_at and (nxt == 0 or c.keep_at < nxt):
            nxt = c.keep_at
        if c.fin2_at and (nxt == 0 or c.fin2_at < nxt):
            nxt = c.fin2_at
        if c.tlp_at and (nxt == 0 or c.tlp_at < nxt):
            nxt = c.tlp_at
    if nxt and (st.next_timer_ns == 0 or nxt < st.next_timer_ns):
        st.next_timer_ns = nxt


# ---------------------------------------------------------------------------
# Application requests (they reach every replica through the log)
# ---------------------------------------------------------------------------

cdef inline void _stamp(CoreState *st, Replica *rx, uint64_t now) noexcept nogil:
    if now > st.now_ns:
        st.now_ns = now
    st.events += 1
    if st.next_timer_ns and st.now_ns >= st.next_timer_ns:
        core_tick(st, rx, st.now_ns)


cdef int core_app_listen(CoreState *st, Replica *rx, uint16_t port, uint32_t backlog, uint64_t now) noexcept nogil:
    cdef uint32_t i
    _stamp(st, rx, now)
    if port == 0 or _find_listener(st, port) >= 0:
        return -1
    for i in range(MAX_LISTENERS):
        if not st.listeners[i].active:
            st.listeners[i].active = 1
            st.listeners[i].port = port
            st.listeners[i].backlog = backlog if backlog else st.cfg.backlog_default
            st.listeners[i].pending = 0
            st.listeners[i].nodelay = 0
            st.listeners[i].keepalive = 0
            st.listeners[i].user_mss = 0
            st.listeners[i].rcvbuf = 0
            st.listeners[i].sndbuf = 0
            st.listeners[i].keep_cnt = 0
            st.listeners[i].keep_idle_ns = 0
            st.listeners[i].keep_intvl_ns = 0
            st.nlisteners += 1
            return 0
    return -1


cdef int core_app_unlisten(CoreState *st, Replica *rx, uint16_t port, uint64_t now) noexcept nogil:
    cdef int li
    cdef uint32_t i
    cdef Conn *conns
    cdef Conn *c
    _stamp(st, rx, now)
    li = _find_listener(st, port)
    if li < 0:
        return -1
    # The listener's connections go with it, as when Linux closes a
    # listening socket: a half-open one is forgotten (never announced; the
    # peer's ACK will find no one and get a reset), one established but
    # not accepted is reset (the application was told of it).  Left behind
    # they would complete later for no listener and, sharing its slot,
    # count against whichever listener takes the slot next.
    conns = _conns(st)
    for i in range(st.high_slot):
        c = &conns[i]
        if c.in_use and c.passive and not c.accepted and c.listener == <uint32_t>li:
            if c.state == SYN_RECEIVED:
                _release(st, rx, c, False)
            else:
                if c.state != TIME_WAIT:
                    _send_rst(st, rx, c, c.snd_nxt)
                _notify(st, rx, _handle(c, i), N_RESET, R_ABORTED)
                _release(st, rx, c, True)
    st.listeners[li].active = 0
    st.listeners[li].pending = 0
    st.nlisteners -= 1
    return 0


cdef int core_app_connect(CoreState *st, Replica *rx, uint64_t tag, uint32_t raddr, const uint8_t *raddr6,
                          uint16_t rport, uint16_t lport, uint16_t user_mss, uint32_t rcvbuf,
                          uint64_t now) noexcept nogil:
    """Active open to raddr (IPv4), or to raddr6 (16 bytes: IPv6; raddr is
    then its last 32 bits).  user_mss and rcvbuf (0: defaults) are the
    socket options that must be known before the SYN: the MSS and window
    scale it announces.  Over IPv6 without an IPv6 address of our own, or
    to an address no host can have, it fails as unreachable."""
    cdef Conn *c
    _stamp(st, rx, now)
    if raddr6 != NULL and (not st.cfg.ipv6 or bad_source6(raddr6) or memcmp(raddr6, st.cfg.local_addr6, 16) == 0):
        _notify(st, rx, R_NET_UNREACHABLE, N_CONNECT_FAILED, tag)
        return -1
    if _lookup(st, raddr, raddr6, rport, lport) != NO_CONN or rport == 0 or lport == 0:
        _notify(st, rx, R_REFUSED, N_CONNECT_FAILED, tag)
        return -1
    c = _alloc(st, raddr, raddr6, rport, lport)
    if c == NULL:
        _notify(st, rx, R_NO_MEMORY, N_CONNECT_FAILED, tag)
        return -1
    c.tag = tag
    if user_mss:
        c.user_mss = user_mss
    if rcvbuf:
        c.rcv_buf = _clamp_buffer(rcvbuf, st.cfg.rcvbuf)
    c.iss = _isn(st, raddr, raddr6, rport, lport, st.now_ns)
    c.snd_una = c.iss
    c.snd_nxt = c.iss
    c.snd_max = c.iss
    c.snd_sml = c.iss
    c.rcv_wscale = _wscale_for(c.rcv_buf)
    c.snd_wscale = 0
    c.sack_ok = st.cfg.sack
    c.ts_ok = st.cfg.timestamps
    c.state = SYN_SENT
    c.rtt_timing = 1
    c.rtt_seq = c.iss
    c.rtt_start_ns = st.now_ns
    _send_syn(st, rx, c, False)
    _rto_arm(st, c)
    return <int>_slot_of(st, c)


cdef int core_app_accepted(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil:
    cdef Conn *c
    _stamp(st, rx, now)
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, handle)
    if c == NULL:
        return -1
    if c.passive and not c.accepted:
        c.accepted = 1
        if c.listener < MAX_LISTENERS and st.listeners[c.listener].pending:
            st.listeners[c.listener].pending -= 1
    return 0


cdef int core_app_consumed(CoreState *st, Replica *rx, uint32_t handle, uint64_t off, uint64_t now) noexcept nogil:
    """The application has consumed the receive stream up to `off`: the
    window may open.  A pure window update is sent only when the peer may be
    waiting for it -- the window it was last offered has shrunk to half of
    the most we could offer or less -- and the new one is at least twice as
    large (Linux's rule in tcp_cleanup_rbuf); otherwise the next ACK carries
    it.  The right edge moves by at least 2 segments or half the buffer
    (receiver SWS avoidance, RFC 1122 §4.2.3.3)."""
    cdef Conn *c
    cdef int64_t space, most
    cdef uint32_t edge, thresh, offered
    _stamp(st, rx, now)
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, handle)
    if c == NULL:
        return -1
    if off > c.rcv_nxt_off or off <= c.consumed_off:
        return 0 if off == c.consumed_off else -1
    c.consumed_off = off
    if c.state < ESTABLISHED or c.state == TIME_WAIT or c.state == CLOSE_WAIT \
            or c.state == CLOSING or c.state == LAST_ACK:
        return 0
    most = <int64_t>c.rcv_buf
    if most > (<int64_t>65535 << c.rcv_wscale):
        most = <int64_t>65535 << c.rcv_wscale
    offered = <uint32_t>(c.rcv_adv - c.rcv_nxt) if seq_gt(c.rcv_adv, c.rcv_nxt) else 0
    if 2 * <int64_t>offered > most:
        return 0                # the peer still has at least half a window to send into
    space = <int64_t>c.rcv_buf - <int64_t>(c.rcv_nxt_off - c.consumed_off)
    if space > most:
        space = most
    if space < 2 * <int64_t>offered:
        return 0
    edge = c.rcv_nxt + <uint32_t>space
    thresh = 2 * c.rcv_mss
    if thresh > c.rcv_buf // 2:
        thresh = c.rcv_buf // 2
    if seq_gt(edge, c.rcv_adv) and <uint32_t>(edge - c.rcv_adv) >= thresh:
        _send_ack(st, rx, c)
    return 0


cdef int core_app_send(CoreState *st, Replica *rx, uint32_t handle, uint64_t upto, bint urgent,
                       uint64_t now) noexcept nogil:
    """The application has appended to the send stream up to `upto`;
    urgent: all of it up to there is urgent (RFC 9293 §3.10.2: SND.UP <-
    SND.NXT, the octet after the urgent data as RFC 6093 says; any length
    of urgent data, MUST-31)."""
    cdef Conn *c
    _stamp(st, rx, now)
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, handle)
    if c == NULL or c.fin_pending:
        return -1
    if upto <= c.snd_end_off:
        return 0
    if c.state != ESTABLISHED and c.state != CLOSE_WAIT and c.state != SYN_SENT \
            and c.state != SYN_RECEIVED:
        return -1
    c.snd_end_off = upto
    if urgent:
        c.snd_up = _stream_seq(c, upto)
        c.snd_up_valid = 1
    _output(st, rx, c)
    return 0


cdef int core_app_shutdown(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil:
    """Close the sending side: FIN after the data (RFC 9293 §3.10.4)."""
    cdef Conn *c
    _stamp(st, rx, now)
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, handle)
    if c == NULL:
        return -1
    if c.fin_pending:
        return 0
    if c.state == SYN_SENT:
        _reset_conn(st, rx, c, R_ABORTED)
        return 0
    if c.state == ESTABLISHED or c.state == SYN_RECEIVED:
        c.fin_pending = 1
        c.state = FIN_WAIT_1
    elif c.state == CLOSE_WAIT:
        c.fin_pending = 1
        c.state = LAST_ACK
    else:
        return 0
    _output(st, rx, c)
    return 0


cdef int core_app_close(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil:
    """The application is done with the connection.  Unread data means the
    peer's bytes would be lost silently, so that is an abort (RFC 2525 §2.17);
    otherwise a graceful shutdown."""
    cdef Conn *c
    _stamp(st, rx, now)
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, handle)
    if c == NULL:
        return -1
    c.app_closed = 1
    if c.consumed_off < c.rcv_nxt_off:
        return core_app_abort(st, rx, handle, now)
    _fin_wait2_start(st, c)
    return core_app_shutdown(st, rx, handle, now)


cdef int core_app_abort(CoreState *st, Replica *rx, uint32_t handle, uint64_t now) noexcept nogil:
    cdef Conn *c
    _stamp(st, rx, now)
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, handle)
    if c == NULL:
        return -1
    if c.state != SYN_SENT and c.state != TIME_WAIT:
        _send_rst(st, rx, c, c.snd_nxt)
    if c.state == SYN_SENT:
        _reset_conn(st, rx, c, R_ABORTED)
    else:
        _notify(st, rx, handle, N_RESET, R_ABORTED)
        _release(st, rx, c, True)
    return 0


cdef inline uint32_t _clamp_buffer(uint64_t value, uint32_t limit) noexcept nogil:
    """A buffer size an application asks for, within [2 KiB, limit]: the
    runtime gives every connection buffers of the configured size, so a
    larger one would let the core accept bytes that overrun them."""
    if value > limit:
        return limit
    if value < 2048:
        return 2048
    return <uint32_t>value


cdef int core_app_setopt(CoreState *st, Replica *rx, uint32_t target, bint listener, uint32_t option,
                         uint64_t value, uint64_t now) noexcept nogil:
    """Set a socket option (OPT_*) on connection `target`, or on the listener
    of port `target` for the connections it will accept.  -1: no such
    target, or a value out of range (Linux's ranges)."""
    cdef Conn *c = NULL
    cdef Listener *l = NULL
    cdef int li
    _stamp(st, rx, now)
    if option == OPT_MAXSEG and value and (value < 88 or value > 65495):
        return -1
    if (option == OPT_KEEPIDLE or option == OPT_KEEPINTVL) and (value < 1 or value > 32767):
        return -1
    if option == OPT_KEEPCNT and (value < 1 or value > 127):
        return -1
    if listener:
        li = _find_listener(st, <uint16_t>target)
        if li < 0:
            return -1
        l = &st.listeners[li]
        if option == OPT_NODELAY:
            l.nodelay = value != 0
        elif option == OPT_MAXSEG:
            l.user_mss = <uint16_t>value
        elif option == OPT_RCVBUF:
            l.rcvbuf = _clamp_buffer(value, st.cfg.rcvbuf)
        elif option == OPT_SNDBUF:
            l.sndbuf = _clamp_buffer(value, st.cfg.sndbuf)
        elif option == OPT_KEEPALIVE:
            l.keepalive = value != 0
        elif option == OPT_KEEPIDLE:
            l.keep_idle_ns = value * SEC
        elif option == OPT_KEEPINTVL:
            l.keep_intvl_ns = value * SEC
        elif option == OPT_KEEPCNT:
            l.keep_cnt = <uint32_t>value
        else:
            return -1
        return 0
    # after _stamp: the timers it runs may have released the connection
    c = core_conn(st, target)
    if c == NULL:
        return -1
    if option == OPT_NODELAY:
        c.nagle = 0 if value else st.cfg.nagle
        _output(st, rx, c)          # a segment Nagle held back may go now
    elif option == OPT_MAXSEG:
        c.user_mss = <uint16_t>value
        if value and c.state >= ESTABLISHED and value < c.snd_mss:
            c.snd_mss = <uint16_t>value
            c.cc.mss = _smss(c)
    elif option == OPT_RCVBUF:
        c.rcv_buf = _clamp_buffer(value, st.cfg.rcvbuf)
    elif option == OPT_SNDBUF:
        c.snd_buf = _clamp_buffer(value, st.cfg.sndbuf)
    elif option == OPT_KEEPALIVE:
        c.keepalive = value != 0
        if c.keepalive:
            _keepalive_start(st, c)
        else:
            c.keep_at = 0
            c.keep_probes = 0
    elif option == OPT_KEEPIDLE:
        c.keep_idle_ns = value * SEC
        if c.keepalive and c.state >= ESTABLISHED and c.state != TIME_WAIT:
            # Linux: the timer restarts from the last segment received
            c.keep_at = c.last_rcv_ns + c.keep_idle_ns
            if c.keep_at < st.now_ns:
                c.keep_at = st.now_ns
            _arm(st, c.keep_at)
    elif option == OPT_KEEPINTVL:
        c.keep_intvl_ns = value * SEC
    elif option == OPT_KEEPCNT:
        c.keep_cnt = <uint32_t>value
    else:
        return -1
    return 0


# ---------------------------------------------------------------------------
# Digest
# ---------------------------------------------------------------------------

cdef uint64_t core_digest(const CoreState *st) noexcept nogil:
    """SipHash of the replicated state: the header (up to `peer6`, the
    log's naming of IPv6 peers) and every live connection.  Two replicas at
    the same log position must agree."""
    cdef uint64_t h = siphash24(<const uint8_t *>st, <size_t>(<const uint8_t *>&st.peer6[0] - <const uint8_t *>st),
                                0x5eed, 0)
    cdef uint32_t i
    cdef const Conn *conns = <const Conn *>((<const uint8_t *>st) + st.conns_offset)
    for i in range(st.high_slot):
        if conns[i].in_use:
            h ^= siphash24(<const uint8_t *>&conns[i], sizeof(Conn), h, i)
    return h


# ---------------------------------------------------------------------------
# Python interface (control path, tests, tools).  The runtime's hot loops use
# the cdef functions above directly on `TcpCore.st` / `TcpCore.rx`.
# ---------------------------------------------------------------------------

from collections import namedtuple
import ipaddress

from misdtcp.wire.drops import DROP_NAMES

SLOT_MASK = HANDLE_SLOT_MASK        # handle & SLOT_MASK: the connection's slot

# `index`: the segment's place in the connection's data-segment order (None
# for ACKs and control segments); `ordered`: its owner differs from the
# previous segment's, so it is written only after that one.
Transmit = namedtuple("Transmit", "handle header source offset length gso_size retransmit index ordered")
Transmit.__doc__ = ("Send `header` followed by `length` payload bytes taken from `source` "
                    "('stream': the connection's send stream at `offset`; 'frame': the input "
                    "frame at `offset`; 'none').")
Copy = namedtuple("Copy", "handle frame_offset stream_offset length")
Copy.__doc__ = "Copy frame[frame_offset:+length] to the receive stream at stream_offset."
Notify = namedtuple("Notify", "handle event value")
Notify.__doc__ = "Tell the application `event` about connection `handle`."

_SOURCES = {TX_PAYLOAD_NONE: "none", TX_PAYLOAD_STREAM: "stream", TX_PAYLOAD_FRAME: "frame"}
CONN_OPTIONS = {"nodelay": OPT_NODELAY, "maxseg": OPT_MAXSEG, "rcvbuf": OPT_RCVBUF, "sndbuf": OPT_SNDBUF,
                "keepalive": OPT_KEEPALIVE, "keepidle": OPT_KEEPIDLE, "keepintvl": OPT_KEEPINTVL,
                "keepcnt": OPT_KEEPCNT}
_CC = {"reno": CC_RENO, "cubic": CC_CUBIC}


class CoreConfigError(ValueError):
    """A TcpCore option is out of range."""


def _addr(value):
    try:
        return int(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise CoreConfigError(f"{value!r} is not an IPv4 address") from None


def _addr6(value):
    """The 16 bytes of an IPv6 address (a string or an IPv6Address)."""
    try:
        return ipaddress.IPv6Address(value).packed
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise CoreConfigError(f"{value!r} is not an IPv6 address") from None


def _remote(value):
    """(IPv4 address as an int, None) or (its last 32 bits, the 16 bytes) of
    an address of either family."""
    try:
        a = ipaddress.ip_address(value)
    except ValueError:
        raise CoreConfigError(f"{value!r} is not an IP address") from None
    if a.version == 4:
        return int(a), None
    return int.from_bytes(a.packed[12:], "big"), a.packed


cdef str _conn_remote(Conn *c):
    if c.v6:
        return str(ipaddress.IPv6Address(bytes(c.raddr6[:16])))
    return str(ipaddress.IPv4Address(c.raddr))


def window_scale_for(rcvbuf):
    """Smallest RFC 7323 shift that lets a 16-bit window field cover rcvbuf."""
    shift = 0
    while (65535 << shift) < rcvbuf and shift < 14:
        shift += 1
    return shift


cdef class TcpCore:
    """One replica of the TCP core.

    Every method that takes `now` is an event; it returns the actions this
    replica owns as `Transmit`, `Copy` and `Notify` tuples (the runtime uses
    the C-level interface instead and never builds these objects).
    """

    def __cinit__(self, local_address="10.77.0.2", *, local_address6=None, mss=1460, rcvbuf=4 << 20,
                  sndbuf=4 << 20,
                  max_connections=1024, cc="cubic", timestamps=True, sack=True, nagle=True,
                  syn_cookies=True, gso_max=0, backlog=128, challenge_ack_limit=1000,
                  msl_ms=30000, delack_ms=40, rto_min_ms=200, rto_max_ms=60000,
                  rto_initial_ms=1000, max_retries=15, synack_retries=5, burst=64, secret=0,
                  fin_wait2_timeout_ms=60000, invalid_ratelimit_ms=500, rfc1337=False,
                  replica=0, replicas=1, stripe=16384, send_stripe=262144, action_capacity=4096,
                  state_buffer=None, attach=False, fast_path=True):
        cdef CoreConfig cfg
        cdef uint64_t size
        cdef unsigned char[::1] view
        self.st = NULL
        self.rx.actions = NULL
        self.owns_state = False
        memset(&cfg, 0, sizeof(cfg))
        cfg.local_addr = _addr(local_address)
        if local_address6 is not None:
            address6 = _addr6(local_address6)
            if bad_source6(address6) or address6[0] == 0xfe and address6[1] & 0xc0 == 0x80:
                raise CoreConfigError(f"{local_address6} cannot be the stack's IPv6 address "
                                      "(unspecified, loopback, multicast, IPv4-mapped or link-local)")
            memcpy(cfg.local_addr6, <const char *>address6, 16)
            cfg.ipv6 = 1
        if not 88 <= mss <= 65495 or local_address6 is not None and mss < 1240:
            raise CoreConfigError(f"mss {mss} is outside {88 if local_address6 is None else 1240}..65495"
                                  + ("" if local_address6 is None else " (IPv6 needs an MTU of at least 1280)"))
        if not 1 <= max_connections <= (1 << 20):
            raise CoreConfigError(f"max_connections {max_connections} is outside 1..{1 << 20}")
        if not 2048 <= rcvbuf <= (1 << 30) or not 2048 <= sndbuf <= (1 << 30):
            raise CoreConfigError("rcvbuf and sndbuf must be between 2 KiB and 1 GiB")
        if cc not in _CC:
            raise CoreConfigError(f"congestion control {cc!r} is not one of {sorted(_CC)}")
        if not 1 <= replicas <= 256 or not 0 <= replica < replicas:
            raise CoreConfigError(f"replica {replica} of {replicas} is not valid")
        if stripe < 512 or send_stripe < 512:
            raise CoreConfigError(f"stripe {min(stripe, send_stripe)} is below 512 bytes")
        if not 64 <= action_capacity <= (1 << 20):
            raise CoreConfigError("action_capacity must be between 64 and 1048576")
        cfg.max_conns = max_connections
        cfg.rcvbuf = rcvbuf
        cfg.sndbuf = sndbuf
        cfg.mss = mss
        cfg.rcv_wscale = window_scale_for(rcvbuf)
        cfg.cc_algo = _CC[cc]
        cfg.timestamps = bool(timestamps)
        cfg.sack = bool(sack)
        cfg.nagle = bool(nagle)
        cfg.syn_cookies = bool(syn_cookies)
        cfg.rfc1337 = bool(rfc1337)
        cfg.gso_max = min(int(gso_max), 65535 - 40 - 40)
        cfg.backlog_default = backlog
        cfg.challenge_ack_limit = challenge_ack_limit
        cfg.msl_ns = int(msl_ms * 1e6)
        cfg.delack_ns = int(delack_ms * 1e6)
        cfg.rto_min_ns = int(rto_min_ms * 1e6)
        cfg.rto_max_ns = int(rto_max_ms * 1e6)
        cfg.rto_initial_ns = int(rto_initial_ms * 1e6)
        cfg.max_retries = max_retries
        cfg.synack_retries = synack_retries
        cfg.burst = burst
        cfg.fin_wait2_ns = int(fin_wait2_timeout_ms * 1e6)
        cfg.oow_interval_ns = int(invalid_ratelimit_ms * 1e6)
        cfg.secret0 = (secret * 0x9e3779b97f4a7c15) & 0xffffffffffffffff
        cfg.secret1 = (secret ^ 0x5851f42d4c957f2d) & 0xffffffffffffffff
        size = core_state_size(&cfg)
        if state_buffer is None:
            self.st = <CoreState *>calloc(1, size)
            if self.st == NULL:
                raise MemoryError()
            self.owns_state = True
            core_init(self.st, &cfg)
        else:
            view = state_buffer
            if <uint64_t>view.shape[0] < size:
                raise CoreConfigError(f"state buffer of {view.shape[0]} bytes is smaller than {size}")
            self._keepalive = state_buffer
            self.st = <CoreState *>&view[0]
            if attach:
                if self.st.magic != MAGIC or self.st.size != size:
                    raise CoreConfigError("state buffer does not hold a core state of this configuration")
            else:
                core_init(self.st, &cfg)
        self.rx.replica = replica
        self.rx.replicas = replicas
        self.rx.fast_path = fast_path
        self.rx.fast_path_hits = 0
        self.rx.stripe = stripe
        self.rx.send_stripe = send_stripe
        self.rx.capacity = action_capacity
        self.rx.nactions = 0
        self.rx.overflow = 0
        self.rx.actions = <Action *>malloc(action_capacity * sizeof(Action))
        if self.rx.actions == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.owns_state and self.st != NULL:
            free(self.st)
        self.st = NULL
        if self.rx.actions != NULL:
            free(self.rx.actions)
            self.rx.actions = NULL

    @staticmethod
    def state_size(**config):
        """Bytes needed by the replicated state of a core with this config."""
        probe = TcpCore(**config)
        return probe.st.size

    cdef void _reset_actions(self) noexcept nogil:
        self.rx.nactions = 0

    cdef list _drain(self, const uint8_t *frame):
        cdef list out = []
        cdef uint32_t i
        cdef Action *a
        for i in range(self.rx.nactions):
            a = &self.rx.actions[i]
            if a.kind == ACT_TRANSMIT:
                out.append(Transmit(a.handle, PyBytes_FromStringAndSize(<char *>a.hdr, a.hdr_len),
                                    _SOURCES[a.code & 0x0f],
                                    a.frame_off if (a.code & 0x0f) == TX_PAYLOAD_FRAME else a.stream_off,
                                    a.length, a.gso_size, bool(a.code & TX_RETRANSMIT),
                                    a.pad if a.code & TX_SEQUENCED else None,
                                    bool(a.code & TX_ORDERED)))
            elif a.kind == ACT_COPY:
                out.append(Copy(a.handle, a.frame_off, a.stream_off, a.length))
            else:
                if a.code == N_RESET:
                    value = RESET_NAMES.get(a.stream_off, a.stream_off)
                else:
                    value = a.stream_off
                out.append(Notify(a.handle, NOTIFY_NAMES[a.code], value))
        self.rx.nactions = 0
        return out

    # --- events -----------------------------------------------------------

    def frame(self, data, uint64_t now, uint32_t flags=0, uint32_t gso_size=0):
        """A frame arrives from the device."""
        cdef const unsigned char[::1] view = data
        cdef const uint8_t *p = &view[0] if view.shape[0] else <const uint8_t *>b""
        self.rx.nactions = 0
        core_frame(self.st, &self.rx, p, <uint32_t>view.shape[0], flags, gso_size, now)
        return self._drain(p)

    def tick(self, uint64_t now):
        self.rx.nactions = 0
        core_tick(self.st, &self.rx, now)
        return self._drain(NULL)

    def listen(self, int port, uint64_t now=0, int backlog=0):
        self.rx.nactions = 0
        if not 1 <= port <= 65535:
            raise CoreConfigError(f"port {port} is outside 1..65535")
        if core_app_listen(self.st, &self.rx, port, backlog, now) != 0:
            raise CoreConfigError(f"port {port} is already listening or no listener slot is free")
        return self._drain(NULL)

    def unlisten(self, int port, uint64_t now=0):
        self.rx.nactions = 0
        core_app_unlisten(self.st, &self.rx, port, now)
        return self._drain(NULL)

    def connect(self, raddr, int rport, int lport, uint64_t now=0, uint64_t tag=0, int mss=0, uint32_t rcvbuf=0):
        """Active open to an address of either family; `mss` (TCP_MAXSEG) and
        `rcvbuf` (SO_RCVBUF) are the options the SYN must already reflect
        (0: defaults)."""
        cdef bytes packed
        self.rx.nactions = 0
        if not 0 <= mss <= 65495:
            raise CoreConfigError(f"mss {mss} is outside 0..65495")
        low, packed = _remote(raddr)
        core_app_connect(self.st, &self.rx, tag, low, NULL if packed is None else <const uint8_t *>packed,
                         rport, lport, mss, rcvbuf, now)
        return self._drain(NULL)

    def setopt(self, uint32_t target, option, uint64_t value, uint64_t now=0, bint listener=False):
        """Set socket option `option` (a name in CONN_OPTIONS) on connection
        `target`, or on the listener of port `target`.  Returns whether the
        core took it, and the actions (a segment Nagle held may go)."""
        self.rx.nactions = 0
        if option not in CONN_OPTIONS:
            raise CoreConfigError(f"unknown socket option {option!r} (one of {', '.join(CONN_OPTIONS)})")
        ok = core_app_setopt(self.st, &self.rx, target, listener, CONN_OPTIONS[option], value, now) == 0
        return ok, self._drain(NULL)

    def accepted(self, uint32_t conn, uint64_t now=0):
        self.rx.nactions = 0
        core_app_accepted(self.st, &self.rx, conn, now)
        return self._drain(NULL)

    def consumed(self, uint32_t conn, uint64_t offset, uint64_t now=0):
        self.rx.nactions = 0
        core_app_consumed(self.st, &self.rx, conn, offset, now)
        return self._drain(NULL)

    def send(self, uint32_t conn, uint64_t upto, uint64_t now=0, bint urgent=False):
        self.rx.nactions = 0
        core_app_send(self.st, &self.rx, conn, upto, urgent, now)
        return self._drain(NULL)

    def shutdown(self, uint32_t conn, uint64_t now=0):
        self.rx.nactions = 0
        core_app_shutdown(self.st, &self.rx, conn, now)
        return self._drain(NULL)

    def close(self, uint32_t conn, uint64_t now=0):
        self.rx.nactions = 0
        core_app_close(self.st, &self.rx, conn, now)
        return self._drain(NULL)

    def abort(self, uint32_t conn, uint64_t now=0):
        self.rx.nactions = 0
        core_app_abort(self.st, &self.rx, conn, now)
        return self._drain(NULL)

    # --- inspection -------------------------------------------------------

    def digest(self):
        return core_digest(self.st)

    @property
    def next_timer(self):
        """Absolute time (ns) of the earliest armed timer, or 0."""
        return self.st.next_timer_ns

    @property
    def connection_count(self):
        return self.st.nconns

    @property
    def action_overflow(self):
        return self.rx.overflow

    def listeners(self):
        """The active listeners: port, backlog, pending (SYN-RECEIVED and
        established-not-accepted connections counted against the backlog)."""
        cdef uint32_t i
        return [{"port": self.st.listeners[i].port, "backlog": self.st.listeners[i].backlog,
                 "pending": self.st.listeners[i].pending}
                for i in range(MAX_LISTENERS) if self.st.listeners[i].active]

    def hash_bucket(self, raddr, int rport, int lport):
        """The connection-hash bucket a 4-tuple's lookup starts from (tests)."""
        cdef bytes packed
        low, packed = _remote(raddr)
        return _tuple_hash(self.st, low, NULL if packed is None else <const uint8_t *>packed, rport,
                           lport) & self.st.hash_mask

    @property
    def local_address6(self):
        """The stack's IPv6 address, or None when it speaks IPv4 only."""
        if not self.st.cfg.ipv6:
            return None
        return str(ipaddress.IPv6Address(bytes(self.st.cfg.local_addr6[:16])))

    @property
    def fast_path_hits(self):
        """Segments this replica's in-order fast path took."""
        return self.rx.fast_path_hits

    def drops(self):
        """Drop counters by reason (only non-zero ones)."""
        return {DROP_NAMES[i]: self.st.drops[i] for i in range(1, DROP_REASON_COUNT) if self.st.drops[i]}

    def stats(self):
        return dict(self.st.stats)

    def connections(self):
        cdef uint32_t i
        cdef Conn *conns = _conns(self.st)
        return [_handle(&conns[i], i) for i in range(self.st.high_slot) if conns[i].in_use]

    def conn(self, uint32_t handle):
        """The replicated state of one connection as a dict (None if gone)."""
        cdef Conn *c = core_conn(self.st, handle)
        if c == NULL:
            return None
        d = dict(c[0])
        d["state"] = STATE_NAMES[c.state]
        d["remote"] = (_conn_remote(c), c.rport)
        d["raddr6"] = bytes(c.raddr6[:16]) if c.v6 else None
        d["ooo_ranges"] = [(c.ooo.start[i], c.ooo.end[i]) for i in range(c.ooo.n)]
        d["sacked_ranges"] = [(c.sacked.start[i], c.sacked.end[i]) for i in range(c.sacked.n)]
        d["cwnd"] = c.cc.cwnd
        d["ssthresh"] = c.cc.ssthresh
        return d

    def state_bytes(self):
        """A copy of the whole replicated state (to restore a replica)."""
        return PyBytes_FromStringAndSize(<char *>self.st, self.st.size)

    def load_state(self, data):
        """Replace this replica's state with a copy taken by state_bytes()."""
        cdef const unsigned char[::1] view = data
        if <uint64_t>view.shape[0] != self.st.size:
            raise CoreConfigError("state snapshot has the wrong size for this core")
        if (<const CoreState *>&view[0]).magic != MAGIC:
            raise CoreConfigError("state snapshot is not a misdtcp core state")
        memcpy(self.st, &view[0], self.st.size)


# ---------------------------------------------------------------------------
# Micro-benchmark helpers (bench/micro_core.py).  They run the C loop with no
# Python object per frame, so pyperf measures the core alone.
# ---------------------------------------------------------------------------

def bench_frames(TcpCore core, uint32_t handle, frames_blob, offsets, uint64_t n_frames,
                 order=None, uint32_t flags=FRAME_CSUM_VALID, uint32_t consume_every=32,
                 uint64_t step_ns=1000):
    """Feed n_frames data frames of connection `handle` through core_frame.

    frames_blob holds prebuilt IPv4/TCP data frames of equal payload length
    at `offsets` (plus the blob end); their sequence numbers are rewritten in
    place so the stream continues from the connection's rcv_nxt.  `order`
    permutes each group of len(order) frames (e.g. [1, 2, 3, 0]: three
    out-of-order frames, then the hole fill).  Every `consume_every` frames
    the application consumes everything received, so the window never
    closes.  Copy actions are produced but not applied; the action list is
    reset after every frame.  Returns the number of actions produced."""
    cdef unsigned char[::1] blob = frames_blob
    cdef Conn *c = core_conn(core.st, handle)
    cdef uint32_t nf = len(offsets) - 1
    cdef uint32_t[::1] offs
    cdef uint32_t[::1] perm
    cdef uint32_t group, i, k, off, flen, plen, ihl, seq0
    cdef uint64_t n, produced = 0, now
    if c == NULL:
        raise ValueError("no such connection")
    if nf == 0:
        raise ValueError("no frames")
    import array
    offs = array.array("I", offsets)
    perm = array.array("I", order if order is not None else [0])
    group = perm.shape[0]
    ihl = (blob[offs[0]] & 0x0f) * 4
    plen = offs[1] - offs[0] - ihl - (blob[offs[0] + ihl + 12] >> 4) * 4
    now = core.st.now_ns
    with nogil:
        seq0 = c.rcv_nxt
        n = 0
        while n < n_frames:
            for k in range(group):
                if n >= n_frames:
                    break
                i = <uint32_t>((n - k + perm[k]) % nf)
                off = offs[i]
                flen = offs[i + 1] - off
                wr32(&blob[off + ihl + 4], seq0 + <uint32_t>((n - k + perm[k]) * plen))
                now += step_ns
                core_frame(core.st, &core.rx, &blob[off], flen, flags, 0, now)
                produced += core.rx.nactions
                core.rx.nactions = 0
                n += 1
            if consume_every and n % consume_every < group:
                core_app_consumed(core.st, &core.rx, handle, c.rcv_nxt_off, now)
                core.rx.nactions = 0
    return produced


def bench_descriptors(TcpCore core, uint32_t handle, uint64_t n_descriptors, uint32_t segment=1448,
                      uint32_t segments=1, uint32_t consume_every=32, uint64_t step_ns=1000):
    """Feed n_descriptors in-order segment descriptors of connection `handle`
    through core_entry: what a replica does per descriptor of the log, with
    no frame to parse.  Each carries `segments` segments of `segment` bytes
    (coalesced when > 1).  Every `consume_every` descriptors the application
    consumes everything received.  Copy actions are produced but not
    applied; the action list is reset after every descriptor.  Returns the
    number of actions produced."""
    cdef Conn *c = core_conn(core.st, handle)
    cdef Descriptor d
    cdef uint64_t i, produced = 0
    if c == NULL:
        raise ValueError("no such connection")
    memset(&d, 0, sizeof(d))
    d.tcp_flags = TH_ACK
    d.window = 65535
    d.segments = <uint16_t>segments
    d.saddr = c.raddr
    d.sport = c.rport
    d.dport = c.lport
    d.ack = c.snd_una
    d.seg_flags = SEG_TS if c.ts_ok else 0
    d.tsval = c.ts_recent
    d.length = segment * segments
    d.gso_size = <uint16_t>(segment if segments > 1 else 0)
    d.now_ns = core.st.now_ns
    with nogil:
        for i in range(n_descriptors):
            d.seq = c.rcv_nxt
            d.now_ns += step_ns
            core_entry(core.st, &core.rx, &d)
            produced += core.rx.nactions
            core.rx.nactions = 0
            if consume_every and (i + 1) % consume_every == 0:
                core_app_consumed(core.st, &core.rx, handle, c.rcv_nxt_off, d.now_ns)
                core.rx.nactions = 0
    return produced


def bench_acks(TcpCore core, uint32_t handle, uint64_t n):
    """Build n pure ACKs (window, timestamps, SACK blocks if any) for
    `handle`, resetting the action list each time."""
    cdef Conn *c = core_conn(core.st, handle)
    cdef uint64_t i
    if c == NULL:
        raise ValueError("no such connection")
    with nogil:
        for i in range(n):
            _send_ack(core.st, &core.rx, c)
            core.rx.nactions = 0
    return n
