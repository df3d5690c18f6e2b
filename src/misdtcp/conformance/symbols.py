"""The symbolic constants a packetdrill script may name, with Linux's values.

Scripts are written against the socket API of Linux (or of a BSD written
the same way): ``SOL_SOCKET``, ``EINPROGRESS``, ``POLLOUT``.  The runner
evaluates them to these numbers, and prints errno values back by name.
ICMP type and code names are the ones packetdrill's icmp_packet.c uses.
"""
from __future__ import annotations

# <errno.h>, Linux
ERRNO = {
    "EPERM": 1, "ENOENT": 2, "EINTR": 4, "EIO": 5, "EBADF": 9, "EAGAIN": 11, "EWOULDBLOCK": 11,
    "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16, "EEXIST": 17, "EINVAL": 22, "EMFILE": 24,
    "ENOSPC": 28, "EPIPE": 32, "ENONET": 64, "EPROTO": 71, "ENOTSOCK": 88, "EDESTADDRREQ": 89,
    "EMSGSIZE": 90, "EPROTOTYPE": 91, "ENOPROTOOPT": 92, "EPROTONOSUPPORT": 93,
    "ESOCKTNOSUPPORT": 94, "EOPNOTSUPP": 95, "ENOTSUP": 95, "EAFNOSUPPORT": 97, "EADDRINUSE": 98,
    "EADDRNOTAVAIL": 99, "ENETDOWN": 100, "ENETUNREACH": 101, "ENETRESET": 102,
    "ECONNABORTED": 103, "ECONNRESET": 104, "ENOBUFS": 105, "EISCONN": 106, "ENOTCONN": 107,
    "ESHUTDOWN": 108, "ETIMEDOUT": 110, "ECONNREFUSED": 111, "EHOSTDOWN": 112,
    "EHOSTUNREACH": 113, "EALREADY": 114, "EINPROGRESS": 115,
}
ERRNO_NAMES = {}
for _name, _value in ERRNO.items():
    ERRNO_NAMES.setdefault(_value, _name)

CONSTANTS = {
    # <sys/socket.h>
    "AF_UNSPEC": 0, "AF_INET": 2, "AF_INET6": 10, "PF_INET": 2, "PF_INET6": 10,
    "SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3, "SOCK_NONBLOCK": 0o4000, "SOCK_CLOEXEC": 0o2000000,
    "SOL_SOCKET": 1, "IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17,
    "IPPROTO_IPV6": 41, "SOL_TCP": 6, "SOL_IP": 0,
    "SO_DEBUG": 1, "SO_REUSEADDR": 2, "SO_TYPE": 3, "SO_ERROR": 4, "SO_DONTROUTE": 5,
    "SO_BROADCAST": 6, "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_KEEPALIVE": 9, "SO_OOBINLINE": 10,
    "SO_NO_CHECK": 11, "SO_PRIORITY": 12, "SO_LINGER": 13, "SO_REUSEPORT": 15, "SO_RCVLOWAT": 18,
    "SO_SNDLOWAT": 19, "SO_RCVTIMEO": 20, "SO_SNDTIMEO": 21,
    "TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5,
    "TCP_KEEPCNT": 6, "TCP_SYNCNT": 7, "TCP_LINGER2": 8, "TCP_DEFER_ACCEPT": 9,
    "TCP_WINDOW_CLAMP": 10, "TCP_INFO": 11, "TCP_QUICKACK": 12, "TCP_CONGESTION": 13,
    "TCP_USER_TIMEOUT": 18, "TCP_NOTSENT_LOWAT": 25, "TCP_FASTOPEN": 23,
    # <netinet/in.h> socket options at IPPROTO_IP
    "IP_TOS": 1, "IP_TTL": 2,
    # MSG_* flags
    "MSG_OOB": 0x1, "MSG_PEEK": 0x2, "MSG_DONTROUTE": 0x4, "MSG_TRUNC": 0x20, "MSG_DONTWAIT": 0x40,
    "MSG_EOR": 0x80, "MSG_WAITALL": 0x100, "MSG_NOSIGNAL": 0x4000, "MSG_MORE": 0x8000,
    # shutdown(2)
    "SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2,
    # fcntl(2)
    "F_GETFD": 1, "F_SETFD": 2, "F_GETFL": 3, "F_SETFL": 4, "FD_CLOEXEC": 1,
    "O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_NONBLOCK": 0o4000, "O_NDELAY": 0o4000,
    # poll(2)
    "POLLIN": 0x1, "POLLPRI": 0x2, "POLLOUT": 0x4, "POLLERR": 0x8, "POLLHUP": 0x10,
    "POLLNVAL": 0x20, "POLLRDNORM": 0x40, "POLLRDBAND": 0x80, "POLLWRNORM": 0x100,
    "POLLWRBAND": 0x200, "POLLRDHUP": 0x2000,
    # ioctl(2)
    "SIOCINQ": 0x541B, "FIONREAD": 0x541B, "SIOCOUTQ": 0x5411, "SIOCATMARK": 0x8905,
}

