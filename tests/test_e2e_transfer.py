"""End to end against the Linux kernel: the kernel's own TCP (and the stock
iperf3 client) on one side of a TUN, misdtcp on the other, inside a network
namespace each test creates and deletes."""
import json
import os
import shutil
import subprocess
import threading

import pytest

from netns_helpers import finish
from stack_helpers import STACK_ADDR, serving, wait_for

pytestmark = pytest.mark.netns

SENDER = """
import hashlib, os, socket, sys
total = int(sys.argv[1])
s = socket.create_connection(({addr!r}, {port}), timeout=30)
h = hashlib.sha256()
block = os.urandom(1 << 20)
sent = 0
while sent < total:
    chunk = block[: min(len(block), total - sent)]
    s.sendall(chunk)
    h.update(chunk)
    sent += len(chunk)
    block = os.urandom(1 << 20)
s.shutdown(socket.SHUT_WR)
s.settimeout(30)
s.recv(1)
print(sent, h.hexdigest(), flush=True)
"""

ECHO_CLIENTS = """
import hashlib, os, random, socket, sys, threading
count, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
sizes = [rng.choice([1, 100, 1448, 1449, 65536, 300000, rng.randrange(1, 1 << 20)]) for _ in range(count)]
errors = []
def one(i, size):
    try:
        data = os.urandom(size)
        s = socket.create_connection(({addr!r}, 7), timeout=30)
        got = bytearray()
        def reader():
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got.extend(chunk)
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        t.join(60)
        s.close()
        if bytes(got) != data:
            errors.append((i, size, len(got)))
    except Exception as exc:
        errors.append((i, size, repr(exc)))
threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(sizes)]
for t in threads: t.start()
for t in threads: t.join(90)
print(json.dumps({{"sizes": sizes, "errors": errors}}), flush=True)
"""


