"""Capture readers: pcap / pcapng / pipe streams into PacketBatches."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from mfdscope.capture.decode import LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL
from mfdscope.capture.pcapfile import (
    PCAP_MAGIC_MODIFIED, CaptureError, PcapStreamReader, open_capture,
)
from mfdscope.capture.pcapwriter import PcapngWriter, PcapWriter, tcp_frame

T0 = 1_700_000_000.0
BIG = 65549  # a loopback GSO frame, longer than 65,535 bytes


def frames_of(sizes, t0=T0, step=0.25):
    """(time, frame) pairs: distinct TCP frames whose total sizes are `sizes`."""
    out = []
    for i, size in enumerate(sizes):
        payload = bytes((i + j) % 251 for j in range(size - 54))
        out.append((t0 + i * step + 0.000123,
                    tcp_frame("10.0.0.1", "10.0.0.2", 40000, 9000, i * 1000, 0, "PA",
                              payload)))
    return out


FRAMES = frames_of([60, 1514, BIG, 100])


def write_pcap_file(path, frames, **kw):
    with open(path, "wb") as f:
        w = PcapWriter(f, **kw)
        for t, fr in frames:
            w.write_frame(t, fr)
    return path


def read_all(path, batch_size=65536):
    """[(time, linktype, caplen, origlen, bytes)] and the warnings."""
    with open_capture(path) as cap:
        rows = []
        for b in cap.batches(batch_size):
            for t, off, cl, ol, lt in zip(b.time.tolist(), b.data_off.tolist(),
                                          b.caplen.tolist(), b.origlen.tolist(),
                                          b.linktype.tolist()):
                rows.append((t, lt, cl, ol, bytes(b.buf[off:off + cl])))
        return rows, list(cap.warnings), cap.format


# ------------------------------------------------------------------- pcap
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, byteorder, nanosecond):
    path = write_pcap_file(tmp_path / "a.pcap", FRAMES, byteorder=byteorder,
                           nanosecond=nanosecond, linktype=LINKTYPE_ETHERNET)
    rows, warnings, fmt = read_all(path)
    assert fmt == "pcap" and warnings == []
    assert [r[4] for r in rows] == [f for _, f in FRAMES]  # big frame read whole
    assert [r[1] for r in rows] == [LINKTYPE_ETHERNET] * len(FRAMES)
    assert [(r[2], r[3]) for r in rows] == [(len(f), len(f)) for _, f in FRAMES]
    tol = 1e-9 * 1.5 if nanosecond else 1e-6
    assert np.allclose([r[0] for r in rows], [t for t, _ in FRAMES], rtol=0, atol=tol)


def test_pcap_snaplen_keeps_original_length(tmp_path):
    path = write_pcap_file(tmp_path / "a.pcap", FRAMES, snaplen=200)
    rows, warnings, _ = read_all(path)
    assert [(r[2], r[3]) for r in rows] == [(min(len(f), 200), len(f)) for _, f in FRAMES]
    assert [r[4] for r in rows] == [f[:200] for _, f in FRAMES]


def test_pcap_header_linktype(tmp_path):
    path = write_pcap_file(tmp_path / "a.pcap", FRAMES[:1], linktype=LINKTYPE_LINUX_SLL)
    rows, _, _ = read_all(path)
    assert rows[0][1] == LINKTYPE_LINUX_SLL


def test_modified_pcap_records_are_24_bytes(tmp_path):
    data = struct.pack("<IHHiIII", PCAP_MAGIC_MODIFIED, 2, 4, 0, 0, 65535, 1)
    for t, fr in FRAMES[:2]:
        data += struct.pack("<IIII", int(t), 123, len(fr), len(fr)) + b"\0" * 8 + fr
    (tmp_path / "m.pcap").write_bytes(data)
    rows, warnings, _ = read_all(tmp_path / "m.pcap")
    assert [r[4] for r in rows] == [f for _, f in FRAMES[:2]] and warnings == []


# ------------------------------------------------------------------ pcapng
def write_pcapng(path, byteorder="<"):
    """Two sections; the first with three interfaces of different link types and
    timestamp resolutions, plus simple/obsolete/skipped blocks."""
    f = open(path, "wb")
    w = PcapngWriter(f, byteorder=byteorder)
    eth = w.add_interface(LINKTYPE_ETHERNET, tsresol=6)
    raw = w.add_interface(LINKTYPE_RAW, tsresol=9)
    p2 = w.add_interface(LINKTYPE_ETHERNET, tsresol=20, pow2=True)
    raw_frame = tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 3, 4, "A", b"raw",
                          linktype=LINKTYPE_RAW)
    expect = []
    w.write_frame(T0 + 0.5, FRAMES[0][1], interface=eth)
    expect.append((T0 + 0.5, LINKTYPE_ETHERNET, FRAMES[0][1]))
    w.write_block(4, b"\x01\x00\x08\x00\x0a\x00\x00\x01name\0\0\0\0\0\0\0\0")  # NRB
    w.write_frame(T0 + 0.123456789, raw_frame, interface=raw)
    expect.append((T0 + 0.123456789, LINKTYPE_RAW, raw_frame))
    w.write_frame(T0 + 0.75, FRAMES[2][1], interface=p2)  # big frame, 2^-20 s ticks
    expect.append((T0 + 0.75, LINKTYPE_ETHERNET, FRAMES[2][1]))
    w.write_simple(FRAMES[1][1])  # no timestamp: time of the previous packet
    expect.append((T0 + 0.75, LINKTYPE_ETHERNET, FRAMES[1][1]))
    w.write_obsolete(T0 + 1.0, FRAMES[3][1], interface=raw)
    expect.append((T0 + 1.0, LINKTYPE_RAW, FRAMES[3][1]))
    w.write_block(5, b"\0" * 12)  # interface statistics
    w.write_block(0x40000BAD, b"custom")
    w.o = ">" if byteorder == "<" else "<"  # the next section flips the byte order
    w.new_section()
    w.add_interface(LINKTYPE_RAW)  # interface ids restart per section
    w.write_frame(T0 + 2.0, raw_frame, interface=0)
    expect.append((T0 + 2.0, LINKTYPE_RAW, raw_frame))
    f.close()
    return expect


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 65536])
def test_pcapng_interfaces_sections_and_blocks(tmp_path, byteorder, batch_size):
    expect = write_pcapng(tmp_path / "a.pcapng", byteorder)
    rows, warnings, fmt = read_all(tmp_path / "a.pcapng", batch_size)
    assert fmt == "pcapng" and warnings == []
    assert [(r[1], r[4]) for r in rows] == [(lt, fr) for _, lt, fr in expect]
    assert [(r[2], r[3]) for r in rows] == [(len(fr), len(fr)) for *_, fr in expect]
    assert np.allclose([r[0] for r in rows], [t for t, *_ in expect], rtol=0, atol=2e-6)


def test_pcapng_interface_snaplen_cuts_simple_packets(tmp_path):
    with open(tmp_path / "a.pcapng", "wb") as f:
        w = PcapngWriter(f)
        w.add_interface(LINKTYPE_ETHERNET, snaplen=64)
        w.write_simple(FRAMES[1][1])
    rows, warnings, _ = read_all(tmp_path / "a.pcapng")
    assert [(r[2], r[3], r[4]) for r in rows] == [(64, 1514, FRAMES[1][1][:64])]


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"<!DOCTYPE html><html>", "not a pcap or pcapng file: starts with 3c 21 44 4f"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip-compressed"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap header (6 of 24 bytes)"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", "truncated pcapng section header"),
    (b"\x0a\x0d", "not a capture file: only 2 bytes"),
])
def test_unreadable_input_raises_one_line_error(tmp_path, content, message):
    (tmp_path / "x").write_bytes(content)
    with pytest.raises(CaptureError) as e:
        open_capture(tmp_path / "x")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="cannot read"):
        open_capture(tmp_path / "nope.pcap")


# -------------------------------------------------------------- truncation
def _pcapng_small(path):
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        w.add_interface()
        for t, fr in frames_of([60, 80, 70]):
            w.write_frame(t, fr)
    data = path.read_bytes()
    ends, off, packets = [], 0, 0  # (end of a block, packets up to there)
    while off < len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        off += blen
        packets += btype == 6
        ends.append((off, packets))
    return ends


def _pcap_small(path):
    sizes = [60, 80, 70]
    write_pcap_file(path, frames_of(sizes))
    ends = [24]
    for size in sizes:
        ends.append(ends[-1] + 16 + size)
    return [(end, i) for i, end in enumerate(ends)]


@pytest.mark.parametrize("make", [_pcap_small, _pcapng_small])
def test_truncated_at_every_byte_keeps_earlier_packets(tmp_path, make):
    """A cut at a record boundary is a shorter valid capture; anywhere else the reader
    keeps the complete records and warns once."""
    boundaries = dict(make(tmp_path / "full"))
    full = (tmp_path / "full").read_bytes()
    whole, _, _ = read_all(tmp_path / "full")
    header_end = min(boundaries)
    cut_path = tmp_path / "cut"
    for cut in range(1, len(full)):
        cut_path.write_bytes(full[:cut])
        if cut < header_end:
            with pytest.raises(CaptureError):
                read_all(cut_path)
            continue
        rows, warnings, _ = read_all(cut_path)
        kept = max(n for end, n in boundaries.items() if end <= cut)
        assert rows == whole[:kept], f"cut at {cut}"
        if cut in boundaries:
            assert warnings == []
        else:
            assert len(warnings) == 1 and warnings[0].startswith(
                "capture truncated at byte "), (cut, warnings)


def test_truncation_warning_text(tmp_path):
    full = write_pcap_file(tmp_path / "a", frames_of([60, 80])).read_bytes()
    (tmp_path / "b").write_bytes(full[:-10])
    rows, warnings, _ = read_all(tmp_path / "b")
    assert len(rows) == 1
    start = 24 + 16 + 60
    assert warnings == [f"capture truncated at byte {start}: last record incomplete "
                        f"({16 + 70} of {16 + 80} bytes)"]


def test_corrupt_caplen_skips_to_the_next_record_with_warning(tmp_path):
    data = bytearray(write_pcap_file(tmp_path / "a", frames_of([60, 80, 70])).read_bytes())
    second = 24 + 16 + 60
    third = second + 16 + 80
    struct.pack_into("<I", data, second + 8, 0x7FFFFFF0)
    (tmp_path / "b").write_bytes(bytes(data))
    rows, warnings, _ = read_all(tmp_path / "b")
    assert len(rows) == 2 and len(warnings) == 1  # the first and the third frame
    assert warnings[0] == (f"corrupt record at byte {second}: caplen {0x7FFFFFF0} exceeds "
                           f"{256 << 20}; skipped {third - second} bytes, reading resumed "
                           f"at byte {third}")


def test_corrupt_caplen_with_nothing_plausible_after_it_stops(tmp_path):
    data = bytearray(write_pcap_file(tmp_path / "a", frames_of([60, 80])).read_bytes())
    second = 24 + 16 + 60
    struct.pack_into("<I", data, second + 8, 0x7FFFFFF0)
    (tmp_path / "b").write_bytes(bytes(data))
    rows, warnings, _ = read_all(tmp_path / "b")
    assert len(rows) == 1 and len(warnings) == 1
    assert warnings[0].startswith(f"corrupt record at byte {second}")
    assert warnings[0].endswith("reading stopped there")


# ----------------------------------------------------------------- batches
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 65536])
def test_batch_size_does_not_change_the_frames(tmp_path, batch_size):
    frames = frames_of([60 + 7 * i for i in range(20)])
    path = write_pcap_file(tmp_path / "a", frames)
    assert read_all(path, batch_size)[0] == read_all(path, 65536)[0]


# ------------------------------------------------------------------ stream
class Trickle(io.RawIOBase):
    """A pipe that hands out at most `step` bytes per read."""

    def __init__(self, data, step):
        self.data, self.pos, self.step = data, 0, step

    def readable(self):
        return True

    def read1(self, n=-1):
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    read = read1


def stream_rows(data, step, chunk_size, batch_size=65536):
    reader = PcapStreamReader(Trickle(data, step), chunk_size=chunk_size)
    rows = []
    for b in reader.batches(batch_size):
        assert isinstance(b.buf, bytes)
        for t, off, cl, ol, lt in zip(b.time.tolist(), b.data_off.tolist(),
                                      b.caplen.tolist(), b.origlen.tolist(),
                                      b.linktype.tolist()):
            rows.append((t, lt, cl, ol, bytes(b.buf[off:off + cl])))
    return rows, reader.warnings


@pytest.mark.parametrize("step, chunk_size, batch_size", [
    (1 << 20, 1 << 20, 65536), (7, 100, 65536), (1000, 4096, 3), (65536, 65536, 1)])
def test_stream_reader_matches_file_reader(tmp_path, step, chunk_size, batch_size):
    path = write_pcap_file(tmp_path / "a", FRAMES + frames_of([60 + i for i in range(30)]))
    assert stream_rows(path.read_bytes(), step, chunk_size, batch_size) == (
        read_all(path)[0], [])


def test_stream_reader_truncated_stream_warns(tmp_path):
    data = write_pcap_file(tmp_path / "a", frames_of([60, 80])).read_bytes()
    rows, warnings = stream_rows(data[:-5], 50, 64)
    assert len(rows) == 1
    assert warnings == ["capture truncated at byte 100: last record incomplete "
                        "(91 of 96 bytes)"]


@pytest.mark.parametrize("data, message", [
    (b"", "empty"), (b"hello world, this is not a capture", "not a pcap stream")])
def test_stream_reader_rejects_non_pcap(data, message):
    with pytest.raises(CaptureError, match=message):
        list(PcapStreamReader(io.BytesIO(data)).batches())
