"""Sans-IO parser of one multifd channel (client -> server byte stream).

It is fed bytes with the capture time they arrived at and returns events
(`mfdscope.events`); it knows nothing of files, sockets or pandas.  Page data is
skipped without copying unless the caller asks for it (decompression or payload
delivery), and every length field is bounded before it is trusted, so a lying
header can neither allocate memory nor stall the parser: it becomes an expert
item and the parser resynchronises on the next valid header.

Framing rules are spec 4.2 and section 10; validation texts are spec 5.6.
"""
from __future__ import annotations

import struct
from collections import deque

from . import wire
from .codec import DecodeError, Decoder
from .events import DeviceStatePacket, Expert, Hole, InitPacket, RamPacket, Resync

_COLLECT, _PAYLOAD, _RESYNC = range(3)
_HDR = wire.HDR.size
_RAM_FIXED = wire.RAM.size
_DS_FIXED = wire.DEVICE_STATE.size
_VFIO = wire.VFIO_BUFFER.size
_PREFIX = wire.HEADER_PREFIX
_INIT_PREFIX = wire.MULTIFD_MAGIC_BYTES
#: page sizes tried when a 9.2+ SYNC (pages_alloc 0) comes first: shortest packet_len
#: first.  A later header can sit exactly where a longer candidate packet would end
#: (e.g. a 64 KiB-page SYNC followed by a device-state packet ending at 64 + 1344),
#: but never inside a shorter candidate: a 9.2+ SYNC's offset table is all zeros.
_DETECT_ORDER = tuple(sorted(wire.SUPPORTED_PAGE_SIZES, key=wire.packet_len))
_MAX_PACKET_LEN = max(wire.packet_len(p) for p in wire.SUPPORTED_PAGE_SIZES)
_VALID_PAGE_COUNTS = {wire.page_count(p): p for p in wire.SUPPORTED_PAGE_SIZES}
_INIT_RESERVED = wire.INIT.offsets["unused1"]
_RAM_RESERVED = wire.RAM.offsets["unused32"]


class ParserError(Exception):
    """Raised only for API misuse (e.g. skipping more than is skippable)."""


