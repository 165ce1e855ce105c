"""Scapy layers (mfdscope.layers) against the spec tables and against wire.py.

Expected bytes are written out from the spec (shared/spec/multifd-wire-format.md),
not produced by wire.py, so that the layers and wire.py are checked against a third,
independent statement of the format; wire.py's builders are then compared as the
second backend.
"""
from __future__ import annotations

import pickle
import struct
import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.config import conf
from scapy.fields import IntField, ShortField, XIntField
from scapy.packet import Packet, Padding, Raw, ls

from mfdscope import wire
from mfdscope.layers import (
    RAM_PACKET_CLASSES,
    MultiFDDeviceStatePacket,
    MultiFDHeader,
    MultiFDInit,
    MultiFDPacket,
    MultiFDRamPacket,
    QEVMHeader,
    VFIODeviceStateBuffer,
    check_layout,
    dispatch_class,
    dissect_stream,
    field_layout,
    ram_packet_class,
)

# --------------------------------------------------------------------------- spec 4.7
EX_OFFSETS = [0x1000, 0x2000, 0x5000, 0x3000]  # 3 normal pages, then 1 zero page
EX_PAGES = b"".join(bytes([0xA0 + i]) * 4096 for i in range(3))
SPEC_EXAMPLE = (
    bytes.fromhex("11223344")  # 0 magic
    + bytes.fromhex("00000001")  # 4 version
    + bytes.fromhex("00000000")  # 8 flags: nocomp, no sync
    + bytes.fromhex("00000080")  # 12 pages_alloc = 128
    + bytes.fromhex("00000003")  # 16 normal_pages = 3
    + bytes.fromhex("00003000")  # 20 next_packet_size = 12288
    + bytes.fromhex("000000000000002A")  # 24 packet_num = 42
    + bytes.fromhex("00000001")  # 32 zero_pages = 1
    + bytes(28)  # 36 reserved
    + bytes.fromhex("70632E72616D") + bytes(256 - 6)  # 64 ramblock "pc.ram"
    + b"".join(o.to_bytes(8, "big") for o in EX_OFFSETS)  # 320 offsets
    + bytes(124 * 8)  # 352 unused slots
    + EX_PAGES  # 1344 payload
)


def test_spec_example_is_what_the_table_says():
    assert len(SPEC_EXAMPLE) == 13632
    assert SPEC_EXAMPLE[320:352] == b"".join(struct.pack(">Q", o) for o in EX_OFFSETS)
    assert SPEC_EXAMPLE[1344:] == EX_PAGES


def test_build_spec_example():
    pkt = MultiFDRamPacket(packet_num=42, normal_pages=3, zero_pages=1,
                           ramblock=b"pc.ram", offset=EX_OFFSETS) / Raw(EX_PAGES)
    assert bytes(pkt) == SPEC_EXAMPLE  # pages_alloc and next_packet_size defaulted


def test_dissect_spec_example():
    pkt = MultiFDPacket(SPEC_EXAMPLE)
    assert type(pkt) is MultiFDRamPacket
    assert field_values(pkt) | {"offset": None} == {
        "magic": 0x11223344, "version": 1, "flags": 0, "pages_alloc": 128,
        "normal_pages": 3, "next_packet_size": 12288, "packet_num": 42,
        "zero_pages": 1, "unused32": bytes(4), "unused64": bytes(24),
        "ramblock": b"pc.ram" + bytes(250), "offset": None}
    assert len(pkt.offset) == 128
    assert pkt.valid_offsets == EX_OFFSETS
    assert pkt.normal_offsets == EX_OFFSETS[:3]
    assert pkt.zero_offsets == EX_OFFSETS[3:]
    assert pkt.compression is wire.Compression.NONE
    assert pkt[Raw].load == EX_PAGES
    assert Padding not in pkt
    assert bytes(pkt) == SPEC_EXAMPLE


def test_wire_pack_ram_gives_spec_example():
    header = wire.pack_ram(flags=0, page_size=4096, packet_num=42, ramblock=b"pc.ram",
                           offsets=EX_OFFSETS, normal_pages=3, zero_pages=1)
    assert header + EX_PAGES == SPEC_EXAMPLE


