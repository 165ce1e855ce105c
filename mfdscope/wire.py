"""Every constant, flag and layout of the multifd wire format, declared once.

Section numbers refer to ``shared/spec/multifd-wire-format.md``.  The Scapy layers
(`mfdscope.layers`), the fast decoder (`mfdscope.parse`), the reference sender and
receiver and the DataFrame column names are all derived from the tables below;
nothing else in the package spells a magic number, offset or flag value.
"""
from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from typing import NamedTuple

# --------------------------------------------------------------------------- 3.1
MULTIFD_MAGIC = 0x11223344
MULTIFD_VERSION = 1
MULTIFD_PACKET_SIZE = 512 * 1024  # uncompressed page bytes per RAM packet
IDSTR_LEN = 256  # ramblock / idstr field length
DEFAULT_PAGE_SIZE = 4096
SUPPORTED_PAGE_SIZES = (1024, 2048, 4096, 8192, 16384, 65536)
#: QEMU's zlib/zstd receivers read a payload into a buffer of this size (3.1)
COMPRESSED_RECV_BUFFER = 2 * MULTIFD_PACKET_SIZE
#: upper bound a dissector accepts for one device-state payload: VFIO buffers are at
#: most 1 MiB + 12 (2.5); anything far above is a lying length field.
MAX_DEVICE_STATE_PAYLOAD = 64 * 1024 * 1024


class Field(NamedTuple):
    """One field of a wire structure: name as in QEMU, struct code, meaning."""

    name: str
    code: str  # struct format code, big-endian implied
    doc: str


class Layout:
    """A packed big-endian structure declared as a table of fields (spec section 2)."""

    def __init__(self, name: str, fields: list[Field]):
        self.name = name
        self.fields = tuple(fields)
        self.struct = struct.Struct(">" + "".join(f.code for f in fields))
        self.size = self.struct.size
        self.names = tuple(f.name for f in fields)
        offsets, off = {}, 0
        for f in fields:
            offsets[f.name] = off
            off += struct.calcsize(">" + f.code)
        self.offsets = offsets

    def unpack_from(self, buf, offset: int = 0) -> dict:
        return dict(zip(self.names, self.struct.unpack_from(buf, offset)))

    def pack(self, **values) -> bytes:
        return self.struct.pack(*(values.get(f.name, _zero(f.code)) for f in self.fields))

    def __repr__(self) -> str:
        return f"<Layout {self.name} {self.size} bytes>"


def _zero(code: str):
    return b"" if code.endswith("s") else 0


# --------------------------------------------------------------------------- 2.1
INIT = Layout("MultiFDInit_t", [
    Field("magic", "I", "MULTIFD_MAGIC 0x11223344"),
    Field("version", "I", "MULTIFD_VERSION 1"),
    Field("uuid", "16s", "source VM UUID, raw bytes (all zero when none is set)"),
    Field("id", "B", "channel index 0..N-1"),
    Field("unused1", "7s", "reserved, 0"),
    Field("unused2", "32s", "reserved (u64[4]), 0"),
])
assert INIT.size == 64

# --------------------------------------------------------------------------- 2.2
HDR = Layout("MultiFDPacketHdr_t", [
    Field("magic", "I", "MULTIFD_MAGIC 0x11223344"),
    Field("version", "I", "MULTIFD_VERSION 1"),
    Field("flags", "I", "MULTIFD_FLAG_* bit set"),
])
assert HDR.size == 12

# --------------------------------------------------------------------------- 2.3
#: fixed part of MultiFDPacket_t after the 12-byte header; offset[] follows
RAM = Layout("MultiFDPacket_t", [
    *HDR.fields,
    Field("pages_alloc", "I", "capacity of offset[] (page_count); 0 in 9.2+ SYNC packets"),
    Field("normal_pages", "I", "pages whose data is in the payload"),
    Field("next_packet_size", "I", "payload length that follows (ignored by nocomp receivers)"),
    Field("packet_num", "Q", "global sequence number of RAM and SYNC packets"),
    Field("zero_pages", "I", "zero pages listed after the normal ones (9.0+)"),
    Field("unused32", "4s", "reserved, 0"),
    Field("unused64", "24s", "reserved (u64[3]), 0"),
    Field("ramblock", f"{IDSTR_LEN}s", "RAMBlock idstr, NUL padded"),
])
assert RAM.size == 320
OFFSET = struct.Struct(">Q")

