"""Specification of the sans-IO channel parser (`mfdscope.parse.ChannelParser`).

Every case below is a byte stream of one multifd channel, built only with the
`mfdscope.wire` builders (and, for compressed channels, with a real persistent
per-channel compressor flushed once per packet, as QEMU does: spec 4.4), together with
the events the parser must produce.  `check` runs each case the way h11 tests its
readers: the whole stream in one call, the stream byte by byte, the stream cut at
random points (from a reused buffer that is scribbled over after every call), and
through a driver that `skip()`s page data whenever the parser says it may.  All
ways must give identical events, and the events must tile the stream.

Spec references are to ``shared/spec/multifd-wire-format.md``.
"""
from __future__ import annotations

import random
import time
import tracemalloc
import zlib

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfdscope import wire
from mfdscope.events import DeviceStatePacket, Expert, InitPacket, RamPacket, Resync
from mfdscope.parse import ChannelParser

T = 0.0  # one capture time for everything, so that every driver sees the same events
SYNC, DS = wire.FLAG_SYNC, wire.FLAG_DEVICE_STATE
ZLIB, ZSTD = int(wire.Flag.ZLIB), int(wire.Flag.ZSTD)
GARBAGE = b"\x11\x22\x33\x44\x00\x00\x00\x01"  # a header prefix followed by nonsense
VFIO_IDSTR = b"0000:00:04.0/vfio"


