"""Resource bounds under hostile load: a thousand clients at once against a
bounded connection table, and an application that stops reading while its
peer keeps sending.  The kernel-side programs are ``hostile_tools.py``
commands run inside the test's namespace (bounded in count and time)."""
import json
import subprocess
import threading

import pytest

from netns_helpers import finish
from stack_helpers import serving, wait_for
from test_hostile_network import MiB, TOOLS, TableWatch, alive, last_json, memory, read_line, tool

pytestmark = pytest.mark.netns


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_thousand_clients_at_once_are_served_or_cleanly_refused():
    """1,000 kernel clients connect to echo at the same moment (non-blocking
    connects), each sends 2,000 bytes and reads them back.  The table holds
    256 connections and the listener's backlog is 128: every client must end
    served (echo intact) or cleanly refused or reset -- never with wrong
    bytes, never left without an answer; the stack must stay up, keep its
    table within bounds and serve a new client afterwards."""
    cap = 256
    with serving("echo", workers=2, max_connections=cap) as (ns, stack):
        before = memory(stack)
        with TableWatch(stack) as table:
            proc = tool(ns, "clients", "--count", 1000, "--size", 2000, "--timeout", 60)
            rc, out, err = finish(proc, timeout=90)
        assert rc == 0, err
        outcomes = last_json(out)["outcomes"]
        stats, drops = stack.core_stats(fresh=True)
        print("clients", outcomes, "stats", stats, "drops", drops, "peak", table.peak,
              "memory", before, memory(stack))
        assert sum(outcomes.values()) == 1000, outcomes
        # every client gets an answer: never wrong bytes, and never silence
        assert set(outcomes) <= {"served", "refused", "reset"}, outcomes
        # the first backlog's worth gets a slot and is served (on a loaded
        # machine exactly those; the others got cookies while the accept
        # queue was full, and a reset for their next segment, as on Linux)
        assert outcomes.get("served", 0) >= 128, outcomes
        assert table.peak <= cap
        # nothing left behind: every connection the stack opened was closed
        assert wait_for(lambda: (lambda s: s["conns_opened"] == s["conns_closed"])(stack.core_stats()[0]),
                        timeout=20), stack.core_stats()
        assert alive(stack)
        # still serving: a new client afterwards gets its echo
        proc = tool(ns, "clients", "--count", 1, "--size", 100_000, "--timeout", 30)
        rc, out, err = finish(proc, timeout=60)
        assert rc == 0, err
        assert last_json(out)["outcomes"] == {"served": 1}, (out, stack.core_stats())
        end = memory(stack)
        assert end["anon"] - before["anon"] < 16 * 1024, (before, end)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_application_that_stops_reading_closes_the_window_without_growing():
    """A kernel client keeps writing to a connection whose application
    accepted it and never reads.  The stack must stop taking data once the
    receive buffer is full (the client's send blocks, the advertised window
    is 0), keep answering the kernel's zero-window probes (with window 0),
    and not grow; once the application reads, the rest of the stream flows
    and arrives intact."""
    port = 5555
    rcvbuf = 1 * MiB
    with serving("discard", workers=2, rcvbuf=rcvbuf) as (ns, stack):
        listener = stack.listen(port)
        may_read = threading.Event()
        result = {}

        def app():
            conn, _ = listener.accept(timeout=30)
            result["conn"] = conn
            may_read.wait(60)
            import hashlib
            digest, count = hashlib.sha256(), 0
            while True:
                view = conn.recv_view(timeout=30)
                if not len(view):
                    break
                digest.update(view)
                count += len(view)
                conn.release(view)
            conn.close()
            result["bytes"], result["sha256"] = count, digest.hexdigest()

        reader = threading.Thread(target=app, daemon=True)
        reader.start()
        proc = ns.python([TOOLS, "stuck", "--dport", str(port), "--idle", "1.0", "--watch", "4.0",
                          "--after", str(8 * MiB)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        line = read_line(proc, 40)
        assert line, proc.stderr.read1().decode() if proc.poll() is not None else "no report"
        blocked = json.loads(line)["blocked"]
        mem_blocked = memory(stack)
        stats_blocked, drops_blocked = stack.core_stats(fresh=True)
        # the kernel's next zero-window probe (it backs off) is answered;
        # nothing may grow meanwhile
        probed = drops_blocked.get("out_of_window", 0)
        assert wait_for(lambda: stack.core_stats()[1].get("out_of_window", 0) > probed, timeout=30)
        mem_later = memory(stack)
        stats_later, drops_later = stack.core_stats()
        conn = result["conn"]
        print("stuck", blocked, "memory", mem_blocked, mem_later, "drops", drops_blocked, drops_later)
        # the stack holds exactly what its buffer allows, nothing more
        assert conn.readable_end() <= rcvbuf
        assert blocked["unacked"] > 0                      # the kernel holds the rest
        # the window closed and stayed closed: probes were answered with window 0
        assert blocked["zero_window_acks"] >= 1
        assert blocked["probes"] >= 1
        assert mem_later["anon"] - mem_blocked["anon"] < 4 * 1024, (mem_blocked, mem_later)
        # the application reads again: the window opens and the stream completes
        may_read.set()
        proc.stdin.write(b"read\n")
        proc.stdin.flush()
        rc, out, err = finish(proc, timeout=60)
        assert rc == 0, err
        final = last_json(out)
        reader.join(30)
        assert result["bytes"] == final["bytes"] and result["sha256"] == final["sha256"]
        assert alive(stack)
