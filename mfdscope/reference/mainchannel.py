"""The main channel as the reference sender writes it, and a sans-IO parser of it.

Only what pairs with multifd is modelled (spec 3.3, 4.6): the QEVM header, one
``ram`` section (START with the RAM_SAVE_FLAG_MEM_SIZE block list, PARTs, END),
legacy zero pages (``RAM_SAVE_FLAG_ZERO`` records), ``RAM_SAVE_FLAG_MULTIFD_FLUSH``,
``RAM_SAVE_FLAG_EOS``, section footers, ``MIG_CMD_SWITCHOVER_START`` and
``QEMU_VM_EOF``.  Error texts are QEMU's (``migration/savevm.c``, ``migration/ram.c``).

Stream written by `MainChannelWriter`::

    QEVM header
    01 section_id len "ram" instance_id version_id
       (total | MEM_SIZE) {len idstr used_length}...   [SYNC + MULTIFD_FLUSH] EOS  7E section_id
    02 section_id  {(offset | ZERO [| CONTINUE]) [len idstr] fill}... [MULTIFD_FLUSH]... EOS  7E id
    ...
    08 000B 0000                                        (MIG_CMD_SWITCHOVER_START, 10.0+)
    03 section_id  ... EOS 7E section_id
    00                                                  (QEMU_VM_EOF)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .. import wire

RAM_IDSTR = "ram"
RAM_SECTION_ID = 2
RAM_VERSION_ID = 4
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = wire.OFFSET
_CMD = struct.Struct(">BHH")
F = wire.RamSaveFlag
S = wire.VMSection


# --------------------------------------------------------------------------- writer
class MainChannelWriter:
    """Builds main-channel bytes; the caller writes ``take()`` to its socket."""

    def __init__(self, page_size: int):
        self.page_size = page_size
        self._buf = bytearray()
        self._last_block: str | None = None
        self.counts = {"zero": 0, "flush": 0, "eos": 0, "sections": 0, "commands": 0}

    def take(self) -> bytes:
        out, self._buf = bytes(self._buf), bytearray()
        return out

    def __len__(self) -> int:
        return len(self._buf)

    def header(self) -> None:
        self._buf += wire.QEVM_HEADER.pack(magic=wire.QEMU_VM_FILE_MAGIC,
                                           version=wire.QEMU_VM_FILE_VERSION)

    def _section(self, kind: int) -> None:
        self.counts["sections"] += 1
        self._buf += _U8.pack(kind) + _U32.pack(RAM_SECTION_ID)
        if kind in (S.SECTION_START, S.SECTION_FULL):
            name = RAM_IDSTR.encode()
            self._buf += _U8.pack(len(name)) + name + _U32.pack(0) + _U32.pack(RAM_VERSION_ID)
        self._last_block = None  # the next page record names its block again

    def section_start(self, blocks) -> None:
        """SECTION_START of ``ram`` with the MEM_SIZE block list (``ram_save_setup``)."""
        self._section(S.SECTION_START)
        total = sum(size for _, size in blocks)
        self._buf += _U64.pack(total | F.MEM_SIZE)
        for name, size in blocks:
            raw = name.encode()
            self._buf += _U8.pack(len(raw)) + raw + _U64.pack(size)

    def section_part(self) -> None:
        self._section(S.SECTION_PART)

    def section_end(self) -> None:
        self._section(S.SECTION_END)

    def zero_page(self, block: str, offset: int) -> None:
        """Legacy zero-page detection: ``RAM_SAVE_FLAG_ZERO`` record (``save_zero_page``)."""
        self.counts["zero"] += 1
        if block == self._last_block:
            self._buf += _U64.pack(offset | F.ZERO | F.CONTINUE)
        else:
            raw = block.encode()
            self._buf += _U64.pack(offset | F.ZERO) + _U8.pack(len(raw)) + raw
            self._last_block = block
        self._buf += b"\0"

    def multifd_flush(self) -> None:
        self.counts["flush"] += 1
        self._buf += _U64.pack(F.MULTIFD_FLUSH)

    def eos(self) -> None:
        """End of the ram section: EOS and the section footer."""
        self.counts["eos"] += 1
        self._buf += _U64.pack(F.EOS) + _U8.pack(S.SECTION_FOOTER) + _U32.pack(RAM_SECTION_ID)

    def switchover_start(self) -> None:
        self.counts["commands"] += 1
        self._buf += _CMD.pack(S.COMMAND, wire.MigCmd.SWITCHOVER_START, 0)

    def eof(self) -> None:
        self._buf += _U8.pack(S.EOF)


# --------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class MainHeader:
    offset: int
    version: int
    kind = "header"


@dataclass(frozen=True, slots=True)
class SectionBegin:
    offset: int
    section_type: int
    section_id: int
    idstr: str | None
    kind = "section"


@dataclass(frozen=True, slots=True)
class MemSize:
    offset: int
    blocks: tuple[tuple[str, int], ...]
    kind = "mem_size"


@dataclass(frozen=True, slots=True)
class ZeroPage:
    offset: int
    block: str
    page_offset: int
    fill: int
    kind = "zero"


@dataclass(frozen=True, slots=True)
class MultifdFlush:
    offset: int
    kind = "flush"


@dataclass(frozen=True, slots=True)
class Eos:
    offset: int
    kind = "eos"


@dataclass(frozen=True, slots=True)
class Command:
    offset: int
    cmd: int
    data: bytes
    kind = "command"


@dataclass(frozen=True, slots=True)
class VmEof:
    offset: int
    kind = "eof"


@dataclass(frozen=True, slots=True)
class MainError:
    offset: int
    message: str
    kind = "error"


class _Need(Exception):
    """Not enough bytes buffered for the next item."""


_TOP, _RAM, _DONE = range(3)


class MainChannelParser:
    """Sans-IO parser of what `MainChannelWriter` writes (``feed(data) -> events``).

    After an error or QEMU_VM_EOF it ignores further input.
    """

    def __init__(self, page_size: int):
        self.page_size = page_size
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._pos = 0
        self._state = -1  # header not read yet
        self._last_block: str | None = None
        self._section_id: int | None = None
        self.bytes = 0
        self.done = False

    def feed(self, data) -> list:
        self.bytes += len(data)
        if self._state == _DONE:
            return []
        self._buf += data
        events = []
        while self._state != _DONE:
            start = self._pos
            try:
                ev = self._item()
            except _Need:
                self._pos = start
                break
            if ev is not None:
                events.append(ev)
                if isinstance(ev, (MainError, VmEof)):
                    self._state = _DONE
                    self.done = True
        if self._pos > 65536:
            del self._buf[:self._pos]
            self._base += self._pos
            self._pos = 0
        return events

    def end(self) -> list:
        if self._state == _DONE:
            return []
        self._state = _DONE
        return [MainError(self._base + self._pos,
                          "main channel ended before QEMU_VM_EOF")]

    # ------------------------------------------------------------------ helpers
    def _get(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            raise _Need
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    def _u8(self) -> int:
        return self._get(1)[0]

    def _u32(self) -> int:
        return _U32.unpack(self._get(4))[0]

    def _u64(self) -> int:
        return _U64.unpack(self._get(8))[0]

    def _idstr(self) -> str:
        n = self._u8()
        return self._get(n).decode("utf-8", "backslashreplace")

    # ------------------------------------------------------------------ grammar
    def _item(self):
        at = self._base + self._pos
        if self._state == -1:
            magic, version = wire.QEVM_HEADER.struct.unpack(self._get(8))
            if magic != wire.QEMU_VM_FILE_MAGIC:
                return MainError(at, "Not a migration stream")
            if version == wire.QEMU_VM_FILE_VERSION_COMPAT:
                return MainError(at, "SaveVM v2 format is obsolete and don't work anymore")
            if version != wire.QEMU_VM_FILE_VERSION:
                return MainError(at, "Unsupported migration stream version")
            self._state = _TOP
            return MainHeader(at, version)
        if self._state == _RAM:
            return self._ram_record(at)
        kind = self._u8()
        if kind == S.EOF:
            return VmEof(at)
        if kind in (S.SECTION_START, S.SECTION_FULL):
            section_id = self._u32()
            idstr = self._idstr()
            self._u32()  # instance_id
            version_id = self._u32()
            if idstr != RAM_IDSTR:
                return MainError(at, f"Unknown savevm section or instance '{idstr}' 0. "
                                     "Make sure that your current VM setup matches your "
                                     "saved VM setup, including any hotplugged devices")
            if version_id > RAM_VERSION_ID:
                return MainError(at, f"savevm: unsupported version {version_id} for "
                                     f"'{idstr}' v{RAM_VERSION_ID}")
            self._section_id = section_id
            self._state = _RAM
            return SectionBegin(at, kind, section_id, idstr)
        if kind in (S.SECTION_PART, S.SECTION_END):
            section_id = self._u32()
            if section_id != self._section_id:
                return MainError(at, f"Unknown savevm section {section_id}")
            self._state = _RAM
            return SectionBegin(at, kind, section_id, None)
        if kind == S.SECTION_FOOTER:
            section_id = self._u32()
            if section_id != self._section_id:
                return MainError(at, f"Mismatched section id in footer for {RAM_IDSTR} -"
                                     f" read 0x{section_id:x} expected 0x{self._section_id:x}")
            return None
        if kind == S.COMMAND:
            cmd = _U16.unpack(self._get(2))[0]
            length = _U16.unpack(self._get(2))[0]
            data = self._get(length)
            if cmd == wire.MigCmd.SWITCHOVER_START and length:
                return MainError(at, f"Command switchover-start received with bad length - "
                                     f"expecting 0, received {length}")
            return Command(at, cmd, data)
        return MainError(at, f"Unknown savevm section type {kind}")

    def _ram_record(self, at: int):
        addr = self._u64()
        flags = addr & (self.page_size - 1)
        addr &= ~(self.page_size - 1)
        if flags & F.MEM_SIZE:
            total, blocks, seen = addr, [], 0
            while seen < total:
                name = self._idstr()
                size = self._u64()
                blocks.append((name, size))
                seen += size
            return MemSize(at, tuple(blocks))
        if flags & F.ZERO:
            if flags & F.CONTINUE:
                if self._last_block is None:
                    return MainError(at, "Ack, bad migration stream!")
                block = self._last_block
            else:
                block = self._idstr()
            fill = self._u8()
            self._last_block = block
            return ZeroPage(at, block, addr, fill)
        if flags == F.MULTIFD_FLUSH:
            return MultifdFlush(at)
        if flags == F.EOS:
            self._state = _TOP
            return Eos(at)
        return MainError(at, f"Unknown combination of migration flags: 0x{flags:x}")
