"""The benchmark programs' --quick modes run and write well-formed JSON.

Benchmarks are programs, not tests: nothing here asserts a speed, only that
`bench/scaling.py --quick`, `bench/model.py` and `bench/e2e.py --quick` finish
and that their JSON carries the keys the issues ask for.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from netns_helpers import netns_unavailable_reason

pytestmark = pytest.mark.slow        # the benchmarks run for real, if briefly
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")


def _run(args, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.mark.timeout(120)
def test_scaling_quick_writes_records_and_model_reads_them(tmp_path):
    out = tmp_path / "scaling.json"
    proc = _run([os.path.join(BENCH, "scaling.py"), "--quick", "--json", str(out)], timeout=110)
    assert "speedup" in proc.stdout
    records = json.loads(out.read_text())
    assert isinstance(records, list) and records
    timed = [r for r in records if r["gbps"] is not None]
    for r in timed:
        for key in ("strategy", "workers", "frames", "stripe", "gbps", "speedup"):
            assert key in r, f"record without {key!r}: {r}"
        assert r["strategy"] in ("single", "misd", "mimd", "leader", "copy-only")
        assert r["frames"] in ("gso", "mtu")
        assert r["gbps"] > 0
        assert r["verified"] is True          # the untimed pass checked every delivered byte
    assert {r["strategy"] for r in timed} == {"single", "misd", "mimd", "leader", "copy-only"}
    assert {r["frames"] for r in records} == {"gso", "mtu"}
    for mode in ("gso", "mtu"):
        (rep,) = [r for r in records if r["strategy"] == "rep-only" and r["frames"] == mode]
        assert rep["rep_ns_per_frame"] > 0 and rep["rep_ns_per_descriptor"] > 0
        (seq,) = [r for r in records if r["strategy"] == "sequencer" and r["frames"] == mode]
        assert seq["ns_per_frame_whole"] > 0 and seq["ns_per_frame_descriptors"] > 0
    misd2 = [r for r in timed if r["strategy"] == "misd" and r["workers"] == 2]
    assert misd2 and all(r["ceiling"] > 0 and r["against_ceiling"] > 0 for r in misd2)

    model = tmp_path / "model.json"
    _run([os.path.join(BENCH, "model.py"), "--from", str(out), "--json", str(model)], timeout=60)
    fitted = json.loads(model.read_text())
    assert {p["frames"] for p in fitted["predictions"]} == {"gso", "mtu"}
    assert {p["strategy"] for p in fitted["predictions"]} == {"misd", "leader", "mimd"}
    assert {p["bandwidth"] for p in fitted["predictions"]} == {"grows", "capped"}
    assert max(p["workers"] for p in fitted["predictions"]) == 16
    assert fitted["checks"]


@pytest.mark.timeout(480)
@pytest.mark.netns
def test_e2e_quick_writes_records(tmp_path):
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    out = tmp_path / "e2e.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, os.path.join(BENCH, "e2e.py"), "--quick", "--devices", "tun,packet-ring",
                             "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # every variant must have produced a number: exit status 1 (a variant failed) is a failure
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    records = json.loads(out.read_text())
    assert records
    for r in records:
        for key in ("mode", "receiver", "device", "offload", "strategy", "workers", "placement", "gbps",
                    "ratio_to_kernel", "client_cpu", "server_cpu", "gbps_per_server_cpu"):
            assert key in r, f"record without {key!r}: {r}"
        assert r["gbps"] and r["gbps"] > 0, f"no throughput for {r}"
    assert records[0]["receiver"] == "kernel" and records[0]["device"] == "veth"
    assert {r["device"] for r in records if r["receiver"] == "misdtcp"} == {"tun", "packet-ring"}
    # the packet ring's own counter: frames the kernel dropped for want of a free slot
    assert all(r["ring_drops"] is not None for r in records if r["device"] == "packet-ring")
    assert {r["strategy"] for r in records if r["receiver"] == "misdtcp"} >= {"single", "misd"}
    assert {r["mode"] for r in records} == {"forward", "reverse", "bidir"}
    # the live sequencer's cost per frame comes from serve's own summary
    assert any(r["sequencer_ns_per_frame"] for r in records if r["strategy"] == "misd" and r["runs"])
    # its namespaces carry its PID: none is left behind
    mine = f"misdtcp-bench-{proc.pid}-"
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(mine)], "e2e.py left a namespace behind"


@pytest.mark.timeout(120)
@pytest.mark.netns
def test_tun_ceiling_quick_measures_one_reader(tmp_path):
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "tun.json"
    _run([os.path.join(BENCH, "tun_ceiling.py"), "--quick", "--json", str(out)], timeout=100)
    record = json.loads(out.read_text())[0]
    run = record["runs"][0]
    # the reader saw the kernel's datagrams, each one 1500-byte frame
    assert record["frames_per_s"] > 1000 and record["gbps"] > 0
    assert abs(record["gbps"] * 1e9 / 8 / record["frames_per_s"] - 1500) < 1
    assert run["sent_per_s"] >= record["frames_per_s"] * 0.9
