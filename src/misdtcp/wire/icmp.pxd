# ICMP for IPv4 (RFC 792): field offsets and the message types misdtcp uses.
cdef enum:
    ICMP_TYPE = 0
    ICMP_CODE = 1
    ICMP_CHECKSUM = 2
    ICMP_REST = 4            # identifier + sequence number of an echo
    ICMP_HDR_LEN = 8

cdef enum:
    ICMP_ECHO_REPLY = 0
    ICMP_ECHO_REQUEST = 8
