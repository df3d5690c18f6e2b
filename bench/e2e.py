#!/usr/bin/env python3
"""End to end: the stock iperf3 client against the kernel and misdtcp, same run.

Every receiver runs in network namespaces this program creates (and deletes,
also on failure or Ctrl-C); nothing leaves them:

  kernel      the Linux kernel's `iperf3 -s` in a second namespace, joined to
              the client's by a veth pair (MTU 1500): the reference
  misdtcp     `misdtcp serve --app iperf3` inside the client's namespace
              (MTU 1500) on a device (`--devices`): a TUN, or a veth pair whose
              stack end it reads through an AF_PACKET ring (packet-ring); with
              offload (TSO/GSO super-frames and checksum offload) or without;
              strategies single / misd / mimd; 1..N workers; misd in both
              placements (replica 0 inline in the sequencer, or the sequencer
              apart)

and three directions of one TCP stream (`--modes`):

  forward     iperf3 -c: the client sends, the receiver under test receives
  reverse     iperf3 -c -R: the server under test sends
  bidir       iperf3 -c --bidir: both at once; `gbps` is the direction into
              the server, `gbps_out` the one out of it

One variant = one fresh set of namespaces + one `iperf3 -c ... -t SECONDS -J`.
Variants are interleaved over repeats (each repeat runs every variant once,
order rotated); the table shows medians and min..max, the ratio to the
kernel's median in the same mode and run, and CPU use:

  client %    iperf3's own host_total (the client process, user + system)
  server %    the server's process tree, from /proc before and after the
              client runs (misdtcp: serve, its sequencer and workers; the
              kernel: the iperf3 -s process -- receive softirq work the
              kernel does on the sender's CPU is not in it)
  Gb/s/CPU    Gbit/s (both directions for bidir) per server CPU used
  machine %   all CPUs busy during the run, of 100% x CPUs
  seq ns      misdtcp: the sequencer's CPU time per frame it read (the serial
              stage; with the inline placement replica 0's own time is left out)
  rexmit      misdtcp sending (reverse, bidir): retransmitted / sent segments

    .venv/bin/python bench/e2e.py --quick
    .venv/bin/python bench/e2e.py --devices tun,packet-ring --modes forward --strategies misd,single
    .venv/bin/python bench/e2e.py --seconds 5 --repeats 3 --json bench/results/e2e.json --plot bench/plots/e2e.png

Needs root (namespaces, TUN) and iperf3.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from misdtcp.device.netns import Netns, NetnsError
from misdtcp.device.veth import VethPair
from misdtcp.testing.lab import reap_stale  # noqa: E402

PREFIX = "misdtcp-bench"
KERNEL_CIDR = "10.77.0.1/24"
STACK_ADDR = "10.77.0.2"
SERVE_START_TIMEOUT = 20.0
MODES = {"forward": [], "reverse": ["-R"], "bidir": ["--bidir"]}
DEVICES = ("tun", "packet-ring")


def parse_args(argv=None):
    ncpu = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run [5]")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant [3]")
    p.add_argument("--modes", default="forward,reverse,bidir", help="directions [forward,reverse,bidir]")
    p.add_argument("--workers", default=None, help=f"worker counts, e.g. 1,2 [1..{ncpu}]")
    p.add_argument("--strategies", default="single,misd,mimd", help="misdtcp strategies [single,misd,mimd]")
    p.add_argument("--placements", default="inline,separate", help="misd placements [inline,separate]")
    p.add_argument("--offload", default="on,off", help="misdtcp offload settings (off: forward only) [on,off]")
    p.add_argument("--devices", default="tun", help="misdtcp devices: tun, packet-ring [tun]")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: 2 s runs, 1 repeat; forward: kernel, single, misd 1 and N "
                        "(auto placement), misd N without offload; reverse: kernel, misd N; bidir: misd N")
    p.add_argument("--json", help="write the records to this file")
    p.add_argument("--plot", help="write Gbit/s per receiver to this PNG")
    args = p.parse_args(argv)
    args.workers = [int(x) for x in args.workers.split(",")] if args.workers else list(range(1, ncpu + 1))
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.placements = [s for s in args.placements.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    args.offload = [o == "on" for o in args.offload.split(",") if o]
    args.devices = [d for d in args.devices.split(",") if d]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"--modes: {bad[0]!r} is not one of {', '.join(MODES)}")
    bad = [d for d in args.devices if d not in DEVICES]
    if bad or not args.devices:
        p.error(f"--devices: {(bad or [''])[0]!r} is not one of {', '.join(DEVICES)}")
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
        args.repeats = 1
    if args.seconds <= 0 or args.seconds > 120:
        p.error("--seconds must be in (0, 120]")
    return args


def _variant(mode, receiver="kernel", strategy=None, workers=None, offload=None, placement=None, device="veth"):
    """One receiver to measure.  `device`: the kernel's own receiver is always
    reached over a veth pair; misdtcp's over "tun" or "packet-ring"."""
    return dict(key=(mode, receiver, strategy, workers, offload, placement, device), mode=mode, receiver=receiver,
                strategy=strategy, workers=workers, offload=offload, placement=placement, device=device)