# --------------------------------------------------------------------------- round trips
UUID = bytes(range(0x10, 0x20))
IDSTR = b"0000:00:04.0/vfio"
VFIO_DATA = bytes(range(256)) * 5
#: config buffer: DEV_CONFIG_STATE marker, vmstate blob, END_OF_STATE marker (2.5)
VFIO_CONFIG = (struct.pack(">Q", wire.VFIO_MIG_FLAG_DEV_CONFIG_STATE) + b"\x01\x02cfg"
               + struct.pack(">Q", wire.VFIO_MIG_FLAG_END_OF_STATE))
PAGE_4K = b"\x5a" * 4096
PAGE_16K = bytes(range(256)) * 64
ZLIB_PAGES = b"\x00" * 4096 + b"\x11" * 4096


def zlib_chunk(data: bytes) -> bytes:
    """One packet's payload as QEMU's zlib sender makes it: sync flush, no end."""
    z = zlib.compressobj(1)
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


ZLIB_PAYLOAD = zlib_chunk(ZLIB_PAGES)


@dataclass
class Case:
    id: str
    packet: Packet  # built with the layers
    wire_bytes: bytes  # the same thing built with wire.pack_* (plus payload)
    cls: type  # class the bytes dissect into
    fields: dict  # expected field values of the first layer
    vfio: dict | None = None  # expected VFIODeviceStateBuffer fields
    payload: bytes = b""  # last layer's bytes (pages, compressed chunk, VFIO data)
    page_size: int = 4096
    extra: dict = field(default_factory=dict)


CASES = [
    Case("init",
         MultiFDInit(uuid=UUID, id=3),
         wire.pack_init(3, UUID),
         MultiFDInit, {"magic": wire.MULTIFD_MAGIC, "version": 1, "uuid": UUID, "id": 3,
                       "unused1": bytes(7), "unused2": bytes(32)}),
    Case("sync-10.x",
         MultiFDRamPacket(flags="SYNC", pages_alloc=0, packet_num=7),
         wire.pack_ram(flags=wire.FLAG_SYNC, page_size=4096, packet_num=7, pages_alloc=0),
         MultiFDRamPacket, {"flags": 0x01, "pages_alloc": 0, "normal_pages": 0,
                            "next_packet_size": 0, "packet_num": 7, "zero_pages": 0,
                            "ramblock": bytes(256)}),
    Case("sync-7.2",
         MultiFDRamPacket(flags="SYNC", packet_num=8),
         wire.pack_ram(flags=wire.FLAG_SYNC, page_size=4096, packet_num=8),
         MultiFDRamPacket, {"flags": 0x01, "pages_alloc": 128, "normal_pages": 0,
                            "next_packet_size": 0, "packet_num": 8}),
    Case("7.2-sync-with-pages",
         MultiFDRamPacket(flags="SYNC", packet_num=9, normal_pages=1, ramblock=b"pc.ram",
                          offset=[0x7000]) / Raw(PAGE_4K),
         wire.pack_ram(flags=wire.FLAG_SYNC, page_size=4096, packet_num=9,
                       ramblock=b"pc.ram", offsets=[0x7000], normal_pages=1) + PAGE_4K,
         MultiFDRamPacket, {"flags": 0x01, "normal_pages": 1, "next_packet_size": 4096},
         payload=PAGE_4K),
    Case("7.2-pageless-stale-size",  # no payload despite next_packet_size (spec 10)
         MultiFDRamPacket(packet_num=9, next_packet_size=wire.MULTIFD_PACKET_SIZE),
         wire.pack_ram(flags=0, page_size=4096, packet_num=9,
                       next_packet_size=wire.MULTIFD_PACKET_SIZE),
         MultiFDRamPacket, {"flags": 0, "normal_pages": 0,
                            "next_packet_size": wire.MULTIFD_PACKET_SIZE}),
    Case("zlib",
         MultiFDRamPacket(flags="ZLIB", packet_num=10, normal_pages=2, zero_pages=1,
                          ramblock=b"pc.ram", offset=[0x0, 0x1000, 0x2000])
         / Raw(ZLIB_PAYLOAD),
         wire.pack_ram(flags=int(wire.Flag.ZLIB), page_size=4096, packet_num=10,
                       ramblock=b"pc.ram", offsets=[0x0, 0x1000, 0x2000], normal_pages=2,
                       zero_pages=1, next_packet_size=len(ZLIB_PAYLOAD)) + ZLIB_PAYLOAD,
         MultiFDRamPacket, {"flags": 0x02, "normal_pages": 2, "zero_pages": 1,
                            "next_packet_size": len(ZLIB_PAYLOAD)},
         payload=ZLIB_PAYLOAD, extra={"compression": wire.Compression.ZLIB,
                                      "valid_offsets": [0x0, 0x1000, 0x2000]}),
    Case("nocomp-16k",
         ram_packet_class(16384)(packet_num=11, normal_pages=1, ramblock=b"pc.ram",
                                 offset=[0x4000]) / Raw(PAGE_16K),
         wire.pack_ram(flags=0, page_size=16384, packet_num=11, ramblock=b"pc.ram",
                       offsets=[0x4000], normal_pages=1) + PAGE_16K,
         RAM_PACKET_CLASSES[16384], {"pages_alloc": 32, "next_packet_size": 16384},
         payload=PAGE_16K, page_size=16384, extra={"valid_offsets": [0x4000]}),
    Case("device-state-data",
         MultiFDDeviceStatePacket(idstr=IDSTR, instance_id=0)
         / VFIODeviceStateBuffer(idx=0) / Raw(VFIO_DATA),
         wire.pack_device_state(idstr=IDSTR, instance_id=0,
                                next_packet_size=wire.VFIO_BUFFER.size + len(VFIO_DATA))
         + wire.pack_vfio_buffer(0, 0, VFIO_DATA),
         MultiFDDeviceStatePacket, {"flags": 0x40, "idstr": IDSTR.ljust(256, b"\0"),
                                    "instance_id": 0, "next_packet_size": 12 + len(VFIO_DATA)},
         vfio={"version": 0, "idx": 0, "flags": 0}, payload=VFIO_DATA),
    Case("device-state-config",
         MultiFDDeviceStatePacket(idstr=IDSTR, instance_id=1)
         / VFIODeviceStateBuffer(idx=5, flags="CONFIG_STATE") / Raw(VFIO_CONFIG),
         wire.pack_device_state(idstr=IDSTR, instance_id=1,
                                next_packet_size=wire.VFIO_BUFFER.size + len(VFIO_CONFIG))
         + wire.pack_vfio_buffer(5, wire.VFIO_DEVICE_STATE_CONFIG_STATE, VFIO_CONFIG),
         MultiFDDeviceStatePacket, {"flags": 0x40, "instance_id": 1,
                                    "next_packet_size": 12 + len(VFIO_CONFIG)},
         vfio={"version": 0, "idx": 5, "flags": 1}, payload=VFIO_CONFIG),
]


