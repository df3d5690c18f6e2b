"""AST node types produced by the packetdrill script parser.

All nodes are frozen dataclasses.  Every event carries ``line`` (the 1-based
line of its first token, i.e. of its time spec) and ``text`` (the exact source
text of the statement, excluded from equality) so a runner can report
``path:line: ...`` failures and echo the script line.

Each node has ``to_script()`` returning canonical packetdrill syntax; parsing
that text again yields an equal node (see tests/test_format.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Union

__all__ = [
    "TimeKind", "TimeSpec", "format_seconds",
    "Int", "Symbol", "Ellipsis", "String", "List", "Field", "Struct", "BinaryOr", "Call", "Expr",
    "Nop", "Eol", "Mss", "WindowScale", "SackPermitted", "Sack", "Timestamp", "FastOpen", "Md5",
    "RawOption", "TcpOption",
    "Direction", "IpInfo", "SeqSpec", "Event", "TcpPacket", "UdpPacket", "EchoedPacket",
    "IcmpPacket", "Packet", "Syscall", "CommandRole", "ShellCommand", "CodeBlock", "AnyEvent",
    "format_event", "IP_VERSIONS", "Script",
]


# --------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------

class TimeKind(Enum):
    ABSOLUTE = "absolute"   # 0.100      : microseconds since script start
    RELATIVE = "relative"   # +0.1       : microseconds after the previous event
    ANY = "any"             # *          : outbound packet may come at any time


def format_seconds(usecs: int) -> str:
    """Render microseconds as packetdrill seconds: 100000 -> '0.1', 0 -> '0'."""
    seconds, micros = divmod(usecs, 1_000_000)
    if micros == 0:
        return str(seconds)
    return f"{seconds}.{micros:06d}".rstrip("0")


@dataclass(frozen=True)
class TimeSpec:
    """When an event happens.

    ``usecs`` is the start (0 for ANY); ``end_usecs`` is set only for a time
    range (``0.1~0.2`` or ``+0.1~+0.2``) and uses the same base as ``usecs``
    (absolute, or relative to the previous event).
    """

    kind: TimeKind
    usecs: int = 0
    end_usecs: int | None = None

    @property
    def is_range(self) -> bool:
        return self.end_usecs is not None

    def to_script(self) -> str:
        if self.kind is TimeKind.ANY:
            return "*"
        plus = "+" if self.kind is TimeKind.RELATIVE else ""
        text = plus + format_seconds(self.usecs)
        if self.end_usecs is not None:
            text += "~" + plus + format_seconds(self.end_usecs)
        return text


# --------------------------------------------------------------------------
# Expressions (system call arguments and results)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Int:
    """Integer literal; ``hex`` records that it was written as 0x..."""

    value: int
    hex: bool = False

    def to_script(self) -> str:
        return hex(self.value) if self.hex else str(self.value)


@dataclass(frozen=True)
class Symbol:
    """A bare identifier such as SOCK_STREAM, O_NONBLOCK, EINPROGRESS."""

    name: str

    def to_script(self) -> str:
        return self.name


@dataclass(frozen=True)
class Ellipsis:  # noqa: A001 - deliberately named after the script token
    """``...``: "don't care" / "let the runner supply a value"."""

    def to_script(self) -> str:
        return "..."


@dataclass(frozen=True)
class String:
    """A double-quoted string (raw content, escapes not decoded).

    ``truncated`` is set for the strace-style ``"abc"...`` form.  Adjacent
    string literals are concatenated, as in older upstream grammars.
    """

    value: str
    truncated: bool = False

    def to_script(self) -> str:
        return f'"{self.value}"' + ("..." if self.truncated else "")


@dataclass(frozen=True)
class List:
    """``[a, b, ...]`` (e.g. ``[1]`` for an int* optval, poll's pollfd array)."""

    items: tuple[Expr, ...]

    def to_script(self) -> str:
        return "[" + ", ".join(item.to_script() for item in self.items) + "]"


@dataclass(frozen=True)
class Field:
    """``name=value`` inside braces, or strace's ``name(size)=value``.

    Upstream parses ``WORD = expression`` as a binary '=' expression; special
    upstream forms (pollfd, linger, sockaddr, msghdr, iovec, cmsg, epoll
    events) are all represented as a Struct of Fields here.
    """

    name: str
    value: Expr
    size: Expr | None = None

    def to_script(self) -> str:
        size = "" if self.size is None else f"({self.size.to_script()})"
        return f"{self.name}{size}={self.value.to_script()}"


@dataclass(frozen=True)
class Struct:
    """``{...}``: a sequence of Fields and/or bare expressions (iovec ``{..., 10}``)."""

    items: tuple[Expr, ...]

    @property
    def fields(self) -> dict[str, Expr]:
        """Named items, in order (the last one wins on duplicates)."""
        return {item.name: item.value for item in self.items if isinstance(item, Field)}

    def get(self, name: str) -> Expr | None:
        return self.fields.get(name)

    def to_script(self) -> str:
        return "{" + ", ".join(item.to_script() for item in self.items) + "}"


@dataclass(frozen=True)
class BinaryOr:
    """``A|B|C`` (flattened, in written order)."""

    operands: tuple[Expr, ...]

    def to_script(self) -> str:
        return "|".join(operand.to_script() for operand in self.operands)


@dataclass(frozen=True)
class Call:
    """A function-style expression: ``htons(8080)``, ``inet_addr("192.0.2.1")``."""

    name: str
    args: tuple[Expr, ...]

    def to_script(self) -> str:
        return f"{self.name}(" + ", ".join(arg.to_script() for arg in self.args) + ")"


Expr = Union[Int, Symbol, Ellipsis, String, List, Field, Struct, BinaryOr, Call]


# --------------------------------------------------------------------------
# TCP options (in written order; NOP and EOL are kept)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Nop:
    kind = 1
    wire_length = 1

    def to_script(self) -> str:
        return "nop"


@dataclass(frozen=True)
class Eol:
    kind = 0
    wire_length = 1

    def to_script(self) -> str:
        return "eol"


@dataclass(frozen=True)
class Mss:
    value: int
    kind = 2
    wire_length = 4

    def to_script(self) -> str:
        return f"mss {self.value}"


@dataclass(frozen=True)
class WindowScale:
    """``wscale N``; ``shift`` is None for ``wscale *`` (any shift accepted)."""

    shift: int | None
    kind = 3
    wire_length = 3

    def to_script(self) -> str:
        return "wscale " + ("*" if self.shift is None else str(self.shift))


@dataclass(frozen=True)
class SackPermitted:
    kind = 4
    wire_length = 2

    def to_script(self) -> str:
        return "sackOK"


@dataclass(frozen=True)
class Sack:
    """``sack L:R L:R ...`` blocks, script-relative like ack numbers."""

    blocks: tuple[tuple[int, int], ...]
    kind = 5

    @property
    def wire_length(self) -> int:
        return 2 + 8 * len(self.blocks)

    def to_script(self) -> str:
        return "sack " + " ".join(f"{left}:{right}" for left, right in self.blocks)


@dataclass(frozen=True)
class Timestamp:
    """``TS val V ecr E`` (upstream accepts integers only, no wildcard)."""

    val: int
    ecr: int
    kind = 8
    wire_length = 10

    def to_script(self) -> str:
        return f"TS val {self.val} ecr {self.ecr}"


def _hex_bytes(text: str) -> bytes | None:
    if len(text) % 2 or any(c not in "0123456789abcdefABCDEF" for c in text):
        return None
    return bytes.fromhex(text)


@dataclass(frozen=True)
class FastOpen:
    """``FO [cookie]`` (kind 34) or ``FOEXP [cookie]`` (experimental kind 254).

    ``cookie`` is the text as written (hex digits, possibly empty).  A cookie
    that is not hex (e.g. a name upstream would substitute via -D) is kept as
    written and has ``cookie_bytes`` None.
    """

    cookie: str
    experimental: bool = False

    @property
    def kind(self) -> int:
        return 254 if self.experimental else 34

    @property
    def cookie_bytes(self) -> bytes | None:
        return _hex_bytes(self.cookie)

    @property
    def wire_length(self) -> int | None:
        cookie = self.cookie_bytes
        if cookie is None:
            return None
        return (4 if self.experimental else 2) + len(cookie)

    def to_script(self) -> str:
        name = "FOEXP" if self.experimental else "FO"
        return f"{name} {self.cookie}" if self.cookie else name


@dataclass(frozen=True)
class Md5:
    """``md5 <hex digest>`` (TCP MD5 signature option, kind 19)."""

    digest: str
    kind = 19

    @property
    def digest_bytes(self) -> bytes | None:
        return _hex_bytes(self.digest)

    @property
    def wire_length(self) -> int | None:
        digest = self.digest_bytes
        return None if digest is None else 2 + len(digest)

    def to_script(self) -> str:
        return f"md5 {self.digest}"


@dataclass(frozen=True)
class RawOption:
    """Any option this parser does not model (e.g. AccECN ``ECN e1b 1 ceb 0 e0b 1``).

    ``name`` is the first word, ``args`` the rest of the option's source text
    (whitespace-normalized, possibly empty).
    """

    name: str
    args: str = ""
    kind = None
    wire_length = None

    def to_script(self) -> str:
        return f"{self.name} {self.args}" if self.args else self.name


TcpOption = Union[Nop, Eol, Mss, WindowScale, SackPermitted, Sack, Timestamp, FastOpen, Md5, RawOption]


# --------------------------------------------------------------------------
# Packets
# --------------------------------------------------------------------------

class Direction(Enum):
    INBOUND = "<"    # injected by the script into the stack under test
    OUTBOUND = ">"   # expected to be sent by the stack under test


@dataclass(frozen=True)
class IpInfo:
    """Optional ``[ect0]`` / ``(tos 0x10)`` / ``[ce, flowlabel 0x1]`` / ``[ttl 64]``.

    ``ecn`` is one of noecn, ect0, ect1, ect01 (outbound only: either ECT), ce.
    """

    ecn: str | None = None
    tos: int | None = None
    flowlabel: int | None = None
    ttl: int | None = None

    def to_script(self) -> str:
        parts: list[str] = []
        if self.ecn is not None:
            parts.append(self.ecn)
        if self.tos is not None:
            parts.append(f"tos {self.tos:#x}")
        if self.flowlabel is not None:
            parts.append(f"flowlabel {self.flowlabel:#x}")
        if self.ttl is not None:
            parts.append(f"ttl {self.ttl}")
        return "[" + ", ".join(parts) + "]"


@dataclass(frozen=True)
class SeqSpec:
    """``start:end(length)``; the parser guarantees end == start + length."""

    start: int
    end: int
    length: int

    def to_script(self) -> str:
        return f"{self.start}:{self.end}({self.length})"


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base class: ``line`` is where the statement starts in the script."""

    line: int
    text: str = field(default="", compare=False, repr=False)


def _ports(ports: tuple[int, int] | None) -> str:
    return "" if ports is None else f"{ports[0]}>{ports[1]} "


def _ip(ip: IpInfo | None) -> str:
    return "" if ip is None else ip.to_script() + " "


@dataclass(frozen=True, kw_only=True)
class TcpPacket(Event):
    """A TCP segment line.

    ``flags`` holds the flag characters as written: S F R P U E W A, '.'
    (= ACK) and an AccECN ACE digit 0-7; '-' (no flags) gives an empty set.
    ``ack``/``win``/``urg`` are None when omitted (upstream: ack 0, window
    unchecked for outbound, urg 0).  ``options`` is the written list;
    ``options_any`` is True for ``<...>`` (outbound only: don't check).
    ``ports`` is set only for the rare ``SRC>DST`` port prefix.
    """

    time: TimeSpec
    direction: Direction
    flags: frozenset[str]
    flags_text: str
    seq: SeqSpec
    ack: int | None = None
    win: int | None = None
    urg: int | None = None
    options: tuple[TcpOption, ...] = ()
    options_any: bool = False
    ip: IpInfo | None = None
    ports: tuple[int, int] | None = None

    @property
    def has_ack(self) -> bool:
        return "." in self.flags

    @property
    def ace(self) -> int | None:
        digits = [f for f in self.flags if f.isdigit()]
        return int(digits[0]) if digits else None

    @property
    def payload_len(self) -> int:
        return self.seq.length

    def option(self, option_type: type) -> TcpOption | None:
        """First option of the given type, e.g. ``pkt.option(Timestamp)``."""
        for opt in self.options:
            if isinstance(opt, option_type):
                return opt
        return None

    def to_script(self) -> str:
        parts = [self.direction.value, _ip(self.ip) + _ports(self.ports) + (self.flags_text or "-"),
                 self.seq.to_script()]
        if self.ack is not None:
            parts.append(f"ack {self.ack}")
        if self.win is not None:
            parts.append(f"win {self.win}")
        if self.urg is not None:
            parts.append(f"urg {self.urg}")
        if self.options_any:
            parts.append("<...>")
        elif self.options:
            parts.append("<" + ",".join(opt.to_script() for opt in self.options) + ">")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class UdpPacket(Event):
    """``< udp (LEN)`` / ``> udp SRC>DST (LEN)``; kept so a runner can skip it."""

    time: TimeSpec
    direction: Direction
    length: int
    ip: IpInfo | None = None
    ports: tuple[int, int] | None = None

    def to_script(self) -> str:
        return f"{self.direction.value} {_ip(self.ip)}udp {_ports(self.ports)}({self.length})"


@dataclass(frozen=True)
class EchoedPacket:
    """The bracketed packet an ICMP error quotes.

    ``protocol`` is 'tcp' (with ``seq``, in the stack's own outbound sequence
    space), 'udp' or 'raw' (with ``length``).
    """

    protocol: str
    seq: SeqSpec | None = None
    length: int = 0

    def to_script(self) -> str:
        if self.protocol == "tcp" and self.seq is not None:
            return f"[{self.seq.to_script()}]"
        return f"[{self.protocol} ({self.length})]"


@dataclass(frozen=True, kw_only=True)
class IcmpPacket(Event):
    """``< icmp TYPE [CODE] [mtu N] [id N] [[echoed]]``.

    ``icmp_type``/``icmp_code`` are kept as written (upstream names such as
    unreachable / port_unreachable / frag_needed, or type_N / code_N);
    a missing code means code 0.  ``echoed`` None means upstream's default
    (a TCP header with sequence 0).
    """

    time: TimeSpec
    direction: Direction
    icmp_type: str
    icmp_code: str | None = None
    mtu: int | None = None
    echo_id: int | None = None
    echoed: EchoedPacket | None = None
    ip: IpInfo | None = None

    def to_script(self) -> str:
        parts = [self.direction.value, _ip(self.ip) + "icmp", self.icmp_type]
        if self.icmp_code is not None:
            parts.append(self.icmp_code)
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        if self.echo_id is not None:
            parts.append(f"id {self.echo_id}")
        if self.echoed is not None:
            parts.append(self.echoed.to_script())
        return " ".join(parts)


Packet = Union[TcpPacket, UdpPacket, IcmpPacket]


# --------------------------------------------------------------------------
# System calls, shell commands, code
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Syscall(Event):
    """``name(args) = result [ERRNO] [(note)]``.

    ``end_usecs`` is set for a blocking call (``start...end name(...)``); it
    has the same base as ``time`` (absolute, or relative to the previous
    event), i.e. ``+0...0.2`` returns 0.2 s after the previous event.
    ``errno`` is the errno symbol after the result; ``note`` is the
    parenthesized text after it (or after the result), whitespace-normalized.
    """

    time: TimeSpec
    name: str
    args: tuple[Expr, ...]
    result: Expr
    errno: str | None = None
    note: str | None = None
    end_usecs: int | None = None

    @property
    def is_blocking(self) -> bool:
        return self.end_usecs is not None

    def to_script(self) -> str:
        text = ""
        if self.end_usecs is not None:
            text = "..." + format_seconds(self.end_usecs) + " "
        text += f"{self.name}(" + ", ".join(arg.to_script() for arg in self.args) + ")"
        text += " = " + self.result.to_script()
        if self.errno is not None:
            text += " " + self.errno
        if self.note is not None:
            text += f" ({self.note})"
        return text


class CommandRole(Enum):
    INIT = "init"         # untimed, before the first event (upstream: init_command)
    EVENT = "event"       # timed, in the event stream
    CLEANUP = "cleanup"   # untimed, after the last event (upstream: cleanup_command)


@dataclass(frozen=True, kw_only=True)
class ShellCommand(Event):
    """A backquoted shell command (raw text, may span lines); runners skip it.

    ``time`` is None for the untimed init/cleanup forms.
    """

    time: TimeSpec | None
    command: str
    role: CommandRole = CommandRole.EVENT

    def to_script(self) -> str:
        return f"`{self.command}`"


@dataclass(frozen=True, kw_only=True)
class CodeBlock(Event):
    """``%{ python }%`` (content with surrounding spaces/tabs stripped); runners skip it."""

    time: TimeSpec
    code: str

    def to_script(self) -> str:
        return "%{ " + self.code + " }%"


AnyEvent = Union[TcpPacket, UdpPacket, IcmpPacket, Syscall, ShellCommand, CodeBlock]


def format_event(event: AnyEvent) -> str:
    """Canonical one-statement rendering, including the time spec."""
    time = event.time
    body = event.to_script()
    if time is None:
        return body
    if isinstance(event, Syscall) and event.end_usecs is not None:
        return time.to_script() + body          # "+0" + "...0.2 accept(...)"
    return f"{time.to_script()} {body}"


# --------------------------------------------------------------------------
# Script
# --------------------------------------------------------------------------

IP_VERSIONS = ("ipv4", "ipv4-mapped-ipv6", "ipv6")


@dataclass(frozen=True)
class Script:
    """A parsed script.

    ``options`` maps option name to value (None for a bare ``--flag``; the
    last occurrence wins); ``option_list`` keeps every occurrence in order
    (needed for repeated ``--define``).  ``events`` includes untimed
    init/cleanup shell commands (``role`` INIT/CLEANUP) in source order.
    """

    options: dict[str, str | None]
    events: tuple[AnyEvent, ...]
    option_list: tuple[tuple[str, str | None], ...] = ()
    path: str = "<string>"

    @property
    def ip_version(self) -> str | None:
        return self.options.get("ip_version")

    @property
    def tolerance_usecs(self) -> int | None:
        value = self.options.get("tolerance_usecs")
        return None if value is None else int(value)

    @property
    def defines(self) -> dict[str, str]:
        """``--define=NAME=VALUE`` options (not substituted by this parser)."""
        result: dict[str, str] = {}
        for name, value in self.option_list:
            if name == "define" and value is not None:
                key, _, rest = value.partition("=")
                result[key] = rest
        return result

    @property
    def timed_events(self) -> tuple[AnyEvent, ...]:
        return tuple(e for e in self.events if e.time is not None)

    def to_script(self) -> str:
        lines = []
        for name, value in self.option_list:
            if value is not None and any(c.isspace() for c in value):
                value = f'"{value}"'
            lines.append(f"--{name}" if value is None else f"--{name}={value}")
        lines.extend(format_event(event) for event in self.events)
        return "\n".join(lines) + "\n"
