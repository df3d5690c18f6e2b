"""`misdtcp serve` as people run it: inside a namespace, with the stock
iperf3 client, interval reports, --json, --pcap, a clean exit with a
summary on SIGINT and SIGTERM, and one-sentence errors with exit status 2."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from misdtcp.device.netns import Netns
from netns_helpers import require_netns

pytestmark = pytest.mark.netns
MISDTCP = [sys.executable, "-m", "misdtcp"]
ALLOWED = sorted(os.sched_getaffinity(0))


def run_cli(*args, timeout=20, prefix=()):
    proc = subprocess.run([*prefix, *MISDTCP, *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def one_sentence_error(stderr):
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("misdtcp: ")
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def ns():
    require_netns()
    n = Netns().create()           # IPv6 on: serve is dual-stack
    try:
        yield n
    finally:
        n.delete()


class Serve:
    """A `misdtcp serve` inside a namespace whose output lines are read as
    they come (no sleeping: the test waits for the line it needs)."""

    def __init__(self, ns, *args):
        self.proc = ns.popen([*MISDTCP, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.lines: list[str] = []

    def read_until(self, predicate, timeout=20.0) -> str:
        """Read output lines until one satisfies `predicate`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not ready:
                raise AssertionError(f"no such line from serve within {timeout:g} s: {self.lines[-5:]}")
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"serve ended: {self.proc.wait()} {self.proc.stderr.read()}")
            self.lines.append(line.rstrip("\n"))
            if predicate(self.lines[-1]):
                return self.lines[-1]

    def serving(self):
        """Wait for the line serve prints once a client can connect."""
        return self.read_until(lambda l: "serving" in l)

    def records(self, event=None):
        found = [json.loads(l) for l in self.lines if l.startswith("{")]
        return [r for r in found if event is None or r.get("event") == event]

    def end(self, signum, timeout=20.0):
        """Send `signum`; the exit status and stderr once serve ended (its output collected)."""
        self.proc.send_signal(signum)
        out, err = self.proc.communicate(timeout=timeout)
        self.lines += out.splitlines()
        return self.proc.returncode, err


