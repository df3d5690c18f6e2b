# The virtio-net header that a TUN opened with IFF_VNET_HDR puts in front of
# every frame (linux/virtio_net.h, struct virtio_net_hdr_v1).  misdtcp sets
# the header size to 12 bytes with TUNSETVNETHDRSZ (the kernel default is 10,
# the legacy struct without num_buffers): 12 keeps the IP header that follows
# 4-byte aligned in a 4-byte aligned buffer, and matches the v1 layout.
#
# Fields are in the TUN's "vnet endianness", which is the host's (little
# endian on x86-64 and arm64) unless TUNSETVNETLE/BE is used; misdtcp never
# sets either, so the struct can be read and written with plain C accesses.
#
# This .pxd has no .pyx: it declares only a struct, constants and inline
# functions, so `cimport`ing it creates no import-time dependency.  The
# Python side is wire/vnet_header.py.
from libc.stdint cimport uint8_t, uint16_t
from misdtcp.wire.frame cimport FRAME_CSUM_PARTIAL, FRAME_CSUM_VALID

cdef enum:
    VNET_HDR_LEN = 12             # bytes misdtcp asks for with TUNSETVNETHDRSZ
    VNET_HDR_LEN_LEGACY = 10      # kernel default (struct virtio_net_hdr)

    # flags
    VNET_F_NEEDS_CSUM = 1   # L4 checksum holds only the pseudo-header sum; complete at csum_start+csum_offset
    VNET_F_DATA_VALID = 2   # checksum already verified (the kernel ignores it on writes)

    # gso_type
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_UDP = 3
    VNET_GSO_TCPV6 = 4
    VNET_GSO_ECN = 0x80

ctypedef struct virtio_net_hdr:
    uint8_t flags
    uint8_t gso_type
    uint16_t hdr_len       # length of the headers of one segment (IP + TCP)
    uint16_t gso_size      # payload bytes per segment (the MSS) when gso_type != NONE
    uint16_t csum_start    # offset of the L4 header from the start of the IP packet
    uint16_t csum_offset   # offset of the checksum field from csum_start (16 for TCP, 6 for UDP)
    uint16_t num_buffers   # mergeable rx buffers; 0 from a TUN, ignored on write


cdef inline void vnet_clear(virtio_net_hdr *h) noexcept nogil:
    h.flags = 0
    h.gso_type = VNET_GSO_NONE
    h.hdr_len = 0
    h.gso_size = 0
    h.csum_start = 0
    h.csum_offset = 0
    h.num_buffers = 0


cdef inline bint vnet_is_gso(const virtio_net_hdr *h) noexcept nogil:
    return (h.gso_type & ~VNET_GSO_ECN) != VNET_GSO_NONE


cdef inline uint16_t vnet_frame_flags(const virtio_net_hdr *h) noexcept nogil:
    """The frame metadata flags (wire/frame.pxd) a received header stands for."""
    if h.flags & VNET_F_NEEDS_CSUM:
        return FRAME_CSUM_PARTIAL
    if h.flags & VNET_F_DATA_VALID:
        return FRAME_CSUM_VALID
    return 0


cdef inline uint16_t vnet_gso_size(const virtio_net_hdr *h) noexcept nogil:
    """Payload bytes per segment of a GSO super-frame; 0 for a plain frame."""
    return h.gso_size if vnet_is_gso(h) else 0