def variants_for(args):
    top = max(args.workers)
    if args.quick:
        vs = [_variant("forward")]
        for d in args.devices:
            vs += [_variant("forward", "misdtcp", "single", 1, True, "auto", d),
                   _variant("forward", "misdtcp", "misd", 1, True, "auto", d),
                   _variant("forward", "misdtcp", "misd", top, True, "auto", d),
                   _variant("forward", "misdtcp", "misd", top, False, "auto", d)]
        vs.append(_variant("reverse"))
        vs += [_variant("reverse", "misdtcp", "misd", top, True, "auto", d) for d in args.devices]
        vs += [_variant("bidir", "misdtcp", "misd", top, True, "auto", d) for d in args.devices]
        return [v for v in vs if v["mode"] in args.modes]
    vs = []
    for mode in args.modes:
        vs.append(_variant(mode))
        for device in args.devices:
            for offload in args.offload:
                if not offload and mode != "forward":
                    continue
                for strategy in args.strategies:
                    for w in ([1] if strategy == "single" else args.workers):
                        if strategy == "mimd" and w == 1:
                            continue                      # mimd with one worker is single plus a ring
                        for placement in (args.placements if strategy == "misd" else ["auto"]):
                            vs.append(_variant(mode, "misdtcp", strategy, w, offload, placement, device))
    return vs


def _client(ns, server, seconds, mode):
    proc = ns.run(["iperf3", "-c", server, "-t", f"{seconds:g}", "-J", *MODES[mode]], check=False,
                  timeout=seconds + 30)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"iperf3 client printed no JSON (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[-200:]}") from None
    if "error" in result:
        raise RuntimeError(f"iperf3: {result['error']}")
    end = result["end"]
    cpu = end.get("cpu_utilization_percent", {})
    out = dict(gbps=end["sum_received"]["bits_per_second"] / 1e9,
               sender_retransmits=end.get("sum_sent", {}).get("retransmits"),
               client_cpu=cpu.get("host_total"), remote_cpu_reported=cpu.get("remote_total"),
               congestion=end.get("sender_tcp_congestion"))
    if mode == "bidir":
        out["gbps_out"] = end["sum_received_bidir_reverse"]["bits_per_second"] / 1e9
    return out


def _timed_client(ns, server_pid, server, seconds, mode):
    busy0, total0 = common.machine_busy()
    cpu0 = common.proc_tree_cpu(server_pid)
    t0 = time.monotonic()
    out = _client(ns, server, seconds, mode)
    wall = time.monotonic() - t0
    cpu1 = common.proc_tree_cpu(server_pid)
    busy1, total1 = common.machine_busy()
    out["server_cpu"] = 100 * (cpu1 - cpu0) / wall
    out["machine_cpu"] = 100 * len(os.sched_getaffinity(0)) * (busy1 - busy0) / max(1, total1 - total0)
    both = out["gbps"] + out.get("gbps_out", 0.0)
    out["gbps_per_server_cpu"] = both / (out["server_cpu"] / 100) if out["server_cpu"] > 0 else None
    return out


def _wait_port(ns, addr, port, deadline):
    """Bounded wait until something accepts TCP on addr:port inside ns."""
    probe = ("import socket,sys\ns=socket.socket();s.settimeout(0.5)\n"
             f"sys.exit(0 if s.connect_ex(({addr!r},{port}))==0 else 1)")
    while time.monotonic() < deadline:
        if ns.run([sys.executable, "-c", probe], check=False, timeout=5).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def run_kernel(seconds, mode):
    client = Netns(prefix=PREFIX).create()
    server = veth = None
    try:
        server = Netns(prefix=PREFIX).create()
        veth = VethPair(client, server, cidr_a="10.78.0.1/24", cidr_b="10.78.0.2/24").create()
        # not -1: the readiness probe is a connection of its own, which a
        # one-off server would take as its test
        proc = server.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _wait_port(client, veth.addr_b, 5201, time.monotonic() + 10):
            raise RuntimeError("the kernel's iperf3 -s did not start listening within 10 s")
        time.sleep(0.2)
        return _timed_client(client, proc.pid, veth.addr_b, seconds, mode)
    finally:
        if veth is not None:
            veth.delete()
        if server is not None:
            server.delete()
        client.delete()


