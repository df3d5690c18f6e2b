# cython: language_level=3
"""The executor: carries out the actions one replica of the core owns.

Every strategy runs records through the same executor (runtime/loops.pyx);
a record first goes through the core (``apply_record``: the replicated work),
then its actions are carried out (``run_actions``: the owned work):

* ``ACT_COPY``      memcpy from the frame (still in ring memory) to the
                    connection's shared receive buffer at stream offset % size;
* ``ACT_TRANSMIT``  builds virtio header + headers + payload and hands it,
                    through the output frame stages (faults, pcap), to the
                    sink: writev(2) on the device (a TUN, or this worker's own
                    packet socket, with the Ethernet header in front of the
                    IP packet), a capture area, or nothing;
* ``ACT_NOTIFY``    READABLE updates this worker's copy progress for the
                    connection (the application reads up to the minimum over
                    workers); WRITABLE the acknowledged send offset; lifecycle
                    events go to the application's event queue, from worker 0
                    only (every replica sees every event).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset

from misdtcp._system cimport (atomic_fence_seq_cst, atomic_load_acquire_u32, atomic_load_acquire_u64,
                              atomic_store_release_u64, atomic_store_release_u32, iovec, mmsghdr, monotonic_ns,
                              prefetch, sendmmsg, writev)
from misdtcp._tcpcore cimport (TcpCore, CoreState, Replica, Action, ACT_TRANSMIT, ACT_COPY, ACT_NOTIFY,
                               TX_PAYLOAD_FRAME, TX_SEQUENCED, TX_ORDERED,
                               NO_CONN, Conn, core_conn, N_ACCEPTED, N_CONNECTED,
                               N_READABLE, N_WRITABLE, handle_slot, core_frame, core_entry, core_dropped,
                               core_tick, core_app_listen,
                               core_app_unlisten, core_app_connect, core_app_accepted, core_app_consumed,
                               core_app_send, core_app_shutdown, core_app_close, core_app_abort, core_app_setopt,
                               core_digest, core_peer6)
from misdtcp._ring cimport BroadcastRing, Ring, ring_bytes, ring_data, ring_descriptor, ring_release
from misdtcp.wire.descriptor cimport Descriptor, peer6_of
from misdtcp.wire.frame cimport FRAME_STRIDED
from misdtcp.frameio.faults cimport FaultInjector
from misdtcp.frameio.pcap cimport PcapWriter, pcap_flush
from misdtcp.frameio.stages cimport stages_apply, stages_release_due
from misdtcp.runtime.conntable cimport conntable_publish
from misdtcp.runtime.layout cimport (ConnShare, DIGEST_SLOTS, layout_acked, layout_capture, layout_progress,
                                     layout_sent, layout_shares, progress_offset_of, progress_word)
from misdtcp.runtime.queue cimport Message, MessageQueue, mq_post, mq_try_post
from misdtcp.runtime.readiness cimport READY_READ, READY_WRITE, ready_signal, ready_touch
from misdtcp.runtime.shm cimport MirroredBuffer, mirror_map
from misdtcp.runtime.vocabulary cimport (REC_FRAME, REC_REQUEST, REC_TICK, REC_DIGEST, REC_STOP,
                                         REC_CHECKPOINT, REC_SEGMENT, REC_DROPPED, REC_PEER6, REQ_LISTEN, REQ_CONNECT,
                                         REQ_ACCEPTED, REQ_CONSUMED, REQ_SEND, REQ_SHUTDOWN, REQ_CLOSE, REQ_ABORT,
                                         REQ_UNLISTEN, REQ_SETOPT, REQ_CONNECT6)
from misdtcp.runtime.wait cimport WAIT_READY, WAIT_SPIN, WAIT_STOPPED, WAIT_TIMEOUT_NS, ec_notify, wait_for
from misdtcp.wire.checksum cimport csum_partial, csum_finish, csum_pseudo_v4, csum_pseudo_v6
from misdtcp.wire.bytes cimport rd32
from misdtcp.wire.ipv4 cimport IP_SOURCE, IP_DESTINATION, IPPROTO_TCP
from misdtcp.wire.ipv6 cimport IP6_SOURCE, IP6_DESTINATION
from misdtcp.wire.tcp cimport TCP_CHECKSUM
from misdtcp.wire.ethernet cimport ETH_HLEN
from misdtcp.wire.vnet cimport (virtio_net_hdr, VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_TCPV6,
                                vnet_clear, vnet_is_gso)

# Worker 0 publishes the core's statistics for `misdtcp serve` this often.
cdef uint64_t STATS_EVERY_NS = 20000000ULL
# An ACCEPTED or CONNECTED event about an IPv6 peer says so in Message.a (see _post_event).
cdef uint64_t EVENT_PEER6 = 1ULL << 63


cdef inline char *_receive_buffer(Exec *x, uint32_t slot) noexcept nogil:
    cdef int err = 0
    if x.rcv_maps[slot] == NULL:
        x.rcv_maps[slot] = mirror_map(x.rcv_fd, <uint64_t>slot * x.rcvbuf, x.rcvbuf, &err)
    return x.rcv_maps[slot]


cdef inline char *_send_buffer(Exec *x, uint32_t slot) noexcept nogil:
    cdef int err = 0
    if x.snd_maps[slot] == NULL:
        x.snd_maps[slot] = mirror_map(x.snd_fd, <uint64_t>slot * x.sndbuf, x.sndbuf, &err)
    return x.snd_maps[slot]


# -- outputs ------------------------------------------------------------------

cdef inline uint32_t _link_head(Exec *x, const uint8_t *frame, uint32_t head, uint8_t *out) noexcept nogil:
    """The headers of one Ethernet frame at `out`: the virtio-net header, the
    link header, the IP packet's first `head` - VNET_HDR_LEN bytes.  The
    virtio-net header's offsets count from the start of what the device
    takes, so they move past the link header (csum_start, and hdr_len of a
    GSO frame).  Returns the length."""
    cdef virtio_net_hdr *v = <virtio_net_hdr *>out
    memcpy(out, frame, VNET_HDR_LEN)
    if v.flags & VNET_F_NEEDS_CSUM:
        v.csum_start += ETH_HLEN
    if vnet_is_gso(v):
        v.hdr_len += ETH_HLEN
    memcpy(out + VNET_HDR_LEN, x.eth, ETH_HLEN)
    memcpy(out + VNET_HDR_LEN + ETH_HLEN, frame + VNET_HDR_LEN, head - VNET_HDR_LEN)
    return head + ETH_HLEN


cdef inline void _written_upto(Exec *x, uint32_t handle, uint32_t count, uint64_t *word) noexcept nogil:
    """Publish that the connection's data segments before `count` are written
    (the ordered hand-off between send owners, see _take_turn)."""
    if <int32_t>(count - _sent_count(word, handle)) > 0:
        atomic_store_release_u64(word, progress_word(handle, count))
        if x.nworkers > 1:
            ec_notify(&x.h.sent_wait.eventcount)


cdef void exec_flush_tx(Exec *x) noexcept nogil:
    """Hand the queued frames to the kernel: one sendmmsg for the lot (a
    packet socket takes each message as one frame, a GSO super-frame
    included), then tell the next send owner how far this connection's
    segments are written.  A frame the kernel refuses is counted in
    write_errors and skipped, as a failed writev is."""
    cdef TxQueue *q = &x.tx
    cdef uint32_t done = 0, i
    cdef int r
    if q.n == 0:
        return
    while done < q.n:
        r = sendmmsg(x.out_fd, &q.msgs[done], q.n - done, 0)
        if r <= 0:
            x.cnt.write_errors += 1
            done += 1
        else:
            done += <uint32_t>r
    x.cnt.tx_batches += 1
    for i in range(q.n):
        if q.word[i] != NULL:
            _written_upto(x, q.handle[i], q.count[i], q.word[i])
    q.n = 0


cdef inline bint _tx_queue(Exec *x, const uint8_t *frame, uint32_t head, const uint8_t *payload,
                           uint32_t length) noexcept nogil:
    """Queue one Ethernet frame (headers copied, the payload referenced where
    it lies: the send buffer, which nothing overwrites before the peer
    acknowledges it).  False when its headers do not fit a queue slot."""
    cdef TxQueue *q = &x.tx
    cdef uint32_t i
    if head + ETH_HLEN > TX_HEAD_ROOM:
        return False
    if q.n == TX_BATCH:
        exec_flush_tx(x)
    i = q.n
    q.iov[2 * i].iov_base = q.head[i]
    q.iov[2 * i].iov_len = _link_head(x, frame, head, q.head[i])
    q.iov[2 * i + 1].iov_base = <void *>payload
    q.iov[2 * i + 1].iov_len = length
    q.msgs[i].msg_hdr.msg_iov = &q.iov[2 * i]
    q.msgs[i].msg_hdr.msg_iovlen = 2 if length else 1
    q.word[i] = NULL
    q.n = i + 1
    return True


cdef long _device_write(Exec *x, const uint8_t *frame, uint32_t head, const uint8_t *payload,
                        uint32_t length) noexcept nogil:
    """Write one frame to the device with one writev and no copy: `head`
    bytes at `frame` (the virtio-net header, then the IP packet's headers, or
    all of it), then `length` payload bytes (straight from the send buffer).
    On an Ethernet device the link header goes between the virtio-net header
    and the IP packet (_link_head)."""
    cdef iovec iov[3]
    cdef uint8_t linked[TX_HEAD_ROOM]
    cdef int n
    if not x.ethernet:
        iov[0].iov_base = <void *>frame
        iov[0].iov_len = head
        iov[1].iov_base = <void *>payload
        iov[1].iov_len = length
        n = 2 if length else 1
    elif head + ETH_HLEN <= TX_HEAD_ROOM:
        iov[0].iov_base = linked
        iov[0].iov_len = _link_head(x, frame, head, linked)
        iov[1].iov_base = <void *>payload
        iov[1].iov_len = length
        n = 2 if length else 1
    else:
        # a whole frame out of the output stages: the link header apart
        iov[0].iov_base = linked
        iov[0].iov_len = _link_head(x, frame, VNET_HDR_LEN, linked)
        iov[1].iov_base = <void *>(frame + VNET_HDR_LEN)
        iov[1].iov_len = head - VNET_HDR_LEN
        iov[2].iov_base = <void *>payload
        iov[2].iov_len = length
        n = 3 if length else 2
    return writev(x.out_fd, iov, n)


cdef void _sink(void *context, uint8_t *buf, uint32_t n, uint32_t how) noexcept nogil:
    """Where a built frame ends: written to the device, kept in a capture
    area, or only counted.  It is the output frame stages' emitter."""
    cdef Exec *x = <Exec *>context
    cdef uint64_t need
    x.cnt.segments_sent += 1
    x.cnt.bytes_sent += n
    if x.sink == SINK_FD:
        if _device_write(x, buf, n, NULL, 0) < 0:
            x.cnt.write_errors += 1
    elif x.sink == SINK_CAPTURE:
        need = 4 + ((n + 3) & ~(<uint32_t>3))
        if x.cnt.capture_used + need > x.capture_size:
            x.cnt.capture_dropped += 1
            return
        memcpy(x.capture + x.cnt.capture_used, &n, 4)
        memcpy(x.capture + x.cnt.capture_used + 4, buf, n)
        x.cnt.capture_used += need


