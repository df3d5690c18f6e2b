"""`misdtcp serve` as people run it: inside a namespace, with the stock
iperf3 client, interval reports, --json, --pcap, a clean exit on SIGINT, and
one-sentence errors with exit status 2."""
import json
import os
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
    n = Netns().create()
    n.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
    n.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
    try:
        yield n
    finally:
        n.delete()


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


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
def test_serve_iperf3_reports_and_exits_cleanly_on_sigint(ns, tmp_path):
    pcap = tmp_path / "both.pcap"
    proc = start_serve(ns, "--workers", "2", "--interval", "0.5", "--json", "--pcap", str(pcap))
    try:
        wait_listening(ns, 5201)
        client = ns.run(["iperf3", "-c", "10.77.0.2", "-t", "2", "-J"], check=False, timeout=60)
        assert client.returncode == 0
        assert json.loads(client.stdout)["end"]["sum_received"]["bytes"] > 0
        time.sleep(0.6)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    intervals = [r for r in records if r.get("event") == "interval"]
    summary = [r for r in records if r.get("event") == "summary"]
    assert intervals and len(summary) == 1
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
def test_serve_discard_json_reports_each_connection(ns):
    proc = start_serve(ns, "--app", "discard", "--json", "--interval", "5")
    try:
        wait_listening(ns, 9)
        ns.run([sys.executable, "-c", (
            "import socket\n"
            "s = socket.create_connection(('10.77.0.2', 9))\n"
            "s.sendall(b'hello world')\n"
            "s.close()\n")])
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    closed = [r for r in records if r.get("event") == "closed"]
    probe_and_hello = [r for r in closed if r["bytes"] == 11]
    assert probe_and_hello and probe_and_hello[0]["sha256"] == \
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args,needle", [
    (["--address", "10.77.0.300"], "is not an IPv4 address"),
    (["--address", "192.168.1.2"], "outside the kernel side's network"),
    (["--address", "10.77.0.1"], "kernel side's own address"),
    (["--kernel-address", "nonsense"], "is not an IPv4 address/prefix"),
    (["--workers", "3", "--cpus", "0,1"], "3 workers need at least 3 CPUs"),
    (["--cpus", "0,999"], "CPU 999 is not available"),
    (["--drop-rate", "2"], "between 0 and 1"),
    (["--app", "gopher"], "invalid choice"),
    (["--strategy", "mimd", "--placement", "inline"], "only the misd strategy can run replica 0"),
])
def test_bad_arguments_are_one_sentence_and_exit_2(ns, args, needle):
    rc, out, err = run_cli("serve", *args, prefix=("ip", "netns", "exec", ns.name))
    assert rc == 2
    assert needle in one_sentence_error(err)


@pytest.mark.timeout(30)
def test_not_root_is_a_clear_error(ns):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    rc, out, err = run_cli("serve", prefix=("ip", "netns", "exec", ns.name, "setpriv", "--reuid=65534",
                                            "--regid=65534", "--clear-groups"))
    assert rc == 2
    assert "needs root" in one_sentence_error(err)


@pytest.mark.timeout(30)
def test_missing_dev_net_tun_is_a_clear_error(ns):
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    script = f"mount -t tmpfs none /dev/net && exec {' '.join(MISDTCP)} serve"
    proc = subprocess.run(["ip", "netns", "exec", ns.name, "unshare", "-m", "sh", "-c", script],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert "/dev/net/tun does not exist" in one_sentence_error(proc.stderr)


@pytest.mark.timeout(60)
def test_busy_device_is_a_clear_error(ns):
    first = start_serve(ns, "--app", "discard")
    try:
        wait_listening(ns, 9)
        rc, out, err = run_cli("serve", "--app", "discard", prefix=("ip", "netns", "exec", ns.name))
        assert rc == 2
        one_sentence_error(err)
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=20)