class ChannelParser:
    """Parser of one multifd channel.

    ``page_size``: None to detect it (from ``pages_alloc`` or, when the first packet
    is a 9.2+ SYNC with ``pages_alloc = 0``, from where the next header starts).
    ``decompress``: inflate zlib/zstd payloads and check their size.
    ``keep_payload``: attach payload bytes (decompressed pages) to events, for the
    reference receiver.  ``start="resync"`` for streams seen from the middle.
    """

    def __init__(self, page_size: int | None = None, *, decompress: bool = False,
                 keep_payload: bool = False, start: str = "init"):
        if page_size is not None and page_size not in wire.SUPPORTED_PAGE_SIZES:
            raise ValueError(f"unsupported page size {page_size}")
        self.page_size = page_size
        self.decompress = decompress or keep_payload
        self.keep_payload = keep_payload
        self.channel_id: int | None = None
        self.compression: int | None = None  # first compression seen with pages
        self._decoder: Decoder | None = None
        self._events: list = []
        self._off = 0  # stream offset of the next byte the state machine consumes
        self._rec = bytearray()
        self._rec_off = 0
        self._rec_t = 0.0
        self._scan = bytearray()
        self._scan_off = 0
        self._scan_t = 0.0
        self._resync_started: int | None = None
        self._validating = False  # header found by resync: reject rather than report
        self._detecting = False
        #: while detecting: (len(_rec) after each piece, capture time of that piece)
        self._rec_times: list[tuple[int, float]] = []
        self._pending = None  # header event waiting for its payload
        self._remaining = 0
        self._missing = 0
        self._vfio = bytearray()
        self._vfio_lost = False
        self._pushed: list = []
        self._payload: bytearray | None = None
        self._expected_out = 0
        self._decoded = 0
        if start == "init":
            self._state, self._want, self._init = _COLLECT, wire.INIT.size, True
        elif start == "resync":
            self._state, self._want, self._init = _RESYNC, 0, False
            self._resync_started = 0
        else:
            raise ValueError("start must be 'init' or 'resync'")

    # ------------------------------------------------------------------ public API
    @property
    def offset(self) -> int:
        """Stream offset of the next byte to feed."""
        return self._off

    @property
    def skippable(self) -> int:
        """Bytes the parser will consume next without looking at them."""
        if self._state == _PAYLOAD and self._payload is None and self._decoder_idle():
            vfio_need = self._vfio_need()
            return self._remaining if not vfio_need else 0
        return 0

    def skip(self, n: int, t: float) -> list:
        if n > self.skippable:
            raise ParserError(f"cannot skip {n} bytes, only {self.skippable} are page data")
        if n:
            self._remaining -= n
            self._off += n
            if self._remaining == 0:
                self._finish_payload(t)
        return self._take()

    def feed(self, data, t: float) -> list:
        """Consume ``data`` (any bytes-like object) that arrived at time ``t``."""
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        self._process(mv, t)
        return self._take()

    def feed_hole(self, n: int, t: float) -> list:
        """``n`` bytes of the stream are missing here (not captured)."""
        if n <= 0:
            return []
        if self._state == _COLLECT and self._detecting:
            self._detect_now(t)  # the record read ahead may be complete already
        start = self._off
        resync = True
        if self._state == _PAYLOAD:
            h = min(n, self._remaining)
            if self._vfio_need():
                self._vfio_lost = True
            self._missing += h
            self._remaining -= h
            self._off += h
            n -= h
            if self._decoder is not None and h and not self._decoder.broken:
                self._decoder.broken = True
                self._expert(start, t, "warn", "hole inside compressed data: this channel "
                             "can no longer be decompressed", "decompress")
            if self._remaining == 0:
                self._finish_payload(t)
            resync = n > 0
        if n > 0:
            # framing is lost from here on: the partial record's first byte, if any
            lost_from = self._off
            if self._state == _COLLECT and self._rec:
                lost_from = self._rec_off
            if self._state == _COLLECT and (self._rec or self._init) and not self._validating:
                what = "initial packet" if self._init else "packet header"
                self._expert(lost_from, t, "warn", f"{what} lost in a capture hole", "hole")
            self._init = False
            self._rec.clear()
            self._detecting = False
            self._state = _RESYNC
            self._scan.clear()
            self._off += n
            self._scan_off = self._off
            if self._resync_started is None:
                # from the partial record on, so that Resync.skipped accounts for
                # every byte that no record covers
                self._resync_started = lost_from
        self._events.append(Hole(start, self._off - start, t, resync))
        return self._take()

    def end(self, t: float) -> list:
        """The stream ended (FIN, RST or end of capture)."""
        if self._state == _COLLECT and self._detecting:
            self._detect_now(t)
        if self._state == _COLLECT and self._validating:
            # a header candidate cut by the end is unparsed tail, not a truncated packet
            self._rec.clear()
            self._state = _RESYNC
        if self._state == _PAYLOAD:
            lost = self._remaining
            self._missing += lost
            self._remaining = 0
            self._expert(self._rec_off, t, "error",
                         f"stream ended inside the payload of the packet at {self._rec_off}: "
                         f"{lost} bytes missing", "truncated")
            self._finish_payload(t)
        elif self._state == _COLLECT and self._rec:
            msg = ("multifd: unexpected EOF after packet header"
                   if len(self._rec) >= _HDR and not self._init else
                   f"stream ended inside a {'initial packet' if self._init else 'packet header'}")
            self._expert(self._rec_off, t, "error",
                         f"{msg} ({len(self._rec)} of {self._want} bytes)", "truncated")
            self._rec.clear()
        elif self._state == _RESYNC and self._resync_started is not None:
            skipped = self._off - self._resync_started
            if skipped:
                self._expert(self._resync_started, t, "warn",
                             f"{skipped} bytes at the end of the stream without a valid header",
                             "resync")
        return self._take()

    # ------------------------------------------------------------------ machinery
    def _take(self) -> list:
        ev, self._events = self._events, []
        return ev

    def _expert(self, offset: int, t: float, severity: str, message: str,
                group: str = "protocol") -> None:
        self._events.append(Expert(offset, t, severity, message, group))

    def _decoder_idle(self) -> bool:
        return self._pending is None or self._expected_out == 0 or self._decoder is None \
            or self._decoder.broken

    def _vfio_need(self) -> int:
        p = self._pending
        if type(p) is dict and p["ds"] and not self._vfio_lost:
            return max(0, min(_VFIO, p["next_packet_size"]) - len(self._vfio))
        return 0

    def _process(self, mv: memoryview, t: float) -> None:
        # Handlers that must look at bytes again (a rejected candidate header, bytes
        # read ahead for page-size detection) push them back instead of recursing, so
        # hostile input cannot exhaust the stack.
        pushed = self._pushed
        # bytes pushed back outside this loop (end(), feed_hole()) come first
        queue = deque(pushed)
        queue.append((mv, t))
        pushed.clear()
        while queue:
            mv, t = queue.popleft()
            pos, n = 0, len(mv)
            while pos < n:
                state = self._state
                if state == _COLLECT:
                    if not self._rec:
                        self._rec_off, self._rec_t = self._off, t
                    take = min(self._want - len(self._rec), n - pos)
                    self._rec += mv[pos:pos + take]
                    pos += take
                    self._off += take
                    if self._detecting:
                        self._rec_times.append((len(self._rec), t))
                    if len(self._rec) >= self._want:
                        self._collected(t)
                elif state == _PAYLOAD:
                    take = min(self._remaining, n - pos)
                    vneed = self._vfio_need()
                    if vneed:
                        take = min(take, vneed)
                        self._vfio += mv[pos:pos + take]
                    # Decoding goes first: with keep_payload, _decode() creates
                    # _payload for the decoded pages, and the next piece must be
                    # decoded too, not appended raw.
                    if self._decoder is not None and not self._decoder.broken \
                            and self._expected_out:
                        self._decode(mv[pos:pos + take], t)
                    elif self._payload is not None:
                        self._payload += mv[pos:pos + take]
                    pos += take
                    self._off += take
                    self._remaining -= take
                    if self._remaining == 0:
                        self._finish_payload(t)
                else:  # _RESYNC
                    if not self._scan:
                        self._scan_off, self._scan_t = self._off, t
                    take = min(n - pos, 65536)  # keeps the scan buffer small
                    self._scan += mv[pos:pos + take]
                    pos += take
                    self._off += take
                    self._scan_for_header(t)
                if pushed:
                    if pos < n:
                        queue.appendleft((mv[pos:], t))
                    queue.extendleft(reversed(pushed))
                    pushed.clear()
                    break

    def _push_back(self, data: bytes, offset: int, t: float) -> None:
        """Bytes from ``offset`` on are to be consumed again, before anything newer.

        Several pushes in one step queue up in order; the stream offset is then the
        one of the first (e.g. a rejected read-ahead record, then the bytes after it).
        """
        if not self._pushed:
            self._off = offset
        if data:
            self._pushed.append((memoryview(data), t))

    def _scan_for_header(self, t: float) -> None:
        scan = self._scan
        i = scan.find(_PREFIX)
        if i < 0:
            keep = len(_PREFIX) - 1
            if len(scan) > keep:
                del scan[:len(scan) - keep]
                self._scan_off = self._off - len(scan)
            return
        # a candidate: validate it through the normal path, in "validating" mode
        cand_off = self._scan_off + i
        rest = bytes(scan[i:])
        scan.clear()
        self._state = _COLLECT
        self._validating = True
        self._rec.clear()
        self._want = _HDR
        self._push_back(rest, cand_off, self._scan_t)

    def _reject(self, t: float) -> None:
        """The bytes in ``_rec`` are not a valid record: scan them again from +1."""
        rest = bytes(self._rec[1:])
        off = self._rec_off + 1
        self._rec.clear()
        self._detecting = False
        self._init = False
        self._validating = True
        self._state = _RESYNC
        self._scan.clear()
        if self._resync_started is None:
            self._resync_started = self._rec_off
        self._push_back(rest, off, t)

    def _accept(self, t: float) -> None:
        """A header passed validation; end resynchronisation if it was on."""
        if self._resync_started is not None:
            skipped = self._rec_off - self._resync_started
            self._events.append(Resync(self._rec_off, skipped, t))
            if skipped:
                self._expert(self._resync_started, t, "warn",
                             f"resynchronised at offset {self._rec_off} after {skipped} "
                             "bytes that could not be parsed", "resync")
            self._resync_started = None
        self._validating = False

    # ------------------------------------------------------------------ records
    def _collected(self, t: float) -> None:
        if self._init:
            self._on_init(t)
        elif len(self._rec) == _HDR:
            self._on_header(t)
        elif self._pending == "ds":
            self._on_device_state(t)
        else:
            self._on_ram(t)

    def _on_init(self, t: float) -> None:
        f = wire.INIT.unpack_from(self._rec)
        if f["magic"] != wire.MULTIFD_MAGIC:
            self._expert(self._rec_off, t, "error",
                         f"multifd: received packet magic {f['magic']:x} expected "
                         f"{wire.MULTIFD_MAGIC:x}", "init")
            return self._reject(t)
        if f["version"] != wire.MULTIFD_VERSION:
            self._expert(self._rec_off, t, "error",
                         f"multifd: received packet version {f['version']} expected "
                         f"{wire.MULTIFD_VERSION}", "init")
        if any(self._rec[_INIT_RESERVED:wire.INIT.size]):
            self._expert(self._rec_off, t, "note",
                         "initial packet reserved bytes are not zero (foreign extension?)",
                         "init")
        self._init = False
        self.channel_id = f["id"]
        self._events.append(InitPacket(self._rec_off, wire.INIT.size, self._rec_t, t,
                                       f["magic"], f["version"], bytes(f["uuid"]), f["id"]))
        self._next_header()

    def _next_header(self) -> None:
        self._rec.clear()
        self._state = _COLLECT
        self._want = _HDR
        self._pending = None

    def _on_header(self, t: float) -> None:
        magic, version, flags = wire.HDR.struct.unpack_from(self._rec)
        if magic != wire.MULTIFD_MAGIC or version != wire.MULTIFD_VERSION:
            if not self._validating:
                if magic == wire.MULTIFD_MAGIC:
                    msg = (f"multifd: received packet version {version}, expected "
                           f"{wire.MULTIFD_VERSION}")
                else:
                    msg = f"multifd: received packet magic {magic:x}, expected {wire.MULTIFD_MAGIC:x}"
                self._expert(self._rec_off, t, "error", msg, "header")
            return self._reject(t)
        if flags & ~wire.KNOWN_FLAGS and self._validating:
            return self._reject(t)
        if flags & wire.FLAG_DEVICE_STATE:
            self._pending = "ds"
            self._want = _DS_FIXED
        else:
            self._pending = "ram"
            self._want = wire.packet_len(self.page_size) if self.page_size else _RAM_FIXED

    def _on_device_state(self, t: float) -> None:
        f = wire.DEVICE_STATE.unpack_from(self._rec)
        nps = f["next_packet_size"]
        terminated = wire.idstr_terminated(f["idstr"])
        if self._validating and (not terminated or not 0 < nps <= wire.MAX_DEVICE_STATE_PAYLOAD
                                 or f["flags"] & ~wire.KNOWN_FLAGS):
            return self._reject(t)
        off = self._rec_off
        if nps > wire.MAX_DEVICE_STATE_PAYLOAD:
            self._expert(off, t, "error",
                         f"device state packet announces {nps} bytes of payload, more than "
                         f"the {wire.MAX_DEVICE_STATE_PAYLOAD} any VFIO buffer can hold: "
                         "treated as corrupt", "length")
            return self._reject(t)
        self._accept(t)
        self._check_flags(f["flags"], off, t)
        if f["flags"] & wire.FLAG_SYNC:
            self._expert(off, t, "error", "multifd: received SYNC device state packet",
                         "device_state")
        if f["flags"] & wire.COMPRESSION_MASK:
            self._expert(off, t, "warn", "device state packet with compression bits "
                         f"0x{f['flags'] & wire.COMPRESSION_MASK:x}", "device_state")
        if nps == 0:
            self._expert(off, t, "error", "multifd: received empty device state packet",
                         "device_state")
        if not terminated:
            self._expert(off, t, "error", "unterminated multifd device state idstr",
                         "device_state")
        self._pending = {"ds": True, "flags": f["flags"], "idstr": wire.cstring(f["idstr"]),
                         "instance_id": f["instance_id"], "next_packet_size": nps}
        self._vfio.clear()
        self._start_payload(nps, keep=self.keep_payload, t=t)

    def _on_ram(self, t: float) -> None:
        rec = self._rec
        f = wire.RAM.unpack_from(rec)
        off = self._rec_off
        flags, alloc = f["flags"], f["pages_alloc"]
        normal, zero, nps = f["normal_pages"], f["zero_pages"], f["next_packet_size"]
        if self.page_size is None:
            if alloc in _VALID_PAGE_COUNTS:
                self.page_size = _VALID_PAGE_COUNTS[alloc]
            elif not self._detecting:
                if self._validating and alloc != 0:
                    return self._reject(t)
                self._detecting = True
                # first byte and byte _RAM_FIXED - 1 times; later pieces are appended
                self._rec_times = [(1, self._rec_t), (len(rec), t)]
                self._want = _MAX_PACKET_LEN + len(_PREFIX)
                return
            else:
                page = self._detect(rec, normal, flags, nps)
                if page is None:
                    if self._validating:
                        return self._reject(t)
                    page = wire.DEFAULT_PAGE_SIZE
                    self._expert(off, t, "warn", "could not detect the page size from the "
                                 f"packet spacing; assuming {page}", "page_size")
                self.page_size = page
            plen = wire.packet_len(self.page_size)
            if len(rec) < plen:
                self._want = plen
                return
            if len(rec) > plen:  # detection read ahead: hand the extra bytes back
                # The packet ended, and the bytes after it arrived, at the times of
                # the pieces that carried them, not at the time of the last piece.
                extra = self._read_ahead(plen)
                t_end = next(tt for n, tt in self._rec_times if n >= plen)
                start = self._rec_off + plen
                del rec[plen:]
                self._detecting = False
                self._on_ram(t_end)
                # If _on_ram rejected the packet, its bytes were pushed back first and
                # the stream offset is theirs; the read-ahead bytes queue up after them.
                self._push_back(b"", start, t)
                for data, tt in extra:
                    self._pushed.append((memoryview(data), tt))
                return
        self._detecting = False
        count = wire.page_count(self.page_size)
        problems = []
        # QEMU rejects only pages_alloc > page_count; smaller non-zero values never
        # come from upstream senders but are legal
        if alloc > count:
            problems.append(("error", f"multifd: received packet with {alloc} pages, expected {count}"))
        elif alloc not in (0, count):
            problems.append(("note", f"pages_alloc {alloc} differs from page_count {count}"))
        limit = min(alloc, count)  # QEMU compares with pages_alloc itself (0 in SYNC)
        if normal > limit:
            problems.append(("error", f"multifd: received packet with {normal} non-zero pages, "
                                      f"which exceeds maximum expected pages {limit}"))
        if zero > limit - min(normal, limit):
            problems.append(("error", f"multifd: received packet with {zero} zero pages, "
                                      f"expected maximum {limit - min(normal, limit)}"))
        comp = wire.compression_of(flags)
        payload = wire.ram_payload_len(flags, normal, nps, self.page_size)
        if comp and normal and nps > wire.COMPRESSED_RECV_BUFFER:
            problems.append(("error", f"compressed payload of {nps} bytes exceeds QEMU's "
                                      f"{wire.COMPRESSED_RECV_BUFFER}-byte receive buffer"))
        fatal = normal > count or zero > count or (comp and normal and
                                                   nps > wire.COMPRESSED_RECV_BUFFER)
        if self._validating and (problems or flags & ~wire.KNOWN_FLAGS
                                 or (not comp and normal and nps != normal * self.page_size)):
            return self._reject(t)
        if fatal:
            for sev, msg in problems:
                self._expert(off, t, sev, msg, "length")
            self._expert(off, t, "error", "packet lengths cannot be trusted: resynchronising",
                         "length")
            return self._reject(t)
        self._accept(t)
        for sev, msg in problems:
            self._expert(off, t, sev, msg, "header")
        self._check_flags(flags, off, t)
        if any(rec[_RAM_RESERVED:wire.RAM.offsets["ramblock"]]):
            self._expert(off, t, "note", "reserved fields are not zero (foreign extension?)",
                         "header")
        if normal and comp == 0 and nps != normal * self.page_size:
            self._expert(off, t, "warn", f"next_packet_size {nps} differs from normal_pages x "
                         f"page_size = {normal * self.page_size} (nocomp receivers ignore it)",
                         "length")
        if normal:
            if self.compression is None:
                self.compression = comp
            elif comp != self.compression:
                self._expert(off, t, "warn", f"multifd {self.channel_id}: flags received "
                             f"{comp:x} flags expected {self.compression:x}", "compression")
        nvalid = min(normal + zero, count)
        offsets = struct.unpack_from(f">{nvalid}Q", rec, _RAM_FIXED) if nvalid else ()
        self._pending = {"ds": False, "flags": flags, "pages_alloc": alloc, "normal_pages": normal,
                         "next_packet_size": nps, "packet_num": f["packet_num"],
                         "zero_pages": zero, "ramblock": wire.cstring(f["ramblock"][:255]),
                         "offsets": offsets, "payload_len": payload}
        self._expected_out = 0
        if comp in (wire.Compression.ZLIB, wire.Compression.ZSTD) and self.decompress and payload:
            if self._decoder is None:
                self._decoder = Decoder(comp)
            if not self._decoder.broken:
                self._expected_out = normal * self.page_size
                self._decoded = 0
        # raw bytes are kept for nocomp only: ``payload`` is page data, and compressed
        # bytes of a channel whose decoder broke (or of qpl/uadk/qatzip) are not pages
        keep = self.keep_payload and payload and comp == wire.Compression.NONE
        self._start_payload(payload, keep=bool(keep), t=t)

    def _check_flags(self, flags: int, off: int, t: float) -> None:
        unknown = flags & ~wire.KNOWN_FLAGS
        if unknown:
            self._expert(off, t, "warn", f"unknown flag bits 0x{unknown:x} (not upstream QEMU)",
                         "flags")
        comp = wire.compression_of(flags)
        if comp and comp not in wire.Compression._value2member_map_:
            self._expert(off, t, "warn", f"invalid compression field 0x{comp:x}", "flags")

    def _detect(self, rec, normal: int, flags: int, nps: int) -> int | None:
        for page in _DETECT_ORDER:
            at = wire.packet_len(page) + wire.ram_payload_len(flags, normal, nps, page)
            if rec[at:at + len(_PREFIX)] == _PREFIX:
                return page
        return None

    def _read_ahead(self, start: int) -> list:
        """``_rec[start:]`` cut into the pieces it arrived in, with their capture times."""
        out, prev = [], 0
        for end, t in self._rec_times:
            lo, hi = max(prev, start), min(end, len(self._rec))
            if hi > lo:
                out.append((bytes(self._rec[lo:hi]), t))
            prev = max(prev, end)
        return out

    def _detect_now(self, t: float) -> None:
        """No byte follows the read-ahead (end of stream, or a capture hole): decide the
        page size from the bytes read so far, then parse them again with it.

        Re-parsing goes through `_process`, so a rejected candidate and the bytes after
        the packet are handled exactly as in the streaming case (a hole right after a
        complete SYNC used to throw the SYNC away)."""
        rec = self._rec
        f = wire.RAM.unpack_from(rec)
        page = None
        for p in _DETECT_ORDER:
            if len(rec) == wire.packet_len(p) + wire.ram_payload_len(
                    f["flags"], f["normal_pages"], f["next_packet_size"], p):
                page = p
                break
        else:
            page = self._detect(rec, f["normal_pages"], f["flags"], f["next_packet_size"])
        if page is None:  # the stream may stop a few bytes into the next header
            for p in _DETECT_ORDER:
                tail = bytes(rec[wire.packet_len(p) + wire.ram_payload_len(
                    f["flags"], f["normal_pages"], f["next_packet_size"], p):])
                if 0 < len(tail) < len(_PREFIX) and _PREFIX.startswith(tail):
                    page = p
                    break
        self._detecting = False
        if page is None:
            if self._validating:
                self._reject(t)
                self._process(memoryview(b""), t)
                return
            page = wire.DEFAULT_PAGE_SIZE
            self._expert(self._rec_off, t, "warn", "could not detect the page size from the "
                         f"packet spacing; assuming {page}", "page_size")
        self.page_size = page
        pieces = self._read_ahead(0)
        self._rec.clear()
        self._want = _HDR
        self._pending = None
        self._off = self._rec_off
        for data, tt in pieces:
            self._process(memoryview(data), tt)

    # ------------------------------------------------------------------ payload
    def _start_payload(self, length: int, *, keep: bool, t: float) -> None:
        self._rec.clear()
        self._missing = 0
        self._payload = bytearray() if keep else None
        if length == 0:
            self._finish_payload(t)
        else:
            self._state = _PAYLOAD
            self._remaining = length

    def _decode(self, data, t: float) -> None:
        dec = self._decoder
        try:
            out = dec.decompress(data, self._expected_out - self._decoded)
        except DecodeError as e:
            dec.broken = True
            self._payload = None  # what was decoded so far is not the packet's pages
            self._expert(self._rec_off, t, "error", f"multifd {self.channel_id}: {e}",
                         "decompress")
            return
        if out is None:
            dec.broken = True
            self._payload = None
            self._expert(self._rec_off, t, "error",
                         f"multifd {self.channel_id}: decompressed data exceeds the expected "
                         f"{self._expected_out} bytes", "decompress")
            return
        self._decoded += len(out)
        if self.keep_payload:
            if self._payload is None:
                self._payload = bytearray()
            self._payload += out

    def _finish_payload(self, t: float) -> None:
        p = self._pending
        self._state = _COLLECT
        decompressed = None
        if self._expected_out:
            if not self._decoder.broken and self._missing == 0:
                decompressed = self._decoded
                if self._decoded != self._expected_out:
                    self._expert(self._rec_off, t, "error",
                                 f"multifd {self.channel_id}: packet size received "
                                 f"{self._decoded} size expected {self._expected_out}",
                                 "decompress")
            self._expected_out = 0
        # page data with a hole in it would be misaligned pages: deliver none
        payload = bytes(self._payload) if self._payload is not None and not self._missing \
            else None
        self._payload = None
        if p["ds"]:
            v = self._vfio
            vf = wire.VFIO_BUFFER.unpack_from(v) if len(v) >= _VFIO else None
            nps = p["next_packet_size"]
            if vf is None and nps and not self._missing:
                self._expert(self._rec_off, t, "warn", f"{p['idstr']}: packet too short at "
                             f"{nps} (min is {_VFIO})", "vfio")
            elif vf is not None:
                self._check_vfio(vf, p["idstr"], t)
            ev = DeviceStatePacket(self._rec_off, _DS_FIXED + nps, self._rec_t, t, p["flags"],
                                   p["idstr"], p["instance_id"], nps,
                                   vf["version"] if vf else None, vf["idx"] if vf else None,
                                   vf["flags"] if vf else None, self._missing, payload)
        else:
            ev = RamPacket(self._rec_off, wire.packet_len(self.page_size) + p["payload_len"],
                           self._rec_t, t, p["flags"], p["pages_alloc"], p["normal_pages"],
                           p["next_packet_size"], p["packet_num"], p["zero_pages"],
                           p["ramblock"], p["offsets"], p["payload_len"], self.page_size,
                           self._missing, decompressed, payload)
        self._events.append(ev)
        self._vfio.clear()
        self._vfio_lost = False
        self._next_header()

    def _check_vfio(self, vf: dict, idstr: str, t: float) -> None:
        if vf["version"] != wire.VFIO_DEVICE_STATE_PACKET_VER_CURRENT:
            self._expert(self._rec_off, t, "warn",
                         f"{idstr}: packet has unknown version {vf['version']}", "vfio")
        if vf["idx"] == wire.VFIO_IDX_INVALID:
            self._expert(self._rec_off, t, "warn", f"{idstr}: packet index is invalid", "vfio")
        if vf["flags"] & ~wire.VFIO_DEVICE_STATE_CONFIG_STATE:
            self._expert(self._rec_off, t, "warn",
                         f"{idstr}: unknown VFIO buffer flags 0x{vf['flags']:x}", "vfio")
