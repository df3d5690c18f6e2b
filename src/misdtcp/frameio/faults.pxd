# Seeded fault injection between the device and the stack (one FaultState per
# direction).  C-level interface for the sequencer (input side: after a frame
# was read into a ring slot, before it is published) and for the writers
# (output side: before write()).  The per-frame protocol, all nogil:
#
#     action = fault_decide(st, now_ns)
#     if action & FAULT_DROP:      forget the frame
#     if action & FAULT_CORRUPT:   fault_corrupt(st, hdr, ip, ip_len)   # in place
#     if action & (FAULT_REORDER | FAULT_DELAY):
#         if fault_hold_for(st, buf, buf_len, meta, action, now_ns) == 0: the frame is held
#         else: pass it on now (pool full: counted in counters.hold_refused)
#     else: pass it on
#     if action & FAULT_DUPLICATE: pass a second copy on
#     while (held = fault_due(st, now_ns)) != NULL:
#         pass held.data[:held.length] on; fault_release(st, held)
#
# and, when idle, wake up at fault_next_due_ns(st) to release delayed frames.
# The held frame is an opaque copy of whatever the caller passed (normally the
# vnet header followed by the IP packet); `meta` travels with it.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from misdtcp.wire.vnet cimport virtio_net_hdr

cdef enum:
    FAULT_PASS = 0
    FAULT_DROP = 1
    FAULT_CORRUPT = 2
    FAULT_DUPLICATE = 4
    FAULT_REORDER = 8
    FAULT_DELAY = 16

ctypedef struct HeldFrame:
    uint8_t *data             # its slot in the pool
    uint32_t length
    uint32_t in_use
    uint64_t meta
    int64_t release_at_ns     # due at this time at the latest
    uint64_t release_after    # ... or once counters.decisions reaches this (reorder)
    uint64_t order            # arrival number: frames due together leave in arrival order

ctypedef struct FaultCounters:
    uint64_t decisions        # frames offered to fault_decide
    uint64_t passed           # decisions with no fault at all
    uint64_t dropped
    uint64_t corrupted        # frames actually corrupted by fault_corrupt
    uint64_t corrupt_skipped  # corrupt requested on a frame without a checksum model (not IPv4)
    uint64_t duplicated
    uint64_t reordered        # frames held for reordering
    uint64_t delayed          # frames held for delay
    uint64_t released         # held frames handed back by fault_due
    uint64_t hold_refused     # hold requested but the pool was full or the frame too big: passed through

ctypedef struct FaultState:
    # probabilities in parts per million, so the hot path stays integer
    uint32_t drop_ppm
    uint32_t corrupt_ppm
    uint32_t duplicate_ppm
    uint32_t reorder_ppm
    uint32_t delay_ppm
    int64_t delay_ns
    int64_t jitter_ns
    int64_t reorder_max_ns    # a reordered frame is released after this even on an idle link
    uint32_t reorder_gap      # a reordered frame lets 1..reorder_gap later frames overtake it
    uint64_t rng              # splitmix64 state
    uint8_t *pool             # slots * slot_bytes bytes
    HeldFrame *held           # slots entries
    uint32_t slots
    uint32_t slot_bytes
    uint32_t nheld
    uint64_t next_order
    FaultCounters counters

cdef uint64_t fault_random(FaultState *st) noexcept nogil
cdef uint32_t fault_decide(FaultState *st, int64_t now_ns) noexcept nogil
cdef int fault_corrupt(FaultState *st, virtio_net_hdr *hdr, uint8_t *frame, uint32_t length) noexcept nogil
cdef int fault_hold(FaultState *st, const uint8_t *data, uint32_t length, uint64_t meta,
                    int64_t release_at_ns, uint64_t release_after) noexcept nogil
cdef int fault_hold_for(FaultState *st, const uint8_t *data, uint32_t length, uint64_t meta,
                        uint32_t action, int64_t now_ns) noexcept nogil
cdef HeldFrame *fault_due(FaultState *st, int64_t now_ns) noexcept nogil
cdef void fault_release(FaultState *st, HeldFrame *frame) noexcept nogil
cdef int64_t fault_next_due_ns(FaultState *st) noexcept nogil
cdef bint frame_checksums_ok(const uint8_t *frame, uint32_t length) noexcept nogil

cdef class FaultInjector:
    cdef FaultState state
    cdef readonly uint32_t vnet_hdr_len
    cdef readonly dict config
