"""The parent of a live stack's processes: a small single-threaded forker.

Why: the application's process has threads (the API's event thread, the
application's own).  fork() there copies the calling thread only, with
every lock the other threads held at that instant -- a stdout or logging
lock, an allocator arena -- so a replacement worker forked from the event
thread could hang on its first print.  Instead, `Forker.start()` forks one
process at `LiveRuntime.start`, before the event thread exists, which does
nothing but fork: the sequencer, the workers and every replacement are its
children, forked from a process that has one thread and holds no lock, and
that already maps every shared area (a fork costs a millisecond).  The
alternative, posix_spawn of a fresh interpreter that maps the areas from fds
passed down, is as clean but costs an interpreter start and every import per
replacement (a third of a second here, at the moment a worker is missing)
and a second way of building each area.

The forker also gives death-with-parent its anchor: PR_SET_PDEATHSIG
follows the *thread* that forked, and the forker's one thread lives exactly
as long as the stack.  The forker itself dies with the application's
process: by PR_SET_PDEATHSIG when the stack was started from the main
thread, and in any case when its end of the socket below reports EOF (it
then SIGKILLs its children, which would die with it anyway).

Protocol, pickled tuples over a SOCK_SEQPACKET socket pair:

    application -> forker   ("spawn", role, cpu, target, args)   fork a child running targets[target](*args)
                            ("signal", role, signum)             signal a child not yet reaped
                            ("stop", grace)                      children stop on the stack's flag; kill
                                                                 those still there after `grace` s; exit
    forker -> application   ("spawned", role, pid) ("ended", role, pid, status) ("stopped",)

The forker reaps its children (one pidfd each), so a pid it signals cannot
have been reused: signals to the stack's processes go through it.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import threading
import time
import traceback
from typing import Callable

from misdtcp.runtime.process import die_with_parent, set_name
from misdtcp.runtime.supervisor import Ended, child_main, describe

MESSAGE_MAX = 1 << 16


class ForkerError(RuntimeError):
    """The forker did not answer (one sentence)."""


class Forker:
    """The application's handle on the forker; the same interface as
    runtime/supervisor.py's Supervisor (spawn, reap, stop, pids)."""

    def __init__(self, targets: dict[str, Callable[..., None]]):
        self.targets = targets
        self.pid: int | None = None
        self.pids: dict[str, int] = {}          # role -> pid, of the children
        self._sock: socket.socket | None = None
        self._lock = threading.RLock()
        self._ended: list[Ended] = []

    # -- the application's side -----------------------------------------------------
    def start(self) -> int:
        api_end, forker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        # PR_SET_PDEATHSIG follows the forking thread: only the main thread
        # lives as long as the process (otherwise EOF on the socket tells)
        anchored = threading.current_thread() is threading.main_thread()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forker
            code = 0
            try:
                api_end.close()
                if anchored:
                    die_with_parent(parent)
                set_name("misdtcp-forker")
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _serve(forker_end, self.targets)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            os._exit(code)
        forker_end.close()
        self.pid = pid
        self._sock = api_end
        return pid

    def _send(self, message) -> None:
        try:
            self._sock.send(pickle.dumps(message))
        except OSError as exc:
            raise ForkerError(f"the forker process (pid {self.pid}) is gone: {exc.strerror}") from None

    def _receive(self, timeout: float | None):
        """One message from the forker; None when none came within `timeout`."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        data = self._sock.recv(MESSAGE_MAX)
        if not data:
            raise ForkerError(f"the forker process (pid {self.pid}) is gone")
        return pickle.loads(data)

    def _note(self, message) -> None:
        if message[0] == "ended":
            _, role, pid, status = message
            if self.pids.get(role) == pid:
                del self.pids[role]
            how, clean = describe(status)
            self._ended.append(Ended(role, pid, how, clean))

    def spawn(self, role: str, cpu: int | None, target: str, *args) -> int:
        """A child running targets[target](*args), pinned to `cpu`, named for its role."""
        with self._lock:
            self._send(("spawn", role, cpu, target, args))
            deadline = time.monotonic() + 10
            while True:
                message = self._receive(max(0.0, deadline - time.monotonic()))
                if message is None:
                    raise ForkerError(f"the forker did not start {role} within 10 s")
                if message[0] == "spawned" and message[1] == role:
                    self.pids[role] = message[2]
                    return message[2]
                self._note(message)

    def reap(self) -> list[Ended]:
        """The children that ended since the last call (and the forker, if it died)."""
        with self._lock:
            if self._sock is None:
                return []
            try:
                while (message := self._receive(0)) is not None:
                    self._note(message)
            except ForkerError:
                if self.pid is not None:
                    done, status = os.waitpid(self.pid, 0)
                    how, clean = describe(status)
                    self._ended.append(Ended("forker", self.pid, how, False))
                    self.pid = None
            ended, self._ended = self._ended, []
            return ended

    def kill(self, role: str, timeout: float = 2.0) -> Ended | None:
        """SIGKILL a child and wait until the forker reaped it."""
        with self._lock:
            pid = self.pids.get(role)
            if pid is None:
                return None
            self._send(("signal", role, signal.SIGKILL))
            deadline = time.monotonic() + timeout
            while True:
                for i, ended in enumerate(self._ended):
                    if ended.pid == pid:
                        return self._ended.pop(i)
                message = self._receive(max(0.0, deadline - time.monotonic()))
                if message is None:
                    raise ForkerError(f"{role} (pid {pid}) did not end within {timeout} s of SIGKILL")
                self._note(message)

    def stop(self, grace: float = 2.0) -> None:
        """Every child ends (killed after `grace` s), then the forker.  Idempotent."""
        with self._lock:
            if self._sock is None:
                return
            if self.pid is not None:
                try:
                    self._send(("stop", grace))
                    deadline = time.monotonic() + grace + 5
                    while (message := self._receive(max(0.0, deadline - time.monotonic()))) is not None:
                        if message[0] == "stopped":
                            break
                        self._note(message)
                except ForkerError:
                    pass
                deadline = time.monotonic() + 2
                while not os.waitpid(self.pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        os.kill(self.pid, signal.SIGKILL)     # its children die with it
                        os.waitpid(self.pid, 0)
                        break
                    time.sleep(0.005)
                self.pid = None
            self._sock.close()
            self._sock = None
            self.pids.clear()


# -- the forker's side ------------------------------------------------------------------

def _serve(sock: socket.socket, targets: dict[str, Callable[..., None]]) -> None:  # pragma: no cover
    """The forker's loop: fork on request, reap with pidfds, report."""
    me = os.getpid()
    children: dict[int, tuple[str, int]] = {}     # pid -> (role, pidfd)
    by_fd: dict[int, int] = {}
    poller = select.poll()
    poller.register(sock, select.POLLIN)

    def tell(message) -> None:
        try:
            sock.send(pickle.dumps(message))
        except OSError:
            pass                                   # the application is gone: EOF comes next

    def reap(pid: int) -> None:
        role, pidfd = children.pop(pid)
        poller.unregister(pidfd)
        del by_fd[pidfd]
        os.close(pidfd)
        status = os.waitpid(pid, 0)[1]
        tell(("ended", role, pid, status))

    def end_all(grace: float) -> None:
        deadline = time.monotonic() + grace
        while children and time.monotonic() < deadline:
            for fd, _ in poller.poll(10):
                if fd in by_fd:
                    reap(by_fd[fd])
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            reap(pid)

    while True:
        for fd, _ in poller.poll():
            if fd in by_fd:
                reap(by_fd[fd])
                continue
            try:
                data = sock.recv(MESSAGE_MAX)
            except ConnectionResetError:
                data = b""
            if not data:                           # the application's process is gone
                end_all(0.0)
                return
            message = pickle.loads(data)
            if message[0] == "spawn":
                _, role, cpu, target, args = message
                ready_r, ready_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    child_main(role, cpu, me, targets[target], args,
                               close_fds=[sock.fileno(), ready_r, *by_fd], ready_fd=ready_w)
                os.close(ready_w)
                # answer once the child is named and bound to us (or died trying)
                select.select([ready_r], [], [], 10)
                os.close(ready_r)
                pidfd = os.pidfd_open(pid)
                children[pid] = (role, pidfd)
                by_fd[pidfd] = pid
                poller.register(pidfd, select.POLLIN)
                tell(("spawned", role, pid))
            elif message[0] == "signal":
                _, role, signum = message
                for pid, (r, _) in children.items():
                    if r == role:
                        os.kill(pid, signum)
            elif message[0] == "stop":
                end_all(message[1])
                tell(("stopped",))
                return
