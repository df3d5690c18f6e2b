#!/usr/bin/env python3
"""Replay scaling: one TCP connection's receive path, 1..N workers, no TUN.

The frames of one synthetic connection are generated once and placed in ring
memory as a NIC's DMA would (runtime/replay.py), so what is timed is the
stack's own work: replicated TCP processing, owned payload copies into the
receive buffer, ACK building.  Each variant is `run_log` under a strategy:

  single      one process walks the log (the baseline every speedup divides)
  misd  N     N replicas, each replays every record and copies its stripes
  mimd  N     N workers share one core state under a lock (the foil)

and, to split a misd worker's time into replicated and owned work, two more
passes run by the same single process over the same log (so no ring and no
concurrent sibling), differing only in which outputs the replica owns:

  rep-only    replica 255 of 256 with a stripe larger than the stream: every
              record is processed, no payload byte and 1/256 of the ACKs are
              owned                       -> T_rep   (replicated work)
  alone 1/N   replica 0 of N with the run's stripe: exactly the work one misd
              worker does, done alone     -> T_alone(N)

  owned work of the whole stream   O = T_single - T_rep
  serial (replicated) fraction     s = T_rep / T_single   (Amdahl's law)
  misd overhead per worker         worker busy time in the misd run - T_alone(N)
                                   (ring cursors, waits, and two processes
                                   sharing memory bandwidth)

Delivered bytes are verified in a separate, untimed pass: the same workload
rebuilt with a receive buffer at least as large as the stream (nothing
wraps), each variant run once with keep_buffer=True, and every byte checked
against the offset-derived payload pattern (`_replay.check_pattern`).

    .venv/bin/python bench/scaling.py --quick
    .venv/bin/python bench/scaling.py --json bench/results/scaling.json --plot bench/plots/scaling.png
    .venv/bin/python bench/scaling.py --modes mtu --stripes 4096,16384,65536 --loss 0.01

Speedups are paired: each repeat divides a variant's Gbit/s by `single`'s in
the same repeat; the table shows the median and min..max of those ratios.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from misdtcp.runtime.replay_image import check_pattern  # noqa: E402
from misdtcp.runtime.replay import ReplayConfig, build_log  # noqa: E402
from misdtcp.runtime.replay_run import run_log  # noqa: E402

REP_ONLY = dict(replica=255, replicas=256, stripe=1 << 40)
CORE = dict(secret=3)


def _int_list(text):
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _size(text):
    text = text.strip().lower()
    for suffix, mul in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * mul)
    return int(text)


def parse_args(argv=None):
    ncpu = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="single,misd,mimd", help="[single,misd,mimd]")
    p.add_argument("--workers", type=_int_list, help=f"worker counts, e.g. 1,2 or 1-4 [1..{ncpu}]")
    p.add_argument("--oversubscribe", action="store_true",
                   help=f"also run {ncpu + 1}..{2 * ncpu} workers (more workers than CPUs)")
    p.add_argument("--modes", default="gso,mtu", help="frame modes: gso (64 KiB super-frames), mtu [gso,mtu]")
    p.add_argument("--stripes", type=_int_list, default=[16384], help="misd stripe sizes in bytes [16384]")
    p.add_argument("--bytes", type=_size, default=256 << 20, help="stream length per run [256m]")
    p.add_argument("--rcvbuf", type=_size, default=4 << 20, help="receive buffer of the timed runs [4m]")
    p.add_argument("--loss", type=float, default=0.0, help="fraction of frames lost and resent later [0]")
    p.add_argument("--reorder", type=float, default=0.0, help="fraction of frames swapped with the next [0]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed runs per variant [7]")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="skip the replicated/owned split passes")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the verification pass")
    p.add_argument("--memcpy", dest="memcpy", action="store_true", default=None,
                   help="measure the memcpy reference (default: on unless --quick)")
    p.add_argument("--no-memcpy", dest="memcpy", action="store_false")
    p.add_argument("--wait-quiet", type=float, default=None,
                   help="before each repeat wait up to this many seconds for other load to stop [10; quick 0]")
    p.add_argument("--quick", action="store_true", help="small and short (under 30 s): 48 MiB, 5 repeats")
    p.add_argument("--json", help="write the records to this file")
    p.add_argument("--plot", help="write speedup vs workers to this PNG")
    args = p.parse_args(argv)
    if args.quick:
        args.bytes = min(args.bytes, 48 << 20)
        args.repeats = min(args.repeats, 5)
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 10.0
    if args.memcpy is None:
        args.memcpy = not args.quick
    if args.workers is None:
        args.workers = list(range(1, ncpu + 1))
    if args.oversubscribe:
        args.workers = sorted(set(args.workers) | set(range(ncpu + 1, 2 * ncpu + 1)))
    args.workers = [w for w in args.workers if 1 <= w <= 16]
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    for s in args.strategies:
        if s not in ("single", "misd", "mimd"):
            p.error(f"unknown strategy {s!r}")
    for m in args.modes:
        if m not in ("gso", "mtu"):
            p.error(f"unknown frame mode {m!r}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def variants_for(args):
    """The timed variants of one workload (the same list for every mode)."""
    vs = [dict(key=("single", 1, 0), strategy="single", workers=1, stripe=0)]
    for w in args.workers:
        for stripe in args.stripes:
            if "misd" in args.strategies:
                vs.append(dict(key=("misd", w, stripe), strategy="misd", workers=w, stripe=stripe))
        if "mimd" in args.strategies:
            vs.append(dict(key=("mimd", w, 0), strategy="mimd", workers=w, stripe=0))
    if args.split and "misd" in args.strategies:
        vs.append(dict(key=("rep-only", 1, 0), strategy="single", workers=1, stripe=0, alone=REP_ONLY))
        for w in args.workers:
            if w == 1:
                continue
            for stripe in args.stripes:
                vs.append(dict(key=("alone", w, stripe), strategy="single", workers=1, stripe=stripe,
                               alone=dict(replica=0, replicas=w, stripe=stripe)))
    return vs


def timed_run(log, v, total, timeout):
    alone = v.get("alone")
    replica = (alone["replica"], alone["replicas"], alone["stripe"]) if alone else None
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0, _ = common.machine_busy()
    t0 = time.monotonic()
    with common.ChildUsage() as use:
        r = run_log(log, strategy=v["strategy"], workers=v["workers"], stripe=v["stripe"] or 16384,
                    timeout=timeout, replica=replica)
    wall = time.monotonic() - t0
    busy1, _ = common.machine_busy()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    own = use.cpu + (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    if "alone" not in v and r.delivered != total:
        raise RuntimeError(f"{v['key']}: delivered {r.delivered} of {total} bytes")
    busy = [(c["end_ns"] - c["start_ns"]) / 1e6 for c in r.counters]
    return dict(gbps=r.gbps, elapsed_ms=r.elapsed_ns / 1e6, busy_ms=busy, cpu_s=use.cpu,
                user_s=use.user, sys_s=use.system, minflt=use.minflt, nivcsw=use.nivcsw,
                copied=[c["bytes_copied"] for c in r.counters],
                segments=[c["segments_sent"] for c in r.counters],
                lock_waits=sum(c.get("lock_waits", 0) for c in r.counters),
                sleeps=sum(c.get("sleeps", 0) for c in r.counters),
                foreign=common.foreign_cpu(wall, busy0, busy1, own))


def verify(args, mode, variants, say):
    """Untimed: every variant once over a log whose receive buffer holds the
    whole stream; every delivered byte checked against the pattern."""
    rcvbuf = 1 << max(22, (args.bytes - 1).bit_length())
    cfg = ReplayConfig(total_bytes=args.bytes, mode=mode, loss=args.loss, reorder=args.reorder,
                       seed=args.seed, digest_every=64)
    log = build_log(cfg, dict(CORE, rcvbuf=rcvbuf, max_connections=1))
    checked = {}
    for v in variants:
        if "alone" in v:
            continue
        r = run_log(log, strategy=v["strategy"], workers=v["workers"], stripe=v["stripe"] or 16384,
                    keep_buffer=True, timeout=120)
        bad = check_pattern(r.receive_buffer, 0) if r.receive_buffer is not None else 0
        ok = r.delivered == args.bytes and len(r.receive_buffer) == args.bytes and bad == -1
        checked[v["key"]] = ok
        if not ok:
            say(f"VERIFY FAILED {mode} {v['key']}: delivered {r.delivered}/{args.bytes}, "
                f"first bad byte {bad}")
    del log
    return checked


def measure_mode(args, mode, say):
    cfg = ReplayConfig(total_bytes=args.bytes, mode=mode, loss=args.loss, reorder=args.reorder,
                       seed=args.seed)
    t0 = time.monotonic()
    log = build_log(cfg, dict(CORE, rcvbuf=args.rcvbuf))
    say(f"{mode}: log built in {time.monotonic() - t0:.1f} s: {log.image.frames} frames, "
        f"{len(log.image.data) / 2**20:.0f} MiB of ring records")
    variants = variants_for(args)
    timeout = max(60.0, args.bytes / (50 << 20))
    first = variants[0]["key"]

    def one(v):
        if args.wait_quiet and v["key"] == first:
            busy = common.wait_quiet(args.wait_quiet)
            if busy >= 0.2:
                say(f"  (machine not quiet: {busy:.2f} CPUs busy before this repeat)")
        return timed_run(log, v, args.bytes, timeout)
    raw = common.interleaved(variants, args.repeats, one)
    frame_count = log.image.frames
    del log
    checked = verify(args, mode, variants, say) if args.verify else {}
    return variants, raw, frame_count, checked


def build_records(args, mode, variants, raw, frame_count, checked, memcpy, meta):
    single = raw[("single", 1, 0)]
    t_single = common.summary([x["elapsed_ms"] for x in single])["median"]
    rep = raw.get(("rep-only", 1, 0))
    t_rep = common.summary([x["elapsed_ms"] for x in rep])["median"] if rep else None
    serial = t_rep / t_single if t_rep else None
    records = []
    for v in variants:
        if "alone" in v:
            continue
        runs = raw[v["key"]]
        g = common.summary([x["gbps"] for x in runs])
        paired = common.summary([x["gbps"] / s["gbps"] for x, s in zip(runs, single)])
        busy = common.summary([max(x["busy_ms"]) for x in runs])
        cpu = common.summary([x["cpu_s"] for x in runs])
        rec = dict(
            strategy=v["strategy"], workers=v["workers"], frames=mode, stripe=v["stripe"] or None,
            bytes=args.bytes, frame_count=frame_count, loss=args.loss, reorder=args.reorder,
            repeats=args.repeats,
            gbps=g["median"], gbps_min=g["min"], gbps_max=g["max"], gbps_spread=g["spread"],
            speedup=g["median"] / common.summary([x["gbps"] for x in single])["median"],
            speedup_paired=paired["median"], speedup_min=paired["min"], speedup_max=paired["max"],
            efficiency=paired["median"] / v["workers"],
            elapsed_ms=common.summary([x["elapsed_ms"] for x in runs])["median"],
            worker_busy_ms=busy["median"],
            worker_busy_each_ms=[common.summary([x["busy_ms"][w] for x in runs])["median"]
                                 for w in range(v["workers"])],
            cpu_s=cpu["median"], user_s=common.summary([x["user_s"] for x in runs])["median"],
            sys_s=common.summary([x["sys_s"] for x in runs])["median"],
            minflt=common.summary([x["minflt"] for x in runs])["median"],
            foreign_cpus=common.summary([x["foreign"] for x in runs])["median"],
            foreign_cpus_max=max(x["foreign"] for x in runs),
            lock_waits=common.summary([x["lock_waits"] for x in runs])["median"],
            bytes_copied_each=runs[0]["copied"], segments_each=runs[0]["segments"],
            verified=checked.get(v["key"]),
            serial_fraction=serial, replicated_ms=t_rep, single_ms=t_single,
            owned_ms=(t_single - t_rep) if t_rep else None,
            memcpy_gbs_1=memcpy[0], memcpy_gbs_2=memcpy[1], run=meta,
        )
        if v["strategy"] == "misd" and t_rep:
            if v["workers"] == 1:
                alone = t_single
            else:
                a = raw.get(("alone", v["workers"], v["stripe"]))
                alone = common.summary([x["elapsed_ms"] for x in a])["median"] if a else None
            if alone:
                rec.update(alone_ms=alone, owned_share_ms=alone - t_rep,
                           overhead_ms=busy["median"] - alone,
                           predicted_amdahl=1 / (serial + (1 - serial) / v["workers"]))
        records.append(rec)
    return records


def print_records(records, mode, say):
    say("")
    say(f"frames={mode}: Gbit/s and speedup vs single, median (min..max) of paired repeats")
    common.print_table([r for r in records if r["frames"] == mode], [
        ("strategy", "strategy"), ("workers", "workers"), ("stripe", lambda r: r["stripe"] or "-"),
        ("Gbit/s", lambda r: f"{r['gbps']:.1f} ({r['gbps_min']:.1f}..{r['gbps_max']:.1f})"),
        ("speedup", lambda r: f"{r['speedup_paired']:.2f} ({r['speedup_min']:.2f}..{r['speedup_max']:.2f})"),
        ("effic.", lambda r: f"{r['efficiency']:.2f}"),
        ("busy ms", lambda r: "/".join(f"{b:.1f}" for b in r["worker_busy_each_ms"])),
        ("cpu s", lambda r: f"{r['cpu_s']:.3f}"),
        ("minflt", lambda r: f"{r['minflt']:.0f}"),
        ("alone ms", lambda r: f"{r['alone_ms']:.1f}" if r.get("alone_ms") else "-"),
        ("ovh ms", lambda r: f"{r['overhead_ms']:+.1f}" if r.get("overhead_ms") is not None else "-"),
        ("other", lambda r: f"{r['foreign_cpus']:.2f}/{r['foreign_cpus_max']:.2f}"),
        ("verified", lambda r: {True: "ok", False: "FAIL", None: "-"}[r["verified"]]),
    ])
    say("(other: CPUs' worth of other processes' work during the runs, median/max; "
        "above ~0.2 the 2-worker points are contaminated on a 2-CPU machine)")
    r0 = next((r for r in records if r["frames"] == mode and r["serial_fraction"]), None)
    if r0:
        say(f"split (single process, same log): single {r0['single_ms']:.1f} ms = replicated "
            f"{r0['replicated_ms']:.1f} ms + owned {r0['owned_ms']:.1f} ms; serial fraction "
            f"s = {r0['serial_fraction']:.3f}; Amdahl at 2 workers {1 / (r0['serial_fraction'] + (1 - r0['serial_fraction']) / 2):.2f}x")


def plot(records, path, modes):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rs = [r for r in records if r["frames"] == mode]
        top = max([r["workers"] for r in rs] + [2])
        ns = list(range(1, top + 1))
        ax.plot(ns, ns, "k:", label="ideal")
        s = next((r["serial_fraction"] for r in rs if r["serial_fraction"]), None)
        if s:
            fine = [1 + i / 20 for i in range(20 * (top - 1) + 1)]
            ax.plot(fine, [1 / (s + (1 - s) / n) for n in fine], "g--", label=f"Amdahl, s={s:.2f} (measured)")
        for strategy, style in (("misd", "o-"), ("mimd", "s-"), ("single", "D")):
            pts = sorted((r for r in rs if r["strategy"] == strategy), key=lambda r: (r["stripe"] or 0, r["workers"]))
            stripes = sorted({r["stripe"] for r in pts}, key=lambda x: x or 0)
            for stripe in stripes:
                sub = [r for r in pts if r["stripe"] == stripe]
                label = strategy + (f" stripe {stripe // 1024} KiB" if stripe and len(stripes) > 1 else "")
                y = [r["speedup_paired"] for r in sub]
                err = [[r["speedup_paired"] - r["speedup_min"] for r in sub],
                       [r["speedup_max"] - r["speedup_paired"] for r in sub]]
                ax.errorbar([r["workers"] for r in sub], y, yerr=err, fmt=style, capsize=3, label=label)
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_title(f"replay, {mode} frames ({rs[0]['bytes'] >> 20} MiB, median of {rs[0]['repeats']})")
        ax.set_xlabel("workers")
        ax.set_ylabel("speedup vs single (same run)")
        ax.set_xticks(ns)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)

    def say(text):
        print(text, flush=True)

    meta = common.metadata()
    say(f"replay scaling: {args.bytes >> 20} MiB per run, workers {args.workers}, modes {args.modes}, "
        f"stripes {args.stripes}, loss {args.loss}, reorder {args.reorder}, {args.repeats} repeats, "
        f"{meta['cpus']} CPUs ({meta['cpu_model']}), load {meta['loadavg'][0]:.2f}")
    memcpy = (None, None)
    if args.memcpy:
        m1 = common.memcpy_bandwidth(processes=1, chunk=1 << 20)
        m2 = common.memcpy_bandwidth(processes=2, chunk=1 << 20)
        memcpy = (m1["median"], m2["median"])
        say(f"memcpy reference (256 MiB source -> 4 MiB area, 1 MiB calls): 1 process "
            f"{common.fmt_spread(m1)} GB/s = {8 * m1['median']:.0f} Gbit/s; 2 processes "
            f"{common.fmt_spread(m2)} GB/s = {8 * m2['median']:.0f} Gbit/s; ratio {m2['median'] / m1['median']:.2f}")
    records = []
    failed = False
    for mode in args.modes:
        variants, raw, frames, checked = measure_mode(args, mode, say)
        recs = build_records(args, mode, variants, raw, frames, checked, memcpy, meta)
        failed |= any(v is False for v in checked.values())
        print_records(recs, mode, say)
        records.extend(recs)
    if args.json:
        common.write_json(args.json, records)
        say(f"wrote {args.json}")
    if args.plot:
        plot(records, args.plot, args.modes)
        say(f"wrote {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
