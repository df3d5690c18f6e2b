"""End to end over IPv6 against the Linux kernel, inside a namespace each
test creates and deletes: the kernel side of the TUN is fd00:77::1/64 (added
without duplicate address detection, so it is usable at once), the stack is
dual-stack at 10.77.0.2 and fd00:77::2.  SHA-256-exact transfers for 1 and 2
workers with and without offload, the stock `iperf3 -6` client (normal, -R,
-P 4), both families at once, injected faults, hostile IPv6 frames counted
by reason, `ping -6`, an active open to the kernel, `misdtcp ss` rows."""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import threading

import pytest

import hostile_tools
from misdtcp.api import Stack
from misdtcp.apps import discard, echo, iperf3, sink
from misdtcp.device.netns import Netns
from misdtcp.device.tun import Tun
from misdtcp.testing.lab import NftLoss
from netns_helpers import KERNEL_CIDR, finish, require_netns
from stack_helpers import STACK_ADDR, wait_for
from test_e2e_transfer import ECHO_CLIENTS, SENDER

pytestmark = pytest.mark.netns

STACK6 = "fd00:77::2"
KERNEL6 = "fd00:77::1"
KERNEL_CIDR6 = KERNEL6 + "/64"
APPS = {"discard": (discard.serve, 9), "echo": (echo.serve, 7), "iperf3": (iperf3.serve, 5201),
        "sink": (sink.serve, 9)}
# corruption 10x the IPv4 tests' rate: with GSO super-frames a 64 MiB transfer
# is ~1000 frames, and the test wants corrupted IPv6 frames caught
FAULTS = dict(drop=0.01, reorder=0.01, duplicate=0.005, corrupt=0.01, seed=43)
needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")


def namespace6() -> Netns:
    """A namespace with IPv6 on (and duplicate address detection off for
    whatever else gets an address: the TUN's own address goes on without)."""
    ns = Netns().create()
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
    return ns


@contextlib.contextmanager
def serving6(app="discard", *, workers=1, offload=True, reports=None, **stack_options):
    """Yields (ns, stack): a dual-stack misdtcp serving `app` on its port."""
    require_netns()
    ns = namespace6()
    tun = stack = None
    stop = threading.Event()
    try:
        tun = Tun("misd0", address=KERNEL_CIDR, address6=KERNEL_CIDR6, offload=offload, nonblocking=True,
                  netns=ns)
        stack = Stack(tun, address=STACK_ADDR, address6=STACK6, workers=workers, offload=offload,
                      **stack_options).start()
        serve, port = APPS[app]
        kwargs = {"stop": stop}
        if app == "iperf3":
            kwargs["log"] = reports.append if reports is not None else (lambda text: None)
        elif app != "sink":
            kwargs["report"] = reports.append if reports is not None else None
        threading.Thread(target=serve, args=(stack, port), kwargs=kwargs, daemon=True).start()
        if not wait_for(lambda: stack.listening(port) or stack.failure, timeout=10) or stack.failure:
            raise RuntimeError(f"the {app} app did not start listening: {stack.failure}")
        yield ns, stack
    finally:
        stop.set()
        if stack is not None:
            stack.stop()
        if tun is not None:
            tun.close()
        ns.delete()


