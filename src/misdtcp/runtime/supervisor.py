"""Process supervision for replay runs: fork, pin, name, watch, end.

A `Supervisor` starts processes with `spawn`, each under a role name,
pinned to its CPU, named for `ps` (runtime/process.py) and killed if the
thread that forked it ends.  `reap` collects the ones that ended and says
how; `stop` waits for all of them (they stop on the runtime's stop flag) and
kills those that do not stop in time.  A child never returns into the
parent's code: it runs its target and `os._exit`s with 0 or, after printing
what went wrong, 1.

A live stack does not fork from the application's process (it has threads):
its processes come from a single-threaded forker (runtime/forker.py), which
uses `child_main` below for each of them.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from misdtcp.runtime.process import die_with_parent, process_name, set_name


@dataclass(frozen=True)
class Ended:
    """A supervised process that ended."""
    role: str
    pid: int
    how: str             # "exit status N" or "signal N"
    clean: bool          # exit status 0


def describe(status: int) -> tuple[str, bool]:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}", False
    code = os.WEXITSTATUS(status)
    return f"exit status {code}", code == 0


def child_main(role: str, cpu: int | None, parent: int, target: Callable[..., None], args,
               close_fds=(), ready_fd: int = -1) -> None:  # pragma: no cover - runs in a child process
    """The body of a freshly forked process of the stack; never returns.
    `ready_fd`: written to (then closed) once the process is named and bound
    to its parent, before it runs its target."""
    code = 0
    try:
        die_with_parent(parent)
        set_name(process_name(role))
        for fd in close_fds:
            os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if ready_fd >= 0:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        target(*args)
    except BaseException:  # noqa: BLE001 - reported through the exit status
        traceback.print_exc()
        code = 1
    os._exit(code)


class Supervisor:
    def __init__(self):
        self.pids: dict[str, int] = {}

    def spawn(self, role: str, cpu: int | None, target: Callable[..., None], *args) -> int:
        """Fork a process that runs target(*args) pinned to `cpu` (None: unpinned)."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            child_main(role, cpu, parent, target, args)
        self.pids[role] = pid
        return pid

    def reap(self) -> list[Ended]:
        """The supervised processes that have ended since the last call."""
        ended = []
        for role, pid in list(self.pids.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                del self.pids[role]
                how, clean = describe(status)
                ended.append(Ended(role, pid, how, clean))
        return ended

    def stop(self, grace: float = 2.0) -> None:
        """Wait up to `grace` seconds for every process to end, then kill the rest."""
        deadline = time.monotonic() + grace
        for role, pid in list(self.pids.items()):
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
                    break
                time.sleep(0.005)
        self.pids.clear()
