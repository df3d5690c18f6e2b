# cython: language_level=3
"""The sequencer: the single writer of the event log (compiled loop).

It is the serial fraction, so it does only what must be done once:

1. drains the request queue into REC_REQUEST records (so every application
   request enters the log at one position, seen by all replicas);
2. reads frames from the device with a header/data split, as a NIC with
   header split does: one readv() puts the headers into a small buffer and
   the payload straight at the log's data tail, where it stays (the kernel's
   copy is the only one before the workers' owned copies);
3. validates each frame once for every replica (IPv4 or IPv6 with its
   extension headers, addresses, TCP header, checksum unless the device
   vouched for it, options) and writes its 64-byte descriptor: a REC_SEGMENT
   that says everything a replica needs (for an IPv6 peer, after a REC_PEER6
   naming its address whenever the peer changes), a REC_DROPPED with the
   reason, or, for what a descriptor cannot carry (SYN options, SACK blocks,
   urgent data, ICMP), the whole frame as REC_FRAME;
4. coalesces consecutive in-order segments of one flow into one descriptor
   (runtime/describe.pxd: Linux's GRO rules), so replicas run the core once
   per aggregate;
5. publishes REC_TICK when idle (timers), REC_DIGEST for the replica
   divergence check and REC_CHECKPOINT for worker recovery;
6. with the inline placement, runs replica 0 itself: after each batch it
   publishes, it walks the new descriptors with worker 0's executor (the
   same code a worker runs), so where CPUs are scarce the log's first reader
   costs no process, no wake-up and no cache line moved between cores.

On a packet-ring device (frameio/packet_ring.pxd) step 2 reads no device
at all: the kernel has already written each frame into a slot of the ring,
which every process maps.  The sequencer polls the slots' status words,
takes each frame through the link step (frameio/ethernet_link.pxd: not ours
-> dropped by reason; an ARP request for us -> answered), and describes the
IPv4 packet where it lies: the descriptor is FRAME_IN_DEVICE, its data an
offset in the ring (wire/frame.pxd), so the workers' owned copies are the
first copies of the payload.  A slot goes back to the kernel once every consumer of the log
has released the last descriptor that points into it; the kernel fills slots
strictly in order, so slots go back in order (a FIFO of the log position
each one waits for).  Frames the core takes out of order cost no slot for
long: the core copies their payload to its stream offset at once.  Plain
frames in consecutive slots that continue one another coalesce where they
lie, as a FRAME_STRIDED run (_continues_in_device): their payloads are one
slot size apart.

When the input frame stages are active (faults, pcap), frames are read whole
into a buffer (on a packet ring: copied out of the slot, which then goes back
at once), passed through the stages, and what comes out is described the
same way.  Time stamps come from CLOCK_MONOTONIC here and only here: replicas
never read a clock.  When idle it sleeps in poll() on the device and an
eventfd that applications write only when it says it is asleep.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memmove, memcmp, memset

from libc.stdlib cimport calloc
from misdtcp._system cimport (pollfd, poll, POLLIN, atomic_load_acquire_u32, atomic_store_release_u32,
                              atomic_store_release_u64, atomic_fence_seq_cst, iovec, monotonic_ns, read, readv,
                              thread_cpu_ns)
from misdtcp._ring cimport (BroadcastRing, Descriptor, Ring, RING_MAX_DATA, ring_available, ring_claim,
                            ring_commit, ring_data_grow, ring_data_tail, ring_has_room, ring_last_pending,
                            ring_released, ring_stop, ring_wait_released, ring_wait_space)
from misdtcp.frameio.ethernet_link cimport (EthernetLink, LinkFrame, LINK_ANSWERED, LINK_IPV4,
                                            link_as_tun_frame, link_init, link_receive)
from misdtcp.frameio.faults cimport FaultInjector
from misdtcp.frameio.packet_ring cimport (PacketRx, RxRing, tpacket2_hdr, rx_next, rx_slot, rx_slot_give_back,
                                          rx_slot_offset, rx_slot_ready)
from misdtcp.frameio.pcap cimport PcapWriter, pcap_flush
from misdtcp.frameio.stages cimport (EMIT_CORRUPTED, FrameStages, stages_apply, stages_next_due_ns,
                                     stages_release_due)
from misdtcp.runtime.describe cimport can_coalesce, coalesce, describable, describe_segment
from misdtcp.runtime.executor cimport Exec, Executor, exec_batch, exec_start_walk
from misdtcp.runtime.layout cimport RuntimeHeader
from misdtcp.runtime.queue cimport Message, MessageQueue, MsgQueue, mq_try_take
from misdtcp.runtime.shm cimport MirroredBuffer
from misdtcp.runtime.vocabulary cimport (REC_FRAME, REC_REQUEST, REC_TICK, REC_DIGEST, REC_STOP,
                                         REC_CHECKPOINT, REC_DROPPED, REC_PEER6, REC_SEGMENT)
from misdtcp.runtime.wait cimport WAIT_SPIN, WAIT_STOPPED, WAIT_TIMEOUT_NS
from misdtcp.wire.descriptor cimport describe_peer6
from misdtcp.wire.drops cimport DROP_NONE
from misdtcp.wire.frame cimport FRAME_CSUM_VALID, FRAME_IN_DEVICE, FRAME_STRIDED, FRAME_VERIFY_CSUM
from misdtcp.wire.ipv4 cimport IP_HDR_LEN, IP_PROTOCOL, IP_VERSION_IHL, IPPROTO_TCP
from misdtcp.wire.ipv6 cimport (IP6_HDR_LEN, IP6_NEXT_HEADER, IP6_MAX_EXT_HEADERS, IPPROTO_HOPOPTS,
                                IPPROTO_DSTOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT)
from misdtcp.wire.tcp cimport TcpSegment, TCP_DATA_OFFSET
from misdtcp.wire.validate cimport FRAME_IS_ICMP, validate_frame, validate_frame_split
from misdtcp.wire.vnet cimport virtio_net_hdr, VNET_HDR_LEN, vnet_frame_flags, vnet_gso_size

import ipaddress

cdef enum:
    BATCH = 64               # frames read per round before looking at requests again
    MAX_FRAME = 65536 + 64   # the largest frame a device hands over (GSO super-frame + vnet header)
    HEADER_ROOM = 256        # the header buffer of a split read (vnet + IPv4 + TCP, all options)
    DEFAULT_SPLIT = VNET_HDR_LEN + IP_HDR_LEN + 32   # vnet + IPv4 + TCP with the timestamp option
    FRAME_ALIGN = 8          # whole records start 8-aligned in the data area


ctypedef struct SequencerStats:
    uint64_t frames          # frames taken from the device (or the stages)
    uint64_t split_reads     # frames whose payload landed in place (header split matched)
    uint64_t moved           # frames that had to be made contiguous (header split missed)
    uint64_t segments        # REC_SEGMENT descriptors written
    uint64_t coalesced       # segments folded into the previous descriptor
    uint64_t whole_frames    # REC_FRAME records
    uint64_t dropped         # REC_DROPPED descriptors
    uint64_t in_place        # frames the log points at where the device put them (packet ring)
    uint64_t copied          # frames whose bytes were copied into the log (moved, or out of the stages)
    uint64_t slot_waits      # times the sequencer waited for the consumers to free device slots
    uint64_t peers6          # REC_PEER6 descriptors (the IPv6 peer changed)


ctypedef struct Sequencer:
    Ring *ring
    RuntimeHeader *h
    MsgQueue *requests
    int fd
    uint32_t local_addr
    uint8_t local_addr6[16]      # the stack's IPv6 address, when ipv6
    bint ipv6
    uint8_t peer6[16]            # the address the last REC_PEER6 named (what replicas hold now) ...
    bint peer6_valid             # ... once one was written
    bint coalesce
    FrameStages stages
    uint8_t *frame_buffer        # stages mode: a whole frame is read here first
    uint8_t header[HEADER_ROOM]  # split reads: the headers land here
    uint32_t split               # header bytes expected (learned from the last TCP frame)
    uint64_t now
    uint64_t digest_every
    uint64_t since_digest
    uint64_t digest_round
    bint drained                 # the last read found the device empty
    Exec *inline                 # the inline placement: replica 0's executor (consumer 0), else NULL
    bint inline_running          # it has not applied REC_STOP yet
    uint64_t inline_ns           # time spent applying the log as replica 0
    uint64_t read_ns             # time spent reading and describing frames ...
    uint64_t room_ns             # ... of which waiting for room in the log (left out)
    uint64_t cpu_start_ns        # the thread's CPU clock when the loop began
    uint64_t stats_published_ns
    uint64_t checkpoint_every        # recovery checkpoints: data bytes between them (0: none) ...
    uint64_t checkpoint_entries      # ... or descriptors, whichever comes first
    uint64_t checkpoint_data_at      # where the last one was
    uint64_t checkpoint_entry_at
    SequencerStats stats
    # a packet-ring device (device_ring): the slots, the link step, and the
    # slots held for the consumers, oldest first
    bint device_ring
    PacketRx rx
    EthernetLink link
    uint32_t rx_head             # the next slot to look at
    uint32_t give_back           # the oldest slot not given back to the kernel
    uint32_t held                # slots taken and not given back
    uint64_t *slot_need          # per slot: the log position every consumer must release first
    uint64_t last_need           # the newest of them (they only grow)
    uint64_t checkpoint_slots    # slots taken since the last checkpoint
    uint64_t checkpoint_seqno    # the log position after the last checkpoint


# ---------------------------------------------------------------------------
# Room in the log
# ---------------------------------------------------------------------------

cdef void _run_inline(Sequencer *s) noexcept nogil:
    """The inline placement: replica 0 applies what has been published."""
    cdef uint64_t end, t0
    if s.inline == NULL:
        return
    end = ring_available(s.ring)
    if s.inline.loop_seqno == end:
        return
    t0 = monotonic_ns()
    while s.inline_running and s.inline.loop_seqno != end:
        s.inline_running = exec_batch(s.inline, s.ring, 0, end)
    s.inline.cnt.heartbeat_ns = s.now
    s.inline_ns += monotonic_ns() - t0


cdef void _publish_stats(Sequencer *s, uint64_t now) noexcept nogil:
    """About every millisecond: the counters `misdtcp serve` reports (the
    thread CPU clock is a system call, so not per frame)."""
    if s.h == NULL or now - s.stats_published_ns < 1000000:
        return
    s.stats_published_ns = now
    s.h.sequencer_frames = s.stats.frames
    s.h.sequencer_coalesced = s.stats.coalesced
    s.h.sequencer_cpu_ns = thread_cpu_ns() - s.cpu_start_ns
    s.h.sequencer_inline_ns = s.inline_ns
    s.h.sequencer_read_ns = s.read_ns
    s.h.sequencer_in_place = s.stats.in_place
    s.h.sequencer_copied = s.stats.copied
    s.h.sequencer_arp_replies = s.link.arp_replies
    s.h.sequencer_slot_waits = s.stats.slot_waits
    s.h.sequencer_slots_held = s.held


cdef inline void _publish(Sequencer *s) noexcept nogil:
    """Publish the pending descriptors (and, inline, apply them as replica 0)."""
    ring_commit(s.ring)
    _run_inline(s)


cdef bint _wait_room(Sequencer *s, uint32_t entries, uint64_t data_bytes) noexcept nogil:
    """Wait (the one wait policy) until the log has room; False once stopping.
    Pending descriptors are published first: the workers must see them to
    free any room.  The time it takes is counted in s.room_ns."""
    cdef uint64_t t0
    cdef bint ok = True
    if ring_has_room(s.ring, entries, data_bytes):
        return True
    t0 = monotonic_ns()
    while not ring_has_room(s.ring, entries, data_bytes):
        _publish(s)
        s.h.sequencer_heartbeat_ns = monotonic_ns()     # waiting for the workers, not hung
        if ring_has_room(s.ring, entries, data_bytes):
            break
        if atomic_load_acquire_u32(&s.h.stop) or \
                ring_wait_space(s.ring, entries, data_bytes, WAIT_SPIN, WAIT_TIMEOUT_NS) == WAIT_STOPPED:
            ok = False
            break
    s.room_ns += monotonic_ns() - t0
    return ok


cdef void _write_checkpoint(Sequencer *s) noexcept nogil:
    """A REC_CHECKPOINT: recoverable workers snapshot their replica there
    and release the log (and so a packet ring's slots) only up to it."""
    cdef Descriptor *d
    cdef uint64_t entry
    if not _wait_room(s, 1, 0):
        return
    entry = s.ring.ctl.producer.cursor + s.ring.pending
    d = ring_claim(s.ring, 0)
    d.kind = REC_CHECKPOINT
    d.frame_flags = 0
    d.length = 0
    d.now_ns = s.now
    s.checkpoint_data_at = s.ring.data_tail
    s.checkpoint_entry_at = entry + 1
    s.checkpoint_seqno = entry + 1
    s.checkpoint_slots = 0
    s.h.sequencer_records += 1


cdef void _checkpoint_if_due(Sequencer *s) noexcept nogil:
    """A REC_CHECKPOINT once `checkpoint_every` data bytes, a quarter of
    the descriptors or a quarter of a packet ring's slots went by since the
    last one.  Checked before every write to the log, not once per round:
    in recoverable mode workers release the log only up to their last
    checkpoint, and one round can read more than a small log holds (64
    super-frames of 64 KiB into a 1 MiB log) -- without a checkpoint inside
    it, nothing would become releasable and the round would wait for room
    forever.  So at most a quarter of the log plus one frame is ever held
    back (and, on a packet ring, a quarter of its slots)."""
    cdef uint64_t entry = s.ring.ctl.producer.cursor + s.ring.pending
    if not s.checkpoint_every:
        return
    if (s.ring.data_tail - s.checkpoint_data_at < s.checkpoint_every and
            entry - s.checkpoint_entry_at < s.checkpoint_entries and
            not (s.device_ring and s.checkpoint_slots >= s.rx.slots // 4)):
        return
    _write_checkpoint(s)


cdef bint _room(Sequencer *s, uint32_t entries, uint64_t data_bytes) noexcept nogil:
    """Room in the log for what comes next (after a checkpoint, if one is due)."""
    _checkpoint_if_due(s)
    return _wait_room(s, entries, data_bytes)


cdef bint _record(Sequencer *s, uint8_t kind, const uint8_t *data, uint32_t n, uint64_t now) noexcept nogil:
    """A record whose bytes are copied into the data area (requests, ticks, digests)."""
    cdef Descriptor *d
    cdef uint32_t padded = (n + FRAME_ALIGN - 1) & ~(<uint32_t>FRAME_ALIGN - 1)
    if not _room(s, 1, padded):
        return False
    d = ring_claim(s.ring, padded)
    d.kind = kind
    d.frame_flags = 0
    d.length = n
    d.now_ns = now
    if n:
        memcpy(ring_data_tail(s.ring), data, n)
    ring_data_grow(s.ring, padded)
    s.h.sequencer_records += 1
    return True


cdef void _count_frame(Sequencer *s) noexcept nogil:
    """A digest record every `digest_every` frames (replica divergence check)."""
    cdef Descriptor *d
    s.since_digest += 1
    if s.digest_every and s.since_digest >= s.digest_every:
        s.since_digest = 0
        if _room(s, 1, 0):
            d = ring_claim(s.ring, 0)
            d.kind = REC_DIGEST
            d.seq = <uint32_t>s.digest_round
            d.length = 0
            d.now_ns = s.now
            s.digest_round += 1


# ---------------------------------------------------------------------------
# Describing frames
# ---------------------------------------------------------------------------

cdef void _dropped(Sequencer *s, int reason) noexcept nogil:
    cdef Descriptor *d = ring_claim(s.ring, 0)        # the caller made room for one
    d.kind = REC_DROPPED
    d.reason = <uint8_t>reason
    d.length = 0
    d.now_ns = s.now
    s.stats.dropped += 1


cdef void _whole_frame(Sequencer *s, uint32_t n, uint16_t flags, uint16_t gso) noexcept nogil:
    """The frame lies whole at the data tail: publish it as a REC_FRAME record."""
    cdef Descriptor *d = ring_claim(s.ring, 0)
    d.kind = REC_FRAME
    d.frame_flags = flags
    d.gso_size = gso
    d.length = n
    d.now_ns = s.now
    ring_data_grow(s.ring, (n + FRAME_ALIGN - 1) & ~(<uint32_t>FRAME_ALIGN - 1))
    s.stats.whole_frames += 1


cdef void _segment(Sequencer *s, const TcpSegment *seg, uint16_t flags, uint16_t gso,
                   uint32_t payload_at) noexcept nogil:
    """A describable segment whose payload lies `payload_at` bytes past the
    data tail: fold it into the pending descriptor when it continues it, else
    describe it in a new one.  A segment from an IPv6 peer other than the
    one the replicas hold gets a REC_PEER6 first (which also ends any run:
    the last pending descriptor is then no segment).  The caller made room
    for three descriptors."""
    cdef Descriptor *last
    cdef Descriptor *d
    if seg.v6 and (not s.peer6_valid or memcmp(seg.saddr6, s.peer6, 16) != 0):
        d = ring_claim(s.ring, 0)
        d.kind = REC_PEER6
        d.frame_flags = 0
        describe_peer6(d, seg.saddr6)
        d.now_ns = s.now
        memcpy(s.peer6, seg.saddr6, 16)
        s.peer6_valid = True
        s.stats.peers6 += 1
    last = ring_last_pending(s.ring)
    if s.coalesce and payload_at == 0 and last != NULL and last.data + last.length == s.ring.data_tail \
            and can_coalesce(last, seg, flags, gso):
        coalesce(last, seg, gso)
        ring_data_grow(s.ring, seg.payload_len)
        s.stats.coalesced += 1
        return
    d = ring_claim(s.ring, 0)
    describe_segment(d, seg, flags, gso, s.now)
    d.data += payload_at
    ring_data_grow(s.ring, payload_at + seg.payload_len)
    s.stats.segments += 1


cdef void _frame_at_tail(Sequencer *s, uint32_t n, uint16_t flags, uint16_t gso) noexcept nogil:
    """A whole frame (virtio-net header + IP packet) lies at the data tail:
    describe it.  The caller made room for two descriptors and the frame."""
    cdef uint8_t *f = <uint8_t *>ring_data_tail(s.ring)
    cdef TcpSegment seg
    cdef int r = validate_frame(f + VNET_HDR_LEN, n - VNET_HDR_LEN, flags, gso, s.local_addr,
                                s.local_addr6 if s.ipv6 else NULL, &seg)
    s.stats.frames += 1
    if r == DROP_NONE and describable(&seg):
        # the payload stays where it lies, after the headers
        _segment(s, &seg, flags, gso, VNET_HDR_LEN + seg.payload_off)
    elif r == DROP_NONE or r >= 254:           # FRAME_IS_ICMP(6), or a segment no descriptor carries
        _whole_frame(s, n, flags, gso)
    else:
        _dropped(s, r)
    _count_frame(s)


cdef uint32_t _header_length6(const uint8_t *h, uint32_t n) noexcept nogil:
    """_header_length of an IPv6 frame: past its extension headers (at most
    as many as validation walks), or 0."""
    cdef uint32_t off = VNET_HDR_LEN + IP6_HDR_LEN, k, i
    cdef uint8_t nh
    if n < off:
        return 0
    nh = h[VNET_HDR_LEN + IP6_NEXT_HEADER]
    for i in range(IP6_MAX_EXT_HEADERS):
        if nh != IPPROTO_HOPOPTS and nh != IPPROTO_DSTOPTS and nh != IPPROTO_ROUTING and nh != IPPROTO_FRAGMENT:
            break
        if n < off + 8:
            return 0
        k = 8 if nh == IPPROTO_FRAGMENT else (<uint32_t>h[off + 1] + 1) * 8
        nh = h[off]
        off += k
    if nh != IPPROTO_TCP or n < off + 20:
        return 0
    return off + (h[off + TCP_DATA_OFFSET] >> 4) * 4


cdef uint32_t _header_length(const uint8_t *h, uint32_t n) noexcept nogil:
    """vnet + IP + TCP header bytes of a TCP frame whose first n bytes are at
    h, or 0 when they do not tell (not TCP over IPv4 or IPv6, or too short)."""
    cdef uint32_t ihl
    if n > VNET_HDR_LEN and (h[VNET_HDR_LEN] >> 4) == 6:
        return _header_length6(h, n)
    if n < VNET_HDR_LEN + IP_HDR_LEN or (h[VNET_HDR_LEN + IP_VERSION_IHL] >> 4) != 4 or \
            h[VNET_HDR_LEN + IP_PROTOCOL] != IPPROTO_TCP:
        return 0
    ihl = (h[VNET_HDR_LEN + IP_VERSION_IHL] & 0x0f) * 4
    if n < VNET_HDR_LEN + ihl + 20:
        return 0
    return VNET_HDR_LEN + ihl + (h[VNET_HDR_LEN + ihl + TCP_DATA_OFFSET] >> 4) * 4


cdef void _split_frame(Sequencer *s, uint32_t n) noexcept nogil:
    """A frame read split: its first `split` bytes in s.header, the rest at
    the data tail.  When the headers were exactly `split` bytes long the
    payload is already in place; otherwise the frame is made whole at the
    tail (a memmove, only when a flow's header length changes) and the next
    reads expect the new length."""
    cdef const virtio_net_hdr *v = <const virtio_net_hdr *>s.header
    cdef uint16_t flags = vnet_frame_flags(v)
    cdef uint16_t gso = vnet_gso_size(v)
    cdef uint32_t length = _header_length(s.header, s.split if n > s.split else n)
    cdef TcpSegment seg
    cdef int r
    cdef uint8_t *tail = <uint8_t *>ring_data_tail(s.ring)
    if n >= s.split and length == s.split:
        r = validate_frame_split(s.header + VNET_HDR_LEN, s.split - VNET_HDR_LEN, tail, n - VNET_HDR_LEN,
                                 flags, gso, s.local_addr, s.local_addr6 if s.ipv6 else NULL, &seg)
        if r == DROP_NONE and describable(&seg):
            s.stats.frames += 1
            s.stats.split_reads += 1
            _segment(s, &seg, flags, gso, 0)
            _count_frame(s)
            return
    # make the frame whole at the tail
    if n > s.split:
        memmove(tail + s.split, tail, n - s.split)
        memcpy(tail, s.header, s.split)
    else:
        memcpy(tail, s.header, n)
    s.stats.moved += 1
    s.stats.copied += 1
    if length == 0:
        # the split was too short to tell (an IPv6 header is 20 bytes longer
        # than the IPv4 one the default split expects): the whole frame does
        length = _header_length(tail, n if n < HEADER_ROOM else HEADER_ROOM)
    if n > length >= VNET_HDR_LEN + IP_HDR_LEN + 20 and length <= HEADER_ROOM:
        s.split = length            # a frame with payload: its flow's header length
    _frame_at_tail(s, n, flags, gso)


cdef void _staged_frame(void *context, uint8_t *frame, uint32_t n, uint32_t how) noexcept nogil:
    """The input stages' emitter: a whole frame that came through faults and
    capture is copied to the data tail and described."""
    cdef Sequencer *s = <Sequencer *>context
    cdef const virtio_net_hdr *v = <const virtio_net_hdr *>frame
    cdef uint16_t flags = FRAME_VERIFY_CSUM if how & EMIT_CORRUPTED else vnet_frame_flags(v)
    if not _room(s, 3, n + FRAME_ALIGN):
        return
    memcpy(ring_data_tail(s.ring), frame, n)
    s.stats.copied += 1
    _frame_at_tail(s, n, flags, vnet_gso_size(v))


cdef uint32_t _read_frames(Sequencer *s) noexcept nogil:
    """Up to BATCH frames from the device into the log; returns how many
    (s.drained: the device had nothing more)."""
    cdef uint32_t count = 0
    cdef long n
    cdef iovec iov[2]
    s.drained = False
    while count < BATCH:
        if s.stages.faults != NULL or s.stages.pcap != NULL:
            n = read(s.fd, s.frame_buffer, MAX_FRAME)
            if n <= <long>VNET_HDR_LEN:
                s.drained = n < 0
                break
            s.now = monotonic_ns()
            stages_apply(&s.stages, s.frame_buffer, <uint32_t>n, s.now, _staged_frame, s)
        else:
            if not _room(s, 3, MAX_FRAME + HEADER_ROOM):
                break
            iov[0].iov_base = s.header
            iov[0].iov_len = s.split
            iov[1].iov_base = ring_data_tail(s.ring)
            iov[1].iov_len = MAX_FRAME
            n = readv(s.fd, iov, 2)
            if n <= <long>VNET_HDR_LEN:
                s.drained = n < 0
                break
            s.now = monotonic_ns()
            _split_frame(s, <uint32_t>n)
        count += 1
    return count


# ---------------------------------------------------------------------------
# A packet-ring device: frames described where the kernel put them
# ---------------------------------------------------------------------------

cdef bint _continues_in_device(Sequencer *s, const Descriptor *last, const TcpSegment *seg, uint64_t at,
                               uint16_t flags, uint16_t gso) noexcept nogil:
    """Can the plain (non-GSO) frame whose payload lies at device position
    `at` be folded into the pending descriptor `last`?  Receive coalescing
    as on a TUN (runtime/describe.pxd, Linux's GRO rules), except that the
    payloads are not back to back: `last` must be a run of full-sized
    segments in consecutive slots, and this payload must lie exactly one
    slot after the run's last one, at the same place in its slot (the same
    headers).  The run then becomes a FRAME_STRIDED descriptor; a run never
    wraps past the ring's end."""
    cdef uint32_t pieces
    if not s.coalesce or gso != 0 or last == NULL or last.kind != REC_SEGMENT:
        return False
    if not (last.frame_flags & FRAME_IN_DEVICE) or (last.frame_flags & ~FRAME_STRIDED) != flags:
        return False
    if last.frame_flags & FRAME_STRIDED:
        pieces = last.segments
    elif last.gso_size == 0:
        pieces = 1
    else:
        return False                        # a GSO super-frame: a run of its own
    if at != last.data + <uint64_t>pieces * s.rx.slot_size:
        return False
    return can_coalesce(last, seg, last.frame_flags, 0)


cdef void _slot_frame(Sequencer *s, tpacket2_hdr *h, uint32_t index) noexcept nogil:
    """One slot the kernel handed over: the link step, then the IPv4 packet
    described where it lies (a REC_SEGMENT whose data is the payload's device
    position, a REC_FRAME whose record starts VNET_HDR_LEN bytes before the IP
    header -- consumers take the frame's metadata from the descriptor, never
    from those bytes), or dropped.  Records the log position the slot waits
    for before it goes back.  The caller made room for two descriptors."""
    cdef LinkFrame lf
    cdef TcpSegment seg
    cdef Descriptor *d
    cdef Descriptor *last
    cdef uint64_t at = rx_slot_offset(&s.rx, index)
    cdef bint points_here = False
    cdef uint32_t n
    cdef int r = link_receive(&s.link, h, &lf)
    if r == LINK_IPV4 and (s.stages.faults != NULL or s.stages.pcap != NULL):
        # the stages work on what a TUN delivers: a copy (counted as it comes
        # out of them); the slot goes back with the ones before it
        n = link_as_tun_frame(&lf, s.frame_buffer, MAX_FRAME)
        if n:
            stages_apply(&s.stages, s.frame_buffer, n, s.now, _staged_frame, s)
    elif r == LINK_ANSWERED:
        s.stats.frames += 1                 # link business: nothing for the replicas
    elif r != LINK_IPV4:
        s.stats.frames += 1
        _dropped(s, r)
        _count_frame(s)
    else:
        s.stats.frames += 1
        r = validate_frame(lf.ip, lf.ip_len, lf.flags, lf.gso_size, s.local_addr, NULL, &seg)
        last = ring_last_pending(s.ring)
        if r == DROP_NONE and describable(&seg) and \
                _continues_in_device(s, last, &seg, at + lf.ip_off + seg.payload_off, lf.flags | FRAME_IN_DEVICE,
                                     lf.gso_size):
            # one more slot of the run: it goes back with the run's descriptor
            coalesce(last, &seg, 0)
            last.frame_flags |= FRAME_STRIDED
            s.stats.coalesced += 1
            s.stats.in_place += 1
        elif r == DROP_NONE and describable(&seg):
            d = ring_claim(s.ring, 0)
            describe_segment(d, &seg, lf.flags | FRAME_IN_DEVICE, lf.gso_size, s.now)
            d.data = at + lf.ip_off + seg.payload_off
            s.stats.segments += 1
            points_here = seg.payload_len != 0
        elif r == DROP_NONE or r == FRAME_IS_ICMP:
            d = ring_claim(s.ring, 0)
            d.kind = REC_FRAME
            d.frame_flags = lf.flags | FRAME_IN_DEVICE
            d.gso_size = lf.gso_size
            d.length = VNET_HDR_LEN + lf.ip_len
            d.data = at + lf.ip_off - VNET_HDR_LEN
            d.now_ns = s.now
            s.stats.whole_frames += 1
            points_here = True
        else:
            _dropped(s, r)
        if points_here:
            s.stats.in_place += 1
            s.last_need = s.ring.ctl.producer.cursor + s.ring.pending
        _count_frame(s)
    # a slot nothing points into goes back with the slots before it
    s.slot_need[index] = s.last_need


cdef uint32_t _read_slots(Sequencer *s) noexcept nogil:
    """Up to BATCH frames from the ring's slots into the log; returns how
    many (s.drained: the kernel has handed over nothing more)."""
    cdef uint32_t count = 0
    cdef tpacket2_hdr *h
    s.drained = False
    while count < BATCH:
        if s.held == s.rx.slots:
            break                           # every slot is ours: the consumers must free some
        h = rx_slot(&s.rx, s.rx_head)
        if not rx_slot_ready(h):
            s.drained = True
            break
        if not _room(s, 2, 0):
            break
        s.now = monotonic_ns()
        _slot_frame(s, h, s.rx_head)
        s.rx_head = rx_next(&s.rx, s.rx_head)
        s.held += 1
        s.checkpoint_slots += 1
        count += 1
    return count


cdef void _give_back_slots(Sequencer *s) noexcept nogil:
    """Return to the kernel, in ring order, the slots every consumer is
    done with (it has released every descriptor that points into them).
    The consumers' acquire-loaded cursors order their reads of a slot
    before our release store of TP_STATUS_KERNEL, and that store before the
    kernel's next write into it."""
    cdef uint64_t released
    if s.held == 0:
        return
    released = ring_released(s.ring)
    while s.held and <int64_t>(released - s.slot_need[s.give_back]) >= 0:
        rx_slot_give_back(rx_slot(&s.rx, s.give_back))
        s.give_back = rx_next(&s.rx, s.give_back)
        s.held -= 1


cdef bint _frame_waiting(void *context) noexcept nogil:
    """The kernel handed over a slot we have not taken yet."""
    cdef Sequencer *s = <Sequencer *>context
    return s.held < s.rx.slots and rx_slot_ready(rx_slot(&s.rx, s.rx_head))


cdef void _wait_for_slots(Sequencer *s, bint recoverable) noexcept nogil:
    """Idle while the consumers still hold slots.  poll() would return at
    once: a packet socket reports its ring readable while the slot before the
    kernel's head is not the kernel's (packet_poll).  So wait for the
    consumers to release the newest slot's descriptors instead (the ring's
    wait: they wake us as they release), or for a new frame, at most a
    millisecond; a recoverable worker releases only at checkpoints, so one
    comes first when the held frames came after the last."""
    if recoverable and <int64_t>(s.last_need - s.checkpoint_seqno) > 0:
        s.now = monotonic_ns()
        _write_checkpoint(s)
        _publish(s)
    _give_back_slots(s)
    if s.held == 0 or _frame_waiting(s):
        return
    s.stats.slot_waits += 1
    ring_wait_released(s.ring, s.last_need, WAIT_SPIN, 1000000, _frame_waiting, s)
    _give_back_slots(s)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

cdef int _init(Sequencer *s, BroadcastRing ring, MessageQueue requests, MirroredBuffer block, int device_fd,
               str local_address, uint64_t digest_every, FaultInjector faults, PcapWriter pcap,
               bint coalesce_segments, object local_address6=None, RxRing device_ring=None,
               bytes link_mac=None, bytes peer_mac=None) except -1:
    cdef uint8_t no_mac[6]
    cdef bytes packed6
    if device_ring is not None and local_address6 is not None:
        # the link step takes IPv4 and ARP only (no neighbour discovery)
        raise ValueError("a packet-ring device carries IPv4 only: no IPv6 address on it")
    s.ring = &ring.ring
    s.h = <RuntimeHeader *>block.base if block is not None else NULL
    s.requests = &requests.queue if requests is not None else NULL
    s.fd = device_fd
    s.local_addr = int(ipaddress.IPv4Address(local_address))
    s.ipv6 = local_address6 is not None
    if s.ipv6:
        packed6 = ipaddress.IPv6Address(local_address6).packed
        memcpy(s.local_addr6, <const char *>packed6, 16)
    s.peer6_valid = False
    s.coalesce = coalesce_segments
    s.stages.faults = &faults.state if faults is not None else NULL
    s.stages.pcap = &pcap.file if pcap is not None else NULL
    s.stages.pcap_offset_ns = pcap.realtime_offset_ns if pcap is not None else 0
    s.frame_buffer = <uint8_t *>malloc(MAX_FRAME)
    if s.frame_buffer == NULL:
        raise MemoryError()
    s.split = DEFAULT_SPLIT
    s.now = 0
    s.digest_every = digest_every
    s.since_digest = 0
    s.digest_round = 0
    s.drained = False
    s.inline = NULL
    s.inline_running = False
    s.inline_ns = 0
    s.read_ns = 0
    s.room_ns = 0
    s.cpu_start_ns = 0
    s.stats_published_ns = 0
    s.checkpoint_every = 0
    s.checkpoint_entries = ring.entries // 4
    s.checkpoint_data_at = 0
    s.checkpoint_entry_at = 0
    s.stats.frames = s.stats.split_reads = s.stats.moved = s.stats.segments = 0
    s.stats.coalesced = s.stats.whole_frames = s.stats.dropped = s.stats.peers6 = 0
    s.stats.in_place = s.stats.copied = s.stats.slot_waits = 0
    s.device_ring = device_ring is not None
    s.rx_head = s.give_back = s.held = 0
    s.last_need = s.checkpoint_slots = s.checkpoint_seqno = 0
    s.slot_need = NULL
    memset(no_mac, 0, 6)
    link_init(&s.link, no_mac, no_mac, s.local_addr, -1)
    if s.device_ring:
        if device_ring.closed:
            raise ValueError("the device's receive ring is closed")
        if link_mac is None or peer_mac is None or len(link_mac) != 6 or len(peer_mac) != 6:
            raise ValueError("a packet-ring device needs its own and its peer's 6-byte MAC address")
        s.rx = device_ring.rx
        link_init(&s.link, <const uint8_t *><const char *>link_mac, <const uint8_t *><const char *>peer_mac,
                  s.local_addr, s.rx.fd)
        s.slot_need = <uint64_t *>calloc(s.rx.slots, sizeof(uint64_t))
        if s.slot_need == NULL:
            raise MemoryError()
        # the log's cursors may not start at 0 (a ring reused): slots wait for
        # positions from here on
        s.last_need = s.checkpoint_seqno = ring.ring.ctl.producer.cursor
    return 0


def run_sequencer(BroadcastRing ring, MessageQueue requests, MirroredBuffer block, int device_fd,
                  int wake_fd, *, str local_address, local_address6=None, uint64_t tick_ns=5000000,
                  uint64_t digest_every=0,
                  FaultInjector faults=None, PcapWriter pcap=None, uint64_t checkpoint_every=0,
                  bint coalesce_segments=True, Executor inline=None, RxRing device_ring=None,
                  bytes link_mac=None, bytes peer_mac=None):
    """Run until the runtime's stop flag is set; then publish REC_STOP.
    `checkpoint_every`: a REC_CHECKPOINT whenever that many data-area bytes
    or a quarter of the descriptors (or of a packet ring's slots) went by,
    checked before every write (0: none; see _checkpoint_if_due).  With
    `pcap`, every frame that enters the log is captured (after fault
    injection: what the stack really received).  `inline`: worker 0's
    executor, run here as the log's consumer 0 (the inline placement).
    `device_ring`: frames come from this packet ring (its socket is
    `device_fd`; `ring` must resolve its positions: attach_device), with the
    stack's `link_mac` and the kernel end's `peer_mac`.  Returns the
    sequencer's counters."""
    cdef Sequencer s
    cdef Message message
    cdef uint64_t now, last = 0
    cdef uint32_t got
    cdef pollfd fds[2]
    cdef int timeout_ms
    cdef int64_t due
    cdef uint8_t scratch[8]
    cdef uint64_t t0, room0
    _init(&s, ring, requests, block, device_fd, local_address, digest_every, faults, pcap, coalesce_segments,
          local_address6, device_ring, link_mac, peer_mac)
    if s.device_ring and ring.ring.device != <char *>s.rx.base:
        free(s.slot_need)
        free(s.frame_buffer)
        raise ValueError("the log does not resolve the device's positions: BroadcastRing.attach_device first")
    if inline is not None:
        inline.attach(ring)
        s.inline = &inline.x
        s.inline_running = True
        exec_start_walk(s.inline, s.ring, 0)
    s.checkpoint_every = checkpoint_every
    s.checkpoint_data_at = ring.ring.data_tail
    s.checkpoint_entry_at = ring.ring.ctl.producer.cursor
    with nogil:
        s.cpu_start_ns = thread_cpu_ns()
        if s.inline != NULL:
            s.inline.cnt.start_ns = monotonic_ns()
        fds[0].fd = device_fd
        fds[0].events = POLLIN
        fds[1].fd = wake_fd
        fds[1].events = POLLIN
        while not atomic_load_acquire_u32(&s.h.stop):
            now = monotonic_ns()
            s.h.sequencer_heartbeat_ns = now
            _publish_stats(&s, now)
            got = 0
            # 1. application requests, in the order they were posted
            while mq_try_take(s.requests, &message):
                if not _record(&s, REC_REQUEST, <const uint8_t *>&message, sizeof(Message), now):
                    break
                got += 1
            # 2. frames, their payload read straight into the log (timed:
            # the serial stage's cost per frame, waits for room left out)
            room0 = s.room_ns
            t0 = monotonic_ns()
            got += _read_slots(&s) if s.device_ring else _read_frames(&s)
            s.read_ns += monotonic_ns() - t0 - (s.room_ns - room0)
            # held frames that are due (reorder / delay)
            s.now = monotonic_ns()
            got += stages_release_due(&s.stages, s.now, _staged_frame, &s)
            _publish(&s)
            _give_back_slots(&s)
            if got:
                last = now
                if not s.drained:
                    continue
                # the device said it is empty: poll() rather than another
                # read that fails (it returns at once if frames came meanwhile)
            # 3. idle: a tick when timers may be due, then sleep in poll()
            now = monotonic_ns()
            if now - last >= tick_ns:
                _record(&s, REC_TICK, scratch, 0, now)
                _publish(&s)
                last = now
            timeout_ms = <int>(tick_ns // 1000000) or 1
            due = stages_next_due_ns(&s.stages)
            if due - <int64_t>now < <int64_t>timeout_ms * 1000000:
                timeout_ms = <int>((due - <int64_t>now) // 1000000) + 1
            if s.device_ring and s.held:
                _wait_for_slots(&s, checkpoint_every != 0)
                continue
            atomic_store_release_u32(&s.h.sequencer_sleeping, 1)
            atomic_fence_seq_cst()
            if mq_try_take(s.requests, &message):
                atomic_store_release_u32(&s.h.sequencer_sleeping, 0)
                _record(&s, REC_REQUEST, <const uint8_t *>&message, sizeof(Message), monotonic_ns())
                _publish(&s)
                continue
            poll(fds, 2, timeout_ms)
            atomic_store_release_u32(&s.h.sequencer_sleeping, 0)
            if fds[1].revents & POLLIN:
                read(wake_fd, scratch, 8)
        # the end of the log
        if s.stages.pcap != NULL:
            pcap_flush(s.stages.pcap)
        _publish_stop(&s)
        if s.inline != NULL:
            _run_inline(&s)
            s.inline.cnt.end_ns = monotonic_ns()
            s.inline.cnt.cpu_ns += s.inline_ns
            atomic_store_release_u64(&s.inline.cnt.done, 1)
    free(s.frame_buffer)
    free(s.slot_need)
    stats = dict(s.stats)
    stats["arp_replies"] = s.link.arp_replies
    return stats


cdef void _publish_stop(Sequencer *s) noexcept nogil:
    # STOP may find the ring full if a worker is dead; give up after a wait.
    cdef Descriptor *d
    _publish(s)
    if not ring_has_room(s.ring, 1, 0):
        if ring_wait_space(s.ring, 1, 0, WAIT_SPIN, WAIT_TIMEOUT_NS) != 0:
            ring_stop(s.ring)
            return
    d = ring_claim(s.ring, 0)
    if d == NULL:
        ring_stop(s.ring)
        return
    d.kind = REC_STOP
    d.length = 0
    d.seq = <uint32_t>s.digest_round
    d.now_ns = monotonic_ns()
    ring_commit(s.ring)


# ---------------------------------------------------------------------------
# A log writer for the replay source and the sequencer's own benchmark
# ---------------------------------------------------------------------------

cdef class LogWriter:
    """The sequencer's describing, usable without a device: frames handed in
    from Python (the replay source, which models a NIC with header/data
    split) go through exactly the code a live sequencer runs, and so do the
    records.  Nothing waits: the ring must be large enough for the log."""
    cdef Sequencer s
    cdef BroadcastRing ring_owner

    def __cinit__(self, BroadcastRing ring, str local_address, *, bint coalesce=True, local_address6=None):
        self.ring_owner = ring
        _init(&self.s, ring, None, None, -1, local_address, 0, None, None, coalesce, local_address6)

    def __dealloc__(self):
        free(self.s.frame_buffer)

    def frame(self, const uint8_t[::1] frame, uint64_t now):
        """One frame (virtio-net header + IP packet), as a split read of the
        device would have delivered it; returns False if the log is full."""
        cdef uint32_t n = <uint32_t>frame.shape[0]
        cdef uint32_t head
        if n > MAX_FRAME:
            raise ValueError(f"a frame of {n} bytes is larger than any device delivers")
        if not ring_has_room(self.s.ring, 3, MAX_FRAME + HEADER_ROOM):
            return False
        self.s.now = now
        head = self.s.split if n > self.s.split else n
        memcpy(self.s.header, &frame[0], head)
        if n > head:
            memcpy(ring_data_tail(self.s.ring), &frame[head], n - head)
        _split_frame(&self.s, n)
        return True

    def record(self, uint8_t kind, const uint8_t[::1] data=None, uint64_t now=0, uint32_t seq=0):
        """A record (REC_REQUEST with a Message, REC_TICK, REC_DIGEST with
        its round in `seq`, REC_STOP); returns False if the log is full."""
        cdef uint32_t n = 0 if data is None else <uint32_t>data.shape[0]
        cdef Descriptor *d
        if not ring_has_room(self.s.ring, 1, n + FRAME_ALIGN):
            return False
        d = ring_claim(self.s.ring, n + FRAME_ALIGN)
        d.kind = kind
        d.frame_flags = 0
        d.length = n
        d.seq = seq
        d.now_ns = now
        if n:
            memcpy(ring_data_tail(self.s.ring), &data[0], n)
        ring_data_grow(self.s.ring, (n + FRAME_ALIGN - 1) & ~(<uint32_t>FRAME_ALIGN - 1))
        return True

    def commit(self):
        """Publish what is pending (a device read batch ends here)."""
        ring_commit(self.s.ring)

    @property
    def counters(self):
        return dict(self.s.stats)


def bench_describe(BroadcastRing ring, const uint8_t[::1] blob, offsets, str local_address, uint64_t rounds,
                   bint describe=True, bint coalesce=True):
    """The sequencer's per-frame cost on frames already in memory (bench/).

    Each frame of `blob` (at `offsets`, plus the end) is handed over as a
    split read would deliver it -- its headers copied to the header buffer,
    its payload to the data tail (the copy the kernel's readv would make) --
    and described (`describe`), or, as before descriptors, published whole
    as a REC_FRAME (`describe=False`).  The ring is drained by pretending
    every consumer released everything after each batch.  Returns the
    nanoseconds spent, the frames handed over and the sequencer counters
    (a first, untimed round touches every page of the log)."""
    cdef Sequencer s
    cdef uint32_t nf = len(offsets) - 1
    cdef uint64_t[::1] offs
    cdef uint64_t i, r, start, spent = 0, frames = 0
    cdef uint32_t n, head, c
    cdef uint64_t off
    import array
    offs = array.array("Q", offsets)
    _init(&s, ring, None, None, -1, local_address, 0, None, None, coalesce)
    with nogil:
        for r in range(rounds + 1):         # round 0 warms up: every page of the log touched once
            for i in range(nf):
                off = offs[i]
                n = <uint32_t>(offs[i + 1] - off)
                s.now = i + 1
                start = monotonic_ns()
                if describe:
                    head = s.split if n > s.split else n
                    memcpy(s.header, &blob[off], head)
                    if n > head:
                        memcpy(ring_data_tail(s.ring), &blob[off + head], n - head)
                    _split_frame(&s, n)
                else:
                    memcpy(ring_data_tail(s.ring), &blob[off], n)
                    _whole_frame(&s, n, vnet_frame_flags(<const virtio_net_hdr *>&blob[off]),
                                 vnet_gso_size(<const virtio_net_hdr *>&blob[off]))
                if (i + 1) % BATCH == 0 or i + 1 == nf:
                    ring_commit(s.ring)
                    for c in range(s.ring.n_consumers):
                        s.ring.ctl.consumers[c].cursor = s.ring.ctl.producer.cursor
                        s.ring.ctl.consumers[c].data_cursor = s.ring.ctl.producer.data_cursor
                if r:
                    spent += monotonic_ns() - start
                    frames += 1
    free(s.frame_buffer)
    return spent, frames, dict(s.stats)
