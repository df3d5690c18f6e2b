"""Network namespaces, veth pairs and nftables loss for tests, demos and benchmarks.

Everything in misdtcp that moves packets does it inside a network namespace it
created itself (DESIGN.md, "Network safety").  This module is the one place
that creates and destroys those namespaces:

* ``Netns`` - a context manager around ``ip netns add``; runs commands inside
  with ``ip netns exec``, tracks the PIDs it started and kills only those, and
  deletes the namespace on exit even after an exception.  Python code runs
  inside the namespace in a *forked child* (``Netns.call``) or a subprocess
  (``Netns.popen``): ``setns(CLONE_NEWNET)`` changes only the calling thread,
  so doing it on a thread of a multi-threaded process would leave the rest of
  the process in another namespace.
* ``Netns.open_in`` opens a file inside the namespace and hands the descriptor
  back over a Unix socket.  Opening ``/dev/net/tun`` binds the TUN to the
  namespace of the opener, so a process in the root namespace can drive a TUN
  that lives (with its kernel peer) entirely inside a test namespace.
* ``reap_stale`` deletes test namespaces left behind by runs that died.
* ``VethPair`` joins two namespaces for the kernel-vs-kernel baseline.
* ``NftLoss`` drops a percentage of packets on one interface with nftables
  (``numgen random mod 100 < N drop``), the loss for the stack->kernel
  direction (frames the stack writes arrive as *ingress* on the TUN).
* ``icmp_ping`` - a bounded ICMP echo client (raw socket), because iputils
  ``ping`` is not installed on every machine misdtcp runs on.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import pickle
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from misdtcp._wire import internet_checksum

TEST_PREFIX = "misdtcp-test"
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class NetnsError(RuntimeError):
    """A namespace, veth or nftables operation failed; the message says which and why."""


def _ip() -> str:
    path = shutil.which("ip")
    if path is None:
        raise NetnsError("the `ip` command (iproute2) is missing; install iproute2.")
    return path


def _run(argv: Sequence[str], what: str, timeout: float = 30.0, check: bool = True,
         input: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{what} took longer than {timeout:g} s: {' '.join(argv)}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit status {proc.returncode}"
        raise NetnsError(f"{what} failed: {reason}")
    return proc


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns_current_process(name: str) -> None:
    """Move the calling (single-threaded) process into namespace ``name``."""
    if threading.active_count() > 1:
        raise NetnsError("setns() needs a single-threaded process; use Netns.call() or Netns.popen() instead.")
    fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns into namespace {name} failed: {os.strerror(err)}.")
    finally:
        os.close(fd)


def list_netns() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _run([_ip(), "netns", "list"], "listing network namespaces").stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Netns:
    """A network namespace created by this process, deleted on exit.

    ``Netns()`` picks the name ``<prefix>-<pid>-<random>`` so that concurrent
    runs never collide and ``reap_stale`` can tell whose namespace it is.
    """

    def __init__(self, prefix: str = TEST_PREFIX, name: str | None = None):
        if name is None:
            name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        if not _NAME_RE.match(name):
            raise NetnsError(f"{name!r} is not a valid namespace name (letters, digits, '.', '_', '-').")
        self.name = name
        self._created = False
        self._procs: list[subprocess.Popen] = []
        self._children: list[int] = []

    # -- lifetime -----------------------------------------------------------
    def create(self) -> "Netns":
        if os.geteuid() != 0:
            raise NetnsError("creating a network namespace needs root (CAP_SYS_ADMIN).")
        _run([_ip(), "netns", "add", self.name], f"creating namespace {self.name}")
        self._created = True
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        """Kill the processes this object started, then delete the namespace."""
        self.kill_started()
        if self._created:
            self._created = False
            _run([_ip(), "netns", "del", self.name], f"deleting namespace {self.name}", check=False)

    def __enter__(self) -> "Netns":
        return self.create()

    def __exit__(self, *exc: Any) -> None:
        self.delete()

    @property
    def exists(self) -> bool:
        return os.path.exists(os.path.join(NETNS_RUN_DIR, self.name))

    # -- commands -----------------------------------------------------------
    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``ip -n <ns> ARGS``; raises NetnsError with ip's message on failure."""
        return _run([_ip(), "-n", self.name, *args], f"ip {' '.join(args)} in {self.name}", check=check)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return [_ip(), "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace to completion (bounded by ``timeout``)."""
        return _run(self.exec_argv(argv), f"{argv[0]} in {self.name}", timeout=timeout,
                    check=check, input=input)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a command inside the namespace; it is killed (by PID) on ``delete``."""
        # start_new_session: the child gets its own process group, so killing
        # it cannot reach the test runner, and `ip netns exec` execs the target
        # in place, so the PID we track is the command's own.
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.exec_argv(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def python(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start this interpreter with ``args`` inside the namespace (tracked like ``popen``)."""
        return self.popen([sys.executable, *args], **kwargs)

    def enter(self) -> None:
        """Move the *current* process into the namespace: for a forked child only."""
        setns_current_process(self.name)

    def call(self, func: Callable[..., Any], *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)`` in a forked child inside the namespace and return its result.

        The result (or the exception) travels back pickled over a pipe.  The
        child is killed if it has not answered within ``timeout`` seconds.
        """
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into the caller's stack
            status = 0
            try:
                os.close(rfd)
                try:
                    setns_current_process(self.name)
                    payload = (True, func(*args, **kwargs))
                except BaseException as exc:  # travels to the parent, re-raised there
                    payload = (False, exc)
                try:
                    data = pickle.dumps(payload)
                except Exception as exc:
                    data = pickle.dumps((False, NetnsError(f"result of {func.__name__} cannot be pickled: {exc}")))
                with os.fdopen(wfd, "wb") as out:
                    out.write(data)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        self._children.append(pid)
        os.close(wfd)
        try:
            data = _read_all_bounded(rfd, timeout, pid, f"{func.__name__} in {self.name}")
        finally:
            os.close(rfd)
            _reap_child(pid)
            self._children.remove(pid)
        if not data:
            raise NetnsError(f"{func.__name__} in {self.name} died without a result.")
        ok, value = pickle.loads(data)
        if ok:
            return value
        raise value

    def open_in(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open ``path`` from inside the namespace and return the descriptor to this process."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                parent.close()
                setns_current_process(self.name)
                fd = os.open(path, flags | os.O_CLOEXEC)
                socket.send_fds(child, [b"\x00"], [fd])
                status = 0
            except OSError as exc:
                try:
                    child.sendall(struct.pack("!i", exc.errno or errno.EIO))
                except OSError:
                    pass
            except BaseException:
                pass
            finally:
                os._exit(status)
        child.close()
        try:
            parent.settimeout(10.0)
            msg, fds, _flags, _addr = socket.recv_fds(parent, 8, 1)
        finally:
            parent.close()
            _reap_child(pid)
        if fds:
            return fds[0]
        if len(msg) == 4:
            code = struct.unpack("!i", msg)[0]
            raise OSError(code, os.strerror(code), path)
        raise NetnsError(f"opening {path} inside {self.name} failed without an error code.")

    def kill_started(self, grace: float = 2.0) -> None:
        """Terminate the processes started through this object (by PID), then reap them."""
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self._procs:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap_child(pid)
        self._children.clear()

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"


def _read_all_bounded(fd: int, timeout: float, pid: int, what: str) -> bytes:
    import select

    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            raise NetnsError(f"{what} did not finish within {timeout:g} s.")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap_child(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# -- stale namespace reaper -------------------------------------------------
def _process_start_time(pid: int) -> float | None:
    """Wall-clock start time of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # Field 22 (starttime, clock ticks after boot) counts from after the
    # closing parenthesis of the command name, which may contain spaces.
    fields = stat[stat.rindex(")") + 2:].split()
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def reap_stale(prefix: str = TEST_PREFIX) -> list[str]:
    """Delete ``<prefix>-<pid>-<hex>`` namespaces whose creating process is gone.

    A namespace is stale when the PID in its name no longer runs, or runs but
    started after the namespace was created (the PID was reused).  Namespaces
    of live concurrent runs are left alone.  Returns the deleted names.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-[0-9a-f]+$")
    deleted = []
    for name in list_netns():
        m = pattern.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        started = _process_start_time(pid)
        try:
            created = os.stat(os.path.join(NETNS_RUN_DIR, name)).st_mtime
        except FileNotFoundError:
            continue
        if started is not None and started <= created + 1.0:
            continue  # its creator is still running
        _run([_ip(), "netns", "del", name], f"deleting stale namespace {name}", check=False)
        deleted.append(name)
    return deleted


# -- veth pair ---------------------------------------------------------------
@dataclass
class VethPair:
    """A veth pair with one end in each of two namespaces, addressed and up.

    Created from inside ``ns_a`` (``ip -n A link add ... peer ... netns B``), so
    no interface ever appears in the root namespace.
    """

    ns_a: Netns
    ns_b: Netns
    cidr_a: str = "10.78.0.1/24"
    cidr_b: str = "10.78.0.2/24"
    name_a: str = "veth-a"
    name_b: str = "veth-b"
    mtu: int = 1500
    _up: bool = field(default=False, init=False)

    def create(self) -> "VethPair":
        for ifname in (self.name_a, self.name_b):
            if not 1 <= len(ifname) <= 15:
                raise NetnsError(f"interface name {ifname!r} must be 1 to 15 characters.")
        self.ns_a.ip("link", "add", self.name_a, "mtu", str(self.mtu), "type", "veth",
                     "peer", "name", self.name_b, "mtu", str(self.mtu), "netns", self.ns_b.name)
        self._up = True
        self.ns_a.ip("addr", "add", self.cidr_a, "dev", self.name_a)
        self.ns_b.ip("addr", "add", self.cidr_b, "dev", self.name_b)
        self.ns_a.ip("link", "set", self.name_a, "up")
        self.ns_b.ip("link", "set", self.name_b, "up")
        return self

    @property
    def addr_a(self) -> str:
        return self.cidr_a.split("/")[0]

    @property
    def addr_b(self) -> str:
        return self.cidr_b.split("/")[0]

    def delete(self) -> None:
        if self._up:
            self._up = False
            # Deleting one end deletes the pair; the namespace may already be gone.
            if self.ns_a.exists:
                self.ns_a.ip("link", "del", self.name_a, check=False)

    def __enter__(self) -> "VethPair":
        return self.create()

    def __exit__(self, *exc: Any) -> None:
        self.delete()


# -- nftables loss -------------------------------------------------------------
class NftLoss:
    """Drop ``percent`` % of the packets on interface ``ifname`` inside ``ns``, at random.

    ``direction="ingress"`` hooks prerouting and matches ``iifname``: for a TUN
    that is the stack->kernel direction, real loss the kernel cannot see.
    ``direction="egress"`` hooks postrouting and matches ``oifname``; note that
    the kernel's TCP sees such a drop as a local transmit failure and resends
    without it counting as network loss (DESIGN.md, "TUN facts").
    The rule lives in its own table, so removal never touches other rules.
    """

    TABLE = "misdtcp_loss"

    def __init__(self, ns: Netns, ifname: str, percent: int, direction: str = "ingress"):
        if not isinstance(percent, int) or not 0 <= percent <= 100:
            raise NetnsError(f"loss percent must be an integer from 0 to 100, not {percent!r}.")
        if direction not in ("ingress", "egress"):
            raise NetnsError(f"direction must be 'ingress' or 'egress', not {direction!r}.")
        if not re.match(r"^[A-Za-z0-9_.-]{1,15}$", ifname):
            raise NetnsError(f"{ifname!r} is not a valid interface name.")
        if shutil.which("nft") is None:
            raise NetnsError("the `nft` command (nftables) is missing; install nftables.")
        self.ns = ns
        self.ifname = ifname
        self.percent = percent
        self.direction = direction
        self._installed = False

    def _ruleset(self) -> str:
        hook, match = ("prerouting", "iifname") if self.direction == "ingress" else ("postrouting", "oifname")
        # priority -300: before conntrack (-200), so dropped packets never
        # create conntrack state and the loss is independent of other rules.
        return (
            f"table ip {self.TABLE} {{\n"
            f"  chain loss {{ type filter hook {hook} priority -300; policy accept;\n"
            f"    {match} \"{self.ifname}\" numgen random mod 100 < {self.percent} counter drop\n"
            f"  }}\n"
            f"}}\n"
        )

    def install(self) -> "NftLoss":
        self.ns.run(["nft", "-f", "-"], input=self._ruleset().encode())
        self._installed = True
        return self

    def remove(self) -> None:
        if self._installed:
            self._installed = False
            if self.ns.exists:
                self.ns.run(["nft", "delete", "table", "ip", self.TABLE], check=False)

    def dropped(self) -> int:
        """Packets dropped by the rule so far (its nftables counter)."""
        out = self.ns.run(["nft", "-j", "list", "table", "ip", self.TABLE]).stdout
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
        raise NetnsError(f"the loss rule in table {self.TABLE} has no counter.")

    def installed_in_kernel(self) -> bool:
        proc = self.ns.run(["nft", "list", "tables"], check=False)
        return f"table ip {self.TABLE}" in proc.stdout.decode()

    def __enter__(self) -> "NftLoss":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


# -- ICMP echo client -------------------------------------------------------------
@dataclass
class PingResult:
    sent: int
    received: int
    rtts_ms: list[float]

    @property
    def lost(self) -> int:
        return self.sent - self.received


def icmp_ping(dst: str, count: int = 1, interval: float = 0.2, wait: float = 2.0,
              payload: bytes = b"misdtcp-ping") -> PingResult:
    """Send ``count`` ICMP echo requests to ``dst`` and count the replies (needs root).

    Bounded: at most ``count`` requests, then at most ``wait`` seconds for the
    last replies.  Run it inside a namespace with ``Netns.call(icmp_ping, ...)``.
    """
    import select

    if not 1 <= count <= 100000:
        raise ValueError(f"count must be between 1 and 100000, not {count}.")
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    sent_at: dict[int, float] = {}
    rtts: list[float] = []

    def drain(until: float) -> None:
        while len(rtts) < count:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                return
            try:
                packet, (src, _port) = sock.recvfrom(65535)
            except BlockingIOError:
                continue
            ihl = (packet[0] & 0x0F) * 4
            icmp = packet[ihl:]
            if src != dst or len(icmp) < 8 or icmp[0] != 0:
                continue  # not an echo reply from dst (a raw socket sees all ICMP)
            rid, seq = struct.unpack("!HH", icmp[4:8])
            if rid == ident and seq in sent_at:
                rtts.append((time.monotonic() - sent_at.pop(seq)) * 1000.0)

    try:
        for seq in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            csum = internet_checksum(header + payload)
            sock.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload, (dst, 0))
            sent_at[seq] = time.monotonic()
            drain(time.monotonic() + interval)
        drain(time.monotonic() + wait)
    finally:
        sock.close()
    return PingResult(sent=count, received=len(rtts), rtts_ms=rtts)