cdef inline void _emit(Exec *x, uint8_t *buf, uint32_t n) noexcept nogil:
    """Hand one frame (virtio header + IP packet) to the sink, through the
    output frame stages when there are any."""
    if x.out_stages.faults == NULL and x.out_stages.pcap == NULL:
        _sink(x, buf, n, 0)
    else:
        stages_apply(&x.out_stages, buf, n, monotonic_ns(), _sink, x)


cdef void exec_flush_held(Exec *x) noexcept nogil:
    """Frames held back by the output fault injector that are now due, and
    the frames queued for one sendmmsg."""
    stages_release_due(&x.out_stages, monotonic_ns(), _sink, x)
    exec_flush_tx(x)


cdef void exec_publish_stats(Exec *x, uint64_t now) noexcept nogil:
    """Worker 0 copies the core's replicated statistics and drop counters
    to shared memory for `misdtcp serve`'s report (about every 20 ms)."""
    if x.worker != 0 or now - x.stats_published_ns < STATS_EVERY_NS:
        return
    x.stats_published_ns = now
    memcpy(&x.h.core_stats, &x.st.stats, sizeof(x.st.stats))
    memcpy(&x.h.core_drops[0], &x.st.drops[0], sizeof(x.st.drops))
    conntable_publish(x.h, x.st, now)
    atomic_store_release_u64(&x.h.stats_ns, now)


