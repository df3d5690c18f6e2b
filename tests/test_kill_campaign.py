"""The kill campaign sized for CI (misdtcp.testing.kill_campaign): seeded
rounds of 1, 2 and 3 workers, each SIGKILLing random workers at random
moments and SIGSTOPping one, over transfers through injected faults; every
stream byte-exact and nothing left behind.  tools/kill_campaign.py runs the
long version."""
import pytest

from misdtcp.testing.kill_campaign import run_round
from netns_helpers import require_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed,workers", [(11, 1), (12, 2), (13, 3), (14, 3)])
def test_kill_campaign_round(seed, workers):
    require_netns()
    result = run_round(seed, workers, total=32 << 20, connections=2, kills=2, stop_one=True)
    assert result.ok, result.summary()
    assert len(result.actions) >= 3 and result.recoveries == len(result.actions)
    assert {name for _, name, _, _ in result.actions} == {"SIGKILL", "SIGSTOP"}
