# cython: language_level=3
"""Seeded, deterministic fault injection for the device I/O path (drop, corrupt,
duplicate, reorder, delay), one ``FaultInjector`` per direction.

``tc netem`` does not exist on the kernels misdtcp runs on, so faults between
the kernel and the stack are made here (docs/DESIGN.md, "Device facts").  The C-level
protocol the sequencer and the writers follow is described in
``faults.pxd``; ``FaultInjector.process`` is the same protocol in Python for
tests and tools.

Determinism: every decision draws exactly five numbers from a splitmix64
generator, whatever the rates are, so the i-th decision depends only on the
seed and i, and changing one rate does not reshuffle the others.

Corruption models the wire.  On a wire, a frame has complete checksums, so:

1. A frame the kernel left checksum-partial (vnet ``NEEDS_CSUM``) first gets
   its L4 checksum completed in place (over ``csum_start`` .. end, into
   ``csum_start + csum_offset``), and ``NEEDS_CSUM`` / ``DATA_VALID`` are
   cleared, so the receiver verifies it instead of trusting it.  A GSO
   super-frame is completed as one large segment: a receiver that verifies it
   drops the whole super-frame, which is the loss of all of its wire segments
   (a single bit error on a real wire would cost one of them).
2. Then 1 to 3 distinct bits are flipped at random positions inside the bytes
   that a checksum covers: the IPv4 header (except the version/IHL byte,
   whose corruption changes what the header checksum covers and so makes
   detection depend on the receiver's parser) and, when the L4 protocol has a
   checksum (TCP, ICMP, UDP with a non-zero checksum, first fragment only),
   the whole L4 segment.  Other bytes (Ethernet-style trailers beyond
   ``tot_len``) are not touched.
3. The one's-complement sum misses some multi-bit errors (two flips of the
   same bit position in opposite directions cancel; about 2^-16 of random
   errors).  After flipping, the checksums are verified; if they still match,
   one more distinct bit is flipped, which always breaks the match (a single
   flip changes the sum by +-2^k, never 0 mod 0xFFFF).  So a corrupted frame
   is *always* detectable by its checksums, never by chance accepted.

IPv6 has no header checksum: there the bits flipped lie in the source and
destination addresses (which the pseudo-header covers) and the upper-layer
segment (TCP, ICMPv6 or UDP right after the fixed header), never in the
version, traffic class, flow label, length, next header or hop limit.

Frames that are neither (and IPv6 frames with extension headers, which no
checksum covers) are left untouched and counted in ``corrupt_skipped``.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, INT64_MAX, UINT64_MAX
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy

from misdtcp.wire.vnet cimport virtio_net_hdr, VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID
from misdtcp.wire.checksum cimport csum_partial, csum_fold, csum_finish, csum_pseudo_v4, csum_pseudo_v6

cdef enum:
    PPM = 1000000
    MAX_EXTRA_FLIPS = 8


class FaultConfigError(ValueError):
    """A fault-injection setting is out of range; the message says which and why."""


# -- random numbers -------------------------------------------------------------
cdef uint64_t fault_random(FaultState *st) noexcept nogil:
    # splitmix64 (Steele, Lea, Flood 2014): full period, passes BigCrush, and
    # the state is one integer, so a seed fully determines the sequence.
    cdef uint64_t z
    st.rng += <uint64_t>0x9E3779B97F4A7C15
    z = st.rng
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline uint32_t _below(uint64_t r, uint32_t n) noexcept nogil:
    # multiply-shift instead of modulo: unbiased to 2^-32 and no division
    return <uint32_t>(((r >> 32) * <uint64_t>n) >> 32)


cdef inline bint _chance(uint64_t r, uint32_t ppm) noexcept nogil:
    return _below(r, PPM) < ppm


# -- decisions --------------------------------------------------------------------
cdef uint32_t fault_decide(FaultState *st, int64_t now_ns) noexcept nogil:
    cdef uint64_t r_drop = fault_random(st)
    cdef uint64_t r_corrupt = fault_random(st)
    cdef uint64_t r_duplicate = fault_random(st)
    cdef uint64_t r_reorder = fault_random(st)
    cdef uint64_t r_delay = fault_random(st)
    cdef uint32_t action = FAULT_PASS
    st.counters.decisions += 1
    if _chance(r_drop, st.drop_ppm):
        st.counters.dropped += 1
        return FAULT_DROP
    if _chance(r_corrupt, st.corrupt_ppm):
        action |= FAULT_CORRUPT
    if _chance(r_duplicate, st.duplicate_ppm):
        action |= FAULT_DUPLICATE
        st.counters.duplicated += 1
    # a frame is held at most once: reordering wins over delay
    if _chance(r_reorder, st.reorder_ppm):
        action |= FAULT_REORDER
    elif _chance(r_delay, st.delay_ppm):
        action |= FAULT_DELAY
    if action == FAULT_PASS:
        st.counters.passed += 1
    return action


# -- corruption ---------------------------------------------------------------------
cdef inline uint16_t _get16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef uint32_t _l4_checked_end(const uint8_t *frame, uint32_t length, uint32_t ihl) noexcept nogil:
    """End of the bytes covered by the L4 checksum, or 0 if the L4 part has none."""
    cdef uint32_t end = _get16(frame + 2)
    cdef uint8_t proto = frame[9]
    if end > length or end < ihl:
        end = length
    if _get16(frame + 6) & 0x3FFF:
        return 0  # a fragment: the L4 checksum spans fragments, nothing per frame
    if proto == 6 and end - ihl >= 20:
        return end
    if proto == 1 and end - ihl >= 8:
        return end
    if proto == 17 and end - ihl >= 8 and _get16(frame + ihl + 6) != 0:
        return end
    return 0


cdef uint32_t _l4_checked_end6(const uint8_t *frame, uint32_t length) noexcept nogil:
    """End of the upper-layer bytes an IPv6 frame's checksum covers, or 0 when
    no checksum follows the fixed header (an extension header, another
    protocol, a frame shorter than its header)."""
    cdef uint32_t end = 40 + <uint32_t>_get16(frame + 4)
    if length < 40:
        return 0
    if end > length:
        end = length
    if (frame[6] == 6 and end >= 60) or ((frame[6] == 58 or frame[6] == 17) and end >= 48):
        return end
    return 0


cdef bint _checksums_ok6(const uint8_t *frame, uint32_t length) noexcept nogil:
    cdef uint32_t end = _l4_checked_end6(frame, length)
    if end == 0:
        return True
    return csum_fold(csum_partial(frame + 40, end - 40,
                                  csum_pseudo_v6(frame + 8, frame + 24, frame[6], end - 40))) == 0xFFFF


cdef bint frame_checksums_ok(const uint8_t *frame, uint32_t length) noexcept nogil:
    """True if an IPv4 or IPv6 frame with complete checksums would pass a
    receiver's checks."""
    cdef uint32_t ihl, l4_end
    cdef uint64_t total
    if length >= 40 and (frame[0] >> 4) == 6:
        return _checksums_ok6(frame, length)
    if length < 20 or (frame[0] >> 4) != 4:
        return False
    ihl = (frame[0] & 0x0F) * 4
    if ihl < 20 or ihl > length:
        return False
    if csum_fold(csum_partial(frame, ihl, 0)) != 0xFFFF:
        return False
    l4_end = _l4_checked_end(frame, length, ihl)
    if l4_end == 0:
        return True
    total = csum_partial(frame + ihl, l4_end - ihl, 0)
    if frame[9] != 1:  # TCP and UDP include the pseudo-header, ICMP does not
        total += csum_pseudo_v4(frame + 12, frame + 16, frame[9], l4_end - ihl)
    return csum_fold(total) == 0xFFFF


