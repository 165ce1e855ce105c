"""Bad input never breaks mfdscope: the rule, as a table of mutations.

"Bad input (truncated or corrupt captures, missing segments, lying length fields,
unknown flags, non-migration traffic) gets a clear message or an expert-info row, never
a traceback, a hang or an unbounded allocation -- and nothing already decoded is lost."

Every case below builds a small synthetic migration capture, damages it in one
seeded, deterministic way and opens it with a time limit and a memory bound.  The
only exception allowed out of `mfdscope.open` is `CaptureError` with a one-line
message.  The regression cases at the end are the bugs a longer fuzzing campaign
(thousands of mutants of the committed captures) found.
"""
from __future__ import annotations

import io
import random
import signal
import struct
import subprocess
import sys
import tracemalloc
from contextlib import contextmanager

import pandas as pd
import pytest

import mfdscope
from mfdscope import synth
from mfdscope.capture import pcapwriter as pw

TIME_LIMIT_S = 20
MEMORY_LIMIT = 200 << 20  # Python + numpy allocations while opening a < 1 MB capture
DEVICES = (("0000:00:04.0/vfio", 0, 3, 5000),)
MAGIC = b"\x11\x22\x33\x44"
MUTANTS_PER_CASE = 8  # the fuzzing campaign ran thousands; this keeps the suite fast


# ----------------------------------------------------------------------- helpers
def synthetic_pcap(profile="10.0", compression="none", channels=2, segment=1448,
                   ram_pages=256, devices=DEVICES) -> bytes:
    """A small migration (channels + main connection), one TCP flow each."""
    cfg = synth.SynthConfig(profile=profile, compression=compression, channels=channels,
                            ram_pages=ram_pages, devices=devices)
    main, chans, _ = synth.build(cfg)
    flows = synth.tcp_flows(main, chans, segment_size=segment)
    out = io.BytesIO()
    pw.write_pcap(out, pw.interleave(*flows))
    return out.getvalue()


def records(pcap: bytes) -> list[tuple[int, int]]:
    """(record header offset, caplen) of each record of a clean little-endian pcap."""
    out, off = [], 24
    while off + 16 <= len(pcap):
        caplen = struct.unpack_from("<I", pcap, off + 8)[0]
        out.append((off, caplen))
        off += 16 + caplen
    return out


def to_pcapng(pcap: bytes) -> bytes:
    out = io.BytesIO()
    w = pw.PcapngWriter(out)
    w.add_interface(pw.LINKTYPE_ETHERNET)
    for off, caplen in records(pcap):
        sec, usec, _, origlen = struct.unpack_from("<IIII", pcap, off)
        w.write_frame(sec + usec * 1e-6, pcap[off + 16:off + 16 + caplen], origlen)
    return out.getvalue()


def pcapng_blocks(data: bytes) -> list[tuple[int, int, int]]:
    out, off = [], 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        out.append((off, btype, blen))
        off += blen
    return out


