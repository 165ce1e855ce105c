# SPDX-License-Identifier: GPL-2.0-only
# This file is part of mfdscope.
# Scapy layers for QEMU live-migration multifd channels.

# scapy.contrib.description = QEMU live migration: multifd channel packets
# scapy.contrib.status = loads

"""
Scapy layers for the QEMU multifd live-migration wire format.

Every field is generated from the ``Layout`` tables of :mod:`mfdscope.wire`, the
single source of truth; this module only chooses how each field is *displayed*
(hex magic, named flags, compression method, text idstr) and checks at import time
that the generated classes have exactly the names, offsets and sizes of the tables.

Layers are for display, crafting and per-record decoding (spec sections 2 and 4),
never for the per-segment hot path (that is :mod:`mfdscope.parse`).

Usage::

    >>> pkt = MultiFDPacket(data)     # -> MultiFDRamPacket or MultiFDDeviceStatePacket
    >>> pkt.show()
    >>> ram_packet_class(16384)(data) # RAM/SYNC packet of a 16 KiB-page migration
    >>> dissect_stream(channel_bytes, page_size=4096)

The page size is not on the wire but fixes the length of ``offset[]``; it is a
class-level parameter: ``MultiFDRamPacket`` is the 4 KiB class and
:func:`ram_packet_class` returns the class for any of ``wire.SUPPORTED_PAGE_SIZES``.
The ``MultiFDHeader``/``MultiFDPacket`` dispatcher uses
``conf.contribs["mfdscope"]["page_size"]`` (default 4096).  Every packet class has
``fixed_len`` (bytes before its payload) and ``payload_len()`` (bytes of payload that
belong to it, the rest of the input being left as ``Padding``).
"""

from __future__ import annotations

import struct
from typing import Callable

from scapy.config import conf
from scapy.fields import (
    ByteField,
    EnumField,
    FieldListField,
    FlagsField,
    IntField,
    LenField,
    LongField,
    StrFixedLenField,
    XByteField,
    XIntField,
    XLongField,
    XStrFixedLenField,
)
from scapy.packet import Packet, bind_layers

from mfdscope import wire

__all__ = [
    "MultiFDInit",
    "MultiFDHeader",
    "MultiFDPacket",
    "MultiFDRamPacket",
    "MultiFDDeviceStatePacket",
    "VFIODeviceStateBuffer",
    "QEVMHeader",
    "RAM_PACKET_CLASSES",
    "ram_packet_class",
    "dispatch_class",
    "dissect_stream",
    "field_layout",
    "check_layout",
]

# Page size used by the MultiFDHeader dispatcher when it meets a RAM packet
# (the Scapy way to configure a contrib layer; dissect_stream takes it as argument).
conf.contribs.setdefault("mfdscope", {}).setdefault("page_size", wire.DEFAULT_PAGE_SIZE)


# --------------------------------------------------------------------------
# Field generation from wire.Layout
# --------------------------------------------------------------------------

#: Scapy field class per struct code (all big-endian, unsigned), plain and hex display
_INT_FIELDS = {"B": ByteField, "I": IntField, "Q": LongField}
_HEX_FIELDS = {"B": XByteField, "I": XIntField, "Q": XLongField}
#: byte-string fields that hold C strings (shown as text); other ``Ns`` fields are
#: binary (uuid, reserved) and shown in hex
_TEXT_FIELDS = frozenset({"ramblock", "idstr"})

_FieldFactory = Callable[[wire.Field], object]  # wire.Field -> Scapy field


def _size(f: wire.Field) -> int:
    return struct.calcsize(">" + f.code)


def _default_field(f: wire.Field):
    if f.code.endswith("s"):
        cls = StrFixedLenField if f.name in _TEXT_FIELDS else XStrFixedLenField
        # StrFixedLenField pads a short value with NULs when building, as QEMU does
        return cls(f.name, b"", length=_size(f))
    return _INT_FIELDS[f.code](f.name, 0)


def _fields(layout: wire.Layout, **custom: _FieldFactory) -> list:
    """Scapy fields for ``layout``, in wire order.

    ``custom[name]`` builds the field of that name from its ``wire.Field`` (to change
    its display or default); sizes still come from the table and are re-checked by
    :func:`check_layout`.
    """
    unknown = set(custom) - set(layout.names)
    if unknown:
        raise AssertionError(f"{layout.name} has no field(s) {sorted(unknown)}")
    return [custom[f.name](f) if f.name in custom else _default_field(f)
            for f in layout.fields]


