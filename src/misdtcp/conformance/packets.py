"""Packets of a script on the wire: inbound ones built, outbound ones parsed
and compared.

A script writes sequence numbers relative to each side's initial sequence
number, as packetdrill does (``Flow`` holds the mapping of one connection):

* inbound ``seq`` goes on the wire as written (the script's peer picks its
  own ISN); inbound ``ack`` and SACK blocks are in the stack's space and get
  the stack's ISN added (learned from its SYN or SYN-ACK);
* outbound ``seq`` is compared after subtracting the stack's ISN; outbound
  ``ack`` and SACK blocks are in the peer's space and compared as written;
* an inbound ``TS ecr`` names a ``TS val`` the script wrote on an earlier
  outbound packet and is replaced by the value the stack really sent;
  outbound ``TS val`` is checked for presence only, ``TS ecr`` exactly.

``--relaxed`` leaves out what each stack chooses for itself: outbound window
values, the values of the MSS and window-scale options, and the order and
NOP/EOL padding of options.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from misdtcp.conformance import nodes
from misdtcp.conformance.symbols import icmp_code, icmp_type
from misdtcp.wire.codec import internet_checksum

U32 = 1 << 32

# TCP header flag bits (RFC 9293 §3.1; RFC 3168 ECE/CWR; RFC 9768 AE in the reserved bits)
FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20, "E": 0x40, "W": 0x80,
             "A": 0x100}
FLAG_ORDER = "SFRPUEWA"       # how a live packet's flags are printed (packetdrill's order), then '.'

OPT_NAMES = {0: "eol", 1: "nop", 2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 8: "TS", 19: "md5",
             34: "FO", 254: "FOEXP"}


class PacketError(Exception):
    """A script packet the runner cannot put on the wire (one sentence)."""


@dataclass
class Flow:
    """One connection as the script sees it: its ports and sequence mapping."""
    local_port: int                 # the stack's port
    remote_port: int                # the script peer's port
    live_isn: int | None = None     # the stack's ISN, from its SYN or SYN-ACK
    script_isn: int = 0             # what the script wrote for it
    handle: int | None = None       # the core's connection handle, once known

    @property
    def offset(self) -> int:
        """Add to a script value in the stack's sequence space to get the wire value."""
        return ((self.live_isn if self.live_isn is not None else 0) - self.script_isn) % U32


@dataclass
class TimestampMap:
    """Script TS val -> live TS val of outbound packets, for inbound TS ecr."""
    exact: dict = field(default_factory=dict)
    last_offset: int | None = None

    def learn(self, script_val: int, live_val: int) -> None:
        self.exact[script_val] = live_val
        self.last_offset = (live_val - script_val) % U32

    def live(self, script_ecr: int) -> int:
        if script_ecr in self.exact:
            return self.exact[script_ecr]
        if script_ecr == 0 or self.last_offset is None:
            return script_ecr
        # a TS val the script never wrote: the stack's clock runs as the script's (1 ms)
        return (script_ecr + self.last_offset) % U32


# ---------------------------------------------------------------------------
# Building inbound packets
# ---------------------------------------------------------------------------

def _ipv4_header(src: bytes, dst: bytes, proto: int, total: int, ip: nodes.IpInfo | None,
                 ident: int = 0) -> bytes:
    tos = 0
    ttl = 64
    if ip is not None:
        if ip.tos is not None:
            tos = ip.tos
        if ip.ecn is not None:
            tos = (tos & ~3) | {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3}[ip.ecn]
        if ip.ttl is not None:
            ttl = ip.ttl
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, ident, 0x4000, ttl, proto, 0, src, dst))
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header)


def _ipv6_header(src: bytes, dst: bytes, next_header: int, payload: int, ip: nodes.IpInfo | None) -> bytes:
    """The fixed IPv6 header (RFC 8200 §3): traffic class from `ip` (tos,
    ecn), hop limit from its ttl, flow label 0."""
    tclass = 0
    hop_limit = 64
    if ip is not None:
        if ip.tos is not None:
            tclass = ip.tos
        if ip.ecn is not None:
            tclass = (tclass & ~3) | {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3}[ip.ecn]
        if ip.ttl is not None:
            hop_limit = ip.ttl
    return struct.pack("!IHBB16s16s", 6 << 28 | tclass << 20, payload, next_header, hop_limit, src, dst)


