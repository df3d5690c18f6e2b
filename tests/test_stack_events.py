"""Lifecycle events reach the application exactly once: a full event queue
makes worker 0 wait for room (back-pressure), never drop; and a worker 0
replaced in the middle of announcing announces exactly what was not yet
announced (runtime/executor.pyx _post_event; docs/DESIGN.md, "Recovery")."""
import os
import select
import signal
import subprocess

import pytest

from misdtcp.api import Stack
from netns_helpers import finish, make_tun_netns, require_netns
from stack_helpers import wait_for

pytestmark = pytest.mark.netns
STACK = "10.77.0.2"
CLIENTS = 24

# N clients: each connects, sends its own line and its FIN; "connected" once all are.
CLIENT = """
import socket, sys
n = int(sys.argv[1])
socks = []
for i in range(n):
    s = socket.create_connection(({addr!r}, 9), timeout=20)
    s.sendall(b"client %d\\n" % i)
    s.shutdown(socket.SHUT_WR)
    socks.append(s)
print("connected", flush=True)
for s in socks:
    s.settimeout(30)
    try:
        s.recv(1)
    except OSError:
        pass
    s.close()
"""


def start_clients(ns, n):
    return ns.python(["-c", CLIENT.format(addr=STACK), str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def said_connected(proc, timeout=0.0):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return bool(ready) and proc.stdout.readline().decode().strip() == "connected"


def handled_every_connection(stack, worker, n):
    """`worker` has applied every connection's data: n slots carry progress."""
    row = stack.progress.progress_row(worker)
    return sum(1 for i in range(0, len(row), 8) if row[i:i + 8] != bytes(8)) >= n


def accept_all(listener, n):
    """Accept n connections and read each to its end: the lines sent."""
    lines, handles = [], []
    for _ in range(n):
        conn, _ = listener.accept(timeout=10)
        handles.append(conn.handle)
        data = b""
        while chunk := conn.recv(timeout=10):
            data += chunk
        lines.append(data)
        conn.close()
    return sorted(lines), handles


def expected_lines(n):
    return sorted(b"client %d\n" % i for i in range(n))


@pytest.fixture
def stack_in_netns():
    require_netns()
    made = []

    def make(**options):
        ns, tun = make_tun_netns()
        stack = Stack(tun, address=STACK, **options).start()
        made.append((ns, tun, stack))
        return ns, stack
    yield make
    for ns, tun, stack in made:
        stack.stop()
        tun.close()
        ns.delete()


def park_worker0_on_a_full_event_queue(ns, stack):
    """Hold the event thread (it stops at the stack's lock with the first
    events it took) while CLIENTS connections arrive through a 4-slot event
    queue; return once worker 0 has met the full queue -- or, had it dropped
    the events instead, once it went past every connection."""
    listener = stack.listen(9)
    with stack.lock:
        client = start_clients(ns, CLIENTS)
        seen = {"connected": False, "position": None}

        def parked_or_past():
            w0 = stack.progress.counters(0)
            if w0["event_waits"] > 0:
                return True
            seen["connected"] = seen["connected"] or said_connected(client)
            if seen["position"] is None:
                if seen["connected"] and handled_every_connection(stack, 1, CLIENTS):
                    seen["position"] = stack.runtime.areas.ring.producer_cursor
                return False
            return w0["last_seqno"] >= seen["position"]
        assert wait_for(parked_or_past, timeout=30)
        waited = stack.progress.counters(0)["event_waits"]
    return listener, client, waited


@pytest.mark.timeout(90)
@pytest.mark.parametrize("placement", ["separate", "inline"])
def test_a_full_event_queue_holds_worker0_back_and_loses_nothing(stack_in_netns, placement):
    """Inline, replica 0 is the sequencer's own loop: the sequencer waits."""
    ns, stack = stack_in_netns(workers=2, event_queue=4, placement=placement)
    listener, client, waited = park_worker0_on_a_full_event_queue(ns, stack)
    assert waited > 0
    lines, handles = accept_all(listener, CLIENTS)
    assert lines == expected_lines(CLIENTS)
    assert len(set(handles)) == CLIENTS
    finish(client, timeout=20)
    assert stack.failure is None


@pytest.mark.timeout(120)
def test_worker0_replaced_while_announcing_announces_exactly_what_was_not(stack_in_netns):
    """Worker 0 is killed while it waits to announce an event (the queue is
    full, the record half done): its replacement replays from a snapshot and
    must announce that event and every later one, and none of the earlier
    ones again -- each connection accepted once, with its data."""
    ns, stack = stack_in_netns(workers=2, event_queue=4, placement="separate")
    listener = stack.listen(9)
    with stack.lock:
        client = start_clients(ns, CLIENTS)
        assert wait_for(lambda: stack.progress.counters(0)["event_waits"] > 0, timeout=30)
        os.kill(stack.processes()["worker 0"], signal.SIGKILL)
    lines, handles = accept_all(listener, CLIENTS)
    assert lines == expected_lines(CLIENTS)
    assert len(set(handles)) == CLIENTS
    rc, out, err = finish(client, timeout=30)
    assert said_connected_in(out), err
    assert stack.recoveries == 1
    assert stack.failure is None


def said_connected_in(out):
    return "connected" in out.split()
