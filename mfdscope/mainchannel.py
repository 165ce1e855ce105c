"""Sans-IO parser of QEMU's main migration channel (client -> server byte stream).

What a passive dissector can follow of the main channel (spec 3.3, 4.6), in QEMU's
grammar (``migration/savevm.c`` ``qemu_loadvm_state``, ``migration/ram.c``
``ram_load_precopy``):

* the ``QEVM`` magic and the stream version (3; 2 = ``QEMU_VM_FILE_VERSION_COMPAT``,
  which QEMU refuses);
* ``QEMU_VM_CONFIGURATION``: BE u32 length + machine type name, then the known
  subsections (``configuration/target-page-bits``, ``/capabilities``, ``/uuid``);
* ``QEMU_VM_COMMAND`` records (u8 0x08, BE u16 cmd, BE u16 len, payload);
* section headers (START/FULL: id, idstr, instance, version; PART/END: id) and
  section footers (0x7E + id);
* inside ``ram`` sections, the RAM records: BE u64 ``addr | flags`` with MEM_SIZE
  (the RAMBlock list), ZERO and PAGE records (counted per section part, not one event
  per page unless asked), MULTIFD_FLUSH, EOS;
* ``QEMU_VM_EOF`` and the ``QEMU_VM_VMDESCRIPTION`` JSON after it.

Contents of any other section are device specific and not self-describing: when one
starts, the parser emits a `MainOpaque` event, stops and only counts the bytes that
follow (``unparsed``).  The same happens for records it cannot follow (XBZRLE,
compressed pages, RDMA hooks), for corrupt input and after a capture hole.  For a
plain x86 guest QEMU writes every ``ram`` section part, ``MULTIFD_FLUSH`` and
``MIG_CMD_SWITCHOVER_START`` before the first device section (checked on the real
7.2 and 10.0 captures in ``captures/qemu``), so the markers that pair with multifd
are all seen.

Every length is bounded before it is trusted; nothing is allocated from a length
field (the parser waits for bytes to arrive instead, and skips page data and the
VM description without buffering them); bad input becomes `Expert` events, never an
exception.  Error texts are QEMU's where QEMU has one.
"""
from __future__ import annotations

import struct

from . import wire
from .events import (Expert, MainCommand, MainConfiguration, MainEof, MainEos, MainFlush,
                     MainHeader, MainMemSize, MainOpaque, MainPage, MainPages, MainSection,
                     RamBlockSize)

S = wire.VMSection
F = wire.RamSaveFlag
C = wire.MigCmd
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

RAM_IDSTR = "ram"
#: payload length of each MIG_CMD_* as QEMU's ``mig_cmd_args`` (savevm.c); -1: variable
CMD_LEN = {C.OPEN_RETURN_PATH: 0, C.PING: 4, C.POSTCOPY_ADVISE: -1, C.POSTCOPY_LISTEN: 0,
           C.POSTCOPY_RUN: 0, C.POSTCOPY_RAM_DISCARD: -1, C.PACKAGED: 4, C.ENABLE_COLO: 0,
           C.POSTCOPY_RESUME: 0, C.RECV_BITMAP: -1, C.SWITCHOVER_START: 0}
#: bounds on length fields (a machine type name is a few dozen bytes; a VM has a few
#: dozen RAMBlocks; QEMU validates few migration capabilities)
MAX_CONFIG_NAME = 256
MAX_BLOCKS = 1024
MAX_CAPABILITIES = 64
#: records whose contents the parser cannot follow
_CANNOT_FOLLOW = {F.XBZRLE: "XBZRLE-encoded page", F.COMPRESS_PAGE: "compressed page "
                  "(RAM_SAVE_FLAG_COMPRESS_PAGE, multi-thread compression)",
                  F.HOOK: "RDMA hook (RAM_SAVE_FLAG_HOOK)"}
_FLAG_BITS = wire.RAM_SAVE_FLAG_MASK
#: more than this many bytes are appended to the buffer at once only in pieces
_CHUNK = 65536
#: what `skippable` says while the parser only counts bytes
_FOREVER = 1 << 62

