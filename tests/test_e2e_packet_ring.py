"""End to end on the packet-ring device: the kernel's TCP (and the stock
iperf3 client) on one end of a veth pair, misdtcp on the other through an
AF_PACKET ring, inside a network namespace each test creates and deletes.

The set TUN has (tests/test_e2e_transfer.py, tests/test_e2e_faults.py) on
this device, and what only this device has: the kernel resolves the stack
through the stack's own ARP reply, the payload is never copied before the
workers' stripe copies, a ring smaller than the window loses frames but
never bytes, frames that are not ours are counted by reason, and nothing
is left behind."""
import gc
import json
import os
import subprocess
import sys
import threading

import pytest

from misdtcp.api import Stack, StackError
from misdtcp.apps import discard
from misdtcp.testing.lab import NftLoss
from netns_helpers import TUN_NAME, finish, make_packet_ring_netns, require_netns
from stack_helpers import STACK_ADDR, serving, wait_for
from test_e2e_faults import FAULTS
from test_e2e_transfer import ECHO_CLIENTS, SENDER, iperf3, needs_iperf3

pytestmark = pytest.mark.netns

DEVICE = "packet-ring"
PLACEMENTS = ["inline", "separate"]


def send(ns, total, timeout=240):
    """The kernel sends `total` random bytes to the discard app; returns the SHA-256 it sent."""
    proc = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=9), str(total)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rc, out, err = finish(proc, timeout=timeout)
    assert rc == 0, err
    sent, digest = out.split()
    assert int(sent) == total
    return digest


