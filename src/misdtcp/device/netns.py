"""Network namespaces: the one place misdtcp creates and destroys them.

Everything in misdtcp that moves packets does it inside a network namespace it
created itself (docs/DESIGN.md, "Network safety"):

* ``Netns`` - a context manager around ``ip netns add``; runs commands inside
  with ``ip netns exec``, tracks the PIDs it started and kills only those, and
  deletes the namespace on exit even after an exception.  Python code runs
  inside the namespace in a *forked child* (``Netns.call``) or a subprocess
  (``Netns.popen``): ``setns(CLONE_NEWNET)`` changes only the calling thread,
  so doing it on a thread of a multi-threaded process would leave the rest of
  the process in another namespace.
* ``Netns.descriptor_from`` runs a function that opens a descriptor inside the
  namespace (in a forked child) and hands the descriptor back over a Unix
  socket.  A TUN is bound to the namespace of whoever creates it, so a
  process in the root namespace can drive a TUN that lives (with its kernel
  peer) entirely inside a test namespace.

veth pairs are in ``device.veth``; the lab tools that run inside namespaces
(nftables loss, a bounded ICMP pinger, the stale-namespace reaper) are in
``misdtcp.testing.lab``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
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
from typing import Any, Callable, Sequence


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

    def descriptor_from(self, opener: Callable[[], int], what: str) -> int:
        """Run ``opener()`` in a forked child inside the namespace and return the
        descriptor it opened to this process (an OSError it raises is re-raised
        here with its errno)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                parent.close()
                setns_current_process(self.name)
                fd = opener()
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
            raise OSError(code, os.strerror(code), what)
        raise NetnsError(f"opening {what} inside {self.name} failed without an error code.")

    def open_in(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open ``path`` from inside the namespace and return the descriptor to this process."""
        return self.descriptor_from(lambda: os.open(path, flags | os.O_CLOEXEC), path)

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
