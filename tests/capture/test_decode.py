"""Link / IP / TCP decoding of batches."""
from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest

from mfdscope.capture import decode as d
from mfdscope.capture.decode import COUNTERS, decode
from mfdscope.capture.pcapfile import open_capture
from mfdscope.capture.pcapwriter import PcapWriter, tcp_frame

V4 = ("192.168.1.10", "192.168.1.20")
V6 = ("2001:db8::1", "fe80::abcd:2")
PAYLOAD = b"multifd says hello"


def decode_frames(tmp_path, frames, linktype=d.LINKTYPE_ETHERNET, snaplen=262144,
                  byteorder="<"):
    """Write frames into a pcap and decode them: (segments, counters, buffer)."""
    path = tmp_path / "x.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=linktype, snaplen=snaplen, byteorder=byteorder)
        for i, fr in enumerate(frames):
            origlen = fr[1] if isinstance(fr, tuple) else None
            w.write_frame(1.0 + i, fr[0] if isinstance(fr, tuple) else fr, origlen)
    cap = open_capture(path)
    counters = dict.fromkeys(COUNTERS, 0)
    batch = next(cap.batches())
    return decode(cap.buf, batch, counters), counters, cap.buf


def addr(hi, lo):
    value = (int(hi) << 64) | int(lo)
    a = ipaddress.IPv6Address(value)
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


LINK_CASES = [  # (link type, frame builder keyword arguments)
    (d.LINKTYPE_ETHERNET, {}),
    (d.LINKTYPE_ETHERNET, {"vlan": 42}),
    (d.LINKTYPE_ETHERNET, {"vlan": (100, 42)}),  # 802.1ad outer + 802.1Q inner
    (d.LINKTYPE_LINUX_SLL, {}),
    (d.LINKTYPE_LINUX_SLL2, {}),
    (d.LINKTYPE_NULL, {"null_byteorder": "<"}),
    (d.LINKTYPE_NULL, {"null_byteorder": ">"}),
    (d.LINKTYPE_LOOP, {}),
    (d.LINKTYPE_RAW, {}),
    (d.LINKTYPE_RAW_OPENBSD, {}),
]


@pytest.mark.parametrize("linktype, kw", LINK_CASES)
@pytest.mark.parametrize("src, dst", [V4, V6])
def test_link_types_and_ip_versions(tmp_path, linktype, kw, src, dst):
    frame = tcp_frame(src, dst, 40001, 9000, 0xFFFFFFF0, 77, "PA", PAYLOAD,
                      linktype=linktype, **kw)
    seg, counters, buf = decode_frames(tmp_path, [frame], linktype)
    assert counters["tcp"] == 1 and counters["frames"] == 1
    assert (addr(seg.src_hi[0], seg.src_lo[0]), addr(seg.dst_hi[0], seg.dst_lo[0])) == (
        src, dst)
    assert (seg.sport[0], seg.dport[0], seg.seq[0], seg.ack[0]) == (40001, 9000,
                                                                     0xFFFFFFF0, 77)
    assert seg.flags[0] == d.TCP_PSH | d.TCP_ACK
    assert seg.ipver[0] == (4 if ":" not in src else 6)
    off, n = int(seg.payload_off[0]), int(seg.payload_len[0])
    assert bytes(buf[off:off + n]) == PAYLOAD and seg.payload_caplen[0] == n


@pytest.mark.parametrize("linktype, version", [(d.LINKTYPE_IPV4, V4), (d.LINKTYPE_IPV6, V6)])
def test_raw_ipv4_and_ipv6_link_types(tmp_path, linktype, version):
    frame = tcp_frame(*version, 1, 2, 3, 4, "A", PAYLOAD, linktype=d.LINKTYPE_RAW)
    seg, counters, _ = decode_frames(tmp_path, [frame], linktype)
    assert counters["tcp"] == 1 and seg.payload_len[0] == len(PAYLOAD)


def test_ethernet_padding_is_not_payload(tmp_path):
    frame = tcp_frame(*V4, 1, 2, 3, 4, "PA", b"ab")
    assert len(frame) == 60  # padded to the Ethernet minimum
    seg, _, _ = decode_frames(tmp_path, [frame])
    assert seg.payload_len[0] == 2 and seg.payload_caplen[0] == 2


@pytest.mark.parametrize("src, dst", [V4, V6])
def test_ip_length_zero_uses_the_frame_length(tmp_path, src, dst):
    """GSO frames captured on loopback may say 0 in the IP length."""
    big = bytes(70000)
    frame = tcp_frame(src, dst, 1, 2, 3, 4, "PA", big, ip_len=0)
    seg, counters, _ = decode_frames(tmp_path, [frame])
    assert counters["tcp"] == 1 and seg.payload_len[0] == len(big)


def test_snaplen_cut_payload(tmp_path):
    frame = tcp_frame(*V4, 1, 2, 3, 4, "PA", bytes(1000))
    seg, _, _ = decode_frames(tmp_path, [frame], snaplen=200)
    assert seg.payload_len[0] == 1000 and seg.payload_caplen[0] == 200 - 54


