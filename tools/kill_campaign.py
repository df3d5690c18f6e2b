#!/usr/bin/env python3
"""Kill campaign: SIGKILL random workers at random moments and SIGSTOP one,
over transfers through injected faults, round after round; every stream
must arrive byte-exact and nothing may be left behind.

    sudo .venv/bin/python tools/kill_campaign.py --rounds 200 --seed 1
    sudo .venv/bin/python tools/kill_campaign.py --minutes 30 --workers 3 --kills 5 --mib 96

Round i uses seed `--seed + i` and cycles through `--workers` (default
1,2,3); each creates and deletes its own network namespace
(misdtcp.testing.kill_campaign explains a round).  One line per round; the
last line counts the failures, and the exit status is 1 if any round failed
(rerun one with `--seed N --rounds 1 --workers W`).  Not part of the test
suite: tests/test_kill_campaign.py runs a few rounds sized for CI.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from misdtcp.testing.kill_campaign import run_round  # noqa: E402


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,2,3") from None
    if not counts or any(not 1 <= c <= 16 for c in counts):
        raise argparse.ArgumentTypeError("worker counts must be between 1 and 16")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds to run [30]")
    parser.add_argument("--minutes", type=float, default=0.0, help="or: run rounds until this much time passed")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first round [1]")
    parser.add_argument("--workers", type=worker_counts, default=[1, 2, 3], help="worker counts to cycle [1,2,3]")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per round [3]")
    parser.add_argument("--no-stop", action="store_true", help="no SIGSTOP per round")
    parser.add_argument("--no-faults", action="store_true", help="no injected faults")
    parser.add_argument("--mib", type=int, default=48, help="MiB sent per round [48]")
    parser.add_argument("--connections", type=int, default=3, help="streams per round, one after another [3]")
    parser.add_argument("--json", help="write every round's result to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("kill_campaign: needs root (network namespaces and TUN devices)", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.kills < 0 or args.mib < 1 or args.connections < 1:
        print("kill_campaign: --rounds, --mib and --connections must be positive, --kills not negative",
              file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    results = []
    i = 0
    while (deadline is None and i < args.rounds) or (deadline is not None and time.monotonic() < deadline):
        workers = args.workers[i % len(args.workers)]
        result = run_round(args.seed + i, workers, total=args.mib << 20, connections=args.connections,
                           kills=args.kills, stop_one=not args.no_stop, faults=not args.no_faults)
        print(result.summary(), flush=True)
        results.append(result)
        i += 1
    failed = [r for r in results if not r.ok]
    print(f"{len(results)} rounds, {sum(len(r.actions) for r in results)} kills and stops, "
          f"{sum(r.recoveries for r in results)} recoveries, {len(failed)} failed"
          + (f" (seeds {', '.join(str(r.seed) for r in failed)})" if failed else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**vars(r), "ok": r.ok} for r in results], f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
