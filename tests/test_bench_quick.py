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


@pytest.mark.timeout(120)
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
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "e2e.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=110, cwd=REPO, env=env)
    # exit 1 means some variant failed to produce a number; the JSON must still be whole
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads(out.read_text())
    assert records
    for r in records:
        for key in ("receiver", "offload", "strategy", "workers", "gbps", "ratio_to_kernel"):
            assert key in r, f"record without {key!r}: {r}"
    assert records[0]["receiver"] == "kernel"
    assert any(r["receiver"] == "misdtcp" for r in records)
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith("misdtcp-bench-")], "e2e.py left a namespace behind"