def field_values(pkt: Packet) -> dict:
    """Field values of one layer as plain ints / bytes / lists."""
    return {f.name: _plain(pkt.getfieldval(f.name)) for f in pkt.fields_desc}


def _plain(v):
    if isinstance(v, list):
        return [int(x) for x in v]
    return v if isinstance(v, bytes) else int(v)


@pytest.fixture
def page_size_conf():
    """Set the dispatcher's page size for one test, then restore it."""
    saved = conf.contribs["mfdscope"]["page_size"]
    yield lambda size: conf.contribs["mfdscope"].__setitem__("page_size", size)
    conf.contribs["mfdscope"]["page_size"] = saved


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_build_equals_wire(case):
    assert bytes(case.packet) == case.wire_bytes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dissect_round_trip(case, page_size_conf):
    data = bytes(case.packet)
    if case.cls is MultiFDInit:
        pkt = MultiFDInit(data)
    else:
        page_size_conf(case.page_size)
        pkt = MultiFDPacket(data)  # the dispatcher
        assert type(dispatch_class(data, case.page_size)(data)) is case.cls
    assert type(pkt) is case.cls
    got = field_values(pkt)
    assert {k: got[k] for k in case.fields} == case.fields
    for attr, want in case.extra.items():
        assert getattr(pkt, attr) == want
    if case.vfio is not None:
        assert field_values(pkt[VFIODeviceStateBuffer]) == case.vfio
    last = pkt.lastlayer()
    assert (last.load if isinstance(last, Raw) else b"") == case.payload
    assert Padding not in pkt
    assert bytes(pkt) == data  # rebuilds identically


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_following_bytes_are_padding_not_payload(case, page_size_conf):
    page_size_conf(case.page_size)
    data = bytes(case.packet)
    after = wire.HEADER_PREFIX + b"next packet"
    pkt = (MultiFDInit if case.cls is MultiFDInit else MultiFDPacket)(data + after)
    assert pkt[Padding].load == after
    assert len(pkt) - len(after) == len(data)