# --------------------------------------------------------------------------- 2.4
DEVICE_STATE = Layout("MultiFDPacketDeviceState_t", [
    *HDR.fields,
    Field("idstr", f"{IDSTR_LEN}s", "SaveStateEntry idstr, NUL terminated and padded"),
    Field("instance_id", "I", "SaveStateEntry instance id"),
    Field("next_packet_size", "I", "payload length that follows, > 0"),
])
assert DEVICE_STATE.size == 276

# --------------------------------------------------------------------------- 2.5
VFIO_BUFFER = Layout("VFIODeviceStatePacket", [
    Field("version", "I", "VFIO_DEVICE_STATE_PACKET_VER_CURRENT 0"),
    Field("idx", "I", "buffer index per device, 0.."),
    Field("flags", "I", "bit 0: VFIO_DEVICE_STATE_CONFIG_STATE"),
])
assert VFIO_BUFFER.size == 12

# --------------------------------------------------------------------------- 3.2
class Flag(enum.IntFlag):
    """MULTIFD_FLAG_* bits of ``hdr.flags``."""

    SYNC = 0x01
    ZLIB = 0x02
    ZSTD = 0x04
    QPL = 0x08
    UADK = 0x10
    QATZIP = 0x20
    DEVICE_STATE = 0x40


FLAG_SYNC = int(Flag.SYNC)
FLAG_DEVICE_STATE = int(Flag.DEVICE_STATE)
COMPRESSION_MASK = 0x3E  # 9.2+; 0x1E in 9.1, 0x0E in 5.0-9.0
KNOWN_FLAGS = FLAG_SYNC | COMPRESSION_MASK | FLAG_DEVICE_STATE


class Compression(enum.IntEnum):
    """Values of the compression field (``flags & COMPRESSION_MASK``), section 3.2."""

    NONE = 0x00
    ZLIB = 0x02
    ZSTD = 0x04
    QPL = 0x08
    UADK = 0x10
    QATZIP = 0x20

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "Compression":
        return cls[label.upper()] if label.lower() != "nocomp" else cls.NONE


def compression_of(flags: int) -> int:
    return flags & COMPRESSION_MASK


def compression_label(value: int) -> str:
    """``none``, ``zlib``... for a compression field value; hex for a foreign one."""
    member = Compression._value2member_map_.get(value)
    return member.label if member is not None else f"0x{value:x}"


_FLAG_BITS = tuple((int(f), f.name) for f in Flag)


@functools.lru_cache(maxsize=256)
def flag_names(flags: int) -> str:
    """``"SYNC|ZLIB"``-style names; unknown bits as hex, ``""`` for 0 (nocomp)."""
    names = [name for bit, name in _FLAG_BITS if flags & bit]
    unknown = flags & ~KNOWN_FLAGS
    if unknown:
        names.append(f"0x{unknown:x}")
    return "|".join(names)


# --------------------------------------------------------------------------- 2.3 sizes
def page_count(page_size: int) -> int:
    return MULTIFD_PACKET_SIZE // page_size


def packet_len(page_size: int) -> int:
    """On-wire length of a RAM/SYNC packet (fixed per migration)."""
    return RAM.size + OFFSET.size * page_count(page_size)


#: packet_len -> page_size, for detecting the page size from header spacing
PAGE_SIZE_BY_PACKET_LEN = {packet_len(p): p for p in SUPPORTED_PAGE_SIZES}


