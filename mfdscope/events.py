"""Events returned by the sans-IO channel parser (`mfdscope.parse`).

Small frozen dataclasses, as in h11: they carry what was on the wire plus where
(``offset``: stream offset of the record's first byte) and when (``t_start``: capture
time of the segment holding the first byte, ``t_end``: of the last byte).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .wire import FLAG_SYNC


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    wire_len: int
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class InitPacket(Record):
    """MultiFDInit_t, the first 64 bytes of a multifd channel (spec 2.1)."""

    magic: int
    version: int
    uuid: bytes
    channel_id: int

    kind = "init"


@dataclass(frozen=True, slots=True)
class RamPacket(Record):
    """A RAM packet, or a SYNC packet when ``flags & SYNC`` (spec 2.3)."""

    flags: int
    pages_alloc: int
    normal_pages: int
    next_packet_size: int
    packet_num: int
    zero_pages: int
    ramblock: str
    offsets: tuple[int, ...]
    payload_len: int
    page_size: int
    #: payload bytes the capture did not hold (holes inside the page data)
    missing_bytes: int = 0
    #: decompressed size when decompression was requested, else None
    decompressed_len: int | None = None
    #: page data (decompressed) when the parser was asked to keep payloads; None when
    #: bytes are missing or the pages could not be decoded (never raw compressed bytes)
    payload: bytes | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "sync" if self.flags & FLAG_SYNC else "ram"


@dataclass(frozen=True, slots=True)
class DeviceStatePacket(Record):
    """MultiFDPacketDeviceState_t with the VFIO buffer header of its payload (2.4, 2.5)."""

    flags: int
    idstr: str
    instance_id: int
    next_packet_size: int
    vfio_version: int | None
    vfio_idx: int | None
    vfio_flags: int | None
    missing_bytes: int = 0
    #: the device-state buffer when the parser was asked to keep payloads; None when
    #: bytes of it are missing
    payload: bytes | None = field(default=None, repr=False)

    kind = "device_state"

    @property
    def payload_len(self) -> int:
        return self.next_packet_size


@dataclass(frozen=True, slots=True)
class Hole:
    """Bytes missing from the capture at this stream offset."""

    offset: int
    length: int
    t: float
    #: True when the hole hit a header: the parser resynchronises afterwards
    resync: bool

    kind = "hole"


@dataclass(frozen=True, slots=True)
class Resync:
    """The parser found a valid header again after ``skipped`` unparseable bytes."""

    offset: int
    skipped: int
    t: float

    kind = "resync"


@dataclass(frozen=True, slots=True)
class Expert:
    """An expert-info item, as in Wireshark: severity ``error``, ``warn`` or ``note``."""

    offset: int
    t: float
    severity: str
    message: str
    group: str = field(default="protocol")

    kind = "expert"


# --------------------------------------------------------------------------- main channel
# Events of `mfdscope.mainchannel.MainChannelParser` (spec 3.3, 4.6).  ``offset`` is the
# stream offset of the item's first byte, ``t`` the capture time of the bytes that
# completed it.


@dataclass(frozen=True, slots=True)
class MainHeader:
    """The QEVM magic and the stream version (``QEMU_VM_FILE_VERSION``)."""

    offset: int
    t: float
    magic: int
    version: int

    kind = "header"


@dataclass(frozen=True, slots=True)
class MainConfiguration:
    """``QEMU_VM_CONFIGURATION``: the machine type name and known subsections."""

    offset: int
    t: float
    wire_len: int
    machine: str
    subsections: tuple[str, ...] = ()
    #: from ``configuration/target-page-bits`` when present
    target_page_bits: int | None = None
    #: from ``configuration/capabilities`` when present (e.g. ``x-ignore-shared``)
    capabilities: tuple[str, ...] = ()

    kind = "configuration"


@dataclass(frozen=True, slots=True)
class MainSection:
    """A section header: START/FULL carry idstr, instance and version; PART/END only
    the id (``idstr`` is filled in from the START with that id when it was seen)."""

    offset: int
    t: float
    section_type: int
    section_id: int
    idstr: str | None
    instance_id: int | None
    version_id: int | None

    kind = "section"

    @property
    def type_name(self) -> str:
        return SECTION_TYPE_NAMES.get(self.section_type, f"0x{self.section_type:x}")


SECTION_TYPE_NAMES = {1: "start", 2: "part", 3: "end", 4: "full"}


@dataclass(frozen=True, slots=True)
class MainCommand:
    """``QEMU_VM_COMMAND``: a ``MIG_CMD_*`` and its payload."""

    offset: int
    t: float
    cmd: int
    length: int
    name: str
    data: bytes = field(default=b"", repr=False)

    kind = "command"


class RamBlockSize(NamedTuple):
    """One RAMBlock of a MEM_SIZE record.  ``extra`` holds the u64 fields some
    capabilities add after ``used_length`` (the block's page size with postcopy-ram
    when it differs from the host page size; its guest address with x-ignore-shared)."""

    name: str
    used_length: int
    extra: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MainMemSize:
    """``RAM_SAVE_FLAG_MEM_SIZE``: the total and the RAMBlock list of the setup section."""

    offset: int
    t: float
    wire_len: int
    total: int
    blocks: tuple[RamBlockSize, ...]

    kind = "mem_size"


@dataclass(frozen=True, slots=True)
class MainPages:
    """Page records of one stretch of a ``ram`` section part, counted, not listed:
    ``zero_pages`` (``RAM_SAVE_FLAG_ZERO``, legacy zero-page detection) and
    ``normal_pages`` (``RAM_SAVE_FLAG_PAGE``) starting at ``offset``, ``wire_len``
    bytes of records in all.  Emitted at the section's EOS (or where parsing stops)."""

    offset: int
    t: float
    wire_len: int
    section_id: int | None
    zero_pages: int
    normal_pages: int

    kind = "pages"


@dataclass(frozen=True, slots=True)
class MainPage:
    """One page record, only when the parser is asked for them (``page_events``)."""

    offset: int
    t: float
    block: str
    page_offset: int
    zero: bool
    fill: int | None  # the fill byte of a zero page
    data: bytes | None = field(default=None, repr=False)  # a normal page's bytes, if kept

    kind = "page"


@dataclass(frozen=True, slots=True)
class MainFlush:
    """``RAM_SAVE_FLAG_MULTIFD_FLUSH``: the destination syncs the multifd channels (5.2)."""

    offset: int
    t: float
    section_id: int | None

    kind = "flush"


@dataclass(frozen=True, slots=True)
class MainEos:
    """``RAM_SAVE_FLAG_EOS``: the end of a ram section part (legacy sync point, 5.2)."""

    offset: int
    t: float
    section_id: int | None

    kind = "eos"


@dataclass(frozen=True, slots=True)
class MainEof:
    """``QEMU_VM_EOF``."""

    offset: int
    t: float

    kind = "eof"


@dataclass(frozen=True, slots=True)
class MainOpaque:
    """Parsing stopped here: the bytes from ``offset`` on are not self-describing (a
    device section's contents), cannot be followed (XBZRLE...), are corrupt, or were
    lost in a capture hole.  The parser only counts what follows."""

    offset: int
    t: float
    reason: str
    section_id: int | None = None
    idstr: str | None = None

    kind = "opaque"
