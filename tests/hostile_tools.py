"""Hostile traffic, sent from the kernel side of the TUN inside a test namespace.

Run as a program *inside* the namespace (``ns.python([hostile_tools.__file__,
"<command>", ...])``); the tests in ``test_hostile_*.py`` do that.  Every
command is bounded in packet count and in time, prints one JSON line with what
it did, and only ever addresses 10.77.0.0/24 through the namespace's TUN
(DESIGN.md, "Network safety").

Frames leave through an AF_PACKET socket bound to the TUN: the kernel hands
them to the device byte for byte, without filling in the IP checksum or the
total length (a raw IP socket with IP_HDRINCL always rewrites both), so frames
that no kernel would ever build reach the stack as written.

Commands
  synflood   spoofed SYNs from random 10.77.0.3-254 sources and random ports,
             at full speed for ``--seconds`` (at least ``--count`` of them),
             or with ``--until-told`` until a line arrives on stdin.
  attack     a legitimate sender from a known port that, between chunks of a
             transfer (when everything sent is acknowledged, so rcv_nxt is
             known exactly) and while data is in flight, injects either blind
             RFC 5961 attacks (``--mode inject``), malformed frames on the
             live 4-tuple (``--mode malformed``), or over IPv6 (``--mode
             malformed6``, to fd00:77::2 from fd00:77::1) malformed IPv6
             frames: extension headers malformed or chained too long, routing
             headers with segments left, fragments, lengths that lie; prints
             the SHA-256 of the stream and how many of each hostile frame it
             sent.
  clients    many kernel clients connecting at once; each outcome classified.
  stuck      a client that writes to a peer that never reads, and watches the
             window close and the zero-window probes being answered.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time

KERNEL_ADDR = "10.77.0.1"
STACK_ADDR = "10.77.0.2"
KERNEL_ADDR6 = "fd00:77::1"
STACK_ADDR6 = "fd00:77::2"
TUN_NAME = "misd0"
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
SIOCOUTQ = 0x5411
PACKET_OUTGOING = 4

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def ip_to_int(address: str) -> int:
    return struct.unpack("!I", socket.inet_aton(address))[0]


# -- checksums (RFC 1071) -------------------------------------------------------

def ones_sum(data: bytes, start: int = 0) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes, start: int = 0) -> int:
    return ~ones_sum(data, start) & 0xFFFF


# -- frame building ------------------------------------------------------------

def tcp_options(mss=None, sack_perm=False, ts=None, wscale=None) -> bytes:
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack_perm:
        out += b"\x04\x02"
    if ts is not None:
        out += struct.pack("!BBII", 8, 10, ts[0], ts[1])
    if wscale is not None:
        out += struct.pack("!BBB", 3, 3, wscale)
    while len(out) % 4:
        out += b"\x01"                       # NOP padding
    return out


def tcp_ip(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"", options: bytes = b"", window: int = 65535, ident: int = 1,
           ttl: int = 64, proto: int = 6) -> bytes:
    """A complete IPv4/TCP packet with correct checksums."""
    thl = 20 + len(options)
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                (thl // 4) << 4, flags, window, 0, 0) + options + payload)
    l4 = len(tcp)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, l4)
    struct.pack_into("!H", tcp, 16, checksum(pseudo + bytes(tcp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4, ident & 0xFFFF, 0x4000, ttl, proto, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", ip, 10, checksum(bytes(ip)))
    return bytes(ip + tcp)


def tcp_ip6(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
            payload: bytes = b"", ext: bytes = b"", first: int = 6, options: bytes = b"",
            window: int = 65535) -> bytes:
    """A complete IPv6/TCP packet with a correct checksum, extension headers
    `ext` (whose first next-header value is `first`) before TCP."""
    thl = 20 + len(options)
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                (thl // 4) << 4, flags, window, 0, 0) + options + payload)
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    struct.pack_into("!H", tcp, 16, checksum(s + d + struct.pack("!II", len(tcp), 6) + bytes(tcp)))
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(tcp), first if ext else 6, 64, s, d)
    return ip + ext + bytes(tcp)


def ext_header(next_header: int, body: bytes) -> bytes:
    """An extension header (hop-by-hop, destination options, routing): next
    header, length in 8-byte units beyond the first, then `body` (padded
    with zeros to a multiple of 8)."""
    raw = bytes([next_header, 0]) + body
    raw += b"\0" * (-len(raw) % 8)
    return bytes([next_header, len(raw) // 8 - 1]) + raw[2:]


def fix_ip_checksum(packet: bytearray) -> bytearray:
    ihl = (packet[0] & 0x0F) * 4
    packet[10:12] = b"\0\0"
    struct.pack_into("!H", packet, 10, checksum(bytes(packet[:ihl])))
    return packet


def fix_tcp_checksum(packet: bytearray, l4_len: int | None = None) -> bytearray:
    ihl = (packet[0] & 0x0F) * 4
    l4 = l4_len if l4_len is not None else len(packet) - ihl
    packet[ihl + 16:ihl + 18] = b"\0\0"
    pseudo = bytes(packet[12:20]) + struct.pack("!BBH", 0, 6, l4)
    struct.pack_into("!H", packet, ihl + 16, checksum(pseudo + bytes(packet[ihl:ihl + l4])))
    return packet


class Link:
    """Sends frames into the TUN from the kernel side (AF_PACKET, as written)."""

    def __init__(self, iface: str = TUN_NAME, protocol: int = ETH_P_IP):
        self.iface = iface
        self.protocol = protocol
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(protocol))
        self.sock.bind((iface, protocol))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sent = 0
        self.busy = 0          # ENOBUFS: the device queue was full; retried

    def send(self, frame: bytes, deadline: float | None = None) -> bool:
        while True:
            try:
                self.sock.sendto(frame, (self.iface, self.protocol))
                self.sent += 1
                return True
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                self.busy += 1
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(50e-6)


class Sniffer(threading.Thread):
    """Watches the TCP segments of one 4-tuple on the TUN (both directions)."""

    def __init__(self, sport: int, dport: int, iface: str = TUN_NAME):
        super().__init__(daemon=True)
        self.sport, self.dport = sport, dport
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.bind((iface, ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.client_isn = None       # kernel's ISN, from its SYN
        self.server_isn = None       # the stack's ISN, from its SYN-ACK
        self.zero_window_acks = 0    # ACKs from the stack advertising window 0
        self.probes = 0              # kernel segments at snd_una - 1 (zero-window probes)
        self.highest_ack = None
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self):
        self.sock.settimeout(0.1)
        self.ready.set()
        while not self.stop.is_set():
            try:
                data, _addr = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            if len(data) >= 60 and data[0] >> 4 == 6 and data[6] == 6:
                ihl = 40                     # IPv6, TCP right after the fixed header
            elif len(data) < 40 or data[0] >> 4 != 4 or data[9] != 6:
                continue
            else:
                ihl = (data[0] & 0x0F) * 4
            sport, dport, seq, ack, off, flags, window = struct.unpack_from("!HHIIBBH", data, ihl)
            payload = len(data) - ihl - (off >> 4) * 4
            if (sport, dport) == (self.sport, self.dport):            # kernel -> stack
                if flags & SYN and not flags & ACK:
                    if self.client_isn is None:     # later SYNs are our own injections
                        self.client_isn = seq
                elif self.highest_ack is not None and payload <= 1 and seq == (self.highest_ack - 1) & 0xFFFFFFFF:
                    self.probes += 1
            elif (sport, dport) == (self.dport, self.sport):          # stack -> kernel
                if flags & SYN and flags & ACK and self.server_isn is None:
                    self.server_isn = seq
                if flags & ACK:
                    self.highest_ack = ack
                    if window == 0 and not flags & SYN:
                        self.zero_window_acks += 1


def outq(sock: socket.socket) -> int:
    """Bytes the kernel has not had acknowledged yet (SIOCOUTQ)."""
    return struct.unpack("I", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]


def wait_drained(sock: socket.socket, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if outq(sock) == 0:
            return True
        time.sleep(0.002)
    return False


# -- synflood -------------------------------------------------------------------

def synflood(args) -> dict:
    """Spoofed SYNs, each built by patching a template and fixing both
    checksums incrementally (RFC 1624): no per-packet object, no scapy."""
    rng = random.Random(args.seed)
    link = Link()
    src0 = ip_to_int("10.77.0.0")
    template = bytearray(tcp_ip("10.77.0.3", args.dst, 1, args.dport, 0, 0, SYN,
                                options=tcp_options(mss=1460, sack_perm=True, ts=(1, 0), wscale=7),
                                window=64240, ident=0))
    # sums of the template with the varying fields zeroed
    t = bytearray(template)
    t[10:12] = b"\0\0"
    t[12:16] = b"\0\0\0\0"
    t[4:6] = b"\0\0"
    ip_base = ones_sum(bytes(t[:20]))
    t[20:22] = b"\0\0"       # sport
    t[24:28] = b"\0\0\0\0"   # seq
    t[36:38] = b"\0\0"       # tcp checksum
    t[48:52] = b"\0\0\0\0"   # tsval (after MSS, SACK-permitted, kind+length)
    dst = ip_to_int(args.dst)
    tcp_base = ones_sum(bytes(t[20:]), (dst >> 16) + (dst & 0xFFFF) + 6 + (len(t) - 20))
    started = time.monotonic()
    deadline = started + args.max_seconds
    sent = 0
    milestones = {args.count // 2: "half", args.count: "count"}
    told = False
    while sent < args.max_count:
        now = time.monotonic()
        if now > deadline:
            break
        if sent >= args.count and now - started >= args.seconds:
            if not args.until_told:
                break
            if not sent & 1023 and select.select([sys.stdin], [], [], 0)[0]:
                told = True
                break
        host = rng.randrange(3, 255)
        src = src0 + host
        sport = rng.randrange(1024, 65536)
        seq = rng.getrandbits(32)
        tsval = rng.getrandbits(32)
        ident = sent & 0xFFFF
        s = ip_base + (src >> 16) + (src & 0xFFFF) + ident
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        struct.pack_into("!H", template, 4, ident)
        struct.pack_into("!HI", template, 10, ~s & 0xFFFF, src)
        s = tcp_base + (src >> 16) + (src & 0xFFFF) + sport + (seq >> 16) + (seq & 0xFFFF) \
            + (tsval >> 16) + (tsval & 0xFFFF)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        struct.pack_into("!H", template, 20, sport)
        struct.pack_into("!I", template, 24, seq)
        struct.pack_into("!H", template, 36, ~s & 0xFFFF)
        struct.pack_into("!I", template, 48, tsval)
        if not link.send(template, deadline):
            break
        sent += 1
        if sent in milestones:
            print(json.dumps({"progress": milestones[sent]}), flush=True)
    return {"sent": sent, "busy": link.busy, "seconds": round(time.monotonic() - started, 3),
            "told": told}


# -- attack: a legitimate transfer with hostile frames on its 4-tuple --------------

def inject_frames(rng, c, quiescent: bool, args) -> list[tuple[str, bytes]]:
    """Blind RFC 5961 attacks on the live connection (c: what an on-path
    observer would know).  When quiescent, rcv_nxt is exact and RSTs are put
    strictly inside the window; in flight only segments whose fate does not
    depend on the exact rcv_nxt are sent."""
    out = []
    window = args.window
    for _ in range(args.per_round):
        if quiescent:
            # an in-window RST anywhere but exactly at rcv_nxt: challenge ACK
            offset = rng.randrange(1, window)
            out.append(("rst", tcp_ip(KERNEL_ADDR, STACK_ADDR, c["sport"], c["dport"],
                                      c["rcv_nxt"] + offset, 0, RST, window=0)))
        # in flight, rcv_nxt lies somewhere in the chunk being sent: aim past
        # its end, still well inside the stack's window
        seq = c["rcv_nxt"] + (0 if quiescent else args.chunk) + rng.randrange(0, window // 2)
        suffix = "" if quiescent else "_in_flight"
        # a SYN on the live 4-tuple, in window: challenge ACK, no reset
        out.append(("syn" + suffix, tcp_ip(KERNEL_ADDR, STACK_ADDR, c["sport"], c["dport"], seq, 0, SYN,
                                           options=tcp_options(mss=1460))))
        # data acknowledging bytes the stack never sent: challenge ACK, data
        # dropped (when quiescent it sits exactly at rcv_nxt)
        if quiescent and rng.random() < 0.5:
            seq = c["rcv_nxt"]
        evil = rng.randbytes(rng.choice((1, 100, 1000)))
        out.append(("ack_unsent" + suffix, tcp_ip(KERNEL_ADDR, STACK_ADDR, c["sport"], c["dport"], seq,
                                                  c["snd_nxt"] + rng.randrange(1 << 16, 1 << 30), ACK | PSH,
                                                  evil)))
    return out


def malformed_frames(rng, c, quiescent: bool) -> list[tuple[str, bytes]]:
    """Malformed frames, most of them on the live 4-tuple at rcv_nxt with a
    payload of garbage: any of them accepted would corrupt the stream."""
    sport, dport, seq, ack = c["sport"], c["dport"], c["rcv_nxt"], c["snd_nxt"]
    garbage = rng.randbytes(700)
    good = bytearray(tcp_ip(KERNEL_ADDR, STACK_ADDR, sport, dport, seq, ack, ACK | PSH, garbage))
    out = []

    def variant(name, mutate):
        p = bytearray(good)
        p = mutate(p) or p
        out.append((name, bytes(p)))

    # IPv4 header
    variant("ip_truncated", lambda p: p[:rng.randrange(1, 20)])
    variant("ip_truncated", lambda p: fix_ip_checksum(_set16(p, 2, len(p) + rng.randrange(1, 2000))))
    variant("ip_version", lambda p: fix_ip_checksum(_set8(p, 0, 0x55)))        # neither 4 nor 6
    variant("ip_header_length", lambda p: fix_ip_checksum(_set8(p, 0, 0x40 | rng.randrange(0, 5))))
    variant("ip_header_length", _ihl_beyond)
    # XOR 0x0f0f never yields a value equal to the old one in one's complement
    # arithmetic (0x0000 and 0xffff are the same number there)
    variant("ip_checksum", lambda p: _set16(p, 10, struct.unpack_from("!H", p, 10)[0] ^ 0x0F0F))
    variant("ip_fragment", lambda p: fix_ip_checksum(_set16(p, 6, 0x2000)))          # MF
    variant("ip_fragment", lambda p: fix_ip_checksum(_set16(p, 6, 185)))             # offset
    variant("bad_source", lambda p: fix_tcp_checksum(fix_ip_checksum(_set32(p, 12, 0xFFFFFFFF))))
    variant("bad_source", lambda p: fix_tcp_checksum(fix_ip_checksum(_set32(p, 12, ip_to_int("127.0.0.1")))))
    variant("not_for_us", lambda p: fix_tcp_checksum(fix_ip_checksum(_set32(p, 16, ip_to_int("10.77.0.3")))))
    variant("protocol", lambda p: fix_ip_checksum(_set8(p, 9, 17)))
    # total length smaller than the frame: what lies past it is link padding,
    # never payload.  Here the total length covers only the TCP header (a
    # valid pure ACK), so the 700 trailing bytes must not reach the stream.
    variant("short_total_length", lambda p: fix_tcp_checksum(fix_ip_checksum(_set16(p, 2, 40)), 20))
    # total length cutting into the TCP header
    variant("tcp_header", lambda p: fix_ip_checksum(_set16(p, 2, 20 + rng.randrange(0, 20))))
    # TCP header
    variant("tcp_header", lambda p: fix_tcp_checksum(_set8(p, 32, rng.randrange(0, 5) << 4)))
    variant("tcp_header", lambda p: fix_tcp_checksum(_doff_beyond(p)))
    variant("tcp_checksum", lambda p: _set16(p, 36, struct.unpack_from("!H", p, 36)[0] ^ 0x0F0F))
    variant("tcp_checksum", lambda p: _flip_payload(p, rng))
    variant("tcp_flags", lambda p: fix_tcp_checksum(_set8(p, 33, SYN | FIN | ACK)))
    variant("tcp_flags", lambda p: fix_tcp_checksum(_set8(p, 33, 0)))
    # option overruns and illegal option lengths (RFC 9293 §3.1, RFC 1122
    # §4.2.2.5): 12 bytes of options whose lengths lie
    for opts in (b"\x08\x0e", b"\x02\x28\x05\xb4", b"\x01\x01\x01\x08",
                 b"\x02\x00\x05\xb4", b"\x02\x01\x05\xb4", b"\x03\x04\x07\x00",
                 b"\x05\x03\x00\x00", b"\x08\x09\x00\x00", b"\x01" * 11 + b"\x02",
                 b"\x01" * 10 + b"\x08\x0a"):
        pkt = tcp_ip(KERNEL_ADDR, STACK_ADDR, sport, dport, seq, ack, ACK | PSH, garbage,
                     options=opts + b"\x00" * (12 - len(opts)))
        out.append(("tcp_options", pkt))
    return out


def malformed6_frames(rng, c, quiescent: bool) -> list[tuple[str, bytes]]:
    """Malformed IPv6 frames on the live 4-tuple at rcv_nxt with a payload of
    garbage, each named by the drop reason it must be counted under: one
    accepted would corrupt the stream."""
    sport, dport, seq, ack = c["sport"], c["dport"], c["rcv_nxt"], c["snd_nxt"]
    garbage = rng.randbytes(700)
    src, dst = KERNEL_ADDR6, STACK_ADDR6
    HOP, ROUTING, FRAGMENT, DSTOPTS, NONE = 0, 43, 44, 60, 59
    out = []

    def frame(ext=b"", first=6, payload=garbage, **kw):
        return bytearray(tcp_ip6(src, dst, sport, dport, seq, ack, ACK | PSH, payload, ext=ext, first=first, **kw))

    def dstopts(nh, options):
        return ext_header(nh, options)

    # extension headers that must not be walked past
    out.append(("ip6_ext_header", bytes(frame(dstopts(HOP, b"") + ext_header(6, b""), DSTOPTS))))  # HBH second
    p = frame(dstopts(6, b"\x01\x04\0\0\0\0"), DSTOPTS)
    p[41] = 200                                                      # Hdr Ext Len past the packet
    out.append(("ip6_ext_header", bytes(p)))
    out.append(("ip6_ext_header", bytes(frame(dstopts(6, b"\x01\x04\0\x07\0\0"), DSTOPTS))))  # PadN not zeros
    out.append(("ip6_ext_header", bytes(frame(dstopts(6, b"\x1e\x09\0\0\0\0"), DSTOPTS))))  # option overruns
    out.append(("ip6_ext_header", bytes(frame(dstopts(6, b"\0" * 14), DSTOPTS))))     # 14 bytes of Pad1
    # a chain that goes on and on ("looping"): 9 and 40 destination-options headers
    for count in (9, 40):
        chain = b"".join(dstopts(DSTOPTS, b"") for _ in range(count - 1)) + dstopts(6, b"")
        out.append(("ip6_ext_chain", bytes(frame(chain, DSTOPTS))))
    # routing headers with segments left: type 0 (RFC 5095) and a segment routing header
    rh0 = ext_header(6, bytes([0, 1, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, "fd00:77::9"))
    out.append(("ip6_routing", bytes(frame(rh0, ROUTING))))
    srh = ext_header(6, bytes([4, 2, 1, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, "fd00:77::8") * 2)
    out.append(("ip6_routing", bytes(frame(srh, ROUTING))))
    # options whose type says "discard" (RFC 8200 §4.2: high bits 01, 10, 11)
    for kind in (0x5E, 0x9E, 0xDE):
        out.append(("ip6_option", bytes(frame(dstopts(6, bytes([kind, 4]) + b"\0" * 4), DSTOPTS))))
    # fragments: first (M set) and a later one
    out.append(("ip_fragment", bytes(frame(bytes([6, 0]) + struct.pack("!HI", 1, rng.getrandbits(32)), FRAGMENT))))
    out.append(("ip_fragment", bytes(frame(bytes([6, 0]) + struct.pack("!HI", 185 << 3, rng.getrandbits(32)),
                                           FRAGMENT))))
    # lengths that lie: payload length past the frame, zero (a jumbogram
    # without its option), a frame shorter than the fixed header
    p = frame()
    struct.pack_into("!H", p, 4, len(p) - 40 + rng.randrange(1, 2000))
    out.append(("ip_truncated", bytes(p)))
    p = frame()
    struct.pack_into("!H", p, 4, 0)
    out.append(("ip_truncated", bytes(p)))
    out.append(("ip_truncated", bytes(frame()[:rng.randrange(1, 40)])))
    # checksums: a flipped payload byte; the sum without the IPv6 pseudo-header (IPv4's)
    p = frame()
    p[-1 - rng.randrange(100)] ^= 0x5A
    out.append(("tcp_checksum", bytes(p)))
    p = frame()
    struct.pack_into("!H", p, 56, 0)
    struct.pack_into("!H", p, 56, checksum(bytes(p[40:])))
    out.append(("tcp_checksum", bytes(p)))
    # sources no host can have
    for bad in ("ff02::1", "::1", "::ffff:10.77.0.1"):
        out.append(("bad_source", tcp_ip6(bad, dst, sport, dport, seq, ack, ACK | PSH, garbage)))
    # no next header; a protocol misdtcp does not speak
    p = frame()
    p[6] = NONE
    out.append(("protocol", bytes(p)))
    out.append(("protocol", bytes(frame(dstopts(17, b""), DSTOPTS))))
    # a TCP data offset below 5
    p = frame()
    p[52] = rng.randrange(0, 5) << 4
    struct.pack_into("!H", p, 56, 0)
    struct.pack_into("!H", p, 56, checksum(socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(
        socket.AF_INET6, dst) + struct.pack("!II", len(p) - 40, 6) + bytes(p[40:])))
    out.append(("tcp_header", bytes(p)))
    return out


def malformed_syns(rng, dport: int, base_port: int) -> list[tuple[str, bytes]]:
    """SYNs for new connections with hostile options: zero MSS (treated as
    absent, as Linux does: 536) and window scale above 14 (RFC 7323 §2.3:
    used as 14).  Each comes from its own port; the kernel answers the SYN-ACK
    with a RST (it never sent the SYN), which frees the half-open slot."""
    out = []
    for i, opts in enumerate((tcp_options(mss=0, sack_perm=True), tcp_options(mss=1460, wscale=15),
                              tcp_options(mss=0, wscale=255), tcp_options(wscale=200, ts=(5, 0)))):
        out.append(("syn_hostile_options", tcp_ip(KERNEL_ADDR, STACK_ADDR, base_port + i, dport,
                                                  rng.getrandbits(32), 0, SYN, options=opts)))
    return out


def _set8(p, off, value):
    p[off] = value
    return p


def _set16(p, off, value):
    struct.pack_into("!H", p, off, value & 0xFFFF)
    return p


def _set32(p, off, value):
    struct.pack_into("!I", p, off, value & 0xFFFFFFFF)
    return p


def _ihl_beyond(p):
    # IHL 15 (60 bytes) on a 50-byte frame
    q = p[:50]
    q[0] = 0x4F
    return q


def _doff_beyond(p):
    # data offset 15 (60 bytes) but only 36 bytes of TCP in the frame
    q = p[:56]
    _set16(q, 2, len(q))
    fix_ip_checksum(q)
    q[32] = 0xF0
    return q


def _flip_payload(p, rng):
    i = rng.randrange(40, len(p))
    p[i] ^= 1 << rng.randrange(8)
    return p


def attack(args) -> dict:
    rng = random.Random(args.seed)
    ipv6 = args.mode == "malformed6"
    link = Link(protocol=ETH_P_IPV6 if ipv6 else ETH_P_IP)
    sniffer = Sniffer(args.sport, args.dport)
    sniffer.start()
    sniffer.ready.wait(5)
    s = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((KERNEL_ADDR6 if ipv6 else KERNEL_ADDR, args.sport))
    s.settimeout(30)
    s.connect((args.dst, args.dport))
    deadline = time.monotonic() + 5
    while (sniffer.client_isn is None or sniffer.server_isn is None) and time.monotonic() < deadline:
        time.sleep(0.001)
    if sniffer.client_isn is None or sniffer.server_isn is None:
        raise SystemExit("did not see the handshake on the TUN")
    conn = {"sport": args.sport, "dport": args.dport,
            "rcv_nxt": (sniffer.client_isn + 1) & 0xFFFFFFFF,
            "snd_nxt": (sniffer.server_isn + 1) & 0xFFFFFFFF}
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    sent = 0
    rounds = 0
    chunk = args.chunk
    hostile_port = 20000
    started = time.monotonic()

    def fire(frames):
        for name, frame in frames:
            if link.send(frame, time.monotonic() + 5):
                counts[name] = counts.get(name, 0) + 1

    def build(quiescent):
        if args.mode == "inject":
            return inject_frames(rng, conn, quiescent, args)
        if ipv6:
            return malformed6_frames(rng, conn, quiescent)
        return malformed_frames(rng, conn, quiescent)

    while sent < args.bytes:
        n = min(chunk, args.bytes - sent)
        block = rng.randbytes(n)
        digest.update(block)
        # in flight: hostile frames while the kernel is pushing this chunk
        failed = []

        def write():
            try:
                s.sendall(block)
            except OSError as exc:          # a reset is exactly what must not happen
                failed.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        if args.mode != "inject" or rounds % 2:
            time.sleep(0.001)
            fire(build(False))
        writer.join(60)
        if failed or writer.is_alive():
            raise SystemExit(f"the legitimate transfer failed after {sent} bytes: {failed or 'stuck'}")
        sent += n
        # quiescent: everything sent is acknowledged, rcv_nxt is exact
        if not wait_drained(s):
            raise SystemExit("the stack stopped acknowledging")
        conn["rcv_nxt"] = (sniffer.client_isn + 1 + sent) & 0xFFFFFFFF
        frames = build(True)
        if args.mode == "malformed" and rounds == 0:
            frames += malformed_syns(rng, args.dport, hostile_port)
        fire(frames)
        rounds += 1
        if time.monotonic() - started > args.max_seconds:
            raise SystemExit("the attack ran out of time")
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
    sniffer.stop.set()
    return {"bytes": sent, "sha256": digest.hexdigest(), "rounds": rounds, "sent": counts,
            "busy": link.busy, "seconds": round(time.monotonic() - started, 3)}


# -- clients: many at once ----------------------------------------------------------

def clients(args) -> dict:
    """``--count`` clients connect at the same moment (non-blocking), each
    sends ``--size`` bytes, half-closes and reads the echo.  Every client ends
    in one of: served (the echo matched), refused / reset (a clean error),
    timeout (nothing within ``--timeout`` s), or wrong (bytes differ: a bug)."""
    import resource
    import selectors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 64), hard))
    sel = selectors.DefaultSelector()
    payloads = {}
    outcomes: dict[str, int] = {}
    state = {}
    deadline = time.monotonic() + args.timeout
    for i in range(args.count):
        s = socket.socket()
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        err = s.connect_ex((args.dst, args.dport))
        if err not in (0, errno.EINPROGRESS):
            outcomes[errno.errorcode.get(err, str(err))] = outcomes.get(errno.errorcode.get(err, str(err)), 0) + 1
            s.close()
            continue
        payloads[s] = os.urandom(args.size)
        state[s] = {"phase": "connect", "out": 0, "got": bytearray()}
        sel.register(s, selectors.EVENT_WRITE)

    def finish_one(s, outcome):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        sel.unregister(s)
        s.close()

    while state and time.monotonic() < deadline:
        for key, _ev in sel.select(timeout=0.2):
            s = key.fileobj
            st = state[s]
            try:
                if st["phase"] == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    st["phase"] = "send"
                if st["phase"] == "send":
                    st["out"] += s.send(payloads[s][st["out"]:])
                    if st["out"] == len(payloads[s]):
                        s.shutdown(socket.SHUT_WR)
                        st["phase"] = "recv"
                        sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
                if data:
                    st["got"] += data
                    continue
                finish_one(s, "served" if bytes(st["got"]) == payloads[s] else "wrong")
                del state[s]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                # ENOTCONN: shutdown() on a socket a RST already closed
                name = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.EPIPE: "reset",
                        errno.ENOTCONN: "reset", errno.ETIMEDOUT: "timeout"}.get(exc.errno, f"error:{exc.errno}")
                finish_one(s, name)
                del state[s]
    for s in list(state):
        finish_one(s, "timeout")
    return {"outcomes": outcomes}


# -- stuck: the peer stops reading -----------------------------------------------------

def stuck(args) -> dict:
    """Write to a stack connection whose application never reads: the
    stack's window must close (our send blocks), and the kernel's zero-window
    probes must be answered (ACKs with window 0 keep arriving).  Then tell
    the test (stdout) and wait for it to let the application read (stdin):
    the rest of the stream must then flow."""
    sniffer = Sniffer(args.sport, args.dport)
    sniffer.start()
    sniffer.ready.wait(5)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.bind((KERNEL_ADDR, args.sport))
    s.settimeout(30)
    s.connect((args.dst, args.dport))
    s.setblocking(False)
    digest = hashlib.sha256()
    rng = random.Random(args.seed)
    written = 0
    last_progress = time.monotonic()
    deadline = time.monotonic() + args.max_seconds
    block = rng.randbytes(1 << 16)
    pending = memoryview(block)
    # 1. write until the kernel cannot hand anything more over for a while
    while time.monotonic() - last_progress < args.idle and time.monotonic() < deadline:
        _r, w, _x = select.select([], [s], [], 0.05)
        if not w:
            continue
        try:
            n = s.send(pending)
        except BlockingIOError:
            continue
        digest.update(pending[:n])
        written += n
        pending = pending[n:]
        if not len(pending):
            block = rng.randbytes(1 << 16)
            pending = memoryview(block)
        last_progress = time.monotonic()
    blocked_at = written
    # 2. watch the zero window for a while: probes go out, ACKs with window 0 come back
    probes0, zw0 = sniffer.probes, sniffer.zero_window_acks
    watch_end = time.monotonic() + args.watch
    while time.monotonic() < watch_end:
        time.sleep(0.05)
    ss = os.popen(f"ss -tinH state established '( sport = :{args.sport} )'").read()
    report = {"written": blocked_at, "unacked": outq(s), "probes": sniffer.probes - probes0,
              "zero_window_acks": sniffer.zero_window_acks - zw0, "ss": ss.strip()}
    print(json.dumps({"blocked": report}), flush=True)
    # 3. the test lets the application read; send what remains of the stream
    if sys.stdin.readline().strip() != "read":
        return {"aborted": True}
    s.setblocking(True)
    s.settimeout(30)
    end_target = blocked_at + args.after
    while written < end_target:
        chunk = pending[: end_target - written]
        s.sendall(chunk)
        digest.update(chunk)
        written += len(chunk)
        pending = pending[len(chunk):]
        if not len(pending):
            block = rng.randbytes(1 << 16)
            pending = memoryview(block)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
    sniffer.stop.set()
    return {"bytes": written, "sha256": digest.hexdigest()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synflood")
    p.add_argument("--dst", default=STACK_ADDR)
    p.add_argument("--dport", type=int, default=9)
    p.add_argument("--count", type=int, default=50_000, help="at least this many SYNs")
    p.add_argument("--seconds", type=float, default=0.0, help="and for at least this long")
    p.add_argument("--until-told", action="store_true",
                   help="then go on until a line arrives on stdin (or --max-seconds)")
    p.add_argument("--max-count", type=int, default=20_000_000)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("attack")
    p.add_argument("--mode", choices=("inject", "malformed", "malformed6"), required=True)
    p.add_argument("--dst", default=STACK_ADDR)
    p.add_argument("--dport", type=int, default=9)
    p.add_argument("--sport", type=int, default=41000)
    p.add_argument("--bytes", type=int, default=16 << 20)
    p.add_argument("--chunk", type=int, default=1 << 20)
    p.add_argument("--per-round", type=int, default=20)
    p.add_argument("--window", type=int, default=1 << 20, help="RSTs/SYNs land within this much of rcv_nxt")
    p.add_argument("--max-seconds", type=float, default=90.0)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("clients")
    p.add_argument("--dst", default=STACK_ADDR)
    p.add_argument("--dport", type=int, default=7)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("stuck")
    p.add_argument("--dst", default=STACK_ADDR)
    p.add_argument("--dport", type=int, default=9)
    p.add_argument("--sport", type=int, default=42000)
    p.add_argument("--idle", type=float, default=1.0, help="seconds without progress that mean 'blocked'")
    p.add_argument("--watch", type=float, default=3.0)
    p.add_argument("--after", type=int, default=8 << 20, help="bytes sent once the app reads again")
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    result = {"synflood": synflood, "attack": attack, "clients": clients, "stuck": stuck}[args.command](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