cdef void exec_signal_ready(Exec *x) noexcept nogil:
    """End of a batch, after its progress is published: post READABLE/
    WRITABLE to applications that armed an interest this batch's progress
    satisfied (runtime/readiness.pxd)."""
    if x.readiness:
        ready_signal(x.h, x.events, &x.touched)


cdef inline ConnShare *_share(Exec *x, uint32_t handle) noexcept nogil:
    """This worker's counters for one connection (`misdtcp ss`), reset
    when the slot changes hands."""
    cdef ConnShare *s = &x.shares[handle_slot(handle)]
    if s.handle != handle:
        s.handle = handle
        s.bytes_copied = 0
        s.segments_sent = 0
        s.bytes_sent = 0
    return s


cdef inline bint _replaying(Exec *x) noexcept nogil:
    """A replacement applying records its dead predecessor had applied."""
    return x.floor_until != 0 and x.cur_seqno <= x.floor_until


ctypedef struct _Predecessors:
    const uint64_t *word
    uint32_t handle
    uint32_t index


cdef inline uint32_t _sent_count(const uint64_t *word, uint32_t handle) noexcept nogil:
    """Data segments of the connection written so far (mod 2^32); 0 while
    the word still belongs to an earlier connection of the slot."""
    return <uint32_t>progress_offset_of(handle, atomic_load_acquire_u64(word))


cdef bint _predecessors_written(void *context) noexcept nogil:
    cdef _Predecessors *p = <_Predecessors *>context
    return <int32_t>(_sent_count(p.word, p.handle) - p.index) >= 0


cdef bint _take_turn(Exec *x, Action *a, uint64_t *word) noexcept nogil:
    """A data segment's place in the connection's write order (the ordered
    hand-off between send owners, see the core's _emit_tcp).  Returns False
    when the segment must not be written: a replacement replaying records its
    predecessor already carried out finds it written."""
    cdef _Predecessors p
    p.word = word
    p.handle = a.handle
    p.index = a.pad
    if _replaying(x) and <int32_t>(_sent_count(word, a.handle) - a.pad) > 0:
        x.cnt.tx_skipped += 1
        return False
    if (a.code & TX_ORDERED) and not _predecessors_written(&p):
        # the previous owner has not written the segments before this one yet:
        # wait (it is behind in the log, never waiting for us -- so nothing of
        # ours may sit in the send queue meanwhile); after a timeout write
        # anyway -- order is what we want, not what we need
        exec_flush_tx(x)
        wait_for(_predecessors_written, &p, &x.h.sent_wait.eventcount, &x.h.stop, WAIT_SPIN,
                 WAIT_TIMEOUT_NS, &x.cnt.order_waits)
    return True


cdef inline void _written(Exec *x, Action *a, uint64_t *word) noexcept nogil:
    """Publish that the connection's segments up to this one are written."""
    _written_upto(x, a.handle, a.pad + 1, word)


