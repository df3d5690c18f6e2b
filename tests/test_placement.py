"""Placement of the runtime's processes (runtime/placement.py)."""
import pytest

from misdtcp.runtime.placement import PlacementError, place


def test_auto_runs_replica_0_inline_when_the_workers_take_every_cpu():
    p = place("auto", workers=2, cpus=[4, 7], replicated=True)
    assert p.inline and p.name == "inline"
    assert p.worker_cpus == (4, 7) and p.sequencer_cpu == 4
    assert p.processes(2) == 2


def test_auto_gives_the_sequencer_a_free_cpu_when_there_is_one():
    p = place("auto", workers=1, cpus=[4, 7], replicated=True)
    assert not p.inline and p.name == "separate"
    assert p.worker_cpus == (4,) and p.sequencer_cpu == 7
    assert p.processes(1) == 2


def test_separate_with_every_cpu_taken_shares_the_last_workers_cpu():
    p = place("separate", workers=3, cpus=[0, 1], replicated=True)
    assert p.worker_cpus == (0, 1, 0) and p.sequencer_cpu == 0


def test_a_strategy_without_replicas_is_never_inline():
    assert not place("auto", workers=2, cpus=[0, 1], replicated=False).inline
    with pytest.raises(PlacementError, match="only the misd strategy"):
        place("inline", workers=2, cpus=[0, 1], replicated=False)


def test_an_unknown_placement_is_one_sentence():
    with pytest.raises(PlacementError, match="placement 'beside' is not one of auto, inline, separate"):
        place("beside", workers=1, cpus=[0], replicated=True)