def ram_payload_len(flags: int, normal_pages: int, next_packet_size: int, page_size: int) -> int:
    """Payload bytes after a RAM/SYNC packet (spec 4.2 and section 10).

    nocomp receivers read ``normal_pages x page_size`` and ignore next_packet_size;
    compressed methods read next_packet_size, but only when pages are present
    (7.2 sends page-less packets with a stale next_packet_size).
    """
    if normal_pages == 0:
        return 0
    if compression_of(flags) == Compression.NONE:
        return normal_pages * page_size
    return next_packet_size


# --------------------------------------------------------------------------- 3.3
QEMU_VM_FILE_MAGIC = 0x5145564D  # "QEVM"
QEMU_VM_FILE_VERSION = 0x00000003
QEMU_VM_FILE_VERSION_COMPAT = 0x00000002
QEVM_HEADER = Layout("QEMUFile header", [
    Field("magic", "I", "QEMU_VM_FILE_MAGIC 'QEVM'"),
    Field("version", "I", "QEMU_VM_FILE_VERSION 3"),
])
assert QEVM_HEADER.size == 8


class VMSection(enum.IntEnum):
    """QEMU_VM_* section type bytes of the main channel."""

    EOF = 0x00
    SECTION_START = 0x01
    SECTION_PART = 0x02
    SECTION_END = 0x03
    SECTION_FULL = 0x04
    SUBSECTION = 0x05
    VMDESCRIPTION = 0x06
    CONFIGURATION = 0x07
    COMMAND = 0x08
    SECTION_FOOTER = 0x7E


class MigCmd(enum.IntEnum):
    """MIG_CMD_* sub-commands of QEMU_VM_COMMAND (enum order = wire value)."""

    INVALID = 0
    OPEN_RETURN_PATH = 1
    PING = 2
    POSTCOPY_ADVISE = 3
    POSTCOPY_LISTEN = 4
    POSTCOPY_RUN = 5
    POSTCOPY_RAM_DISCARD = 6
    PACKAGED = 7
    ENABLE_COLO = 8
    POSTCOPY_RESUME = 9
    RECV_BITMAP = 10
    SWITCHOVER_START = 11


class RamSaveFlag(enum.IntFlag):
    """RAM_SAVE_FLAG_* low bits of a main-channel ``offset | flags`` BE u64."""

    FULL = 0x001
    ZERO = 0x002
    MEM_SIZE = 0x004
    PAGE = 0x008
    EOS = 0x010
    CONTINUE = 0x020
    XBZRLE = 0x040
    HOOK = 0x080
    COMPRESS_PAGE = 0x100
    MULTIFD_FLUSH = 0x200


RAM_SAVE_FLAG_MASK = 0x3FF  # "we can't use any flag that is bigger than 0x200"

# --------------------------------------------------------------------------- 3.4
VFIO_DEVICE_STATE_PACKET_VER_CURRENT = 0


class VFIOBufferFlag(enum.IntFlag):
    """Bits of the VFIO device-state buffer header's ``flags``."""

    CONFIG_STATE = 1


VFIO_DEVICE_STATE_CONFIG_STATE = int(VFIOBufferFlag.CONFIG_STATE)
VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE = 1024 * 1024
VFIO_MIG_FLAG_END_OF_STATE = 0xFFFFFFFFEF100001
VFIO_MIG_FLAG_DEV_CONFIG_STATE = 0xFFFFFFFFEF100002
VFIO_MIG_FLAG_DEV_SETUP_STATE = 0xFFFFFFFFEF100003
VFIO_MIG_FLAG_DEV_DATA_STATE = 0xFFFFFFFFEF100004
VFIO_MIG_FLAG_DEV_INIT_DATA_SENT = 0xFFFFFFFFEF100005
VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY = 0xFFFFFFFFEF100006
VFIO_IDX_INVALID = 0xFFFFFFFF

