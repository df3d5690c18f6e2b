"""Hypothesis profiles: CI is derandomised, exploring is a separate run.

* ``ci`` (``make test``: ``--hypothesis-profile=ci``): every property test
  draws the same examples on every run, so CI is green or red for the code,
  not for the luck of the draw; no example database, and a failure prints
  the blob that reproduces it;
* ``explore`` (``make explore``): random draws, the example database kept,
  and ``MISDTCP_EXAMPLES_SCALE`` (default 20) times the examples of each
  test -- the run that looks for new bugs;
* ``dev`` (the default for a bare ``pytest``): random draws, no deadline.

Tests write ``max_examples=examples(N)``: N in CI, N times the scale when
exploring.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = int(os.environ.get("MISDTCP_EXAMPLES_SCALE", "1"))

settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def examples(n: int) -> int:
    """`n` examples, scaled up for an exploring run."""
    return n * SCALE
