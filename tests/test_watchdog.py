"""The watchdog's judgement (runtime/watchdog.py), on made-up observations:
a stopped, sleeping or spinning process that shows no sign of life while
work is pending is hung; one that is merely denied a CPU, one with nothing
to do, one that moved, and a machine that stood still for a moment are not.
(tests/test_stack_processes.py stops real processes.)"""
from misdtcp.runtime.process import activity
from misdtcp.runtime.watchdog import CONFIRM_NS, STALL_NS, START_NS, STARVED_NS, Activity, Liveness, Watchdog

MS = 1_000_000


def run(watchdog, samples_at, activity_at, until_ms, step_ms=100):
    """Watch every step_ms from 0 to until_ms; returns the first (time_ms, verdict) or None."""
    for t in range(0, until_ms + 1, step_ms):
        found = watchdog.stalled(t * MS, samples_at(t), lambda role: activity_at(t))
        if found:
            return t, found
    return None


def frozen(heartbeat_ms=0, position=7, pending=True):
    return lambda t: {"worker 1": Liveness(heartbeat_ms * MS, position, pending)}


def test_a_stopped_process_with_work_pending_is_hung_within_a_second():
    dog = Watchdog()
    dog.spawned("worker 1", 0)
    found = run(dog, frozen(heartbeat_ms=1), lambda t: Activity("T", 5 * MS), 3000)
    assert found is not None
    t, [(role, stalled, how)] = found
    assert role == "worker 1" and how == "stopped"
    assert (STALL_NS + CONFIRM_NS) // MS <= t < 1000
    assert stalled == t * MS - MS


def test_a_process_asleep_without_a_heartbeat_is_hung():
    dog = Watchdog()
    dog.spawned("worker 1", 0)
    t, [(_, _, how)] = run(dog, frozen(heartbeat_ms=1), lambda t: Activity("S", 5 * MS), 3000)
    assert how == "asleep" and t < 1000


def test_a_runnable_process_denied_a_cpu_is_not_hung_until_long_starved():
    """A loaded machine: runnable, but it got 20 ms of CPU in seconds."""
    dog = Watchdog()
    dog.spawned("worker 1", 0)
    t, [(_, _, how)] = run(dog, frozen(heartbeat_ms=1), lambda t: Activity("R", (5 + t // 100) * MS),
                           STARVED_NS // MS + 1000)
    assert how == "starved of CPU" and t * MS > STARVED_NS


def test_a_runnable_process_that_spins_without_progress_is_hung():
    dog = Watchdog()
    dog.spawned("worker 1", 0)
    t, [(_, _, how)] = run(dog, frozen(heartbeat_ms=1), lambda t: Activity("R", t * 9 // 10 * MS), 5000)
    assert how == "spinning" and t < 2000


def test_no_pending_work_a_fresh_heartbeat_or_a_moving_position_is_not_a_hang():
    dog = Watchdog()
    dog.spawned("worker 1", 0)
    stopped = lambda t: Activity("T", 0)  # noqa: E731
    assert run(dog, frozen(heartbeat_ms=1, pending=False), stopped, 5000) is None
    assert run(dog, lambda t: {"worker 1": Liveness(t * MS, 7, True)}, stopped, 5000) is None
    assert run(dog, lambda t: {"worker 1": Liveness(MS, t, True)}, stopped, 5000) is None


def test_a_machine_that_stood_still_is_not_a_hang():
    """Every heartbeat is stale once (the machine, or this process, stood
    still for two seconds), then fresh at the next look."""
    dog = Watchdog()
    dog.spawned("worker 1", 0)
    samples = lambda t: {"worker 1": Liveness((t if t != 2500 else 400) * MS, 7, True)}  # noqa: E731
    assert run(dog, samples, lambda t: Activity("S", 0), 4000) is None


def test_a_new_process_gets_the_start_allowance_not_its_predecessors_heartbeat():
    dog = Watchdog()
    dog.spawned("worker 1", 1000 * MS)
    t, [(_, _, how)] = run(dog, frozen(heartbeat_ms=999), lambda t: Activity("S", 0), 10000)
    assert t * MS >= 1000 * MS + START_NS and how == "asleep"


def test_activity_reads_this_process_from_proc():
    import os
    state, cpu_ns = activity(os.getpid())
    assert state == "R" and cpu_ns > 0
    assert activity(2**22 + 12345) is None
