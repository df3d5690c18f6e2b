"""The stack's processes as an operator sees them: named (`ps`, `top`),
forked from a clean single-threaded context, gone with their parent even
when it is SIGKILLed, and watched -- a worker that stops making progress
is noticed within a second and replaced (misd) or stops the stack with one
sentence (runtime/forker.py, runtime/watchdog.py; docs/DESIGN.md,
"Recovery")."""
import os
import signal
import subprocess
import sys
import time

import pytest

from misdtcp.api import Stack, StackError
from misdtcp.device.netns import Netns
from netns_helpers import make_tun_netns, require_netns
from misdtcp.testing.procfs import alive, comm, descendants, holders_of, memfds_of, parent_of, threads_of
from stack_helpers import receive_transfer, wait_for

pytestmark = pytest.mark.netns
STACK = "10.77.0.2"
MISDTCP = [sys.executable, "-m", "misdtcp"]


@pytest.fixture
def tun_ns():
    require_netns()
    made = []

    def make(**kwargs):
        ns, tun = make_tun_netns(**kwargs)
        made.append((ns, tun))
        return ns, tun
    yield make
    for ns, tun in made:
        tun.close()
        ns.delete()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("placement", ["separate", "inline"])
def test_processes_are_named_for_ps_and_top(tun_ns, placement):
    ns, tun = tun_ns()
    with Stack(tun, address=STACK, workers=2, placement=placement) as stack:
        names = {role: comm(pid) for role, pid in stack.processes().items()}
    expected = {"forker": "misdtcp-forker", "sequencer": "misdtcp-seq", "worker 0": "misdtcp-w0",
                "worker 1": "misdtcp-w1"}
    if placement == "inline":
        del expected["worker 0"]                  # replica 0 runs in misdtcp-seq
    assert names == expected


@pytest.mark.timeout(90)
def test_replacements_are_forked_from_a_single_threaded_forker(tun_ns):
    """The API process is multi-threaded (the event thread, the
    application's threads); a replacement must not be forked from it."""
    ns, tun = tun_ns()
    with Stack(tun, address=STACK, workers=2) as stack:
        forker = stack.processes()["forker"]
        assert threads_of(os.getpid()) > 1
        assert threads_of(forker) == 1
        for role, pid in stack.processes().items():
            assert parent_of(pid) == (os.getpid() if role == "forker" else forker), role
        old = stack.processes()["worker 1"]
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: stack.recoveries == 1, timeout=10)
        new = stack.processes()["worker 1"]
        assert new != old and parent_of(new) == forker and comm(new) == "misdtcp-w1"
        assert threads_of(forker) == 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("workers,placement", [(1, "separate"), (2, "separate"), (2, "inline")])
def test_a_sigkilled_serve_leaves_no_process_tun_or_memfd_behind(workers, placement):
    require_netns()
    ns = Netns().create()
    try:
        serve = ns.popen([*MISDTCP, "serve", "--app", "discard", "--workers", str(workers),
                          "--placement", placement], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "serving discard" in serve.stdout.readline()
        family = descendants(serve.pid)
        # forker, sequencer, the workers (inline: worker 0 is the sequencer)
        assert len(family) == workers + (1 if placement == "inline" else 2), family
        memfds = memfds_of([serve.pid, *family])
        assert memfds
        assert ns.ip("link", "show", "misd0", check=False).returncode == 0
        serve.kill()
        serve.wait(timeout=10)
        assert wait_for(lambda: not any(alive(pid) for pid in family), timeout=5), \
            [(pid, comm(pid)) for pid in family if alive(pid)]
        assert wait_for(lambda: ns.ip("link", "show", "misd0", check=False).returncode != 0, timeout=5)
        assert holders_of(memfds) == set()
    finally:
        ns.delete()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim", ["worker 0", "worker 1"])
def test_a_stopped_worker_is_noticed_within_a_second_and_replaced(tun_ns, victim):
    ns, tun = tun_ns()
    total = 64 << 20
    stack = Stack(tun, address=STACK, workers=2, ring_size=4 << 20, placement="separate").start()
    stopped = {}

    def stop_once(got):
        if not stopped and got >= total // 3:
            stopped["pid"] = stack.processes()[victim]
            os.kill(stopped["pid"], signal.SIGSTOP)
            stopped["at"] = time.monotonic()
        elif stopped and "noticed" not in stopped and stack.recoveries:
            stopped["noticed"] = time.monotonic()
    try:
        got, digest, sent, sent_digest = receive_transfer(stack, ns, total, during=stop_once)
        assert got == sent == total and digest == sent_digest
        assert stack.recoveries == 1
        assert stopped["noticed"] - stopped["at"] < 1.5
        assert not alive(stopped["pid"])
        assert stack.processes()[victim] != stopped["pid"]
    finally:
        pids = list(stack.processes().values())
        stack.stop()
    assert not any(alive(pid) for pid in pids + [stopped.get("pid", 0)])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy,victim,placement", [
    ("misd", "worker 1", "auto"), ("mimd", "worker 0", "auto"), ("single", "worker 0", "auto"),
    ("misd", "sequencer", "separate"), ("misd", "sequencer", "inline")])
def test_a_stopped_process_without_recovery_stops_the_stack_with_one_sentence(tun_ns, strategy, victim,
                                                                             placement):
    ns, tun = tun_ns()
    stack = Stack(tun, address=STACK, workers=2, strategy=strategy, recover=False, placement=placement).start()
    stopped = {}

    def stop_once(got):
        if not stopped and got >= 4 << 20:
            stopped["pid"] = stack.processes()[victim]
            os.kill(stopped["pid"], signal.SIGSTOP)
            stopped["at"] = time.monotonic()
    try:
        with pytest.raises(StackError) as raised:
            receive_transfer(stack, ns, 1 << 30, during=stop_once, timeout=10)
        noticed = time.monotonic()
        assert noticed - stopped["at"] < 1.5
        assert str(raised.value) == stack.failure
        assert stack.failure.startswith(f"{victim} (pid {stopped['pid']}) made no progress for"), stack.failure
        assert stack.failure.endswith("while work was pending (stopped); the stack stopped"), stack.failure
    finally:
        pids = list(stack.processes().values())
        stack.stop()
    assert not alive(stopped["pid"])
    assert not any(alive(pid) for pid in pids)
