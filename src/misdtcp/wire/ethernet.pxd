# Ethernet II framing (IEEE 802.3 clause 3.2.6, the "DIX" type field; RFC 894
# for IPv4 over it): the 14-byte header in front of every frame of a
# packet-ring device.  Named field offsets, the EtherTypes misdtcp handles,
# and zero-copy accessors and a builder over the caller's bytes.  MAC
# addresses are 6 bytes in transmission order; no Ethernet FCS is ever seen
# or written (the device adds and strips it).
from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcmp, memcpy
from misdtcp.wire.bytes cimport rd16, wr16

cdef enum:
    ETH_ALEN = 6             # bytes in a MAC address
    ETH_DEST = 0             # field offsets in the header
    ETH_SOURCE = 6
    ETH_TYPE = 12
    ETH_HLEN = 14            # header length (no 802.1Q tag: tagged frames are not ours)

cdef enum:
    ETH_P_IP = 0x0800        # IPv4 (RFC 894)
    ETH_P_ARP = 0x0806       # ARP (RFC 826)


cdef inline uint16_t eth_type(const uint8_t *f) noexcept nogil:
    return rd16(f + ETH_TYPE)


cdef inline bint eth_is_broadcast(const uint8_t *mac) noexcept nogil:
    return (mac[0] & mac[1] & mac[2] & mac[3] & mac[4] & mac[5]) == 0xff


cdef inline bint eth_same(const uint8_t *a, const uint8_t *b) noexcept nogil:
    return memcmp(a, b, ETH_ALEN) == 0


cdef inline bint eth_for_us(const uint8_t *f, const uint8_t *own_mac) noexcept nogil:
    """The frame's destination is our address or the broadcast address (a
    real interface that is not promiscuous takes nothing else; multicast is
    not joined)."""
    return eth_same(f + ETH_DEST, own_mac) or eth_is_broadcast(f + ETH_DEST)


cdef inline void write_eth_header(uint8_t *p, const uint8_t *dst, const uint8_t *src,
                                  uint16_t ethertype) noexcept nogil:
    memcpy(p + ETH_DEST, dst, ETH_ALEN)
    memcpy(p + ETH_SOURCE, src, ETH_ALEN)
    wr16(p + ETH_TYPE, ethertype)