def send(ns, total, addr=STACK6, port=9):
    return ns.python(["-c", SENDER.format(addr=addr, port=port), str(total)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sent_and_digest(proc, timeout):
    rc, out, err = finish(proc, timeout=timeout)
    assert rc == 0, err
    sent, digest = out.split()
    return int(sent), digest


@pytest.mark.timeout(300)
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_to_discard_over_ipv6_sha256_matches(workers, offload):
    total = 64 << 20
    reports = []
    with serving6("discard", workers=workers, offload=offload, reports=reports) as (ns, stack):
        sent, digest = sent_and_digest(send(ns, total), timeout=240)
        assert sent == total
        assert wait_for(lambda: reports, timeout=20), "the discard app never reported the connection"
        assert reports[0]["bytes"] == total and reports[0]["sha256"] == digest
        assert reports[0]["address"] == KERNEL6
        frames = stack.sequencer_counters()["frames"]
        if offload:
            # the kernel handed over TSO6 super-frames (gso_type TCPV6): far
            # fewer frames than 1440-byte segments
            assert frames < total // 8000, frames
        else:
            assert frames >= total // 1440, frames
        if workers > 1:
            assert all(c["bytes_copied"] > total // 4 for c in stack.worker_counters())
        stats, drops = stack.core_stats(fresh=True)
        assert stats["retransmits"] == 0 or offload is False


@pytest.mark.timeout(240)
def test_both_families_at_once_through_echo():
    """Echo clients over IPv6 and over IPv4 at the same time: every byte
    comes back on its own connection."""
    with serving6("echo", workers=2, max_connections=64) as (ns, stack):
        procs = [ns.python(["-c", "import json\n" + ECHO_CLIENTS.format(addr=addr), "12", str(seed)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for addr, seed in ((STACK6, 5), (STACK_ADDR, 6))]
        for proc in procs:
            rc, out, err = finish(proc, timeout=200)
            assert rc == 0, err
            result = json.loads(out)
            assert result["errors"] == [] and len(result["sizes"]) == 12


def iperf3_6(ns, *args, seconds=2):
    proc = ns.run(["iperf3", "-6", "-c", STACK6, "-t", str(seconds), "-J", *args], check=False,
                  timeout=seconds + 60)
    return proc.returncode, json.loads(proc.stdout or b"{}")


@needs_iperf3
@pytest.mark.timeout(180)
@pytest.mark.parametrize("args", [[], ["-R"], ["-P", "4"]], ids=["normal", "reverse", "parallel-4"])
def test_stock_iperf3_client_over_ipv6(args):
    log = []
    with serving6("iperf3", workers=2, reports=log) as (ns, stack):
        rc, result = iperf3_6(ns, *args)
        assert rc == 0, result.get("error")
        end = result["end"]
        assert end["sum_received"]["bytes"] > 1 << 20
        assert end["sum_received"]["bits_per_second"] > 50e6          # plausible, not a speed test
        assert len(end["streams"]) == (4 if "-P" in args else 1)
        assert result["start"]["connected"][0]["remote_host"] == STACK6
        assert any(f"local {STACK6} port 5201 connected to {KERNEL6} port" in line for line in log), log


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_to_stack_over_ipv6_through_faults(workers):
    """Drop, reorder, duplicate and corrupt in both directions, and 1 % loss
    stack -> kernel by nftables (an ip6 table): the stream is
    exact, and the corrupted IPv6 frames were caught by checksums."""
    total = 64 << 20
    reports = []
    with serving6("discard", workers=workers, reports=reports, faults=FAULTS) as (ns, stack):
        with NftLoss(ns, "misd0", 1, direction="ingress", family="ip6") as loss:
            sent, digest = sent_and_digest(send(ns, total), timeout=240)
            lost = loss.dropped()
        assert wait_for(lambda: reports, timeout=30)
        assert reports[0]["bytes"] == total and reports[0]["sha256"] == digest
        stats, drops = stack.core_stats(fresh=True)
        assert drops.get("tcp_checksum", 0) > 0
        assert lost > 0                          # the kernel's ACK path really lost segments


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_hostile_ipv6_frames_are_dropped_by_reason_and_the_stream_survives(workers):
    """A 12 MiB IPv6 transfer; after every 1 MiB chunk (rcv_nxt exact) and
    while each chunk is in flight, malformed IPv6 frames on the live 4-tuple
    at rcv_nxt with 700 bytes of garbage: extension headers malformed,
    hop-by-hop out of place, chains of 9 and 40 headers, routing headers with
    segments left (type 0 and segment routing), options that say discard,
    fragments, payload lengths that lie, checksums without the pseudo-header,
    impossible sources, no next header, bad data offsets.  Each is counted
    under exactly its reason, and the stream arrives intact."""
    reasons = ("ip6_ext_header", "ip6_ext_chain", "ip6_routing", "ip6_option", "ip_fragment", "ip_truncated",
               "tcp_checksum", "bad_source", "protocol", "tcp_header")
    reports = []
    with serving6("discard", workers=workers, reports=reports) as (ns, stack):
        proc = ns.python([hostile_tools.__file__, "attack", "--mode", "malformed6", "--dst", STACK6,
                          "--bytes", str(12 << 20), "--seed", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=100)
        assert rc == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert wait_for(lambda: any(r["bytes"] == 12 << 20 for r in reports), timeout=20), reports
        assert [r for r in reports if r["bytes"] == 12 << 20][0]["sha256"] == result["sha256"]
        stats, drops = stack.core_stats(fresh=True)
        sent = result["sent"]
        print("hostile6", result, "drops", drops)
        assert set(sent) == set(reasons)
        assert all(n > 0 for n in sent.values())
        for reason in reasons:
            assert drops.get(reason, 0) == sent[reason], (reason, drops, sent)
        assert stats["conns_opened"] == 1


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("ping") is None, reason="ping (iputils-ping) is not installed")
def test_ping6_is_answered():
    with serving6("discard") as (ns, stack):
        proc = ns.run(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", "200", STACK6], check=False,
                      timeout=30)
        out = proc.stdout.decode()
        assert proc.returncode == 0, out + proc.stderr.decode()
        assert "3 packets transmitted, 3 received" in out
        stats, _ = stack.core_stats(fresh=True)
        assert stats["icmp6_echo"] == 3


KERNEL_SERVER6 = """
import hashlib, socket
ls = socket.socket(socket.AF_INET6)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(({kernel!r}, 5001))
ls.listen(1)
ls.settimeout(30)
print("listening", flush=True)
conn, peer = ls.accept()
conn.settimeout(30)
buf = bytearray()
while True:
    chunk = conn.recv(1 << 20)
    if not chunk:
        break
    buf += chunk
conn.sendall(hashlib.sha256(buf).hexdigest().encode())
conn.close()
print(peer[0], len(buf), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_connect_over_ipv6_to_the_kernel(workers):
    """The active side over IPv6: Stack.connect to a kernel listener, 8 MiB
    sent, the kernel's SHA-256 of what it got sent back; the names of both
    ends are IPv6 ones."""
    data = hashlib.sha256(b"seed").digest() * ((8 << 20) // 32)
    with serving6("discard", workers=workers) as (ns, stack):
        server = ns.python(["-c", KERNEL_SERVER6.format(kernel=KERNEL6)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        try:
            assert server.stdout.readline().decode().strip() == "listening"
            conn = stack.connect(KERNEL6, 5001, timeout=10)
            assert conn.getpeername() == (KERNEL6, 5001)
            assert conn.getsockname()[0] == STACK6
            conn.sendall(data, timeout=60)
            conn.shutdown(1)
            reply = b""
            while len(reply) < 64:
                chunk = conn.recv(64, timeout=30)
                if not chunk:
                    break
                reply += chunk
            assert reply.decode() == hashlib.sha256(data).hexdigest()
            conn.close()
            # with offload the stack wrote GSO super-segments (gso_type
            # TCPV6), which the kernel cut and took
            sent = stack.worker_counters()
            assert sum(c["bytes_sent"] for c in sent) > 4 * 1500 * sum(c["segments_sent"] for c in sent)
        finally:
            rc, out, err = finish(server, timeout=30)
        assert rc == 0, err
        assert out.split() == [STACK6, str(len(data))]


@pytest.mark.timeout(120)
def test_ss_shows_ipv6_rows():
    """`misdtcp ss` of a dual-stack serve lists both listeners and an IPv6
    connection with its addresses in brackets."""
    require_netns()
    ns = namespace6()
    serve = None
    try:
        serve = ns.popen([sys.executable, "-m", "misdtcp", "serve", "--app", "sink", "-i", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = serve.stdout.readline()
        assert "serving sink on 10.77.0.2:9 and [fd00:77::2]:9" in line, line + serve.stderr.read()
        client = ns.python(["-c", "import socket, time\n"
                                  f"s = socket.create_connection(({STACK6!r}, 9), timeout=10)\n"
                                  "s.sendall(b'x' * 1000)\nprint('sent', flush=True)\ntime.sleep(30)\n"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert client.stdout.readline().decode().strip() == "sent"

            def table():
                proc = ns.run([sys.executable, "-m", "misdtcp", "ss", "--json"], check=False)
                return json.loads(proc.stdout) if proc.returncode == 0 else {"connections": []}
            assert wait_for(lambda: any(c["peer"]["address"] == KERNEL6 and c["recv_q"] == 1000
                                        for c in table()["connections"]), timeout=10)
            reply = table()
            assert {(l["address"], l["port"]) for l in reply["listening"]} == {("10.77.0.2", 9), (STACK6, 9)}
            row = [c for c in reply["connections"] if c["peer"]["address"] == KERNEL6][0]
            assert row["local"]["address"] == STACK6 and row["mss"] == 1440
            text = ns.run([sys.executable, "-m", "misdtcp", "ss"]).stdout.decode()
            assert f"[{STACK6}]:9" in text and f"[{KERNEL6}]:" in text
        finally:
            client.kill()
            finish(client, timeout=5)
    finally:
        if serve is not None:
            serve.terminate()
            serve.communicate(timeout=20)
        ns.delete()