# --------------------------------------------------------------------------- 1.4
#: first bytes of a TLS record (handshake, then any version 3.x)
TLS_HANDSHAKE_PREFIX = b"\x16\x03"
MULTIFD_MAGIC_BYTES = struct.pack(">I", MULTIFD_MAGIC)
QEVM_MAGIC_BYTES = struct.pack(">I", QEMU_VM_FILE_MAGIC)
#: magic + version: what resynchronisation looks for after a hole
HEADER_PREFIX = MULTIFD_MAGIC_BYTES + struct.pack(">I", MULTIFD_VERSION)


class Role(str, enum.Enum):
    """What a client->server stream carries, from its first bytes (1.4)."""

    MAIN = "main"
    MULTIFD = "multifd"
    TLS = "tls"
    UNKNOWN = "unknown"


def classify_prefix(prefix: bytes) -> Role | None:
    """Role of a stream from its first bytes; None while fewer than 4 bytes are known."""
    if len(prefix) >= 2 and prefix[:2] == TLS_HANDSHAKE_PREFIX:
        return Role.TLS
    if len(prefix) < 4:
        return None
    head = bytes(prefix[:4])
    if head == QEVM_MAGIC_BYTES:
        return Role.MAIN
    if head == MULTIFD_MAGIC_BYTES:
        return Role.MULTIFD
    return Role.UNKNOWN


# --------------------------------------------------------------------------- 6, 7
class AccountingRule(str, enum.Enum):
    """How ``multifd_bytes`` is counted (spec 6.2)."""

    ENQUEUE = "enqueue"  # <= 8.0: uncompressed pages + packet_len at enqueue, no init
    WRITTEN = "written"  # 8.1+: every byte written, initial packets included


@dataclass(frozen=True)
class VersionProfile:
    """Behaviour of one QEMU version that changes what the wire means (spec 4.5, 5, 6, 7).

    ``name`` is the accounting range (``<=8.0``, ``8.1-9.2``, ``10.x``); the switches
    are resolved for the exact version, since some rules change inside a range.
    """

    name: str
    version: tuple[int, int]
    compression_mask: int
    sync_pages_alloc_zero: bool  # 9.2+: packet buffer cleared, SYNC carries no RAM fields
    sync_may_carry_pages: bool  # <= 8.2: SYNC may piggy-back on a data packet
    zero_pages: bool  # 9.0+: zero_pages field and multifd zero-page detection
    device_state: bool  # 10.0+: MULTIFD_FLAG_DEVICE_STATE packets
    switchover_start: bool  # 10.0+: MIG_CMD_SWITCHOVER_START on main
    per_round_sync: bool  # 8.1+ default: SYNC + MULTIFD_FLUSH per dirty-scan round
    final_sync: bool  # 8.1-9.2: an extra SYNC round in ram_save_complete ...
    final_flush: bool  # ... followed by MULTIFD_FLUSH only in 8.1-9.0
    peek_classify: bool  # 8.0+: destination tells channels apart by their magic (1.4)
    legacy_send: bool  # <= 8.2: packet_num and SYNC assigned by the migration thread (5.1)
    zero_copy_header_separate: bool  # 10.0+: zero-copy header accounted where written (6.1)
    accounting: AccountingRule
    counts_initial_packet: bool

    @property
    def versions(self) -> str:
        return {"<=8.0": "4.0-8.0", "8.1-9.2": "8.1-9.2", "10.x": "10.0+"}[self.name]


#: the three accounting ranges, each with the version a range name stands for
RANGES = {"<=8.0": "8.0", "8.1-9.2": "9.2", "10.x": "10.0"}
#: versions the reference sender models (issue 3)
REFERENCE_VERSIONS = ("7.2", "9.2", "10.0")


def parse_version(name: str) -> tuple[int, int]:
    """``"10.0"`` / ``"9.2.1"`` / a range name -> (major, minor)."""
    text = RANGES.get(name, name)
    try:
        major, minor = (int(x) for x in text.split(".")[:2])
    except ValueError:
        raise ValueError(f"unknown QEMU version {name!r}; use e.g. 7.2, 9.2, 10.0") from None
    return major, minor