# --------------------------------------------------------------------------- streams
def stream_parts(page_size: int = 4096) -> list[tuple[type, bytes]]:
    ram = ram_packet_class(page_size)
    page = bytes([0x33]) * page_size
    return [
        (MultiFDInit, bytes(MultiFDInit(id=1))),
        (ram, bytes(ram(flags="SYNC", pages_alloc=0, packet_num=1))),
        (ram, bytes(ram(packet_num=2, normal_pages=2, zero_pages=1, ramblock=b"pc.ram",
                        offset=[0, page_size, 2 * page_size]) / Raw(page * 2))),
        (ram, bytes(ram(packet_num=2, next_packet_size=61))),  # 7.2 stale size
        (ram, bytes(ram(flags="ZLIB", packet_num=3, normal_pages=1, offset=[0])
                    / Raw(zlib_chunk(page)))),
        (MultiFDDeviceStatePacket, bytes(MultiFDDeviceStatePacket(idstr=IDSTR)
                                         / VFIODeviceStateBuffer(idx=0) / Raw(VFIO_DATA))),
        (MultiFDDeviceStatePacket, bytes(MultiFDDeviceStatePacket(idstr=IDSTR)
                                         / VFIODeviceStateBuffer(idx=1, flags=1)
                                         / Raw(VFIO_CONFIG))),
        (ram, bytes(ram(flags="SYNC", pages_alloc=0, packet_num=4))),
    ]


@pytest.mark.parametrize("page_size", [4096, 16384, 1024])
def test_dissect_stream(page_size):
    parts = stream_parts(page_size)
    packets = dissect_stream(b"".join(p for _, p in parts), page_size=page_size)
    assert [type(p) for p in packets] == [cls for cls, _ in parts]
    assert [bytes(p) for p in packets] == [p for _, p in parts]
    assert [p.packet_num for p in packets if isinstance(p, MultiFDRamPacket)] == [1, 2, 2, 3, 4]
    assert [p[VFIODeviceStateBuffer].idx for p in packets
            if isinstance(p, MultiFDDeviceStatePacket)] == [0, 1]
    assert all(Padding not in p for p in packets)


def test_dissect_stream_accepts_bytes_like():
    parts = stream_parts()
    data = b"".join(p for _, p in parts)
    assert [bytes(p) for p in dissect_stream(memoryview(bytearray(data)))] == \
        [p for _, p in parts]


@pytest.mark.parametrize("cut, last", [
    (-5, MultiFDRamPacket),  # inside the last SYNC's offset[]: header + Raw
    (-(1344 - 20), MultiFDHeader),  # 20 bytes of the last packet: header + Raw
    (-(1344 - 7), Raw),  # fewer bytes than a header
])
def test_dissect_stream_truncated(cut, last):
    parts = stream_parts()
    data = b"".join(p for _, p in parts)[:cut]
    packets = dissect_stream(data)
    assert len(packets) == len(parts)
    assert b"".join(bytes(p) for p in packets) == data
    tail = packets[-1]
    if last is MultiFDRamPacket:  # fixed part incomplete: bare header, rest Raw
        assert type(tail) is MultiFDHeader and tail.flags == wire.FLAG_SYNC
    else:
        assert type(tail) is last


def test_dissect_stream_short_payload_stays_short():
    parts = stream_parts()
    data = b"".join(p for _, p in parts[:3])[:-100]
    packets = dissect_stream(data)
    assert type(packets[-1]) is MultiFDRamPacket
    assert len(packets[-1][Raw].load) == 2 * 4096 - 100


# --------------------------------------------------------------------------- layouts
LAYOUTS = [
    (MultiFDInit, wire.INIT),
    (MultiFDHeader, wire.HDR),
    *((cls, wire.RAM) for cls in RAM_PACKET_CLASSES.values()),
    (MultiFDDeviceStatePacket, wire.DEVICE_STATE),
    (VFIODeviceStateBuffer, wire.VFIO_BUFFER),
    (QEVMHeader, wire.QEVM_HEADER),
]
LAYOUT_IDS = [cls.__name__ for cls, _ in LAYOUTS]


@pytest.mark.parametrize("cls, layout", LAYOUTS, ids=LAYOUT_IDS)
def test_fields_match_wire_layout(cls, layout):
    """Names, offsets and sizes as Scapy reads them equal wire.py's table."""
    want = [(f.name, layout.offsets[f.name], struct.calcsize(">" + f.code))
            for f in layout.fields]
    got = field_layout(cls)
    assert got[: len(want)] == want
    extra = got[len(want):]
    if layout is wire.RAM:  # then only offset[], page_count BE u64 (2.3)
        assert extra == [("offset", wire.RAM.size,
                          wire.OFFSET.size * wire.page_count(cls.page_size))]
    else:
        assert extra == []
    assert len(bytes(cls())) == cls.fixed_len


