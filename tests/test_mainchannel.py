"""Specification of the sans-IO main-channel parser (`mfdscope.mainchannel`).

As in tests/test_parse.py: every case is a byte stream built only from `mfdscope.wire`
constants, with the events the parser must produce; `run_case` feeds it whole, byte by
byte, cut at random points (from a reused buffer scribbled over after each call), and
through a driver that `skip()`s whatever the parser says it may skip.  All drivers must
give identical events.  Then the real QEMU captures' main channels (captures/qemu), and
damaged streams, which must give expert items and never exceptions.

Spec references are to ``shared/spec/multifd-wire-format.md`` (3.3, 4.6, 5.2, 7).
"""
from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import mfdscope
from mfdscope import wire
from mfdscope.capture import Reassembler, open_capture
from mfdscope.events import Expert, RamBlockSize
from mfdscope.mainchannel import MainChannelParser, ParserError

T = 0.0
S, F, C = wire.VMSection, wire.RamSaveFlag, wire.MigCmd
PS = 4096
QEMU_DIR = Path(__file__).resolve().parent.parent / "captures" / "qemu"
BLOCKS = (("pc.ram", 1 << 20), ("pc.bios", 1 << 16))


# =========================================================================== builders
def u8(v): return struct.pack(">B", v)
def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def name(s: str) -> bytes: return u8(len(s.encode())) + s.encode()


def header(version=wire.QEMU_VM_FILE_VERSION, magic=wire.QEMU_VM_FILE_MAGIC) -> bytes:
    return wire.QEVM_HEADER.pack(magic=magic, version=version)


def configuration(machine="pc-i440fx-10.0", subsections=b"") -> bytes:
    return u8(S.CONFIGURATION) + u32(len(machine)) + machine.encode() + subsections


def subsection(idstr: str, body: bytes, version=1) -> bytes:
    return u8(S.SUBSECTION) + name(idstr) + u32(version) + body


def start(sid, idstr="ram", instance=0, version=4, kind=S.SECTION_START) -> bytes:
    return u8(kind) + u32(sid) + name(idstr) + u32(instance) + u32(version)


def part(sid, kind=S.SECTION_PART) -> bytes:
    return u8(kind) + u32(sid)


def footer(sid) -> bytes:
    return u8(S.SECTION_FOOTER) + u32(sid)


def command(cmd, data=b"", length=None) -> bytes:
    return u8(S.COMMAND) + u16(cmd) + u16(len(data) if length is None else length) + data


def mem_size(blocks=BLOCKS, extra=None) -> bytes:
    out = u64(sum(s for _, s in blocks) | F.MEM_SIZE)
    for i, (n, s) in enumerate(blocks):
        out += name(n) + u64(s) + b"".join(u64(x) for x in (extra or {}).get(i, ()))
    return out


def zero(off, block=None, fill=0) -> bytes:
    if block is None:
        return u64(off | F.ZERO | F.CONTINUE) + u8(fill)
    return u64(off | F.ZERO) + name(block) + u8(fill)


