#!/usr/bin/env python3
"""What readiness costs the bulk receive path (docs/DESIGN.md, "Readiness").

Workers note which connections they published progress for and, once per
batch, fence and look at the armed-interest words of those connections.
This replays one connection under misd with that work on and off, the two
interleaved in the same run, and prints on/off as a ratio per frame size.
With no application armed (a bulk transfer that nobody waits on with
select) the check finds nothing to post, which is the case that must not
cost throughput.

    .venv/bin/python bench/readiness.py --workers 2 --mib 128 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import sys

from misdtcp.runtime.replay import ReplayConfig, build_log
from misdtcp.runtime.replay_run import run_log


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mib", type=int, default=128, help="MiB per run [128]")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--modes", default="gso,mtu")
    args = p.parse_args(argv)
    total = args.mib << 20
    print(f"misd {args.workers} workers, {args.mib} MiB per run, {args.repeats} repeats, on/off interleaved")
    print(f"{'frames':>6} {'on Gbit/s':>10} {'off Gbit/s':>11} {'on/off':>8}  (paired ratios min..max)")
    for mode in args.modes.split(","):
        log = build_log(ReplayConfig(total_bytes=total, mode=mode), dict(secret=3, rcvbuf=4 << 20))
        try:
            on, off, ratios = [], [], []
            for i in range(args.repeats):
                pair = {}
                for state in ((True, False) if i % 2 == 0 else (False, True)):
                    r = run_log(log, strategy="misd", workers=args.workers, readiness=state)
                    if r.delivered != total:
                        raise SystemExit(f"delivered {r.delivered} of {total} bytes")
                    pair[state] = r.gbps
                on.append(pair[True])
                off.append(pair[False])
                ratios.append(pair[True] / pair[False])
        finally:
            log.close()
        print(f"{mode:>6} {statistics.median(on):10.2f} {statistics.median(off):11.2f} "
              f"{statistics.median(ratios):7.3f}x  ({min(ratios):.3f}..{max(ratios):.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
