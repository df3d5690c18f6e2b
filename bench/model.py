#!/usr/bin/env python3
"""A cost model of replay scaling, fitted on this machine, predicting N = 1..16.

Inputs, all measured by bench/scaling.py in one run (whose JSON this reads,
or a short scaling run this program starts when no JSON is given):

  F    wire frames in the log (per frame mode)
  r    replicated cost per frame: the `rep-only` pass (one process over the
       same log owning no outputs) / F.  Every misd worker pays it; so does
       the leader.
  o    owned cost per frame: (T_single - T_rep) / F: payload copies plus ACK
       building, done once in total and split N ways.
  h    misd's own cost per frame and worker: (busy time of misd with 1
       worker - T_single) / F: cursors, batches, releasing the log.
  l    mimd's lock hand-off per frame: from mimd with 2 workers, whose time
       is the serialised part F * (r + l) (the lock is taken in log order,
       so the shared TCB and the ticket line move between cores every time).
  k    the leader's hand-off per frame: from leader with 2 workers, whose
       time is F * (r + k + o / b(2)): the leader runs the core, hands the
       copies over and does its own share.
  b(N) how much faster N processes copy than one: b(2) = copy-only 2 /
       copy-only 1 of the same run (this machine's memory-bandwidth ceiling
       for the parallel part).

Model (T = time for the whole log; speedup = T_single / T):

  T_single     = F * (r + o)
  T_misd(N)    = F * (r + h) + F * o / b(N)
  T_leader(N)  = F * (r + k) + F * o / b(N)            (N >= 2; 1 is single)
  T_mimd(N)    = F * max(r + l, (r + l + o) / N)       (N >= 2; 1 is single)

  b(N) = N             bandwidth that grows with cores (each core brings its own)
  b(N) = min(N, b(2))  bandwidth capped at what 2 processes got here

Checks: the measured N = 1 and 2 points against the capped model (which is
this machine), error target within 10 %.  Assumptions: one worker per core;
no sequencer process (the replay log is in memory: the NIC-DMA model; a live
TUN's read() per frame is a serial floor of its own, --sequencer-ns adds it
as T >= F * s_seq); r, o, h, k, l do not depend on N except through b(N) (in
reality r grows a little with N, and a ticket lock's hand-off gets worse
with more waiters, which flatters mimd).

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

STRATEGIES = ("misd", "leader", "mimd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", help="scaling.py JSON to fit on (else run scaling.py --quick)")
    p.add_argument("--max-workers", type=int, default=16)
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
        argv = ["--json", path, "--no-verify"] + (["--quick"] if args.quick else [])
        scaling.main(argv)
        with open(path) as f:
            return json.load(f)


def fit(records, mode):
    rs = [r for r in records if r["frames"] == mode and not r.get("loss") and not r.get("reorder")]
    timed = [r for r in rs if r.get("gbps")]
    single = next((r for r in timed if r["strategy"] == "single"), None)
    rep = next((r for r in rs if r["strategy"] == "rep-only"), None)
    if single is None:
        return None
    if rep is None:
        raise SystemExit("the scaling JSON has no replicated/owned split: run scaling.py without --no-split")
    F = single["frame_count"]
    t_single = single["single_ms"] * 1e6                    # ns
    r = rep["rep_ns_per_frame"]
    o = max(0.0, t_single / F - r)

    def point(strategy, workers):
        return next((x for x in timed if x["strategy"] == strategy and x["workers"] == workers), None)

    misd1 = point("misd", 1)
    h = max(0.0, (misd1["worker_busy_ms"] * 1e6 - t_single) / F) if misd1 else 0.0
    c1, c2 = point("copy-only", 1), point("copy-only", 2)
    b2 = c2["gbps"] / c1["gbps"] if c1 and c2 else 2.0
    mimd2, leader2 = point("mimd", 2), point("leader", 2)
    l = max(0.0, mimd2["elapsed_ms"] * 1e6 / F - r) if mimd2 else None
    k = max(0.0, leader2["elapsed_ms"] * 1e6 / F - r - o / b2) if leader2 else None
    return dict(mode=mode, frames=F, bytes=single["bytes"], r_ns=r, o_ns=o, h_ns=h, l_ns=l, k_ns=k,
                ceiling_2=b2, t_single_ms=t_single / 1e6, measured=timed)


def bandwidth(p, n, grows):
    return float(n) if grows else min(float(n), max(1.0, p["ceiling_2"]))


def predict(p, n, strategy, grows=False, seq_ns=0.0):
    F, r, o, h, l, k = p["frames"], p["r_ns"], p["o_ns"], p["h_ns"], p["l_ns"], p["k_ns"]
    t_single = F * (r + o)
    b = bandwidth(p, n, grows)
    if strategy == "misd":
        t = F * (r + h) + F * o / b
    elif n == 1:
        t = t_single
    elif strategy == "leader":
        t = F * (r + (k or 0.0)) + F * o / b
    else:
        t = F * max(r + (l or 0.0), (r + (l or 0.0) + o) / n)
    t = max(t, F * seq_ns)
    return t_single / t


def main(argv=None):
    args = parse_args(argv)
    records = load_records(args)
    out = dict(params=[], predictions=[], checks=[])
    fits = [f for f in (fit(records, m) for m in ("gso", "mtu")) if f]
    ns = list(range(1, args.max_workers + 1))
    print("cost model (per wire frame, fitted on this machine's scaling run)")
    common.print_table(fits, [
        ("frames", "mode"), ("F", "frames"),
        ("r repl. ns", lambda p: f"{p['r_ns']:.1f}"), ("o owned ns", lambda p: f"{p['o_ns']:.1f}"),
        ("h misd ns", lambda p: f"{p['h_ns']:.1f}"),
        ("k leader ns", lambda p: f"{p['k_ns']:.1f}" if p["k_ns"] is not None else "-"),
        ("l mimd ns", lambda p: f"{p['l_ns']:.1f}" if p["l_ns"] is not None else "-"),
        ("serial s", lambda p: f"{p['r_ns'] / (p['r_ns'] + p['o_ns']):.3f}"),
        ("ceiling b(2)", lambda p: f"{p['ceiling_2']:.2f}"),
    ])
    for grows in (True, False):
        print()
        print(f"predicted speedup vs single, bandwidth {'grows with cores' if grows else 'capped at b(2)'}")
        header = [("N", "n")]
        rows = []
        for n in ns:
            row = dict(n=n)
            for p in fits:
                for s in STRATEGIES:
                    v = predict(p, n, s, grows, args.sequencer_ns)
                    row[f"{p['mode']}-{s}"] = f"{v:.2f}"
                    out["predictions"].append(dict(frames=p["mode"], strategy=s, workers=n, speedup=v,
                                                   bandwidth="grows" if grows else "capped",
                                                   sequencer_ns=args.sequencer_ns))
            rows.append(row)
        for p in fits:
            for s in STRATEGIES:
                header.append((f"{p['mode']} {s}", f"{p['mode']}-{s}"))
        common.print_table(rows, header)
    print()
    print("check against the measured points (paired speedup, median (min..max); model: bandwidth capped)")
    checks = []
    for p in fits:
        for m in p["measured"]:
            if m["strategy"] not in STRATEGIES:
                continue
            pred = predict(p, m["workers"], m["strategy"], False, 0.0)
            checks.append(dict(frames=p["mode"], strategy=m["strategy"], workers=m["workers"],
                               stripe=m["stripe"], measured=m["speedup_paired"], lo=m["speedup_min"],
                               hi=m["speedup_max"], predicted=pred,
                               error=(pred - m["speedup_paired"]) / m["speedup_paired"]))
    common.print_table(checks, [
        ("frames", "frames"), ("strategy", "strategy"), ("N", "workers"),
        ("measured", lambda c: f"{c['measured']:.2f} ({c['lo']:.2f}..{c['hi']:.2f})"),
        ("model", lambda c: f"{c['predicted']:.2f}"), ("error", lambda c: f"{100 * c['error']:+.0f}%"),
    ])
    within = sum(abs(c["error"]) <= 0.10 for c in checks)
    print(f"{within} of {len(checks)} measured points within 10 % of the model")
    for p in fits:
        goal = 10 if p["mode"] == "gso" else 8
        at16 = predict(p, 16, "misd", True, 0.0)
        print(f"misd at 16 workers, {p['mode']} frames, bandwidth growing with cores: {at16:.1f}x (target >= {goal}x)")
    out["checks"] = checks
    out["params"] = [{k: v for k, v in p.items() if k != "measured"} for p in fits]
    if args.json:
        common.write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.plot:
        plot(fits, checks, ns, args)
        print(f"wrote {args.plot}")
    return 0


def plot(fits, checks, ns, args):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(fits), figsize=(5.5 * len(fits), 4.2), squeeze=False)
    colors = {"misd": "C0", "leader": "C2", "mimd": "C1"}
    for ax, p in zip(axes[0], fits):
        ax.plot(ns, ns, "k:", label="ideal")
        for s in STRATEGIES:
            ax.plot(ns, [predict(p, n, s, True, args.sequencer_ns) for n in ns], "-", color=colors[s],
                    label=f"{s}, bandwidth grows")
            ax.plot(ns, [predict(p, n, s, False, args.sequencer_ns) for n in ns], "--", color=colors[s],
                    alpha=0.6, label=f"{s}, bandwidth capped")
        for c in (c for c in checks if c["frames"] == p["mode"]):
            ax.errorbar([c["workers"]], [c["measured"]], yerr=[[c["measured"] - c["lo"]], [c["hi"] - c["measured"]]],
                        fmt="o", color=colors[c["strategy"]], capsize=3)
        ax.set_title(f"model, {p['mode']} frames (points: measured here)")
        ax.set_xlabel("workers (one per core)")
        ax.set_ylabel("speedup vs single")
        ax.set_ylim(0, max(ns) + 1)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
