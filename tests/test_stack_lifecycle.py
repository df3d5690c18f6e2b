"""Lifecycle of a running stack: clean stop, and a worker or the sequencer
killed mid-transfer is noticed within a second with a clear error, and
nothing is left behind."""
import os
import signal
import subprocess
import time

import pytest

from misdtcp.api import Stack, StackError
from netns_helpers import finish, make_tun_netns, require_netns
from misdtcp.testing.procfs import alive, holders_of, memfds_of
from test_e2e_transfer import SENDER

pytestmark = pytest.mark.netns
STACK = "10.77.0.2"


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def memfd_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:misdtcp" in line)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy,workers,placement", [("misd", 2, "separate"), ("misd", 2, "inline"),
                                                         ("single", 1, "auto"), ("mimd", 2, "auto")])
def test_start_stop_leaves_nothing_behind(strategy, workers, placement):
    require_netns()
    ns, tun = make_tun_netns()
    try:
        import gc
        gc.collect()                        # earlier tests' garbage is not freed while we count
        fds_before = open_fds()
        maps_before = memfd_maps()          # other tests' areas (a cached fuzz log) are not ours
        ours_before = memfds_of([os.getpid()])
        stack = Stack(tun, address=STACK, workers=workers, strategy=strategy, placement=placement).start()
        # inline: replica 0 runs in the sequencer's process
        if strategy == "single":
            roles = {"forker", "worker 0"}
        else:
            roles = {"forker", "sequencer", *(f"worker {w}" for w in range(workers))}
            if stack.placement == "inline":
                roles.discard("worker 0")
        assert set(stack.processes()) == roles
        pids = list(stack.processes().values())
        memfds = memfds_of(pids) - ours_before      # the stack's own shared memory
        assert memfds
        stack.stop()
        del stack
        gc.collect()
        for pid in pids:
            assert not alive(pid)
        assert open_fds() - fds_before == set()
        assert memfd_maps() == maps_before
        assert holders_of(memfds) == set()          # the stack's shared memory is gone
    finally:
        tun.close()
        ns.delete()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("victim", ["worker", "sequencer"])
