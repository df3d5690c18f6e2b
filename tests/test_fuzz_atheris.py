"""Coverage-guided fuzzing of the TCP core (atheris), short run for CI.

* every seed of fuzz/corpus/ replays cleanly through the oracle (no atheris
  needed), and the corpus is exactly what fuzz/make_corpus.py writes;
* a short atheris run (MISDTCP_ATHERIS_SECONDS, default 20 s) from that
  corpus finds nothing.  Skipped when atheris is not importable.

The long run is a documented command in fuzz/README.md.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FUZZ = os.path.join(ROOT, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
sys.path.insert(0, FUZZ)

SECONDS = int(os.environ.get("MISDTCP_ATHERIS_SECONDS", "20"))


def _corpus():
    return sorted(os.listdir(CORPUS))


def test_corpus_is_there():
    assert len(_corpus()) >= 30


@pytest.mark.parametrize("name", _corpus())
def test_seed_replays_cleanly(name):
    import fuzz_core
    with open(os.path.join(CORPUS, name), "rb") as f:
        fuzz_core.run_one(f.read())


def test_encode_decode_round_trip():
    import fuzz_core
    import make_corpus
    for script in make_corpus.seeds():
        assert fuzz_core.decode(fuzz_core.encode(script)) == script


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_short_atheris_run_finds_nothing(tmp_path):
    # libFuzzer writes new inputs into the first corpus directory: give it a
    # scratch one, with the seeds as a second (read-only) directory.
    work = tmp_path / "corpus"
    work.mkdir()
    cmd = [sys.executable, os.path.join(FUZZ, "fuzz_core.py"), str(work), CORPUS,
           f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=8192",
           f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 120, cwd=ROOT)
    tail = (p.stdout + p.stderr)[-4000:]
    assert p.returncode == 0, tail
    assert "stat::number_of_executed_units" in tail, tail
    crashes = [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "timeout-", "oom-", "leak-"))]
    assert not crashes, tail
