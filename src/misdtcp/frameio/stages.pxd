# The per-frame stages between a device and the stack, applied in this one
# place for both directions (after smoltcp's phy::FaultInjector and
# PcapWriter, which wrap a device the same way): the sequencer passes every
# frame it read through them before it enters the log, and the executor every
# frame it writes before it reaches the device.
#
#     stages_apply(s, frame, n, now, emit, context)
#         faults (seeded): drop, corrupt in place, hold back (reorder/delay),
#         duplicate; then for each frame that goes on: capture it (pcap), and
#         call emit(context, frame, n, how)
#     stages_release_due(s, now, emit, context)
#         frames held back that are now due go on the same way
#
# `frame` is a virtio-net header followed by the IP packet.  `how` tells the
# emitter whether the frame is still where the caller put it (EMIT_IN_PLACE:
# the first emission of a frame read into ring memory can be published where
# it lies) and whether it was corrupted on purpose (its checksums must then be
# verified, whatever the device said).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, INT64_MAX
from misdtcp.frameio.faults cimport (FaultState, HeldFrame, fault_decide, fault_corrupt, fault_hold_for,
                                     fault_due, fault_release, fault_next_due_ns, FAULT_DROP, FAULT_CORRUPT,
                                     FAULT_DUPLICATE, FAULT_REORDER, FAULT_DELAY)
from misdtcp.frameio.pcap cimport PcapFile, pcap_write
from misdtcp.wire.vnet cimport virtio_net_hdr, VNET_HDR_LEN

cdef enum:
    EMIT_IN_PLACE = 1
    EMIT_CORRUPTED = 2

ctypedef void (*frame_emit_fn)(void *context, uint8_t *frame, uint32_t n, uint32_t how) noexcept nogil

ctypedef struct FrameStages:
    FaultState *faults          # NULL: no fault injection in this direction
    PcapFile *pcap              # NULL: no capture
    int64_t pcap_offset_ns      # monotonic stamp + this = wall-clock time for the capture


cdef inline bint stages_active(const FrameStages *s) noexcept nogil:
    return s.faults != NULL or s.pcap != NULL


cdef inline void _stages_out(FrameStages *s, uint8_t *frame, uint32_t n, uint32_t how, uint64_t now,
                             frame_emit_fn emit, void *context) noexcept nogil:
    if s.pcap != NULL:
        pcap_write(s.pcap, <int64_t>now + s.pcap_offset_ns, frame + VNET_HDR_LEN, n - VNET_HDR_LEN)
    emit(context, frame, n, how)


cdef inline void stages_apply(FrameStages *s, uint8_t *frame, uint32_t n, uint64_t now,
                              frame_emit_fn emit, void *context) noexcept nogil:
    cdef uint32_t action, how = EMIT_IN_PLACE
    if s.faults == NULL:
        _stages_out(s, frame, n, how, now, emit, context)
        return
    action = fault_decide(s.faults, <int64_t>now)
    if action & FAULT_DROP:
        return
    if action & FAULT_CORRUPT:
        fault_corrupt(s.faults, <virtio_net_hdr *>frame, frame + VNET_HDR_LEN, n - VNET_HDR_LEN)
        how |= EMIT_CORRUPTED
    if action & (FAULT_REORDER | FAULT_DELAY):
        # the pool keeps a copy; it goes on later through stages_release_due
        if fault_hold_for(s.faults, frame, n, how & EMIT_CORRUPTED, action, <int64_t>now) == 0:
            return
    _stages_out(s, frame, n, how, now, emit, context)
    if action & FAULT_DUPLICATE:
        _stages_out(s, frame, n, how & ~(<uint32_t>EMIT_IN_PLACE), now, emit, context)


cdef inline uint32_t stages_release_due(FrameStages *s, uint64_t now, frame_emit_fn emit,
                                        void *context) noexcept nogil:
    """Frames held back by the fault injector that are due now; returns how many went on."""
    cdef HeldFrame *held
    cdef uint32_t count = 0
    if s.faults == NULL:
        return 0
    held = fault_due(s.faults, <int64_t>now)
    while held != NULL:
        _stages_out(s, held.data, held.length, <uint32_t>held.meta, now, emit, context)
        fault_release(s.faults, held)
        count += 1
        held = fault_due(s.faults, <int64_t>now)
    return count


cdef inline int64_t stages_next_due_ns(FrameStages *s) noexcept nogil:
    """When the next held frame is due (INT64_MAX: none is held)."""
    if s.faults == NULL:
        return INT64_MAX
    return fault_next_due_ns(s.faults)