cdef void _complete_partial_checksum(virtio_net_hdr *hdr, uint8_t *frame, uint32_t length) noexcept nogil:
    cdef uint32_t start = hdr.csum_start
    cdef uint32_t field = start + hdr.csum_offset
    cdef uint16_t value
    if field + 2 <= length:
        # The field already holds the pseudo-header sum, so summing from
        # csum_start to the end and inverting gives the full checksum
        # (the same as the kernel's skb_checksum_help).
        value = csum_finish(csum_partial(frame + start, length - start, 0))
        if value == 0 and hdr.csum_offset == 6:
            value = 0xFFFF  # UDP sends a computed 0 as all ones; 0 means "no checksum" (RFC 768)
        memcpy(frame + field, &value, 2)
    hdr.flags &= ~(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)


cdef inline bint _bit_taken(const uint32_t *bits, int n, uint32_t bit) noexcept nogil:
    cdef int i
    for i in range(n):
        if bits[i] == bit:
            return True
    return False


cdef int fault_corrupt(FaultState *st, virtio_net_hdr *hdr, uint8_t *frame, uint32_t length) noexcept nogil:
    """Corrupt an IPv4 or IPv6 frame in place so that its checksums no longer
    match; 0 on success."""
    cdef uint32_t ihl, l4_end, covered_bits, bit, first_bit = 8
    cdef uint32_t flipped[3 + MAX_EXTRA_FLIPS]
    cdef int nflips, i, extra
    if length >= 40 and (frame[0] >> 4) == 6:
        l4_end = _l4_checked_end6(frame, length)
        if l4_end == 0:
            st.counters.corrupt_skipped += 1
            return -1
        first_bit = 64          # bytes 8.. : the addresses, then the upper-layer segment
    elif length < 20 or (frame[0] >> 4) != 4:
        st.counters.corrupt_skipped += 1
        return -1
    else:
        ihl = (frame[0] & 0x0F) * 4
        if ihl < 20 or ihl > length:
            st.counters.corrupt_skipped += 1
            return -1
        l4_end = _l4_checked_end(frame, length, ihl)
        if l4_end == 0:
            l4_end = ihl  # only the IP header is covered by a checksum
    if hdr != NULL and (hdr.flags & VNET_F_NEEDS_CSUM):
        _complete_partial_checksum(hdr, frame, length)
    elif hdr != NULL:
        hdr.flags &= ~VNET_F_DATA_VALID  # "already verified" would skip the check we are testing
    # candidate bits: byte 1 (IPv6: 8) .. l4_end-1 (byte 0 is version/IHL, see module docstring)
    covered_bits = l4_end * 8 - first_bit
    nflips = 1 + <int>_below(fault_random(st), 3)
    i = 0
    while i < nflips:
        bit = first_bit + _below(fault_random(st), covered_bits)
        if _bit_taken(flipped, i, bit):
            continue  # distinct bits, so two draws cannot undo each other
        flipped[i] = bit
        frame[bit >> 3] ^= <uint8_t>(0x80 >> (bit & 7))
        i += 1
    extra = 0
    while frame_checksums_ok(frame, length) and extra < MAX_EXTRA_FLIPS:
        # The flips cancelled in the one's-complement sum; one more distinct
        # flip always breaks the match (module docstring, point 3).
        bit = first_bit + _below(fault_random(st), covered_bits)
        if _bit_taken(flipped, nflips + extra, bit):
            continue
        flipped[nflips + extra] = bit
        frame[bit >> 3] ^= <uint8_t>(0x80 >> (bit & 7))
        extra += 1
    st.counters.corrupted += 1
    return 0


