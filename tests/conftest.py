import os
import sys

# Tests import helper modules that sit beside them (harness, netns_helpers).
sys.path.insert(0, os.path.dirname(__file__))

# Hypothesis profiles (ci, explore, dev): registered before any test module loads.
import hypothesis_profiles  # noqa: E402,F401

# Network-namespace fixtures (device tests, end-to-end tests).
from netns_helpers import netns, reap_stale_netns, tun_netns  # noqa: E402,F401
