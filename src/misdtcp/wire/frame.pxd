# Device metadata that comes with a frame: from the virtio-net header of a
# TUN read (see vnet.pxd, vnet_frame_flags), or set by a replay source.
cdef enum:
    FRAME_CSUM_PARTIAL = 1   # L4 checksum holds only the pseudo-header sum (NEEDS_CSUM): do not verify
    FRAME_CSUM_VALID = 2     # L4 checksum already verified by the device
    FRAME_VERIFY_CSUM = 4    # force verification (fault injector completed a partial checksum)