@pytest.mark.timeout(300)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_to_discard_256_mib_sha256_matches(workers, offload, placement):
    total = 256 << 20
    reports = []
    with serving("discard", workers=workers, offload=offload, reports=reports, placement=placement,
                 device=DEVICE) as (ns, stack):
        assert stack.placement == placement
        digest = send(ns, total)
        assert wait_for(lambda: reports, timeout=20), "the discard app never reported the connection"
        assert reports[0]["bytes"] == total
        assert reports[0]["sha256"] == digest
        # with offload the kernel hands over 64 KiB super-frames, one per slot
        per_frame = 65536 if offload else 1448
        assert wait_for(lambda: stack.sequencer_counters()["frames"] >= total // per_frame, timeout=5)
        assert stack.sequencer_counters()["frames"] < (total // per_frame) * (3 if offload else 1.2)
        counters = stack.worker_counters()
        if workers > 1:
            assert all(c["bytes_copied"] > total // 4 for c in counters)
        # the ACKs leave through the workers' sendmmsg batches (how many per
        # call depends on the batch: test_reverse_sends_in_order_... counts)
        assert sum(c["tx_batches"] for c in counters) > 0
        assert all(c["write_errors"] == 0 for c in counters)
        if not offload:
            # MTU-sized frames in consecutive slots are coalesced where they
            # lie (FRAME_STRIDED runs), so the stack acknowledges runs, not
            # every second frame -- and the SHA-256 above says each piece was
            # copied from the right slot to the right place
            frames = stack.sequencer_counters()["frames"]
            assert stack.sequencer_counters()["coalesced"] > frames // 4
            assert stack.core_stats()[0]["acks_out"] < frames // 3


@pytest.mark.timeout(240)
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_receive_copies_the_payload_only_into_the_receive_buffers(offload):
    """The log points into the ring's slots: the sequencer copies no frame,
    the log's data area carries only records (requests, ticks), and the
    workers' stripe copies add up to the stream -- each byte copied once,
    from where the kernel put it."""
    total = 64 << 20
    reports = []
    with serving("discard", workers=2, offload=offload, reports=reports, device=DEVICE) as (ns, stack):
        digest = send(ns, total)
        assert wait_for(lambda: reports, timeout=20)
        assert reports[0]["sha256"] == digest
        assert wait_for(lambda: sum(c["bytes_copied"] for c in stack.worker_counters()) >= total, timeout=5)
        # the log's data area carried records only (requests, ticks), no payload
        assert stack.ring_counters()["producer"]["bytes"] < total // 1000
        assert sum(c["bytes_copied"] for c in stack.worker_counters()) == total
        assert wait_for(lambda: stack.sequencer_counters()["frames"] >= total // 65536, timeout=5)
        seq = stack.sequencer_counters()
        assert seq["copied"] == 0
        assert seq["in_place"] >= total // (65536 if offload else 1448)


@pytest.mark.timeout(180)
def test_the_kernel_resolves_the_stack_through_its_own_arp_reply():
    """No neighbour entry is installed: the kernel asks, the stack answers
    with its end's MAC, and the connection goes through."""
    with serving("discard", device=DEVICE) as (ns, stack):
        def neighbour():
            shown = json.loads(ns.run(["ip", "-j", "neigh", "show", "to", STACK_ADDR, "dev", TUN_NAME]).stdout or b"[]")
            return shown[0] if shown else None
        assert neighbour() is None
        send(ns, 1 << 20, timeout=60)
        entry = neighbour()
        assert entry is not None and entry.get("lladdr") == ":".join(f"{b:02x}" for b in stack.device.mac)
        assert not set(entry.get("state", [])) & {"FAILED", "INCOMPLETE", "PERMANENT"}
        assert wait_for(lambda: stack.sequencer_counters()["arp_replies"] >= 1, timeout=5)


INJECT = """
import socket, struct, sys
stack_mac, kernel_mac = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind(({ifname!r}, 0))
ip = bytes.fromhex("4500001c000040004011" + "0000" + "0a4d0001" + "0a4d0002") + bytes(8)
arp = lambda op, dst_mac, target: (dst_mac + kernel_mac + b"\\x08\\x06" +
        struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, kernel_mac, bytes([10, 77, 0, 1]), bytes(6), target))
frames = ([b"\\x02\\x00\\x00\\x00\\x00\\x99" + kernel_mac + b"\\x08\\x00" + ip] * 3       # another MAC
          + [stack_mac + kernel_mac + b"\\x86\\xdd" + bytes(40)] * 4                      # IPv6
          + [arp(1, b"\\xff" * 6, bytes([10, 77, 0, 9]))] * 5                              # who-has someone else
          + [arp(2, stack_mac, bytes([10, 77, 0, 2]))] * 2)                                # a reply we never asked for
for f in frames:
    s.send(f)
print(len(frames), flush=True)
"""


@pytest.mark.timeout(120)
def test_frames_that_are_not_ours_are_counted_by_reason():
    with serving("discard", device=DEVICE) as (ns, stack):
        proc = ns.python(["-c", INJECT.format(ifname=TUN_NAME), stack.device.mac.hex(), stack.device.peer_mac.hex()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=30)
        assert rc == 0, err
        want = {"link_not_for_us": 3, "link_type": 4, "arp_not_for_us": 7}
        assert wait_for(lambda: all(stack.core_stats()[1].get(k, 0) >= v for k, v in want.items()), timeout=10), \
            stack.core_stats()[1]
        drops = stack.core_stats()[1]
        assert {k: drops.get(k, 0) for k in want} == want
        assert stack.sequencer_counters()["arp_replies"] == 0


# As fast as the kernel sends: one random block (of a prime size, so no
# frame's payload repeats at any offset a ring slot could be confused with)
# sent over and over, the digest computed afterwards.
FAST_SENDER = """
import hashlib, os, socket, sys
total = int(sys.argv[1])
block = os.urandom(1000003)
s = socket.create_connection(({addr!r}, 9), timeout=30)
sent = 0
while sent < total:
    n = min(len(block), total - sent)
    s.sendall(block[:n])
    sent += n
s.shutdown(socket.SHUT_WR)
s.settimeout(30)
s.recv(1)
h, done = hashlib.sha256(), 0
while done < total:
    n = min(len(block), total - done)
    h.update(block[:n])
    done += n
print(sent, h.hexdigest(), flush=True)
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("offload,slots", [(True, 8), (False, 64)], ids=["offload", "no-offload"])
def test_a_ring_smaller_than_the_window_loses_frames_never_bytes(offload, slots):
    """A ring that holds a fraction of a 4 MiB window: the kernel finds the
    slot at its head still held and drops frames (its TCP retransmits them),
    while every slot the stack still reads from stays the stack's -- and the
    frames that arrive out of order around the holes never pin the ring."""
    require_netns()
    total = 32 << 20
    ns, device = make_packet_ring_netns(offload=offload, slots=slots)
    stack = None
    try:
        stack = Stack(device, address=STACK_ADDR, workers=2, offload=offload).start()
        reports, stop = [], threading.Event()
        threading.Thread(target=discard.serve, args=(stack, 9), kwargs={"stop": stop, "report": reports.append},
                         daemon=True).start()
        proc = ns.python(["-c", FAST_SENDER.format(addr=STACK_ADDR), str(total)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rc, out, err = finish(proc, timeout=200)
        assert rc == 0, err
        digest = out.split()[1]
        assert wait_for(lambda: reports, timeout=30)
        stop.set()
        assert reports[0]["bytes"] == total and reports[0]["sha256"] == digest
        assert device.statistics()["dropped"] > 0
    finally:
        if stack is not None:
            stack.stop()
        device.close()
        ns.delete()


@needs_iperf3
@pytest.mark.timeout(180)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("args", [[], ["-R"], ["-P", "4"], ["--bidir"]],
                         ids=["normal", "reverse", "parallel-4", "bidir"])
def test_stock_iperf3_client_completes(args, placement):
    with serving("iperf3", workers=2, placement=placement, device=DEVICE) as (ns, stack):
        rc, result = iperf3(ns, *args)
        assert rc == 0, result.get("error")
        end = result["end"]
        assert end["sum_received"]["bytes"] > 1 << 20
        assert end["sum_received"]["bits_per_second"] > 50e6          # plausible, not a speed test
        if "--bidir" in args:
            assert end["sum_received_bidir_reverse"]["bytes"] > 1 << 20
        assert len(end["streams"]) == (4 if "-P" in args else 2 if "--bidir" in args else 1)


@needs_iperf3
@pytest.mark.timeout(180)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("workers", [1, 2])
def test_reverse_sends_in_order_as_gso_super_frames(workers, placement):
    """misdtcp sending (iperf3 -R): each worker writes its segments to its
    own packet socket, in sequence order across workers, as 64 KiB GSO
    super-frames the kernel takes whole."""
    with serving("iperf3", workers=workers, placement=placement, device=DEVICE) as (ns, stack):
        rc, result = iperf3(ns, "-R", seconds=3)
        assert rc == 0, result.get("error")
        assert result["end"]["sum_received"]["bytes"] > 16 << 20
        assert wait_for(lambda: stack.core_stats()[0]["segs_out"] > 1000, timeout=5)
        stats, _ = stack.core_stats(fresh=True)
        counters = stack.worker_counters()
        # the kernel saw no hole, so the stack never entered fast retransmit --
        # except after a hand-off that gave up waiting (50 ms: a process
        # descheduled that long on a loaded machine), which then writes out
        # of order on purpose (docs/DESIGN.md, "Send path")
        gave_up = sum(c["order_waits"]["timeouts"] for c in counters)
        assert stats["fast_retransmits"] <= gave_up
        if stats["rto_expired"] == 0 and gave_up == 0:
            # nothing sent twice but what a timer sent: a stack starved of CPU
            # on a loaded machine sees its probe timeout fire before the ACKs
            # come (as tests/test_e2e_transfer.py's TUN version allows)
            assert stats["retransmits"] - stats["tail_loss_probes"] <= stats["segs_out"] // 1000
        assert all(c["write_errors"] == 0 for c in counters)
        # written in batches (sendmmsg), several frames per system call
        assert sum(c["segments_sent"] for c in counters) > sum(c["tx_batches"] for c in counters) > 0
        # bytes per written frame far above an Ethernet MTU: super-frames
        assert sum(c["bytes_sent"] for c in counters) / sum(c["segments_sent"] for c in counters) > 8 * 1514
        if workers > 1:
            sent = [c["segments_sent"] for c in counters]
            assert min(sent) > max(sent) // 4


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strategy,workers", [("single", 1), ("mimd", 2), ("misd", 3)])
def test_every_strategy_delivers_exactly(strategy, workers):
    total = 64 << 20
    reports = []
    with serving("discard", workers=workers, strategy=strategy, reports=reports, device=DEVICE,
                 cpus=[0, 1, 0][:workers] if workers > 2 else None) as (ns, stack):
        digest = send(ns, total, timeout=150)
        assert wait_for(lambda: reports, timeout=20)
        assert reports[0]["bytes"] == total and reports[0]["sha256"] == digest


@pytest.mark.timeout(300)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_to_stack_through_faults_sha256_matches(workers, placement):
    """Faults injected in the device layer in both directions, and 1 % loss
    of the frames the stack sends, where they arrive on the kernel's end."""
    total = 64 << 20
    reports = []
    with serving("discard", workers=workers, reports=reports, faults=FAULTS, placement=placement,
                 device=DEVICE) as (ns, stack):
        with NftLoss(ns, stack.device.kernel_ifname, 1, direction="ingress"):
            digest = send(ns, total)
        assert wait_for(lambda: reports, timeout=30)
        assert reports[0]["bytes"] == total and reports[0]["sha256"] == digest
        _, drops = stack.core_stats()
        # the injected corruption was caught by checksums, not delivered
        assert drops.get("tcp_checksum", 0) + drops.get("ip_checksum", 0) > 0


@pytest.mark.timeout(300)
def test_echo_both_directions_through_faults():
    with serving("echo", workers=2, faults=FAULTS, device=DEVICE) as (ns, stack):
        with NftLoss(ns, stack.device.kernel_ifname, 1, direction="ingress") as loss:
            proc = ns.python(["-c", "import json\n" + ECHO_CLIENTS.format(addr=STACK_ADDR), "8", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            rc, out, err = finish(proc, timeout=240)
            lost = loss.dropped()
        assert rc == 0, err
        assert json.loads(out)["errors"] == []
        stats, _ = stack.core_stats()
        assert stats["retransmits"] > 0 or lost == 0


def _socket_mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "socket:[" in line)


def _receive(ns, stack, total):
    listener = stack.listen(9)
    client = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=9), str(total)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = listener.accept(timeout=10)
    got = 0
    while got < total:
        view = conn.recv_view(timeout=10)
        got += len(view)
        conn.release(view)
    conn.close()
    rc, _, err = finish(client, timeout=30)
    assert rc == 0, err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy,workers,placement", [("misd", 2, "separate"), ("misd", 2, "inline"),
                                                         ("single", 1, "auto")])
def test_start_stop_leaves_no_veth_ring_mapping_socket_or_process(strategy, workers, placement):
    require_netns()
    gc.collect()
    fds_before = set(os.listdir("/proc/self/fd"))
    maps_before = _socket_mappings()
    ns, device = make_packet_ring_netns()
    try:
        assert _socket_mappings() == maps_before + 1          # the ring, mapped once, here
        stack = Stack(device, address=STACK_ADDR, workers=workers, strategy=strategy, placement=placement).start()
        pids = list(stack.processes().values())
        _receive(ns, stack, 4 << 20)        # so the ring, the sockets and the processes all did work
        stack.stop()
        device.close()
        del stack
        gc.collect()
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        assert _socket_mappings() == maps_before
        assert {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - fds_before} == {}
        links = ns.run(["ip", "-o", "link", "show"]).stdout.decode()
        assert TUN_NAME not in links and device.stack_end not in links
        assert "misdtcp" not in ns.run(["nft", "list", "tables"]).stdout.decode()
    finally:
        device.close()
        ns.delete()


@pytest.mark.timeout(60)
def test_the_kernels_ip_layer_never_sees_what_arrives_for_the_stack():
    """The stack's end has no address and an nftables ingress drop: frames
    the kernel sends to the stack reach the ring, never the kernel's own IP
    layer (no route lookup, no ICMP, no RST, no forwarding)."""
    require_netns()
    ns, device = make_packet_ring_netns()
    try:
        ns.run(["ip", "neigh", "replace", STACK_ADDR, "lladdr", ":".join(f"{b:02x}" for b in device.mac),
                "dev", TUN_NAME, "nud", "permanent"])

        def in_receives():
            # the namespace's own IP counters (/proc/net/snmp is per namespace)
            lines = [line.split() for line in ns.run(["cat", "/proc/net/snmp"]).stdout.decode().splitlines()
                     if line.startswith("Ip:")]
            return int(lines[1][lines[0].index("InReceives")])
        before = in_receives()
        ns.run([sys.executable, "-c", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"[s.sendto(b'x' * 100, ({STACK_ADDR!r}, 9)) for _ in range(20)]"])
        frames = [device.ring.read(timeout=2.0) for _ in range(20)]
        assert all(f is not None and f["frame"][12:14] == b"\x08\x00" for f in frames)
        assert in_receives() == before
        addresses = ns.run(["ip", "-o", "-4", "addr", "show", "dev", device.stack_end]).stdout.decode()
        assert addresses.strip() == ""
    finally:
        device.close()
        ns.delete()


@pytest.mark.timeout(120)
def test_an_existing_veth_pair_is_attached_to_and_left_in_place():
    require_netns()
    from misdtcp.device.netns import Netns
    from misdtcp.device.packet_ring import DeviceError, PacketRing
    with Netns() as ns:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        ns.ip("link", "add", TUN_NAME, "type", "veth", "peer", "name", "misd0s")
        device = PacketRing(TUN_NAME, address="10.77.0.1/24", netns=ns)
        try:
            assert not device.created
            with Stack(device, address=STACK_ADDR) as stack:
                _receive(ns, stack, 1 << 20)
        finally:
            device.close()
        # ours is gone (the sockets, the ring, the ingress drop); the pair stays
        assert ns.ip("link", "show", "misd0s").returncode == 0
        assert "misdtcp" not in ns.run(["nft", "list", "tables"]).stdout.decode()
        ns.ip("link", "add", "other0", "type", "veth", "peer", "name", "other1")
        with pytest.raises(DeviceError, match="not the two ends of one veth pair"):
            PacketRing(TUN_NAME, stack_end="other1", netns=ns)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("offload,slots", [(True, 64), (False, 512)], ids=["offload", "no-offload"])
@pytest.mark.parametrize("victim_worker,placement", [(0, "separate"), (1, "inline")])
def test_a_killed_worker_is_replaced_and_the_ring_keeps_moving(victim_worker, placement, offload, slots):
    """Recovery on the packet ring: recoverable workers release the log (and
    so the ring's slots) only up to their last checkpoint, so the sequencer
    writes one every quarter of the slots; a small ring would otherwise stall
    for good.  A worker killed mid-transfer is replaced from its snapshot and
    the stream arrives byte-exact."""
    import hashlib
    import signal
    require_netns()
    ns, device = make_packet_ring_netns(offload=offload, slots=slots)
    total = 48 << 20
    stack = Stack(device, address=STACK_ADDR, workers=2, offload=offload, placement=placement).start()
    try:
        listener = stack.listen(9)
        client = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=9), str(total)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        conn, _ = listener.accept(timeout=10)
        h = hashlib.sha256()
        got = 0
        killed = None
        while True:
            view = conn.recv_view(timeout=20)
            if not len(view):
                break
            h.update(view)
            got += len(view)
            conn.release(view)
            if killed is None and got >= 12 << 20:
                killed = stack.processes()[f"worker {victim_worker}"]
                os.kill(killed, signal.SIGKILL)
        conn.close()
        rc, out, err = finish(client, timeout=30)
        assert rc == 0, err
        sent, digest = out.split()
        assert got == total == int(sent)
        assert h.hexdigest() == digest
        assert stack.recoveries == 1
        assert stack.incidents[0].pid == killed
        assert stack.worker_counters()[victim_worker]["restarts"] == 1
    finally:
        stack.stop()
        device.close()
        ns.delete()


@pytest.mark.timeout(60)
def test_an_ipv6_address_is_refused_the_ring_carries_ipv4_only():
    """The link step answers ARP, not neighbour discovery: a Stack asked for
    an IPv6 address on a packet ring says so in one sentence, before any
    process starts (the sequencer refuses it too, as a second guard)."""
    require_netns()
    ns, device = make_packet_ring_netns()
    try:
        with pytest.raises(StackError, match="^a packet-ring device carries IPv4 only: leave address6 unset$"):
            Stack(device, address=STACK_ADDR, address6="fd00:77::2")
        # the same device takes an IPv4-only stack
        with Stack(device, address=STACK_ADDR) as stack:
            assert stack.address6 is None
    finally:
        device.close()
        ns.delete()
