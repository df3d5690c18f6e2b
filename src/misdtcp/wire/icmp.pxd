# ICMP for IPv4 (RFC 792): field offsets and the message types misdtcp uses.
cdef enum:
    ICMP_TYPE = 0
    ICMP_CODE = 1
    ICMP_CHECKSUM = 2
    ICMP_REST = 4            # identifier + sequence number of an echo
    ICMP_HDR_LEN = 8

cdef enum:
    ICMP_ECHO_REPLY = 0
    ICMP_DEST_UNREACH = 3
    ICMP_ECHO_REQUEST = 8
    ICMP_TIME_EXCEEDED = 11
    ICMP_PARAMETER_PROBLEM = 12

# Destination-unreachable codes (RFC 792, RFC 1122 §3.2.2.1, RFC 1812 §5.2.7.1)
cdef enum:
    ICMP_NET_UNREACH = 0
    ICMP_HOST_UNREACH = 1
    ICMP_PROT_UNREACH = 2
    ICMP_PORT_UNREACH = 3
    ICMP_FRAG_NEEDED = 4
    ICMP_SR_FAILED = 5
    ICMP_NET_UNKNOWN = 6
    ICMP_HOST_UNKNOWN = 7
    ICMP_HOST_ISOLATED = 8
    ICMP_NET_ANO = 9
    ICMP_HOST_ANO = 10
    ICMP_NET_UNR_TOS = 11
    ICMP_HOST_UNR_TOS = 12
    ICMP_PKT_FILTERED = 13
    ICMP_PREC_VIOLATION = 14
    ICMP_PREC_CUTOFF = 15
