#!/usr/bin/env python3
"""A cost model of replay scaling, fitted on this machine, predicting N = 1..16.

Inputs, all measured (by bench/scaling.py, whose JSON this reads, or by a
short scaling run this program starts when no JSON is given):

  F    frames in the log (per mode)
  r    replicated cost per frame: the `rep-only` pass (a single process over
       the same log owning no outputs) / F.  Every worker pays it.
  o    owned cost per frame: (T_single - T_rep) / F: payload copies plus ACK
       building, done once in total and split N ways under misd.
  h    misd ring cost per frame and worker: (busy time of misd with 1 worker
       - T_single) / F: cursors, batching, the release of ring space.
  l    mimd handoff per frame: from mimd with 2 workers, assuming its time is
       the serialised part F * (r + l) (the lock is taken in log order, so the
       shared TCB and the ticket line move between cores on every record).
  B1, B2   memcpy bandwidth with 1 and 2 processes (the owned copies are
       memory-bound: scaling.py measures both).

Model (T = time for the whole log; speedup = T_single / T):

  T_single    = F * (r + o)
  T_misd(N)   = F * (r + h) + F * o / N * m(N)
  T_mimd(N)   = F * max(r + l, (r + l + o) / N)          (N >= 2; mimd 1 = single + h)
  m(N)        = max(1, N * B1 / Bmax): the owned copies slow down once N
                workers together ask for more than the memory system gives.
                Bmax defaults to B2 * (1 + growth * (N - 2)) with growth 0
                (pessimistic: no more bandwidth than 2 processes got here);
                --bandwidth-growth 1 means perfectly scaling bandwidth.

Assumptions: one worker per core (no oversubscription); no sequencer process
(the replay log is in memory, the NIC-DMA model; with a live TUN the
sequencer's read() per frame is a serial term of its own, --sequencer-ns
adds it as a floor T >= F * s_seq); r, o, h and l do not depend on N except
through m(N) (in reality r grows a little with N: the stripe loop visits more
pieces, and cache lines of the ring headers are shared by more readers); l
is independent of N for mimd (optimistic for mimd: a ticket lock's handoff
gets worse with more waiters).

    .venv/bin/python bench/model.py --from bench/results/scaling.json --plot bench/plots/model.png
    .venv/bin/python bench/model.py --quick
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", help="scaling.py JSON to fit on (else run scaling.py --quick)")
    p.add_argument("--max-workers", type=int, default=16)
    p.add_argument("--bandwidth-growth", type=float, default=0.0,
                   help="extra memory bandwidth per worker beyond 2, as a fraction of the 2-process gain [0]")
    p.add_argument("--sequencer-ns", type=float, default=0.0,
                   help="serial sequencer cost per frame (live TUN: ~2000 ns per read) [0: replay]")
    p.add_argument("--quick", action="store_true", help="fit on a quick scaling run")
    p.add_argument("--json", help="write parameters, predictions and checks here")
    p.add_argument("--plot", help="write predicted speedup vs workers to this PNG")
    return p.parse_args(argv)


def load_records(args):
    if args.source:
        with open(args.source) as f:
            return json.load(f)
    import scaling
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scaling.json")
        argv = ["--json", path, "--memcpy", "--no-verify"] + (["--quick"] if args.quick else [])
        scaling.main(argv)
        with open(path) as f:
            return json.load(f)


def fit(records, mode):
    rs = [r for r in records if r["frames"] == mode and not r.get("loss") and not r.get("reorder")]
    if not rs:
        return None
    single = next(r for r in rs if r["strategy"] == "single")
    F = single["frame_count"]
    t_single = single["single_ms"] * 1e6                    # ns
    t_rep = single["replicated_ms"] * 1e6 if single.get("replicated_ms") else None
    if t_rep is None:
        raise SystemExit("the scaling JSON has no replicated/owned split: run scaling.py without --no-split")
    r = t_rep / F
    o = (t_single - t_rep) / F
    misd1 = next((x for x in rs if x["strategy"] == "misd" and x["workers"] == 1), None)
    h = max(0.0, (misd1["worker_busy_ms"] * 1e6 - t_single) / F) if misd1 else 0.0
    mimd2 = next((x for x in rs if x["strategy"] == "mimd" and x["workers"] == 2), None)
    l = max(0.0, mimd2["elapsed_ms"] * 1e6 / F - r) if mimd2 else None
    b1, b2 = single.get("memcpy_gbs_1"), single.get("memcpy_gbs_2")
    return dict(mode=mode, frames=F, bytes=single["bytes"], r_ns=r, o_ns=o, h_ns=h, l_ns=l,
                memcpy_gbs_1=b1, memcpy_gbs_2=b2, t_single_ms=t_single / 1e6, measured=rs)


def predict(p, n, strategy, growth=0.0, seq_ns=0.0):
    F, r, o, h, l = p["frames"], p["r_ns"], p["o_ns"], p["h_ns"], p["l_ns"]
    t_single = F * (r + o)
    if strategy == "misd":
        m = 1.0
        if p["memcpy_gbs_1"] and p["memcpy_gbs_2"] and n > 1:
            b1, b2 = p["memcpy_gbs_1"], p["memcpy_gbs_2"]
            bmax = max(b1, b2 + growth * (b2 - b1) * (n - 2))
            m = max(1.0, n * b1 / bmax)
        t = F * (r + h) + F * o / n * m
    else:
        if n == 1 or l is None:
            t = F * (r + o + h)
        else:
            t = F * max(r + l, (r + l + o) / n)
    t = max(t, F * seq_ns)
    return t_single / t


def main(argv=None):
    args = parse_args(argv)
    records = load_records(args)
    out = dict(params=[], predictions=[], checks=[])
    fits = [f for f in (fit(records, m) for m in ("gso", "mtu")) if f]
    ns = list(range(1, args.max_workers + 1))
    print("cost model (per frame, fitted on this machine's scaling run)")
    common.print_table(fits, [
        ("frames", "mode"), ("F", "frames"),
        ("r repl. ns", lambda p: f"{p['r_ns']:.0f}"), ("o owned ns", lambda p: f"{p['o_ns']:.0f}"),
        ("h ring ns", lambda p: f"{p['h_ns']:.0f}"),
        ("l mimd ns", lambda p: f"{p['l_ns']:.0f}" if p["l_ns"] is not None else "-"),
        ("serial s", lambda p: f"{p['r_ns'] / (p['r_ns'] + p['o_ns']):.3f}"),
        ("memcpy 1/2 GB/s", lambda p: f"{p['memcpy_gbs_1']:.1f}/{p['memcpy_gbs_2']:.1f}"
         if p["memcpy_gbs_1"] else "-"),
    ])
    print()
    print("predicted speedup vs single (misd | mimd)")
    header = [("N", "n")]
    rows = []
    for n in ns:
        row = dict(n=n)
        for p in fits:
            for s in ("misd", "mimd"):
                v = predict(p, n, s, args.bandwidth_growth, args.sequencer_ns)
                row[f"{p['mode']}-{s}"] = f"{v:.2f}"
                out["predictions"].append(dict(frames=p["mode"], strategy=s, workers=n, speedup=v,
                                               bandwidth_growth=args.bandwidth_growth,
                                               sequencer_ns=args.sequencer_ns))
        rows.append(row)
    for p in fits:
        for s in ("misd", "mimd"):
            header.append((f"{p['mode']} {s}", f"{p['mode']}-{s}"))
    common.print_table(rows, header)
    print()
    print("check against the measured points (paired speedup, median (min..max))")
    checks = []
    for p in fits:
        for m in p["measured"]:
            if m["strategy"] == "single":
                continue
            pred = predict(p, m["workers"], m["strategy"], args.bandwidth_growth, 0.0)
            checks.append(dict(frames=p["mode"], strategy=m["strategy"], workers=m["workers"],
                               stripe=m["stripe"], measured=m["speedup_paired"], lo=m["speedup_min"],
                               hi=m["speedup_max"], predicted=pred,
                               error=(pred - m["speedup_paired"]) / m["speedup_paired"]))
    common.print_table(checks, [
        ("frames", "frames"), ("strategy", "strategy"), ("N", "workers"),
        ("measured", lambda c: f"{c['measured']:.2f} ({c['lo']:.2f}..{c['hi']:.2f})"),
        ("model", lambda c: f"{c['predicted']:.2f}"), ("error", lambda c: f"{100 * c['error']:+.0f}%"),
    ])
    out["checks"] = checks
    out["params"] = [{k: v for k, v in p.items() if k != "measured"} for p in fits]
    if args.json:
        common.write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.plot:
        plt = common.pyplot()
        fig, axes = plt.subplots(1, len(fits), figsize=(5.5 * len(fits), 4.2), squeeze=False)
        for ax, p in zip(axes[0], fits):
            ax.plot(ns, ns, "k:", label="ideal")
            s = p["r_ns"] / (p["r_ns"] + p["o_ns"])
            ax.plot(ns, [1 / (s + (1 - s) / n) for n in ns], "g--", label=f"Amdahl s={s:.2f}")
            for strat, style in (("misd", "-"), ("mimd", "-")):
                ax.plot(ns, [predict(p, n, strat, args.bandwidth_growth, args.sequencer_ns) for n in ns],
                        style, label=f"{strat} model (bw growth {args.bandwidth_growth:g})")
                if strat == "misd" and args.bandwidth_growth == 0.0:
                    ax.plot(ns, [predict(p, n, strat, 1.0, args.sequencer_ns) for n in ns], "--",
                            alpha=0.6, label="misd model, bandwidth scales")
            for c in (c for c in checks if c["frames"] == p["mode"]):
                ax.errorbar([c["workers"]], [c["measured"]], yerr=[[c["measured"] - c["lo"]], [c["hi"] - c["measured"]]],
                            fmt="o" if c["strategy"] == "misd" else "s", color="C0" if c["strategy"] == "misd" else "C1",
                            capsize=3)
            ax.set_title(f"model, {p['mode']} frames (points: measured here)")
            ax.set_xlabel("workers (one per core)")
            ax.set_ylabel("speedup vs single")
            ax.set_ylim(0, max(4.0, 1.1 * max(predict(p, n, "misd", 1.0) for n in ns)))
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