# -- holding frames (reorder, delay) ------------------------------------------------
cdef int fault_hold(FaultState *st, const uint8_t *data, uint32_t length, uint64_t meta,
                    int64_t release_at_ns, uint64_t release_after) noexcept nogil:
    """Copy a frame into the pool until it is due; -1 (counted) if it cannot be held."""
    cdef uint32_t i
    cdef HeldFrame *slot
    if length > st.slot_bytes or st.nheld >= st.slots:
        st.counters.hold_refused += 1
        return -1
    for i in range(st.slots):
        slot = &st.held[i]
        if not slot.in_use:
            memcpy(slot.data, data, length)
            slot.length = length
            slot.meta = meta
            slot.release_at_ns = release_at_ns
            slot.release_after = release_after
            slot.order = st.next_order
            slot.in_use = 1
            st.next_order += 1
            st.nheld += 1
            return 0
    st.counters.hold_refused += 1
    return -1


cdef int fault_hold_for(FaultState *st, const uint8_t *data, uint32_t length, uint64_t meta,
                        uint32_t action, int64_t now_ns) noexcept nogil:
    """Hold a frame as fault_decide asked (FAULT_REORDER or FAULT_DELAY)."""
    cdef int64_t release_at
    cdef uint64_t gap
    if action & FAULT_REORDER:
        # overtaken by the next 1..reorder_gap frames, or by time on an idle link
        gap = 1 + _below(fault_random(st), st.reorder_gap)
        if fault_hold(st, data, length, meta, now_ns + st.reorder_max_ns, st.counters.decisions + gap) != 0:
            return -1
        st.counters.reordered += 1
        return 0
    if action & FAULT_DELAY:
        release_at = now_ns + st.delay_ns
        if st.jitter_ns > 0:
            # jitter can exceed 2^32 ns, so a 64-bit modulo (bias < 2^-30 for jitter <= 60 s)
            release_at += <int64_t>(fault_random(st) % <uint64_t>(st.jitter_ns + 1))
        if fault_hold(st, data, length, meta, release_at, UINT64_MAX) != 0:
            return -1
        st.counters.delayed += 1
        return 0
    return -1


