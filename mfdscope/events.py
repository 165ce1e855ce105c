"""Events returned by the sans-IO channel parser (`mfdscope.parse`).

Small frozen dataclasses, as in h11: they carry what was on the wire plus where
(``offset``: stream offset of the record's first byte) and when (``t_start``: capture
time of the segment holding the first byte, ``t_end``: of the last byte).
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
