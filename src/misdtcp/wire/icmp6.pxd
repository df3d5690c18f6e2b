# ICMPv6 (RFC 4443): field offsets and the message types misdtcp uses.  The
# checksum covers the IPv6 pseudo-header (RFC 4443 §2.3), unlike ICMP's.
cdef enum:
    ICMP6_TYPE = 0
    ICMP6_CODE = 1
    ICMP6_CHECKSUM = 2
    ICMP6_DATA = 4           # echo: identifier + sequence; Packet Too Big: the MTU; parameter problem: a pointer
    ICMP6_HDR_LEN = 8

cdef enum:
    ICMP6_DEST_UNREACH = 1
    ICMP6_PACKET_TOO_BIG = 2
    ICMP6_TIME_EXCEEDED = 3
    ICMP6_PARAMETER_PROBLEM = 4
    ICMP6_ECHO_REQUEST = 128
    ICMP6_ECHO_REPLY = 129

# Destination-unreachable codes (RFC 4443 §3.1)
cdef enum:
    ICMP6_NO_ROUTE = 0
    ICMP6_ADMIN_PROHIBITED = 1
    ICMP6_BEYOND_SCOPE = 2
    ICMP6_ADDR_UNREACH = 3
    ICMP6_PORT_UNREACH = 4
    ICMP6_POLICY_FAIL = 5
    ICMP6_REJECT_ROUTE = 6