def _plain(default) -> _FieldFactory:
    return lambda f: _INT_FIELDS[f.code](f.name, default)


def _hex(default) -> _FieldFactory:
    return lambda f: _HEX_FIELDS[f.code](f.name, default)


def _enum(default, names: dict) -> _FieldFactory:
    return lambda f: EnumField(f.name, default, names, fmt=f.code)


def _length() -> _FieldFactory:
    # None = computed from the payload when building (QEMU sets it the same way:
    # compressed size, or normal_pages x page_size for nocomp)
    return lambda f: LenField(f.name, None, fmt=f.code)


def _flags(field_cls, names: dict, default=0) -> _FieldFactory:
    return lambda f: field_cls(f.name, default, 8 * _size(f), names)


class MultiFDFlagsField(FlagsField):
    """``hdr.flags``: bits named after ``wire.Flag``; RAM packets also show the
    compression method, which is a value inside the mask rather than a flag (3.2)."""

    def i2repr(self, pkt, x):
        names = super().i2repr(pkt, x)
        if x is None or int(x) & wire.FLAG_DEVICE_STATE:
            return names
        return f"{names} (compression={_compression_label(int(x))})".lstrip()


def _compression_label(flags: int) -> str:
    value = wire.compression_of(flags)
    try:
        return wire.Compression(value).label
    except ValueError:  # several method bits: never sent upstream (3.2)
        return f"invalid 0x{value:02x}"


#: bit value -> name, for FlagsField (unnamed bits show as bit_N)
_MULTIFD_FLAG_NAMES = {int(flag): flag.name for flag in wire.Flag}
_VFIO_FLAG_NAMES = {int(f): f.name for f in wire.VFIOBufferFlag}


def _header_fields(flags_default=0) -> dict[str, _FieldFactory]:
    """Display of the three header fields shared by every multifd packet (2.2)."""
    return dict(
        magic=_hex(wire.MULTIFD_MAGIC),
        version=_plain(wire.MULTIFD_VERSION),
        flags=_flags(MultiFDFlagsField, _MULTIFD_FLAG_NAMES, flags_default),
    )


class OffsetArrayField(FieldListField):
    """``offset[]``: always ``page_count`` BE u64 on the wire, whatever ``pages_alloc``
    says (2.3); building pads a short list with zero slots, as 9.2+ senders do."""

    __slots__ = ["count"]

    def __init__(self, name: str, count: int):
        super().__init__(name, [], XLongField("", 0),
                         count_from=lambda pkt: count, max_count=count)
        self.count = count

    def i2m(self, pkt, val):
        val = list(val or [])
        if len(val) > self.count:
            raise ValueError(f"{len(val)} offsets exceed page_count {self.count}")
        return val + [0] * (self.count - len(val))

    def i2repr(self, pkt, val):
        # 128 mostly-unused slots drown show(): print up to the last non-zero one
        val = list(val or [])
        used = len(val)
        while used and not val[used - 1]:
            used -= 1
        shown = "[%s]" % ", ".join(self.field.i2repr(pkt, v) for v in val[:used])
        return shown + (f" + {self.count - used} zero slots" if used < self.count else "")


# --------------------------------------------------------------------------
# Layout checks (import time): the Scapy classes must match wire.py exactly
# --------------------------------------------------------------------------

def field_layout(cls: type[Packet]) -> list[tuple[str, int, int]]:
    """``(name, offset, size)`` of every field of ``cls``, measured by dissecting
    zero bytes, i.e. as Scapy really reads them (variable fields at their default
    length)."""
    pkt = cls()
    data = bytes(len(pkt.build()))
    out, off = [], 0
    for fld in cls.fields_desc:
        rest, _ = fld.getfield(pkt, data[off:])
        if isinstance(rest, tuple):  # a bit field ending mid-byte
            raise AssertionError(f"{cls.__name__}.{fld.name} does not end on a byte")
        size = len(data) - off - len(rest)
        out.append((fld.name, off, size))
        off += size
    return out


