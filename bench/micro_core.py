#!/usr/bin/env python3
"""Cost of the TCP core per received data frame, excluding the payload copy.

A pyperf benchmark (so results can be saved with -o and compared with
`pyperf compare_to`).  One established connection receives full-sized
(1448-byte payload, timestamps on) data frames flagged FRAME_CSUM_VALID, as
with checksum offload, so checksum verification is excluded; the core emits
its Copy actions but nobody applies them.  The frame loop runs in C
(`_tcpcore.bench_frames`), so no Python object is made per frame: the
figure is parse + acceptability + reassembly bookkeeping + ACK policy (an
ACK built every second frame) + window accounting.

Cases (time per loop = per frame, per descriptor, or per ACK):
  core_inorder_frame   in-order frames, parsed and validated by the core
  core_ooo_frame       groups of 8: 7 out of order (each answered at once
                       with a SACK-carrying ACK), then the hole fill
  core_descriptor      in-order segment descriptors, as a replica gets them
                       from the log (validated once by the sequencer): the
                       fast path (header prediction)      (target <= 15 ns)
  core_descriptor_slow the same with the fast path off
  core_descriptor_x16  descriptors of 16 coalesced segments (per descriptor)
  core_ack_build       one pure ACK built (IPv4 + TCP + timestamps)

    .venv/bin/python bench/micro_core.py --fast
    .venv/bin/python bench/micro_core.py -o before.json; ...; pyperf compare_to before.json after.json
"""
import pyperf
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw, raw

from misdtcp._tcpcore import TcpCore, bench_acks, bench_descriptors, bench_frames

STACK, KERNEL = "10.77.0.2", "10.77.0.1"
MS = 1_000_000
PAYLOAD = 1448
NFRAMES = 64                  # distinct prebuilt frames cycled through (seq rewritten in place)


def segment(flags, seq, ack, payload=b"", options=None):
    opts = options if options is not None else [("NOP", None), ("NOP", None), ("Timestamp", (100, 0))]
    pkt = IP(src=KERNEL, dst=STACK) / TCP(sport=40000, dport=5201, flags=flags, seq=seq, ack=ack,
                                          window=65535, options=opts)
    return raw(pkt / Raw(payload)) if payload else raw(pkt)


def established_core(**replica):
    core = TcpCore(STACK, secret=7, rcvbuf=4 << 20, **replica)
    now = 1000 * MS
    core.listen(5201, now=now)
    syn = segment("S", 1000, 0, options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (100, 0)),
                                         ("WScale", 7)])
    synack = IP(core.frame(syn, now)[0].header)[TCP]
    ts = dict((k, v) for k, v in synack.options if k == "Timestamp")["Timestamp"]
    acts = core.frame(segment("A", 1001, synack.seq + 1, options=[("NOP", None), ("NOP", None),
                                                                   ("Timestamp", (100, ts[0]))]), now)
    conn = acts[0].handle
    core.accepted(conn, now=now)
    blob = bytearray()
    offsets = []
    for i in range(NFRAMES):
        offsets.append(len(blob))
        blob += segment("A", 1001, synack.seq + 1, bytes([i]) * PAYLOAD,
                        options=[("NOP", None), ("NOP", None), ("Timestamp", (100, ts[0]))])
    offsets.append(len(blob))
    return core, conn, blob, offsets


def frames_case(order, **replica):
    core, conn, blob, offsets = established_core(**replica)

    def run(loops):
        t0 = pyperf.perf_counter()
        bench_frames(core, conn, blob, offsets, loops, order=order)
        return pyperf.perf_counter() - t0
    return run, core


def descriptors_case(segments=1, fast_path=True):
    core, conn, blob, offsets = established_core(fast_path=fast_path)

    def run(loops):
        t0 = pyperf.perf_counter()
        bench_descriptors(core, conn, loops, segments=segments)
        return pyperf.perf_counter() - t0
    return run


def ack_case():
    core, conn, blob, offsets = established_core()

    def run(loops):
        t0 = pyperf.perf_counter()
        bench_acks(core, conn, loops)
        return pyperf.perf_counter() - t0
    return run


def main():
    runner = pyperf.Runner()
    runner.metadata["description"] = "misdtcp TCP core cost per frame (payload copy excluded)"
    inorder, core = frames_case(None)
    runner.bench_time_func("core_inorder_frame", inorder)
    ooo, _ = frames_case([1, 2, 3, 4, 5, 6, 7, 0])
    runner.bench_time_func("core_ooo_frame", ooo)
    # one replica of two (what each misd worker runs): owns half the stripes
    # and every other ACK, processes every frame
    split, _ = frames_case(None, replica=0, replicas=2, stripe=16384)
    runner.bench_time_func("core_inorder_frame_replica_0_of_2", split)
    runner.bench_time_func("core_descriptor", descriptors_case())
    runner.bench_time_func("core_descriptor_slow", descriptors_case(fast_path=False))
    runner.bench_time_func("core_descriptor_x16", descriptors_case(segments=16))
    runner.bench_time_func("core_ack_build", ack_case())


if __name__ == "__main__":
    main()
