"""Run a packetdrill script against the deterministic core, in virtual time.

One `TcpCore` in this process is the stack under test.  Time is the core's
stamped time and nothing else: the runner jumps to the next scripted event,
and on the way fires the core's timers at exactly the times they are armed
for (`TcpCore.next_timer` then `tick`), so a script that spans minutes of
retransmission timeouts runs in milliseconds and the same way every time.

Events, in script order:

* an inbound packet is built (packets.py) and handed to the core at its time;
* a system call acts on the socket model (syscalls.py) at its time; a call
  that blocks is retried after every later event until it returns, and
  must return at its scripted end time (``start...end``);
* an outbound packet is the next one the core emitted for the socket under
  test, compared field by field, its emission time within the tolerance
  (``--tolerance_usecs``, 4000 by default) of the scripted time.

Timing follows packetdrill: a relative time counts from the moment the
previous event completed (for an outbound packet, when it was sent; for a
blocking call, when it started); ``*`` accepts any time; a range
``a~b`` accepts [a - tolerance, b + tolerance].  Packets of other
connections than the socket under test are not compared (packetdrill tests
one socket at a time: listen() and connect() choose it, and a packet sent
to a listener starts a new connection that becomes it).

Lines in backquotes configure an operating system under test; they are not
run but counted, as are ``%{ }%`` code blocks.  ``--ip_version=ipv6`` runs
the script over IPv6: the stack at fd3d:fa7b:d17d::1 and the peer at
2001:db8::1 (packetdrill's defaults), IPv6 packets both ways, ICMP lines in
ICMPv6's names (``packet_too_big mtu 1280``); ``ipv4`` and
``ipv4-mapped-ipv6`` put IPv4 on the wire.
"""
from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

from misdtcp._tcpcore import CoreConfigError, Notify, TcpCore, Transmit
from misdtcp.conformance import nodes
from misdtcp.conformance.errors import ParseError
from misdtcp.conformance.packets import (Flow, LivePacket, PacketError, TimestampMap, build_icmp, build_tcp,
                                         compare_icmp, compare_tcp, parse_live, render_live)
from misdtcp.conformance.parser import parse_file
from misdtcp.conformance.sockets import Socket, SocketTable
from misdtcp.conformance.symbols import CONSTANTS as C
from misdtcp.conformance.syscalls import Blocked, Done, Evaluator, ScriptFailure, Syscalls, errno_name

NS_PER_US = 1000
# Virtual time starts one second into the core's clock, so no stamped time is
# 0 (0 means "not armed" or "never" in several core fields).
BASE_NS = 1_000_000_000
DEFAULT_TOLERANCE_US = 4000
# A '*' packet or a blocked call waits at most this long in virtual time.
MAX_WAIT_NS = 3600 * 1_000_000_000
MAX_TIMER_STEPS = 1_000_000


@dataclass
class RunnerConfig:
    """Addresses and ports the script's peer and the stack use (packetdrill's defaults)."""
    local_ip: str = "192.168.0.1"         # the stack under test
    remote_ip: str = "192.0.2.1"          # the script's peer
    local_ip6: str = "fd3d:fa7b:d17d::1"  # ... over IPv6 (--ip_version=ipv6)
    remote_ip6: str = "2001:db8::1"
    bind_port: int = 8080                 # bind(..., ...) and listen()
    connect_port: int = 8080              # connect(..., ...): the peer's port
    first_remote_port: int = 40000        # ports of connections the script opens to a listener
    first_local_port: int = 50000         # ports of connections the stack opens
    core: dict = field(default_factory=dict)


# Script options that configure the core: --misdtcp_NAME=VALUE (NAME a TcpCore option).
CORE_SCRIPT_OPTIONS = {
    "cc": str, "timestamps": int, "sack": int, "nagle": int, "syn_cookies": int, "mss": int,
    "rcvbuf": int, "sndbuf": int, "backlog": int, "challenge_ack_limit": int, "msl_ms": float,
    "delack_ms": float, "rto_min_ms": float, "rto_max_ms": float, "rto_initial_ms": float,
    "max_retries": int, "synack_retries": int, "secret": int, "max_connections": int,
    "fin_wait2_timeout_ms": float, "rfc1337": int,
}