def check_layout(cls: type[Packet], layout: wire.Layout) -> None:
    """Raise AssertionError unless the first fields of ``cls`` are exactly ``layout``
    (names, offsets, sizes) and ``cls.fixed_len`` is what a default build gives."""
    got = field_layout(cls)[: len(layout.fields)]
    want = [(f.name, layout.offsets[f.name], _size(f)) for f in layout.fields]
    if got != want:
        raise AssertionError(f"{cls.__name__} differs from wire.{layout.name}: {got} != {want}")
    if len(cls().build()) != cls.fixed_len:
        raise AssertionError(f"{cls.__name__}: default build is not {cls.fixed_len} bytes")


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------

class MultiFDInit(Packet):
    """``MultiFDInit_t``: the first 64 bytes of every multifd channel (2.1)."""

    name = "MultiFD initial packet"
    fields_desc = _fields(wire.INIT, magic=_hex(wire.MULTIFD_MAGIC),
                          version=_plain(wire.MULTIFD_VERSION))
    fixed_len = wire.INIT.size

    def payload_len(self) -> int:
        return 0

    def extract_padding(self, s):
        # nothing belongs to the initial packet after its 64 bytes: the rest of the
        # channel is the next packet
        return b"", s

    def mysummary(self):
        return self.sprintf("MultiFD init channel %MultiFDInit.id%")


class MultiFDHeader(Packet):
    """``MultiFDPacketHdr_t`` (2.2), and the dispatcher of multifd packets.

    ``MultiFDHeader(data)`` returns the complete packet class chosen by bit 0x40 of
    ``flags`` (4.3): :class:`MultiFDDeviceStatePacket` when set, else the RAM/SYNC
    class for ``conf.contribs["mfdscope"]["page_size"]``.  Both subclass this
    header, so ``pkt.haslayer(MultiFDHeader)`` holds for either.  A bare
    MultiFDHeader is built explicitly, or dissected from bytes too short for the
    chosen packet's fixed part (the rest is then ``Raw``).
    """

    name = "MultiFD packet header"
    fields_desc = _fields(wire.HDR, **_header_fields())
    fixed_len = wire.HDR.size
    match_subclass = True  # getlayer/haslayer(MultiFDHeader) matches RAM/device state

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        # Defined on MultiFDHeader only: Scapy calls the hook of the class named in
        # the call, so MultiFDRamPacket(data) is never re-dispatched.
        if _pkt is None:
            return cls
        return dispatch_class(_pkt, conf.contribs["mfdscope"]["page_size"])

    @property
    def compression(self) -> wire.Compression | int:
        """The compression field of ``flags`` (an int when it is no known method)."""
        value = wire.compression_of(int(self.flags))
        try:
            return wire.Compression(value)
        except ValueError:
            return value

    def payload_len(self) -> int:
        return 0


#: the name users reach for: ``MultiFDPacket(data)`` -> the right packet class
MultiFDPacket = MultiFDHeader


def _ram_fields(page_size: int) -> list:
    count = wire.page_count(page_size)
    return _fields(
        wire.RAM, **_header_fields(),
        pages_alloc=_plain(count),  # = page_count except in 9.2+ SYNC packets (0)
        next_packet_size=_length(),
    ) + [OffsetArrayField("offset", count)]


