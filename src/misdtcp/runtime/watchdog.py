"""Which of a live stack's processes are hung.

A process proves it is alive by its heartbeat -- a CLOCK_MONOTONIC stamp
it writes once per batch while busy and at least every 50 ms in every wait
(the one wait policy bounds each park at 50 ms: waiting for the log, for
room in it, for room in the event queue) -- or by moving its log position.
One that does neither for `stall_ns` while work is pending for it is hung:
stopped (SIGSTOP, a debugger), stuck in a loop, or starved of CPU for that
long.  The runtime then replaces it (misd) or stops the stack with one
sentence (runtime/live.py `watch`).

A process that has not yet written a heartbeat since it was spawned (a
replacement loading its snapshot) is given `start_ns` from its spawn.
"""
from __future__ import annotations

from dataclasses import dataclass

STALL_NS = 600_000_000          # watched every 100 ms: noticed within 0.7 s
START_NS = 5_000_000_000


@dataclass(frozen=True)
class Liveness:
    """What a process showed of itself at one moment."""
    heartbeat_ns: int           # its last heartbeat (0: none yet)
    position: int               # how far it got in the log
    pending: bool               # there is work it has not done


class Watchdog:
    def __init__(self, stall_ns: int = STALL_NS, start_ns: int = START_NS):
        self.stall_ns = stall_ns
        self.start_ns = start_ns
        self._spawned: dict[str, int] = {}
        self._moved: dict[str, tuple[int, int]] = {}     # role -> (position, first seen there)

    def spawned(self, role: str, now_ns: int) -> None:
        """`role` got a new process (its predecessor's heartbeat does not count)."""
        self._spawned[role] = now_ns
        self._moved.pop(role, None)

    def stalled(self, now_ns: int, samples: dict[str, Liveness]) -> list[tuple[str, int]]:
        """(role, nanoseconds without a sign of life) of every hung process."""
        hung = []
        for role, s in samples.items():
            seen = self._moved.get(role)
            if seen is None or seen[0] != s.position:
                seen = self._moved[role] = (s.position, now_ns)
            spawned = self._spawned.get(role, 0)
            if s.heartbeat_ns >= spawned:
                alive_at = max(s.heartbeat_ns, seen[1])
            else:                               # not started yet: the start allowance
                alive_at = max(seen[1], spawned + self.start_ns - self.stall_ns)
            if s.pending and now_ns - alive_at > self.stall_ns:
                hung.append((role, now_ns - max(s.heartbeat_ns if s.heartbeat_ns >= spawned else spawned,
                                                seen[1])))
        return hung