def start_serve(ns, *args):
    return ns.popen([*MISDTCP, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_listening(ns, port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = ns.run([sys.executable, "-c",
                        f"import socket; socket.create_connection(('10.77.0.2', {port}), timeout=1).close()"],
                       check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("misdtcp serve did not start listening")


def json_event(name):
    return lambda line: line.startswith("{") and json.loads(line).get("event") == name


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
def test_serve_iperf3_reports_and_exits_cleanly_on_sigint(ns, tmp_path):
    pcap = tmp_path / "both.pcap"
    serve = Serve(ns, "--workers", "2", "--interval", "0.5", "--json", "--pcap", str(pcap))
    try:
        serve.serving()
        client = ns.run(["iperf3", "-c", "10.77.0.2", "-t", "2", "-J"], check=False, timeout=60)
        assert client.returncode == 0
        assert json.loads(client.stdout)["end"]["sum_received"]["bytes"] > 0
        serve.read_until(json_event("interval"))
    finally:
        rc, err = serve.end(signal.SIGINT)
    assert rc == 0, err
    assert err == ""
    summary = serve.records("summary")
    assert serve.records("interval") and len(summary) == 1
    assert summary[0]["bytes"] > 1 << 20
    assert len(summary[0]["copied_share"]) == 2 and all(s > 0.2 for s in summary[0]["copied_share"])
    assert summary[0]["latency_us"] > 0
    # the TUN it created is gone, and so are its processes
    assert ns.run(["ip", "link", "show", "misd0"], check=False).returncode != 0
    # both directions were captured, readable by scapy
    from scapy.all import rdpcap
    from scapy.layers.inet import TCP
    packets = rdpcap(str(pcap))
    flags = {str(p[TCP].flags) for p in packets if TCP in p}
    assert "S" in flags and "SA" in flags


@pytest.mark.timeout(60)
def test_serve_discard_json_reports_each_connection_and_sigterm_ends_with_a_summary(ns):
    serve = Serve(ns, "--app", "discard", "--json", "--interval", "5")
    try:
        serve.serving()
        ns.run([sys.executable, "-c", (
            "import socket\n"
            "s = socket.create_connection(('10.77.0.2', 9))\n"
            "s.sendall(b'hello world')\n"
            "s.close()\n")])
        closed = json.loads(serve.read_until(json_event("closed")))
    finally:
        rc, err = serve.end(signal.SIGTERM)
    assert closed["bytes"] == 11
    assert closed["sha256"] == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert rc == 0, err                                  # SIGTERM is a clean stop, not a failure
    summary = serve.records("summary")
    assert len(summary) == 1 and summary[0]["bytes"] == 11
    assert ns.run(["ip", "link", "show", "misd0"], check=False).returncode != 0


@pytest.mark.timeout(60)
def test_serve_text_output_says_serving_and_ends_with_a_total_line(ns):
    serve = Serve(ns, "--app", "discard", "--interval", "5")
    try:
        line = serve.serving()
    finally:
        rc, err = serve.end(signal.SIGTERM)
    placement = "separate" if len(ALLOWED) > 1 else "inline"      # runtime/placement.py's auto
    assert line == (f"misdtcp: serving discard on 10.77.0.2:9 and [fd00:77::2]:9 via misd0 (misd, 1 worker(s), "
                    f"{placement} placement, offload on)")
    assert rc == 0, err
    assert serve.lines[-1].split("]")[1].split()[0] == "total"


def bad_cpu():
    return max(ALLOWED) + 1000


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args,message", [
    (["--address", "10.77.0.300"], "--address '10.77.0.300' is not an IPv4 address"),
    (["--address", "192.168.1.2"], "--address 192.168.1.2 is outside the kernel side's network 10.77.0.0/24"),
    (["--address", "10.77.0.1"], "--address 10.77.0.1 is the kernel side's own address; pick another in "
                                 "10.77.0.0/24"),
    (["--kernel-address", "nonsense"], "--kernel-address 'nonsense' is not an IPv4 address/prefix"),
    (["--address6", "fd00:77::zz"], "--address6 'fd00:77::zz' is not an IPv6 address"),
    (["--address6", "fd00:99::2"], "--address6 fd00:99::2 is outside the kernel side's network fd00:77::/64"),
    (["--address6", "fd00:77::1"], "--address6 fd00:77::1 is the kernel side's own address; pick another in "
                                   "fd00:77::/64"),
    (["--address6", "ff02::1"], "--address6 ff02::1 cannot be a host's address (multicast, loopback, "
                                "unspecified, link-local or IPv4-mapped)"),
    (["--kernel-address6", "10.0.0.1/24"], "--kernel-address6 '10.0.0.1/24' is not an IPv6 address/prefix"),
    (["--kernel-address6", "fd00:77::1"], "--kernel-address6 fd00:77::1 has no prefix length (like fd00:77::1/64)"),
    (["--mtu", "1000"], "IPv6 needs an MTU of at least 1280, not 1000; add --no-ipv6 for a smaller one"),
    (["--device", "packet-ring", "--kernel-address6", "fd00:77::1/64"],
     "--device packet-ring carries IPv4 only: leave out --address6 and --kernel-address6, or use --device tun "
     "for IPv6"),
    (["--workers", str(len(ALLOWED) + 1), "--cpus", ",".join(map(str, ALLOWED))],
     f"{len(ALLOWED) + 1} workers need at least {len(ALLOWED) + 1} CPUs, but only {len(ALLOWED)} are given "
     f"({','.join(map(str, ALLOWED))})"),
    (["--cpus", f"{ALLOWED[0]},{bad_cpu()}"], f"CPU {bad_cpu()} is not available to this process "
                                              f"(allowed: {ALLOWED})"),
    (["--cpus", "0-x"], "--cpus '0-x' is not a list like 0,1 or 0-3"),
    (["--drop-rate", "2"], "argument --drop-rate: --drop-rate must be between 0 and 1, not 2.0"),
    (["--app", "gopher"], "argument --app: invalid choice: 'gopher' (choose from 'iperf3', 'echo', 'discard', 'sink')"),
    (["--workers", "0"], "argument --workers: --workers must be at least 1, not 0"),
    (["--check-every=-1"], "argument --check-every: --check-every must be at least 0, not -1"),
    (["--rcvbuf", "20000"], "--rcvbuf and --sndbuf must be multiples of 4096"),
    (["--interval=-1"], "argument -i/--interval: --interval must be 0 or more, not -1"),
    (["-p", "70000"], "argument -p/--port: --port 70000 is outside 1..65535"),
    (["--port", "0"], "argument -p/--port: --port 0 is outside 1..65535"),
    (["-p", "http"], "argument -p/--port: --port must be a port number, not 'http'"),
    (["--pcap-snaplen", "10"], "argument --pcap-snaplen: --pcap-snaplen must be at least 64, not 10"),
    (["-J", "--json-stream"], "argument --json-stream: not allowed with argument -J/--json"),
    (["--pidfile", "/nonexistent-dir/misdtcp.pid"], "cannot write the pid file /nonexistent-dir/misdtcp.pid: No such file or directory"),
    (["--logfile", "/nonexistent-dir/misdtcp.log"], "cannot write the log file /nonexistent-dir/misdtcp.log: No such file or directory"),
    (["--strategy", "mimd", "--placement", "inline"],
     "only the misd strategy can run replica 0 inside the sequencer (inline)"),
])
def test_bad_arguments_are_one_sentence_and_exit_2(ns, args, message):
    rc, out, err = run_cli("serve", *args, prefix=("ip", "netns", "exec", ns.name))
    assert rc == 2
    assert one_sentence_error(err) == f"misdtcp: {message}"
    assert out == ""


@pytest.mark.timeout(60)
def test_no_ipv6_serves_ipv4_only_and_takes_a_small_mtu(ns):
    serve = Serve(ns, "--app", "discard", "--no-ipv6", "--mtu", "1000", "--interval", "0")
    try:
        line = serve.serving()
        assert "serving discard on 10.77.0.2:9 via misd0" in line and "fd00" not in line
        shown = ns.run(["ip", "-6", "addr", "show", "dev", "misd0", "scope", "global"]).stdout.decode()
        assert "fd00:77::1" not in shown
    finally:
        rc, err = serve.end(signal.SIGTERM)
    assert rc == 0, err


@pytest.mark.timeout(30)
def test_ipv6_disabled_in_the_namespace_is_one_sentence(ns):
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
    rc, out, err = run_cli("serve", "--app", "discard", prefix=("ip", "netns", "exec", ns.name))
    assert rc == 2
    line = one_sentence_error(err)
    assert line.startswith("misdtcp: setting IPv6 address fd00:77::1/64 on misd0 failed: ")
    assert line.endswith("; enable IPv6 there (net.ipv6.conf.all.disable_ipv6=0) or add --no-ipv6")
    rc, out, err = run_cli("serve", "--app", "discard", "--no-ipv6", "--duration", "0.5", "-i", "0",
                           prefix=("ip", "netns", "exec", ns.name))
    assert rc == 0, err


@pytest.mark.timeout(30)
def test_without_cap_net_admin_is_a_clear_error(ns):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    rc, out, err = run_cli("serve", prefix=("ip", "netns", "exec", ns.name, "setpriv", "--reuid=65534",
                                            "--regid=65534", "--clear-groups"))
    assert rc == 2
    assert "needs CAP_NET_ADMIN" in one_sentence_error(err)


@pytest.mark.timeout(60)
def test_a_user_with_cap_net_admin_can_serve(ns):
    """Not root, only CAP_NET_ADMIN (ambient, so the `ip` it runs has it too)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    # /dev/net/tun at its usual mode 0666, in a private mount namespace (this
    # machine's node may be 0600, and the test must not change it)
    command = " ".join(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+net_admin",
                        "--ambient-caps=+net_admin", *MISDTCP, "serve", "--app", "discard", "-i", "0"])
    script = f"mount -t tmpfs none /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && exec {command}"
    proc = ns.popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
    try:
        wait_listening(ns, 9)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


@pytest.mark.timeout(30)
def test_missing_dev_net_tun_is_a_clear_error(ns):
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    script = f"mount -t tmpfs none /dev/net && exec {' '.join(MISDTCP)} serve"
    proc = subprocess.run(["ip", "netns", "exec", ns.name, "unshare", "-m", "sh", "-c", script],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert one_sentence_error(proc.stderr) == \
        "misdtcp: /dev/net/tun does not exist: this kernel has no TUN support (modprobe tun)"


@pytest.mark.timeout(60)
def test_busy_device_is_a_clear_error(ns):
    first = Serve(ns, "--app", "discard")
    try:
        first.serving()
        rc, out, err = run_cli("serve", "--app", "discard", prefix=("ip", "netns", "exec", ns.name))
        assert rc == 2
        message = one_sentence_error(err)
        assert "misd0" in message and "busy" in message.lower(), message
    finally:
        first.end(signal.SIGINT)


def wait_for_file_text(path, needle, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


@pytest.mark.timeout(30)
def test_version_flags():
    from misdtcp import __version__
    for flag in ("-V", "--version", "-v"):
        rc, out, err = run_cli("serve", flag)
        assert rc == 0 and out.strip() == f"misdtcp {__version__}"
    rc, out, err = run_cli("--version")
    assert rc == 0 and __version__ in out


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
def test_serve_one_off_exits_0_after_one_iperf3_test(ns, tmp_path):
    """-1 -J -i 0.2 -I pidfile --logfile: one -R test, then exit 0; the log
    has the accepted line with the client's address, JSON intervals that
    count the sent direction, no interval while idle, a summary over the
    active time; the pid file holds our pid while serving and is removed."""
    pidfile, logfile = tmp_path / "serve.pid", tmp_path / "serve.log"
    proc = start_serve(ns, "-1", "-J", "-i", "0.2", "-I", str(pidfile), "--logfile", str(logfile))
    try:
        wait_listening(ns, 5201)
        wait_for_file_text(pidfile, "\n")
        assert int(pidfile.read_text()) == proc.pid
        idle_from = time.monotonic()
        time.sleep(1.0)                             # the stimulus: a second of nothing
        client = ns.run(["iperf3", "-c", "10.77.0.2", "-t", "1", "-R", "-J"], check=False, timeout=60)
        assert client.returncode == 0, client.stdout
        result = json.loads(client.stdout)
        rc = proc.wait(timeout=30)
        wall = time.monotonic() - idle_from
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert rc == 0, err
    assert not pidfile.exists()
    records = [json.loads(line) for line in logfile.read_text().splitlines()]
    accepted = [r for r in records if r["event"] == "accepted"]
    assert len(accepted) == 1                       # the control connection, as iperf3 prints it
    assert all(r["address"] == "10.77.0.1" and 1024 <= r["port"] <= 65535 for r in accepted)
    data_port = result["start"]["connected"][0]["local_port"]
    assert any(f"connected to 10.77.0.1 port {data_port}" in r.get("message", "") for r in records)
    intervals = [r for r in records if r["event"] == "interval"]
    summary = [r for r in records if r["event"] == "summary"]
    assert intervals and len(summary) == 1
    assert all(r["bytes"] > 0 for r in intervals)   # quiet while idle: no empty lines
    sent = sum(r["bytes_sent"] for r in intervals)
    assert sent >= result["end"]["sum_received"]["bytes"] * 0.9
    assert summary[0]["bytes_sent"] >= result["end"]["sum_received"]["bytes"]
    # the summary's rate is over the time bytes moved, not the idle start
    assert summary[0]["active_seconds"] < wall - 0.8
    assert summary[0]["gbps"] >= summary[0]["bytes"] * 8 / wall / 1e9


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
def test_serve_json_stream_uses_iperf3_schema(ns, tmp_path):
    logfile = tmp_path / "serve.log"
    proc = start_serve(ns, "-1", "--json-stream", "-i", "0.3", "--logfile", str(logfile))
    try:
        wait_listening(ns, 5201)
        client = ns.run(["iperf3", "-c", "10.77.0.2", "-t", "1", "-J"], check=False, timeout=60)
        assert client.returncode == 0
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    events = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert all(set(e) == {"event", "data"} for e in events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "interval" in kinds
    starts = [e["data"] for e in events if e["event"] == "start"]
    assert all(s["accepted_connection"]["host"] == "10.77.0.1" for s in starts)
    interval = next(e["data"] for e in events if e["event"] == "interval")
    assert {"streams", "sum"} <= set(interval)
    assert {"start", "end", "seconds", "bytes", "bits_per_second", "sender"} <= set(interval["sum"])
    end = events[-1]["data"]
    received = json.loads(client.stdout)["end"]["sum_received"]["bytes"]   # as our iperf3 app counted it
    assert end["sum_received"]["bytes"] >= received
    assert {"sum_sent", "sum_received", "cpu_utilization_percent"} <= set(end)


SINK_CLIENT = """
import socket, sys
s = socket.create_connection(('10.77.0.2', 9), timeout=10)
print(s.getsockname()[1], flush=True)
s.settimeout(2)
try:
    s.sendall(b'x' * 400000)              # more than the sink's window: it never reads
except OSError:
    pass
sys.stdin.readline()
"""


def misdtcp_ss(ns, *args):
    return run_cli("ss", *args, prefix=("ip", "netns", "exec", ns.name))


@pytest.mark.timeout(90)
def test_ss_lists_an_established_connection_of_the_sink(ns):
    """misdtcp ss shows the sink's connection with the peer's address and
    port, ESTAB, the window closed with Recv-Q at the receive buffer, and
    both workers' shares."""
    proc = start_serve(ns, "--app", "sink", "--workers", "2", "--rcvbuf", "65536", "-i", "0")
    client = None
    try:
        wait_listening(ns, 9)
        client = ns.popen([sys.executable, "-c", SINK_CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        client_port = int(client.stdout.readline())
        deadline = time.monotonic() + 20
        row = None
        while time.monotonic() < deadline:
            rc, out, err = misdtcp_ss(ns, "--json")
            assert rc == 0, err
            rows = [c for c in json.loads(out)["connections"] if c["peer"]["port"] == client_port]
            # window closed, and every worker's copies published (worker 0's
            # table can run ahead of worker 1's share: replica 0 may be inline)
            if rows and rows[0]["recv_q"] >= 60000 and rows[0]["rcv_wnd"] < rows[0]["mss"] and \
                    sum(w["bytes_copied"] for w in rows[0]["workers"]) >= rows[0]["recv_q"]:
                row = rows[0]
                break
            time.sleep(0.1)
        assert row is not None, out
        assert row["state"] == "ESTABLISHED" and row["ss_state"] == "ESTAB"
        assert row["peer"]["address"] == "10.77.0.1"
        assert row["local"] == {"address": "10.77.0.2", "port": 9}
        assert row["bytes_received"] >= 60000
        assert len(row["workers"]) == 2
        assert sum(w["bytes_copied"] for w in row["workers"]) >= row["recv_q"]
        assert all(w["bytes_copied"] > 0 for w in row["workers"])      # 16 KiB stripes: both copy
        rc, text, err = misdtcp_ss(ns)
        assert rc == 0, err
        line = next(l for l in text.splitlines() if f"10.77.0.1:{client_port}" in l)
        assert line.split()[0] == "ESTAB"
        assert "LISTEN" in text and "rto:" in text and "cwnd:" in text and "w1:copied" in text
    finally:
        if client is not None:
            client.kill()
            client.communicate(timeout=10)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


@pytest.mark.timeout(30)
def test_ss_without_a_serve_is_one_sentence(ns):
    rc, out, err = misdtcp_ss(ns, "--tun", "misd7")
    assert rc == 1
    assert "no misdtcp serve is running on misd7 in this network namespace" in one_sentence_error(err)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
@pytest.mark.parametrize("reverse,parallel,host,device", [
    (False, 1, "10.77.0.1", "tun"), (True, 1, "10.77.0.1", "tun"), (False, 2, "10.77.0.1", "tun"),
    (False, 1, "fd00:77::1", "tun"), (True, 1, "fd00:77::1", "tun"),
    (False, 1, "10.77.0.1", "packet-ring"), (True, 2, "10.77.0.1", "packet-ring")],
    ids=["normal", "reverse", "P2", "ipv6", "ipv6-reverse", "packet-ring", "packet-ring-reverse-P2"])
def test_client_against_the_kernels_iperf3(ns, reverse, parallel, host, device):
    """misdtcp as the iperf3 client against a stock `iperf3 -s`: both sides'
    -J reports agree on the bytes sent and received (over IPv6 too)."""
    server = ns.popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        args = ["client", host, "-t", "1", "-J", "--workers", "2", "-P", str(parallel),
                "--device", device] + (["-R"] if reverse else [])
        deadline = time.monotonic() + 20
        while True:      # the server may not listen yet: refused is one sentence and exit 1
            rc, out, err = run_cli(*args, timeout=60, prefix=("ip", "netns", "exec", ns.name))
            if rc == 0 or "connection refused" not in err or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert rc == 0, err
        ours = json.loads(out)
        theirs = json.loads(server.communicate(timeout=30)[0])
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)
    assert "error" not in theirs, theirs.get("error")
    sent, received = ours["end"]["sum_sent"]["bytes"], ours["end"]["sum_received"]["bytes"]
    assert sent > 1 << 20
    if reverse:
        assert sent == theirs["end"]["sum_sent"]["bytes"]
        assert received == sent                      # read up to the end of stream the server made
        assert ours["start"]["test_start"]["reverse"] == 1
    else:
        assert received == theirs["end"]["sum_received"]["bytes"]
        # what we sent was acknowledged before TEST_END; the server's process
        # may not have read all of it from its socket buffer when it stopped
        rmem_max = int(ns.run(["sysctl", "-n", "net.ipv4.tcp_rmem"]).stdout.split()[2])
        assert sent - parallel * rmem_max <= received <= sent
    assert ours["start"]["connected"][0]["remote_host"] == host
    assert ours["start"]["connected"][0]["local_host"] == ("fd00:77::2" if ":" in host else "10.77.0.2")
    assert ours["intervals"] and len(ours["end"]["streams"]) == parallel
    assert [s["socket"] for s in ours["start"]["connected"]] == [1, 3][:parallel]
    assert theirs["start"]["test_start"]["num_streams"] == parallel


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,needle,code", [
    (["10.77.0.1", "-t", "0"], "--time must be positive", 2),
    (["10.77.0.1", "-P", "0"], "--parallel must be at least 1", 2),
    (["10.77.0.1", "-p", "99999"], "--port 99999 is outside 1..65535", 2),
    (["192.168.7.1"], "is not on the device's network 10.77.0.0/24", 2),
    (["fd00:99::1"], "is not on the device's network fd00:77::/64", 2),
    (["fd00:77::1", "--no-ipv6"], "fd00:77::1 is an IPv6 address, but --no-ipv6 was given", 2),
    (["fd00:77::1", "--device", "packet-ring"], "fd00:77::1 is an IPv6 address, but --device packet-ring "
                                                 "carries IPv4 only", 2),
    (["10.77.0.1", "--device", "packet-ring", "--address6", "fd00:77::2"],
     "--device packet-ring carries IPv4 only", 2),
    (["10.77.0.1", "-p", "5299", "-t", "1"], "cannot connect to the iperf3 server at 10.77.0.1 port 5299 "
                                             "(connection refused)", 1),
])
def test_client_errors_are_one_sentence(ns, args, needle, code):
    rc, out, err = run_cli("client", *args, prefix=("ip", "netns", "exec", ns.name))
    assert rc == code
    assert needle in one_sentence_error(err)


@pytest.mark.timeout(90)
def test_pcap_to_stdout_with_snaplen_in_time_order(ns, tmp_path):
    """--pcap - --pcap-snaplen 96: a capture on standard output (reports on
    standard error, as tcpdump -w - does), every record cut to 96 bytes,
    both directions, timestamps in order across the processes."""
    capture = tmp_path / "stdout.pcap"
    with open(capture, "wb") as sink:
        proc = ns.popen([*MISDTCP, "serve", "--app", "discard", "--workers", "2", "--pcap", "-",
                         "--pcap-snaplen", "96", "-i", "0"], stdout=sink, stderr=subprocess.PIPE, text=True)
        try:
            wait_listening(ns, 9)
            ns.run([sys.executable, "-c", (
                "import socket\n"
                "s = socket.create_connection(('10.77.0.2', 9))\n"
                "s.sendall(b'q' * 3000000)\n"
                "s.close()\n")], timeout=30)
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "serving discard" in err                  # the reports went to standard error
    from misdtcp.frameio.pcap import read_pcap
    records = list(read_pcap(capture))
    assert len(records) > 20
    stamps = [ts for ts, _, _ in records]
    assert stamps == sorted(stamps)
    assert all(len(data) <= 96 for _, data, _ in records)
    assert max(orig for _, _, orig in records) > 1500      # data frames were cut, not dropped
    # (the kernel's own IPv6 chatter on the dual-stack TUN -- router
    # solicitations, MLD reports -- is captured too, as tcpdump would)
    sources = {bytes(data[12:16]) for _, data, _ in records if data[0] >> 4 == 4}
    assert sources == {bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])}