cdef HeldFrame *fault_due(FaultState *st, int64_t now_ns) noexcept nogil:
    """The held frame that is due and arrived first, or NULL; release it with fault_release."""
    cdef uint32_t i
    cdef HeldFrame *slot
    cdef HeldFrame *best = NULL
    if st.nheld == 0:
        return NULL
    for i in range(st.slots):
        slot = &st.held[i]
        if slot.in_use and (now_ns >= slot.release_at_ns or st.counters.decisions >= slot.release_after):
            if best == NULL or slot.order < best.order:
                best = slot
    return best


cdef void fault_release(FaultState *st, HeldFrame *frame) noexcept nogil:
    if frame != NULL and frame.in_use:
        frame.in_use = 0
        st.nheld -= 1
        st.counters.released += 1


cdef int64_t fault_next_due_ns(FaultState *st) noexcept nogil:
    """Earliest release time of a held frame, INT64_MAX if none is held."""
    cdef uint32_t i
    cdef int64_t best = INT64_MAX
    if st.nheld == 0:
        return best
    for i in range(st.slots):
        if st.held[i].in_use and st.held[i].release_at_ns < best:
            best = st.held[i].release_at_ns
    return best


# -- Python configuration ------------------------------------------------------------
cdef uint32_t _rate_ppm(str name, object value) except? 0xFFFFFFFF:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise FaultConfigError(f"{name} must be a probability between 0 and 1, not {value!r}.") from None
    if not 0.0 <= rate <= 1.0:
        raise FaultConfigError(f"{name} must be a probability between 0 and 1, not {value!r}.")
    return <uint32_t>round(rate * PPM)


cdef int64_t _ms_ns(str name, object value) except? -1:
    try:
        ms = float(value)
    except (TypeError, ValueError):
        raise FaultConfigError(f"{name} must be a number of milliseconds, not {value!r}.") from None
    if not 0.0 <= ms <= 60000.0:
        raise FaultConfigError(f"{name} must be between 0 and 60000 ms, not {value!r}.")
    return <int64_t>round(ms * 1e6)


_SPEC_KEYS = ("drop", "corrupt", "duplicate", "reorder", "delay", "delay_ms", "jitter_ms",
              "reorder_gap", "reorder_max_ms", "seed", "pool_slots", "slot_bytes")