# =========================================================================== streams
def page(i: int, page_size: int) -> bytes:
    """Deterministic, compressible but non-trivial page content."""
    rnd = random.Random(i)
    return rnd.randbytes(256) * (page_size // 256)


def init(channel_id: int = 0) -> bytes:
    return wire.pack_init(channel_id, uuid=bytes(range(16)))


def sync(num: int, page_size: int = 4096, *, alloc: int | None = 0) -> bytes:
    """A SYNC packet; 9.2+ sends ``pages_alloc = 0`` (spec 4.5)."""
    return wire.pack_ram(flags=SYNC, page_size=page_size, packet_num=num, pages_alloc=alloc)


def ram(num: int, pages: list[int], *, zero: list[int] = (), page_size: int = 4096,
        flags: int = 0, block: bytes = b"pc.ram", **kw) -> bytes:
    """A nocomp RAM packet carrying ``pages`` (page indices) plus its payload."""
    offsets = [p * page_size for p in pages] + [z * page_size for z in zero]
    hdr = wire.pack_ram(flags=flags, page_size=page_size, packet_num=num, ramblock=block,
                        offsets=offsets, normal_pages=len(pages), zero_pages=len(zero), **kw)
    return hdr + b"".join(page(p, page_size) for p in pages)


def ds(idx: int, data: bytes = b"vendor state", *, vfio_flags: int = 0, flags: int = DS,
       idstr: bytes = VFIO_IDSTR, instance_id: int = 0, vfio_version: int = 0) -> bytes:
    """A device-state packet carrying one VFIO buffer (spec 2.4, 2.5)."""
    buf = wire.pack_vfio_buffer(idx, vfio_flags, data, version=vfio_version)
    return wire.pack_device_state(idstr=idstr, instance_id=instance_id,
                                  next_packet_size=len(buf), flags=flags) + buf


VFIO_CONFIG = (wire.VFIO_MIG_FLAG_DEV_CONFIG_STATE.to_bytes(8, "big") + b"pci config"
               + wire.VFIO_MIG_FLAG_END_OF_STATE.to_bytes(8, "big"))


class Compressor:
    """One persistent compressor per channel, flushed at the end of every packet (4.4)."""

    def __init__(self, method: int):
        self.method = method
        if method == ZLIB:
            self._c = zlib.compressobj()
            self._flush = lambda: self._c.flush(zlib.Z_SYNC_FLUSH)
        else:
            self._c = zstandard.ZstdCompressor().compressobj()
            self._flush = lambda: self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def packet(self, num: int, pages: list[int], *, zero: list[int] = (), flags: int = 0,
               page_size: int = 4096, corrupt: bool = False) -> bytes:
        data = b"".join(page(p, page_size) for p in pages)
        blob = self._c.compress(data) + self._flush()
        if corrupt:
            blob = b"\xff" * len(blob)
        offsets = [p * page_size for p in pages] + [z * page_size for z in zero]
        return wire.pack_ram(flags=flags | self.method, page_size=page_size, packet_num=num,
                             ramblock=b"pc.ram", offsets=offsets, normal_pages=len(pages),
                             zero_pages=len(zero), next_packet_size=len(blob)) + blob


def patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


from stream_builder import Drivers, E, Stream  # noqa: E402  (tests/ is on sys.path)


# =========================================================================== expectations


def init_(at, **kw): return E("init", dict(offset=at, **kw))
def sync_(at, **kw): return E("sync", dict(offset=at, **kw))
def ram_(at, **kw): return E("ram", dict(offset=at, **kw))
def ds_(at, **kw): return E("device_state", dict(offset=at, **kw))
def hole_(at, length, resync): return E("hole", dict(offset=at, length=length, resync=resync))
def resync_(at, skipped): return E("resync", dict(offset=at, skipped=skipped))
def error(msg, **kw): return E("expert", dict(severity="error", msg=msg, **kw))
def warn(msg, **kw): return E("expert", dict(severity="warn", msg=msg, **kw))
def note(msg, **kw): return E("expert", dict(severity="note", msg=msg, **kw))


# =========================================================================== drivers
RECORDS = (InitPacket, RamPacket, DeviceStatePacket)


def _header_cuts(b: bytes) -> set:
    """Cut points right around every record boundary we can guess (magic at 12n)."""
    return {i + d for i in range(0, len(b), 12) if b[i:i + 4] == GARBAGE[:4]
            for d in (-1, 0, 1, 11, 12, 13)}


_DRIVE = Drivers(lambda **kw: ChannelParser(**kw), T, boundary_cuts=_header_cuts)


def _events_only(driver):
    def run(segs, kw):
        return driver(segs, kw)[0]
    run.__name__ = driver.__name__
    return run


whole = _events_only(_DRIVE.whole)
byte_by_byte = _events_only(_DRIVE.byte_by_byte)
skipping = _events_only(_DRIVE.skipping)


def random_splits(seed: int):
    return _events_only(_DRIVE.random_splits(seed))


DRIVERS = [_events_only(d) for d in _DRIVE.all]


def check_tiling(events, size: int) -> None:
    """Records and resync gaps cover the stream contiguously, in order, from 0."""
    spans = []
    for ev in events:
        assert 0 <= ev.offset <= size, ev
        if isinstance(ev, RECORDS):
            spans.append((ev.offset, ev.offset + ev.wire_len, ev))
        elif isinstance(ev, Resync):
            spans.append((ev.offset - ev.skipped, ev.offset, ev))
    pos = 0
    for start, end, ev in spans:
        assert start == pos, f"{ev} starts at {start}, previous record ended at {pos}"
        pos = end
    last = spans[-1][2] if spans else None
    if pos > size:  # only a record cut by the end of the stream may run past it
        assert getattr(last, "missing_bytes", 0) >= pos - size, last
    elif pos < size:  # the rest is reported: a truncated header or unparsable tail
        tail = [e for e in events if isinstance(e, Expert) and e.offset >= pos]
        assert tail, f"bytes {pos}..{size} are not accounted for"


def run_case(stream: Stream, expect: list[E] | None, drivers=DRIVERS, **kw) -> list:
    events = whole(stream.segs, kw)
    if expect is not None:
        problems = [f"#{i}: {m!r} vs {ev!r}: {m.mismatch(ev)}"
                    for i, (m, ev) in enumerate(zip(expect, events)) if m.mismatch(ev)]
        if problems or len(expect) != len(events):
            got = "\n".join(f"  {ev!r}" for ev in events)
            want = "\n".join(f"  {m!r}" for m in expect)
            pytest.fail(f"events differ:\n{chr(10).join(problems)}\ngot:\n{got}\nexpected:\n{want}")
    check_tiling(events, stream.size)
    for driver in drivers:
        other = driver(stream.segs, kw)
        assert other == events, f"{driver.__name__} gives different events"
    return events


# =========================================================================== cases
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


# --------------------------------------------------------------- 10.x, page sizes (2.3, 4.5)
@case
def v10_nocomp_4k():
    """10.x: init, SYNC with pages_alloc 0 first, RAM with zero pages, VFIO, final SYNC."""
    s = (Stream().add(init(2), "init").add(sync(0), "sync0")
         .add(ram(1, [1, 2, 3], zero=[4, 5]), "ram1")
         .add(ram(2, [9], zero=[]), "ram2")
         .add(ram(3, [], zero=[6, 7]), "zero_only")
         .add(ds(0, b"A" * 1000), "ds0")
         .add(ds(1, VFIO_CONFIG, vfio_flags=1), "ds1")
         .add(sync(4), "sync4"))
    return s, [
        init_(s["init"], channel_id=2, uuid=bytes(range(16)), wire_len=64),
        sync_(s["sync0"], page_size=4096, pages_alloc=0, wire_len=1344, payload_len=0),
        ram_(s["ram1"], normal_pages=3, zero_pages=2, ramblock="pc.ram", payload_len=3 * 4096,
             offsets=(4096, 8192, 12288, 16384, 20480), wire_len=1344 + 3 * 4096),
        ram_(s["ram2"], normal_pages=1, offsets=(9 * 4096,), packet_num=2),
        ram_(s["zero_only"], normal_pages=0, zero_pages=2, payload_len=0, wire_len=1344),
        ds_(s["ds0"], idstr="0000:00:04.0/vfio", vfio_version=0, vfio_idx=0, vfio_flags=0,
            next_packet_size=1012, wire_len=276 + 1012),
        ds_(s["ds1"], vfio_idx=1, vfio_flags=1, next_packet_size=12 + len(VFIO_CONFIG)),
        sync_(s["sync4"], packet_num=4, page_size=4096),
    ], {}


def _sync_first(page_size):
    s = (Stream().add(init(), "init").add(sync(0, page_size), "sync0")
         .add(ram(1, [0, 1], zero=[2], page_size=page_size), "ram1")
         .add(sync(2, page_size), "sync2"))
    plen = wire.packet_len(page_size)
    return s, [init_(0), sync_(64, page_size=page_size, wire_len=plen),
               ram_(s["ram1"], page_size=page_size, payload_len=2 * page_size),
               sync_(s["sync2"], page_size=page_size)], {}


@case
def v10_16k_pages_sync_first():
    """The page size of a stream opening with a 9.2+ SYNC comes from the next header."""
    return _sync_first(16384)


@case
def v10_64k_pages_sync_first():
    return _sync_first(65536)


@case
def v10_64k_sync_then_device_state_where_a_4k_sync_would_end():
    """The next header sits where a 4 KiB SYNC would end, too: only the 64 KiB reading
    explains the zeroed offset table, so detection must try the shortest packet first."""
    vfio_data = bytes(1344 - 384 - 276 - 12)  # next header at 64 + 1344
    s = (Stream().add(init()).add(sync(0, 65536), "sync").add(ds(0, vfio_data), "ds")
         .add(sync(1, 65536), "sync1"))
    assert s["sync1"] == 64 + 1344
    return s, [init_(0), sync_(64, page_size=65536, wire_len=384), ds_(s["ds"]),
               sync_(s["sync1"], page_size=65536)], {}


@case
def v10_init_and_one_sync_then_end():
    """Nothing follows the SYNC: the page size is decided at the end of the stream."""
    s = Stream().add(init()).add(sync(0))
    return s, [init_(0), sync_(64, page_size=4096, wire_len=1344)], {}


@case
def v10_init_and_one_64k_sync_then_end():
    s = Stream().add(init()).add(sync(0, 65536))
    return s, [init_(0), sync_(64, page_size=65536, wire_len=384)], {}


@case
def page_size_override():
    """With page_size given nothing is detected; 16 KiB packets are 576 bytes."""
    s = Stream().add(init()).add(sync(0, 16384)).add(ram(1, [5], page_size=16384), "ram")
    return s, [init_(0), sync_(64, page_size=16384, wire_len=576),
               ram_(s["ram"], page_size=16384, offsets=(5 * 16384,))], {"page_size": 16384}


@case
def first_packet_ram_with_pages_alloc():
    """pages_alloc = page_count in a RAM packet gives the page size directly (2.3)."""
    s = Stream().add(init()).add(ram(0, [1], page_size=8192), "ram").add(sync(1, 8192), "sync")
    return s, [init_(0), ram_(64, page_size=8192, pages_alloc=64),
               sync_(s["sync"], page_size=8192)], {}


# --------------------------------------------------------------- 7.2 (section 10)
@case
def v72_nocomp_sync_with_pages_and_stale_empty_packet():
    """7.2: the SYNC carries 128 pages; the following page-less packet repeats
    packet_num with a stale next_packet_size of 524288 and carries no payload."""
    pages = list(range(128))
    s = (Stream().add(init(), "init")
         .add(ram(5, pages, flags=SYNC), "sync")
         .add(wire.pack_ram(flags=0, page_size=4096, packet_num=5, next_packet_size=524288,
                            ramblock=b"pc.ram"), "stale")
         .add(ram(6, [200, 201]), "ram"))
    return s, [
        init_(0),
        sync_(s["sync"], pages_alloc=128, normal_pages=128, payload_len=524288,
              wire_len=1344 + 524288, flags=SYNC),
        ram_(s["stale"], packet_num=5, normal_pages=0, next_packet_size=524288, payload_len=0,
             wire_len=1344),
        ram_(s["ram"], packet_num=6, normal_pages=2),
    ], {}


def _v72_compressed(method):
    c = Compressor(method)
    s = (Stream().add(init(1))
         .add(c.packet(7, [0, 1, 2], flags=SYNC), "sync")
         # the stale page-less packet has no compression bit (section 10)
         .add(wire.pack_ram(flags=0, page_size=4096, packet_num=7, next_packet_size=61,
                            ramblock=b"pc.ram"), "stale")
         .add(c.packet(8, [3, 4]), "ram"))
    return s, [
        init_(0, channel_id=1),
        sync_(s["sync"], flags=SYNC | method, normal_pages=3, decompressed_len=3 * 4096),
        ram_(s["stale"], flags=0, next_packet_size=61, payload_len=0, wire_len=1344),
        ram_(s["ram"], flags=method, normal_pages=2, decompressed_len=2 * 4096),
    ], {"decompress": True}


@case
def v72_zlib_stale_next_packet_size_without_compression_bit():
    return _v72_compressed(ZLIB)


@case
def v72_zstd_stale_next_packet_size_without_compression_bit():
    return _v72_compressed(ZSTD)


# --------------------------------------------------------------- compression (4.4)
def _compressed(method, **kw):
    c = Compressor(method)
    p1, p2 = c.packet(1, [0, 1, 2], zero=[3]), c.packet(2, [4, 5])
    s = (Stream().add(init()).add(sync(0), "sync0").add(p1, "ram1").add(p2, "ram2")
         .add(sync(3), "sync3"))
    n1, n2 = len(p1) - 1344, len(p2) - 1344
    dec = kw.get("decompress") or kw.get("keep_payload")
    expect = [init_(0), sync_(64),
              ram_(s["ram1"], flags=method, normal_pages=3, zero_pages=1, next_packet_size=n1,
                   payload_len=n1, wire_len=1344 + n1,
                   decompressed_len=3 * 4096 if dec else None),
              ram_(s["ram2"], next_packet_size=n2, payload_len=n2,
                   decompressed_len=2 * 4096 if dec else None),
              sync_(s["sync3"])]
    if kw.get("keep_payload"):
        expect[2].fields["payload"] = b"".join(page(i, 4096) for i in (0, 1, 2))
        expect[3].fields["payload"] = b"".join(page(i, 4096) for i in (4, 5))
    return s, expect, kw


@case
def zlib_framing_only():
    """Without decompression the payload length is next_packet_size, and is skipped."""
    return _compressed(ZLIB)


@case
def zlib_decompress():
    return _compressed(ZLIB, decompress=True)


@case
def zlib_keep_payload_gives_the_pages_back():
    return _compressed(ZLIB, keep_payload=True)


@case
def zstd_framing_only():
    return _compressed(ZSTD)


@case
def zstd_decompress():
    return _compressed(ZSTD, decompress=True)


@case
def zstd_keep_payload_gives_the_pages_back():
    return _compressed(ZSTD, keep_payload=True)


def _corrupt(method, **kw):
    c = Compressor(method)
    s = (Stream().add(init()).add(sync(0))
         .add(c.packet(1, [0, 1]), "ok")
         .add(c.packet(2, [2, 3], corrupt=True), "bad")
         .add(c.packet(3, [4]), "after")
         .add(sync(4), "sync"))
    expect = [init_(0), sync_(64), ram_(s["ok"], decompressed_len=8192),
              error("multifd 0: ", offset=s["bad"], group="decompress"),
              ram_(s["bad"], decompressed_len=None),
              ram_(s["after"], decompressed_len=None), sync_(s["sync"])]
    if kw.get("keep_payload"):  # pages or nothing: never compressed bytes posing as pages
        expect[2].fields["payload"] = page(0, 4096) + page(1, 4096)
        expect[4].fields["payload"] = expect[5].fields["payload"] = None
    return s, expect, {"decompress": True, **kw}


@case
def zlib_corrupt_payload_is_an_expert_error():
    return _corrupt(ZLIB)


@case
def zstd_corrupt_payload_is_an_expert_error():
    return _corrupt(ZSTD)


@case
def zlib_corrupt_payload_keep_payload():
    return _corrupt(ZLIB, keep_payload=True)


# --------------------------------------------------------------- field checks (3.2, 4.2, 9.13)
@case
def nocomp_next_packet_size_mismatch():
    """nocomp receivers read normal_pages x page_size and ignore next_packet_size (4.2)."""
    s = (Stream().add(init()).add(sync(0))
         .add(ram(1, [0, 1], next_packet_size=1234), "ram").add(sync(2), "sync"))
    return s, [init_(0), sync_(64),
               warn("next_packet_size 1234 differs from normal_pages x page_size = 8192",
                    offset=s["ram"]),
               ram_(s["ram"], payload_len=8192, next_packet_size=1234), sync_(s["sync"])], {}


@case
def unknown_flag_bits():
    s = (Stream().add(init()).add(sync(0)).add(ram(1, [0], flags=0x80), "ram")
         .add(ds(0, flags=DS | 0x100), "ds").add(sync(2), "sync"))
    return s, [init_(0), sync_(64),
               warn("unknown flag bits 0x80", offset=s["ram"]), ram_(s["ram"], flags=0x80),
               warn("unknown flag bits 0x100", offset=s["ds"]), ds_(s["ds"]),
               sync_(s["sync"])], {}


@case
def reserved_fields_not_zero():
    bad_init = patch(init(), 40, b"\x01")
    pkt = patch(ram(1, [0]), 36, b"\x00\x00\x00\x2a")  # e.g. a fork's skipped_pages (9.13)
    s = Stream().add(bad_init).add(sync(0)).add(pkt, "ram")
    return s, [note("initial packet reserved bytes are not zero", offset=0), init_(0),
               sync_(64), note("reserved fields are not zero", offset=s["ram"]),
               ram_(s["ram"])], {}


@case
def pages_alloc_and_page_counts_out_of_range():
    """5.6 limits: pages_alloc, normal_pages and zero_pages (framing is still sound).

    QEMU rejects only pages_alloc > page_count; a smaller non-zero value is legal
    (upstream never sends one), so it is a note."""
    s = (Stream().add(init()).add(sync(0))
         .add(ram(1, [0], pages_alloc=200), "big")
         .add(ram(2, [0], pages_alloc=100), "alloc")
         .add(ram(3, [0, 1], zero=[2], pages_alloc=2), "zero")
         .add(sync(4), "sync"))
    return s, [init_(0), sync_(64),
               error("multifd: received packet with 200 pages, expected 128"),
               ram_(s["big"]),
               note("pages_alloc 100 differs from page_count 128"),
               ram_(s["alloc"]),
               note("pages_alloc 2 differs from page_count 128"),
               error("multifd: received packet with 1 zero pages, expected maximum 0"),
               ram_(s["zero"]),
               sync_(s["sync"])], {}


# --------------------------------------------------------------- validation, resync (5.6)
@case
def bad_initial_magic():
    s = (Stream().add(patch(init(), 0, b"\xde\xad\xbe\xef"), "init").add(sync(0), "sync")
         .add(ram(1, [0]), "ram"))
    return s, [error("multifd: received packet magic deadbeef expected 11223344", offset=0),
               resync_(64, 64), warn("resynchronised at offset 64 after 64 bytes"),
               sync_(64), ram_(s["ram"])], {}


@case
def bad_initial_version_is_reported_but_decoded():
    """The initial packet has a fixed length: a bad version needs no resync."""
    s = Stream().add(patch(init(), 4, b"\x00\x00\x00\x02")).add(sync(0)).add(ram(1, [0]), "ram")
    return s, [error("multifd: received packet version 2 expected 1", offset=0),
               init_(0, version=2), sync_(64), ram_(s["ram"])], {}


@case
def bad_header_magic_mid_stream():
    bad = patch(ram(1, [0, 1]), 0, b"\x11\x22\x33\x45")
    s = (Stream().add(init()).add(sync(0)).add(ram(0, [7]), "first").add(bad, "bad")
         .add(ram(2, [3]), "ram").add(sync(3), "s"))
    return s, [init_(0), sync_(64), ram_(s["first"]),
               error("multifd: received packet magic 11223345, expected 11223344",
                     offset=s["bad"]),
               resync_(s["ram"], len(bad)), warn("resynchronised"),
               ram_(s["ram"], packet_num=2), sync_(s["s"])], {}


@case
def bad_header_version_mid_stream():
    bad = patch(ram(1, [0]), 4, b"\x00\x00\x00\x02")
    s = (Stream().add(init()).add(sync(0)).add(ds(9), "first").add(bad, "bad").add(ds(0), "ds")
         .add(sync(3), "s"))
    return s, [init_(0), sync_(64), ds_(s["first"]),
               error("multifd: received packet version 2, expected 1", offset=s["bad"]),
               resync_(s["ds"], len(bad)), warn("resynchronised"),
               ds_(s["ds"]), sync_(s["s"])], {}


# --------------------------------------------------------------- lying lengths
@case
def lying_device_state_length():
    bad = wire.pack_device_state(idstr=VFIO_IDSTR, instance_id=0, next_packet_size=0xFFFFFFF0)
    s = (Stream().add(init()).add(sync(0)).add(bad + b"junk" * 100, "bad")
         .add(ds(3), "ds").add(sync(1), "s"))
    return s, [init_(0), sync_(64),
               error("device state packet announces 4294967280 bytes", offset=s["bad"]),
               resync_(s["ds"], len(bad) + 400), warn("resynchronised"),
               ds_(s["ds"], vfio_idx=3), sync_(s["s"])], {}


@case
def lying_normal_pages():
    bad = wire.pack_ram(flags=0, page_size=4096, packet_num=1, normal_pages=0xFFFFFFFF,
                        next_packet_size=4096)
    s = Stream().add(init()).add(sync(0)).add(bad, "bad").add(ram(2, [0]), "ram")
    return s, [init_(0), sync_(64),
               error("4294967295 non-zero pages", offset=s["bad"]),
               error("cannot be trusted: resynchronising", offset=s["bad"]),
               resync_(s["ram"], 1344), warn("resynchronised"), ram_(s["ram"])], {}


@case
def lying_compressed_next_packet_size():
    bad = wire.pack_ram(flags=ZLIB, page_size=4096, packet_num=1, normal_pages=3,
                        offsets=[0, 4096, 8192], next_packet_size=0x7FFFFFFF)
    c = Compressor(ZLIB)
    s = (Stream().add(init()).add(sync(0)).add(bad + b"x" * 5000, "bad")
         .add(c.packet(2, [0]), "ram"))
    return s, [init_(0), sync_(64),
               error("compressed payload of 2147483647 bytes exceeds", offset=s["bad"]),
               error("cannot be trusted", offset=s["bad"]),
               resync_(s["ram"], 1344 + 5000), warn("resynchronised"),
               ram_(s["ram"], decompressed_len=4096)], {"decompress": True}


# --------------------------------------------------------------- device state (2.4, 2.5, 5.6)
@case
def device_state_errors():
    unterminated = patch(ds(7, idstr=b"d" * 255), 12 + 255, b"e")
    s = (Stream().add(init()).add(sync(0))
         .add(ds(0, flags=DS | SYNC), "sync_flag")
         .add(wire.pack_device_state(idstr=VFIO_IDSTR, instance_id=0, next_packet_size=0),
              "empty")
         .add(unterminated, "unterminated")
         .add(ds(1, vfio_version=1), "version")
         .add(ds(0xFFFFFFFF), "idx")
         .add(ds(2, vfio_flags=6), "vflags")
         .add(wire.pack_device_state(idstr=VFIO_IDSTR, instance_id=0, next_packet_size=5)
              + b"short", "short")
         .add(sync(1), "sync"))
    return s, [
        init_(0), sync_(64),
        error("multifd: received SYNC device state packet", offset=s["sync_flag"]),
        ds_(s["sync_flag"], flags=DS | SYNC),
        error("multifd: received empty device state packet", offset=s["empty"]),
        ds_(s["empty"], next_packet_size=0, wire_len=276, vfio_idx=None),
        error("unterminated multifd device state idstr", offset=s["unterminated"]),
        ds_(s["unterminated"], idstr="d" * 255 + "e", vfio_idx=7),
        warn("0000:00:04.0/vfio: packet has unknown version 1", offset=s["version"]),
        ds_(s["version"], vfio_version=1),
        warn("0000:00:04.0/vfio: packet index is invalid", offset=s["idx"]),
        ds_(s["idx"], vfio_idx=0xFFFFFFFF),
        warn("unknown VFIO buffer flags 0x6", offset=s["vflags"]),
        ds_(s["vflags"], vfio_flags=6),
        warn("0000:00:04.0/vfio: packet too short at 5 (min is 12)", offset=s["short"]),
        ds_(s["short"], vfio_version=None, next_packet_size=5),
        sync_(s["sync"]),
    ], {}


@case
def device_state_keep_payload():
    s = Stream().add(init()).add(sync(0)).add(ds(4, VFIO_CONFIG, vfio_flags=1), "ds")
    return s, [init_(0), sync_(64),
               ds_(s["ds"], payload=wire.pack_vfio_buffer(4, 1, VFIO_CONFIG))], \
        {"keep_payload": True}


# --------------------------------------------------------------- capture holes
@case
def hole_inside_page_data():
    r = ram(1, [0, 1, 2])
    s = (Stream().add(init()).add(sync(0)).add(r[:1344 + 5000], "ram").hole(3000, "hole")
         .add(r[1344 + 8000:]).add(ram(2, [3]), "next"))
    return s, [init_(0), sync_(64), hole_(s["hole"], 3000, False),
               ram_(s["ram"], missing_bytes=3000, wire_len=len(r)), ram_(s["next"])], {}


@case
def hole_inside_page_data_keep_payload():
    """Pages around a hole would be misaligned: such a record carries no payload."""
    r = ram(1, [0, 1, 2])
    s = (Stream().add(init()).add(sync(0)).add(r[:1344 + 5000], "ram").hole(3000, "hole")
         .add(r[1344 + 8000:]).add(ram(2, [3]), "next"))
    return s, [init_(0), sync_(64), hole_(s["hole"], 3000, False),
               ram_(s["ram"], missing_bytes=3000, payload=None),
               ram_(s["next"], payload=page(3, 4096))], {"keep_payload": True}


@case
def hole_hitting_a_header():
    """The hole comes while the 9.2+ SYNC before it is still being sized (its page size
    is only known from the next header): the SYNC is complete and must be kept."""
    r = ram(1, [0, 1])
    s = (Stream().add(init()).add(sync(0)).hole(100, "hole").add(r[100:])
         .add(ram(2, [3]), "next").add(sync(3), "sync"))
    return s, [init_(0), sync_(64), hole_(s["hole"], 100, True),
               resync_(s["next"], len(r)), warn("resynchronised"),
               ram_(s["next"]), sync_(s["sync"])], {}


@case
def hole_across_payload_end_and_next_header():
    r = ram(1, [0, 1])
    s = (Stream().add(init()).add(sync(0)).add(r[:2000], "ram").hole(len(r) - 2000 + 50, "hole")
         .add(ds(0)[50:]).add(ds(1), "next"))
    return s, [init_(0), sync_(64), ram_(s["ram"], missing_bytes=len(r) - 2000),
               hole_(s["hole"], len(r) - 2000 + 50, True),
               resync_(s["next"], s["next"] - s["ram"] - len(r)), warn("resynchronised"),
               ds_(s["next"], vfio_idx=1)], {}


@case
def hole_inside_initial_packet():
    s = Stream().add(init()[:10]).hole(20, "hole").add(init()[30:]).add(sync(0), "sync") \
        .add(ram(1, [0]), "ram")
    return s, [warn("initial packet lost in a capture hole", offset=0),
               hole_(10, 20, True), resync_(64, 64), warn("resynchronised"),
               sync_(64), ram_(s["ram"])], {}


@case
def hole_inside_zlib_payload():
    """Decompression stops for good (the stream state is lost), framing goes on."""
    c = Compressor(ZLIB)
    p1 = c.packet(1, [0, 1, 2])
    s = (Stream().add(init()).add(sync(0)).add(p1[:1400], "ram").hole(10, "hole")
         .add(p1[1410:]).add(c.packet(2, [3]), "next").add(sync(3), "sync"))
    return s, [init_(0), sync_(64),
               warn("hole inside compressed data", offset=s["hole"]),
               hole_(s["hole"], 10, False),
               ram_(s["ram"], missing_bytes=10, decompressed_len=None),
               ram_(s["next"], decompressed_len=None), sync_(s["sync"])], {"decompress": True}


@case
def start_resync_in_the_middle_of_page_data():
    r = ram(1, [0, 1])
    s = Stream().add(r[3000:]).add(ram(2, [5]), "ram").add(sync(3), "sync")
    return s, [resync_(s["ram"], s["ram"]), warn("resynchronised"), ram_(s["ram"]),
               sync_(s["sync"])], {"start": "resync"}


@case
def start_resync_on_a_header():
    s = Stream().add(sync(3)).add(ram(4, [5]), "ram")
    return s, [resync_(0, 0), sync_(0), ram_(s["ram"])], {"start": "resync"}


# --------------------------------------------------------------- truncation
@case
def end_inside_a_header():
    s = Stream().add(init()).add(sync(0)).add(ram(1, [0])[:100], "cut")
    return s, [init_(0), sync_(64),
               error("multifd: unexpected EOF after packet header", offset=s["cut"])], {}


@case
def end_inside_the_first_12_bytes():
    s = Stream().add(init()).add(sync(0)).add(ram(1, [0])[:5], "cut")
    return s, [init_(0), sync_(64),
               error("stream ended inside a packet header (5 of 12 bytes)", offset=s["cut"])], {}


@case
def end_inside_the_initial_packet():
    s = Stream().add(init()[:40])
    return s, [error("stream ended inside a initial packet", offset=0)], {}


@case
def end_inside_a_payload():
    r = ram(1, [0, 1])
    s = Stream().add(init()).add(sync(0)).add(r[:1344 + 5000], "cut")
    return s, [init_(0), sync_(64),
               error("stream ended inside the payload", offset=s["cut"]),
               ram_(s["cut"], missing_bytes=8192 - 5000, wire_len=len(r))], {}


@case
def end_inside_a_device_state_payload():
    d = ds(0, b"z" * 300)
    s = Stream().add(init()).add(sync(0)).add(d[:280], "cut")
    return s, [init_(0), sync_(64), error("stream ended inside the payload"),
               ds_(s["cut"], missing_bytes=len(d) - 280, vfio_idx=None)], {}


# --------------------------------------------------------------- adversarial content
@case
def page_data_full_of_header_prefixes():
    """Page data is skipped, never scanned: header look-alikes inside it are harmless."""
    evil = GARBAGE * (4096 * 2 // len(GARBAGE))
    hdr = wire.pack_ram(flags=0, page_size=4096, packet_num=1, ramblock=b"pc.ram",
                        offsets=[0, 4096], normal_pages=2)
    s = (Stream().add(init()).add(sync(0)).add(hdr + evil, "ram").add(ram(2, [3]), "next"))
    return s, [init_(0), sync_(64), ram_(s["ram"], payload_len=8192), ram_(s["next"])], {}


@case
def garbage_of_header_prefixes_in_resync_mode():
    g = GARBAGE * 512
    s = Stream().add(g).add(ram(2, [3]), "ram").add(sync(3), "sync")
    return s, [resync_(len(g), len(g)), warn("resynchronised"), ram_(len(g)),
               sync_(s["sync"])], {"start": "resync"}


@case
def garbage_then_end_in_resync_mode():
    """A header look-alike cut by the end of the stream is unparsed tail, not a header."""
    s = Stream().add(GARBAGE * 64)
    return s, [warn(f"{len(GARBAGE) * 64} bytes at the end of the stream without a valid header",
                    offset=0)], {"start": "resync"}


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_case(build):
    stream, expect, kw = build()
    run_case(stream, expect, **kw)


# =========================================================================== one-off properties
def test_times_of_a_record_are_those_of_its_first_and_last_byte():
    data = init() + sync(0) + ram(1, [0])
    p = ChannelParser()
    ev = p.feed(data[:100], 1.0) + p.feed(data[100:2000], 2.0) + p.feed(data[2000:], 3.0)
    ev += p.end(4.0)
    assert [(e.kind, e.t_start, e.t_end) for e in ev] == [
        ("init", 1.0, 1.0), ("sync", 1.0, 2.0), ("ram", 2.0, 3.0)]


def test_skip_more_than_skippable_is_refused():
    from mfdscope.parse import ParserError
    p = ChannelParser(page_size=4096)
    p.feed(init() + sync(0) + ram(1, [0])[:1400], T)
    assert p.skippable == 4096 - 56
    with pytest.raises(ParserError):
        p.skip(p.skippable + 1, T)


def test_nothing_is_skippable_when_payload_is_wanted():
    c = Compressor(ZLIB)
    for kw, data in (({"keep_payload": True}, ram(1, [0])),
                     ({"decompress": True}, c.packet(1, [0]))):
        p = ChannelParser(page_size=4096, **kw)
        p.feed(init() + sync(0) + data[:1400], T)
        assert p.skippable == 0


@pytest.mark.parametrize("bad", [
    wire.pack_device_state(idstr=VFIO_IDSTR, instance_id=0, next_packet_size=0xFFFFFFF0),
    wire.pack_ram(flags=0, page_size=4096, packet_num=1, normal_pages=0xFFFFFFFF,
                        next_packet_size=4096),
    wire.pack_ram(flags=ZSTD, page_size=4096, packet_num=1, normal_pages=1,
                  next_packet_size=0x7FFFFFFF),
], ids=["ds_next_packet_size", "normal_pages", "compressed_next_packet_size"])
@pytest.mark.parametrize("kw", [{}, {"decompress": True}, {"keep_payload": True}],
                         ids=["plain", "decompress", "keep_payload"])
def test_lying_lengths_allocate_nothing_and_do_not_hang(bad, kw):
    data = init() + sync(0) + bad + ram(2, [1]) + sync(3)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        p = ChannelParser(**kw)
        events = p.feed(data, T) + p.end(T)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20
    assert time.perf_counter() - t0 < 2
    assert any(e.kind == "expert" and e.severity == "error" for e in events)
    assert [e.kind for e in events if isinstance(e, RECORDS)] == ["init", "sync", "ram", "sync"]


def test_two_megabytes_of_header_prefixes_in_resync_mode():
    garbage = GARBAGE * (2 * 2**20 // len(GARBAGE))
    tail = ram(2, [3]) + sync(3)
    t0 = time.perf_counter()
    p = ChannelParser(start="resync")
    events = p.feed(garbage, T)
    for i in range(0, len(tail), 1000):
        events += p.feed(tail[i:i + 1000], T)
    events += p.end(T)
    assert time.perf_counter() - t0 < 5  # linear: about 1 s on a laptop
    assert [e.kind for e in events] == ["resync", "expert", "ram", "sync"]
    assert events[0].skipped == len(garbage)


# =========================================================================== hypothesis
PACKET = st.one_of(
    st.tuples(st.just("ram"), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**40),
              st.sampled_from([b"pc.ram", b"mem0", b"/rom@etc/acpi/tables"])),
    st.tuples(st.just("sync"), st.booleans()),
    st.tuples(st.just("ds"), st.integers(0, 300), st.integers(0, 2**32 - 2),
              st.sampled_from([0, 1])),
)


@st.composite
def valid_streams(draw):
    """init, a first SYNC or RAM packet (pages_alloc 0 or page_count), then a random mix."""
    page_size = draw(st.sampled_from(wire.SUPPORTED_PAGE_SIZES))
    count = wire.page_count(page_size)
    seed = draw(st.integers(0, 2**16))
    rnd = random.Random(seed)
    out = [init(draw(st.integers(0, 255)))]
    num = 0
    first_alloc = draw(st.sampled_from([0, count]))
    out.append(wire.pack_ram(flags=SYNC, page_size=page_size, packet_num=num,
                             pages_alloc=first_alloc))
    for spec in draw(st.lists(PACKET, max_size=8)):
        num += 1
        if spec[0] == "ram":
            _, normal, zero, base, block = spec
            offs = [(base + i) * page_size for i in range(normal + zero)]
            out.append(wire.pack_ram(flags=0, page_size=page_size, packet_num=num,
                                     ramblock=block, offsets=offs, normal_pages=normal,
                                     zero_pages=zero) + rnd.randbytes(normal * page_size))
        elif spec[0] == "sync":
            out.append(wire.pack_ram(flags=SYNC, page_size=page_size, packet_num=num,
                                     pages_alloc=0 if spec[1] else count))
        else:
            _, size, idx, vflags = spec
            buf = wire.pack_vfio_buffer(idx, vflags, rnd.randbytes(size))
            out.append(wire.pack_device_state(idstr=VFIO_IDSTR, instance_id=idx % 3,
                                              next_packet_size=len(buf)) + buf)
    return out


def reencode(ev) -> bytes:
    if isinstance(ev, InitPacket):
        return wire.pack_init(ev.channel_id, ev.uuid)
    if isinstance(ev, RamPacket):
        return wire.pack_ram(flags=ev.flags, page_size=ev.page_size, packet_num=ev.packet_num,
                             ramblock=ev.ramblock.encode(), offsets=ev.offsets,
                             normal_pages=ev.normal_pages, zero_pages=ev.zero_pages,
                             next_packet_size=ev.next_packet_size,
                             pages_alloc=ev.pages_alloc) + (ev.payload or b"")
    assert isinstance(ev, DeviceStatePacket), ev
    return wire.pack_device_state(idstr=ev.idstr.encode(), instance_id=ev.instance_id,
                                  next_packet_size=ev.next_packet_size,
                                  flags=ev.flags) + (ev.payload or b"")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_streams())
def test_valid_streams_reencode_to_the_same_bytes(packets):
    data = b"".join(packets)
    stream = Stream().add(data)
    events = run_case(stream, None, drivers=[random_splits(1)], keep_payload=True)
    assert all(isinstance(e, RECORDS) for e in events), [e for e in events if e.kind == "expert"]
    assert [reencode(e) for e in events] == packets
    # the same framing when payloads are skipped instead of kept
    skipped = skipping(stream.segs, {})
    assert [(e.kind, e.offset, e.wire_len) for e in skipped] == \
        [(e.kind, e.offset, e.wire_len) for e in events]


@st.composite
def corrupted_streams(draw):
    data = bytearray(b"".join(draw(valid_streams())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "prefix"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            n = draw(st.integers(1, 2000))
            del data[at:at + n]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from([GARBAGE * 3, b"\xff" * 4, wire.HEADER_PREFIX,
                                                bytes(draw(st.binary(max_size=50)))]))
        else:
            data[at:at] = wire.HEADER_PREFIX + draw(st.binary(min_size=4, max_size=4))
    holes = draw(st.lists(st.tuples(st.integers(0, len(data)), st.integers(1, 3000)),
                          max_size=2))
    return bytes(data), sorted(holes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_streams(), st.sampled_from([{}, {"start": "resync"}, {"decompress": True},
                                             {"keep_payload": True}, {"page_size": 4096}]),
       st.integers(0, 2**32))
def test_corrupted_streams_never_raise_and_always_end(corrupted, kw, seed):
    data, holes = corrupted
    s, prev = Stream(), 0
    for at, n in holes:
        s.add(data[prev:max(at, prev)])
        s.hole(n)
        prev = max(at, prev)
    s.add(data[prev:])
    events = random_splits(seed)(s.segs, kw)
    assert events == whole(s.segs, kw)
    check_tiling(events, s.size)
