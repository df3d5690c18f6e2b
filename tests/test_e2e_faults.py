"""Transfers through a faulty link: drop 1 %, reorder 1 %, duplicate 0.5 %,
corrupt 0.1 % injected in misdtcp's device layer (both directions), and 1 %
loss stack -> kernel by nftables.  Every byte must arrive intact."""
import hashlib
import json
import subprocess

import pytest

from misdtcp.testing.lab import NftLoss
from netns_helpers import finish
from stack_helpers import STACK_ADDR, serving, wait_for
from test_e2e_transfer import ECHO_CLIENTS, SENDER

pytestmark = pytest.mark.netns

FAULTS = dict(drop=0.01, reorder=0.01, duplicate=0.005, corrupt=0.001, seed=42)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("placement", ["inline", "separate"])
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_to_stack_through_faults_sha256_matches(workers, placement):
    total = 64 << 20
    reports = []
    with serving("discard", workers=workers, reports=reports, faults=FAULTS, placement=placement) as (ns, stack):
        with NftLoss(ns, "misd0", 1, direction="ingress"):
            proc = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=9), str(total)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            rc, out, err = finish(proc, timeout=240)
        assert rc == 0, err
        sent, digest = out.split()
        assert wait_for(lambda: reports, timeout=30)
        assert reports[0]["bytes"] == total
        assert reports[0]["sha256"] == digest
        stats, drops = stack.core_stats()
        # the injected corruption was caught by checksums, not delivered
        assert drops.get("tcp_checksum", 0) + drops.get("ip_checksum", 0) > 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("placement", ["inline", "separate"])
def test_echo_both_directions_through_faults(placement):
    with serving("echo", workers=2, faults=FAULTS, placement=placement) as (ns, stack):
        with NftLoss(ns, "misd0", 1, direction="ingress") as loss:
            proc = ns.python(["-c", "import json\n" + ECHO_CLIENTS.format(addr=STACK_ADDR), "8", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            rc, out, err = finish(proc, timeout=240)
            lost = loss.dropped()
        assert rc == 0, err
        result = json.loads(out)
        assert result["errors"] == []
        stats, _ = stack.core_stats(fresh=True)        # published after the last segment
        # the stack really had to recover from loss on its sending side
        assert stats["retransmits"] > 0 or lost == 0