class MultiFDRamPacket(MultiFDHeader):
    """``MultiFDPacket_t``: RAM or SYNC packet (2.3) for 4 KiB pages, payload included.

    The payload (``Raw``) is exactly what the receiver reads after the packet
    (``wire.ram_payload_len``: nocomp ``normal_pages x page_size``, compressed
    ``next_packet_size``, nothing without normal pages); anything after it is left
    as padding, so concatenated packets are not swallowed.  Other page sizes:
    :func:`ram_packet_class`.
    """

    name = "MultiFD RAM packet"
    page_size = wire.DEFAULT_PAGE_SIZE
    fields_desc = _ram_fields(page_size)
    fixed_len = wire.packet_len(page_size)

    @property
    def page_count(self) -> int:
        return wire.page_count(self.page_size)

    @property
    def valid_offsets(self) -> list[int]:
        """Entries of ``offset[]`` in use: normal pages, then zero pages (2.3)."""
        return list(self.offset[: self.normal_pages + self.zero_pages])

    @property
    def normal_offsets(self) -> list[int]:
        """Offsets of the pages in the payload, in payload order."""
        return list(self.offset[: self.normal_pages])

    @property
    def zero_offsets(self) -> list[int]:
        return list(self.offset[self.normal_pages: self.normal_pages + self.zero_pages])

    def payload_len(self) -> int:
        return wire.ram_payload_len(int(self.flags), self.normal_pages,
                                    self.next_packet_size or 0, self.page_size)

    def extract_padding(self, s):
        n = self.payload_len()
        return s[:n], s[n:]

    def mysummary(self):
        flags = int(self.flags)
        parts = [f"MultiFD {'SYNC' if flags & wire.FLAG_SYNC else 'RAM'} #{self.packet_num}"]
        if wire.cstring(self.ramblock):
            parts.append(wire.cstring(self.ramblock))
        if self.normal_pages or self.zero_pages:
            parts.append(f"{self.normal_pages}+{self.zero_pages} pages "
                         f"{_compression_label(flags)}")
        return " ".join(parts)


def _make_ram_class(page_size: int) -> type[MultiFDRamPacket]:
    if page_size == MultiFDRamPacket.page_size:
        return MultiFDRamPacket
    # A subclass per page size (not a per-packet attribute) so that copy(), rebuild,
    # ls() and pickling keep the offset[] length.
    name = f"MultiFDRamPacket_{page_size}"
    return type(MultiFDRamPacket)(name, (MultiFDRamPacket,), {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"MultiFDPacket_t for {page_size}-byte pages "
                   f"({wire.page_count(page_size)} offsets).",
        "name": f"MultiFD RAM packet ({page_size}-byte pages)",
        "page_size": page_size,
        "fields_desc": _ram_fields(page_size),
        "fixed_len": wire.packet_len(page_size),
    })


#: page_size -> RAM/SYNC packet class, one per size in wire.SUPPORTED_PAGE_SIZES
RAM_PACKET_CLASSES: dict[int, type[MultiFDRamPacket]] = {
    size: _make_ram_class(size) for size in wire.SUPPORTED_PAGE_SIZES}
# module attributes, so that pickle finds the generated classes by name
globals().update({cls.__name__: cls for cls in RAM_PACKET_CLASSES.values()})


def ram_packet_class(page_size: int | None = None) -> type[MultiFDRamPacket]:
    """The RAM/SYNC packet class for ``page_size`` (default: the conf value)."""
    if page_size is None:
        page_size = conf.contribs["mfdscope"]["page_size"]
    try:
        return RAM_PACKET_CLASSES[page_size]
    except KeyError:
        raise ValueError(f"unsupported page size {page_size}; "
                         f"expected one of {wire.SUPPORTED_PAGE_SIZES}") from None


class MultiFDDeviceStatePacket(MultiFDHeader):
    """``MultiFDPacketDeviceState_t`` (2.4); payload = next_packet_size bytes, a
    VFIO device-state buffer (the only upstream user), anything after is padding."""

    name = "MultiFD device-state packet"
    fields_desc = _fields(wire.DEVICE_STATE, **_header_fields(wire.FLAG_DEVICE_STATE),
                          next_packet_size=_length())
    fixed_len = wire.DEVICE_STATE.size

    def payload_len(self) -> int:
        return self.next_packet_size or 0

    def extract_padding(self, s):
        n = self.payload_len()
        return s[:n], s[n:]

    def mysummary(self):
        return (f"MultiFD device state {wire.cstring(self.idstr)} "
                f"instance {self.instance_id} {self.next_packet_size} bytes")


class VFIODeviceStateBuffer(Packet):
    """``VFIODeviceStatePacket`` (2.5): 12-byte header, then the data as ``Raw``."""

    name = "VFIO device-state buffer"
    fields_desc = _fields(
        wire.VFIO_BUFFER,
        version=_plain(wire.VFIO_DEVICE_STATE_PACKET_VER_CURRENT),
        idx=_enum(0, {wire.VFIO_IDX_INVALID: "VFIO_IDX_INVALID"}),
        flags=_flags(FlagsField, _VFIO_FLAG_NAMES),
    )
    fixed_len = wire.VFIO_BUFFER.size

    def mysummary(self):
        # the tuple asks Scapy to keep the device-state packet's summary in front
        text = self.sprintf("VFIO buffer idx %VFIODeviceStateBuffer.idx%")
        if self.flags:
            text += self.sprintf(" %VFIODeviceStateBuffer.flags%")
        return text, [MultiFDDeviceStatePacket]