@pytest.mark.timeout(60)
def test_killed_serve_leaves_no_stack_process(ns):
    """SIGKILL gives serve no chance to stop its sequencer and workers: they
    must end with it, not spin on."""
    proc = start_serve(ns, "--app", "discard", "--workers", "2", "--placement", "separate", "-i", "0")
    try:
        wait_listening(ns, 9)
        from misdtcp.testing.procfs import comm, descendants
        children = set(descendants(proc.pid))
        # the forker, and the sequencer and two workers it forked
        assert sorted(comm(p) for p in children) == ["misdtcp-forker", "misdtcp-seq", "misdtcp-w0", "misdtcp-w1"]
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if os.path.exists(f"/proc/{p}") and
                 open(f"/proc/{p}/stat").read().split(")")[1].split()[0] != "Z"}
        time.sleep(0.05)
    assert not alive
    proc.communicate(timeout=10)


@pytest.mark.timeout(240)
def test_demo_prints_rows_as_measured_and_writes_a_plot(tmp_path):
    """make demo's command, small: the kernel reference row comes while the
    demo is still running (rows are printed as measured), then misdtcp rows
    with their ratio, replay rows for both frame sizes with speedups against
    single, and the plot it names exists as a PNG."""
    require_netns()
    plot = tmp_path / "demo.png"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # as make demo runs it
    proc = subprocess.Popen([*MISDTCP, "demo", "--seconds", "1", "--max-workers", "1", "--replay-mib", "8",
                             "--plot", str(plot)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "misdtcp misd 1w offload" in line:
                assert proc.poll() is None        # printed while the rest is still being measured
                break
        rest, err = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    lines += rest.splitlines()
    assert proc.returncode == 0, (lines, err)
    text = "\n".join(lines)
    if shutil.which("iperf3"):
        kernel = next(l for l in lines if "Linux kernel over veth" in l)
        assert float(kernel.split()[4]) > 0 and "1.00x" in kernel
        assert "x  iperf3" in next(l for l in lines if "misdtcp misd 1w offload" in l)
        # the same over IPv6, against IPv4's row of the run
        six = next(l for l in lines if "misdtcp misd 1w offload IPv6" in l)
        assert float(six.split()[5]) > 0 and "x  iperf3, " in six and six.endswith("x IPv4")
    for frames in ("64 KiB GSO", "1448 B"):
        rows = [l for l in lines if l.strip().startswith(frames)]
        assert any("single" in r and "1.00x" in r for r in rows)
        assert any("misd 1" in r for r in rows)
    assert f"Plot written to {plot}" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
def test_bind_and_interval_zero(ns):
    """-B sets the stack's address; -i 0 turns interval lines off (the
    summary at the end stays, as iperf3's)."""
    proc = start_serve(ns, "--app", "discard", "-B", "10.77.0.5", "-i", "0", "-J")
    try:
        deadline = time.monotonic() + 10
        while True:
            probe = ns.run([sys.executable, "-c", (
                "import socket\n"
                "s = socket.create_connection(('10.77.0.5', 9), timeout=1)\n"
                "s.sendall(b'z' * 2000000)\n"
                "s.close()\n")], check=False)
            if probe.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert probe.returncode == 0
    finally:
        time.sleep(1.2)                     # past the default interval: -i 0 must print none
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r for r in records if r["event"] == "closed" and r["bytes"] == 2000000]
    assert not [r for r in records if r["event"] == "interval"]
    summary = [r for r in records if r["event"] == "summary"]
    assert len(summary) == 1 and summary[0]["bytes_received"] >= 2000000
    assert 0 < summary[0]["active_seconds"] < 1.5 and summary[0]["gbps"] > 0   # over the active time only


@pytest.mark.timeout(120)
@pytest.mark.parametrize("every", [0, 4])
def test_serve_check_every_turns_the_replica_digest_check_on(ns, every):
    extra = ["--check-every", str(every)] if every else []
    serve = Serve(ns, "--app", "discard", "--workers", "2", "--json", "--interval", "5", *extra)
    try:
        serve.serving()
        ns.run([sys.executable, "-c", (
            "import os, socket\n"
            "s = socket.create_connection(('10.77.0.2', 9))\n"
            "s.sendall(os.urandom(4 << 20))\n"
            "s.close()\n")])
        serve.read_until(json_event("closed"))
    finally:
        rc, err = serve.end(signal.SIGTERM, timeout=60)     # a loaded machine: the summary takes its time
    assert rc == 0, err
    summary = serve.records("summary")
    assert len(summary) == 1
    if every:
        assert summary[0]["checked_rounds"] > 10
    else:
        assert summary[0]["checked_rounds"] == 0


@pytest.mark.timeout(60)
def test_serve_reports_a_recovered_worker(ns):
    """An operator learns of a replaced worker: a JSON record (a stderr line
    without --json), and serve goes on serving."""
    from misdtcp.testing.procfs import descendants, comm
    serve = Serve(ns, "--app", "discard", "--workers", "2", "--placement", "separate", "--json")
    try:
        serve.serving()
        victim = next(pid for pid in descendants(serve.proc.pid) if comm(pid) == "misdtcp-w1")
        os.kill(victim, signal.SIGKILL)
        record = json.loads(serve.read_until(json_event("recovered")))
        ns.run([sys.executable, "-c", (
            "import socket\n"
            "s = socket.create_connection(('10.77.0.2', 9))\n"
            "s.sendall(b'after')\n"
            "s.close()\n")])
        closed = json.loads(serve.read_until(json_event("closed")))
    finally:
        rc, err = serve.end(signal.SIGTERM)
    assert (record["role"], record["pid"], record["how"]) == ("worker 1", victim, "signal 9")
    assert record["replaced_by"] != victim and record["from_position"] >= 0
    assert closed["bytes"] == 5
    assert rc == 0, err


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
def test_serve_on_a_packet_ring_reports_answers_ss_and_leaves_nothing(ns, tmp_path):
    """--device packet-ring: serving says so, `misdtcp ss --veth` finds it,
    an iperf3 -R test runs, the summary counts the ring's drops, the capture
    has both directions, and SIGINT removes the veth pair and its ingress
    drop."""
    pcap = tmp_path / "ring.pcap"
    serve = Serve(ns, "--device", "packet-ring", "--workers", "2", "-i", "0.5", "--json", "--pcap", str(pcap))
    try:
        serving = json.loads(serve.read_until(json_event("serving")))
        assert serving["device"] == "packet-ring"
        rc, out, err = misdtcp_ss(ns, "--veth", "misd0", "--json")
        assert rc == 0, err
        assert json.loads(out)["listening"] == [{"address": "10.77.0.2", "port": 5201}]
        client = ns.run(["iperf3", "-c", "10.77.0.2", "-t", "2", "-J", "-R"], check=False, timeout=60)
        assert client.returncode == 0, client.stdout
        assert json.loads(client.stdout)["end"]["sum_received"]["bytes"] > 1 << 20
    finally:
        rc, err = serve.end(signal.SIGINT)
    assert rc == 0, err
    summary = serve.records("summary")
    assert len(summary) == 1 and summary[0]["ring_drops"] == 0
    assert sum(summary[0]["segments_sent"]) > 100
    # the veth pair it created is gone, and so is its ingress drop
    assert ns.run(["ip", "link", "show", "misd0"], check=False).returncode != 0
    assert ns.run(["ip", "link", "show", "misd0s"], check=False).returncode != 0
    assert "misdtcp" not in ns.run(["nft", "list", "tables"]).stdout.decode()
    # the capture is the TUN's format (IP packets), both directions
    from misdtcp.frameio.pcap import read_pcap
    records = list(read_pcap(pcap))
    sources = {bytes(data[12:16]) for _, data, _ in records}
    assert sources == {bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])}
    flags = {data[33] & 0x12 for _, data, _ in records if data[9] == 6}
    assert 0x02 in flags and 0x12 in flags                # the SYN and the SYN-ACK