cdef void _transmit(Exec *x, Action *a, const uint8_t *frame) noexcept nogil:
    """Build and hand over one segment.  Payload from the send stream goes to
    the device with writev straight from the shared send buffer (headers in
    one iovec, payload in the other: no bounce copy); only the capture sink
    and the output stages, which need the frame whole, get a copy."""
    cdef virtio_net_hdr *v = <virtio_net_hdr *>x.outbuf
    cdef uint8_t *pkt = x.outbuf + VNET_HDR_LEN
    cdef uint32_t total = a.hdr_len + a.length
    cdef const uint8_t *src = NULL
    cdef char *buf
    cdef uint64_t sum
    cdef uint16_t c
    cdef uint32_t l4
    cdef uint64_t *sent = NULL
    vnet_clear(v)
    memcpy(pkt, a.hdr, a.hdr_len)
    if a.length:
        if (a.code & 0x0f) == TX_PAYLOAD_FRAME:
            src = frame + a.frame_off
        else:
            buf = _send_buffer(x, handle_slot(a.handle))
            if buf == NULL:
                return
            src = <const uint8_t *>buf + (a.stream_off % x.sndbuf)     # mirrored: contiguous past the wrap
            if x.offload:
                # the header holds the pseudo-header sum: let the kernel finish
                v.flags = VNET_F_NEEDS_CSUM
                v.csum_start = a.csum_start
                v.csum_offset = TCP_CHECKSUM
                if a.gso_size:
                    # the kernel cuts it as TSO would (TUN_F_TSO4 / TUN_F_TSO6)
                    v.gso_type = VNET_GSO_TCPV6 if (pkt[0] >> 4) == 6 else VNET_GSO_TCPV4
                    v.gso_size = a.gso_size
                    v.hdr_len = a.hdr_len
            else:
                l4 = total - a.csum_start
                pkt[a.csum_start + TCP_CHECKSUM] = 0
                pkt[a.csum_start + TCP_CHECKSUM + 1] = 0
                if (pkt[0] >> 4) == 6:
                    sum = csum_pseudo_v6(pkt + IP6_SOURCE, pkt + IP6_DESTINATION, IPPROTO_TCP, l4)
                else:
                    sum = csum_pseudo_v4(pkt + IP_SOURCE, pkt + IP_DESTINATION, IPPROTO_TCP, l4)
                sum = csum_partial(pkt + a.csum_start, a.hdr_len - a.csum_start, sum)
                c = csum_finish(csum_partial(src, a.length, sum))
                memcpy(pkt + a.csum_start + TCP_CHECKSUM, &c, 2)
    if a.code & TX_SEQUENCED:
        sent = &x.sent[handle_slot(a.handle)]
        if not _take_turn(x, a, sent):
            return
    if x.sink == SINK_FD and x.out_stages.faults == NULL and x.out_stages.pcap == NULL:
        x.cnt.segments_sent += 1
        x.cnt.bytes_sent += VNET_HDR_LEN + total
        # a packet ring: queued for the batch's sendmmsg, unless its payload
        # lies in the input frame (ICMP), which may go back to the kernel
        # before the batch ends
        if x.batch_tx and (a.code & 0x0f) != TX_PAYLOAD_FRAME and \
                _tx_queue(x, x.outbuf, VNET_HDR_LEN + a.hdr_len, src, a.length):
            if sent != NULL:
                # the next owner learns this segment is written once it is
                x.tx.word[x.tx.n - 1] = sent
                x.tx.handle[x.tx.n - 1] = a.handle
                x.tx.count[x.tx.n - 1] = a.pad + 1
            return
        exec_flush_tx(x)
        if _device_write(x, x.outbuf, VNET_HDR_LEN + a.hdr_len, src, a.length) < 0:
            x.cnt.write_errors += 1
    else:
        if a.length:
            memcpy(pkt + a.hdr_len, src, a.length)
        _emit(x, x.outbuf, VNET_HDR_LEN + total)
    if sent != NULL:
        _written(x, a, sent)


cdef void _post_event(Exec *x, uint32_t kind, uint32_t handle, uint64_t value) noexcept nogil:
    """Announce a lifecycle event to the application.

    A full queue is back-pressure, never a reason to drop: the worker waits
    for room (its heartbeat says it is waiting, not hung), and so the log,
    the sequencer and finally the peer wait with it.  The queue's only
    reader is the API's event thread, which never waits for anything a
    worker does (docs/DESIGN.md, "Back-pressure"), so this cannot deadlock;
    it gives up only when the stack stops."""
    cdef Message message
    cdef Conn *peer
    cdef int rc
    cdef uint32_t index
    if not x.post_events:
        return
    # every event carries the record it came from and its index there, so a
    # replacement can tell from the queue itself exactly what was announced
    if x.cur_seqno != x.event_record:
        x.event_record = x.cur_seqno
        x.event_index = 0
    index = x.event_index
    x.event_index += 1
    if x.events_after_seqno and (x.cur_seqno < x.events_after_seqno or
                                 (x.cur_seqno == x.events_after_seqno and index <= x.events_after_index)):
        return                      # a replacement replaying what its predecessor announced
    message.kind = kind
    message.handle = handle
    message.a = value
    message.b = 0
    message.c = 0
    if kind == N_ACCEPTED or kind == N_CONNECTED:
        # the application learns who the peer is with the connection itself
        # (accept() returns the address): IPv4: b = raddr << 16 | rport,
        # c = lport; IPv6: a = value | rport << 32 | EVENT_PEER6, b and c the
        # address's halves (value: the listener's port, which is lport, or
        # the application's tag, below 2^32; it knows the lport it chose)
        peer = core_conn(x.st, handle)
        if peer != NULL:
            if peer.v6:
                message.a = (value & 0xffffffffULL) | (<uint64_t>peer.rport << 32) | EVENT_PEER6
                message.b = (<uint64_t>rd32(peer.raddr6) << 32) | rd32(peer.raddr6 + 4)
                message.c = (<uint64_t>rd32(peer.raddr6 + 8) << 32) | rd32(peer.raddr6 + 12)
            else:
                message.b = (<uint64_t>peer.raddr << 16) | peer.rport
                message.c = peer.lport
    message.record = x.cur_seqno
    message.index = index
    if not mq_try_post(x.events, &message):
        x.cnt.event_waits += 1
        while True:
            x.cnt.heartbeat_ns = monotonic_ns()
            rc = mq_post(x.events, &message, WAIT_SPIN, WAIT_TIMEOUT_NS)
            if rc == WAIT_READY:
                break
            if rc == WAIT_STOPPED or atomic_load_acquire_u32(&x.h.stop):
                return              # stopping: nobody reads events any more
    x.cnt.events_posted += 1
    # what recovery reads when the event is no longer in the queue to be
    # found (the queue also carries other workers' readiness messages)
    x.cnt.announced_record = message.record
    x.cnt.announced_index = message.index


