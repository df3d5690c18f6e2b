"""Wire formats: IPv4 validation, TCP checksum vs device flags, TCP option
parsing (malformed input included) and building (RFC 791, RFC 1122 §3.2.1,
RFC 9293 §3.1-3.2, RFC 7323, RFC 2018)."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from hypothesis_profiles import examples
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw, raw

from harness import Harness, Peer, tcp_of, KERNEL, STACK
from misdtcp.wire.codec import (CSUM_PARTIAL, CSUM_VALID, VERIFY_CSUM, build_options, internet_checksum,
                           parse_options)


def probe():
    """A valid segment to a closed port: the core answers it with a RST."""
    return bytearray(raw(Peer(dport=81).segment("A", b"payload", ack=4242)))


def fix_ip_checksum(f):
    ihl = (f[0] & 0x0f) * 4
    f[10:12] = b"\0\0"
    f[10:12] = struct.pack("!H", internet_checksum(bytes(f[:ihl])))
    return f


def outcome(frame, flags=0):
    h = Harness.create()
    out = h.deliver(bytes(frame), flags=flags)
    return len(tcp_of(out)), h.core.drops()


def test_valid_probe_is_answered():
    n, drops = outcome(probe())
    assert n == 1 and drops == {"no_connection": 1}


@pytest.mark.parametrize("version", [0, 5, 7, 15])
def test_ip_version_must_be_4_or_6(version):
    f = probe()
    f[0] = (version << 4) | 5
    assert outcome(fix_ip_checksum(f)) == (0, {"ip_version": 1})


@pytest.mark.parametrize("ihl", [0, 4])
def test_ihl_below_5_is_rejected(ihl):
    f = probe()
    f[0] = 0x40 | ihl
    assert outcome(f) == (0, {"ip_header_length": 1})


def test_ihl_beyond_the_frame_is_rejected():
    f = probe()[:40]
    f[0] = 0x4f
    assert outcome(f) == (0, {"ip_header_length": 1})


def test_ip_options_are_skipped():
    pkt = IP(src=KERNEL, dst=STACK, options=[b"\x01\x01\x01\x00"]) / TCP(sport=40000, dport=81, flags="A", ack=9)
    n, drops = outcome(raw(pkt))
    assert n == 1 and drops == {"no_connection": 1}


def test_total_length_beyond_the_frame_is_truncation():
    f = probe()
    f[2:4] = struct.pack("!H", len(f) + 1)
    assert outcome(fix_ip_checksum(f)) == (0, {"ip_truncated": 1})


def test_frame_shorter_than_an_ip_header():
    assert outcome(probe()[:19]) == (0, {"ip_truncated": 1})
    assert outcome(b"") == (0, {"ip_truncated": 1})


def test_trailing_padding_beyond_total_length_is_ignored():
    f = probe() + b"\0" * 6                   # Ethernet-style padding
    n, drops = outcome(f)
    assert n == 1 and drops == {"no_connection": 1}


def test_bad_ip_header_checksum():
    f = probe()
    f[10] ^= 0xff
    assert outcome(f) == (0, {"ip_checksum": 1})


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2010, 0x1fff])
def test_fragments_are_dropped_and_counted(frag):
    f = probe()
    f[6:8] = struct.pack("!H", 0x4000 * 0 | frag)
    assert outcome(fix_ip_checksum(f)) == (0, {"ip_fragment": 1})


def test_df_alone_is_not_a_fragment():
    f = probe()
    f[6:8] = struct.pack("!H", 0x4000)
    assert outcome(fix_ip_checksum(f))[0] == 1


def test_not_for_us_and_bad_sources():
    assert outcome(raw(IP(src=KERNEL, dst="10.77.0.3") / TCP(dport=81)))[1] == {"not_for_us": 1}
    for src in ("127.0.0.1", "224.0.0.1", "0.0.0.0", "255.255.255.255"):
        assert outcome(raw(IP(src=src, dst=STACK) / TCP(dport=81)))[1] == {"bad_source": 1}


def test_other_protocols_are_dropped():
    assert outcome(raw(IP(src=KERNEL, dst=STACK, proto=17) / b"12345678"))[1] == {"protocol": 1}


def bad_tcp_checksum():
    f = probe()
    f[20 + 16] ^= 0x55
    return f


def test_tcp_checksum_verified_without_device_flags():
    assert outcome(bad_tcp_checksum()) == (0, {"tcp_checksum": 1})


def test_tcp_checksum_not_verified_when_device_says_valid_or_partial():
    assert outcome(bad_tcp_checksum(), CSUM_VALID)[0] == 1
    assert outcome(bad_tcp_checksum(), CSUM_PARTIAL)[0] == 1


def test_verify_flag_forces_verification():
    assert outcome(bad_tcp_checksum(), CSUM_PARTIAL | VERIFY_CSUM) == (0, {"tcp_checksum": 1})
    assert outcome(probe(), CSUM_PARTIAL | VERIFY_CSUM)[0] == 1


@pytest.mark.parametrize("doff", [0, 4, 15])
def test_tcp_data_offset_out_of_range(doff):
    f = probe()
    f[20 + 12] = doff << 4
    assert outcome(f, CSUM_VALID) == (0, {"tcp_header": 1})


def test_tcp_header_truncated():
    pkt = IP(src=KERNEL, dst=STACK, proto=6) / Raw(b"\x9c\x40\x00\x51" + b"\0" * 10)
    assert outcome(raw(pkt))[1] == {"tcp_header": 1}


@pytest.mark.parametrize("flags", ["SF", "SR", "", "P", "F"])
def test_nonsensical_flags(flags):
    pkt = Peer(dport=81).segment(flags, ts=False)
    assert outcome(raw(pkt)) == (0, {"tcp_flags": 1})


def test_zero_ports_are_dropped():
    pkt = IP(src=KERNEL, dst=STACK) / TCP(sport=0, dport=81, flags="A")
    assert outcome(raw(pkt))[1] == {"tcp_flags": 1}


def test_bad_gso_size():
    assert outcome(probe(), CSUM_VALID)[0] == 1
    h = Harness.create()
    h.deliver(bytes(probe()), gso_size=10)
    assert h.core.drops() == {"bad_gso": 1}


# --- options ---------------------------------------------------------------

def syn_with_options(raw_opts):
    raw_opts = bytes(raw_opts) + b"\0" * (-len(raw_opts) % 4)
    t = TCP(sport=40000, dport=5201, flags="S", seq=1000, options=[])
    t.dataofs = 5 + len(raw_opts) // 4
    b = bytearray(raw(IP(src=KERNEL, dst=STACK) / t))
    b = b[:40] + raw_opts
    b[2:4] = struct.pack("!H", len(b))
    return bytes(fix_ip_checksum(b))


MALFORMED = {
    "zero length": b"\x02\x00",
    "length 1": b"\x08\x01",
    "overrun": b"\x08\x0a\x00\x00",
    "kind without length": b"\x01\x01\x02",
    "mss size 3": b"\x02\x03\x05",
    "mss size 5": b"\x02\x05\x05\xb4\x00",
    "wscale size 4": b"\x03\x04\x07\x00",
    "wscale size 2": b"\x03\x02",
    "sackok size 3": b"\x04\x03\x00",
    "timestamp size 8": b"\x08\x08" + b"\0" * 6,
    "timestamp size 12": b"\x08\x0c" + b"\0" * 10,
    "sack size 2": b"\x05\x02",
    "sack size 9": b"\x05\x09" + b"\0" * 7,
    "sack size 11": b"\x05\x0b" + b"\0" * 9,
    "unknown overrun": b"\x1e\x30\x00",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_options_are_rejected(name):
    assert parse_options(MALFORMED[name]) is None


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_options_drop_the_segment(name):
    h = Harness.create()
    h.call("listen", 5201)
    assert h.deliver(syn_with_options(MALFORMED[name]), flags=CSUM_VALID) == []
    assert h.core.drops() == {"tcp_options": 1}
    assert h.core.connection_count == 0


def test_wellformed_option_zoo():
    o = parse_options(b"\x01\x02\x04\x05\xb4\x03\x03\x0e\x04\x02\x08\x0a\x00\x00\x00\x07\x00\x00\x00\x09"
                      b"\x1e\x04\xaa\xbb\x05\x0a\x00\x00\x00\x01\x00\x00\x00\x02\x00")
    assert o == {"mss": 1460, "wscale": 14, "wscale_clamped": False, "sack_permitted": True,
                 "timestamp": (7, 9), "sack": [(1, 2)]}


def test_options_stop_at_eol():
    assert parse_options(b"\x00\x02\x00")["mss"] is None


def test_wscale_above_14_is_clamped_and_flagged():
    for shift in (15, 200, 255):
        o = parse_options(bytes([3, 3, shift, 1]))
        assert o["wscale"] == 14 and o["wscale_clamped"]


def test_more_than_four_sack_blocks_keeps_four():
    blocks = b"".join(struct.pack("!II", i, i + 1) for i in range(4))
    o = parse_options(b"\x05\x22" + blocks)
    assert o["sack"] == [(i, i + 1) for i in range(4)]


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=40))
def test_random_option_bytes_never_crash(data):
    o = parse_options(data)
    if o is not None:
        assert o["wscale"] is None or 0 <= o["wscale"] <= 14
        assert len(o["sack"]) <= 4


option_values = st.fixed_dictionaries({
    "mss": st.integers(0, 65535),
    "wscale": st.integers(-1, 14),
    "sack_permitted": st.booleans(),
    "timestamp": st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    "sack": st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=3),
})


@settings(max_examples=examples(300), deadline=None)
@given(option_values)
def test_build_options_round_trips_through_parse_options_and_scapy(v):
    # SACK-permitted takes the two NOPs in front of the timestamp when both are sent
    need = ((4 if v["mss"] else 0) + (12 if v["timestamp"] else 0)
            + (4 if v["sack_permitted"] and not v["timestamp"] else 0)
            + (4 if v["wscale"] >= 0 else 0) + (4 + 8 * len(v["sack"]) if v["sack"] else 0))
    if need > 40:
        with pytest.raises(ValueError):
            build_options(**v)
        return
    data = build_options(**v)
    assert len(data) == need
    assert len(data) % 4 == 0 and len(data) <= 40
    o = parse_options(data)
    assert o["mss"] == (v["mss"] or None)
    assert o["wscale"] == (v["wscale"] if v["wscale"] >= 0 else None)
    assert o["sack_permitted"] == v["sack_permitted"]
    assert o["timestamp"] == v["timestamp"]
    assert o["sack"] == list(v["sack"])
    t = TCP(raw(TCP(dataofs=5 + len(data) // 4, flags="A")) [:20] + data)
    s = {name: value for name, value in t.options if name not in ("NOP", "EOL")}
    if v["mss"]:
        assert s["MSS"] == v["mss"]
    if v["wscale"] >= 0:
        assert s["WScale"] == v["wscale"]
    assert ("SAckOK" in s) == v["sack_permitted"]
    if v["timestamp"]:
        assert s["Timestamp"] == v["timestamp"]
    if v["sack"]:
        assert s["SAck"] == tuple(x for b in v["sack"] for x in b)


def test_build_options_layout_matches_linux():
    data = build_options(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2))
    assert data == bytes([2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7])
