"""The pcap writer: what scapy (and so tshark) reads back is what was written."""
from __future__ import annotations

import os

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.utils import rdpcap

from misdtcp.wire import vnet_header as vnet
from misdtcp.frameio.pcap import LINKTYPE_IPV4, PcapError, PcapWriter, read_pcap

T0 = 1_700_000_000_123_456_789


def _frames() -> list[bytes]:
    return [
        bytes(IP(src="10.77.0.1", dst="10.77.0.2") / TCP(sport=40000, dport=5201, flags="S", seq=1,
                                                         options=[("MSS", 1460), ("SAckOK", b"")])),
        bytes(IP(src="10.77.0.2", dst="10.77.0.1") / TCP(sport=5201, dport=40000, flags="SA", seq=7, ack=2)),
        bytes(IP(src="10.77.0.1", dst="10.77.0.2") / ICMP(type=8, id=3, seq=4) / b"ping"),
        # a GSO super-frame: recorded whole, tot_len covering all of it
        bytes(IP(src="10.77.0.1", dst="10.77.0.2") / TCP(sport=40000, dport=5201, flags="A", seq=2, ack=8)
              / os.urandom(44 * 1448)),
    ]


def test_frames_read_back_by_scapy_field_by_field(tmp_path):
    path = tmp_path / "both.pcap"
    frames = _frames()
    with PcapWriter(path) as writer:
        for i, frame in enumerate(frames):
            # as the device layer calls it: the vnet header is skipped with offset
            writer.write(vnet.VnetHeader().pack() + frame, ts_ns=T0 + i * 1_000_001, offset=vnet.VNET_HDR_LEN)
        assert writer.frames == len(frames)
    packets = rdpcap(str(path))
    assert len(packets) == len(frames)
    for i, (packet, frame) in enumerate(zip(packets, frames)):
        assert bytes(packet) == frame
        assert int(packet.time * 1_000_000_000) == T0 + i * 1_000_001  # nanosecond precision kept
        original = IP(frame)
        assert packet[IP].src == original.src and packet[IP].dst == original.dst
        assert packet[IP].len == original.len and packet[IP].chksum == original.chksum
    assert packets[0][TCP].options[0] == ("MSS", 1460)
    assert packets[1][TCP].flags == "SA" and packets[1][TCP].ack == 2
    assert packets[2][ICMP].id == 3 and bytes(packets[2][ICMP].payload) == b"ping"
    assert packets[3][IP].len == len(frames[3]) > 60000


def test_microsecond_timestamps_and_ipv4_link_type(tmp_path):
    path = tmp_path / "us.pcap"
    frame = _frames()[0]
    with PcapWriter(path, linktype=LINKTYPE_IPV4, nanosecond=False) as writer:
        writer.write(frame, ts_ns=T0)
    (ts, data, orig), = read_pcap(path)
    assert ts == T0 // 1000 * 1000 and data == frame and orig == len(frame)
    assert bytes(rdpcap(str(path))[0]) == frame


def test_snaplen_truncates_but_keeps_the_original_length(tmp_path):
    path = tmp_path / "snap.pcap"
    frame = _frames()[3]
    with PcapWriter(path, snaplen=128) as writer:
        writer.write(frame, ts_ns=T0)
    (_ts, data, orig), = read_pcap(path)
    assert data == frame[:128] and orig == len(frame)


def test_two_writers_append_whole_records_to_one_file(tmp_path):
    path = tmp_path / "shared.pcap"
    first = PcapWriter(path)
    second = PcapWriter(path, append=True)  # as a second worker process would
    frames = _frames()
    for i, frame in enumerate(frames):
        (first if i % 2 else second).write(frame, ts_ns=T0 + i)
    second.close()
    first.close()
    records = list(read_pcap(path))
    assert sorted(data for _ts, data, _orig in records) == sorted(frames)
    with pytest.raises(PcapError, match="another timestamp unit or link type"):
        PcapWriter(path, nanosecond=False, append=True)


@pytest.mark.slow
def test_many_small_frames_cross_the_buffer_boundary(tmp_path):
    path = tmp_path / "many.pcap"
    frames = [bytes(IP(src="10.77.0.2", dst="10.77.0.1", id=i) / TCP(seq=i)) for i in range(20000)]
    with PcapWriter(path) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, ts_ns=T0 + i)
    records = list(read_pcap(path))
    assert [data for _ts, data, _orig in records] == frames
    assert [ts for ts, _data, _orig in records] == [T0 + i for i in range(len(frames))]


def test_errors_are_one_sentence(tmp_path):
    with pytest.raises(PcapError, match="cannot open capture file"):
        PcapWriter(tmp_path / "missing-dir" / "x.pcap")
    with pytest.raises(ValueError, match="link type"):
        PcapWriter(tmp_path / "x.pcap", linktype=1)
    writer = PcapWriter(tmp_path / "closed.pcap")
    writer.close()
    with pytest.raises(PcapError, match="is closed"):
        writer.write(b"\x45" + bytes(19))
