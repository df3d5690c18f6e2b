"""Recursive-descent parser for packetdrill scripts.

Grammar (whitespace/newlines are insignificant, as upstream)::

    script      := option* [untimed_cmd] event+ [untimed_cmd]
    option      := '--'NAME ['=' VALUE]
    event       := time action
    time        := '+' NUM ['~' '+' NUM] | NUM ['~' NUM] | '*'
    action      := packet | syscall | '`'command'`' | '%{' code '}%'
    packet      := ('<'|'>') [ip_info] (tcp | 'udp' [ports] '(' INT ')' | icmp)
    tcp         := [ports] flags seq ['ack' INT] ['win' INT] ['urg' INT] [tcp_options]
    ip_info     := ('['|'(') ip_item (',' ip_item)* (']'|')')
    ip_item     := noecn|ect0|ect1|ect01|ce | 'tos' HEX | 'flowlabel' HEX | 'ttl' INT
    ports       := INT '>' INT
    flags       := WORD | WORD '.' | '.' | '-' | [WORD] '.'DIGIT   (ACE form)
    seq         := INT ':' INT '(' INT ')'
    tcp_options := '<' '...' '>' | '<' tcp_option (',' tcp_option)* '>'
    tcp_option  := nop | eol | 'mss' INT | 'wscale' (INT|'*') | sackOK
                 | 'sack' (INT ':' INT)+ | 'TS' 'val' INT 'ecr' INT
                 | 'FO' [HEXBLOB] | 'FOEXP' [HEXBLOB] | 'md5' HEXBLOB | WORD anything
    icmp        := 'icmp' TYPE [CODE] ['mtu' INT] ['id' INT] [echoed]
    echoed      := '[' (seq | 'udp' '(' INT ')' | 'raw' '(' INT ')') ']'
    syscall     := ['...' NUM] WORD '(' [expr (',' expr)*] ')' '=' expr [WORD] [note]
    note        := '(' anything ')'
    expr        := primary ('|' primary)*
    primary     := '...' | INT | HEX | STRING+ ['...'] | '[' [exprs] ']' | '{' [exprs] '}'
                 | WORD ['(' [exprs] ')'] ['=' expr]
"""

from __future__ import annotations

import re
from typing import NoReturn

from misdtcp.conformance.errors import ParseError
from misdtcp.conformance.lexer import Token, TokenKind, tokenize
from misdtcp.conformance.nodes import (
    IP_VERSIONS, AnyEvent, Call, CodeBlock, CommandRole, Direction, EchoedPacket, Ellipsis, Eol,
    Expr, FastOpen, Field, IcmpPacket, Int, IpInfo, List, Md5, Mss, Nop, RawOption, Sack,
    SackPermitted, Script, SeqSpec, ShellCommand, String, Struct, Symbol, Syscall, TcpOption,
    TcpPacket, TimeKind, TimeSpec, Timestamp, UdpPacket, WindowScale, BinaryOr,
)

U8 = (1 << 8) - 1
U16 = (1 << 16) - 1
U32 = (1 << 32) - 1
U20 = (1 << 20) - 1

VALID_TCP_FLAGS = ".FSRPEWAU01234567"
ECN_TCP_FLAGS = "EWA"
ACE_TCP_FLAGS = "01234567"
IP_ECN_NAMES = ("noecn", "ect0", "ect1", "ect01", "ce")
MAX_TCP_OPTION_BYTES = 40
ENCAPSULATION_WORDS = ("ipv4", "ipv6", "gre", "GREv0", "mpls")

_DECIMAL_RE = re.compile(r"(-?)([0-9]*)(?:\.([0-9]+))?")


def seconds_to_usecs(text: str) -> int:
    """Exact decimal seconds -> integer microseconds (extra digits truncated).

    Upstream converts through a C double and truncates, which can lose a
    microsecond for some values; this conversion is exact.
    """
    match = _DECIMAL_RE.fullmatch(text)
    if not match or not (match.group(2) or match.group(3)):
        raise ValueError(f"not a decimal number: {text!r}")
    whole = int(match.group(2) or "0")
    frac = (match.group(3) or "")[:6].ljust(6, "0")
    usecs = whole * 1_000_000 + int(frac)
    return -usecs if match.group(1) else usecs


