"""Process supervision for the runtime: fork, pin, watch, end.

A `Supervisor` starts each of the stack's processes (the sequencer and the
workers, or the one `single` process) with `spawn`, each under a role name,
pinned to its CPU.  `reap` collects the ones that ended and says how;
`stop` waits for all of them (they stop on the runtime's stop flag) and
kills those that do not stop in time.  A child never returns into the
parent's code: it runs its target and `os._exit`s with 0 or, after printing
what went wrong, 1.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable


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


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A stack process must not outlive the process that supervises it: if
    that one is killed (SIGKILL leaves no chance to stop them), the kernel
    sends this child SIGKILL (prctl PR_SET_PDEATHSIG) instead of leaving it
    spinning on a log nobody writes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:           # the parent died before the prctl took effect
        os._exit(1)


class Supervisor:
    def __init__(self):
        self.pids: dict[str, int] = {}

    def spawn(self, role: str, cpu: int | None, target: Callable[..., None], *args) -> int:
        """Fork a process that runs target(*args) pinned to `cpu` (None: unpinned)."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            code = 0
            try:
                _die_with_parent()
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                target(*args)
            except BaseException:  # noqa: BLE001 - reported through the exit status
                traceback.print_exc()
                code = 1
            os._exit(code)
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
