#!/usr/bin/env python3
"""Cost of one hop through the broadcast ring, per record.

A producer process publishes N records (reserve, write the whole payload as the
kernel's TUN read would, commit) and 1 or 2 consumer processes take them in
batches (read the header and the payload's first and last byte, release).  The
hop cost is the wall time from the producer's first reserve to the last
consumer's last release, divided by N: the per-record price of the broadcast
in a pipeline, which is what the sequencer -> worker path pays.  With 2
consumers there are 3 processes on this 2-core machine, so the futex sleep
path is part of the measurement.

    .venv/bin/python bench/ring_hop.py [--quick] [--json FILE] [--repeats N]

Prints a table: median and spread (min..max) over repeats, per case.
"""
import argparse
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time

from misdtcp.testing import ring_harness

FORK = multiprocessing.get_context("fork")


def _run_producer(ring, count, payload_len, spin, barrier, results, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    barrier.wait()
    results.put(("producer", ring_harness.bench_produce(ring, count, payload_len, spin)))


def _run_consumer(ring, consumer_id, spin, barrier, results, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    barrier.wait()
    results.put(("consumer", ring_harness.bench_consume(ring, consumer_id, spin)))


def one_run(consumers, payload_len, count, ring_size, spin, pin):
    """One timed run; returns a dict of measurements."""
    cpus = sorted(os.sched_getaffinity(0))
    ring = _ring.BroadcastRing(ring_size, consumers)
    barrier = FORK.Barrier(consumers + 1)
    results = FORK.SimpleQueue()

    def cpu_for(index):                  # producer on the first CPU, consumers on the others
        return cpus[index % len(cpus)] if pin else None

    processes = [FORK.Process(target=_run_producer,
                              args=(ring, count, payload_len, spin, barrier, results, cpu_for(0)))]
    processes += [FORK.Process(target=_run_consumer,
                               args=(ring, cid, spin, barrier, results, cpu_for(cid + 1)))
                  for cid in range(consumers)]
    try:
        for process in processes:
            process.start()
        got = [results.get() for _ in processes]
        for process in processes:
            process.join()
        if any(p.exitcode for p in processes):
            raise RuntimeError(f"a benchmark process failed: {[p.exitcode for p in processes]}")
        counters = ring.counters()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        ring.close()
    start, producer_end = next(value for kind, value in got if kind == "producer")
    ends = [value for kind, value in got if kind == "consumer"]
    for _first, _end, records, _checksum in ends:
        if records != count:
            raise RuntimeError(f"a consumer saw {records} records, expected {count}")
    elapsed = max(end for _first, end, _records, _checksum in ends) - start
    return {
        "ns_per_record": elapsed / count,
        "producer_ns_per_record": (producer_end - start) / count,
        "consumer_sleeps_per_1k": 1000 * sum(c["sleeps"] for c in counters["consumers"]) / count,
        "producer_full_waits_per_1k": 1000 * counters["producer"]["full_waits"] / count,
        "producer_wakes_per_1k": 1000 * counters["producer"]["wakes"] / count,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and repeats (a smoke run)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--repeats", type=int, help="runs per case (default 7, quick 3)")
    parser.add_argument("--records", type=int, help="records per run (default 2,000,000, quick 200,000)")
    parser.add_argument("--ring-size", type=int, default=1 << 20, help="data area bytes (power of two)")
    parser.add_argument("--spin", type=int, default=_ring.DEFAULT_SPIN, help="PAUSE spins before a futex sleep")
    parser.add_argument("--pin", action="store_true", help="pin producer and consumers to CPUs")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    count = args.records or (200_000 if args.quick else 2_000_000)

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"# {command}")
    print(f"# {platform.node()}  {platform.machine()}  cpus={len(os.sched_getaffinity(0))}  "
          f"ring={args.ring_size} B  records/run={count}  repeats={repeats}  spin={args.spin}"
          f"{'  pinned' if args.pin else ''}")
    header = (f"{'consumers':>9} {'payload':>7} | {'ns/record':>9} {'min':>7} {'max':>7} "
              f"{'Mrec/s':>7} {'GB/s':>6} | {'sleeps/1k':>9} {'full/1k':>8}")
    print(header)
    print("-" * len(header))
    cases = []
    for consumers in (1, 2):
        for payload_len in (64, 1500):
            runs = [one_run(consumers, payload_len, count, args.ring_size, args.spin, args.pin)
                    for _ in range(repeats)]
            per_record = [r["ns_per_record"] for r in runs]
            median = statistics.median(per_record)
            case = {
                "consumers": consumers,
                "payload_bytes": payload_len,
                "median_ns_per_record": median,
                "min_ns_per_record": min(per_record),
                "max_ns_per_record": max(per_record),
                "runs": runs,
            }
            cases.append(case)
            sleeps = statistics.median(r["consumer_sleeps_per_1k"] for r in runs)
            full = statistics.median(r["producer_full_waits_per_1k"] for r in runs)
            print(f"{consumers:>9} {payload_len:>7} | {median:>9.1f} {min(per_record):>7.1f} "
                  f"{max(per_record):>7.1f} {1e3 / median:>7.2f} {payload_len / median:>6.2f} | "
                  f"{sleeps:>9.2f} {full:>8.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({
                "benchmark": "ring_hop",
                "command": command,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": platform.node(),
                "cpus": len(os.sched_getaffinity(0)),
                "ring_size": args.ring_size,
                "records_per_run": count,
                "repeats": repeats,
                "spin": args.spin,
                "pinned": args.pin,
                "cases": cases,
            }, out, indent=2)
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
