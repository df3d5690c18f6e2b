"""Which of a live stack's processes are hung.

A process proves it is alive by its heartbeat -- a CLOCK_MONOTONIC stamp
it writes once per batch while busy and at least every 50 ms in every wait
(the one wait policy bounds each park at 50 ms: waiting for the log, for
room in it, for room in the event queue) -- or by moving its log position.
One that does neither for `stall_ns` while work is pending for it is a
candidate, and the kernel says what it is doing (/proc/<pid>/stat):

* stopped or traced (SIGSTOP, a debugger): hung;
* sleeping: hung -- every wait of the runtime comes back within 50 ms, so
  a process asleep that long waits for something that will not come;
* runnable or in the kernel: hung if it used at least half a CPU since the
  stall began (a loop that makes no progress); otherwise the machine is
  not giving it a CPU (it is starved, as on a loaded machine), which is not
  its fault -- it is called hung only after `starved_ns`.

The runtime then replaces a hung worker (misd) or stops the stack with one
sentence (runtime/live.py `watch`).  A process that has not yet written a
heartbeat since it was spawned (a replacement loading its snapshot) is given
`start_ns` from its spawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

STALL_NS = 500_000_000          # without a sign of life this long, a process is a candidate ...
CONFIRM_NS = 150_000_000        # ... and stays one this long (a machine that stood still is not a hang);
                                # watched every 100 ms, a stopped process is noticed within a second
START_NS = 5_000_000_000
STARVED_NS = 10_000_000_000     # a runnable process denied a CPU this long is hung all the same
SPIN_SHARE = 0.5                # CPU used / time stalled at which a stalled runnable process spins


@dataclass(frozen=True)
class Liveness:
    """What a process showed of itself at one moment."""
    heartbeat_ns: int           # its last heartbeat (0: none yet)
    position: int               # how far it got in the log
    pending: bool               # there is work it has not done


@dataclass(frozen=True)
class Activity:
    """What the kernel says a process is doing."""
    state: str                  # /proc/<pid>/stat state: R, S, D, T, t, Z, ...
    cpu_ns: int                 # CPU time it used so far (user + system)


class Watchdog:
    def __init__(self, stall_ns: int = STALL_NS, start_ns: int = START_NS, starved_ns: int = STARVED_NS,
                 confirm_ns: int = CONFIRM_NS):
        self.stall_ns = stall_ns
        self.confirm_ns = confirm_ns
        self.start_ns = start_ns
        self.starved_ns = starved_ns
        self._spawned: dict[str, int] = {}
        self._moved: dict[str, tuple[int, int]] = {}      # role -> (position, first seen there)
        self._cpu_at: dict[str, tuple[int, int, int]] = {}   # role -> (alive_at, CPU time, time) at candidacy

    def spawned(self, role: str, now_ns: int) -> None:
        """`role` got a new process (its predecessor's heartbeat does not count)."""
        self._spawned[role] = now_ns
        self._moved.pop(role, None)
        self._cpu_at.pop(role, None)

    def _alive_at(self, role: str, now_ns: int, s: Liveness) -> tuple[int, int]:
        """(the last sign of life, when the stall began for the report)."""
        seen = self._moved.get(role)
        if seen is None or seen[0] != s.position:
            seen = self._moved[role] = (s.position, now_ns)
        spawned = self._spawned.get(role, 0)
        if s.heartbeat_ns >= spawned:
            return max(s.heartbeat_ns, seen[1]), max(s.heartbeat_ns, seen[1])
        # not started yet: the start allowance
        return max(seen[1], spawned + self.start_ns - self.stall_ns), max(seen[1], spawned)

    def stalled(self, now_ns: int, samples: dict[str, Liveness],
                activity: Callable[[str], Activity | None]) -> list[tuple[str, int, str]]:
        """(role, nanoseconds without a sign of life, what it is doing) of
        every hung process.  `activity(role)` asks the kernel about one."""
        hung = []
        for role, s in samples.items():
            alive_at, since = self._alive_at(role, now_ns, s)
            if not s.pending or now_ns - alive_at <= self.stall_ns:
                self._cpu_at.pop(role, None)
                continue
            act = activity(role)
            if act is None:
                continue                                    # gone: reaping reports it
            first = self._cpu_at.get(role)
            if first is None or first[0] != alive_at:
                first = self._cpu_at[role] = (alive_at, act.cpu_ns, now_ns)
            stalled = now_ns - since
            watched = now_ns - first[2]
            if watched < self.confirm_ns:
                continue
            if act.state in "Tt":
                hung.append((role, stalled, "stopped"))
            elif act.state == "S":
                hung.append((role, stalled, "asleep"))
            elif act.state in "RD":
                if watched >= self.stall_ns and act.cpu_ns - first[1] >= SPIN_SHARE * watched:
                    hung.append((role, stalled, "spinning"))
                elif now_ns - alive_at > self.starved_ns:
                    hung.append((role, stalled, "starved of CPU"))
        return hung
