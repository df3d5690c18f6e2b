# cython: language_level=3
"""The runtime's wait policy, as Python sees it.

The compiled loops wait with ``wait_for`` of ``wait.pxd`` (spin briefly,
then park on an eventcount).  Python code that waits -- the API waiting for
copy progress or send-buffer room in shared memory, the supervisor waiting
for children -- uses the same shape here: re-check, then sleep for a time
that grows from ``first`` to ``longest``, under an optional ``Deadline``.
"""
from libc.string cimport memset

import enum
import time


class WaitStatus(enum.IntEnum):
    """What a bounded wait in shared memory ended with."""
    READY = WAIT_READY
    TIMEOUT = WAIT_TIMEOUT
    STOPPED = WAIT_STOPPED


DEFAULT_SPIN = WAIT_SPIN
DEFAULT_TIMEOUT_NS = WAIT_TIMEOUT_NS
SPIN_FLOOR = WAIT_SPIN_FLOOR
SPIN_NS = WAIT_SPIN_NS


def first_budget(uint32_t ceiling):
    """The spin budget a new waiter starts with under `ceiling`."""
    cdef WaitCounters c
    memset(&c, 0, sizeof(c))
    return spin_budget(&c, ceiling)


def next_budget(uint32_t budget, uint32_t ceiling, bint paid):
    """The budget after one wait that ended while spinning (`paid`) or parked."""
    cdef WaitCounters c
    memset(&c, 0, sizeof(c))
    c.budget = budget
    if paid:
        spin_paid(&c, ceiling)
    else:
        spin_wasted(&c)
    return c.budget


class Deadline:
    """A point in monotonic time, or none (wait forever)."""

    __slots__ = ("at",)

    def __init__(self, timeout):
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self):
        """Seconds left (never negative), or None without a deadline."""
        if self.at is None:
            return None
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self):
        return self.at is not None and time.monotonic() >= self.at

    def slice(self, longest):
        """How long one sleep may last: at most `longest`, never past the deadline."""
        left = self.remaining()
        return longest if left is None else min(left, longest)


class Backoff:
    """Sleeps that grow from `first` to `longest` seconds while nothing
    changes; `reset()` after progress so the next wait starts short."""

    __slots__ = ("first", "longest", "delay")

    def __init__(self, first=20e-6, longest=1e-3):
        self.first = first
        self.longest = longest
        self.delay = 0.0

    def reset(self):
        self.delay = 0.0

    def idle(self, deadline=None):
        self.delay = self.first if self.delay == 0.0 else min(self.delay * 2, self.longest)
        time.sleep(self.delay if deadline is None else deadline.slice(self.delay))