# The runner's stack: a 1500-byte MTU, 1 MiB buffers (window scale 5), the
# core's defaults otherwise.
DEFAULT_CORE = {"mss": 1460, "rcvbuf": 1 << 20, "sndbuf": 1 << 20, "max_connections": 64, "secret": 1}


@dataclass
class ScriptResult:
    path: str
    passed: bool
    line: int | None = None
    message: str = ""
    shell_commands: int = 0
    code_blocks: int = 0

    def report(self) -> str:
        if self.passed:
            return f"PASS {self.path}"
        where = f"line {self.line}: " if self.line else ""
        return f"FAIL {self.path}: {where}{self.message}"


@dataclass
class PendingCall:
    event: nodes.Syscall
    blocked: Blocked
    lo_ns: int
    hi_ns: int


def _seconds(ns: int) -> str:
    return f"{(ns - BASE_NS) / 1e9:.6f}"


class ScriptRun:
    """One script against one fresh core."""

    CORE_OPTIONS = {
        (C["SOL_SOCKET"], C["SO_RCVBUF"]): "rcvbuf",
        (C["SOL_SOCKET"], C["SO_SNDBUF"]): "sndbuf",
        (C["SOL_SOCKET"], C["SO_KEEPALIVE"]): "keepalive",
        (C["IPPROTO_TCP"], C["TCP_NODELAY"]): "nodelay",
        (C["IPPROTO_TCP"], C["TCP_MAXSEG"]): "maxseg",
        (C["IPPROTO_TCP"], C["TCP_KEEPIDLE"]): "keepidle",
        (C["IPPROTO_TCP"], C["TCP_KEEPINTVL"]): "keepintvl",
        (C["IPPROTO_TCP"], C["TCP_KEEPCNT"]): "keepcnt",
    }

    def __init__(self, script: nodes.Script, relaxed: bool = False, config: RunnerConfig | None = None):
        self.script = script
        self.relaxed = relaxed
        self.config = config or RunnerConfig()
        self.tolerance_ns = (script.tolerance_usecs if script.tolerance_usecs is not None
                             else DEFAULT_TOLERANCE_US) * NS_PER_US
        self.clock_ns = BASE_NS
        self.base_ns = BASE_NS                   # what relative times count from
        self.queue: deque[LivePacket] = deque()  # sent by the core, not yet compared
        self.flows: list[Flow] = []
        self.sut: Flow | Socket | None = None    # the socket under test
        self.sockets = SocketTable()
        self.calls = Syscalls(self)
        self.pending: PendingCall | None = None
        self.tsmap = TimestampMap()
        self.next_remote_port = self.config.first_remote_port
        self.next_local_port = self.config.first_local_port
        self.next_tag = 1
        self.ipv6 = script.ip_version == "ipv6"
        if self.ipv6:
            self.local = ipaddress.IPv6Address(self.config.local_ip6).packed
            self.remote = ipaddress.IPv6Address(self.config.remote_ip6).packed
        else:
            self.local = ipaddress.IPv4Address(self.config.local_ip).packed
            self.remote = ipaddress.IPv4Address(self.config.remote_ip).packed
        self.core: TcpCore | None = None
        self.core_settings: dict = {}

    # -- the core ----------------------------------------------------------------
    def _core_config(self) -> dict:
        config = dict(DEFAULT_CORE)
        config.update(self.config.core)
        for name, value in self.script.options.items():
            if not name.startswith("misdtcp_"):
                continue                                    # packetdrill options: accepted, ignored
            key = name[len("misdtcp_"):]
            kind = CORE_SCRIPT_OPTIONS.get(key)
            if kind is None:
                raise ScriptFailure(0, f"--{name} is not a misdtcp core option "
                                       f"(one of {', '.join(sorted(CORE_SCRIPT_OPTIONS))})")
            try:
                config[key] = kind(value)
            except (TypeError, ValueError):
                raise ScriptFailure(0, f"--{name} needs a {kind.__name__} value, not {value!r}") from None
        return config

    def _apply(self, actions) -> None:
        """Carry out the core's actions: packets are queued for comparison,
        notifications update the socket model."""
        aborts = []
        for a in actions:
            if isinstance(a, Transmit):
                length = a.length if a.source != "none" else 0
                pkt = parse_live(a.header, length, self.clock_ns, None if a.handle == 0xffffffff else a.handle)
                if pkt.protocol == 6 and pkt.flags & 0x02:
                    flow = self._flow_for_live(pkt)
                    if flow is not None:
                        flow.live_isn = pkt.seq
                self.queue.append(pkt)
            elif isinstance(a, Notify):
                if a.event == "accepted":
                    self._attach_flow(a.handle)
                aborts += self.sockets.on_notify(a.handle, a.event, a.value)
        for handle in aborts:
            self._apply(self.core.abort(handle, now=self.clock_ns))

    def request(self, method: str, *args, **kwargs):
        actions = getattr(self.core, method)(*args, now=self.clock_ns, **kwargs)
        self._apply(actions)
        return actions

    def _attach_flow(self, handle: int) -> None:
        info = self.core.conn(handle)
        if info is None:
            return
        lport, rport = info["lport"], info["rport"]
        conn = self.sockets.conn(handle)
        for flow in self.flows:
            if flow.local_port == lport and flow.remote_port == rport:
                flow.handle = handle
                conn.flow = flow

    def _flow_for_live(self, pkt: LivePacket) -> Flow | None:
        for flow in reversed(self.flows):
            if flow.local_port == pkt.sport and flow.remote_port == pkt.dport:
                return flow
        return None

    # -- the socket model's requests ---------------------------------------------------
    def set_socket_under_test(self, target) -> None:
        self.sut = target

    def listen(self, sock: Socket) -> None:
        self.request("listen", sock.port, backlog=sock.backlog)
        for key, value in sock.options.items():
            if key in self.CORE_OPTIONS:
                self._core_setopt(sock.port, key, value, listener=True)

    def accepted(self, child: Socket) -> None:
        self.request("accepted", child.conn.handle)

    def connect(self, sock: Socket, raddr: str, rport: int) -> None:
        lport = sock.port
        if lport is None:
            lport = self.next_local_port
            self.next_local_port += 1
        flow = Flow(local_port=lport, remote_port=rport)
        self.flows.append(flow)
        sock.flow = flow
        self.sut = flow
        tag = self.next_tag
        self.next_tag += 1
        self.sockets.by_tag[tag] = sock
        sock.connecting = True
        before = set(self.core.connections())
        self.request("connect", raddr, rport, lport, tag=tag, **self._connect_options(sock))
        new = [h for h in self.core.connections() if h not in before]
        if new:
            conn = self.sockets.conn(new[0])
            conn.flow = flow
            flow.handle = new[0]
            sock.conn = conn
            for key, value in sock.options.items():
                if key in self.CORE_OPTIONS:
                    self._core_setopt(new[0], key, value)

    def _connect_options(self, sock: Socket) -> dict:
        return {"mss": sock.options.get((C["IPPROTO_TCP"], C["TCP_MAXSEG"]), 0),
                "rcvbuf": sock.options.get((C["SOL_SOCKET"], C["SO_RCVBUF"]), 0)}

    def consumed(self, sock: Socket) -> None:
        if sock.conn is not None and not sock.conn.gone:
            self.request("consumed", sock.conn.handle, sock.read_off)

    def send(self, sock: Socket, urgent: bool) -> None:
        self.request("send", sock.conn.handle, sock.written, **({"urgent": True} if urgent else {}))

    def shutdown(self, sock: Socket) -> None:
        if sock.conn is not None and not sock.conn.gone:
            self.request("shutdown", sock.conn.handle)

    def close(self, sock: Socket) -> None:
        if sock.listening:
            # the core resets the connections the listener leaves unaccepted (as Linux)
            self.request("unlisten", sock.port)
            sock.queue.clear()
            return
        conn = sock.conn
        if conn is None or conn.gone:
            return
        onoff, linger = sock.options.get((C["SOL_SOCKET"], C["SO_LINGER"]), (0, 0))
        if onoff and linger == 0:
            self.request("abort", conn.handle)     # SO_LINGER {1, 0}: close() resets
        else:
            self.request("close", conn.handle)

    def sndbuf(self, sock: Socket) -> int:
        return sock.options.get((C["SOL_SOCKET"], C["SO_SNDBUF"]), self.core_settings["sndbuf"])

    def _core_setopt(self, target, key, value, listener=False) -> None:
        ok, actions = self.core.setopt(target, self.CORE_OPTIONS[key], value, now=self.clock_ns, listener=listener)
        self._apply(actions)
        if not ok:
            raise ScriptFailure(0, f"the core refused socket option {self.CORE_OPTIONS[key]} = {value}")

    def setopt(self, sock: Socket, key, value) -> None:
        if sock.listening:
            self._core_setopt(sock.port, key, value, listener=True)
        elif sock.conn is not None and not sock.conn.gone:
            self._core_setopt(sock.conn.handle, key, value)

    def getopt(self, sock: Socket, key) -> int:
        if key == (C["SOL_SOCKET"], C["SO_TYPE"]):
            return C["SOCK_STREAM"]
        name = self.CORE_OPTIONS[key]
        info = self.core.conn(sock.conn.handle) if sock.conn is not None and not sock.conn.gone else None
        if name == "maxseg" and info is not None and info["state"] not in ("SYN_SENT", "SYN_RECEIVED"):
            # Linux returns the MSS in use: the peer's, less the timestamp option
            return info["snd_mss"] - (12 if info["ts_ok"] else 0)
        if key in sock.options:
            return sock.options[key]
        defaults = {"rcvbuf": self.core_settings["rcvbuf"], "sndbuf": self.core_settings["sndbuf"],
                    "keepalive": 0, "nodelay": 0, "maxseg": 536,
                    "keepidle": 7200, "keepintvl": 75, "keepcnt": 9}
        return defaults.get(name, 0)

    def poll_mask(self, sock: Socket) -> int:
        """tcp_poll()'s answer for this socket (Linux semantics)."""
        mask = 0
        if sock.listening:
            return C["POLLIN"] | C["POLLRDNORM"] if sock.queue else 0
        conn = sock.conn
        if sock.pending_error:
            mask |= C["POLLERR"]
        if conn is None:
            if sock.connecting:
                return mask
            return mask | C["POLLOUT"] | C["POLLWRNORM"] | C["POLLHUP"]
        closed = conn.gone
        peer_fin = conn.fin_off is not None and conn.readable >= conn.fin_off
        rd_shut = sock.rd_shutdown or peer_fin or closed
        wr_shut = sock.wr_shutdown or closed
        if (rd_shut and wr_shut) or closed:
            mask |= C["POLLHUP"]
        if rd_shut:
            mask |= C["POLLIN"] | C["POLLRDNORM"] | C["POLLRDHUP"]
        if sock.connecting and not sock.connected:
            return mask
        if sock.readable_bytes() > 0:
            mask |= C["POLLIN"] | C["POLLRDNORM"]
        if conn.urgent_end > sock.read_off:
            mask |= C["POLLPRI"]                # urgent data not yet read (RFC 6093: in line)
        if wr_shut or self.sndbuf(sock) - (sock.written - conn.acked) > 0:
            mask |= C["POLLOUT"] | C["POLLWRNORM"]
        return mask

    # -- time ----------------------------------------------------------------------
    def _check_pending(self) -> None:
        p = self.pending
        if p is None:
            return
        done = p.blocked.retry()
        if done is None and p.blocked.deadline_ns is not None and self.clock_ns >= p.blocked.deadline_ns:
            done = p.blocked.expire()
        if done is None:
            return
        self.pending = None
        if not p.lo_ns <= self.clock_ns <= p.hi_ns:
            raise ScriptFailure(p.event.line, f"expected {p.event.name}() to return at "
                                              f"{_seconds(p.lo_ns + self.tolerance_ns)}, it returned at "
                                              f"{_seconds(self.clock_ns)}")
        self._check_result(p.event, done)

    def _step_to(self, target_ns: int) -> None:
        """Fire every timer (and poll timeout) due up to target_ns, in order."""
        for _ in range(MAX_TIMER_STEPS):
            candidates = [t for t in (self.core.next_timer,
                                      self.pending.blocked.deadline_ns if self.pending else None) if t]
            nxt = min(candidates) if candidates else None
            if nxt is None or nxt > target_ns:
                break
            self.clock_ns = max(self.clock_ns, nxt)
            if self.core.next_timer and self.core.next_timer <= self.clock_ns:
                self._apply(self.core.tick(self.clock_ns))
            self._check_pending()
        else:
            raise ScriptFailure(0, "the core's timers keep firing without time moving on")
        self.clock_ns = max(self.clock_ns, target_ns)

    def advance_to(self, target_ns: int) -> None:
        """Move virtual time to target_ns; a blocked call must return by its end."""
        if self.pending is not None and target_ns > self.pending.hi_ns:
            self._step_to(self.pending.hi_ns)
            self._check_pending()
            if self.pending is not None:
                p = self.pending
                raise ScriptFailure(p.event.line, f"expected {p.event.name}() to return at "
                                                  f"{_seconds(p.lo_ns + self.tolerance_ns)}, it was still "
                                                  f"blocked at {_seconds(p.hi_ns)}")
        self._step_to(target_ns)
        self._check_pending()

    def _times(self, spec: nodes.TimeSpec, end_us: int | None = None):
        """(start, end) in ns of a time spec (a range's, or a blocking call's
        end); (None, None) for '*'."""
        if spec.kind is nodes.TimeKind.ANY:
            return None, None
        base = BASE_NS if spec.kind is nodes.TimeKind.ABSOLUTE else self.base_ns
        start = base + spec.usecs * NS_PER_US
        end = base + (spec.end_usecs if spec.end_usecs is not None else spec.usecs) * NS_PER_US
        if end_us is not None:
            end = base + end_us * NS_PER_US
        return start, end

    # -- events --------------------------------------------------------------------
    def run(self) -> None:
        config = self._core_config()
        self.core_settings = config
        if self.ipv6:
            config["local_address6"] = self.config.local_ip6
        try:
            self.core = TcpCore(self.config.local_ip, **config)
        except (CoreConfigError, TypeError) as exc:
            raise ScriptFailure(0, f"the core rejects this configuration: {exc}") from None
        for event in self.script.events:
            if isinstance(event, (nodes.ShellCommand, nodes.CodeBlock)):
                continue
            try:
                self._event(event)
            except ScriptFailure as exc:
                if not exc.line:
                    exc.line = event.line
                raise
        if self.pending is not None:
            self.advance_to(self.pending.hi_ns)

    def _event(self, event) -> None:
        if isinstance(event, (nodes.TcpPacket, nodes.IcmpPacket)):
            if event.direction is nodes.Direction.INBOUND:
                self._inbound(event)
            else:
                self._outbound(event)
        elif isinstance(event, nodes.UdpPacket):
            raise ScriptFailure(event.line, "UDP is not supported by this core")
        elif isinstance(event, nodes.Syscall):
            self._syscall(event)
        self._check_overflow(event)

    def _check_overflow(self, event) -> None:
        if self.core.action_overflow:
            raise ScriptFailure(event.line, f"the core lost {self.core.action_overflow} actions "
                                            "for want of room in its action list")

    def _inbound(self, event) -> None:
        start, _ = self._times(event.time)
        self.advance_to(start)
        self.base_ns = start
        flow = self._inbound_flow(event)
        try:
            if isinstance(event, nodes.TcpPacket):
                frame = build_tcp(event, flow, self.tsmap, self.remote, self.local)
            else:
                frame = build_icmp(event, flow, self.remote, self.local)
        except PacketError as exc:
            raise ScriptFailure(event.line, str(exc)) from None
        self._apply(self.core.frame(frame, self.clock_ns))
        self._check_pending()

    def _inbound_flow(self, event) -> Flow:
        """The connection an inbound packet belongs to: the socket under
        test's, or (sent to a listener, or with no socket) a new one."""
        if isinstance(self.sut, Flow):
            return self.sut
        port = self.sut.port if isinstance(self.sut, Socket) and self.sut.port else self.config.bind_port
        flow = Flow(local_port=port, remote_port=self.next_remote_port)
        self.next_remote_port += 1
        if isinstance(event, nodes.TcpPacket):
            self.flows.append(flow)
            self.sut = flow
        return flow

    def _syscall(self, event: nodes.Syscall) -> None:
        start, end = self._times(event.time, event.end_usecs)
        lo, hi = end - self.tolerance_ns, end + self.tolerance_ns
        self.advance_to(start)
        self.base_ns = start
        if self.pending is not None:
            raise ScriptFailure(event.line, f"a blocking {self.pending.event.name}() (line "
                                            f"{self.pending.event.line}) has not returned yet")
        outcome = self.calls.call(event)
        if isinstance(outcome, Blocked):
            self.pending = PendingCall(event, outcome, lo, hi)
            return
        if event.end_usecs is not None and not lo <= self.clock_ns <= hi:
            raise ScriptFailure(event.line, f"expected {event.name}() to block until "
                                            f"{_seconds(hi - self.tolerance_ns)}, it returned at once")
        self._check_result(event, outcome)

    def _check_result(self, event: nodes.Syscall, done: Done) -> None:
        ev = Evaluator(event)
        expected = ev.int(event.result)
        if expected is not None and done.value != expected and not \
                (event.name in ("socket", "accept", "accept4") and expected >= 0 and done.value >= 0):
            got = f"{done.value}" + (f" {errno_name(done.errno)}" if done.errno is not None else "")
            raise ScriptFailure(event.line, f"expected {event.name}() = {event.result.to_script()}"
                                            f"{' ' + event.errno if event.errno else ''}, got {got}")
        if event.errno is not None:
            want = C.get(event.errno) if event.errno in C else None
            from misdtcp.conformance.symbols import ERRNO
            want = ERRNO.get(event.errno, want)
            if want is None:
                raise ScriptFailure(event.line, f"unknown errno {event.errno}")
            if done.errno != want:
                raise ScriptFailure(event.line, f"expected errno {event.errno}, got {errno_name(done.errno)}")
        for what, expected_expr, actual in done.checks:
            self._check_value(event, ev, what, expected_expr, actual)

    def _check_value(self, event, ev, what, expected_expr, actual) -> None:
        if isinstance(expected_expr, nodes.Ellipsis):
            return
        if isinstance(actual, dict):
            want = ev.value(expected_expr)
            if not isinstance(want, dict):
                raise ScriptFailure(event.line, f"expected a structure for {what}, got {expected_expr.to_script()}")
            for key, value in want.items():
                if value is not None and actual.get(key) != value:
                    raise ScriptFailure(event.line, f"expected {what} {key}={value}, got {key}={actual.get(key)}")
            return
        want = ev.int(expected_expr)
        if want is not None and want != actual:
            if what.startswith("revents") or what == "SO_ERROR":
                raise ScriptFailure(event.line, f"expected {what} {_describe(what, want)}, "
                                                f"got {_describe(what, actual)}")
            raise ScriptFailure(event.line, f"expected {what} {want}, got {actual}")

    def _outbound(self, event) -> None:
        start, end = self._times(event.time)
        lo = start - self.tolerance_ns if start is not None else None
        hi = end + self.tolerance_ns if end is not None else None
        limit = hi if hi is not None else self.clock_ns + MAX_WAIT_NS
        pkt = self._next_packet(limit)
        if pkt is None:
            when = f" by {_seconds(hi)}" if hi is not None else ""
            raise ScriptFailure(event.line, f"expected {event.to_script()}, got no packet{when}")
        flow = self._flow_for_live(pkt) or (self.sut if isinstance(self.sut, Flow) else Flow(0, 0))
        if lo is not None and pkt.time_ns < lo:
            raise ScriptFailure(event.line, f"expected {event.to_script()} at {_seconds(start)}, "
                                            f"got {render_live(pkt, flow)} at {_seconds(pkt.time_ns)}")
        if isinstance(event, nodes.IcmpPacket):
            problem = compare_icmp(event, pkt, self.ipv6)
            pieces = [pkt]
        else:
            if pkt.protocol == 6 and pkt.flags & 0x02 and "S" in event.flags:
                flow.script_isn = event.seq.start      # the SYN defines the mapping
            pieces = self._aggregate(event, pkt, limit)
            problem = compare_tcp(event, pieces, flow, self.relaxed)
        if problem:
            raise ScriptFailure(event.line, problem + f" at {_seconds(pkt.time_ns)}")
        for _ in pieces:
            self.queue.popleft()
        if isinstance(event, nodes.TcpPacket):
            ts = event.option(nodes.Timestamp)
            live_ts = pkt.timestamp()
            if ts is not None and live_ts is not None:
                self.tsmap.learn(ts.val, live_ts[0])
        self.base_ns = pkt.time_ns

    def _next_packet(self, limit_ns: int) -> LivePacket | None:
        """The next packet the socket under test sent, waiting (firing
        timers) up to limit_ns for one."""
        while True:
            while self.queue and not self._for_sut(self.queue[0]):
                self.queue.popleft()
            if self.queue:
                return self.queue[0]
            nxt = self.core.next_timer
            if self.pending is not None and self.pending.blocked.deadline_ns:
                nxt = min(t for t in (nxt, self.pending.blocked.deadline_ns) if t)
            if not nxt or nxt > limit_ns:
                if limit_ns < self.clock_ns + MAX_WAIT_NS:
                    self.advance_to(max(self.clock_ns, limit_ns))
                    while self.queue and not self._for_sut(self.queue[0]):
                        self.queue.popleft()
                    return self.queue[0] if self.queue else None
                return None
            self.advance_to(max(self.clock_ns, nxt))

    def _for_sut(self, pkt: LivePacket) -> bool:
        flow = self._flow_for_live(pkt)
        if isinstance(self.sut, Flow):
            return flow is self.sut or (flow is None and pkt.protocol == 1)
        return flow is None

    def _aggregate(self, event: nodes.TcpPacket, first: LivePacket, limit_ns: int) -> list[LivePacket]:
        """Consecutive segments that together carry the scripted payload (a
        TSO burst in packetdrill's terms), when the first carries less."""
        pieces = [first]
        total = first.payload_len
        want = event.seq.length
        if first.protocol != 6 or total == 0 or total >= want:
            return pieces
        index = 1
        while total < want:
            while index >= len(self.queue):
                before = len(self.queue)
                nxt = self.core.next_timer
                if not nxt or nxt > limit_ns:
                    return pieces
                self.advance_to(nxt)
                if len(self.queue) == before and not self.core.next_timer:
                    return pieces
            nxt_pkt = self.queue[index]
            last = pieces[-1]
            if nxt_pkt.protocol != 6 or nxt_pkt.sport != last.sport or nxt_pkt.dport != last.dport or \
                    nxt_pkt.seq != (last.seq + last.payload_len) % (1 << 32) or nxt_pkt.payload_len == 0 or \
                    last.flags & 0x01:
                return pieces
            pieces.append(nxt_pkt)
            total += nxt_pkt.payload_len
            index += 1
        return pieces