# ICMPv4 types and destination-unreachable codes by packetdrill's names (RFC 792, RFC 1812).
ICMP_TYPES = {
    "echo_reply": 0, "unreachable": 3, "source_quench": 4, "redirect": 5, "echo_request": 8,
    "time_exceeded": 11, "parameter_problem": 12, "timestamp_request": 13, "timestamp_reply": 14,
    "information_request": 15, "information_reply": 16, "address_mask_request": 17,
    "address_mask_reply": 18,
}
ICMP_UNREACHABLE_CODES = {
    "net_unreachable": 0, "host_unreachable": 1, "protocol_unreachable": 2, "port_unreachable": 3,
    "frag_needed": 4, "source_route_failed": 5, "net_unknown": 6, "host_unknown": 7,
    "source_host_isolated": 8, "net_prohibited": 9, "host_prohibited": 10,
    "net_unreachable_for_tos": 11, "host_unreachable_for_tos": 12, "packet_filtered": 13,
    "precedence_violation": 14, "precedence_cutoff": 15,
}
ICMP_TIME_EXCEEDED_CODES = {"ttl_exceeded_in_transit": 0, "frag_reass_exceeded": 1}
ICMP_REDIRECT_CODES = {"redirect_net": 0, "redirect_host": 1, "redirect_tos_net": 2, "redirect_tos_host": 3}


# ICMPv6 types and codes by packetdrill's names (RFC 4443), for --ip_version=ipv6.
ICMP6_TYPES = {"unreachable": 1, "packet_too_big": 2, "time_exceeded": 3, "parameter_problem": 4,
               "echo_request": 128, "echo_reply": 129}
ICMP6_UNREACHABLE_CODES = {"net_unreachable": 0, "no_route": 0, "admin_prohibited": 1, "not_neighbour": 2,
                           "address_unreachable": 3, "port_unreachable": 4}
ICMP6_TIME_EXCEEDED_CODES = {"exceeded_hop_limit": 0, "exceeded_frag_time": 1}
ICMP6_PARAMPROB_CODES = {"header_field": 0, "unknown_next_header": 1, "unknown_option": 2}


def icmp_type(name: str, v6: bool = False) -> int | None:
    """The ICMPv4 (ICMPv6: `v6`) type a script names (``unreachable`` or
    ``type_N``), or None."""
    table = ICMP6_TYPES if v6 else ICMP_TYPES
    if name in table:
        return table[name]
    return _numbered(name, "type_")


def icmp_code(type_value: int, name: str | None, v6: bool = False) -> int | None:
    """The ICMPv4 (ICMPv6: `v6`) code a script names for a type (``code_N``
    for any type), or None."""
    if name is None:
        return 0
    if v6:
        table = {1: ICMP6_UNREACHABLE_CODES, 3: ICMP6_TIME_EXCEEDED_CODES, 4: ICMP6_PARAMPROB_CODES}.get(
            type_value, {})
    else:
        table = {3: ICMP_UNREACHABLE_CODES, 11: ICMP_TIME_EXCEEDED_CODES, 5: ICMP_REDIRECT_CODES}.get(
            type_value, {})
    if name in table:
        return table[name]
    return _numbered(name, "code_")


def _numbered(name: str, prefix: str) -> int | None:
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        value = int(name[len(prefix):])
        return value if value <= 255 else None
    return None