@pytest.mark.timeout(30)
def test_half_a_veth_pair_is_a_clear_error(ns):
    ns.ip("link", "add", "misd0", "type", "veth", "peer", "name", "elsewhere")
    rc, out, err = run_cli("serve", "--device", "packet-ring", prefix=("ip", "netns", "exec", ns.name))
    assert rc == 2
    assert "misd0 exists but its partner misd0s does not" in one_sentence_error(err)


@pytest.mark.timeout(60)
def test_busy_packet_ring_is_a_clear_error_and_leaves_the_first_serving(ns):
    first = Serve(ns, "--device", "packet-ring", "--app", "discard", "-i", "0", "--json")
    try:
        first.read_until(json_event("serving"))
        rc, out, err = run_cli("serve", "--device", "packet-ring", "--app", "discard",
                               prefix=("ip", "netns", "exec", ns.name))
        assert rc == 2
        message = one_sentence_error(err)
        assert "misd0s" in message and "busy" in message.lower(), message
        # the first still receives: its ingress drop and its ring are intact
        ns.run([sys.executable, "-c", (
            "import socket\n"
            "s = socket.create_connection(('10.77.0.2', 9), timeout=10)\n"
            "s.sendall(b'z' * 100000)\n"
            "s.close()\n")], timeout=30)
        closed = json.loads(first.read_until(json_event("closed")))
        assert closed["bytes"] == 100000
    finally:
        rc, err = first.end(signal.SIGINT)
    assert rc == 0, err