class QEVMHeader(Packet):
    """First 8 bytes of the main migration channel: ``QEVM`` magic + version (3.3)."""

    name = "QEMU migration stream header"
    fields_desc = _fields(
        wire.QEVM_HEADER,
        magic=_hex(wire.QEMU_VM_FILE_MAGIC),
        version=_enum(wire.QEMU_VM_FILE_VERSION, {
            wire.QEMU_VM_FILE_VERSION: "QEMU_VM_FILE_VERSION",
            wire.QEMU_VM_FILE_VERSION_COMPAT: "QEMU_VM_FILE_VERSION_COMPAT"}),
    )
    fixed_len = wire.QEVM_HEADER.size


for _cls, _layout in [(MultiFDInit, wire.INIT), (MultiFDHeader, wire.HDR),
                      *((c, wire.RAM) for c in RAM_PACKET_CLASSES.values()),
                      (MultiFDDeviceStatePacket, wire.DEVICE_STATE),
                      (VFIODeviceStateBuffer, wire.VFIO_BUFFER),
                      (QEVMHeader, wire.QEVM_HEADER)]:
    check_layout(_cls, _layout)
del _cls, _layout


# --------------------------------------------------------------------------
# Dispatch and whole-channel dissection
# --------------------------------------------------------------------------

def dispatch_class(data: bytes, page_size: int | None = None) -> type[MultiFDHeader]:
    """Class of the multifd packet starting at ``data[0]``: only bit 0x40 of the
    header's flags decides (4.3).  When ``data`` is too short for that class's fixed
    part, the bare :class:`MultiFDHeader` (whose payload is then ``Raw``)."""
    cls: type[MultiFDHeader] = MultiFDHeader
    if len(data) >= wire.HDR.size:
        if wire.HDR.unpack_from(data)["flags"] & wire.FLAG_DEVICE_STATE:
            cls = MultiFDDeviceStatePacket
        else:
            cls = ram_packet_class(page_size)
    return cls if len(data) >= cls.fixed_len else MultiFDHeader


def dissect_stream(data: bytes, page_size: int = wire.DEFAULT_PAGE_SIZE) -> list[Packet]:
    """Dissect one multifd channel (client-to-server bytes from its first byte):
    the initial packet, then RAM/SYNC and device-state packets (4.1).

    Slow path, for display and cross-checking.  Each packet is dissected from a
    slice of exactly its own length (fixed part, then the layer's ``payload_len``),
    so the cost stays linear in the stream size.  A packet cut by the end of
    ``data`` comes last: a short payload stays short, a short fixed part is a bare
    :class:`MultiFDHeader` + ``Raw`` (or only ``Raw`` below 12 bytes).
    """
    view = memoryview(data)  # slicing a memoryview copies nothing
    packets: list[Packet] = []
    pos, end = 0, len(view)
    while pos < end:
        cls = dispatch_class(view[pos:], page_size) if packets else MultiFDInit
        if cls is MultiFDHeader or end - pos < cls.fixed_len:  # fixed part cut short
            rest = bytes(view[pos:])
            packets.append(cls(rest) if len(rest) >= cls.fixed_len else conf.raw_layer(rest))
            break
        pkt = cls(bytes(view[pos:pos + cls.fixed_len]))  # fixed part: gives the length
        size = cls.fixed_len + pkt.payload_len()
        if size > cls.fixed_len:
            pkt = cls(bytes(view[pos:pos + size]))
        packets.append(pkt)
        pos += size
    return packets


# --------------------------------------------------------------------------
# Bindings
# --------------------------------------------------------------------------

# The payload of a device-state packet is a VFIO buffer (the only upstream sender).
# RAM packets carry pages (Raw); MultiFDHeader reaches its subclasses through
# dispatch_hook, since they repeat its fields.  Nothing is bound to TCP: multifd
# runs on any port and needs stream reassembly (mfdscope.capture) first.
bind_layers(MultiFDDeviceStatePacket, VFIODeviceStateBuffer)
