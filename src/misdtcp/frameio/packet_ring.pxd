# A TPACKET_V2 receive ring of an AF_PACKET socket (PACKET_RX_RING), as the
# kernel lays it out (net/packet/af_packet.c, tpacket_rcv; the facts are in
# docs/DESIGN.md, "Device facts"): a mapping of `slots` fixed-size slots,
# slot i at i * slot_size (blocks are whole numbers of slots).  Each slot
# starts with a `tpacket2_hdr`; the frame itself (Ethernet header onwards)
# lies at tp_mac, the 10-byte virtio-net header the socket asked for with
# PACKET_VNET_HDR at tp_mac - 10, the IP header at tp_net.
#
# Ownership of a slot is its tp_status word: the kernel fills a slot only
# while it reads TP_STATUS_KERNEL, strictly in ring order (it drops frames
# rather than skip a slot we still hold), and sets TP_STATUS_USER with the
# frame in place.  We read the word with an acquire load (the frame bytes
# written before it are then visible) and give the slot back with a release
# store of TP_STATUS_KERNEL once nobody reads its bytes any more.
#
# The inline functions are the hot path (the sequencer, the `single` loop);
# `RxRing` sets the ring up on a socket and owns the mapping.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from misdtcp._system cimport atomic_load_acquire_u32, atomic_store_release_u32

cdef enum:
    # tp_status bits of a received frame (linux/if_packet.h)
    TP_STATUS_KERNEL = 0
    TP_STATUS_USER = 1 << 0
    TP_STATUS_COPY = 1 << 1
    TP_STATUS_LOSING = 1 << 2
    TP_STATUS_CSUMNOTREADY = 1 << 3
    TP_STATUS_VLAN_VALID = 1 << 4
    TP_STATUS_CSUM_VALID = 1 << 7
    TP_STATUS_GSO_TCP = 1 << 8          # newer than the Debian 12 uapi header; the kernel sets it
    # the virtio-net header a PACKET_VNET_HDR socket's RX ring puts at
    # tp_mac - RX_VNET_HDR_LEN: always the legacy 10-byte one (even with
    # PACKET_VNET_HDR_SZ 12), without num_buffers
    RX_VNET_HDR_LEN = 10
    # PACKET_RESERVE: bytes the kernel leaves free before the frame, chosen so
    # that tp_net (the IP header) lands 4-aligned at 92 and a TCP payload after
    # a header with timestamps (52 bytes) 16-aligned at 144
    RX_RESERVE = 2

ctypedef struct tpacket2_hdr:           # 32 bytes (linux/if_packet.h)
    uint32_t tp_status
    uint32_t tp_len                     # the frame's length on the wire
    uint32_t tp_snaplen                 # the bytes in the slot (less when the slot is too small)
    uint16_t tp_mac                     # offset of the Ethernet header from the slot start
    uint16_t tp_net                     # offset of the network header
    uint32_t tp_sec
    uint32_t tp_nsec
    uint16_t tp_vlan_tci
    uint16_t tp_vlan_tpid
    uint8_t tp_padding[4]

ctypedef struct PacketRx:               # a mapped RX ring, as one process sees it
    uint8_t *base                       # the mapping (MAP_SHARED, inherited by forked children)
    uint64_t size                       # slots * slot_size
    uint32_t slots
    uint32_t slot_size
    int fd                              # the socket (poll() it; ARP replies are written to it)


cdef inline tpacket2_hdr *rx_slot(const PacketRx *rx, uint32_t index) noexcept nogil:
    return <tpacket2_hdr *>(rx.base + <uint64_t>index * rx.slot_size)


cdef inline uint64_t rx_slot_offset(const PacketRx *rx, uint32_t index) noexcept nogil:
    return <uint64_t>index * rx.slot_size


cdef inline bint rx_slot_ready(tpacket2_hdr *h) noexcept nogil:
    """The kernel handed this slot over (acquire: its frame is visible)."""
    return (atomic_load_acquire_u32(&h.tp_status) & TP_STATUS_USER) != 0


cdef inline void rx_slot_give_back(tpacket2_hdr *h) noexcept nogil:
    """Return the slot to the kernel (release: our reads of it come first)."""
    atomic_store_release_u32(&h.tp_status, TP_STATUS_KERNEL)


cdef inline uint32_t rx_next(const PacketRx *rx, uint32_t index) noexcept nogil:
    index += 1
    return 0 if index == rx.slots else index


cdef class RxRing:
    cdef PacketRx rx
    cdef readonly uint32_t block_size
    cdef uint32_t _head                 # Python reads (tests) only
    cdef readonly uint64_t lost         # PACKET_STATISTICS sums (see statistics())
    cdef readonly uint64_t received