def _serve_summary(lines):
    """The summary record `misdtcp serve --json` printed when it stopped."""
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "summary":
                return record
    return None


def run_misdtcp(seconds, mode, strategy, workers, offload, placement, device="tun"):
    ns = Netns(prefix=PREFIX).create()
    proc = None
    lines = []
    try:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
        env = dict(os.environ)
        src = os.path.join(common.REPO, "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # an IPv4 benchmark in a namespace without IPv6: serve is dual-stack on a TUN unless told
        argv = [sys.executable, "-m", "misdtcp", "serve", "--device", device, "--tun", "misd0", "--veth", "misd0",
                "--address", STACK_ADDR,
                "--kernel-address", KERNEL_CIDR, "--no-ipv6", "--app", "iperf3", "--workers", str(workers),
                "--strategy", strategy, "--offload" if offload else "--no-offload", "--placement", placement,
                "--json", "--interval", "3600", "--duration", f"{seconds + 40:g}"]
        proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        ready = threading.Event()

        def reader():
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if '"event": "serving"' in line or line.startswith("misdtcp: serving"):
                    ready.set()
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        while not ready.is_set() and time.monotonic() < deadline and proc.poll() is None:
            ready.wait(0.1)
        if not ready.is_set():
            raise RuntimeError(f"misdtcp serve did not start within {SERVE_START_TIMEOUT:g} s: "
                               + " | ".join(lines[-3:]))
        time.sleep(0.2)
        out = _timed_client(ns, proc.pid, STACK_ADDR, seconds, mode)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        thread.join(5)
        summary = _serve_summary(lines)
        if summary is not None:
            out["placement_used"] = summary.get("placement")
            seq = summary.get("sequencer") or {}
            out["sequencer_ns_per_frame"] = seq.get("ns_per_frame")
            sent = sum(summary.get("segments_sent", [])) or None
            if mode != "forward" and sent:
                out["retransmit_ratio"] = summary.get("retransmits", 0) / sent
            out["process_cpu"] = summary.get("cpu")
            out["ring_drops"] = summary.get("ring_drops")
        return out
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        ns.delete()


def run_variant(v, seconds):
    try:
        if v["receiver"] == "kernel":
            return run_kernel(seconds, v["mode"])
        return run_misdtcp(seconds, v["mode"], v["strategy"], v["workers"], v["offload"], v["placement"],
                           v["device"])
    except (RuntimeError, OSError, ValueError, NetnsError, subprocess.SubprocessError) as exc:
        return dict(error=str(exc))


def label(r):
    if r["receiver"] == "kernel":
        return f"{r['mode']:7} kernel iperf3 -s (veth)"
    place = f" {r['placement']}" if r["strategy"] == "misd" else ""
    return (f"{r['mode']:7} {r['device']} {r['strategy']} {r['workers']}w{place} "
            f"offload {'on' if r['offload'] else 'off'}")


def summarize(variants, raw, args, meta):
    kernel = {}
    for v in variants:
        if v["receiver"] == "kernel":
            kernel[v["mode"]] = common.summary([r["gbps"] for r in raw[v["key"]] if "gbps" in r])["median"]
    records = []
    for v in variants:
        runs = raw[v["key"]]
        ok = [r for r in runs if "gbps" in r]
        g = common.summary([r["gbps"] for r in ok])
        med = lambda k: common.summary([r[k] for r in ok if r.get(k) is not None])["median"]  # noqa: E731
        ref = kernel.get(v["mode"])
        records.append(dict(
            mode=v["mode"], receiver=v["receiver"], device=v["device"], offload=v["offload"], strategy=v["strategy"],
            workers=v["workers"], placement=(ok[0].get("placement_used") if ok and ok[0].get("placement_used")
                                             else v["placement"]),
            gbps=g["median"], gbps_min=g["min"], gbps_max=g["max"], gbps_out=med("gbps_out"),
            runs=len(ok), failures=len(runs) - len(ok), errors=[r["error"] for r in runs if "error" in r],
            ratio_to_kernel=(g["median"] / ref) if (g["median"] is not None and ref) else None,
            client_cpu=med("client_cpu"), server_cpu=med("server_cpu"), machine_cpu=med("machine_cpu"),
            gbps_per_server_cpu=med("gbps_per_server_cpu"), remote_cpu_reported=med("remote_cpu_reported"),
            sender_retransmits=med("sender_retransmits"), retransmit_ratio=med("retransmit_ratio"),
            sequencer_ns_per_frame=med("sequencer_ns_per_frame"), ring_drops=med("ring_drops"),
            process_cpu=ok[-1].get("process_cpu") if ok else None,
            seconds=args.seconds, repeats=args.repeats, run=meta))
    return records


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("e2e.py needs root: it creates network namespaces and devices.", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("e2e.py needs the iperf3 program (apt-get install iperf3).", file=sys.stderr)
        return 2
    reap_stale(PREFIX)
    meta = common.metadata()
    variants = variants_for(args)
    print(f"end to end: iperf3 client <-> receiver, {args.seconds:g} s per run, {args.repeats} repeat(s), "
          f"{len(variants)} variants; {meta['cpu_model']}, {meta['cpus']} CPUs, "
          f"load {meta['loadavg'][0]:.2f}", flush=True)
    raw = {}

    def run_one(v):
        r = run_variant(v, args.seconds)
        raw.setdefault(v["key"], []).append(r)
        return r

    def progress(rep, v):
        r = raw[v["key"]][-1]
        text = f"{r['gbps']:.2f} Gbit/s" if "gbps" in r else f"failed: {r.get('error')}"
        print(f"  [{rep + 1}/{args.repeats}] {label(v):48} {text}", flush=True)
    common.interleaved(variants, args.repeats, run_one, progress)

    records = summarize(variants, raw, args, meta)
    print()
    common.print_table(records, [
        ("variant", label),
        ("Gbit/s", lambda r: f"{r['gbps']:.2f} ({r['gbps_min']:.2f}..{r['gbps_max']:.2f})"
         if r["gbps"] is not None else "failed"),
        ("out", lambda r: _num(r["gbps_out"])),
        ("/kernel", lambda r: _num(r["ratio_to_kernel"])),
        ("client %", lambda r: _pct(r["client_cpu"])),
        ("server %", lambda r: _pct(r["server_cpu"])),
        ("Gb/s/CPU", lambda r: _num(r["gbps_per_server_cpu"])),
        ("machine %", lambda r: _pct(r["machine_cpu"])),
        ("seq ns", lambda r: _pct(r["sequencer_ns_per_frame"])),
        ("rexmit", lambda r: f"{100 * r['retransmit_ratio']:.3f}%" if r["retransmit_ratio"] is not None else "-"),
        ("runs", lambda r: f"{r['runs']}/{r['runs'] + r['failures']}"),
    ])
    for r in records:
        for e in r["errors"][:1]:
            print(f"  {label(r)}: {e}")
    if args.json:
        common.write_json(args.json, records)
        print(f"wrote {args.json}")
    if args.plot:
        plot(records, args.plot)
        print(f"wrote {args.plot}")
    return 0 if all(r["runs"] for r in records) else 1


def _pct(v):
    return f"{v:.0f}" if v is not None else "-"


def _num(v):
    return f"{v:.2f}" if v is not None else "-"


def plot(records, path):
    plt = common.pyplot()
    modes = [m for m in MODES if any(r["mode"] == m for r in records)]
    fig, axes = plt.subplots(1, len(modes), figsize=(max(6, 0.75 * len(records) + 3), 4.4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [r for r in records if r["mode"] == mode]
        names = [label(r)[8:].replace(" offload ", "\n").replace("kernel iperf3 -s (veth)", "kernel")
                 for r in rows]
        y = [r["gbps"] or 0 for r in rows]
        err = [[(r["gbps"] - r["gbps_min"]) if r["gbps"] else 0 for r in rows],
               [(r["gbps_max"] - r["gbps"]) if r["gbps"] else 0 for r in rows]]
        colors = ["grey" if r["receiver"] == "kernel" else
                  {"misd": "C0", "mimd": "C1", "single": "C2"}[r["strategy"]] for r in rows]
        ax.bar(range(len(rows)), y, yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, fontsize=6.5, rotation=60, ha="right")
        ax.set_title(f"{mode}" + (" (into the server)" if mode == "bidir" else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("Gbit/s (iperf3, median of repeats)")
    fig.suptitle("iperf3 client <-> receiver, one TCP stream, same run", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