#: independent of wire.py: (total fixed size, {field: (offset, size)}) from spec section 2
SPEC_LAYOUTS = {
    MultiFDInit: (64, {"magic": (0, 4), "uuid": (8, 16), "id": (24, 1), "unused2": (32, 32)}),
    MultiFDHeader: (12, {"flags": (8, 4)}),
    MultiFDRamPacket: (1344, {"pages_alloc": (12, 4), "next_packet_size": (20, 4),
                              "packet_num": (24, 8), "zero_pages": (32, 4),
                              "ramblock": (64, 256), "offset": (320, 1024)}),
    MultiFDDeviceStatePacket: (276, {"idstr": (12, 256), "instance_id": (268, 4),
                                     "next_packet_size": (272, 4)}),
    VFIODeviceStateBuffer: (12, {"version": (0, 4), "idx": (4, 4), "flags": (8, 4)}),
    QEVMHeader: (8, {"magic": (0, 4), "version": (4, 4)}),
}


@pytest.mark.parametrize("cls", list(SPEC_LAYOUTS), ids=lambda c: c.__name__)
def test_fields_match_spec(cls):
    size, fields = SPEC_LAYOUTS[cls]
    got = {name: (off, sz) for name, off, sz in field_layout(cls)}
    assert {k: got[k] for k in fields} == fields
    assert len(bytes(cls())) == size


def test_check_layout_rejects_a_mismatch():
    class WrongSize(Packet):
        fields_desc = [XIntField("magic", 0), IntField("version", 0), ShortField("flags", 0)]
        fixed_len = 10

    class WrongOrder(Packet):
        fields_desc = [XIntField("magic", 0), IntField("flags", 0), IntField("version", 0)]
        fixed_len = 12

    for cls in (WrongSize, WrongOrder):
        with pytest.raises(AssertionError):
            check_layout(cls, wire.HDR)
    check_layout(MultiFDHeader, wire.HDR)


def _values(layout: wire.Layout):
    """Hypothesis: one value per field of ``layout``, from its struct code."""
    def value(f: wire.Field):
        if f.code.endswith("s"):
            n = struct.calcsize(f.code)
            return st.binary(min_size=n, max_size=n)
        return st.integers(0, 2 ** (8 * struct.calcsize(">" + f.code)) - 1)
    return st.fixed_dictionaries({f.name: value(f) for f in layout.fields})


@pytest.mark.parametrize("cls, layout", [
    (c, l) for c, l in LAYOUTS if c is not MultiFDHeader], ids=[
    n for (c, _), n in zip(LAYOUTS, LAYOUT_IDS) if c is not MultiFDHeader])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_same_bytes_as_wire_struct(cls, layout, data):
    """Both backends agree on arbitrary values: wire pack -> Scapy dissect, and
    Scapy build -> the same bytes as wire pack."""
    values = data.draw(_values(layout))
    packed = layout.pack(**values)
    pkt = cls(packed + bytes(cls.fixed_len - layout.size))
    assert {k: v for k, v in field_values(pkt).items() if k in values} == values
    assert bytes(cls(**values))[: layout.size] == packed


@settings(max_examples=30, deadline=None)
@given(values=_values(wire.HDR))
def test_header_same_bytes_as_wire_struct(values):
    packed = wire.HDR.pack(**values)
    pkt = MultiFDHeader(packed)  # too short for a full packet: the bare header
    assert type(pkt) is MultiFDHeader
    assert field_values(pkt) == values
    assert bytes(MultiFDHeader(**values)) == packed


# --------------------------------------------------------------------------- page sizes
@pytest.mark.parametrize("page_size, count, packet_len", [
    (1024, 512, 4416), (4096, 128, 1344), (16384, 32, 576), (65536, 8, 384)])
def test_page_size_sets_offset_array(page_size, count, packet_len):
    cls = ram_packet_class(page_size)
    assert cls.page_size == page_size
    built = bytes(cls())
    assert len(built) == packet_len
    pkt = cls(built)
    assert len(pkt.offset) == count == pkt.page_count == pkt.pages_alloc
    full = list(range(0, count * page_size, page_size))
    assert cls(bytes(cls(offset=full, normal_pages=count))).valid_offsets == full
    with pytest.raises(ValueError):
        bytes(cls(offset=full + [0]))