def profile(name: str) -> VersionProfile:
    """Profile of a QEMU version ("7.2", "9.2", "10.0") or of a range name."""
    v = parse_version(name)
    legacy = v <= (8, 0)
    per_round = v >= (8, 1)
    return VersionProfile(
        name="<=8.0" if legacy else "8.1-9.2" if v <= (9, 2) else "10.x",
        version=v,
        compression_mask=0x0E if v <= (9, 0) else 0x1E if v == (9, 1) else 0x3E,
        sync_pages_alloc_zero=v >= (9, 2),
        sync_may_carry_pages=v <= (8, 2),
        zero_pages=v >= (9, 0),
        device_state=v >= (10, 0),
        switchover_start=v >= (10, 0),
        per_round_sync=per_round,
        final_sync=per_round and v <= (9, 2),
        final_flush=per_round and v <= (9, 0),
        peek_classify=v >= (8, 0),
        legacy_send=v < (9, 0),
        zero_copy_header_separate=v >= (10, 0),
        accounting=AccountingRule.ENQUEUE if legacy else AccountingRule.WRITTEN,
        counts_initial_packet=not legacy,
    )


PROFILES = {name: profile(name) for name in RANGES}


# --------------------------------------------------------------------------- builders
def pack_init(channel_id: int, uuid: bytes = bytes(16)) -> bytes:
    return INIT.pack(magic=MULTIFD_MAGIC, version=MULTIFD_VERSION, uuid=uuid, id=channel_id)


def pack_ram(*, flags: int, page_size: int, packet_num: int, ramblock: bytes = b"",
             offsets: tuple[int, ...] | list[int] = (), normal_pages: int = 0,
             zero_pages: int = 0, next_packet_size: int | None = None,
             pages_alloc: int | None = None) -> bytes:
    """A RAM or SYNC packet (without payload), exactly ``packet_len(page_size)`` bytes."""
    count = page_count(page_size)
    if len(offsets) > count:
        raise ValueError(f"{len(offsets)} offsets exceed page_count {count}")
    if next_packet_size is None:
        next_packet_size = normal_pages * page_size
    if pages_alloc is None:
        pages_alloc = count
    fixed = RAM.pack(magic=MULTIFD_MAGIC, version=MULTIFD_VERSION, flags=flags,
                     pages_alloc=pages_alloc, normal_pages=normal_pages,
                     next_packet_size=next_packet_size, packet_num=packet_num,
                     zero_pages=zero_pages, ramblock=ramblock)
    table = b"".join(OFFSET.pack(o) for o in offsets)
    return fixed + table + bytes(OFFSET.size * count - len(table))


def pack_device_state(*, idstr: bytes, instance_id: int, next_packet_size: int,
                      flags: int = FLAG_DEVICE_STATE) -> bytes:
    """A device-state packet header; ``idstr`` is cut to 255 bytes so it stays
    NUL-terminated, as QEMU's ``pstrcpy`` does (craft a raw field to test that check)."""
    return DEVICE_STATE.pack(magic=MULTIFD_MAGIC, version=MULTIFD_VERSION, flags=flags,
                             idstr=idstr[: IDSTR_LEN - 1], instance_id=instance_id,
                             next_packet_size=next_packet_size)


def pack_vfio_buffer(idx: int, flags: int = 0, data: bytes = b"",
                     version: int = VFIO_DEVICE_STATE_PACKET_VER_CURRENT) -> bytes:
    return VFIO_BUFFER.pack(version=version, idx=idx, flags=flags) + data


def cstring(raw: bytes) -> str:
    """A NUL-terminated idstr field as text (bytes after the first NUL are ignored)."""
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def idstr_terminated(raw: bytes) -> bool:
    """QEMU's check: the last byte of the 256-byte idstr field must be NUL (5.6)."""
    return len(raw) == IDSTR_LEN and raw[IDSTR_LEN - 1] == 0