PLACEMENTS = ["inline", "separate"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_to_discard_256_mib_sha256_matches(workers, offload, placement):
    total = 256 << 20
    reports = []
    with serving("discard", workers=workers, offload=offload, reports=reports, placement=placement) as (ns, stack):
        assert stack.placement == placement
        proc = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=9), str(total)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=240)
        assert rc == 0, err
        sent, digest = out.split()
        assert int(sent) == total
        assert wait_for(lambda: reports, timeout=20), "the discard app never reported the connection"
        assert reports[0]["bytes"] == total
        assert reports[0]["sha256"] == digest
        # the sequencer publishes what it did: every frame it logged, its CPU
        # time, and (inline) how much of it went to replica 0
        assert wait_for(lambda: stack.sequencer_counters()["frames"] >= total // 65536, timeout=5)
        seq = stack.sequencer_counters()
        assert seq["cpu_ns"] > 0 and (seq["inline_ns"] > 0) == (placement == "inline")
        counters = stack.worker_counters()
        if workers > 1:
            # the payload copies really were split between the workers
            assert all(c["bytes_copied"] > total // 4 for c in counters)


@pytest.mark.timeout(240)
def test_echo_round_trips_with_many_connections_at_once():
    with serving("echo", workers=2, max_connections=64) as (ns, stack):
        proc = ns.python(["-c", "import json\n" + ECHO_CLIENTS.format(addr=STACK_ADDR), "24", "7"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=200)
        assert rc == 0, err
        result = json.loads(out)
        assert result["errors"] == []
        assert len(result["sizes"]) == 24


def iperf3(ns, *args, seconds=2):
    proc = ns.run(["iperf3", "-c", STACK_ADDR, "-t", str(seconds), "-J", *args], check=False,
                  timeout=seconds + 60)
    return proc.returncode, json.loads(proc.stdout or b"{}")


needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")


@needs_iperf3
@pytest.mark.timeout(180)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("args", [[], ["-R"], ["-P", "4"], ["--bidir"], ["-l", "8K"]],
                         ids=["normal", "reverse", "parallel-4", "bidir", "len-8K"])
def test_stock_iperf3_client_completes(args, placement):
    with serving("iperf3", workers=2, placement=placement) as (ns, stack):
        rc, result = iperf3(ns, *args)
        assert rc == 0, result.get("error")
        end = result["end"]
        assert end["sum_received"]["bytes"] > 1 << 20
        assert end["sum_received"]["bits_per_second"] > 50e6          # plausible, not a speed test
        if "--bidir" in args:
            assert end["sum_received_bidir_reverse"]["bytes"] > 1 << 20
        assert len(end["streams"]) == (4 if "-P" in args else 2 if "--bidir" in args else 1)


@needs_iperf3
@pytest.mark.timeout(180)
def test_iperf3_test_after_test_and_truthful_results():
    reports = []
    with serving("iperf3", workers=1, reports=reports) as (ns, stack):
        for _ in range(3):
            rc, result = iperf3(ns, seconds=1)
            assert rc == 0, result.get("error")
        # the server logs a test once the client has said IPERF_DONE
        assert wait_for(lambda: len([r for r in reports if r.startswith("iperf3: test")]) == 3, timeout=10)
        # The receiver-side numbers the client prints come from our results
        # JSON: they must agree with what the client sent (TCP loses nothing;
        # bytes still in flight when the client stops may be missing).
        sent = result["end"]["sum_sent"]["bytes"]
        received = result["end"]["sum_received"]["bytes"]
        assert 0.9 * sent <= received <= sent


@needs_iperf3
@pytest.mark.timeout(180)
def test_iperf3_reports_the_servers_retransmissions_and_congestion_control():
    """-R through 1 % injected loss, with Reno: the stock client prints what
    the server's stack really did -- the stream's retransmissions as the
    connection table counts them (not -1, "unknown"), with
    sender_has_retransmits set, and the congestion control it used."""
    with serving("iperf3", workers=2, cc="reno", faults=dict(drop=0.01, seed=7)) as (ns, stack):
        seen = {}                   # the data stream's row as last seen while it ran (closed rows go)
        done = threading.Event()

        def watch():
            while not done.wait(0.02):
                rows = stack.connection_table()[1]
                if rows:
                    row = max(rows, key=lambda r: r["bytes_out"])
                    if row["bytes_out"] >= seen.get("bytes_out", 0):
                        seen.update(row)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            rc, result = iperf3(ns, "-R", seconds=2)
        finally:
            done.set()
            watcher.join(5)
        assert rc == 0, result.get("error")
        total = stack.core_stats(fresh=True)[0]["retransmits"]
    end = result["end"]
    reported = end["streams"][0]["sender"]["retransmits"]
    assert reported > 0                                       # 1 % of the segments were dropped
    # at least what the stream's row showed while it ran, at most the stack's total
    assert seen["retransmits"] <= reported <= total
    assert end["sum_sent"]["retransmits"] == reported
    assert end["sender_tcp_congestion"] == "reno"


@needs_iperf3
@pytest.mark.timeout(180)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("workers", [1, 2])
def test_reverse_sends_in_order_without_spurious_recovery(workers, placement):
    """misdtcp sending (iperf3 -R) with no loss anywhere: the segments leave
    in sequence order whichever worker writes them, so the kernel receiver
    never sees a hole, never sends duplicate ACKs, and the sender never
    enters fast retransmit -- except after a segment the ordered hand-off
    wrote out of order because the earlier owner kept it waiting longer than
    its bound (50 ms; that happens on a loaded machine), one at most each."""
    with serving("iperf3", workers=workers, placement=placement) as (ns, stack):
        rc, result = iperf3(ns, "-R", seconds=3)
        assert rc == 0, result.get("error")
        assert result["end"]["sum_received"]["bytes"] > 16 << 20
        assert wait_for(lambda: stack.core_stats()[0]["segs_out"] > 1000, timeout=5)
        stats, _ = stack.core_stats(fresh=True)
        out_of_order = sum(c["order_waits"]["timeouts"] for c in stack.worker_counters())
        assert stats["fast_retransmits"] <= out_of_order
        if stats["rto_expired"] == 0 and out_of_order == 0:
            # nothing was lost and nothing left out of order: nothing sent
            # twice but what a timer sent (a stack starved of CPU on a loaded
            # machine sees its probe timeout or its retransmission timer fire
            # before the ACKs come -- the timers' business, not the order's)
            assert stats["retransmits"] - stats["tail_loss_probes"] <= stats["segs_out"] // 1000
        if workers > 1:
            # the segments really were written by both workers
            sent = [c["segments_sent"] for c in stack.worker_counters()]
            assert min(sent) > max(sent) // 4


# iperf3's client after TEST_END drains reverse streams with *blocking* reads
# of whole blocks, while its reads during the test were non-blocking and cut
# blocks anywhere: only the end of the stream (the server closes it at
# TEST_END, as iperf3's own server does) ends that last read.  This client
# does the same with a read size that never divides the block.
REVERSE_DRAIN_CLIENT = """
import json, os, socket, struct, sys, time
addr = {addr!r}
cookie = b"misdtcp-reverse-drain-test-cookie-00"[:36] + b"\\0"
ctrl = socket.create_connection((addr, 5201), timeout=10)
ctrl.sendall(cookie)
def state():
    b = ctrl.recv(1)
    return struct.unpack("!b", b)[0] if b else None
assert state() == 9                                   # PARAM_EXCHANGE
params = json.dumps({{"tcp": True, "time": 1, "parallel": 1, "reverse": True, "len": 131072}}).encode()
ctrl.sendall(struct.pack("!I", len(params)) + params)
assert state() == 10                                  # CREATE_STREAMS
data = socket.create_connection((addr, 5201), timeout=10)
data.sendall(cookie)
assert state() == 1 and state() == 2                  # TEST_START, TEST_RUNNING
data.setblocking(False)
got, end = 0, time.monotonic() + 1.0
while time.monotonic() < end:
    try:
        chunk = data.recv(100003)
    except BlockingIOError:
        continue
    got += len(chunk)
ctrl.sendall(struct.pack("!b", 4))                     # TEST_END
data.setblocking(True)
data.settimeout(15)
while True:                                          # drain: the server must end the stream
    chunk = data.recv(131072)
    if not chunk:
        break
    got += len(chunk)
print(json.dumps({{"received": got, "next_state": state()}}), flush=True)
"""


@pytest.mark.timeout(120)
def test_iperf3_reverse_streams_end_at_test_end():
    with serving("iperf3", workers=2) as (ns, stack):
        proc = ns.python(["-c", REVERSE_DRAIN_CLIENT.format(addr=STACK_ADDR)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=60)
        assert rc == 0, err
        result = json.loads(out)
        assert result["received"] > 1 << 20
        assert result["next_state"] == 13                 # EXCHANGE_RESULTS follows


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strategy,workers", [("single", 1), ("mimd", 2), ("misd", 3)])
def test_every_strategy_delivers_exactly(strategy, workers):
    """The same kernel sender through each strategy (misd with more workers
    than this machine's cores too): byte-exact."""
    total = 64 << 20
    reports = []
    allowed = sorted(os.sched_getaffinity(0))
    with serving("discard", workers=workers, strategy=strategy, reports=reports,
                 cpus=[allowed[w % len(allowed)] for w in range(workers)]) as (ns, stack):
        proc = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=9), str(total)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=150)
        assert rc == 0, err
        sent, digest = out.split()
        assert wait_for(lambda: reports, timeout=20)
        assert reports[0]["bytes"] == total and reports[0]["sha256"] == digest
