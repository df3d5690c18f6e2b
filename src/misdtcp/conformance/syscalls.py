"""A script's system calls, carried out on the socket model over the core.

Each call maps onto the core's application requests (listen, connect,
accepted, consumed, send, shutdown, close, abort, setopt) plus socket state
the runner keeps itself (`sockets.SocketTable`).  A call either completes
(`Done`: the return value, errno, and output arguments to compare with what
the script wrote) or blocks (`Blocked`: the runner retries it after every
event until it completes, as a blocking call in a kernel would return).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable

from misdtcp.conformance import nodes
from misdtcp.conformance.sockets import Socket
from misdtcp.conformance.symbols import CONSTANTS, ERRNO, ERRNO_NAMES

C = CONSTANTS
E = ERRNO

# Buffer-size socket options: their values are each stack's own choice (--relaxed skips them).
BUFFER_OPTIONS = {(C["SOL_SOCKET"], C["SO_RCVBUF"]), (C["SOL_SOCKET"], C["SO_SNDBUF"])}


class ScriptFailure(Exception):
    """The script and the stack disagree, or the script asks for something
    this runner cannot do (one sentence, for line `line`)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class Done:
    value: int
    errno: int | None = None
    checks: list = field(default_factory=list)     # (what, expected Expr, actual value)


@dataclass
class Blocked:
    retry: Callable[[], "Done | None"]
    deadline_ns: int | None = None                  # poll's timeout
    expire: Callable[[], Done] | None = None


def fail(event: nodes.Syscall, message: str):
    raise ScriptFailure(event.line, message)


class Evaluator:
    """Script expressions -> values (ints, strings, lists, dicts)."""

    def __init__(self, event: nodes.Syscall):
        self.event = event

    def value(self, expr):
        if isinstance(expr, nodes.Ellipsis):
            return None
        if isinstance(expr, nodes.Int):
            return expr.value
        if isinstance(expr, nodes.Symbol):
            if expr.name in CONSTANTS:
                return CONSTANTS[expr.name]
            if expr.name in ERRNO:
                return ERRNO[expr.name]
            if expr.name in ("NULL", "null"):
                return 0
            fail(self.event, f"unknown symbol {expr.name}")
        if isinstance(expr, nodes.BinaryOr):
            result = 0
            for operand in expr.operands:
                result |= self.int(operand)
            return result
        if isinstance(expr, nodes.String):
            return expr.value
        if isinstance(expr, nodes.List):
            return [self.value(item) for item in expr.items]
        if isinstance(expr, nodes.Struct):
            return {name: self.value(value) for name, value in expr.fields.items()}
        if isinstance(expr, nodes.Field):
            return self.value(expr.value)
        if isinstance(expr, nodes.Call):
            if expr.name in ("htons", "ntohs", "htonl", "ntohl") and len(expr.args) == 1:
                return self.int(expr.args[0])
            if expr.name == "inet_addr" and len(expr.args) == 1 and isinstance(expr.args[0], nodes.String):
                try:
                    return int(ipaddress.IPv4Address(expr.args[0].value))
                except ValueError:
                    fail(self.event, f"{expr.args[0].value!r} is not an IPv4 address")
            fail(self.event, f"the expression {expr.to_script()} is not supported by this runner")
        fail(self.event, f"the expression {expr.to_script()} is not supported by this runner")

    def int(self, expr) -> int | None:
        """An integer argument; [N] (an int pointer) counts as N; ... as None."""
        v = self.value(expr)
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if v is None or isinstance(v, int):
            return v
        fail(self.event, f"expected a number, got {expr.to_script()}")

LINGER_FIELDS = {"l_onoff": "onoff", "l_linger": "linger"}   # struct linger's C names