_HEADER, _TOP, _RAM, _MEMSIZE, _AFTER_EOF, _OPAQUE = range(6)
_ITEM_NAMES = {_HEADER: "QEVM header", _TOP: "section header or command",
               _RAM: "RAM record", _MEMSIZE: "RAMBlock list (MEM_SIZE)",
               _AFTER_EOF: "VM description header"}
STATE_NAMES = {_HEADER: "header", _TOP: "top", _RAM: "ram", _MEMSIZE: "mem_size",
               _AFTER_EOF: "eof", _OPAQUE: "opaque"}


class ParserError(Exception):
    """Raised only for API misuse (skipping more than is skippable)."""


class _Need(Exception):
    """Not enough bytes buffered for the next item (the item is read again later)."""


def command_name(cmd: int) -> str:
    member = C._value2member_map_.get(cmd)
    return member.name if member is not None else f"0x{cmd:x}"


class MainChannelParser:
    """Parser of one main migration channel.

    ``page_size``: the target page size, needed to step over ``RAM_SAVE_FLAG_PAGE``
    data; None assumes 4096 (x86) unless the stream says otherwise
    (``configuration/target-page-bits`` or a ``POSTCOPY_ADVISE`` command).
    ``page_events``: also emit one `MainPage` per ZERO/PAGE record (the reference
    receiver applies them); ``keep_page_data``: attach a PAGE record's bytes to it.
    """

    def __init__(self, page_size: int | None = None, *, page_events: bool = False,
                 keep_page_data: bool = False):
        if page_size is not None and page_size not in wire.SUPPORTED_PAGE_SIZES:
            raise ValueError(f"unsupported page size {page_size}")
        self.page_size = page_size or wire.DEFAULT_PAGE_SIZE
        self.page_size_given = page_size is not None
        self.page_events = page_events or keep_page_data
        self.keep_page_data = keep_page_data
        self._events: list = []
        self._buf = bytearray()
        self._pos = 0  # next unread byte of _buf
        self._base = 0  # stream offset of _buf[0]
        self._fed = 0  # stream offset of the next byte to feed
        self._final = False  # end(): missing look-ahead bytes mean "nothing follows"
        self._state = _HEADER
        self._skip = 0  # page data / VM description bytes still to step over
        self._skip_page: tuple | None = None  # (offset, block, page_offset) of a PAGE
        self._page_data: bytearray | None = None
        self._page_missing = False
        self._sections: dict[int, tuple[str, int, int]] = {}
        self._section: int | None = None  # the open section (for its footer)
        self._last_block: str | None = None
        self._blocks: dict[str, int] = {}
        self._mem: dict | None = None  # MEM_SIZE being read
        self._agg: list | None = None  # [offset, record bytes, zero, normal, section]
        self._reported: set = set()
        self._quiet_stop = False
        #: why parsing stopped (None while it goes on) and where
        self.stop_reason: str | None = None
        self.stop_offset: int | None = None
        self.unparsed = 0  # bytes received after parsing stopped
        self.hole_bytes = 0  # bytes missing from the capture
        self.version: int | None = None
        self.machine: str | None = None
        self.postcopy_advised = False
        self.eof = False
        self.counts = {"sections": 0, "ram_sections": 0, "commands": 0, "flush": 0, "eos": 0,
                       "zero_pages": 0, "normal_pages": 0, "switchover_start": 0,
                       "footers": 0}

    # ------------------------------------------------------------------ public API
    @property
    def offset(self) -> int:
        """Stream offset of the next byte to feed (= bytes fed, holes included)."""
        return self._fed

    @property
    def state(self) -> str:
        return STATE_NAMES[self._state]

    @property
    def skippable(self) -> int:
        """Bytes the parser will consume next without looking at them."""
        if self._state == _OPAQUE:
            return _FOREVER
        if self._skip and self._page_data is None and not self._buf:
            return self._skip
        return 0

    def skip(self, n: int, t: float) -> list:
        if n < 0 or n > self.skippable:
            raise ParserError(f"cannot skip {n} bytes, only {self.skippable} are skippable")
        self._fed += n
        self._base = self._fed
        if self._state == _OPAQUE:
            self.unparsed += n
        elif n:
            self._skip -= n
            if not self._skip:
                self._skip_done(t)
        return self._take()

    def feed(self, data, t: float) -> list:
        """Consume ``data`` (any bytes-like object) that arrived at time ``t``."""
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        pos, n = 0, len(mv)
        while pos < n:
            if self._state == _OPAQUE:
                self.unparsed += n - pos
                self._fed += n - pos
                self._base = self._fed
                break
            if self._skip and not self._buf:  # step over page data straight from the input
                take = min(self._skip, n - pos)
                if self._page_data is not None:
                    self._page_data += mv[pos:pos + take]
                self._skip -= take
                pos += take
                self._fed += take
                self._base = self._fed  # the buffer is empty: it starts where feeding is
                if not self._skip:
                    self._skip_done(t)
                continue
            take = min(_CHUNK, n - pos)
            self._buf += mv[pos:pos + take]
            pos += take
            self._fed += take
            self._run(t)
        return self._take()

    def feed_hole(self, n: int, t: float) -> list:
        """``n`` bytes of the stream are missing here (not captured)."""
        if n <= 0:
            return []
        self.hole_bytes += n
        self._fed += n
        if self._state == _OPAQUE:
            return self._take()
        if self._skip and not self._buf:
            h = min(n, self._skip)
            self._skip -= h
            n -= h
            self._base += h
            if self._page_data is not None:
                self._page_data = None
                self._page_missing = True
            if not self._skip:
                self._skip_done(t)
        if n > 0:
            lost = self._base + self._pos  # first byte of a partial item, if any
            self._expert(lost, t, "warn", f"{n} bytes missing from the capture: the "
                         "main-channel records after them cannot be followed", "hole")
            self._stop(lost, t, "capture hole")
            self._run(t)
        self._base = self._fed - len(self._buf)
        return self._take()

    def end(self, t: float) -> list:
        """The stream ended (FIN, RST or end of capture)."""
        self._final = True
        if self._state != _OPAQUE and self._buf:
            self._run(t)
        start = self._base + self._pos
        if self._state == _OPAQUE:
            self._flush_pages(t)
            if not self._quiet_stop and (self.unparsed or self.hole_bytes):
                holes = f" ({self.hole_bytes} bytes missing in holes)" if self.hole_bytes \
                    else ""
                self._expert(self.stop_offset, t, "note",
                             f"main channel parsed up to offset {self.stop_offset} "
                             f"({self.stop_reason}): {self.unparsed} bytes after it were "
                             f"not parsed{holes}", "opaque")
        elif self._skip:
            what = "page data" if self._skip_page is not None else "VM description"
            at = self._skip_page[0] if self._skip_page is not None else start
            self._expert(at, t, "error" if self._skip_page is not None else "warn",
                         f"main channel ended inside {what}: {self._skip} bytes missing",
                         "truncated")
            self._skip = 0
            self._page_data = None
            self._flush_pages(t)
        elif len(self._buf) > self._pos:
            self._flush_pages(t)
            self._expert(start, t, "error", f"main channel ended inside a "
                         f"{_ITEM_NAMES[self._state]} ({len(self._buf) - self._pos} bytes)",
                         "truncated")
        else:
            self._flush_pages(t)
            if self._fed and self._state != _AFTER_EOF:
                self._expert(start, t, "warn", "main channel ended before QEMU_VM_EOF",
                             "truncated")
        self._buf.clear()
        self._pos = 0
        self._base = self._fed
        return self._take()

    # ------------------------------------------------------------------ machinery
    def _take(self) -> list:
        ev, self._events = self._events, []
        return ev

    def _expert(self, offset: int, t: float, severity: str, message: str,
                group: str = "main") -> None:
        self._events.append(Expert(offset, t, severity, message, group))

    def _once(self, key, offset: int, t: float, severity: str, message: str,
              group: str = "ram") -> None:
        """An expert item reported only the first time for ``key`` (per-page problems)."""
        if key not in self._reported:
            self._reported.add(key)
            self._expert(offset, t, severity, message + " (reported once)", group)

    def _stop(self, at: int, t: float, reason: str, section_id: int | None = None,
              idstr: str | None = None, quiet: bool = False) -> None:
        """Stop parsing at stream offset ``at``: everything from there is counted only."""
        self._flush_pages(t)
        self._events.append(MainOpaque(at, t, reason, section_id, idstr))
        self._state = _OPAQUE
        self.stop_reason = reason
        self.stop_offset = at
        self._quiet_stop = quiet
        self._skip = 0
        self._page_data = None
        self._pos = max(0, min(at - self._base, len(self._buf)))

    def _run(self, t: float) -> None:
        buf = self._buf
        while True:
            if self._state == _OPAQUE:
                self.unparsed += len(buf) - self._pos
                self._pos = len(buf)
                break
            if self._skip:
                avail = len(buf) - self._pos
                if not avail:
                    break
                take = min(self._skip, avail)
                if self._page_data is not None:
                    self._page_data += buf[self._pos:self._pos + take]
                self._pos += take
                self._skip -= take
                if not self._skip:
                    self._skip_done(t)
                continue
            if self._pos >= len(buf):
                break
            start = self._pos
            try:
                self._item(t)
            except _Need:
                self._pos = start
                break
        if self._pos:
            del buf[:self._pos]
            self._base += self._pos
            self._pos = 0

    # ------------------------------------------------------------------ readers
    def _need(self, n: int) -> None:
        if self._pos + n > len(self._buf):
            raise _Need

    def _u8(self) -> int:
        self._need(1)
        v = self._buf[self._pos]
        self._pos += 1
        return v

    def _u16(self) -> int:
        self._need(2)
        v = _U16.unpack_from(self._buf, self._pos)[0]
        self._pos += 2
        return v

    def _u32(self) -> int:
        self._need(4)
        v = _U32.unpack_from(self._buf, self._pos)[0]
        self._pos += 4
        return v

    def _u64(self) -> int:
        self._need(8)
        v = _U64.unpack_from(self._buf, self._pos)[0]
        self._pos += 8
        return v

    def _bytes(self, n: int) -> bytes:
        self._need(n)
        v = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return v

    def _idstr(self) -> str:
        return self._bytes(self._u8()).decode("utf-8", "backslashreplace")

    def _peek(self, n: int) -> bytes | None:
        """The next ``n`` bytes without consuming them; None when the stream ended
        before them (at `end`), else waits for them."""
        if self._pos + n > len(self._buf):
            if self._final:
                return None
            raise _Need
        return bytes(self._buf[self._pos:self._pos + n])

    # ------------------------------------------------------------------ grammar
    def _item(self, t: float) -> None:
        at = self._base + self._pos
        state = self._state
        if state == _RAM:
            self._ram_record(at, t)
        elif state == _MEMSIZE:
            self._mem_block(at, t)
        elif state == _TOP:
            self._top(at, t)
        elif state == _HEADER:
            self._header(at, t)
        else:
            self._after_eof(at, t)

    def _header(self, at: int, t: float) -> None:
        magic, version = self._u32(), self._u32()
        if magic != wire.QEMU_VM_FILE_MAGIC:
            self._expert(at, t, "error", f"Not a migration stream (magic 0x{magic:08x})",
                         "header")
            return self._stop(at, t, "not a migration stream")
        self.version = version
        self._events.append(MainHeader(at, t, magic, version))
        if version == wire.QEMU_VM_FILE_VERSION_COMPAT:
            self._expert(at, t, "error", "SaveVM v2 format is obsolete and don't work anymore",
                         "header")
            return self._stop(at + 8, t, "obsolete stream version 2")
        if version != wire.QEMU_VM_FILE_VERSION:
            self._expert(at, t, "error", f"Unsupported migration stream version {version}",
                         "header")
            return self._stop(at + 8, t, f"unsupported stream version {version}")
        self._state = _TOP

    def _top(self, at: int, t: float) -> None:
        kind = self._u8()
        if kind == S.COMMAND:
            return self._command(at, t)
        if kind in (S.SECTION_START, S.SECTION_FULL):
            sid = self._u32()
            idstr = self._idstr()
            instance, version = self._u32(), self._u32()
            return self._section_start(at, t, kind, sid, idstr, instance, version)
        if kind in (S.SECTION_PART, S.SECTION_END):
            return self._section_part(at, t, kind, self._u32())
        if kind == S.SECTION_FOOTER:
            sid = self._u32()
            self.counts["footers"] += 1
            cur, self._section = self._section, None
            if sid != cur:
                name = self._sections.get(cur, ("?",))[0] if cur is not None else "?"
                expected = f"0x{cur:x}" if cur is not None else "none (no open section)"
                self._expert(at, t, "error", f"Mismatched section id in footer for {name} - "
                             f"read 0x{sid:x} expected {expected}", "section")
            return
        if kind == S.CONFIGURATION:
            return self._configuration(at, t)
        if kind == S.EOF:
            self.eof = True
            self._events.append(MainEof(at, t))
            self._state = _AFTER_EOF
            return
        self._expert(at, t, "error", f"Unknown savevm section type {kind}", "section")
        self._stop(at, t, f"unknown section type 0x{kind:02x}")

    def _configuration(self, at: int, t: float) -> None:
        n = self._u32()
        if n > MAX_CONFIG_NAME:
            self._expert(at, t, "error", f"configuration section: machine type name of {n} "
                         f"bytes (more than {MAX_CONFIG_NAME}): treated as corrupt", "length")
            return self._stop(at, t, "corrupt configuration section")
        machine = self._bytes(n).decode("utf-8", "backslashreplace").rstrip("\0")
        subs, bits, caps = [], None, ()
        while True:
            nxt = self._peek(1)
            if nxt is None or nxt[0] != S.SUBSECTION:
                break
            sub_at = self._base + self._pos
            self._pos += 1
            name = self._idstr()
            self._u32()  # version_id
            if name == "configuration/target-page-bits":
                bits = self._u32()
            elif name == "configuration/capabilities":
                count = self._u32()
                if count > MAX_CAPABILITIES:
                    self._expert(sub_at, t, "error", f"configuration: {count} capabilities "
                                 f"(more than {MAX_CAPABILITIES}): treated as corrupt", "length")
                    self._emit_config(at, t, sub_at, machine, subs, bits, caps)
                    return self._stop(sub_at, t, "corrupt configuration subsection")
                caps = tuple(self._idstr() for _ in range(count))
            elif name == "configuration/uuid":
                self._bytes(16)
            else:
                self._expert(sub_at, t, "warn", f"configuration subsection '{name}' is not "
                             "known: its length cannot be told", "section")
                self._emit_config(at, t, sub_at, machine, subs, bits, caps)
                return self._stop(sub_at, t, f"unknown configuration subsection '{name}'")
            subs.append(name)
        self._emit_config(at, t, self._base + self._pos, machine, subs, bits, caps)

    def _emit_config(self, at, t, end, machine, subs, bits, caps) -> None:
        self.machine = machine
        if bits is not None and not self.page_size_given \
                and (1 << min(bits, 63)) in wire.SUPPORTED_PAGE_SIZES:
            self.page_size = 1 << bits
        self._events.append(MainConfiguration(at, t, end - at, machine, tuple(subs), bits,
                                              tuple(caps)))

    def _command(self, at: int, t: float) -> None:
        cmd, length = self._u16(), self._u16()
        data = self._bytes(length)  # at most 65535 bytes, waited for, not allocated ahead
        name = command_name(cmd)
        self.counts["commands"] += 1
        want = CMD_LEN.get(cmd)
        if want is None:
            self._expert(at, t, "error", f"MIG_CMD 0x{cmd:x} unknown (len 0x{length:x})",
                         "command")
        elif want >= 0 and length != want:
            self._expert(at, t, "error", f"{name} received with bad length - expecting "
                         f"{want}, received {length}", "command")
        elif cmd == C.POSTCOPY_ADVISE:
            if length == 16:
                self.postcopy_advised = True
                target = _U64.unpack_from(data, 8)[0]
                if not self.page_size_given and target in wire.SUPPORTED_PAGE_SIZES:
                    self.page_size = target
            elif length:
                self._expert(at, t, "error", f"CMD_POSTCOPY_ADVISE invalid length ({length})",
                             "command")
        if cmd == C.SWITCHOVER_START:
            self.counts["switchover_start"] += 1
        self._events.append(MainCommand(at, t, cmd, length, name, data))

    def _section_start(self, at, t, kind, sid, idstr, instance, version) -> None:
        self.counts["sections"] += 1
        self._sections[sid] = (idstr, instance, version)
        self._section = sid
        self._events.append(MainSection(at, t, kind, sid, idstr, instance, version))
        if idstr == RAM_IDSTR:
            self.counts["ram_sections"] += 1
            self._state = _RAM
            return
        self._stop(self._base + self._pos, t, f"contents of section '{idstr}' are device "
                   "specific (not self-describing)", sid, idstr)

    def _section_part(self, at, t, kind, sid) -> None:
        self.counts["sections"] += 1
        known = self._sections.get(sid)
        idstr = known[0] if known else None
        self._section = sid
        self._events.append(MainSection(at, t, kind, sid, idstr, None, None))
        if known is None:
            self._expert(at, t, "error", f"Unknown savevm section {sid}", "section")
            return self._stop(self._base + self._pos, t, f"unknown section id {sid}", sid)
        if idstr == RAM_IDSTR:
            self.counts["ram_sections"] += 1
            self._state = _RAM
            return
        self._stop(self._base + self._pos, t, f"contents of section '{idstr}' are device "
                   "specific (not self-describing)", sid, idstr)

    def _after_eof(self, at: int, t: float) -> None:
        kind = self._u8()
        if kind == S.VMDESCRIPTION:
            self._skip = self._u32()  # JSON, stepped over without buffering
            self._skip_page = None
            if not self._skip:
                self._skip_done(t)
            return
        # QEMU stops reading after QEMU_VM_EOF (and its VM description): whatever
        # follows is not part of the migration, so it is counted, not reported
        self._stop(at, t, "bytes after QEMU_VM_EOF", quiet=True)

    # ------------------------------------------------------------------ ram
    def _ram_record(self, at: int, t: float) -> None:
        v = self._u64()
        flags = v & _FLAG_BITS
        addr = v & ~_FLAG_BITS
        base = flags & ~F.CONTINUE
        if base in (F.ZERO, F.PAGE):
            if flags & F.CONTINUE:
                block = self._last_block
            else:
                block = self._idstr()
            fill = self._u8() if base == F.ZERO else None
            if block is None:
                self._expert(at, t, "error", "Ack, bad migration stream! (RAM_SAVE_FLAG_CONTINUE "
                             "without a previous block)", "ram")
                return self._stop(at, t, "page record without a block")
            return self._page(at, t, block, addr, fill, self._base + self._pos - at)
        if base == F.MULTIFD_FLUSH:
            self.counts["flush"] += 1
            self._events.append(MainFlush(at, t, self._section))
            return
        if base == F.EOS:
            self.counts["eos"] += 1
            self._flush_pages(t)
            self._events.append(MainEos(at, t, self._section))
            self._state = _TOP
            return
        if base == F.MEM_SIZE:
            self._mem = {"at": at, "total": addr, "left": addr, "blocks": []}
            self._state = _MEMSIZE
            if addr == 0:
                self._mem_done(t)
            return
        if base in _CANNOT_FOLLOW:
            self._expert(at, t, "note", f"{_CANNOT_FOLLOW[base]} on the main channel: its "
                         "encoding is not followed, parsing stops here", "ram")
            return self._stop(at, t, _CANNOT_FOLLOW[base])
        self._expert(at, t, "error", f"Unknown combination of migration flags: 0x{flags:x}",
                     "ram")
        self._stop(at, t, f"unknown RAM flags 0x{flags:x}")

    def _page(self, at, t, block, addr, fill, hdr_len) -> None:
        # The block a CONTINUE record refers to is the destination's last one, kept
        # across sections (``ram_block_from_stream``): 7.2 starts a SECTION_PART with a
        # CONTINUE record (qemu72-nocomp-4ch, offset 112558).
        self._last_block = block
        zero = fill is not None
        ps = self.page_size
        if self._blocks:
            size = self._blocks.get(block)
            if size is None:
                self._once(("block", block), at, t, "error", f"Can't find block {block}")
            elif addr > size - ps:
                self._once(("offset", block), at, t, "error", f"Illegal RAM offset {addr:x} "
                           f"(block {block} is 0x{size:x} bytes)")
        if addr & (ps - 1):
            self._once("align", at, t, "warn", f"page offset 0x{addr:x} of block {block} is "
                       f"not aligned to the page size {ps}")
        if zero and fill:
            self._once("fill", at, t, "warn", f"zero page with fill byte {fill}")
        agg = self._agg
        if agg is None:
            agg = self._agg = [at, 0, 0, 0, self._section]
        agg[1] += hdr_len + (0 if zero else ps)
        if zero:
            agg[2] += 1
            self.counts["zero_pages"] += 1
            if self.page_events:
                self._events.append(MainPage(at, t, block, addr, True, fill))
            return
        agg[3] += 1
        self.counts["normal_pages"] += 1
        if self.page_events and not self.keep_page_data:
            self._events.append(MainPage(at, t, block, addr, False, None))
        self._skip = ps
        self._skip_page = (at, block, addr)
        self._page_data = bytearray() if self.keep_page_data else None
        self._page_missing = False

    def _skip_done(self, t: float) -> None:
        page = self._skip_page
        if page is not None and self.keep_page_data:
            data = bytes(self._page_data) if self._page_data is not None \
                and not self._page_missing else None
            self._events.append(MainPage(page[0], t, page[1], page[2], False, None, data))
        self._skip_page = None
        self._page_data = None
        self._page_missing = False

    def _flush_pages(self, t: float) -> None:
        agg, self._agg = self._agg, None
        if agg is not None:
            self._events.append(MainPages(agg[0], t, agg[1], agg[4], agg[2], agg[3]))

    def _mem_block(self, at: int, t: float) -> None:
        mem = self._mem
        name = self._idstr()
        used = self._u64()
        extra = []
        # Capabilities add u64 fields after used_length (postcopy-ram: the block's page
        # size when it differs from the host's; x-ignore-shared: its guest address).
        # They cannot be told from the wire directly, but they are recognisable: a
        # value < 2^56 starts with a 0 byte, which cannot begin the next block (an
        # empty idstr), and its low bits are 0, which as the next RAM record would be
        # flags 0 (no such record).
        while len(extra) < 2:
            nxt = self._peek(8)
            if nxt is None or nxt[0] != 0 or _U64.unpack(nxt)[0] & _FLAG_BITS:
                break
            extra.append(self._u64())
        if not name:
            self._expert(at, t, "error", 'Unknown ramblock "", cannot accept migration',
                         "ram")
            return self._stop(at, t, "corrupt RAMBlock list")
        if len(mem["blocks"]) >= MAX_BLOCKS or used > mem["left"]:
            why = (f"more than {MAX_BLOCKS} RAMBlocks" if used <= mem["left"] else
                   f"RAMBlock {name} (0x{used:x} bytes) exceeds what is left of the "
                   f"MEM_SIZE total 0x{mem['total']:x}")
            self._expert(at, t, "error", f"RAMBlock list: {why}: treated as corrupt", "length")
            return self._stop(at, t, "corrupt RAMBlock list")
        mem["blocks"].append(RamBlockSize(name, used, tuple(extra)))
        mem["left"] -= used
        if not mem["left"]:
            self._mem_done(t)

    def _mem_done(self, t: float) -> None:
        mem, self._mem = self._mem, None
        self._blocks = {b.name: b.used_length for b in mem["blocks"]}
        self._state = _RAM
        end = self._base + self._pos
        self._events.append(MainMemSize(mem["at"], t, end - mem["at"], mem["total"],
                                        tuple(mem["blocks"])))


__all__ = ["CMD_LEN", "MainChannelParser", "ParserError", "RAM_IDSTR", "command_name"]