def test_killed_process_is_detected_within_a_second(victim):
    require_netns()
    ns, tun = make_tun_netns()
    stack = Stack(tun, address=STACK, workers=2, recover=False).start()
    try:
        listener = stack.listen(9)
        client = ns.python(["-c", SENDER.format(addr=STACK, port=9), str(1 << 30)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        conn, _ = listener.accept(timeout=10)
        got = 0
        while got < 8 << 20:
            view = conn.recv_view(timeout=10)
            got += len(view)
            conn.release(view)
        pid = stack.processes()["sequencer" if victim == "sequencer" else "worker 1"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(StackError, match=f"{victim} process .* died"):
            while True:
                view = conn.recv_view(timeout=5)
                conn.release(view)
        assert time.monotonic() - killed_at < 1.5
        finish(client, timeout=5)
    finally:
        pids = list(stack.processes().values())
        stack.stop()
        tun.close()
        ns.delete()
    for pid in pids:
        assert not alive(pid)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim_worker,placement", [(0, "separate"), (1, "separate"), (1, "inline")])
def test_killed_worker_is_replaced_from_its_replica_snapshot(victim_worker, placement):
    """MISD makes recovery possible: every replica holds the whole state.
    The replacement loads the worker's last checkpoint and replays the log
    from there; the transfer finishes byte-exact."""
    import hashlib
    require_netns()
    ns, tun = make_tun_netns()
    total = 96 << 20
    stack = Stack(tun, address=STACK, workers=2, ring_size=8 << 20, placement=placement).start()
    try:
        listener = stack.listen(9)
        client = ns.python(["-c", SENDER.format(addr=STACK, port=9), str(total)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        conn, _ = listener.accept(timeout=10)
        h = hashlib.sha256()
        got = 0
        killed = False
        while True:
            view = conn.recv_view(timeout=20)
            if not len(view):
                break
            h.update(view)
            got += len(view)
            conn.release(view)
            if not killed and got >= 24 << 20:
                killed = stack.processes()[f"worker {victim_worker}"]
                os.kill(killed, signal.SIGKILL)
        conn.close()
        rc, out, err = finish(client, timeout=30)
        assert rc == 0, err
        sent, digest = out.split()
        assert got == total == int(sent)
        assert h.hexdigest() == digest
        assert stack.recoveries == 1
        (incident,) = stack.incidents
        assert (incident.role, incident.pid, incident.how) == (f"worker {victim_worker}", killed, "signal 9")
        assert incident.replaced_by == stack.processes()[f"worker {victim_worker}"] != killed
        assert str(incident) == (f"worker {victim_worker} (pid {killed}) ended (signal 9); replaced by pid "
                                 f"{incident.replaced_by}, replaying the log from position "
                                 f"{incident.from_position}")
        counters = stack.worker_counters()
        assert counters[victim_worker]["restarts"] == 1
        assert counters[victim_worker]["snapshots"] > 0
    finally:
        pids = list(stack.processes().values())
        stack.stop()
        tun.close()
        ns.delete()
    for pid in pids:
        assert not alive(pid)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("offload", [True, False])
def test_recoverable_mode_runs_with_the_smallest_log(offload):
    """Workers release the log only up to their last checkpoint: checkpoints
    must come often enough that a 1 MiB log (the smallest) never fills with
    nothing releasable -- with offload one sequencer round alone can read
    64 super-frames of 64 KiB.  A worker is killed half-way for good measure."""
    from stack_helpers import receive_transfer
    require_netns()
    ns, tun = make_tun_netns(offload=offload)
    total = 48 << 20
    stack = Stack(tun, address=STACK, workers=2, ring_size=1 << 20, offload=offload).start()
    killed = []

    def kill_once(got):
        if not killed and got >= total // 2:
            os.kill(stack.processes()["worker 1"], signal.SIGKILL)
            killed.append(got)
    try:
        got, digest, sent, sent_digest = receive_transfer(stack, ns, total, during=kill_once)
        assert got == sent == total and digest == sent_digest
        assert stack.recoveries == 1
        assert stack.ring_counters()["producer"]["full_waits"] > 0, "the log never filled: not a small log"
    finally:
        stack.stop()
        tun.close()
        ns.delete()


@pytest.mark.timeout(90)
def test_diverged_replicas_stop_a_live_stack_loudly():
    """A debug hook (for tests only) gives worker 1 another secret: its ISNs
    and so its whole connection state differ from worker 0's.  The digest
    check must stop the stack with one sentence, not deliver."""
    from stack_helpers import receive_transfer
    require_netns()
    ns, tun = make_tun_netns()
    stack = Stack(tun, address=STACK, workers=2, digest_every=16, secret=99,
                  _debug_worker_config=lambda w: {"secret": 99 + w}).start()
    try:
        with pytest.raises(StackError) as raised:
            receive_transfer(stack, ns, 64 << 20, timeout=10)
        assert str(raised.value) == stack.failure
        assert stack.failure.startswith("replicas diverged at digest round ")
        assert stack.failure.endswith("; the stack stopped")
        pids = list(stack.processes().values())
    finally:
        stack.stop()
        tun.close()
        ns.delete()
    assert not any(alive(pid) for pid in pids)


@pytest.mark.timeout(60)
def test_the_debug_hook_leaves_agreeing_replicas_alone():
    """The same hook giving every worker the same secret diverges nothing:
    the test above fails for the reason it names."""
    from stack_helpers import receive_transfer
    require_netns()
    ns, tun = make_tun_netns()
    stack = Stack(tun, address=STACK, workers=2, digest_every=16, secret=99,
                  _debug_worker_config=lambda w: {"secret": 99}).start()
    try:
        got, digest, sent, sent_digest = receive_transfer(stack, ns, 16 << 20)
        assert got == sent and digest == sent_digest and stack.failure is None
        assert min(c["digest_round"] for c in stack.worker_counters()) > 10
    finally:
        stack.stop()
        tun.close()
        ns.delete()