def test_default_class_and_unsupported_page_size():
    assert ram_packet_class(4096) is MultiFDRamPacket
    assert ram_packet_class() is MultiFDRamPacket
    with pytest.raises(ValueError):
        ram_packet_class(3000)


def test_dispatcher_uses_conf_page_size(page_size_conf):
    data = bytes(ram_packet_class(65536)(flags="SYNC", packet_num=1))
    page_size_conf(65536)
    pkt = MultiFDPacket(data)
    assert type(pkt) is RAM_PACKET_CLASSES[65536]
    assert pkt.haslayer(MultiFDRamPacket) and pkt.haslayer(MultiFDHeader)


def test_page_size_survives_copy_and_pickle():
    pkt = ram_packet_class(16384)(bytes(CASES[6].packet))
    for clone in (pkt.copy(), pickle.loads(pickle.dumps(pkt))):
        assert type(clone) is RAM_PACKET_CLASSES[16384]
        assert bytes(clone) == bytes(pkt)


def test_strings_are_zero_padded():
    pkt = MultiFDDeviceStatePacket(bytes(MultiFDDeviceStatePacket(idstr=b"dev")))
    assert pkt.idstr == b"dev" + bytes(253)
    assert wire.cstring(pkt.idstr) == "dev"


def test_qevm_header():
    pkt = QEVMHeader(b"QEVM" + struct.pack(">I", 3) + b"\x07rest")
    assert (pkt.magic, pkt.version) == (0x5145564D, 3)
    assert bytes(QEVMHeader()) == b"QEVM\x00\x00\x00\x03"


# --------------------------------------------------------------------------- display
@pytest.mark.parametrize("pkt, texts", [
    (MultiFDPacket(SPEC_EXAMPLE), ["MultiFD RAM packet", "magic     = 0x11223344",
                                   "compression=none", "b'pc.ram'", "packet_num= 42",
                                   "[0x1000, 0x2000, 0x5000, 0x3000] + 124 zero slots"]),
    (MultiFDRamPacket(flags="SYNC+ZLIB"), ["flags     = SYNC+ZLIB (compression=zlib)"]),
    (MultiFDRamPacket(flags=0x101), ["SYNC+bit_8"]),  # unknown bits stay visible
    (CASES[-1].packet, ["flags     = DEVICE_STATE", "idstr     = b'0000:00:04.0/vfio'",
                        "VFIO device-state buffer", "flags     = CONFIG_STATE"]),
    (MultiFDInit(uuid=UUID, id=2), ["uuid      = 101112131415161718191a1b1c1d1e1f",
                                    "id        = 2"]),
    (QEVMHeader(), ["magic     = 0x5145564d", "version   = QEMU_VM_FILE_VERSION"]),
], ids=["ram", "sync-zlib", "unknown-bit", "device-state", "init", "qevm"])
def test_show(pkt, texts, capsys):
    pkt.show()
    pkt.show2()
    out = capsys.readouterr().out
    for text in texts:
        assert text in out


def test_summaries():
    assert MultiFDPacket(SPEC_EXAMPLE).summary() == "MultiFD RAM #42 pc.ram 3+1 pages none / Raw"
    assert CASES[1].packet.summary() == "MultiFD SYNC #7"
    assert MultiFDPacket(bytes(CASES[-1].packet)).summary() == (
        "MultiFD device state 0000:00:04.0/vfio instance 1 33 bytes"
        " / VFIO buffer idx 5 CONFIG_STATE / Raw")


@pytest.mark.parametrize("cls, layout, text", [
    (MultiFDRamPacket, wire.RAM, "offset     : OffsetArrayField"),
    (MultiFDDeviceStatePacket, wire.DEVICE_STATE, "flags      : MultiFDFlagsField"),
    (MultiFDInit, wire.INIT, "uuid       : XStrFixedLenField"),
    (VFIODeviceStateBuffer, wire.VFIO_BUFFER, "flags      : FlagsField"),
], ids=lambda v: getattr(v, "__name__", None))
def test_ls(cls, layout, text, capsys):
    ls(cls)
    out = capsys.readouterr().out
    listed = [line.split(":")[0].strip() for line in out.splitlines() if line.strip()]
    assert listed[: len(layout.names)] == list(layout.names)
    assert text in out
