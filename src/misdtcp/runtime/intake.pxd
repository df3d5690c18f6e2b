# Frames in from a device, the one way both live loops take them: the
# sequencer (which publishes each frame into the log) and the `single`
# strategy's device loop (which runs the core on it at once).  A round reads
# up to `batch` frames, each straight into the buffer the caller provides
# (for the sequencer: ring memory, so the kernel's copy is the only one),
# stamps it, and passes it through the frame stages (frameio/stages.pxd) to
# the caller's emitter.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from misdtcp._system cimport read, monotonic_ns
from misdtcp.frameio.stages cimport FrameStages, frame_emit_fn, stages_apply, EMIT_IN_PLACE
from misdtcp.wire.vnet cimport VNET_HDR_LEN

cdef enum:
    # The largest frame a device hands over: a 64 KiB GSO super-segment plus
    # its virtio-net header, with room to spare.
    INTAKE_MAX_FRAME = 65536 + 64

# Where to read the next frame (at least `room` bytes), or NULL to end the round.
ctypedef uint8_t *(*intake_buffer_fn)(void *context, uint32_t room) noexcept nogil

ctypedef struct Intake:
    int fd                      # the device (non-blocking)
    uint32_t batch              # frames per round before the caller looks at other work
    uint64_t now                # the stamp of the frame being emitted (for the emitter)
    FrameStages stages


cdef inline uint32_t intake_round(Intake *intake, intake_buffer_fn buffer, frame_emit_fn emit,
                                  void *context) noexcept nogil:
    """Read and emit up to intake.batch frames; returns how many were read."""
    cdef uint32_t count = 0
    cdef uint8_t *p
    cdef long n
    while count < intake.batch:
        p = buffer(context, INTAKE_MAX_FRAME)
        if p == NULL:
            break
        n = read(intake.fd, p, INTAKE_MAX_FRAME)
        if n <= <long>VNET_HDR_LEN:
            break                       # nothing waiting (EAGAIN), or not a frame
        count += 1
        intake.now = monotonic_ns()
        if intake.stages.faults == NULL and intake.stages.pcap == NULL:
            emit(context, p, <uint32_t>n, EMIT_IN_PLACE)
        else:
            stages_apply(&intake.stages, p, <uint32_t>n, intake.now, emit, context)
    return count