cdef class FaultInjector:
    """Faults for one direction.  Rates are probabilities per frame (0..1).

    ``delay`` is the probability that a frame is delayed by ``delay_ms`` (plus
    uniform ``jitter_ms``); ``reorder`` the probability that a frame is held
    and overtaken by the next 1..``reorder_gap`` frames (released after
    ``reorder_max_ms`` at the latest).  Held frames are copies in a fixed pool
    of ``pool_slots`` x ``slot_bytes``; when it is full, frames pass through
    and ``counters["hold_refused"]`` counts them.  ``vnet_hdr_len`` is the
    size of the virtio-net header in front of the frames ``process`` and
    ``corrupt`` get (0 for bare IP packets).
    """

    def __cinit__(self, *args, **kwargs):
        self.state.pool = NULL
        self.state.held = NULL

    def __init__(self, drop=0.0, corrupt=0.0, duplicate=0.0, reorder=0.0, delay=0.0, delay_ms=0.0,
                 jitter_ms=0.0, reorder_gap=3, reorder_max_ms=10.0, seed=0, pool_slots=64,
                 slot_bytes=65536 + VNET_HDR_LEN, vnet_hdr_len=VNET_HDR_LEN):
        cdef uint32_t i
        if not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
            raise FaultConfigError(f"seed must be an integer from 0 to 2**64-1, not {seed!r}.")
        if not isinstance(reorder_gap, int) or not 1 <= reorder_gap <= 1000:
            raise FaultConfigError(f"reorder_gap must be an integer from 1 to 1000, not {reorder_gap!r}.")
        if not isinstance(pool_slots, int) or not 1 <= pool_slots <= 65536:
            raise FaultConfigError(f"pool_slots must be an integer from 1 to 65536, not {pool_slots!r}.")
        if not isinstance(slot_bytes, int) or not 64 <= slot_bytes <= (1 << 20):
            raise FaultConfigError(f"slot_bytes must be an integer from 64 to 1048576, not {slot_bytes!r}.")
        if pool_slots * slot_bytes > (256 << 20):
            raise FaultConfigError(f"the hold pool of {pool_slots} x {slot_bytes} bytes exceeds 256 MiB.")
        if vnet_hdr_len not in (0, 10, 12):
            raise FaultConfigError(f"vnet_hdr_len must be 0, 10 or 12, not {vnet_hdr_len!r}.")
        self.state.drop_ppm = _rate_ppm("drop", drop)
        self.state.corrupt_ppm = _rate_ppm("corrupt", corrupt)
        self.state.duplicate_ppm = _rate_ppm("duplicate", duplicate)
        self.state.reorder_ppm = _rate_ppm("reorder", reorder)
        self.state.delay_ppm = _rate_ppm("delay", delay)
        self.state.delay_ns = _ms_ns("delay_ms", delay_ms)
        self.state.jitter_ns = _ms_ns("jitter_ms", jitter_ms)
        self.state.reorder_max_ns = _ms_ns("reorder_max_ms", reorder_max_ms)
        if self.state.delay_ppm and self.state.delay_ns == 0 and self.state.jitter_ns == 0:
            raise FaultConfigError("a delay rate needs delay_ms or jitter_ms above 0.")
        self.state.reorder_gap = reorder_gap
        self.state.rng = seed
        self.vnet_hdr_len = vnet_hdr_len
        free(self.state.pool)
        free(self.state.held)
        self.state.pool = <uint8_t *>malloc(<size_t>pool_slots * slot_bytes)
        self.state.held = <HeldFrame *>calloc(pool_slots, sizeof(HeldFrame))
        if self.state.pool == NULL or self.state.held == NULL:
            raise MemoryError(f"cannot allocate the fault hold pool of {pool_slots} x {slot_bytes} bytes.")
        self.state.slots = pool_slots
        self.state.slot_bytes = slot_bytes
        for i in range(self.state.slots):
            self.state.held[i].data = self.state.pool + <size_t>i * self.state.slot_bytes
        self.state.nheld = 0
        self.state.next_order = 0
        self.state.counters = FaultCounters(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        self.config = dict(drop=float(drop), corrupt=float(corrupt), duplicate=float(duplicate),
                           reorder=float(reorder), delay=float(delay), delay_ms=float(delay_ms),
                           jitter_ms=float(jitter_ms), reorder_gap=reorder_gap,
                           reorder_max_ms=float(reorder_max_ms), seed=seed, pool_slots=pool_slots,
                           slot_bytes=slot_bytes, vnet_hdr_len=vnet_hdr_len)

    def __dealloc__(self):
        free(self.state.pool)
        free(self.state.held)

    @classmethod
    def from_spec(cls, spec, **defaults):
        """Parse ``"drop=0.01,corrupt=0.001,delay=0.1,delay_ms=5,seed=7"`` (the CLI form)."""
        kwargs = dict(defaults)
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in _SPEC_KEYS:
                raise FaultConfigError(f"{item!r} is not a fault setting; use key=value with keys {', '.join(_SPEC_KEYS)}.")
            value = value.strip()
            try:
                kwargs[key] = int(value, 0) if key in ("seed", "reorder_gap", "pool_slots", "slot_bytes") else float(value)
            except ValueError:
                raise FaultConfigError(f"{key}={value!r} is not a number.") from None
        return cls(**kwargs)

    @property
    def counters(self):
        return self.state.counters

    @property
    def held(self):
        """Number of frames currently held for reordering or delay."""
        return self.state.nheld

    @property
    def enabled(self):
        s = self.state
        return bool(s.drop_ppm or s.corrupt_ppm or s.duplicate_ppm or s.reorder_ppm or s.delay_ppm)

    def decide(self, int64_t now_ns=0):
        """The action bitmask (FAULT_* values) for the next frame."""
        return fault_decide(&self.state, now_ns)

    def corrupt(self, bytearray frame not None):
        """Corrupt ``frame`` (vnet header + IPv4 packet) in place; False if it is not IPv4."""
        cdef uint8_t *p = <uint8_t *>(<char *>frame)
        cdef Py_ssize_t n = len(frame)
        cdef virtio_net_hdr hdr
        cdef uint32_t h = self.vnet_hdr_len
        if n < h:
            raise ValueError(f"a frame of {n} bytes is shorter than its {h}-byte vnet header.")
        if h == 0:
            return fault_corrupt(&self.state, NULL, p, <uint32_t>n) == 0
        hdr.num_buffers = 0
        memcpy(&hdr, p, h)
        ok = fault_corrupt(&self.state, &hdr, p + h, <uint32_t>(n - h)) == 0
        memcpy(p, &hdr, h)
        return ok

    def hold(self, const uint8_t[::1] frame not None, uint64_t meta=0, uint32_t action=FAULT_DELAY,
             int64_t now_ns=0):
        """Hold a copy of ``frame`` as ``action`` asks; False if the pool refused it."""
        return fault_hold_for(&self.state, &frame[0] if frame.shape[0] else NULL, <uint32_t>frame.shape[0],
                              meta, action, now_ns) == 0

    def due(self, int64_t now_ns):
        """The next held frame that is due as ``(bytes, meta)``, or None."""
        cdef HeldFrame *held = fault_due(&self.state, now_ns)
        if held == NULL:
            return None
        out = (PyBytes_FromStringAndSize(<char *>held.data, held.length), held.meta)
        fault_release(&self.state, held)
        return out

    def next_due_ns(self):
        """When the earliest held frame falls due (ns), or None if nothing is held."""
        cdef int64_t t = fault_next_due_ns(&self.state)
        return None if t == INT64_MAX else t

    def process(self, frame, int64_t now_ns=0, uint64_t meta=0):
        """Run one frame through the injector; returns the frames to pass on now, in order.

        The same protocol as the nogil path in ``faults.pxd``: drop, corrupt,
        hold or pass, duplicate, then everything held that has fallen due.
        """
        cdef uint32_t action = fault_decide(&self.state, now_ns)
        out = []
        if not action & FAULT_DROP:
            data = bytearray(frame)
            if action & FAULT_CORRUPT:
                self.corrupt(data)
            data = bytes(data)
            if not (action & (FAULT_REORDER | FAULT_DELAY)) or not self.hold(data, meta, action, now_ns):
                out.append(data)
            if action & FAULT_DUPLICATE:
                out.append(data)
        out.extend(self.release_due(now_ns))
        return out

    def release_due(self, int64_t now_ns):
        """All held frames due at ``now_ns``, in release order."""
        out = []
        while True:
            item = self.due(now_ns)
            if item is None:
                return out
            out.append(item[0])

    def drain(self):
        """Everything still held, in arrival order (for shutdown)."""
        return self.release_due(INT64_MAX)


def checksums_ok(frame):
    """True if a bare IPv4 packet with complete checksums passes IP and L4 checksum checks."""
    cdef const uint8_t[::1] view = frame
    if view.shape[0] == 0:
        return False
    return frame_checksums_ok(&view[0], <uint32_t>view.shape[0])


PASS = FAULT_PASS
DROP = FAULT_DROP
CORRUPT = FAULT_CORRUPT
DUPLICATE = FAULT_DUPLICATE
REORDER = FAULT_REORDER
DELAY = FAULT_DELAY