class Syscalls:
    """The system calls of one script run."""

    def __init__(self, runner):
        self.runner = runner
        self.table = runner.sockets
        self.fdmap: dict[int, int] = {}             # script fd -> live fd

    # -- helpers ---------------------------------------------------------------
    def call(self, event: nodes.Syscall):
        method = getattr(self, "sys_" + event.name, None)
        if method is None:
            fail(event, f"the system call {event.name}() is not supported by this runner")
        ev = Evaluator(event)
        return method(event, ev, list(event.args))

    def _arg(self, event, args, i, what):
        if i >= len(args):
            fail(event, f"{event.name}() needs {what} as argument {i + 1}")
        return args[i]

    def _sock(self, event, ev, args, i=0) -> Socket | Done:
        fd = ev.int(self._arg(event, args, i, "a file descriptor"))
        live = self.fdmap.get(fd, fd)
        sock = self.table.sockets.get(live)
        if sock is None:
            return Done(-1, E["EBADF"])
        return sock

    def name_fd(self, event: nodes.Syscall, live_fd: int) -> None:
        """The script names the descriptor by the number it expects back."""
        if isinstance(event.result, nodes.Int) and event.result.value >= 0:
            self.fdmap[event.result.value] = live_fd

    def _blocking(self, sock: Socket, flags: int = 0) -> bool:
        return not sock.nonblocking and not flags & C["MSG_DONTWAIT"]

    # -- sockets -----------------------------------------------------------------
    def sys_socket(self, event, ev, args):
        domain = ev.int(self._arg(event, args, 0, "a domain"))
        kind = ev.int(self._arg(event, args, 1, "a type"))
        protocol = ev.int(args[2]) if len(args) > 2 else None
        if domain not in (None, C["AF_INET"], C["AF_INET6"]):
            return Done(-1, E["EAFNOSUPPORT"])
        if kind is not None and kind & ~(C["SOCK_NONBLOCK"] | C["SOCK_CLOEXEC"]) != C["SOCK_STREAM"]:
            fail(event, "only SOCK_STREAM (TCP) sockets are supported by this runner")
        if protocol not in (None, 0, C["IPPROTO_TCP"]):
            return Done(-1, E["EPROTONOSUPPORT"])
        sock = self.table.create()
        sock.nonblocking = bool(kind and kind & C["SOCK_NONBLOCK"])
        self.name_fd(event, sock.fd)
        return Done(sock.fd)

    def sys_bind(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        addr = ev.value(args[1]) if len(args) > 1 else None
        port = self.runner.config.bind_port
        if isinstance(addr, dict):
            port = addr.get("sin_port", addr.get("sin6_port", port)) or port
        if sock.port is not None or sock.conn is not None:
            return Done(-1, E["EINVAL"])
        for other in self.table.sockets.values():
            if other is not sock and other.port == port and other.listening:
                return Done(-1, E["EADDRINUSE"])
        sock.port = port
        return Done(0)

    def sys_listen(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        backlog = ev.int(args[1]) if len(args) > 1 else 128
        if sock.conn is not None or sock.connecting:
            return Done(-1, E["EINVAL"])
        if sock.listening:
            return Done(0)
        if sock.port is None:
            sock.port = self.runner.config.bind_port
        # Linux admits backlog + 1 connections to the accept queue
        sock.backlog = max(0, backlog or 0) + 1
        self.runner.listen(sock)
        sock.listening = True
        self.runner.set_socket_under_test(sock)
        return Done(0)

    def sys_accept(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        if not sock.listening:
            return Done(-1, E["EINVAL"])

        def attempt():
            while sock.queue:
                conn = sock.queue.popleft()
                if conn.gone and conn.readable == 0 and conn.fin_off is None:
                    continue              # reset before accept: Linux drops it from the queue
                child = self.table.create()
                child.conn = conn
                child.connected = True
                child.port = sock.port
                child.options = dict(sock.options)
                child.flow = conn.flow
                self.runner.accepted(child)
                self.name_fd(event, child.fd)
                return Done(child.fd)
            return None

        done = attempt()
        if done is not None:
            return done
        if not self._blocking(sock):
            return Done(-1, E["EAGAIN"])
        return Blocked(attempt)

    sys_accept4 = sys_accept

    def sys_connect(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        if sock.listening:
            return Done(-1, E["EISCONN"])
        if sock.connected:
            if sock.conn is not None and sock.conn.gone and sock.pending_error:
                return Done(-1, sock.take_error())
            return Done(-1, E["EISCONN"])
        if sock.connecting:
            return Done(-1, E["EALREADY"])
        if sock.failed:
            # Linux: the failed attempt is reported once -- its error, or
            # ECONNABORTED when SO_ERROR took that already
            sock.failed = False
            return Done(-1, sock.take_error() or E["ECONNABORTED"])
        addr = ev.value(args[1]) if len(args) > 1 else None
        rport = self.runner.config.connect_port
        raddr = self.runner.config.remote_ip6 if self.runner.ipv6 else self.runner.config.remote_ip
        if isinstance(addr, dict):
            rport = addr.get("sin_port", addr.get("sin6_port", rport)) or rport
            if addr.get("sin_addr"):
                raddr = str(ipaddress.IPv4Address(addr["sin_addr"]))
        self.runner.connect(sock, raddr, rport)

        def attempt():
            if sock.connected:
                return Done(0)
            if not sock.connecting:
                sock.failed = False
                return Done(-1, sock.take_error() or E["ECONNABORTED"])
            return None

        if not sock.connecting and not sock.connected:
            return attempt()                    # refused at once (no memory, a duplicate 4-tuple)
        if sock.nonblocking:
            return Done(-1, E["EINPROGRESS"])
        return attempt() or Blocked(attempt)

    # -- data --------------------------------------------------------------------
    def _read(self, event, ev, args, flags_index):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        count = ev.int(self._arg(event, args, 2, "a length"))
        flags = ev.int(args[flags_index]) if flags_index is not None and len(args) > flags_index else 0
        flags = flags or 0
        if flags & C["MSG_OOB"]:
            # urgent data stays in line (RFC 6093 §6): there is no out-of-band byte to read
            return Done(-1, E["EINVAL"])
        if sock.listening or (sock.conn is None and not sock.connecting):
            return Done(-1, E["ENOTCONN"])
        peek = bool(flags & C["MSG_PEEK"])
        waitall = bool(flags & C["MSG_WAITALL"]) and not peek
        count = count if count is not None else 1 << 30

        def attempt():
            if sock.conn is None:
                if sock.connecting:
                    return None
                return Done(-1, sock.take_error() or E["ENOTCONN"])
            avail = sock.readable_bytes()
            if avail >= count or (avail > 0 and not (waitall and not sock.at_eof()
                                                     and not sock.pending_error)):
                n = min(count, avail)
                if not peek:
                    sock.read_off += n
                    self.runner.consumed(sock)
                return Done(n)
            if sock.rd_shutdown:
                return Done(0)
            if sock.conn.fin_off is not None and sock.read_off >= sock.conn.fin_off:
                return Done(0)                  # the peer's FIN came first (Linux: SOCK_DONE before sk_err)
            if sock.pending_error:
                return Done(-1, sock.take_error())
            if sock.at_eof():
                return Done(0)
            return None

        done = attempt()
        if done is not None:
            return done
        if not self._blocking(sock, flags):
            return Done(-1, E["EAGAIN"])
        return Blocked(attempt)

    def sys_read(self, event, ev, args):
        return self._read(event, ev, args, None)

    def sys_recv(self, event, ev, args):
        return self._read(event, ev, args, 3)

    sys_recvfrom = sys_recv

    def _write(self, event, ev, args, flags_index):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        data = ev.value(args[1]) if len(args) > 1 else None
        count = ev.int(self._arg(event, args, 2, "a length"))
        if count is None:
            count = len(data) if isinstance(data, str) else 0
        flags = (ev.int(args[flags_index]) if flags_index is not None and len(args) > flags_index else 0) or 0
        if flags & ~(C["MSG_DONTWAIT"] | C["MSG_NOSIGNAL"] | C["MSG_OOB"] | C["MSG_EOR"]):
            fail(event, f"{event.name}() flags {flags:#x} are not supported by this runner")
        urgent = bool(flags & C["MSG_OOB"])
        queued = 0

        def attempt():
            nonlocal queued
            if sock.connecting:
                return None                     # Linux waits for the handshake (EAGAIN if non-blocking)
            if sock.pending_error:
                return Done(-1, sock.take_error()) if queued == 0 else Done(queued)
            if sock.conn is None or sock.wr_shutdown or sock.conn.gone:
                return Done(-1, E["EPIPE"]) if queued == 0 else Done(queued)
            space = self.runner.sndbuf(sock) - (sock.written - sock.conn.acked)
            if space > 0 and queued < count:
                n = min(space, count - queued)
                sock.written += n
                queued += n
                self.runner.send(sock, urgent and queued == count)
            if queued == count or (queued and not self._blocking(sock, flags)):
                return Done(queued)
            return None

        if sock.listening or (sock.conn is None and not sock.connecting):
            if sock.error:
                return Done(-1, sock.take_error())
            return Done(-1, E["EPIPE"])
        done = attempt()
        if done is not None:
            return done
        if not self._blocking(sock, flags):
            return Done(-1, E["EAGAIN"])
        return Blocked(attempt)

    def sys_write(self, event, ev, args):
        return self._write(event, ev, args, None)

    def sys_send(self, event, ev, args):
        return self._write(event, ev, args, 3)

    sys_sendto = sys_send

    # -- ending ------------------------------------------------------------------
    def sys_close(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        del self.table.sockets[sock.fd]
        for script_fd, live in list(self.fdmap.items()):
            if live == sock.fd:
                del self.fdmap[script_fd]
        self.runner.close(sock)
        return Done(0)

    def sys_shutdown(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        how = ev.int(self._arg(event, args, 1, "how"))
        if how not in (C["SHUT_RD"], C["SHUT_WR"], C["SHUT_RDWR"]):
            return Done(-1, E["EINVAL"])
        if sock.conn is None or (sock.conn.gone and not sock.connected):
            return Done(-1, E["ENOTCONN"])
        if how in (C["SHUT_RD"], C["SHUT_RDWR"]):
            sock.rd_shutdown = True
        if how in (C["SHUT_WR"], C["SHUT_RDWR"]) and not sock.wr_shutdown:
            sock.wr_shutdown = True
            self.runner.shutdown(sock)
        return Done(0)

    # -- control -----------------------------------------------------------------
    def sys_fcntl(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        cmd = ev.int(self._arg(event, args, 1, "a command"))
        if cmd == C["F_GETFL"]:
            return Done(C["O_RDWR"] | (C["O_NONBLOCK"] if sock.nonblocking else 0))
        if cmd == C["F_SETFL"]:
            sock.nonblocking = bool((ev.int(self._arg(event, args, 2, "flags")) or 0) & C["O_NONBLOCK"])
            return Done(0)
        if cmd in (C["F_GETFD"], C["F_SETFD"]):
            return Done(0)
        fail(event, f"fcntl command {cmd} is not supported by this runner")

    def sys_setsockopt(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        level = ev.int(self._arg(event, args, 1, "a level"))
        name = ev.int(self._arg(event, args, 2, "an option name"))
        raw = ev.value(self._arg(event, args, 3, "a value"))
        value = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
        label = _option_label(args[2])
        key = (level, name)
        if key == (C["SOL_SOCKET"], C["SO_LINGER"]):
            # Linux's packetdrill writes {onoff=N, linger=N}, FreeBSD's the C names
            value = {LINGER_FIELDS.get(k, k): v for k, v in value.items()} if isinstance(value, dict) else None
            if value is None or not set(value) <= {"onoff", "linger"}:
                fail(event, "SO_LINGER takes {onoff=N, linger=N} or {l_onoff=N, l_linger=N}")
            sock.options[key] = (value.get("onoff", 0), value.get("linger", 0))
            return Done(0)
        if not isinstance(value, int):
            fail(event, f"{label} takes an integer value, got {args[3].to_script()}")
        if key in ((C["SOL_SOCKET"], C["SO_REUSEADDR"]), (C["SOL_SOCKET"], C["SO_REUSEPORT"]),
                   (C["SOL_SOCKET"], C["SO_OOBINLINE"])):
            sock.options[key] = value
            return Done(0)
        if key not in self.runner.CORE_OPTIONS:
            fail(event, f"setsockopt {label} is not supported by this runner")
        if key == (C["IPPROTO_TCP"], C["TCP_MAXSEG"]) and (sock.conn is not None or sock.listening) \
                and not 88 <= value <= 65495:
            return Done(-1, E["EINVAL"])
        if value < 0 or (key in ((C["IPPROTO_TCP"], C["TCP_KEEPIDLE"]), (C["IPPROTO_TCP"], C["TCP_KEEPINTVL"]),
                                 (C["IPPROTO_TCP"], C["TCP_KEEPCNT"])) and value < 1):
            return Done(-1, E["EINVAL"])
        sock.options[key] = value
        self.runner.setopt(sock, key, value)
        return Done(0)

    def sys_getsockopt(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        level = ev.int(self._arg(event, args, 1, "a level"))
        name = ev.int(self._arg(event, args, 2, "an option name"))
        key = (level, name)
        label = _option_label(args[2])
        expected = self._arg(event, args, 3, "a value")
        if key == (C["SOL_SOCKET"], C["SO_ERROR"]):
            actual = sock.take_error()
        elif key == (C["SOL_SOCKET"], C["SO_LINGER"]):
            onoff, linger = sock.options.get(key, (0, 0))
            checks = [("SO_LINGER", expected, {"onoff": onoff, "linger": linger,
                                               "l_onoff": onoff, "l_linger": linger})]
            if len(args) > 4:
                checks.append(("optlen", args[4], 8))
            return Done(0, None, checks)
        elif key in ((C["SOL_SOCKET"], C["SO_REUSEADDR"]), (C["SOL_SOCKET"], C["SO_REUSEPORT"]),
                     (C["SOL_SOCKET"], C["SO_OOBINLINE"])):
            actual = sock.options.get(key, 0)
        elif key in self.runner.CORE_OPTIONS or key == (C["SOL_SOCKET"], C["SO_TYPE"]):
            actual = self.runner.getopt(sock, key)
        else:
            fail(event, f"getsockopt {label} is not supported by this runner")
        checks = []
        if not (self.runner.relaxed and key in BUFFER_OPTIONS):
            checks.append((label, expected, actual))
        if len(args) > 4:
            checks.append(("optlen", args[4], 4))
        return Done(0, None, checks)

    def sys_poll(self, event, ev, args):
        fds = self._arg(event, args, 0, "a pollfd array")
        if not isinstance(fds, nodes.List):
            fail(event, "poll() takes a list of {fd=, events=, revents=}")
        timeout = ev.int(args[2]) if len(args) > 2 else 0
        entries = []
        for item in fds.items:
            if not isinstance(item, nodes.Struct):
                fail(event, "poll() takes a list of {fd=, events=, revents=}")
            f = item.fields
            fd = ev.int(f.get("fd", nodes.Int(-1)))
            events = ev.int(f.get("events", nodes.Int(0))) or 0
            entries.append((fd, events, f.get("revents", nodes.Int(0))))

        def ready():
            out = []
            for fd, events, _ in entries:
                sock = self.table.sockets.get(self.fdmap.get(fd, fd))
                if sock is None:
                    out.append(C["POLLNVAL"] if fd >= 0 else 0)
                    continue
                mask = self.runner.poll_mask(sock)
                out.append(mask & (events | C["POLLERR"] | C["POLLHUP"] | C["POLLNVAL"]))
            return out

        def result(revents):
            checks = [(f"revents of fd {fd}", expected, actual)
                      for (fd, _, expected), actual in zip(entries, revents)]
            return Done(sum(1 for r in revents if r), None, checks)

        def attempt():
            revents = ready()
            return result(revents) if any(revents) else None

        done = attempt()
        if done is not None or timeout == 0:
            return done or result(ready())
        deadline = None if timeout is None or timeout < 0 else self.runner.clock_ns + timeout * 1_000_000
        return Blocked(attempt, deadline, lambda: result(ready()))

    def sys_ioctl(self, event, ev, args):
        sock = self._sock(event, ev, args)
        if isinstance(sock, Done):
            return sock
        request = ev.int(self._arg(event, args, 1, "a request"))
        if request == C["SIOCINQ"]:
            if sock.listening:
                return Done(-1, E["EINVAL"])
            return Done(0, None, [("SIOCINQ", self._arg(event, args, 2, "a value"), sock.readable_bytes())])
        if request == C["SIOCOUTQ"]:
            unacked = sock.written - sock.conn.acked if sock.conn is not None else 0
            return Done(0, None, [("SIOCOUTQ", self._arg(event, args, 2, "a value"), unacked)])
        fail(event, f"ioctl request {request:#x} is not supported by this runner")


def _option_label(expr) -> str:
    return expr.name if isinstance(expr, nodes.Symbol) else expr.to_script()


def errno_name(value: int | None) -> str:
    if value is None:
        return "no errno"
    return ERRNO_NAMES.get(value, str(value))