@contextmanager
def bounded(seconds=TIME_LIMIT_S):
    """Fail on a hang (SIGALRM) or on more than MEMORY_LIMIT bytes allocated."""
    def hang(*_):
        raise AssertionError(f"no result within {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < MEMORY_LIMIT, f"peak allocation {peak >> 20} MB"
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def open_mutant(tmp_path, data: bytes, name="mutant.pcap", **kw):
    """`mfdscope.open` on `data`: the Capture, or the CaptureError message."""
    path = tmp_path / name
    path.write_bytes(data)
    with bounded():
        try:
            cap = mfdscope.open(path, **kw)
        except mfdscope.CaptureError as e:
            msg = str(e)
            assert msg and "\n" not in msg, repr(msg)
            return msg
        cap.summary()  # every frame and the summary must be buildable
        return cap


def rows(packets: pd.DataFrame) -> set[tuple]:
    df = packets.astype(object).where(packets.notna(), None)
    return set(df.itertuples(index=False, name=None))


# ------------------------------------------------------------------- mutations
def flip_bytes(rng, data, _recs):
    b = bytearray(data)
    for _ in range(rng.choice([1, 4, 32])):
        b[rng.randrange(24, len(b))] = rng.randrange(256)
    return bytes(b)


def record_header(rng, data, recs):
    """caplen/origlen huge, zero, past the end of the file, off by one."""
    b = bytearray(data)
    off, caplen = rng.choice(recs)
    field = rng.choice((8, 12))
    value = rng.choice([0, 1, caplen - 1, caplen + 1, len(data) - off, 0xFFFFFFFF,
                        0x7FFFFFFF, (256 << 20) + 1, 65536])
    struct.pack_into("<I", b, off + field, value & 0xFFFFFFFF)
    return bytes(b)


def ip_tcp_header(rng, data, recs):
    """ihl/doff 0 or 15, IP total length 0/1/65535, seq jumps, all TCP flags."""
    b = bytearray(data)
    for _ in range(rng.choice([1, 3])):
        off, _ = rng.choice(recs)
        ip, tcp = off + 16 + 14, off + 16 + 34
        what = rng.randrange(5)
        if what == 0:
            b[ip] = 0x40 | rng.choice([0, 1, 15])
        elif what == 1:
            struct.pack_into(">H", b, ip + 2, rng.choice([0, 1, 39, 65535]))
        elif what == 2:
            b[tcp + 12] = rng.choice([0, 1, 15]) << 4
        elif what == 3:
            seq = struct.unpack_from(">I", b, tcp + 4)[0]
            jump = rng.choice([1, -1, 1 << 31, 100_000, -100_000, rng.randrange(1 << 32)])
            struct.pack_into(">I", b, tcp + 4, (seq + jump) & 0xFFFFFFFF)
        else:
            b[tcp + 13] = rng.choice([0xFF, 0x02, 0x12, 0x04, 0x01])
    return bytes(b)


def multifd_header(rng, data, _recs):
    """magic, version, flags, page counts, next_packet_size of a multifd header."""
    hits = [i for i in range(len(data)) if data.startswith(MAGIC, i)]
    b = bytearray(data)
    for _ in range(rng.choice([1, 2])):
        h = rng.choice(hits)
        at, fmt, value = rng.choice([
            (0, "I", 0x11223345), (4, "I", 2), (8, "I", 0xFFFFFFFF), (8, "I", 0x40),
            (8, "I", 0x80), (8, "I", 0x06), (12, "I", 0), (12, "I", 0xFFFFFFFF),
            (16, "I", 0xFFFFFFFF), (16, "I", 129), (20, "I", 0xFFFFFFFF), (20, "I", 0),
            (24, "Q", 1 << 63), (32, "I", 0xFFFFFFFF), (272, "I", 0xFFFFFFFF),
            (24, "B", 0xFF),  # channel id of an initial packet
        ])
        if h + at + struct.calcsize(fmt) <= len(b):
            struct.pack_into(">" + fmt, b, h + at, value)
    return bytes(b)


def truncate(rng, data, recs):
    off, caplen = rng.choice(recs)
    return data[:rng.choice([rng.randrange(1, len(data)), off + 8, off + 16 + caplen // 2])]


def shuffle_records(rng, data, recs):
    """Records duplicated, removed, swapped or moved."""
    pieces = [data[o:o + 16 + c] for o, c in recs]
    i, j = rng.randrange(len(pieces)), rng.randrange(len(pieces))
    how = rng.randrange(4)
    if how == 0:
        pieces.insert(j, pieces[i])
    elif how == 1:
        del pieces[i:i + rng.randrange(1, 20)]
    elif how == 2:
        pieces[i], pieces[j] = pieces[j], pieces[i]
    else:
        pieces.insert(j, pieces.pop(i))
    return data[:24] + b"".join(pieces)


def garbage_after_magic(rng, data, _recs):
    """A valid pcap file header (random link type and snaplen), then random bytes."""
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0,
                       rng.choice([0, 65535, 0xFFFFFFFF]),
                       rng.choice([1, 113, 276, 0, 101, 228, 229, 0xFFFF]))
    return head[:rng.choice([4, 12, 24, 24])] + rng.randbytes(rng.choice([0, 7, 16, 5000]))


MUTATIONS = [flip_bytes, record_header, ip_tcp_header, multifd_header, truncate,
             shuffle_records, garbage_after_magic]


@pytest.fixture(scope="module")
def clean():
    return {"nocomp": synthetic_pcap(),
            "zlib-7.2": synthetic_pcap(profile="7.2", compression="zlib", devices=())}


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("kind", ["nocomp", "zlib-7.2"])
def test_pcap_mutants_never_break(tmp_path, clean, kind, mutate):
    data = clean[kind]
    recs = records(data)
    rng = random.Random(f"{kind}-{mutate.__name__}")
    for _ in range(MUTANTS_PER_CASE):
        open_mutant(tmp_path, mutate(rng, data, recs), decompress=rng.random() < 0.5)


def pcapng_block_length(rng, data, blocks):
    off, _, blen = rng.choice(blocks)
    b = bytearray(data)
    where = rng.choice([off + 4, off + blen - 4])  # leading or trailing length
    struct.pack_into("<I", b, where, rng.choice([0, 3, 12, blen + 4, blen - 4, 0xFFFFFFFF,
                                                 len(data) - off + 4]))
    return bytes(b)


def pcapng_epb_fields(rng, data, blocks):
    off, _, blen = rng.choice([x for x in blocks if x[1] == pw.PCAPNG_EPB])
    b = bytearray(data)
    at = rng.choice([8, 20, 24])  # interface id, caplen, origlen
    struct.pack_into("<I", b, off + at, rng.choice([1, 0xFFFFFFFF, blen, 0]))
    return bytes(b)


def pcapng_block_type(rng, data, blocks):
    off, _, _ = rng.choice(blocks[1:])
    b = bytearray(data)
    struct.pack_into("<I", b, off, rng.choice([0, 1, 2, 3, 0x0A0D0D0A, 0xFFFFFFFF]))
    return bytes(b)


def pcapng_truncate(rng, data, blocks):
    off, _, blen = rng.choice(blocks)
    return data[:off + rng.randrange(blen)]


@pytest.mark.parametrize("mutate", [pcapng_block_length, pcapng_epb_fields,
                                    pcapng_block_type, pcapng_truncate, flip_bytes],
                         ids=lambda m: m.__name__)
def test_pcapng_mutants_never_break(tmp_path, clean, mutate):
    data = to_pcapng(clean["nocomp"])
    blocks = pcapng_blocks(data)
    rng = random.Random(mutate.__name__)
    for _ in range(MUTANTS_PER_CASE):
        open_mutant(tmp_path, mutate(rng, data, blocks), "mutant.pcapng")


# ------------------------------------------------------- nothing decoded is lost
def test_truncation_keeps_every_record_before_the_cut(tmp_path, clean):
    data = clean["nocomp"]
    recs = records(data)
    full = open_mutant(tmp_path, data).packets
    rng = random.Random(7)
    for cut in sorted(rng.randrange(24, len(data)) for _ in range(8)):
        first_lost = next(i for i, (o, c) in enumerate(recs) if o + 16 + c > cut)
        t_cut = min(struct.unpack_from("<I", data, o)[0] + struct.unpack_from(
            "<I", data, o + 4)[0] * 1e-6 for o, _ in recs[first_lost:])
        cap = open_mutant(tmp_path, data[:cut])
        before = full[full["t_end"] < t_cut]
        assert rows(before) <= rows(cap.packets), f"cut at {cut}"
        assert cap.expert["message"].str.contains("truncated").any()


def test_damaged_frame_loses_nothing_on_other_connections(tmp_path, clean):
    data = clean["nocomp"]
    full = open_mutant(tmp_path, data)
    flow0 = ("192.0.2.1:40000", "192.0.2.2:4444")
    recs = [r for r in records(data)
            if struct.unpack_from(">H", data, r[0] + 16 + 34)[0] == 40000 and r[1] > 200]
    rng = random.Random(3)

    def others(cap):
        keep = cap.connections[[(c.src, c.dst) != flow0 for c in cap.connections.itertuples()]]
        pk = cap.packets[cap.packets["flow"].isin(keep["flow"])]
        addr = dict(zip(keep["flow"], zip(keep["src"], keep["dst"])))
        return {(addr[r[0]], *r[1:]) for r in rows(pk)}

    want = others(full)
    for damage in ("payload", "seq", "flags", "doff", "drop"):
        off, caplen = rng.choice(recs)
        b = bytearray(data)
        tcp = off + 16 + 34
        if damage == "payload":
            b[tcp + 20:tcp + 60] = bytes(40)
        elif damage == "seq":
            struct.pack_into(">I", b, tcp + 4, rng.randrange(1 << 32))
        elif damage == "flags":
            b[tcp + 13] = 0xFF
        elif damage == "doff":
            b[tcp + 12] = 0xF0
        else:
            del b[off:off + 16 + caplen]
        assert others(open_mutant(tmp_path, bytes(b))) == want, damage


# -------------------------------------------------------------- regression cases
def test_packet_num_beyond_int64_is_kept_whole(tmp_path, clean):
    """packet_num is a u64 on the wire: with the top bit set (a corrupt header, found
    by fuzzing a real QEMU capture) an Int64 column made building the frame raise
    OverflowError; the column is UInt64 and keeps the value."""
    data = bytearray(clean["nocomp"])
    at = data.find(MAGIC + bytes([0, 0, 0, 1, 0, 0, 0, 1]))  # the first SYNC's header
    struct.pack_into(">Q", data, at + 24, 0xB8577F4BF8767152)
    cap = open_mutant(tmp_path, bytes(data))
    assert (cap.packets["packet_num"] == 0xB8577F4BF8767152).any()


@pytest.mark.parametrize("tsresol,pow2,readable", [
    (9, False, True), (19, False, True), (63, True, True),  # the largest that fit
    (20, False, False), (127, False, False), (64, True, False), (127, True, False),
])
def test_pcapng_if_tsresol_out_of_range(tmp_path, tsresol, pow2, readable):
    """if_tsresol can say 10**127 ticks a second; ticks were converted to uint64 and
    anything past 2**64 raised OverflowError.  Now: a warning, microseconds assumed."""
    out = io.BytesIO()
    w = pw.PcapngWriter(out)
    w.add_interface(pw.LINKTYPE_ETHERNET, tsresol=tsresol, pow2=pow2)
    w.interfaces[0] = (0, 10**6)  # write the timestamp in microseconds
    w.write_frame(1000.0, pw.tcp_frame("10.0.0.1", "10.0.0.2", 40000, 4444, 0, 0, "S"))
    cap = open_mutant(tmp_path, out.getvalue(), "tsresol.pcapng")
    warned = cap.expert["message"].str.contains("if_tsresol").any()
    assert warned != readable
    if not readable:
        assert cap.connections["first_time"].iloc[0] == 1000.0


# ----------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("sub,mutate", [
    ("summary", garbage_after_magic), ("dissect", truncate), ("stats", multifd_header),
    ("interleave", record_header), ("accounting", ip_tcp_header),
])
def test_cli_on_mutants_no_traceback(tmp_path, clean, sub, mutate):
    data = clean["nocomp"]
    path = tmp_path / "mutant.pcap"
    path.write_bytes(mutate(random.Random(sub), data, records(data)))
    p = subprocess.run([sys.executable, "-m", "mfdscope.cli", sub, str(path)],
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode in (0, 1, 2)
    if p.returncode == 2:
        assert p.stderr.startswith("mfdscope: error: ") and p.stderr.count("\n") == 1


def test_lying_original_length_on_a_gso_frame_loses_nothing_after_it(tmp_path):
    """A GSO frame carries IP total length 0, so its payload length comes from the
    record's original length; a corrupt one (0x7FFFFFFF) used to become a 2 GiB
    snaplen hole that swallowed every later segment as a "retransmission".  The
    next segment's sequence number now says where the cut segment really ended."""
    _, chans, truth = synth.build(synth.SynthConfig(channels=1, ram_pages=1024))
    flow = pw.TcpFlowWriter().handshake().send(chans[0], segment_size=1448).close()
    frames = list(flow.frames())
    victim = next(i for i, (_, f, _) in enumerate(frames) if len(f) > 1000 and i > 40)
    t, frame, _ = frames[victim]
    frame = bytearray(frame)
    frame[16:18] = b"\0\0"  # IP total length 0, as GSO captures write it
    frames[victim] = (t, bytes(frame), 0x7FFFFFFF)
    path = tmp_path / "gso.pcap"
    with open(path, "wb") as fh:
        pw.write_pcap(fh, frames)
    cap = mfdscope.open(path)
    conn = cap.connections.iloc[0]
    assert conn["holes"] == 0 and conn["bytes"] == truth.bytes[0]
    assert cap.packets["stream_offset"].tolist() == [r["offset"] for r in truth.records[0]]


def test_corrupt_record_length_mid_file_resumes_at_the_next_record(tmp_path):
    """A record header whose caplen is garbage used to end reading there; the reader
    now finds the next plausible record (two in a row, timestamps near the last good
    one) and goes on, losing only the damaged frame."""
    cfg = synth.SynthConfig(profile="10.0", ram_pages=1024, channels=2)
    main, chans, truth = synth.build(cfg)
    flows = [pw.TcpFlowWriter(client=("192.0.2.1", 40000 + i), t0=1000.0 + i * 1e-4)
             .handshake().send(d, segment_size=1448).close() for i, d in enumerate(chans)]
    clean_path = tmp_path / "clean.pcap"
    with open(clean_path, "wb") as fh:
        pw.write_pcap(fh, pw.interleave(*flows))
    data = bytearray(clean_path.read_bytes())
    offsets, off = [], 24
    while off < len(data):
        offsets.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    victim = offsets[len(offsets) // 2]
    struct.pack_into("<I", data, victim + 8, 0xF0000000)  # caplen far beyond any frame
    cap = open_mutant(tmp_path, bytes(data))
    msgs = cap.expert["message"]
    assert msgs.str.contains(f"corrupt record at byte {victim}").any()
    assert msgs.str.contains("reading resumed at byte").any()
    # one frame lost: one channel has a hole, and both still decode to their ends
    assert cap.connections["holes"].sum() == 1
    for ch, recs in enumerate(truth.records):
        got = cap.packets[cap.packets["channel"] == ch]
        assert got["stream_offset"].max() == recs[-1]["offset"]