def _udp_frame():
    frame = bytearray(tcp_frame(*V4, 1, 2, 3, 4, "A"))
    frame[14 + 9] = 17  # protocol UDP
    return bytes(frame)


def _fragment_frame():
    frame = bytearray(tcp_frame(*V4, 1, 2, 3, 4, "A", b"x" * 40))
    struct.pack_into("!H", frame, 14 + 6, 0x2000)  # more fragments
    return bytes(frame)


def _arp_frame():
    return bytes(12) + b"\x08\x06" + bytes(46)


def _short_frame():
    return tcp_frame(*V4, 1, 2, 3, 4, "A", pad=False)[:14 + 20 + 10]


def _bad_ihl_frame():
    frame = bytearray(tcp_frame(*V4, 1, 2, 3, 4, "A"))
    frame[14] = 0x43  # IHL 3 words
    return bytes(frame)


def _ipv6_ext_frame(chain):
    """IPv6 with extension headers `chain` (next-header codes) before TCP."""
    base = tcp_frame(*V6, 5, 6, 7, 8, "PA", PAYLOAD)
    eth, ip6, rest = base[:14], bytearray(base[14:54]), base[54:]
    ext = b""
    for i, code in enumerate(chain):
        nxt = chain[i + 1] if i + 1 < len(chain) else 6
        ext += bytes([nxt, 0]) + bytes(6)
    ip6[6] = chain[0]
    struct.pack_into("!H", ip6, 4, len(ext) + len(rest))
    return eth + bytes(ip6) + ext + rest


@pytest.mark.parametrize("frame, counter", [
    (_udp_frame(), "non_tcp"),
    (_fragment_frame(), "fragments"),
    (_arp_frame(), "non_ip"),
    (_short_frame(), "truncated"),
    (_bad_ihl_frame(), "malformed"),
    (_ipv6_ext_frame([44]), "fragments"),
])
def test_frames_that_are_not_tcp_payload_are_counted(tmp_path, frame, counter):
    good = tcp_frame(*V4, 1, 2, 3, 4, "PA", PAYLOAD)
    seg, counters, _ = decode_frames(tmp_path, [good, frame, good])
    assert counters[counter] == 1 and counters["tcp"] == 2
    assert list(seg.frame) == [0, 2]


@pytest.mark.parametrize("chain", [[0], [60], [0, 43, 60]])
def test_ipv6_extension_headers(tmp_path, chain):
    seg, counters, buf = decode_frames(tmp_path, [_ipv6_ext_frame(chain)])
    assert counters["tcp"] == 1
    off = int(seg.payload_off[0])
    assert bytes(buf[off:off + int(seg.payload_len[0])]) == PAYLOAD


def test_unknown_link_type_is_counted(tmp_path):
    _, counters, _ = decode_frames(tmp_path, [b"\0" * 60], linktype=147)
    assert counters["unknown_linktype"] == 1 and counters["tcp"] == 0


def test_mixed_ip_versions_keep_capture_order(tmp_path):
    frames = [tcp_frame(*(V4 if i % 3 else V6), i, 2, i, 0, "A", b"z" * i) for i in range(9)]
    seg, _, _ = decode_frames(tmp_path, frames)
    assert list(seg.frame) == list(range(9)) and list(seg.seq) == list(range(9))


# ---------------------------------------------------------------- Scapy cross-check
def test_agrees_with_scapy(tmp_path):
    """Decoded ports, sequence numbers and payloads agree with Scapy's dissection,
    including TCP options, VLAN tags and IPv6."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.utils import rdpcap, wrpcap

    pkts = []
    for i in range(40):
        l3 = IP(src="10.1.0.1", dst=f"10.1.0.{i + 2}") if i % 4 else IPv6(
            src="2001:db8::1", dst=f"2001:db8::{i + 2:x}")
        opts = [("MSS", 1460), ("NOP", None), ("WScale", 7)] if i % 5 == 0 else []
        l2 = Ether() / Dot1Q(vlan=i) if i % 7 == 0 else Ether()
        pkts.append(l2 / l3 / TCP(sport=1000 + i, dport=9000, seq=i * 99991, ack=i,
                                  flags="PA", options=opts) / (bytes([i]) * (i * 37)))
    wrpcap(str(tmp_path / "scapy.pcap"), pkts)
    cap = open_capture(tmp_path / "scapy.pcap")
    counters = dict.fromkeys(COUNTERS, 0)
    seg = decode(cap.buf, next(cap.batches()), counters)
    ours = [(int(sp), int(dp), int(sq), int(ak),
             bytes(cap.buf[int(o):int(o) + int(n)]))
            for sp, dp, sq, ak, o, n in zip(seg.sport, seg.dport, seg.seq, seg.ack,
                                            seg.payload_off, seg.payload_len)]
    theirs = [(p[TCP].sport, p[TCP].dport, p[TCP].seq, p[TCP].ack, bytes(p[TCP].payload))
              for p in rdpcap(str(tmp_path / "scapy.pcap"))]
    assert ours == theirs
    assert np.array_equal(seg.payload_caplen, seg.payload_len)