def page(off, block=None, data=None, page_size=PS) -> bytes:
    data = data if data is not None else bytes([off // page_size % 251 + 1]) * page_size
    if block is None:
        return u64(off | F.PAGE | F.CONTINUE) + data
    return u64(off | F.PAGE) + name(block) + data


FLUSH = u64(F.MULTIFD_FLUSH)
EOS = u64(F.EOS)
EOF = u8(S.EOF)


from stream_builder import Drivers, E, Stream  # noqa: E402  (tests/ is on sys.path)


# =========================================================================== drivers


def e(kind, at=None, **kw):
    if at is not None:
        kw["offset"] = at
    return E(kind, kw)


def error(msg, **kw): return E("expert", dict(severity="error", msg=msg, **kw))
def warn(msg, **kw): return E("expert", dict(severity="warn", msg=msg, **kw))
def note(msg, **kw): return E("expert", dict(severity="note", msg=msg, **kw))


_DRIVE = Drivers(lambda **kw: MainChannelParser(**kw), T)
whole = _DRIVE.whole
DRIVERS = _DRIVE.all


def run_case(stream: Stream, expect, **kw):
    events, parser = whole(stream.segs, kw)
    if expect is not None:
        problems = [f"#{i}: {m!r} vs {ev!r}: {m.mismatch(ev)}"
                    for i, (m, ev) in enumerate(zip(expect, events)) if m.mismatch(ev)]
        if problems or len(expect) != len(events):
            got = "\n".join(f"  {ev!r}" for ev in events)
            pytest.fail("events differ:\n" + "\n".join(problems) + f"\ngot:\n{got}\n"
                        f"expected:\n" + "\n".join(f"  {m!r}" for m in expect))
    for driver in DRIVERS:
        other, p2 = driver(stream.segs, kw)
        assert other == events, f"{driver.__name__} gives different events"
        assert p2.counts == parser.counts and p2.unparsed == parser.unparsed
    assert parser.offset == stream.size
    return events, parser


# =========================================================================== cases
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def v10_per_round():
    """10.0 shape: FLUSH in setup, iterate sections with pages and a mid-section FLUSH,
    SWITCHOVER_START, END, then a device section (opaque, counted)."""
    s = (Stream().add(header(), "hdr").add(configuration(), "cfg")
         .add(start(1), "start").add(mem_size(), "mem").add(FLUSH, "f0").add(EOS, "e0")
         .add(footer(1))
         .add(part(1), "p1").add(zero(0, "pc.ram"), "z").add(zero(PS)).add(page(2 * PS))
         .add(FLUSH, "f1").add(page(3 * PS, "pc.bios")).add(EOS, "e1").add(footer(1))
         .add(command(C.SWITCHOVER_START), "sw")
         .add(part(1, S.SECTION_END), "end").add(FLUSH, "f2").add(EOS, "e2").add(footer(1))
         .add(start(0, "timer", 0, 2, S.SECTION_FULL), "timer").add(b"\x01" * 40, "dev"))
    pages_len = len(zero(0, "pc.ram") + zero(PS) + page(2 * PS) + page(3 * PS, "pc.bios"))
    return s, [
        e("header", s["hdr"], version=3),
        e("configuration", s["cfg"], machine="pc-i440fx-10.0", wire_len=19),
        e("section", s["start"], section_type=1, section_id=1, idstr="ram", instance_id=0,
          version_id=4),
        e("mem_size", s["mem"], total=sum(b for _, b in BLOCKS),
          blocks=tuple(RamBlockSize(n, b) for n, b in BLOCKS)),
        e("flush", s["f0"], section_id=1), e("eos", s["e0"], section_id=1),
        e("section", s["p1"], section_type=2, idstr="ram"),
        e("flush", s["f1"]),
        e("pages", s["z"], zero_pages=2, normal_pages=2, wire_len=pages_len),
        e("eos", s["e1"]),
        e("command", s["sw"], cmd=11, name="SWITCHOVER_START", length=0),
        e("section", s["end"], section_type=3),
        e("flush", s["f2"]), e("eos", s["e2"]),
        e("section", s["timer"], section_type=4, section_id=0, idstr="timer", version_id=2),
        e("opaque", s["dev"], idstr="timer", section_id=0),
        note("40 bytes after it were not parsed", offset=s["dev"], group="opaque"),
    ], {}, dict(flush=3, eos=3, zero_pages=2, normal_pages=2, switchover_start=1), 40


@case
def v72_legacy_zero_pages_continue_across_sections():
    """7.2 shape: zero pages on main, no FLUSH; a section part may open with a CONTINUE
    record (the block is the destination's last one, kept across sections)."""
    s = (Stream().add(header()).add(configuration("pc-i440fx-7.2"))
         .add(start(2)).add(mem_size()).add(EOS).add(footer(2))
         .add(part(2)).add(zero(0, "pc.ram"), "z1").add(zero(PS)).add(EOS, "e1").add(footer(2))
         .add(part(2)).add(zero(2 * PS), "z2").add(EOS).add(footer(2))
         .add(part(2, S.SECTION_END)).add(EOS).add(footer(2))
         .add(EOF, "eof"))
    return s, [
        e("header"), e("configuration", machine="pc-i440fx-7.2"), e("section"), e("mem_size"),
        e("eos"), e("section"), e("pages", s["z1"], zero_pages=2, normal_pages=0), e("eos"),
        e("section"), e("pages", s["z2"], zero_pages=1), e("eos"), e("section"), e("eos"),
        e("eof", s["eof"]),
    ], {}, dict(flush=0, eos=4, zero_pages=3, normal_pages=0, footers=4), 0


@case
def reference_writer_stream_with_vm_description():
    """What the reference sender writes (no configuration section), then EOF and the
    VM description JSON, which is stepped over."""
    from mfdscope.reference.mainchannel import MainChannelWriter

    w = MainChannelWriter(PS)
    w.header()
    w.section_start(list(BLOCKS))
    w.multifd_flush()
    w.eos()
    w.section_part()
    w.zero_page("pc.ram", 0)
    w.zero_page("pc.ram", PS)
    w.zero_page("pc.bios", 0)
    w.multifd_flush()
    w.eos()
    w.switchover_start()
    w.section_end()
    w.eos()
    w.eof()
    js = json.dumps({"page_size": PS, "devices": []}).encode()
    s = Stream().add(w.take()).add(u8(S.VMDESCRIPTION) + u32(len(js)) + js)
    return s, None, {}, dict(flush=2, eos=3, zero_pages=3, switchover_start=1, sections=3), 0


@case
def configuration_subsections_and_mem_size_extras():
    """target-page-bits (16 KiB pages), capabilities (x-ignore-shared), uuid; then a
    RAMBlock list with a postcopy page size and an ignore-shared address per block."""
    subs = (subsection("configuration/target-page-bits", u32(14))
            + subsection("configuration/capabilities", u32(1) + name("x-ignore-shared"))
            + subsection("configuration/uuid", bytes(range(16))))
    blocks = (("pc.ram", 1 << 21), ("pc.bios", 1 << 16))
    s = (Stream().add(header()).add(configuration("pc-q35-9.2", subs), "cfg")
         .add(start(1)).add(mem_size(blocks, {0: (2 << 20, 0), 1: (0x100000,)}), "mem")
         .add(EOS).add(footer(1))
         .add(part(1)).add(page(0, "pc.ram", page_size=16384), "pg").add(EOS).add(footer(1)))
    return s, [
        e("header"),
        e("configuration", s["cfg"], machine="pc-q35-9.2", target_page_bits=14,
          capabilities=("x-ignore-shared",),
          subsections=("configuration/target-page-bits", "configuration/capabilities",
                       "configuration/uuid")),
        e("section"),
        e("mem_size", s["mem"], blocks=(RamBlockSize("pc.ram", 1 << 21, (2 << 20, 0)),
                                        RamBlockSize("pc.bios", 1 << 16, (0x100000,)))),
        e("eos"), e("section"), e("pages", s["pg"], normal_pages=1, wire_len=8 + 7 + 16384),
        e("eos"),
        warn("main channel ended before QEMU_VM_EOF"),
    ], {}, dict(normal_pages=1), 0


@case
def commands():
    """OPEN_RETURN_PATH, PING, POSTCOPY_ADVISE (16 bytes: host and target page sizes),
    then a bad length and an unknown command: framing is kept, QEMU's errors reported."""
    s = (Stream().add(header())
         .add(command(C.OPEN_RETURN_PATH), "orp").add(command(C.PING, u32(7)), "ping")
         .add(command(C.POSTCOPY_ADVISE, u64(4096) + u64(4096)), "adv")
         .add(command(C.SWITCHOVER_START, b"xx"), "bad")
         .add(command(0x20, b"abc"), "unk")
         .add(EOF))
    return s, [
        e("header"),
        e("command", s["orp"], name="OPEN_RETURN_PATH", length=0),
        e("command", s["ping"], name="PING", data=u32(7)),
        e("command", s["adv"], name="POSTCOPY_ADVISE", length=16),
        error("SWITCHOVER_START received with bad length - expecting 0, received 2",
              offset=s["bad"]),
        e("command", s["bad"], length=2),
        error("MIG_CMD 0x20 unknown (len 0x3)", offset=s["unk"]),
        e("command", s["unk"], cmd=0x20, name="0x20", data=b"abc"),
        e("eof"),
    ], {}, dict(commands=5, switchover_start=1), 0


def _stops(data: bytes, msg: str, severity: str, at: int, reason: str):
    s = Stream().add(header()).add(data)
    tail = s.size - at
    exp = [e("header"), E("expert", dict(severity=severity, msg=msg, offset=at)),
           e("opaque", at, reason=reason)]
    if tail:
        exp.append(note(f"{tail} bytes after it were not parsed"))
    return s, exp, {}, {}, tail


@case
def unknown_section_type():
    return _stops(b"\x09garbage", "Unknown savevm section type 9", "error", 8,
                  "unknown section type 0x09")


@case
def xbzrle_cannot_be_followed():
    body = start(1) + mem_size() + u64(F.XBZRLE) + name("pc.ram") + b"\x01\x00\x10" + b"x" * 16
    at = 8 + len(start(1) + mem_size())
    s, exp, kw, counts, tail = _stops(body, "XBZRLE-encoded page on the main channel", "note",
                                      at, "XBZRLE-encoded page")
    exp[1:1] = [e("section"), e("mem_size")]
    return s, exp, kw, counts, tail


@case
def compressed_page_and_hook_cannot_be_followed():
    body = start(1) + mem_size() + u64(F.COMPRESS_PAGE) + name("pc.ram") + u32(3) + b"abc"
    at = 8 + len(start(1) + mem_size())
    s, exp, kw, counts, tail = _stops(body, "compressed page", "note", at,
                                      "compressed page (RAM_SAVE_FLAG_COMPRESS_PAGE, "
                                      "multi-thread compression)")
    exp[1:1] = [e("section"), e("mem_size")]
    return s, exp, kw, counts, tail


@case
def unknown_ram_flags():
    body = start(1) + mem_size() + u64(F.FULL) + b"rest"
    at = 8 + len(start(1) + mem_size())
    s, exp, kw, counts, tail = _stops(body, "Unknown combination of migration flags: 0x1",
                                      "error", at, "unknown RAM flags 0x1")
    exp[1:1] = [e("section"), e("mem_size")]
    return s, exp, kw, counts, tail


@case
def continue_without_block():
    body = start(1) + mem_size() + zero(0) + EOS
    at = 8 + len(start(1) + mem_size())
    s, exp, kw, counts, tail = _stops(body, "Ack, bad migration stream!", "error", at,
                                      "page record without a block")
    exp[1:1] = [e("section"), e("mem_size")]
    return s, exp, kw, counts, tail


@case
def version_2_is_obsolete():
    s = Stream().add(header(version=wire.QEMU_VM_FILE_VERSION_COMPAT)).add(b"\x07rest")
    return s, [e("header", 0, version=2),
               error("SaveVM v2 format is obsolete and don't work anymore", offset=0),
               e("opaque", 8), note("5 bytes after it were not parsed")], {}, {}, 5


@case
def not_a_migration_stream():
    s = Stream().add(header(magic=0x11223344)).add(b"abc")
    return s, [error("Not a migration stream (magic 0x11223344)", offset=0),
               e("opaque", 0, reason="not a migration stream"),
               note("11 bytes after it were not parsed")], {}, {}, 11


@case
def footer_mismatch_and_unknown_section_id():
    s = (Stream().add(header()).add(start(1)).add(mem_size()).add(EOS)
         .add(footer(5), "foot").add(part(9), "p9").add(b"zz", "rest"))
    return s, [e("header"), e("section"), e("mem_size"), e("eos"),
               error("Mismatched section id in footer for ram - read 0x5 expected 0x1",
                     offset=s["foot"]),
               e("section", s["p9"], section_id=9, idstr=None),
               error("Unknown savevm section 9", offset=s["p9"]),
               e("opaque", s["rest"]), note("2 bytes after it were not parsed")], {}, {}, 2


@case
def mem_size_list_longer_than_total():
    body = start(1) + u64((1 << 20) | F.MEM_SIZE) + name("pc.ram") + u64(1 << 21) + EOS
    at = 8 + len(start(1)) + 8
    s, exp, kw, counts, tail = _stops(body, "exceeds what is left of the MEM_SIZE total",
                                      "error", at, "corrupt RAMBlock list")
    exp[1:1] = [e("section")]
    return s, exp, kw, counts, tail


@case
def configuration_name_too_long():
    return _stops(u8(S.CONFIGURATION) + u32(0xFFFFFFF0) + b"x" * 30, "machine type name of",
                  "error", 8, "corrupt configuration section")


@case
def hole_in_page_data_is_stepped_over_hole_in_records_stops():
    rest = len(page(0, "pc.ram")) - 100
    s = (Stream().add(header()).add(start(1)).add(mem_size())
         .add(page(0, "pc.ram")[:100]).hole(rest + 5, "h1")  # the hole runs into ...
         .add(FLUSH[5:] + EOS))  # ... the next record: framing is lost there
    lost = s["h1"] + rest  # first byte of the record the hole cut
    return s, [e("header"), e("section"), e("mem_size"),
               warn("5 bytes missing from the capture", offset=lost, group="hole"),
               e("pages", normal_pages=1),
               e("opaque", lost, reason="capture hole"),
               note(f"({rest + 5} bytes missing in holes)")], {}, {}, 3 + 8


@case
def truncated_inside_page_data():
    s = Stream().add(header()).add(start(1)).add(mem_size()).add(page(0, "pc.ram")[:50], "pg")
    return s, [e("header"), e("section"), e("mem_size"),
               error("main channel ended inside page data: 4061 bytes missing",
                     offset=s["pg"], group="truncated"),
               e("pages", s["pg"], normal_pages=1)], {}, {}, 0


@case
def truncated_inside_a_record():
    s = Stream().add(header()).add(start(1)).add(mem_size()).add(FLUSH[:5], "f")
    return s, [e("header"), e("section"), e("mem_size"),
               error("main channel ended inside a RAM record (5 bytes)", offset=s["f"])], \
        {}, {}, 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name):
    stream, expect, kw, counts, unparsed = CASES[name]()
    events, parser = run_case(stream, expect, **kw)
    for k, v in counts.items():
        assert parser.counts[k] == v, (k, parser.counts)
    assert parser.unparsed == unparsed


def test_page_events_and_page_data():
    data = bytes(range(256)) * 16
    s = (Stream().add(header()).add(start(1)).add(mem_size()).add(EOS).add(part(1))
         .add(zero(0, "pc.ram", fill=0)).add(page(PS, data=data)).add(EOS).add(EOF))
    events, _ = run_case(s, None, page_events=True)
    pages = [ev for ev in events if ev.kind == "page"]
    assert [(p.block, p.page_offset, p.zero, p.fill, p.data) for p in pages] == \
        [("pc.ram", 0, True, 0, None), ("pc.ram", PS, False, None, None)]
    events, _ = run_case(s, None, keep_page_data=True)
    assert [ev.data for ev in events if ev.kind == "page"] == [None, data]
    # a zero page with a fill byte is reported (QEMU 9.0+ refuses it), once
    s = (Stream().add(header()).add(start(1)).add(mem_size()).add(zero(0, "pc.ram", 7))
         .add(zero(PS, fill=7)).add(EOS))
    events, _ = run_case(s, None)
    assert sum("fill byte 7" in getattr(ev, "message", "") for ev in events) == 1


def test_unknown_block_and_offset_are_errors_once():
    s = (Stream().add(header()).add(start(1)).add(mem_size()).add(zero(0, "nope"))
         .add(zero(PS)).add(zero(1 << 30, "pc.ram")).add(EOS).add(EOF))
    events, _ = run_case(s, None)
    msgs = [ev.message for ev in events if isinstance(ev, Expert)]
    assert sum("Can't find block nope" in m for m in msgs) == 1
    assert sum("Illegal RAM offset 40000000" in m for m in msgs) == 1


def test_skip_api():
    p = MainChannelParser()
    p.feed(header() + start(1) + mem_size() + page(0, "pc.ram")[:20], T)
    assert p.skippable == PS - 5  # 8-byte record, 7-byte idstr, 5 page bytes fed
    with pytest.raises(ParserError):
        p.skip(p.skippable + 1, T)
    assert p.skip(p.skippable, T) == [] and p.skippable == 0
    assert p.feed(EOS, T)[-1].kind == "eos"
    with pytest.raises(ValueError):
        MainChannelParser(page_size=3000)


def test_every_prefix_of_a_stream_ends_cleanly():
    """Truncated anywhere: expert items, never an exception, never a silent stop."""
    stream, _, _, _, _ = CASES["v10_per_round"]()
    data = b"".join(stream.segs)
    for cut in range(len(data)):
        p = MainChannelParser()
        events = p.feed(data[:cut], T) + p.end(T)
        if cut < len(data) - 40 and cut:
            kinds = {ev.kind for ev in events}
            assert "expert" in kinds, cut


@pytest.mark.parametrize("seed", range(30))
def test_corrupt_streams_never_raise(seed):
    rnd = random.Random(seed)
    stream, _, _, _, _ = CASES[rnd.choice(sorted(CASES))]()
    data = bytearray(b"".join(s for s in stream.segs if isinstance(s, bytes)))
    for _ in range(rnd.randint(1, 8)):
        i = rnd.randrange(len(data))
        data[i] = rnd.randrange(256)
    if rnd.random() < 0.3:
        data = bytearray(header()) + bytearray(rnd.randbytes(rnd.randint(0, 3000)))
    p = MainChannelParser()
    events = []
    pos = 0
    while pos < len(data):
        n = rnd.randint(1, 700)
        if rnd.random() < 0.05:
            events += p.feed_hole(n, T)
        else:
            events += p.feed(bytes(data[pos:pos + n]), T)
        pos += n
    events += p.end(T)
    assert p.offset >= len(data)
    assert len(p._buf) == 0  # nothing held after the end


def test_lengths_are_bounded():
    """Huge length fields neither allocate nor stall: they are waited for or refused."""
    p = MainChannelParser()
    ev = p.feed(header() + command(C.RECV_BITMAP, length=0xFFFF) + b"x" * 10, T)
    assert ev[0].kind == "header" and len(p._buf) <= 64
    ev = p.end(T)
    assert ev[0].severity == "error" and "ended inside" in ev[0].message
    p = MainChannelParser()
    p.feed(header() + start(1) + u64(F.MEM_SIZE | (1 << 50)), T)
    blocks = b"".join(name(f"b{i}") + u64(4096) for i in range(1100))
    ev = p.feed(blocks, T)
    assert any("more than 1024 RAMBlocks" in getattr(x, "message", "") for x in ev)
    assert p.state == "opaque"
    p = MainChannelParser()
    ev = p.feed(header() + EOF + u8(S.VMDESCRIPTION) + u32(0xFFFFFFFF) + b"{}", T)
    assert p.skippable == 0xFFFFFFFF - 2 and len(p._buf) == 0


# =========================================================================== real captures
#: capture -> (MULTIFD_FLUSH, EOS, SWITCHOVER_START, zero pages on main, SYNC per channel)
REAL = {
    "qemu72-nocomp-4ch": (0, 4, 0, 15231, 4),
    "qemu72-zlib-4ch": (0, 4, 0, 15231, 4),
    "qemu72-zstd-4ch": (0, 3, 0, 15231, 3),
    "qemu10-nocomp-4ch": (3, 5, 1, 0, 3),
    "qemu10-zstd-4ch": (3, 3, 1, 0, 3),
    "qemu10-nocomp-2ch-running": (24, 19, 1, 0, 24),
}


def main_stream(name: str) -> bytes:
    """The client-to-server bytes of the capture's connection that starts with QEVM."""
    class Sink:
        def __init__(self):
            self.data = {}

        def on_stream(self, s):
            self.data[s] = bytearray()

        def on_spans(self, s, buf, spans):
            for o, n in zip(spans["buf_off"].tolist(), spans["length"].tolist()):
                self.data[s] += buf[o:o + n]

        def on_hole(self, *a):
            raise AssertionError(f"hole in a committed capture: {a}")

        def on_end(self, *a):
            pass

    cap = open_capture(str(QEMU_DIR / f"{name}.pcap"))
    sink = Sink()
    r = Reassembler(sink)
    for b in cap.batches():
        r.add_batch(b.buf, b)
    r.finish()
    close = getattr(cap, "close", None)
    if close:
        close()
    (data,) = [bytes(d) for d in sink.data.values() if d[:4] == wire.QEVM_MAGIC_BYTES]
    return data


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_capture_main_channel(name):
    flush, eos, switchover, zero_pages, _ = REAL[name]
    data = main_stream(name)
    events, parser = run_case(Stream().add(data), None)
    assert (parser.counts["flush"], parser.counts["eos"], parser.counts["switchover_start"],
            parser.counts["zero_pages"], parser.counts["normal_pages"]) == \
        (flush, eos, switchover, zero_pages, 0)
    bad = [ev for ev in events if isinstance(ev, Expert) and ev.severity != "note"]
    assert not bad, bad
    meta = json.loads((QEMU_DIR / f"{name}.json").read_text())
    qmp = json.loads((QEMU_DIR / f"{name}.query-migrate.json").read_text())
    if meta["qemu_major_minor"].startswith("7"):
        # 7.2: legacy zero-page detection, every zero page travels on main (spec 4.6)
        assert zero_pages == qmp["ram"]["duplicate"]
    (cfg,) = [ev for ev in events if ev.kind == "configuration"]
    assert cfg.machine == f"pc-i440fx-{meta['qemu_major_minor']}"
    (mem,) = [ev for ev in events if ev.kind == "mem_size"]
    assert mem.blocks[0] == RamBlockSize("mem", 64 << 20)
    assert mem.total == sum(b.used_length for b in mem.blocks)
    # every marker comes before the first device section, where parsing stops
    (opq,) = [ev for ev in events if ev.kind == "opaque"]
    assert opq.idstr == "timer" and parser.state == "opaque"
    assert all(ev.offset < opq.offset for ev in events if ev.kind in ("flush", "eos", "command"))
    assert parser.unparsed == len(data) - opq.offset
    # the ram END section's EOS is there: nothing that pairs with multifd is missing
    secs = [ev for ev in events if ev.kind == "section"]
    assert secs[-2].idstr == "ram" and secs[-2].type_name == "end"


@pytest.fixture(scope="module", params=sorted(REAL))
def real_capture(request):
    return request.param, mfdscope.open(QEMU_DIR / f"{request.param}.pcap")


def test_real_capture_main_frame_and_summary(real_capture):
    name, cap = real_capture
    flush, eos, switchover, zero_pages, _ = REAL[name]
    m = cap.main
    assert list(m.columns) == [c.name for c in mfdscope.frames.MAIN_COLUMNS]
    assert (m["kind"] == "flush").sum() == flush and (m["kind"] == "eos").sum() == eos
    assert (m["cmd_name"] == "SWITCHOVER_START").sum() == switchover
    assert m["zero_pages"].sum() == zero_pages
    assert str(m["flow"].dtype) == "Int64" and str(m["kind"].dtype) == "string"
    opaque = m[m["kind"] == "opaque"].iloc[0]
    main_bytes = int(cap.connections.loc[cap.connections["role"] == "main", "bytes"].iloc[0])
    assert opaque["unparsed_bytes"] == main_bytes - opaque["stream_offset"]
    (main,) = [c for c in cap.channels() if c["role"] == "main"]
    assert (main["main_flushes"], main["main_eos"], main["main_zero_pages"],
            main["main_normal_pages"], main["main_switchover_start"]) == \
        (flush, eos, zero_pages, 0, switchover)
    assert not cap.expert["severity"].isin(["error", "warn"]).any()


def test_real_capture_sync_flush_pairing(real_capture):
    """Spec 5.2 on real QEMU: 10.0 one SYNC per channel per MULTIFD_FLUSH (no extra),
    7.2 one SYNC per channel per ram EOS."""
    from mfdscope.analysis import checks

    name, cap = real_capture
    flush, eos, *_, syncs = REAL[name]
    table = checks.sync_flush_pairing(cap)
    assert len(table) == len(cap.multifd) and table["passed"].all(), table.to_string()
    assert (table["observed"] == str(syncs)).all()
    assert syncs == (flush if flush else eos)
    full, ok = checks.check(cap)  # no truth needed
    assert ok and set(full["check"]) == {"sync_pairing"}


def test_real_capture_version_detection(real_capture):
    from mfdscope.analysis import accounting as acc

    name, cap = real_capture
    g = acc.detect_version(cap)
    if name.startswith("qemu10"):
        assert g.qemu_version == "10.x" and not g.ambiguous
    else:
        assert g.qemu_version == "<=8.0"
        assert any("legacy per-section sync" in x for x in g.evidence)


def test_check_cli_without_truth():
    out = subprocess.run([sys.executable, "-m", "mfdscope.cli", "check", "--json",
                          str(QEMU_DIR / "qemu10-nocomp-4ch.pcap")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["passed"] and {c["check"] for c in doc["checks"]} == {"sync_pairing"}


def test_summary_json_has_main_figures():
    out = subprocess.run([sys.executable, "-m", "mfdscope.cli", "summary", "--json",
                          str(QEMU_DIR / "qemu72-nocomp-4ch.pcap")],
                         capture_output=True, text=True, check=True)
    (main,) = [c for c in json.loads(out.stdout)["channels"] if c["role"] == "main"]
    assert main["main_flushes"] == 0 and main["main_eos"] == 4
    assert main["main_zero_pages"] == 15231 and main["main_normal_pages"] == 0


def test_pairing_rule_follows_the_version():
    """Per-round streams: 9.1-9.2 add a final SYNC without FLUSH (spec 5.2)."""
    from mfdscope.analysis import checks

    class Cap:
        pass

    def build(syncs, version):
        import pandas as pd
        from mfdscope import frames

        c = Cap()
        rows = [(0, 1, "sync", 100 * i, 1.0 + i, 1.0 + i, 1344, 1, "SYNC", "none", i, 0, 0, 0,
                 0, 0, None, None, None, None, None, None, 0, None) for i in range(syncs)]
        c.packets = frames.build(frames.PACKET_COLUMNS, rows)
        c.connections = pd.DataFrame({"flow": pd.array([0], "Int64"), "role": ["multifd"],
                                      "channel_id": pd.array([1], "Int64")})
        mrows = [(9, "section", 0, 0.5, 14, "start", 1, "ram", 0, 4, None, None, None, None,
                  None, None, None, None, None),
                 (9, "flush", 20, 1.5, 8, None, 1, None, None, None, None, None, None, None,
                  None, None, None, None, None),
                 (9, "section", 30, 1.6, 5, "end", 1, "ram", None, None, None, None, None,
                  None, None, None, None, None, None),
                 (9, "eos", 40, 1.7, 8, None, 1, None, None, None, None, None, None, None,
                  None, None, None, None, None)]
        c.main = frames.build(frames.MAIN_COLUMNS, mrows)
        return checks.sync_flush_pairing(c, qemu_version=version)

    assert build(1, "10.0")["passed"].all() and not build(2, "10.0")["passed"].any()
    assert build(2, "9.2")["passed"].all() and not build(1, "9.2")["passed"].any()
    assert build(1, "9.0")["passed"].all()
    assert build(1, None)["passed"].all() and build(2, None)["passed"].all()


def test_reference_package_has_no_second_main_parser():
    """One decoder: the reference receiver uses mfdscope.mainchannel."""
    from mfdscope.reference import mainchannel as ref
    from mfdscope.reference import receiver

    assert not hasattr(ref, "MainChannelParser")
    src = Path(receiver.__file__).read_text()
    assert "from ..mainchannel import MainChannelParser" in src