cdef inline void _hold(Exec *x, uint64_t *word, uint64_t value) noexcept nogil:
    """A progress word to publish at the end of the batch: a batch of
    descriptors costs one store per connection, not one per segment (and the
    line that carries it moves between cores once)."""
    cdef uint32_t i
    for i in range(x.nheld):
        if x.held[i].word == word:
            x.held[i].value = value
            return
    if x.nheld == MAX_STORES:
        exec_publish_progress(x)
    x.held[x.nheld].word = word
    x.held[x.nheld].value = value
    x.nheld += 1


cdef void exec_publish_progress(Exec *x) noexcept nogil:
    """Publish the progress held back during the batch (release stores: the
    copies and state before them are visible to whoever reads the word).
    Frames queued for sendmmsg go first: every loop publishes at the end of
    a batch, and none of them may sleep with frames still queued."""
    cdef uint32_t i
    exec_flush_tx(x)
    for i in range(x.nheld):
        atomic_store_release_u64(x.held[i].word, x.held[i].value)
    x.nheld = 0


cdef inline uint64_t _done_before(const uint64_t *floor, uint32_t handle) noexcept nogil:
    """How far a dead predecessor had done (and published) this connection's
    work, from the word it last published for the connection's slot: its
    offset when the word is this connection's; everything when the word
    belongs to a newer connection in the slot (the predecessor went past
    this one entirely); nothing when it belongs to an older one.  Handle
    generations are 12 bits and only grow (mod 4096)."""
    cdef uint64_t word = floor[handle_slot(handle)]
    cdef uint32_t gen = (handle >> 20) & 0xfff
    cdef uint32_t word_gen = <uint32_t>(word >> 48) & 0xfff
    if word == 0:
        return 0
    if word_gen == gen:
        return word & 0xffffffffffffULL
    if ((word_gen - gen) & 0xfff) < 0x800:
        return <uint64_t>-1
    return 0