def _ip_header(src: bytes, dst: bytes, proto: int, l4_length: int, ip: nodes.IpInfo | None) -> bytes:
    """IPv4 or IPv6 (by the addresses' length) in front of l4_length bytes."""
    if len(src) == 16:
        return _ipv6_header(src, dst, 58 if proto == 1 else proto, l4_length, ip)
    return _ipv4_header(src, dst, proto, 20 + l4_length, ip)


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The pseudo-header TCP (and ICMPv6) checksums cover: RFC 9293 §3.1,
    RFC 8200 §8.1."""
    if len(src) == 16:
        return src + dst + struct.pack("!II", length, proto)
    return src + dst + struct.pack("!BBH", 0, proto, length)


def _tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    return internet_checksum(_pseudo(src, dst, 6, len(segment)) + segment)


def tcp_flag_bits(flags: frozenset[str]) -> int:
    bits = 0
    for char in flags:
        if char.isdigit():
            ace = int(char)        # AccECN ACE counter: AE, CWR, ECE (RFC 9768 §3.2.2)
            bits |= (0x100 if ace & 4 else 0) | (0x80 if ace & 2 else 0) | (0x40 if ace & 1 else 0)
            bits |= 0x10           # an ACE digit is written only on ACKs
        else:
            bits |= FLAG_BITS[char]
    return bits


def encode_options(options, flow: Flow, tsmap: TimestampMap) -> bytes:
    """The option bytes of an inbound packet, in the order written."""
    out = bytearray()
    for opt in options:
        if isinstance(opt, nodes.Nop):
            out += b"\x01"
        elif isinstance(opt, nodes.Eol):
            out += b"\x00"
        elif isinstance(opt, nodes.Mss):
            out += struct.pack("!BBH", 2, 4, opt.value)
        elif isinstance(opt, nodes.WindowScale):
            if opt.shift is None:
                raise PacketError("'wscale *' can only be used on outbound packets")
            out += struct.pack("!BBB", 3, 3, opt.shift)
        elif isinstance(opt, nodes.SackPermitted):
            out += b"\x04\x02"
        elif isinstance(opt, nodes.Sack):
            out += struct.pack("!BB", 5, 2 + 8 * len(opt.blocks))
            for left, right in opt.blocks:
                out += struct.pack("!II", (left + flow.offset) % U32, (right + flow.offset) % U32)
        elif isinstance(opt, nodes.Timestamp):
            out += struct.pack("!BBII", 8, 10, opt.val, tsmap.live(opt.ecr))
        elif isinstance(opt, nodes.FastOpen):
            cookie = opt.cookie_bytes
            if cookie is None:
                raise PacketError(f"the fast open cookie {opt.cookie!r} is not hex")
            if opt.experimental:
                out += struct.pack("!BBH", 254, 4 + len(cookie), 0xF989) + cookie
            else:
                out += struct.pack("!BB", 34, 2 + len(cookie)) + cookie
        elif isinstance(opt, nodes.Md5):
            digest = opt.digest_bytes
            if digest is None:
                raise PacketError(f"the MD5 digest {opt.digest!r} is not hex")
            out += struct.pack("!BB", 19, 2 + len(digest)) + digest
        else:
            raise PacketError(f"the TCP option '{opt.to_script()}' cannot be sent by this runner")
    if len(out) > 40:
        raise PacketError(f"the TCP options take {len(out)} bytes; a TCP header has room for 40")
    return bytes(out)


def build_tcp(pkt: nodes.TcpPacket, flow: Flow, tsmap: TimestampMap, src: bytes, dst: bytes) -> bytes:
    """An inbound TCP packet (IPv4, or IPv6 with 16-byte addresses) from the
    script peer to the stack."""
    options = encode_options(pkt.options, flow, tsmap)
    options += b"\x00" * (-len(options) % 4)
    sport, dport = pkt.ports if pkt.ports is not None else (flow.remote_port, flow.local_port)
    bits = tcp_flag_bits(pkt.flags)
    seq = pkt.seq.start % U32
    ack = (pkt.ack + flow.offset) % U32 if pkt.ack is not None else 0
    offset_flags = ((20 + len(options)) // 4) << 12 | bits
    header = struct.pack("!HHIIHHHH", sport, dport, seq, ack, offset_flags, pkt.win or 0, 0, pkt.urg or 0)
    segment = bytearray(header + options + bytes(pkt.seq.length))
    struct.pack_into("!H", segment, 16, _tcp_checksum(src, dst, bytes(segment)))
    return _ip_header(src, dst, 6, len(segment), pkt.ip) + bytes(segment)


def build_icmp(pkt: nodes.IcmpPacket, flow: Flow, src: bytes, dst: bytes) -> bytes:
    """An inbound ICMPv4 message, or ICMPv6 (RFC 4443: 16-byte addresses,
    packetdrill's ICMPv6 names); errors quote an IP header and the first 20
    bytes of a TCP header of a segment the stack sent (RFC 792, RFC 1812
    §4.3.2.3 quotes as much as fits; 8 bytes would do)."""
    v6 = len(src) == 16
    type_value = icmp_type(pkt.icmp_type, v6)
    if type_value is None:
        raise PacketError(f"unknown {'ICMPv6' if v6 else 'ICMP'} type {pkt.icmp_type!r}")
    code_value = icmp_code(type_value, pkt.icmp_code, v6)
    if code_value is None:
        raise PacketError(f"unknown {'ICMPv6' if v6 else 'ICMP'} code {pkt.icmp_code!r} for type {pkt.icmp_type}")
    rest = 0
    if pkt.mtu is not None:
        if v6 and type_value != 2:
            raise PacketError("an ICMPv6 MTU belongs to packet_too_big only")
        # RFC 1191 §4: next-hop MTU in the low 16 bits; RFC 4443 §3.2: all 32
        rest = pkt.mtu & (0xffffffff if v6 else 0xffff)
    if pkt.echo_id is not None:
        rest = pkt.echo_id << 16
    if (type_value >= 128) if v6 else (type_value in (0, 8, 13, 14, 15, 16, 17, 18)):
        body = b""                          # queries and replies quote nothing
    else:
        quoted_seq = 0
        if pkt.echoed is not None and pkt.echoed.protocol != "tcp":
            raise PacketError(f"the ICMP message quotes a {pkt.echoed.protocol} packet; only TCP is supported")
        if pkt.echoed is not None:
            quoted_seq = pkt.echoed.seq.start
        live_seq = (quoted_seq + flow.offset) % U32
        tcp = struct.pack("!HHIIHHHH", flow.local_port, flow.remote_port, live_seq, 0, 5 << 12 | 0x10, 0, 0, 0)
        body = _ip_header(dst, src, 6, 20 + (pkt.echoed.seq.length if pkt.echoed is not None else 0), None) + tcp
    message = bytearray(struct.pack("!BBHI", type_value, code_value, 0, rest) + body)
    # ICMPv6's checksum covers the pseudo-header (RFC 4443 §2.3), ICMP's does not
    pseudo = _pseudo(src, dst, 58, len(message)) if v6 else b""
    struct.pack_into("!H", message, 2, internet_checksum(pseudo + bytes(message)))
    return _ip_header(src, dst, 1, len(message), pkt.ip) + bytes(message)


# ---------------------------------------------------------------------------
# Outbound packets
# ---------------------------------------------------------------------------

@dataclass
class LivePacket:
    """A packet the stack sent, parsed (payload is known by length only)."""
    time_ns: int
    protocol: int
    tos: int
    ttl: int
    df: bool
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    win: int = 0
    urg: int = 0
    options: list = field(default_factory=list)      # [(kind, value bytes)] in wire order
    payload_len: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    handle: int | None = None

    @property
    def seg_len(self) -> int:
        return self.payload_len + (1 if self.flags & 0x02 else 0) + (1 if self.flags & 0x01 else 0)

    def option(self, kind: int) -> bytes | None:
        for k, value in self.options:
            if k == kind:
                return value
        return None

    def timestamp(self) -> tuple[int, int] | None:
        value = self.option(8)
        return struct.unpack("!II", value) if value is not None and len(value) == 8 else None


def parse_live(header: bytes, payload_len: int, time_ns: int, handle: int | None) -> LivePacket:
    """Parse what a Transmit action carries: IPv4 or IPv6 + TCP (or ICMP,
    ICMPv6) header.  An ICMPv6 message is kept as protocol 1 with its own
    type and code (the script names them in its family's terms); an IPv6
    packet is never fragmented on the way (RFC 8200 §5): df."""
    if header[0] >> 4 == 6:
        ihl = 40
        tos, ttl, proto = (struct.unpack_from("!I", header)[0] >> 20) & 0xff, header[7], header[6]
        proto = 1 if proto == 58 else proto
        df = True
    else:
        ihl = (header[0] & 0x0f) * 4
        tos, ttl, proto = header[1], header[8], header[9]
        df = bool(struct.unpack_from("!H", header, 6)[0] & 0x4000)
    pkt = LivePacket(time_ns, proto, tos, ttl, df, handle=handle)
    l4 = header[ihl:]
    if proto == 1:
        pkt.icmp_type, pkt.icmp_code = l4[0], l4[1]
        pkt.payload_len = payload_len
        return pkt
    pkt.sport, pkt.dport, pkt.seq, pkt.ack, off_flags, pkt.win, _, pkt.urg = struct.unpack_from("!HHIIHHHH", l4)
    hlen = (off_flags >> 12) * 4
    pkt.flags = off_flags & 0x1ff
    pkt.payload_len = payload_len + len(l4) - hlen
    opts = l4[20:hlen]
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind in (0, 1):
            pkt.options.append((kind, b""))
            i += 1
            continue
        size = opts[i + 1] if i + 1 < len(opts) else 0
        if size < 2:
            pkt.options.append((kind, bytes(opts[i + 2:])))
            break
        pkt.options.append((kind, bytes(opts[i + 2:i + size])))
        i += size
    return pkt


def flags_text(bits: int) -> str:
    text = "".join(c for c in FLAG_ORDER if bits & FLAG_BITS[c])
    if bits & 0x10:
        text += "."
    return text or "-"


def _option_text(kind: int, value: bytes, flow: Flow | None, script_ts: int | None = None) -> str:
    if kind in (0, 1):
        return OPT_NAMES[kind]
    if kind == 2 and len(value) == 2:
        return f"mss {struct.unpack('!H', value)[0]}"
    if kind == 3 and len(value) == 1:
        return f"wscale {value[0]}"
    if kind == 4:
        return "sackOK"
    if kind == 5 and len(value) % 8 == 0:
        blocks = [struct.unpack_from("!II", value, i) for i in range(0, len(value), 8)]
        return "sack " + " ".join(f"{left}:{right}" for left, right in blocks)
    if kind == 8 and len(value) == 8:
        val, ecr = struct.unpack("!II", value)
        return f"TS val {val if script_ts is None else script_ts} ecr {ecr}"
    return f"{OPT_NAMES.get(kind, f'option {kind}')} ({len(value)} bytes)"


def render_live(pkt: LivePacket, flow: Flow | None) -> str:
    """A live packet in script syntax, in the script's sequence space."""
    if pkt.protocol == 1:
        return f"> icmp type_{pkt.icmp_type} code_{pkt.icmp_code}"
    offset = flow.offset if flow is not None else 0
    seq = (pkt.seq - offset) % U32
    text = f"> {flags_text(pkt.flags)} {seq}:{(seq + pkt.payload_len) % U32}({pkt.payload_len})"
    if pkt.flags & 0x10 or pkt.ack:
        text += f" ack {pkt.ack}"
    text += f" win {pkt.win}"
    if pkt.urg:
        text += f" urg {pkt.urg}"
    if pkt.options:
        text += " <" + ",".join(_option_text(k, v, flow) for k, v in pkt.options) + ">"
    return text


def compare_tcp(expected: nodes.TcpPacket, pieces: list, flow: Flow, relaxed: bool) -> str | None:
    """None when the live segment (one packet, or consecutive ones that
    together carry the scripted payload, as a TSO/GSO burst would) matches
    the script line, else "expected …, got …" for the first field that
    differs."""
    live = pieces[0]
    got = render_live(live, flow) if len(pieces) == 1 else \
        " + ".join(render_live(p, flow) for p in pieces)
    if live.protocol != 6:
        return f"expected a TCP segment, got {got}"
    want_bits = tcp_flag_bits(expected.flags)
    got_bits = 0
    for p in pieces:
        got_bits |= p.flags
    if got_bits != want_bits:
        return f"expected flags {flags_text(want_bits)}, got {flags_text(got_bits)} in {got}"
    seq = (live.seq - flow.offset) % U32
    if seq != expected.seq.start % U32:
        return f"expected seq {expected.seq.start}, got {seq} in {got}"
    length = sum(p.payload_len for p in pieces)
    if length != expected.seq.length:
        return f"expected {expected.seq.length} bytes of payload, got {length} in {got}"
    want_ack = expected.ack if expected.ack is not None else 0
    for p in pieces:
        if p.ack != want_ack % U32:
            return f"expected ack {want_ack}, got ack {p.ack} in {got}"
    if expected.win is not None and not relaxed and live.win != expected.win:
        return f"expected win {expected.win}, got win {live.win} in {got}"
    want_urg = expected.urg if expected.urg is not None else 0
    if live.urg != want_urg:
        return f"expected urg {want_urg}, got urg {live.urg} in {got}"
    problem = compare_options(expected, live, relaxed)
    if problem:
        return problem
    if expected.ip is not None:
        ip = expected.ip
        ecn = live.tos & 3
        if ip.ecn == "ect01" and ecn not in (1, 2):
            return f"expected ECT(0) or ECT(1), got ECN bits {ecn} in {got}"
        if ip.ecn is not None and ip.ecn != "ect01" and \
                ecn != {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3}[ip.ecn]:
            return f"expected {ip.ecn}, got ECN bits {ecn} in {got}"
        if ip.tos is not None and live.tos != ip.tos:
            return f"expected tos {ip.tos:#x}, got tos {live.tos:#x} in {got}"
        if ip.ttl is not None and live.ttl != ip.ttl:
            return f"expected ttl {ip.ttl}, got ttl {live.ttl} in {got}"
    return None


def compare_icmp(expected: nodes.IcmpPacket, live: LivePacket, v6: bool = False) -> str | None:
    want_type = icmp_type(expected.icmp_type, v6)
    want_code = icmp_code(want_type, expected.icmp_code, v6) if want_type is not None else None
    if live.protocol != 1 or live.icmp_type != want_type or live.icmp_code != want_code:
        return f"expected {expected.to_script()}, got {render_live(live, None)}"
    return None


def compare_options(expected: nodes.TcpPacket, live: LivePacket, relaxed: bool) -> str | None:
    """None when the options match, else what differs ("expected …, got …")."""
    if expected.options_any:
        return None
    want = list(expected.options)
    got = list(live.options)
    if relaxed:
        want = [o for o in want if not isinstance(o, (nodes.Nop, nodes.Eol))]
        got = [(k, v) for k, v in got if k not in (0, 1)]
        want.sort(key=lambda o: o.kind if o.kind is not None else 999)
        got.sort(key=lambda kv: kv[0])
    want_text = "<" + ",".join(o.to_script() for o in want) + ">" if want else "no options"
    got_text = "<" + ",".join(_option_text(k, v, None) for k, v in got) + ">" if got else "no options"
    if len(want) != len(got):
        return f"expected {want_text}, got {got_text}"
    for opt, (kind, value) in zip(want, got):
        if opt.kind != kind:
            return f"expected {want_text}, got {got_text}"
        problem = _option_value_problem(opt, value, relaxed)
        if problem:
            return f"expected {problem[0]}, got {problem[1]} in {got_text}"
    return None


def _option_value_problem(opt, value: bytes, relaxed: bool) -> tuple[str, str] | None:
    if isinstance(opt, nodes.Mss):
        live = struct.unpack("!H", value)[0] if len(value) == 2 else None
        if not relaxed and live != opt.value:
            return f"mss {opt.value}", f"mss {live}"
    elif isinstance(opt, nodes.WindowScale):
        live = value[0] if len(value) == 1 else None
        if not relaxed and opt.shift is not None and live != opt.shift:
            return f"wscale {opt.shift}", f"wscale {live}"
    elif isinstance(opt, nodes.Sack):
        blocks = tuple(struct.unpack_from("!II", value, i) for i in range(0, len(value) - len(value) % 8, 8))
        if blocks != tuple(opt.blocks):
            return opt.to_script(), "sack " + " ".join(f"{l}:{r}" for l, r in blocks)
    elif isinstance(opt, nodes.Timestamp):
        if len(value) != 8:
            return opt.to_script(), "a malformed timestamp option"
        _, ecr = struct.unpack("!II", value)
        if ecr != opt.ecr:
            return f"TS ecr {opt.ecr}", f"TS ecr {ecr}"
    elif isinstance(opt, nodes.FastOpen):
        cookie = opt.cookie_bytes
        live = value[2:] if opt.experimental else value
        if cookie is not None and live != cookie:
            return opt.to_script(), f"cookie {live.hex()}"
    elif isinstance(opt, nodes.Md5):
        digest = opt.digest_bytes
        if digest is not None and value != digest:
            return opt.to_script(), f"md5 {value.hex()}"
    return None
