"""The main channel as the reference sender writes it.

The receiver parses it with the dissector's own `mfdscope.mainchannel.MainChannelParser`
(one decoder in the project), which understands this subset and much more.

Only what pairs with multifd is modelled (spec 3.3, 4.6): the QEVM header, one
``ram`` section (START with the RAM_SAVE_FLAG_MEM_SIZE block list, PARTs, END),
legacy zero pages (``RAM_SAVE_FLAG_ZERO`` records), ``RAM_SAVE_FLAG_MULTIFD_FLUSH``,
``RAM_SAVE_FLAG_EOS``, section footers, ``MIG_CMD_SWITCHOVER_START`` and
``QEMU_VM_EOF``.

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

from .. import wire
from ..mainchannel import RAM_IDSTR

RAM_SECTION_ID = 2
RAM_VERSION_ID = 4
_U8 = struct.Struct(">B")
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