cdef void _copy_strided(Exec *x, char *dst, uint64_t off, const uint8_t *frame, uint32_t frame_off,
                        uint32_t n) noexcept nogil:
    """A copy out of a FRAME_STRIDED run: byte `frame_off` of the run's
    payload is byte frame_off % unit of segment frame_off // unit, and the
    segments lie one device slot apart from `frame` (the first one's
    payload).  Each piece goes straight from its slot to its place in the
    receive buffer (mirrored: contiguous past the wrap)."""
    cdef uint32_t unit = x.strided_unit, within, k
    cdef uint64_t stride = x.ring.device_stride
    while n:
        within = frame_off % unit
        k = unit - within
        if k > n:
            k = n
        memcpy(dst + (off % x.rcvbuf), frame + (frame_off // unit) * stride + within, k)
        off += k
        frame_off += k
        n -= k


cdef void exec_run_actions(Exec *x, const uint8_t *frame) noexcept nogil:
    """Carry out the actions the last event left in this replica's list.

    A replacement replaying what its predecessor had done skips the copies
    below the progress the predecessor published (they are done, and the
    application may have consumed them and the window admitted newer bytes
    at the same buffer place -- with another owner when rcvbuf / stripe is
    not a multiple of the worker count), and publishes no progress below it.
    Copies at or above it are redone: the application cannot have consumed
    them (it reads below every worker's progress), so nothing newer lies
    where they land."""
    cdef Replica *rx = x.rx
    cdef uint32_t i
    cdef Action *a
    cdef char *dst
    cdef ConnShare *share
    cdef uint64_t off, done
    cdef uint32_t n, frame_off
    for i in range(rx.nactions):
        a = &rx.actions[i]
        if a.kind == ACT_COPY:
            dst = _receive_buffer(x, handle_slot(a.handle))
            if dst != NULL:
                off = a.stream_off
                n = a.length
                frame_off = a.frame_off
                if x.copy_floor != NULL and _replaying(x):
                    done = _done_before(x.copy_floor, a.handle)
                    if off + n <= done:
                        continue
                    if off < done:
                        frame_off += <uint32_t>(done - off)
                        n -= <uint32_t>(done - off)
                        off = done
                if x.strided_unit:
                    _copy_strided(x, dst, off, frame, frame_off, n)
                else:
                    memcpy(dst + (off % x.rcvbuf), frame + frame_off, n)
                x.cnt.copies += 1
                x.cnt.bytes_copied += n
                _share(x, a.handle).bytes_copied += n
        elif a.kind == ACT_TRANSMIT:
            _transmit(x, a, frame)
            if a.handle != NO_CONN:
                share = _share(x, a.handle)
                share.segments_sent += 1
                share.bytes_sent += a.hdr_len + a.length
        elif a.kind != ACT_NOTIFY:
            pass                            # carried out already (the leader's hand-off)
        elif x.defer_progress:
            # mimd: published in log order once earlier records are done
            if x.npending < MAX_PENDING:
                x.pending_kind[x.npending] = a.code
                x.pending_handle[x.npending] = a.handle
                x.pending_value[x.npending] = a.stream_off
                x.npending += 1
        elif a.code == N_READABLE:
            # every copy of this worker up to a.stream_off is done (copies
            # come before the notify in the action list)
            if x.copy_floor == NULL or not _replaying(x) or a.stream_off > _done_before(x.copy_floor, a.handle):
                _hold(x, &x.progress[handle_slot(a.handle)], progress_word(a.handle, a.stream_off))
                ready_touch(&x.touched, a.handle, READY_READ)
        elif a.code == N_WRITABLE:
            if x.worker == 0 and (x.acked_floor == NULL or not _replaying(x)
                                  or a.stream_off > _done_before(x.acked_floor, a.handle)):
                _hold(x, &x.acked[handle_slot(a.handle)], progress_word(a.handle, a.stream_off))
                ready_touch(&x.touched, a.handle, READY_WRITE)
        else:
            # lifecycle events never overtake the progress before them
            exec_publish_progress(x)
            _post_event(x, a.code, a.handle, a.stream_off)
    if rx.overflow:
        x.cnt.action_overflow += rx.overflow
        rx.overflow = 0
    rx.nactions = 0


cdef void exec_note_latency(Exec *x, uint64_t stamped_ns) noexcept nogil:
    """Stamp-to-outputs-done time of a frame (live traffic only: one clock
    read per frame, reported by `misdtcp serve`)."""
    cdef uint64_t lat
    if x.measure_latency:
        lat = monotonic_ns() - stamped_ns
        x.cnt.latency_sum_ns += lat
        if lat > x.cnt.latency_max_ns:
            x.cnt.latency_max_ns = lat


cdef void exec_publish_pending(Exec *x) noexcept nogil:
    """mimd: publish the progress of a record once every earlier record's
    outputs are complete (the caller orders this by done_seqno)."""
    cdef uint32_t i
    for i in range(x.npending):
        if x.pending_kind[i] == N_READABLE:
            atomic_store_release_u64(&x.progress[handle_slot(x.pending_handle[i])],
                                     progress_word(x.pending_handle[i], x.pending_value[i]))
            ready_touch(&x.touched, x.pending_handle[i], READY_READ)
        elif x.pending_kind[i] == N_WRITABLE:
            atomic_store_release_u64(&x.acked[handle_slot(x.pending_handle[i])],
                                     progress_word(x.pending_handle[i], x.pending_value[i]))
            ready_touch(&x.touched, x.pending_handle[i], READY_WRITE)
        else:
            _post_event(x, x.pending_kind[i], x.pending_handle[i], x.pending_value[i])
    x.npending = 0


# -- one record -----------------------------------------------------------------

cdef void _checkpoint(Exec *x) noexcept nogil:
    """Snapshot this replica's state into the older of its two slots, then let
    the ring reclaim everything before this point: a replacement loads the
    snapshot and replays from exactly here.

    The slot's recorded position is cleared before its bytes are overwritten
    and set again only after the copy (release): a worker that dies in the
    middle of the copy leaves a slot that claims no position, so recovery
    never loads half a snapshot; the other slot stays intact."""
    cdef uint32_t slot = 0
    if x.snapshots == NULL:
        return
    if x.cnt.snap_position[1] < x.cnt.snap_position[0]:
        slot = 1                             # 0 (nothing there) counts as the oldest
    atomic_store_release_u64(&x.cnt.snap_position[slot], 0)
    atomic_fence_seq_cst()                   # the invalidation is visible before any byte of the copy
    memcpy(x.snapshots + slot * x.snapshot_size, x.st, x.snapshot_size)
    atomic_store_release_u64(&x.cnt.snap_position[slot], x.loop_seqno)
    x.cnt.snapshots += 1
    x.release_seqno = x.loop_seqno           # set by run_misd before each descriptor
    x.release_data = x.loop_data


cdef void _digest(Exec *x, uint64_t rnd) noexcept nogil:
    """Publish this replica's state digest for round rnd and compare it with
    the other replicas that already published theirs."""
    cdef uint64_t d = core_digest(x.st)
    cdef uint32_t slot = rnd % DIGEST_SLOTS
    cdef uint32_t w
    x.h.digests[x.worker][slot] = d
    atomic_store_release_u64(&x.h.digest_rounds[x.worker][slot], rnd + 1)
    x.cnt.digest = d
    x.cnt.digest_round = rnd
    for w in range(x.nworkers):
        if w == x.worker:
            continue
        if atomic_load_acquire_u64(&x.h.digest_rounds[w][slot]) == rnd + 1:
            if x.h.digests[w][slot] != d:
                x.h.diverged_round = rnd
                atomic_store_release_u32(&x.h.diverged, 1)


cdef const uint8_t *exec_apply(Exec *x, const Descriptor *d, uint64_t seqno, bint *stop) noexcept nogil:
    """The replicated part of one log position: run it through the core.
    Returns the bytes its copy actions refer to (a segment's payload, a
    whole frame; NULL for other records); sets *stop on REC_STOP."""
    cdef const uint8_t *p
    cdef uint8_t kind = d.kind
    x.cur_seqno = seqno + 1
    x.cnt.last_seqno = seqno + 1
    x.strided_unit = 0
    if kind == REC_SEGMENT:
        x.cnt.frames += 1
        core_entry(x.st, x.rx, d)
        if d.frame_flags & FRAME_STRIDED:
            x.strided_unit = d.gso_size
        return <const uint8_t *>ring_bytes(x.ring, d)
    if kind == REC_FRAME:
        x.cnt.frames += 1
        if d.length > VNET_HDR_LEN:
            p = <const uint8_t *>ring_bytes(x.ring, d) + VNET_HDR_LEN
            core_frame(x.st, x.rx, p, d.length - VNET_HDR_LEN, d.frame_flags, d.gso_size, d.now_ns)
            return p
    elif kind == REC_DROPPED:
        x.cnt.frames += 1
        core_dropped(x.st, x.rx, d.reason, d.now_ns)
    elif kind == REC_PEER6:
        core_peer6(x.st, peer6_of(d))
    elif kind == REC_REQUEST:
        x.cnt.requests += 1
        apply_request(x.st, x.rx, <const uint8_t *>ring_data(x.ring, d.data), d.now_ns)
    elif kind == REC_TICK:
        x.cnt.ticks += 1
        core_tick(x.st, x.rx, d.now_ns)
    elif kind == REC_DIGEST:
        if not x.shared_state:
            _digest(x, d.seq)
    elif kind == REC_CHECKPOINT:
        if not x.shared_state:
            _checkpoint(x)
    elif kind == REC_STOP:
        stop[0] = True
    return NULL


cdef bint exec_handle(Exec *x, const Descriptor *d, uint64_t seqno) noexcept nogil:
    """Apply one log position and carry out this replica's outputs; False on REC_STOP."""
    cdef bint stop = False
    cdef const uint8_t *frame = exec_apply(x, d, seqno, &stop)
    exec_run_actions(x, frame)
    if frame != NULL:
        exec_note_latency(x, d.now_ns)
    return not stop


cdef bint exec_batch(Exec *x, Ring *rg, uint32_t consumer_id, uint64_t end) noexcept nogil:
    """One batch of a replica's walk through the log: apply the positions
    from x.loop_seqno up to `end` (at most EXEC_MAX_BATCH), then publish the
    progress once and release the log once.  The walk's position lives in
    x.loop_seqno / x.loop_data.  Returns False once REC_STOP was applied."""
    cdef uint64_t seqno = x.loop_seqno, n = 0, now
    cdef const Descriptor *d
    cdef bint running = True
    if end - seqno > EXEC_MAX_BATCH:
        end = seqno + EXEC_MAX_BATCH
    while seqno != end:
        d = ring_descriptor(rg, seqno)
        prefetch(ring_descriptor(rg, seqno + EXEC_PREFETCH_AHEAD))
        seqno += 1
        n += 1
        x.loop_seqno = seqno
        x.loop_data = d.data_end
        if not exec_handle(x, d, seqno - 1):
            running = False
            break
    exec_publish_progress(x)
    x.cnt.records += n
    x.cnt.position += n
    # recoverable mode keeps every descriptor since the last checkpoint in
    # the log, so a replacement can replay them from the snapshot
    if x.snapshots != NULL:
        ring_release(rg, consumer_id, x.release_seqno, x.release_data, n)
    else:
        ring_release(rg, consumer_id, seqno, x.loop_data, n)
    exec_flush_held(x)
    exec_signal_ready(x)
    now = monotonic_ns()
    x.cnt.heartbeat_ns = now                 # busy, not hung (runtime/watchdog.py)
    exec_publish_stats(x, now)
    return running


cdef void exec_start_walk(Exec *x, Ring *rg, uint32_t consumer_id) noexcept nogil:
    """Begin walking the log where this consumer's cursor stands."""
    x.loop_seqno = rg.ctl.consumers[consumer_id].cursor
    x.loop_data = rg.ctl.consumers[consumer_id].data_cursor
    x.release_seqno = x.loop_seqno
    x.release_data = x.loop_data


# -- the Python owner -------------------------------------------------------------

cdef class Executor:
    """Per process: one replica of the core plus everything needed to carry
    out its actions (the C state is ``x``; the loops work on it)."""

    def __cinit__(self, TcpCore core, MirroredBuffer block, uint32_t worker, *, int rcv_fd, int snd_fd,
                  int sink=SINK_NULL, int out_fd=-1, bint offload=True, MessageQueue events=None,
                  PcapWriter pcap=None, FaultInjector faults=None, MirroredBuffer snapshots=None,
                  bint shared_state=False, bytes link_header=None):
        """`link_header`: the device takes Ethernet frames, and these 14
        bytes (the next hop's MAC, ours, the IPv4 type) go before every IP
        packet written to `out_fd`."""
        cdef Exec *x = &self.x
        cdef RuntimeHeader *h = <RuntimeHeader *>block.base
        memset(x, 0, sizeof(Exec))
        self.core = core
        x.st = core.st
        x.rx = &core.rx
        x.h = h
        x.worker = worker
        x.nworkers = h.nworkers
        x.max_conns = h.max_conns
        x.cnt = &h.counters[worker]
        x.shared_state = shared_state
        # one shared state (mimd) publishes its progress into the one shared row
        x.progress = layout_progress(h, 0 if shared_state else worker)
        x.acked = layout_acked(h)
        x.sent = layout_sent(h)
        x.capture_size = h.capture_size
        x.capture = layout_capture(h, worker)
        x.shares = layout_shares(h, worker)
        x.readiness = True
        x.rcv_fd = rcv_fd
        x.snd_fd = snd_fd
        x.rcvbuf = h.rcvbuf
        x.sndbuf = h.sndbuf
        x.rcv_maps = <char **>calloc(x.max_conns, sizeof(char *))
        x.snd_maps = <char **>calloc(x.max_conns, sizeof(char *))
        x.outbuf = <uint8_t *>malloc(65536 + 512)
        if x.rcv_maps == NULL or x.snd_maps == NULL or x.outbuf == NULL:
            raise MemoryError()
        x.sink = sink
        x.out_fd = out_fd
        if link_header is not None:
            if len(link_header) != ETH_HLEN:
                raise ValueError(f"a link header is {ETH_HLEN} bytes, not {len(link_header)}")
            memcpy(x.eth, <const char *>link_header, ETH_HLEN)
            x.ethernet = True
            x.batch_tx = sink == SINK_FD
        x.offload = offload
        if events is not None:
            x.events = &events.queue
            # replicas all see every event: worker 0 alone tells the application;
            # one shared state produces each event once, in whichever worker ran it
            x.post_events = worker == 0 or shared_state
        x.defer_progress = shared_state
        if pcap is not None:
            x.out_stages.pcap = &pcap.file
            x.out_stages.pcap_offset_ns = pcap.realtime_offset_ns
        if faults is not None:
            x.out_stages.faults = &faults.state
        if snapshots is not None:
            x.snapshot_size = core.st.size
            if snapshots.size < <uint64_t>(worker + 1) * 2 * x.snapshot_size:
                raise ValueError("snapshot area too small for this worker")
            x.snapshots = snapshots.base + <uint64_t>worker * 2 * x.snapshot_size
        self.keep = (block, events, pcap, faults, snapshots)

    def __dealloc__(self):
        # mappings are left to process exit (workers are processes that end)
        free(self.x.rcv_maps)
        free(self.x.snd_maps)
        free(self.x.outbuf)
        free(self.x.copy_floor)
        free(self.x.acked_floor)

    def resume_after(self, const uint8_t[::1] progress, const uint8_t[::1] acked, uint64_t until_seqno):
        """A replacement: `progress` (and, for worker 0, `acked`) are the rows
        of words its dead predecessor published (one uint64 per connection
        slot), in force while replaying records up to `until_seqno`, the
        last one the predecessor applied (see exec_run_actions)."""
        cdef uint64_t need = <uint64_t>self.x.max_conns * 8
        if progress.shape[0] != need or (acked is not None and acked.shape[0] != need):
            raise ValueError(f"a progress row is {need} bytes for {self.x.max_conns} connections")
        free(self.x.copy_floor)
        free(self.x.acked_floor)
        self.x.copy_floor = NULL
        self.x.acked_floor = NULL
        self.x.copy_floor = <uint64_t *>malloc(need)
        if self.x.copy_floor == NULL:
            raise MemoryError()
        memcpy(self.x.copy_floor, &progress[0], need)
        if acked is not None:
            self.x.acked_floor = <uint64_t *>malloc(need)
            if self.x.acked_floor == NULL:
                raise MemoryError()
            memcpy(self.x.acked_floor, &acked[0], need)
        self.x.floor_until = until_seqno

    @property
    def measure_latency(self):
        return self.x.measure_latency

    @measure_latency.setter
    def measure_latency(self, bint value):
        """Live traffic: the stamp-to-output latency is worth its ~20 ns per frame."""
        self.x.measure_latency = value

    @property
    def readiness(self):
        return self.x.readiness

    @readiness.setter
    def readiness(self, bint value):
        """Off only to measure what readiness costs (bench/readiness.py)."""
        self.x.readiness = value

    def announced_through(self, uint64_t record, uint32_t index):
        """A replacement: its predecessor announced the events of every record
        before `record` (a seqno + 1, as events carry it) and those up to
        `index` of `record` itself; they are not announced again."""
        self.x.events_after_seqno = record
        self.x.events_after_index = index

    def attach(self, BroadcastRing ring):
        """The log this executor's loop feeds from."""
        self.x.ring = &ring.ring
        self.keep = self.keep + (ring,)

    def flush(self):
        """Write out queued frames and buffered capture data (process exit)."""
        exec_flush_tx(&self.x)
        if self.x.out_stages.pcap != NULL:
            pcap_flush(self.x.out_stages.pcap)


cdef void _connect6(CoreState *st, Replica *rx, const Message *m, uint64_t now) noexcept nogil:
    """REQ_CONNECT6 (runtime/vocabulary.pxd): the address travels as two
    big-endian 64-bit words."""
    cdef uint8_t addr[16]
    cdef uint32_t i
    for i in range(8):
        addr[i] = <uint8_t>(m.a >> (56 - 8 * i))
        addr[8 + i] = <uint8_t>(m.b >> (56 - 8 * i))
    core_app_connect(st, rx, m.c, rd32(addr + 12), addr, <uint16_t>(m.record >> 16), <uint16_t>m.record,
                     <uint16_t>(m.record >> 32), <uint32_t>m.index, now)


cdef void apply_request(CoreState *st, Replica *rx, const uint8_t *message, uint64_t now) noexcept nogil:
    """One application request (a Message carried by a REC_REQUEST record)."""
    cdef const Message *m = <const Message *>message
    if m.kind == REQ_CONSUMED:
        core_app_consumed(st, rx, m.handle, m.a, now)
    elif m.kind == REQ_SEND:
        core_app_send(st, rx, m.handle, m.a, m.b != 0, now)
    elif m.kind == REQ_LISTEN:
        core_app_listen(st, rx, <uint16_t>m.a, <uint32_t>m.b, now)
    elif m.kind == REQ_CONNECT:
        core_app_connect(st, rx, m.c, <uint32_t>m.a, NULL, <uint16_t>(m.b >> 16), <uint16_t>m.b,
                         <uint16_t>(m.a >> 32), <uint32_t>(m.b >> 32), now)
    elif m.kind == REQ_CONNECT6:
        _connect6(st, rx, m, now)
    elif m.kind == REQ_ACCEPTED:
        core_app_accepted(st, rx, m.handle, now)
    elif m.kind == REQ_SHUTDOWN:
        core_app_shutdown(st, rx, m.handle, now)
    elif m.kind == REQ_CLOSE:
        core_app_close(st, rx, m.handle, now)
    elif m.kind == REQ_ABORT:
        core_app_abort(st, rx, m.handle, now)
    elif m.kind == REQ_UNLISTEN:
        core_app_unlisten(st, rx, <uint16_t>m.a, now)
    elif m.kind == REQ_SETOPT:
        core_app_setopt(st, rx, m.handle, m.c != 0, <uint32_t>m.a, m.b, now)