def _option_line(path: str, message: str) -> int | None:
    """The line of the script option a configuration failure names."""
    if not message.startswith("--"):
        return None
    name = message.split()[0]
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip().startswith(name):
                return number
    return None


def _describe(what: str, value: int) -> str:
    if what == "SO_ERROR":
        return errno_name(value) if value else "0"
    names = [n for n in ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM",
                         "POLLRDBAND", "POLLWRNORM", "POLLWRBAND", "POLLRDHUP") if value & C[n]]
    return "|".join(names) if names else "0"


def run_script(path: str, relaxed: bool = False, config: RunnerConfig | None = None) -> ScriptResult:
    """Parse and run one script; any disagreement is a failed result, never an exception."""
    try:
        script = parse_file(path)
    except ParseError as exc:
        return ScriptResult(path, False, exc.line, exc.message)
    shells = sum(1 for e in script.events if isinstance(e, nodes.ShellCommand))
    codes = sum(1 for e in script.events if isinstance(e, nodes.CodeBlock))
    run = ScriptRun(script, relaxed, config)
    try:
        run.run()
    except ScriptFailure as exc:
        return ScriptResult(path, False, exc.line or _option_line(path, exc.message), exc.message, shells, codes)
    return ScriptResult(path, True, shell_commands=shells, code_blocks=codes)
