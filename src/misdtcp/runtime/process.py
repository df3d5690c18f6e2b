"""What every process of a stack does first: take a name operators can see,
and arrange to die with its parent.

* ``set_name``: prctl(PR_SET_NAME), at most 15 bytes -- what `ps`, `top` and
  /proc/<pid>/comm show (misdtcp-seq, misdtcp-w0, misdtcp-w1, ...,
  misdtcp-forker).
* ``activity``: what the kernel says a process is doing (its state and the
  CPU time it used, from /proc/<pid>/stat), for the watchdog.
* ``die_with_parent``: prctl(PR_SET_PDEATHSIG, SIGKILL), so a SIGKILLed
  parent takes its children along and nothing keeps the TUN or the shared
  memory alive.  The signal follows the *thread* that forked the child, and
  a parent that died before the call never sends it: hence the check of
  getppid() right after (prctl(2)).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
NAME_MAX = 15

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def process_name(role: str) -> str:
    """The name a role's process goes by: 'sequencer' -> misdtcp-seq,
    'worker 3' -> misdtcp-w3, anything else -> misdtcp-<role>."""
    if role == "sequencer":
        return "misdtcp-seq"
    if role.startswith("worker "):
        return f"misdtcp-w{role.split()[1]}"
    return f"misdtcp-{role}"[:NAME_MAX]


def set_name(name: str) -> None:
    """Name the calling thread (for a single-threaded process: the process)."""
    if _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:NAME_MAX]), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the thread that forked it ends; exit at once
    if the parent (`parent_pid`) is already gone."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)              # the parent died before prctl: nothing would ever kill us


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def activity(pid: int):
    """(state, CPU nanoseconds used) of a process from /proc/<pid>/stat
    (state R running, S sleeping, D in the kernel, T stopped, t traced,
    Z zombie), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (proc(5))
    return fields[0].decode(), (int(fields[11]) + int(fields[12])) * _TICK_NS
