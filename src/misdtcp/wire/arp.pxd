# ARP for IPv4 over Ethernet (RFC 826): what a host must do for its own
# address, and nothing more.  A request whose target protocol address is ours
# is answered with a reply carrying our hardware address, sent to the
# requester (RFC 826, "Packet Reception": swap the hardware and protocol
# fields, put in the local addresses, set the opcode to reply).  Everything
# else -- replies, requests for other addresses, other hardware or protocol
# types -- is not ours.  misdtcp never resolves addresses itself: its one
# next hop (the kernel's end of the link) is known when the link is set up.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy
from misdtcp.wire.bytes cimport rd16, rd32, wr16, wr32
from misdtcp.wire.ethernet cimport ETH_ALEN, ETH_HLEN, ETH_P_ARP, ETH_P_IP, write_eth_header

# Field offsets in an ARP packet for Ethernet/IPv4 (RFC 826, "Packet format").
cdef enum:
    ARP_HTYPE = 0            # hardware type
    ARP_PTYPE = 2            # protocol type
    ARP_HLEN = 4             # hardware address length
    ARP_PLEN = 5             # protocol address length
    ARP_OPER = 6             # opcode
    ARP_SHA = 8              # sender hardware address
    ARP_SPA = 14             # sender protocol address
    ARP_THA = 18             # target hardware address
    ARP_TPA = 24             # target protocol address
    ARP_LEN = 28

cdef enum:
    ARP_HTYPE_ETHERNET = 1
    ARP_OP_REQUEST = 1
    ARP_OP_REPLY = 2
    ARP_FRAME_LEN = ETH_HLEN + ARP_LEN   # 42: a reply as misdtcp sends it (the device pads, if it must)


cdef inline bint arp_is_request_for(const uint8_t *a, uint32_t n, uint32_t local_addr) noexcept nogil:
    """An ARP packet of n bytes at `a` is a well-formed Ethernet/IPv4 request
    whose target protocol address is `local_addr` (host order)."""
    return n >= ARP_LEN and rd16(a + ARP_HTYPE) == ARP_HTYPE_ETHERNET and rd16(a + ARP_PTYPE) == ETH_P_IP \
        and a[ARP_HLEN] == ETH_ALEN and a[ARP_PLEN] == 4 and rd16(a + ARP_OPER) == ARP_OP_REQUEST \
        and rd32(a + ARP_TPA) == local_addr


cdef inline void write_arp_reply(uint8_t *p, const uint8_t *request, const uint8_t *own_mac,
                                 uint32_t local_addr) noexcept nogil:
    """The ARP_FRAME_LEN-byte Ethernet frame answering `request` (the ARP
    packet arp_is_request_for accepted): from us to the requester's hardware
    address, saying that `local_addr` is at `own_mac`."""
    cdef uint8_t *a = p + ETH_HLEN
    write_eth_header(p, request + ARP_SHA, own_mac, ETH_P_ARP)
    wr16(a + ARP_HTYPE, ARP_HTYPE_ETHERNET)
    wr16(a + ARP_PTYPE, ETH_P_IP)
    a[ARP_HLEN] = ETH_ALEN
    a[ARP_PLEN] = 4
    wr16(a + ARP_OPER, ARP_OP_REPLY)
    memcpy(a + ARP_SHA, own_mac, ETH_ALEN)
    wr32(a + ARP_SPA, local_addr)
    memcpy(a + ARP_THA, request + ARP_SHA, ETH_ALEN)
    memcpy(a + ARP_TPA, request + ARP_SPA, 4)