class Parser:
    def __init__(self, source: str, path: str = "<string>") -> None:
        self.source = source
        self.path = path
        self.tokens = tokenize(source, path)
        self.pos = 0

    # ------------------------------------------------------------------
    # token helpers
    # ------------------------------------------------------------------

    def peek(self, offset: int = 0) -> Token:
        index = min(self.pos + offset, len(self.tokens) - 1)
        return self.tokens[index]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind is not TokenKind.EOF:
            self.pos += 1
        return token

    def fail(self, token: Token, message: str) -> NoReturn:
        raise ParseError(self.path, token.line, message)

    def expected(self, what: str, token: Token | None = None) -> NoReturn:
        token = token or self.peek()
        self.fail(token, f"expected {what}, got {token.describe()}")

    def expect_punct(self, char: str, context: str = "") -> Token:
        token = self.peek()
        if not token.is_punct(char):
            self.expected(f"'{char}'{context}")
        return self.advance()

    def at_punct(self, char: str) -> bool:
        return self.peek().is_punct(char)

    def accept_punct(self, char: str) -> bool:
        if self.at_punct(char):
            self.advance()
            return True
        return False

    def expect_int(self, what: str, low: int = 0, high: int = U32) -> int:
        token = self.peek()
        if token.kind is not TokenKind.INT:
            self.expected(f"an integer for {what}")
        value = token.value
        assert isinstance(value, int)
        if not low <= value <= high:
            self.fail(token, f"{what} {value} is out of range ({low}..{high})")
        self.advance()
        return value

    def expect_hex(self, what: str, high: int) -> int:
        token = self.peek()
        if token.kind is not TokenKind.HEX:
            self.expected(f"a hex integer (0x...) for {what}")
        value = token.value
        assert isinstance(value, int)
        if value > high:
            self.fail(token, f"{what} {token.text} is out of range (0..{high:#x})")
        self.advance()
        return value

    def statement_text(self, first: Token) -> str:
        last = self.tokens[self.pos - 1] if self.pos > 0 else first
        return self.source[first.start:last.end]

    # ------------------------------------------------------------------
    # script
    # ------------------------------------------------------------------

    def parse_script(self) -> Script:
        option_list: list[tuple[str, str | None]] = []
        while self.peek().kind is TokenKind.OPTION:
            token = self.advance()
            name, value = self._option_value(token)
            self._check_option(token, name, value)
            option_list.append((name, value))

        events: list[AnyEvent] = []
        if self.peek().kind is TokenKind.BACKQUOTE:
            token = self.advance()
            events.append(ShellCommand(line=token.line, text=token.text, time=None,
                                       command=str(token.value), role=CommandRole.INIT))
        timed = 0
        while self.peek().kind is not TokenKind.EOF:
            token = self.peek()
            if token.kind is TokenKind.OPTION:
                name = self._option_value(token)[0]
                self.fail(token, f"script option '--{name}' must come before the first event")
            if token.kind is TokenKind.BACKQUOTE:
                self.advance()
                if self.peek().kind is not TokenKind.EOF:
                    self.fail(token, "a shell command without an event time is only allowed "
                                     "before the first event or as the last statement")
                events.append(ShellCommand(line=token.line, text=token.text, time=None,
                                           command=str(token.value), role=CommandRole.CLEANUP))
                break
            events.append(self.parse_event())
            timed += 1
        if timed == 0:
            self.fail(self.peek(), "the script contains no events (every event starts with a "
                                   "time such as 0, +0.1 or *)")
        options = dict(option_list)
        return Script(options=options, events=tuple(events), option_list=tuple(option_list),
                      path=self.path)

    @staticmethod
    def _option_value(token: Token) -> tuple[str, str | None]:
        name, value = token.value  # type: ignore[misc]
        return str(name), (None if value is None else str(value))

    def _check_option(self, token: Token, name: str, value: str | None) -> None:
        if name == "ip_version" and value not in IP_VERSIONS:
            self.fail(token, f"--ip_version must be one of {', '.join(IP_VERSIONS)}, "
                             f"got {value!r}")
        if name == "tolerance_usecs" and (value is None or not re.fullmatch(r"[0-9]+", value)):
            self.fail(token, f"--tolerance_usecs must be a non-negative integer, got {value!r}")

    # ------------------------------------------------------------------
    # events
    # ------------------------------------------------------------------

    def parse_event(self) -> AnyEvent:
        first = self.peek()
        time = self.parse_time()
        token = self.peek()
        event: AnyEvent
        if token.is_punct("<") or token.is_punct(">"):
            event = self.parse_packet(first, time)
        elif token.kind is TokenKind.BACKQUOTE:
            self.advance()
            event = ShellCommand(line=first.line, text=self.statement_text(first), time=time,
                                 command=str(token.value))
        elif token.kind is TokenKind.CODE:
            self.advance()
            event = CodeBlock(line=first.line, text=self.statement_text(first), time=time,
                              code=str(token.value))
        elif token.kind in (TokenKind.WORD, TokenKind.ELLIPSIS):
            event = self.parse_syscall(first, time)
        else:
            self.expected("a packet ('<' or '>'), a system call, a `shell command` or a "
                          "%{ code }% block after the event time")
        self._check_event_time(first, event)
        return event

    def _check_event_time(self, first: Token, event: AnyEvent) -> None:
        time = event.time
        assert time is not None
        outbound_packet = (isinstance(event, (TcpPacket, UdpPacket, IcmpPacket))
                           and event.direction is Direction.OUTBOUND)
        if time.kind is TimeKind.ANY and not outbound_packet:
            self.fail(first, "event time '*' can only be used with outbound packets")
        if time.is_range and not outbound_packet:
            self.fail(first, "an event time range can only be used with outbound packets "
                             "(a blocking system call is written 'start...end call(...)')")

    def parse_time(self) -> TimeSpec:
        token = self.peek()
        if token.is_punct("*"):
            self.advance()
            return TimeSpec(TimeKind.ANY)
        if token.is_punct("+"):
            self.advance()
            start = self.parse_seconds("relative event time")
            end = None
            if self.accept_punct("~"):
                if not self.accept_punct("+"):
                    self.expected("'+' after '~' (a relative time range is written +start~+end)")
                end = self.parse_seconds("end of relative time range")
            kind = TimeKind.RELATIVE
        elif token.kind in (TokenKind.INT, TokenKind.FLOAT):
            start = self.parse_seconds("event time")
            end = None
            if self.accept_punct("~"):
                if self.at_punct("+"):
                    self.fail(self.peek(), "an absolute time range is written start~end, "
                                           "without '+' after '~'")
                end = self.parse_seconds("end of time range")
            kind = TimeKind.ABSOLUTE
        else:
            self.expected("an event time (such as 0, 0.100, +0.1, 0.1~0.2, +0~+0.1 or *)")
        if end is not None and end < start:
            self.fail(token, "time range is backwards (the end is before the start)")
        return TimeSpec(kind, start, end)

    def parse_seconds(self, what: str) -> int:
        token = self.peek()
        if token.kind not in (TokenKind.INT, TokenKind.FLOAT):
            self.expected(f"a number of seconds for the {what}")
        usecs = seconds_to_usecs(token.text)
        if usecs < 0:
            self.fail(token, f"negative time {token.text} for the {what}")
        self.advance()
        return usecs

    # ------------------------------------------------------------------
    # packets
    # ------------------------------------------------------------------

    def parse_packet(self, first: Token, time: TimeSpec) -> AnyEvent:
        direction_token = self.advance()
        direction = Direction(direction_token.text)
        ip: IpInfo | None = None
        prefix_echoed: EchoedPacket | None = None
        if self.at_punct("[") and self.peek(1).kind is TokenKind.INT and self.peek(2).is_punct(":"):
            # Extension (not upstream): "< [1:1461(1460)] icmp ..." quoting form.
            self.advance()
            prefix_echoed = EchoedPacket("tcp", self.parse_seq())
            self.expect_punct("]", " to close the quoted TCP sequence range")
            if not self.peek().is_word("icmp"):
                self.expected("'icmp' after a bracketed sequence range before the packet")
        elif self.at_punct("[") or self.at_punct("("):
            ip = self.parse_ip_info()
        if ip is not None and ip.ecn == "ect01" and direction is Direction.INBOUND:
            self.fail(direction_token, "[ect01] can only be used with outbound packets")

        token = self.peek()
        if token.kind is TokenKind.WORD and token.text in ENCAPSULATION_WORDS:
            self.fail(token, f"encapsulation prefixes ({token.text} ...:) are not supported by "
                             "this parser")
        if token.is_word("icmp"):
            packet: AnyEvent = self.parse_icmp(first, time, direction, ip, prefix_echoed)
        elif token.is_word("udp"):
            if ip is not None and ip.ecn is not None:
                self.fail(token, "ECN can only be used with TCP packets")
            packet = self.parse_udp(first, time, direction, ip)
        else:
            packet = self.parse_tcp(first, time, direction, ip)
        return packet

    def parse_ip_info(self) -> IpInfo:
        opener = self.advance()
        closer = "]" if opener.text == "[" else ")"
        values: dict[str, object] = {}
        while True:
            token = self.peek()
            if token.kind is TokenKind.WORD and token.text in IP_ECN_NAMES:
                key, value = "ecn", token.text
                self.advance()
            elif token.is_word("tos"):
                self.advance()
                key, value = "tos", self.expect_hex("tos", U8)
            elif token.is_word("flowlabel"):
                self.advance()
                key, value = "flowlabel", self.expect_hex("flowlabel", U20)
            elif token.is_word("ttl"):
                self.advance()
                key, value = "ttl", self.expect_int("ttl", 0, U8)
            else:
                self.expected("an IP field (noecn, ect0, ect1, ect01, ce, tos 0xNN, "
                              "flowlabel 0xNNNNN or ttl N)")
            if key in values or (key in ("ecn", "tos") and ({"ecn", "tos"} & values.keys())):
                self.fail(token, f"{token.text} conflicts with an earlier IP field in the same "
                                 "brackets")
            values[key] = value
            if self.accept_punct(","):
                continue
            self.expect_punct(closer, " to close the IP field list")
            break
        return IpInfo(**values)  # type: ignore[arg-type]

    def parse_ports(self) -> tuple[int, int] | None:
        if self.peek().kind is TokenKind.INT and self.peek(1).is_punct(">"):
            src = self.expect_int("source port", 0, U16)
            self.advance()
            dst = self.expect_int("destination port", 0, U16)
            return (src, dst)
        return None

    def parse_flags(self) -> tuple[Token, str]:
        token = self.peek()
        if token.is_punct("."):
            self.advance()
            return token, "."
        if token.is_punct("-"):
            self.advance()
            return token, ""
        if token.kind is TokenKind.FLOAT and token.text.startswith("."):
            self.advance()                      # ".5": ACK plus an AccECN ACE value
            return token, token.text
        if token.kind is TokenKind.WORD:
            self.advance()
            text = token.text
            nxt = self.peek()
            if nxt.is_punct("."):
                self.advance()
                text += "."
            elif nxt.kind is TokenKind.FLOAT and nxt.text.startswith("."):
                self.advance()
                text += nxt.text
            return token, text
        self.expected("TCP flags (such as S, S., ., P., F., R., - or SEW)")

    def _check_flags(self, token: Token, text: str) -> frozenset[str]:
        seen_ecn = seen_ace = False
        for char in text:
            if char not in VALID_TCP_FLAGS:
                self.fail(token, f"invalid TCP flag {char!r} in {text!r} (valid flags are "
                                 f"{VALID_TCP_FLAGS})")
            if char in ECN_TCP_FLAGS:
                if seen_ace:
                    self.fail(token, f"TCP flag {char!r} conflicts with the ACE value in {text!r}")
                seen_ecn = True
            if char in ACE_TCP_FLAGS:
                if seen_ecn or seen_ace:
                    self.fail(token, f"ACE value {char!r} conflicts with other flags in {text!r}")
                seen_ace = True
        return frozenset(text)

    def parse_seq(self) -> SeqSpec:
        token = self.peek()
        if token.kind is not TokenKind.INT:
            self.expected("a TCP sequence range start:end(length)")
        start = self.expect_int("TCP start sequence number", 0, U32)
        self.expect_punct(":", " in the sequence range start:end(length)")
        end = self.expect_int("TCP end sequence number", 0, U32)
        self.expect_punct("(", " before the payload length in start:end(length)")
        length = self.expect_int("TCP payload length", 0, U16)
        self.expect_punct(")", " after the payload length in start:end(length)")
        if end != start + length:
            self.fail(token, f"inconsistent TCP sequence numbers and payload size: "
                             f"{start}:{end}({length}) needs end = start + length")
        return SeqSpec(start, end, length)

    def parse_tcp(self, first: Token, time: TimeSpec, direction: Direction,
                  ip: IpInfo | None) -> TcpPacket:
        ports = self.parse_ports()
        flags_token, flags_text = self.parse_flags()
        flags = self._check_flags(flags_token, flags_text)
        seq = self.parse_seq()
        ack = win = urg = None
        if self.peek().is_word("ack"):
            self.advance()
            ack = self.expect_int("TCP ack sequence number", 0, U32)
        if self.peek().is_word("win"):
            self.advance()
            win = self.expect_int("TCP window", 0, U16)
        if self.peek().is_word("urg"):
            self.advance()
            urg = self.expect_int("TCP urgent pointer", 0, U16)
        options: tuple[TcpOption, ...] = ()
        options_any = False
        if self.at_punct("<"):
            options_token = self.peek()
            options, options_any = self.parse_tcp_options()
            if options_any and direction is Direction.INBOUND:
                self.fail(options_token, "<...> for TCP options can only be used with outbound "
                                         "packets")
        if win is None and direction is Direction.INBOUND:
            self.fail(flags_token, "window must be specified for inbound packets (add 'win N')")
        return TcpPacket(line=first.line, text=self.statement_text(first), time=time,
                         direction=direction, flags=flags, flags_text=flags_text, seq=seq,
                         ack=ack, win=win, urg=urg, options=options, options_any=options_any,
                         ip=ip, ports=ports)

    def parse_tcp_options(self) -> tuple[tuple[TcpOption, ...], bool]:
        opener = self.advance()                                   # '<'
        if self.peek().kind is TokenKind.ELLIPSIS:
            self.advance()
            self.expect_punct(">", " after '<...'")
            return (), True
        options: list[TcpOption] = []
        while True:
            options.append(self.parse_tcp_option())
            if self.accept_punct(","):
                continue
            if self.accept_punct(">"):
                break
            self.expected("',' or '>' in the TCP option list")
        lengths = [opt.wire_length for opt in options]
        if all(isinstance(n, int) for n in lengths):
            total = sum(n for n in lengths if n is not None)
            if total > MAX_TCP_OPTION_BYTES:
                self.fail(opener, f"TCP option list too long ({total} bytes, the maximum is "
                                  f"{MAX_TCP_OPTION_BYTES})")
            if total % 4:
                self.fail(opener, f"TCP options are not padded correctly to a multiple of 4 "
                                  f"bytes: {total % 4} excess bytes (add nop or eol)")
        return tuple(options), False

    def _hex_blob(self, optional: bool, what: str) -> str:
        token = self.peek()
        if token.kind in (TokenKind.WORD, TokenKind.INT):
            self.advance()
            text = token.text
            is_hex = all(c in "0123456789abcdefABCDEF" for c in text)
            if is_hex and len(text) % 2:
                self.fail(token, f"{what} {text!r} has an odd number of hex digits")
            return text
        if optional:
            return ""
        self.expected(f"a hex string for {what}")

    def parse_tcp_option(self) -> TcpOption:
        token = self.peek()
        if token.kind is not TokenKind.WORD:
            self.expected("a TCP option (such as mss 1460, nop, sackOK, wscale 7, "
                          "TS val 1 ecr 0, sack 1:2)")
        name = token.text
        self.advance()
        if name == "nop":
            return Nop()
        if name == "eol":
            return Eol()
        if name == "mss":
            return Mss(self.expect_int("mss value", 0, U16))
        if name == "wscale":
            if self.accept_punct("*"):
                return WindowScale(None)
            return WindowScale(self.expect_int("window scale shift count", 0, U8))
        if name == "sackOK":
            return SackPermitted()
        if name == "sack":
            blocks: list[tuple[int, int]] = []
            while True:
                left = self.expect_int("TCP SACK left sequence number", 0, U32)
                self.expect_punct(":", " between SACK block edges")
                right = self.expect_int("TCP SACK right sequence number", 0, U32)
                blocks.append((left, right))
                if self.peek().kind is not TokenKind.INT:
                    break
            return Sack(tuple(blocks))
        if name == "TS":
            if not self.peek().is_word("val"):
                self.expected("'val' after TS (TS val N ecr N)")
            self.advance()
            val = self.expect_int("TS val", 0, U32)
            if not self.peek().is_word("ecr"):
                self.expected("'ecr' after the TS val (TS val N ecr N)")
            self.advance()
            ecr = self.expect_int("TS ecr", 0, U32)
            return Timestamp(val, ecr)
        if name in ("FO", "FOEXP"):
            cookie = self._hex_blob(True, "TCP fast open cookie")
            max_bytes = MAX_TCP_OPTION_BYTES - (2 if name == "FO" else 4)
            if len(cookie) // 2 > max_bytes and all(c in "0123456789abcdefABCDEF" for c in cookie):
                self.fail(token, f"TCP fast open cookie of {len(cookie) // 2} bytes exceeds the "
                                 f"maximum of {max_bytes} bytes")
            return FastOpen(cookie, experimental=(name == "FOEXP"))
        if name == "md5":
            digest = self._hex_blob(False, "TCP MD5 digest")
            if len(digest) // 2 > 16 and all(c in "0123456789abcdefABCDEF" for c in digest):
                self.fail(token, "TCP MD5 digest longer than 16 bytes")
            return Md5(digest)
        return self._raw_option(token)

    def _raw_option(self, name_token: Token) -> RawOption:
        depth = 0
        last = name_token
        while True:
            token = self.peek()
            if token.kind is TokenKind.EOF:
                self.fail(name_token, "unterminated TCP option list (no closing '>')")
            if depth == 0 and (token.is_punct(",") or token.is_punct(">")):
                break
            if token.kind is TokenKind.PUNCT and token.text in "([{":
                depth += 1
            elif token.kind is TokenKind.PUNCT and token.text in ")]}":
                depth -= 1
            last = self.advance()
        args = " ".join(self.source[name_token.end:last.end].split())
        return RawOption(name_token.text, args)

    def parse_udp(self, first: Token, time: TimeSpec, direction: Direction,
                  ip: IpInfo | None) -> UdpPacket:
        self.advance()                                            # 'udp'
        ports = self.parse_ports()
        self.expect_punct("(", " before the UDP payload length, as in 'udp (1000)'")
        length = self.expect_int("UDP payload size", 0, U16)
        self.expect_punct(")", " after the UDP payload length")
        return UdpPacket(line=first.line, text=self.statement_text(first), time=time,
                         direction=direction, length=length, ip=ip, ports=ports)

    def parse_icmp(self, first: Token, time: TimeSpec, direction: Direction, ip: IpInfo | None,
                   echoed: EchoedPacket | None) -> IcmpPacket:
        self.advance()                                            # 'icmp'
        type_token = self.peek()
        if type_token.kind is not TokenKind.WORD:
            self.expected("an ICMP type (such as unreachable, time_exceeded, echo_request)")
        self.advance()
        code = None
        token = self.peek()
        if token.kind is TokenKind.WORD and token.text not in ("mtu", "id"):
            code = token.text
            self.advance()
        mtu = echo_id = None
        if self.peek().is_word("mtu"):
            self.advance()
            mtu = self.expect_int("ICMP MTU", 0, U32)
        if self.peek().is_word("id"):
            self.advance()
            echo_id = self.expect_int("ICMP echo id", 0, U16)
        if self.at_punct("["):
            if echoed is not None:
                self.fail(self.peek(), "the quoted packet is given twice (before and after icmp)")
            echoed = self.parse_echoed()
        return IcmpPacket(line=first.line, text=self.statement_text(first), time=time,
                          direction=direction, icmp_type=type_token.text, icmp_code=code,
                          mtu=mtu, echo_id=echo_id, echoed=echoed, ip=ip)

    def parse_echoed(self) -> EchoedPacket:
        self.advance()                                            # '['
        token = self.peek()
        if token.is_word("udp") or token.is_word("raw"):
            self.advance()
            self.expect_punct("(", f" before the quoted {token.text} payload length")
            length = self.expect_int(f"quoted {token.text} payload size", 0, U16)
            self.expect_punct(")", f" after the quoted {token.text} payload length")
            echoed = EchoedPacket(token.text, None, length)
        elif token.kind is TokenKind.INT:
            echoed = EchoedPacket("tcp", self.parse_seq())
        else:
            self.expected("a quoted packet ([start:end(len)], [udp (N)] or [raw (N)])")
        self.expect_punct("]", " to close the quoted packet")
        return echoed

    # ------------------------------------------------------------------
    # system calls and expressions
    # ------------------------------------------------------------------

    def parse_syscall(self, first: Token, time: TimeSpec) -> Syscall:
        end_usecs = None
        if self.peek().kind is TokenKind.ELLIPSIS:
            self.advance()
            end_usecs = self.parse_seconds("end time of the blocking system call")
            if end_usecs < time.usecs:
                self.fail(first, "the blocking system call's end time is before its start time")
        name_token = self.peek()
        if name_token.kind is not TokenKind.WORD:
            self.expected("a system call name")
        self.advance()
        if not self.at_punct("("):
            self.expected(f"'(' after the system call name {name_token.text!r}")
        args = self.parse_call_args()
        if not self.at_punct("="):
            self.expected(f"'=' and the expected result after {name_token.text}(...)")
        self.advance()
        result = self.parse_expr(top_level_result=True)
        errno = None
        if self.peek().kind is TokenKind.WORD:
            errno = self.advance().text
        note = self.parse_note() if self.at_punct("(") else None
        return Syscall(line=first.line, text=self.statement_text(first), time=time,
                       name=name_token.text, args=args, result=result, errno=errno, note=note,
                       end_usecs=end_usecs)

    def parse_note(self) -> str:
        opener = self.advance()
        depth = 1
        while True:
            token = self.peek()
            if token.kind is TokenKind.EOF:
                self.fail(opener, "unterminated '(' note after the system call result")
            self.advance()
            if token.is_punct("("):
                depth += 1
            elif token.is_punct(")"):
                depth -= 1
                if depth == 0:
                    return " ".join(self.source[opener.end:token.start].split())

    def parse_call_args(self) -> tuple[Expr, ...]:
        self.advance()                                            # '('
        return self._expr_list(")", "argument list")

    def _expr_list(self, closer: str, what: str) -> tuple[Expr, ...]:
        items: list[Expr] = []
        if self.accept_punct(closer):
            return ()
        while True:
            items.append(self.parse_expr())
            if self.accept_punct(","):
                continue
            if self.accept_punct(closer):
                return tuple(items)
            self.expected(f"',' or '{closer}' in the {what}")

    def parse_expr(self, top_level_result: bool = False) -> Expr:
        first = self.parse_primary(top_level_result)
        if not self.at_punct("|"):
            return first
        operands = [first]
        while self.accept_punct("|"):
            operands.append(self.parse_primary(top_level_result))
        return BinaryOr(tuple(operands))

    def parse_primary(self, top_level_result: bool = False) -> Expr:
        token = self.peek()
        kind = token.kind
        if kind is TokenKind.ELLIPSIS:
            self.advance()
            return Ellipsis()
        if kind is TokenKind.INT:
            self.advance()
            return Int(int(token.value))  # type: ignore[call-overload]
        if kind is TokenKind.HEX:
            self.advance()
            return Int(int(token.value), hex=True)  # type: ignore[call-overload]
        if kind is TokenKind.STRING:
            parts = []
            while self.peek().kind is TokenKind.STRING:
                parts.append(str(self.advance().value))
            truncated = False
            if self.peek().kind is TokenKind.ELLIPSIS:
                self.advance()
                truncated = True
            return String("".join(parts), truncated)
        if token.is_punct("["):
            self.advance()
            return List(self._expr_list("]", "list"))
        if token.is_punct("{"):
            self.advance()
            return Struct(self._expr_list("}", "braced list"))
        if kind is TokenKind.WORD:
            self.advance()
            node: Expr = Symbol(token.text)
            if not top_level_result and self.at_punct("("):
                node = Call(token.text, self.parse_call_args())
            if not top_level_result and self.at_punct("="):
                self.advance()
                value = self.parse_expr()
                size = None
                if isinstance(node, Call):
                    if len(node.args) != 1:
                        self.fail(token, f"expected one size inside {token.text}(...) before '='")
                    size = node.args[0]
                return Field(token.text, value, size)
            return node
        self.expected("an expression (a number, SYMBOL, \"string\", ..., [list] or {fields})")


def parse_script(source: str, path: str = "<string>") -> Script:
    """Parse script text; raises ParseError ("path:line: message")."""
    return Parser(source, path).parse_script()


def parse_file(path: str) -> Script:
    """Parse the script file at ``path`` (UTF-8; undecodable bytes replaced)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        source = handle.read()
    return parse_script(source, path)


def parse_expression(source: str, path: str = "<string>") -> Expr:
    """Parse a single system-call argument expression (handy for tests/runners)."""
    parser = Parser(source, path)
    expr = parser.parse_expr()
    if parser.peek().kind is not TokenKind.EOF:
        parser.expected("end of expression")
    return expr
