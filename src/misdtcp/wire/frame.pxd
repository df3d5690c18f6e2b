# Device metadata that comes with a frame: from the virtio-net header of a
# TUN read or a packet-ring slot (see vnet.pxd, vnet_frame_flags), or set by
# a replay source; and where a logged frame lies.
cdef enum:
    FRAME_CSUM_PARTIAL = 1   # L4 checksum holds only the pseudo-header sum (NEEDS_CSUM): do not verify
    FRAME_CSUM_VALID = 2     # L4 checksum already verified by the device
    FRAME_VERIFY_CSUM = 4    # force verification (fault injector completed a partial checksum)
    # Where a log descriptor's bytes lie (wire/descriptor.pxd): set, `data` is
    # their offset in the device's receive ring (a packet-ring device, where
    # the frame stays in the slot the kernel wrote it to); clear, a position
    # in the log's data area.  Checksum code never looks at it; the top bit,
    # well apart from the device's metadata.
    FRAME_IN_DEVICE = 0x8000
    # With FRAME_IN_DEVICE: the payload is a run of segments of `gso_size`
    # bytes (the last may be shorter), each in its own slot of the device's
    # ring, one slot size apart -- consecutive frames the sequencer coalesced
    # where they lie, as GRO would have merged them (runtime/describe.pxd).
    FRAME_STRIDED = 0x4000
