#!/usr/bin/env python3
"""Replay scaling: one TCP connection's receive path, 1..N workers, no TUN.

The frames of one synthetic connection are generated once and written into a
log by the sequencer's own describing code, as a NIC with header/data split
would have delivered them (runtime/replay.py), so what is timed is the
stack's own work: replicated TCP processing, owned payload copies into the
receive buffer, ACK building.  Each variant replays that log under a
strategy (runtime/strategies.py), all in the same run:

  single      one process walks the log: the baseline every speedup divides
  misd  N     N replicas, each replays every descriptor and copies its stripes
  mimd  N     N workers share one core state under a lock (a foil)
  leader N    one process runs the only core and hands the copies of other
              workers' stripes to N-1 helpers over queues (a foil)
  copy-only N N workers only copy the stripes they own, no TCP: the memory
              bandwidth ceiling of the parallel part on this machine

and two more passes by one process over the same log split a worker's time:

  rep-only    replica 255 of 256 with a stripe larger than the stream: every
              descriptor is processed, no payload byte and 1/256 of the ACKs
              are owned                                   -> T_rep (replicated)
  alone 1/N   replica 0 of N with the run's stripe: the work of one misd
              worker, done alone                          -> T_alone(N)

  replicated cost per frame   T_rep / wire frames (also per descriptor, and
                              for the same stream logged without coalescing)
  serial fraction             s = T_rep / T_single (Amdahl's law)
  the ceiling                 copy-only N / copy-only 1; misd's speedup is
                              judged against it, in the same run

The serial stage itself -- the live sequencer describing frames -- is timed
separately on the same kind of frames (`sequencer` records): as before
descriptors (every frame published whole), with descriptors, and with
coalescing.

Delivered bytes are verified in a separate, untimed pass: the same workload
rebuilt with a receive buffer at least as large as the stream (nothing
wraps), each variant run once, and every byte checked against the
offset-derived payload pattern.

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

from misdtcp._ring import BroadcastRing  # noqa: E402
from misdtcp.runtime.replay import ReplayConfig, build_log, sample_frames  # noqa: E402
from misdtcp.runtime.replay_image import check_pattern  # noqa: E402
from misdtcp.runtime.replay_run import run_log  # noqa: E402
from misdtcp.runtime.sequencer import bench_describe  # noqa: E402

REP_ONLY = dict(replica=255, replicas=256, stripe=1 << 40)
CORE = dict(secret=3)
ALL = ("single", "misd", "mimd", "leader", "copy-only")


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
    p.add_argument("--strategies", default=",".join(ALL), help=f"[{','.join(ALL)}]")
    p.add_argument("--workers", type=_int_list, help=f"worker counts, e.g. 1,2 or 1-4 [1..{ncpu}]")
    p.add_argument("--oversubscribe", action="store_true",
                   help=f"also run {ncpu + 1}..{2 * ncpu} workers (more workers than CPUs)")
    p.add_argument("--modes", default="gso,mtu", help="frame modes: gso (64 KiB super-frames), mtu [gso,mtu]")
    p.add_argument("--stripes", type=_int_list, default=[16384], help="misd stripe sizes in bytes [16384]")
    p.add_argument("--bytes", type=_size, default=256 << 20, help="stream length per run [256m]")
    p.add_argument("--rcvbuf", type=_size, default=4 << 20, help="receive buffer of the timed runs [4m]")
    p.add_argument("--loss", type=float, default=0.0, help="fraction of frames lost and resent later [0]")
    p.add_argument("--reorder", type=float, default=0.0, help="fraction of frames swapped with the next [0]")
    p.add_argument("--coalesce", dest="coalesce", action="store_true", default=True,
                   help="the sequencer coalesces in-order segments (default)")
    p.add_argument("--no-coalesce", dest="coalesce", action="store_false")
    p.add_argument("--huge-pages", action="store_true",
                   help="receive buffers on huge pages where the system offers them (output says if it did)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed runs per variant [7]")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="skip the replicated/owned split passes")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the verification pass")
    p.add_argument("--no-sequencer", dest="sequencer", action="store_false",
                   help="skip timing the serial stage")
    p.add_argument("--wait-quiet", type=float, default=None,
                   help="before each repeat wait up to this many seconds for other load to stop [10; quick 0]")
    p.add_argument("--quick", action="store_true", help="small and short (under two minutes): 64 MiB, 5 repeats")
    p.add_argument("--json", help="write the records to this file")
    p.add_argument("--plot", help="write speedup vs workers to this PNG")
    args = p.parse_args(argv)
    if args.quick:
        args.bytes = min(args.bytes, 64 << 20)
        args.repeats = min(args.repeats, 5)
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 10.0
    if args.workers is None:
        args.workers = list(range(1, ncpu + 1))
    if args.oversubscribe:
        args.workers = sorted(set(args.workers) | set(range(ncpu + 1, 2 * ncpu + 1)))
    args.workers = [w for w in args.workers if 1 <= w <= 16]
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    for s in args.strategies:
        if s not in ALL:
            p.error(f"unknown strategy {s!r}")
    if "single" not in args.strategies:
        args.strategies.insert(0, "single")            # every speedup divides by it
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
        for strategy in args.strategies:
            if strategy == "single":
                continue
            stripes = args.stripes if strategy in ("misd", "leader", "copy-only") else [0]
            for stripe in stripes:
                vs.append(dict(key=(strategy, w, stripe), strategy=strategy, workers=w, stripe=stripe))
    if args.split and "misd" in args.strategies:
        vs.append(dict(key=("rep-only", 1, 0), strategy="single", workers=1, stripe=0, alone=REP_ONLY))
        for w in args.workers:
            if w == 1:
                continue
            for stripe in args.stripes:
                vs.append(dict(key=("alone", w, stripe), strategy="single", workers=1, stripe=stripe,
                               alone=dict(replica=0, replicas=w, stripe=stripe)))
    return vs


def timed_run(log, v, total, timeout, huge_pages):
    alone = v.get("alone")
    replica = (alone["replica"], alone["replicas"], alone["stripe"]) if alone else None
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0, _ = common.machine_busy()
    t0 = time.monotonic()
    with common.ChildUsage() as use:
        r = run_log(log, strategy=v["strategy"], workers=v["workers"], stripe=v["stripe"] or 16384,
                    timeout=timeout, replica=replica, huge_pages=huge_pages)
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
                huge_pages=r.huge_pages,
                foreign=common.foreign_cpu(wall, busy0, busy1, own))


def verify(args, mode, variants, say):
    """Untimed: every variant once over a log whose receive buffer holds the
    whole stream; every delivered byte checked against the pattern."""
    rcvbuf = 1 << max(22, (args.bytes - 1).bit_length())
    cfg = ReplayConfig(total_bytes=args.bytes, mode=mode, loss=args.loss, reorder=args.reorder,
                       seed=args.seed, digest_every=64, coalesce=args.coalesce)
    log = build_log(cfg, dict(CORE, rcvbuf=rcvbuf, max_connections=1))
    checked = {}
    try:
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
    finally:
        log.close()
    return checked


def rep_cost(args, mode, log, repeats):
    """Replicated cost of the log per wire frame and per descriptor: the
    median over `repeats` rep-only runs."""
    times = [run_log(log, strategy="single", replica=(255, 256, 1 << 40), timeout=120).elapsed_ns
             for _ in range(repeats)]
    t = common.summary(times)
    return dict(rep_ns_per_frame=t["median"] / log.frames, rep_ns_per_frame_min=t["min"] / log.frames,
                rep_ns_per_frame_max=t["max"] / log.frames, rep_ns_per_descriptor=t["median"] / log.descriptors,
                frame_count=log.frames, descriptors=log.descriptors)


def measure_mode(args, mode, say):
    cfg = ReplayConfig(total_bytes=args.bytes, mode=mode, loss=args.loss, reorder=args.reorder,
                       seed=args.seed, coalesce=args.coalesce)
    t0 = time.monotonic()
    log = build_log(cfg, dict(CORE, rcvbuf=args.rcvbuf))
    say(f"{mode}: log built in {time.monotonic() - t0:.1f} s: {log.frames} frames in {log.descriptors} "
        f"descriptors ({log.frames / max(log.descriptors, 1):.1f} per descriptor), "
        f"{log.data_bytes / 2**20:.0f} MiB of data")
    variants = variants_for(args)
    timeout = max(60.0, args.bytes / (50 << 20))
    first = variants[0]["key"]

    def one(v):
        if args.wait_quiet and v["key"] == first:
            busy = common.wait_quiet(args.wait_quiet)
            if busy >= 0.2:
                say(f"  (machine not quiet: {busy:.2f} CPUs busy before this repeat)")
        return timed_run(log, v, args.bytes, timeout, args.huge_pages)
    try:
        raw = common.interleaved(variants, args.repeats, one)
        rep = rep_cost(args, mode, log, args.repeats) if args.split else None
    finally:
        frames, descriptors = log.frames, log.descriptors
        log.close()
    if rep is not None and args.coalesce:
        plain = build_log(ReplayConfig(total_bytes=min(args.bytes, 64 << 20), mode=mode, loss=args.loss,
                                       reorder=args.reorder, seed=args.seed, coalesce=False),
                          dict(CORE, rcvbuf=args.rcvbuf))
        try:
            rep["rep_ns_per_frame_uncoalesced"] = rep_cost(args, mode, plain, args.repeats)["rep_ns_per_frame"]
        finally:
            plain.close()
    checked = verify(args, mode, variants, say) if args.verify else {}
    return variants, raw, frames, descriptors, checked, rep


def serial_stage(mode, say, frames_count=4096, rounds=16):
    """ns per frame of the sequencer's own work on frames of this mode:
    before descriptors (each frame published whole), with descriptors, and
    with descriptors and coalescing.  The kernel's copy (readv) is modelled by
    a memcpy and included in all three."""
    cfg = ReplayConfig(mode=mode)
    blob, offsets = sample_frames(cfg, frames_count)
    out = {}
    for name, describe, coalesce in (("whole", False, False), ("descriptors", True, False),
                                     ("coalescing", True, True)):
        with BroadcastRing(1 << 16, 1 << 24, 1) as ring:
            spent, n, counters = bench_describe(ring, blob, offsets, cfg.server, rounds, describe, coalesce)
        out[name] = spent / n
        out[name + "_counters"] = counters
    say(f"serial stage ({mode}, {frames_count * rounds} frames, readv modelled by a memcpy): "
        f"{out['whole']:.0f} ns/frame publishing whole frames (before), {out['descriptors']:.0f} with "
        f"descriptors, {out['coalescing']:.0f} with coalescing")
    return out


def build_records(args, mode, variants, raw, frame_count, descriptors, checked, rep, serial, meta):
    single = raw[("single", 1, 0)]
    t_single = common.summary([x["elapsed_ms"] for x in single])["median"]
    repr_ = raw.get(("rep-only", 1, 0))
    t_rep = common.summary([x["elapsed_ms"] for x in repr_])["median"] if repr_ else None
    serial_fraction = t_rep / t_single if t_rep else None
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
            bytes=args.bytes, frame_count=frame_count, descriptors=descriptors, coalesce=args.coalesce,
            loss=args.loss, reorder=args.reorder, repeats=args.repeats,
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
            huge_pages=runs[0]["huge_pages"],
            verified=checked.get(v["key"]),
            serial_fraction=serial_fraction, replicated_ms=t_rep, single_ms=t_single,
            owned_ms=(t_single - t_rep) if t_rep else None, run=meta,
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
                           predicted_amdahl=1 / (serial_fraction + (1 - serial_fraction) / v["workers"]))
        records.append(rec)
    # the ceiling of this run: copy-only N / copy-only 1, and misd against it
    by = {(r["strategy"], r["workers"], r["stripe"]): r for r in records}
    for r in records:
        ceiling = by.get(("copy-only", r["workers"], r["stripe"] or 16384)) or by.get(("copy-only", r["workers"], None))
        base = by.get(("copy-only", 1, r["stripe"] or 16384)) or by.get(("copy-only", 1, None))
        if ceiling and base:
            r["ceiling"] = ceiling["gbps"] / base["gbps"]
            r["against_ceiling"] = r["speedup_paired"] / r["ceiling"]
    if rep:
        records.append(dict(strategy="rep-only", frames=mode, workers=1, bytes=args.bytes, coalesce=args.coalesce,
                            gbps=None, serial_fraction=serial_fraction, run=meta, **rep))
    if serial:
        records.append(dict(strategy="sequencer", frames=mode, workers=1, gbps=None, run=meta,
                            ns_per_frame_whole=serial["whole"], ns_per_frame_descriptors=serial["descriptors"],
                            ns_per_frame_coalescing=serial["coalescing"],
                            coalesced_per_frame=serial["coalescing_counters"]["coalesced"] /
                            max(serial["coalescing_counters"]["frames"], 1)))
    return records


def print_records(records, mode, say):
    say("")
    say(f"frames={mode}: Gbit/s and speedup vs single, median (min..max) of paired repeats")
    common.print_table([r for r in records if r["frames"] == mode and r.get("gbps")], [
        ("strategy", "strategy"), ("workers", "workers"), ("stripe", lambda r: r["stripe"] or "-"),
        ("Gbit/s", lambda r: f"{r['gbps']:.1f} ({r['gbps_min']:.1f}..{r['gbps_max']:.1f})"),
        ("speedup", lambda r: f"{r['speedup_paired']:.2f} ({r['speedup_min']:.2f}..{r['speedup_max']:.2f})"),
        ("vs ceiling", lambda r: f"{r['against_ceiling']:.2f}" if r.get("against_ceiling") else "-"),
        ("busy ms", lambda r: "/".join(f"{b:.1f}" for b in r["worker_busy_each_ms"])),
        ("cpu s", lambda r: f"{r['cpu_s']:.3f}"),
        ("alone ms", lambda r: f"{r['alone_ms']:.1f}" if r.get("alone_ms") else "-"),
        ("ovh ms", lambda r: f"{r['overhead_ms']:+.1f}" if r.get("overhead_ms") is not None else "-"),
        ("other", lambda r: f"{r['foreign_cpus']:.2f}/{r['foreign_cpus_max']:.2f}"),
        ("verified", lambda r: {True: "ok", False: "FAIL", None: "-"}[r["verified"]]),
    ])
    say("(vs ceiling: speedup / (copy-only N / copy-only 1) of the same run; other: CPUs' worth of other "
        "processes' work during the runs, median/max; above ~0.2 the 2-worker points are contaminated)")
    rep = next((r for r in records if r["frames"] == mode and r["strategy"] == "rep-only"), None)
    if rep:
        extra = (f"; without coalescing {rep['rep_ns_per_frame_uncoalesced']:.1f} ns"
                 if rep.get("rep_ns_per_frame_uncoalesced") else "")
        say(f"replicated cost: {rep['rep_ns_per_frame']:.1f} ns per wire frame "
            f"({rep['rep_ns_per_frame_min']:.1f}..{rep['rep_ns_per_frame_max']:.1f}), "
            f"{rep['rep_ns_per_descriptor']:.1f} ns per descriptor{extra}; serial fraction "
            f"s = {rep['serial_fraction']:.3f} (Amdahl at 2 workers "
            f"{1 / (rep['serial_fraction'] + (1 - rep['serial_fraction']) / 2):.2f}x)")
    huge = {r.get("huge_pages") for r in records if r["frames"] == mode and r.get("gbps")}
    say(f"receive buffers on huge pages: {'yes' if huge == {True} else 'no' if huge == {False} else 'mixed'}")


def plot(records, path, modes):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rs = [r for r in records if r["frames"] == mode and r.get("gbps")]
        top = max([r["workers"] for r in rs] + [2])
        ns = list(range(1, top + 1))
        ax.plot(ns, ns, "k:", label="ideal")
        s = next((r["serial_fraction"] for r in rs if r.get("serial_fraction")), None)
        if s:
            fine = [1 + i / 20 for i in range(20 * (top - 1) + 1)]
            ax.plot(fine, [1 / (s + (1 - s) / n) for n in fine], "g--", label=f"Amdahl, s={s:.3f} (measured)")
        for strategy, style in (("copy-only", "^--"), ("misd", "o-"), ("leader", "v-"), ("mimd", "s-"),
                                ("single", "D")):
            pts = sorted((r for r in rs if r["strategy"] == strategy), key=lambda r: (r["stripe"] or 0, r["workers"]))
            for stripe in sorted({r["stripe"] for r in pts}, key=lambda x: x or 0):
                sub = [r for r in pts if r["stripe"] == stripe]
                label = strategy + (f" stripe {stripe // 1024} KiB" if stripe and len(args_stripes(pts)) > 1 else "")
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


def args_stripes(pts):
    return {r["stripe"] for r in pts}


def check_targets(records, say):
    """The issue's targets, against this run's own references."""
    for mode in sorted({r["frames"] for r in records}):
        by = {(r["strategy"], r["workers"]): r for r in records if r["frames"] == mode}
        rep = by.get(("rep-only", 1))
        misd1, misd2 = by.get(("misd", 1)), by.get(("misd", 2))
        lines = []
        if rep:
            lines.append(f"replicated {rep['rep_ns_per_frame']:.1f} ns/frame (target <= 40)")
        if misd2 and misd2.get("against_ceiling"):
            goal = 0.90 if mode == "mtu" else 0.95
            lines.append(f"misd-2 at {misd2['against_ceiling']:.2f} of the copy-only ceiling "
                         f"{misd2['ceiling']:.2f}x (target >= {goal})")
        for foil in ("leader", "mimd"):
            f2 = by.get((foil, 2))
            if misd2 and f2:
                lines.append(f"misd-2 {misd2['gbps']:.1f} vs {foil}-2 {f2['gbps']:.1f} Gbit/s "
                             f"({'faster' if misd2['gbps'] > f2['gbps'] else 'NOT faster'})")
        if misd1:
            lines.append(f"misd-1 / single {misd1['speedup_paired']:.3f} (target >= 0.95)")
        say(f"targets, {mode}: " + "; ".join(lines))


def main(argv=None):
    args = parse_args(argv)

    def say(text):
        print(text, flush=True)

    meta = common.metadata()
    say(f"replay scaling: {args.bytes >> 20} MiB per run, workers {args.workers}, modes {args.modes}, "
        f"strategies {args.strategies}, stripes {args.stripes}, coalescing {'on' if args.coalesce else 'off'}, "
        f"loss {args.loss}, reorder {args.reorder}, {args.repeats} repeats; "
        f"{meta['cpus']} CPUs ({meta['cpu_model']}), load {meta['loadavg'][0]:.2f}")
    records = []
    failed = False
    for mode in args.modes:
        variants, raw, frames, descriptors, checked, rep = measure_mode(args, mode, say)
        serial = serial_stage(mode, say) if args.sequencer else None
        recs = build_records(args, mode, variants, raw, frames, descriptors, checked, rep, serial, meta)
        failed |= any(v is False for v in checked.values())
        print_records(recs, mode, say)
        records.extend(recs)
    say("")
    check_targets(records, say)
    if args.json:
        common.write_json(args.json, records)
        say(f"wrote {args.json}")
    if args.plot:
        plot(records, args.plot, args.modes)
        say(f"wrote {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
