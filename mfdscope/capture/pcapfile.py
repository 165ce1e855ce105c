"""pcap and pcapng readers: capture files in, batches of frame positions out.

The file is memory-mapped and never copied.  Per batch, one tight Python loop walks
the records reading only each record's length; every other header field is then
gathered for all records at once with numpy (views with a one-byte stride read an
integer at any offset).  Damage at the end of a file (a record cut short, a length
field that cannot be right) ends the walk with a warning; what came before is kept.
"""
from __future__ import annotations

import mmap
import os
import struct
from array import array
from dataclasses import dataclass

import numpy as np

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_MODIFIED = 0xA1B2CD34  # Kuznetsov's patched libpcap: 8 more bytes a record
PCAP_HEADER_LEN = 24
PCAP_RECORD_LEN = 16
PCAP_MODIFIED_RECORD_LEN = 24
PCAP_CAPLEN_AT = 8  # in the record header: ts_sec, ts_frac, caplen, origlen
PCAP_LINKTYPE_MASK = 0xFFFF  # the upper bits of the header's network field carry FCS info

PCAPNG_SHB = 0x0A0D0D0A  # palindromic: readable before the byte order is known
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_IDB = 1
PCAPNG_OPB = 2  # obsolete packet block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
PCAPNG_SHB_MIN_LEN = 28
PCAPNG_IDB_MIN_LEN = 20
PCAPNG_EPB_HEADER_LEN = 28  # type, length, interface, ts high, ts low, caplen, origlen
PCAPNG_SPB_HEADER_LEN = 12
PCAPNG_OPB_HEADER_LEN = 28
PCAPNG_BLOCK_OVERHEAD = 12  # type, length, trailing length
PCAPNG_OPT_IF_TSRESOL = 9
PCAPNG_OPT_IF_TSOFFSET = 14
PCAPNG_TSRESOL_POW2 = 0x80  # if_tsresol high bit: negative power of 2, else of 10
PCAPNG_DEFAULT_TSRESOL = 6  # microseconds
MAX_TSRESOL_TICKS = (1 << 64) - 1  # ticks per second must fit the uint64 arithmetic

MAX_CAPLEN = 256 << 20  # a longer record is a corrupt length field, never allocated
#: after a corrupt record header, how far to look for the next plausible one, and what
#: "plausible" allows: a frame this long at most, a timestamp this close to the last
RESYNC_WINDOW = 64 << 20
RESYNC_MAX_FRAME = 16 << 20
RESYNC_MAX_SKEW = 86400  # seconds
DEFAULT_MAX_PACKETS = 65536
STREAM_CHUNK = 4 << 20  # bytes asked of a pipe per read
GATHER_MIN_ITEM = 8  # numpy gathers 4-byte void items ~6x slower than 8-byte ones

U32 = {"<": struct.Struct("<I"), ">": struct.Struct(">I")}
BLOCK_HEADER = {"<": struct.Struct("<II"), ">": struct.Struct(">II")}


def layout(fields, order=">", size=None):
    """A structured dtype for a header: `fields` is [(name, offset, code)], e.g.
    ("caplen", 8, "u4").  Padded to at least 8 bytes: numpy gathers such items fast."""
    names, offsets, formats = zip(*((n, o, order + c) for n, o, c in fields))
    end = max(o + np.dtype(f).itemsize for o, f in zip(offsets, formats))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": max(size or end, GATHER_MIN_ITEM)})


def gather(buf, pos, dtype):
    """Read one `dtype` record at each byte offset in `pos` (int64 array) of `buf`.

    A view whose items overlap (stride one byte) turns the read into one numpy fancy
    index; callers guarantee ``pos + dtype.itemsize <= len(buf)``.
    """
    w = dtype.itemsize
    view = np.ndarray((max(len(buf) - w + 1, 0),), f"V{w}", buffer=buf, strides=(1,))
    return view[pos].view(dtype)


PCAP_RECORD = {o: layout([("sec", 0, "u4"), ("frac", 4, "u4"), ("caplen", 8, "u4"),
                          ("origlen", 12, "u4")], o) for o in "<>"}
PCAPNG_EPB_LAYOUT = {o: layout([("length", 4, "u4"), ("interface", 8, "u4"),
                                ("ts_high", 12, "u4"), ("ts_low", 16, "u4"),
                                ("caplen", 20, "u4"), ("origlen", 24, "u4")], o)
                     for o in "<>"}
PCAPNG_TRAILER = {o: layout([("length", 4, "u4")], o) for o in "<>"}  # at block end - 8


class CaptureError(Exception):
    """Input that is not a readable capture (one-line, user-facing message)."""


@dataclass(eq=False)
class PacketBatch:
    """Frames of one batch, in file order; offsets are absolute positions in `buf`."""

    buf: object
    time: np.ndarray  # float64 seconds since the epoch
    data_off: np.ndarray  # int64
    caplen: np.ndarray  # int64
    origlen: np.ndarray  # int64
    linktype: np.ndarray  # int32

    def __len__(self):
        return len(self.time)


def _describe_start(head):
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in head)
    hexes = " ".join(f"{b:02x}" for b in head)
    hint = " (gzip-compressed: decompress it first)" if head[:2] == b"\x1f\x8b" else ""
    return f"starts with {hexes} '{text}'{hint}"


def _truncated(warnings, at, have, need):
    warnings.append(f"capture truncated at byte {at}: last record incomplete "
                    f"({have} of {need} bytes)")


def _corrupt(warnings, at, what, resumed=None):
    if resumed is None:
        warnings.append(f"corrupt record at byte {at}: {what}; no valid record follows "
                        f"within {RESYNC_WINDOW >> 20} MiB: reading stopped there")
    else:
        warnings.append(f"corrupt record at byte {at}: {what}; skipped "
                        f"{resumed - at} bytes, reading resumed at byte {resumed}")


# ------------------------------------------------------------------------- pcap
def _pcap_header(head, name):
    """(byte order, timestamp scale, record header length, snaplen, linktype)."""
    if len(head) < 4:
        raise CaptureError(f"{name}: not a capture file: only {len(head)} bytes")
    for order in "<>":
        magic = U32[order].unpack_from(head)[0]
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS, PCAP_MAGIC_MODIFIED):
            break
    else:
        return None
    if len(head) < PCAP_HEADER_LEN:
        raise CaptureError(f"{name}: truncated pcap header ({len(head)} of "
                           f"{PCAP_HEADER_LEN} bytes)")
    snaplen, network = struct.unpack_from(order + "II", head, 16)
    scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
    rec = PCAP_MODIFIED_RECORD_LEN if magic == PCAP_MAGIC_MODIFIED else PCAP_RECORD_LEN
    return order, scale, rec, snaplen, network & PCAP_LINKTYPE_MASK


def _walk_pcap(buf, off, end, max_packets, caplen_at, rec_len):
    """Walk records from `off`: (positions of their caplen fields, offset after the
    last record).

    The hot loop.  It only checks that a record header starts inside the buffer; the
    caller checks the last record's end and the lengths, vectorised.
    """
    offs = array("q")  # offsets of the caplen fields, to save an addition a record
    append = offs.append
    unpack = caplen_at.unpack_from
    pos = off + PCAP_CAPLEN_AT
    lim = end - rec_len + PCAP_CAPLEN_AT
    for _ in range(max_packets):
        if pos > lim:
            break
        append(pos)
        pos += rec_len + unpack(buf, pos)[0]
    return offs, pos - PCAP_CAPLEN_AT


def _pcap_columns(buf, offs, order, rec_len, scale, linktype):
    """Gather the record header fields (`offs` from `_walk_pcap`); returns a batch."""
    o = np.frombuffer(offs, np.int64) - PCAP_CAPLEN_AT if len(offs) else np.zeros(0, np.int64)
    rec = gather(buf, o, PCAP_RECORD[order])
    return PacketBatch(buf, rec["sec"] + rec["frac"] * scale, o + rec_len,
                       rec["caplen"].astype(np.int64), rec["origlen"].astype(np.int64),
                       np.full(len(o), linktype, np.int32))


def _first_bad_caplen(batch):
    bad = np.flatnonzero(batch.caplen > MAX_CAPLEN)
    return int(bad[0]) if len(bad) else None


def _cut(batch, n):
    return PacketBatch(batch.buf, batch.time[:n], batch.data_off[:n], batch.caplen[:n],
                       batch.origlen[:n], batch.linktype[:n])


class CaptureFile:
    """A memory-mapped pcap or pcapng file; see `open_capture`."""

    def __init__(self, path, mm, size):
        self.path = os.fspath(path)
        self._mm = mm
        self.size = size
        self.warnings = []
        head = mm[:PCAP_HEADER_LEN]
        name = os.path.basename(self.path)
        pcap = _pcap_header(head, name)
        if pcap is not None:
            self.format = "pcap"
            self._order, self._scale, self._rec_len, self.snaplen, self.linktype = pcap
        elif head[:4] == PCAPNG_SHB.to_bytes(4, "big"):
            self.format = "pcapng"
            if size < PCAPNG_SHB_MIN_LEN:
                raise CaptureError(f"{name}: truncated pcapng section header ({size} of "
                                   f"{PCAPNG_SHB_MIN_LEN} bytes)")
            if U32["<"].unpack_from(head, 8)[0] not in (PCAPNG_BYTE_ORDER_MAGIC,
                                                        _swap32(PCAPNG_BYTE_ORDER_MAGIC)):
                raise CaptureError(f"{name}: pcapng section header without byte-order "
                                   f"magic ({_describe_start(head[8:12])})")
        else:
            raise CaptureError(f"{name}: not a pcap or pcapng file: "
                               f"{_describe_start(head[:8])}")
        self.buf = memoryview(mm)

    def batches(self, max_packets=DEFAULT_MAX_PACKETS):
        """Yield `PacketBatch`es of at most `max_packets` frames, in file order."""
        if self.format == "pcap":
            return self._pcap_batches(max_packets)
        return _PcapngWalk(self, max_packets).batches()

    def _pcap_batches(self, max_packets):
        caplen_at = U32[self._order]
        off, end, rec = PCAP_HEADER_LEN, self.size, self._rec_len
        last_time = None  # of the last good record: what a resynchronised one is near
        while off < end:
            offs, nxt = _walk_pcap(self._mm, off, end, max_packets, caplen_at, rec)
            batch = _pcap_columns(self.buf, offs, self._order, rec, self._scale,
                                  self.linktype)
            bad = _first_bad_caplen(batch)
            if bad is not None:
                at = int(batch.data_off[bad]) - rec
                if bad:
                    yield _cut(batch, bad)
                if bad:
                    last_time = float(batch.time[bad - 1])
                resumed = self._resync_pcap(at + 1, last_time)
                _corrupt(self.warnings, at, f"caplen {int(batch.caplen[bad])} exceeds "
                                            f"{MAX_CAPLEN}", resumed)
                if resumed is None:
                    return
                off = resumed
                continue
            stop = True
            if nxt > end:  # the last record runs past the end of the file
                last = offs[-1] - PCAP_CAPLEN_AT
                _truncated(self.warnings, last, end - last, nxt - last)
                batch = _cut(batch, len(offs) - 1)
            elif nxt < end and len(offs) < max_packets:  # a partial record header
                _truncated(self.warnings, nxt, end - nxt, rec)
            else:
                stop = False
            if len(batch):
                last_time = float(batch.time[-1])
                yield batch
            if stop:
                return
            off = nxt

    def _plausible(self, pos: int, last_sec: int | None) -> bool:
        """Could a pcap record header start at ``pos``?  (lengths, timestamp)"""
        if pos + self._rec_len > self.size:
            return False
        sec, frac, caplen, origlen = struct.unpack_from(self._order + "IIII", self._mm, pos)
        limit = 1_000_000_000 if self._scale < 1e-6 else 1_000_000
        return (frac < limit and caplen <= origlen <= RESYNC_MAX_FRAME and caplen > 0
                and pos + self._rec_len + caplen <= self.size
                and (last_sec is None or abs(sec - last_sec) <= RESYNC_MAX_SKEW))

    def _resync_pcap(self, start: int, last_time: float | None) -> int | None:
        """The first offset after ``start`` where two plausible record headers follow
        each other (or one ends exactly at the end of the file), else None.

        Only positions whose seconds field is near the last good timestamp are tried,
        found with numpy over each 4-byte alignment, so a long scan stays fast.
        """
        # without a timestamp to match every position is a candidate: look less far
        end = min(self.size, start + (RESYNC_WINDOW if last_time is not None else 1 << 20))
        if end - start < self._rec_len:
            return None
        window = np.frombuffer(self._mm, np.uint8, end - start, start)
        u32 = np.dtype(np.uint32).newbyteorder(self._order)
        cands = []
        for k in range(4):
            n = (len(window) - k) // 4
            secs = window[k:k + 4 * n].view(u32)
            if last_time is None:
                hits = np.arange(n)
            else:
                hits = np.flatnonzero(np.abs(secs.astype(np.int64) - int(last_time))
                                      <= RESYNC_MAX_SKEW)
            cands.append(start + k + 4 * hits)
        last_sec = None if last_time is None else int(last_time)
        for pos in np.sort(np.concatenate(cands)).tolist():
            if not self._plausible(pos, last_sec):
                continue
            nxt = pos + self._rec_len + U32[self._order].unpack_from(self._mm, pos + 8)[0]
            if nxt == self.size or self._plausible(nxt, last_sec):
                return pos
        return None

    def close(self):
        try:
            self.buf.release()
            self._mm.close()
        except BufferError:  # arrays still view the map: the GC closes it later
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _swap32(x):
    return int.from_bytes(x.to_bytes(4, "little"), "big")


def open_capture(path) -> CaptureFile:
    """Open and memory-map a pcap or pcapng file; `CaptureError` if it is not one."""
    name = os.path.basename(os.fspath(path))
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise CaptureError(f"{name}: empty file")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise CaptureError(f"{name}: cannot read: {e.strerror}") from e
    if hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_SEQUENTIAL)
    try:
        return CaptureFile(path, mm, size)
    except CaptureError:
        mm.close()
        raise


# ----------------------------------------------------------------------- pcapng
class _Interface:
    __slots__ = ("linktype", "snaplen", "ticks", "offset")

    def __init__(self, linktype, snaplen, ticks, offset):
        self.linktype, self.snaplen, self.ticks, self.offset = linktype, snaplen, ticks, offset


def _tsresol_ticks(value):
    """Timestamp units per second for an if_tsresol byte; None when out of range.

    The byte can say up to 10**127 or 2**127 units a second, but timestamps are
    64-bit and the per-batch conversion divides in uint64: a resolution no 64-bit
    tick count can express is a corrupt option, not something to overflow on.
    """
    exp = value & ~PCAPNG_TSRESOL_POW2
    ticks = 2 ** exp if value & PCAPNG_TSRESOL_POW2 else 10 ** exp
    return ticks if ticks <= MAX_TSRESOL_TICKS else None


class _PcapngWalk:
    """State of one pass over a pcapng file (byte order and interfaces per section).

    A batch never spans two sections, so the byte order and the interface table are
    fixed within a batch.  EPBs go through the hot loop; every other block is handled
    one at a time.  Simple and obsolete packet blocks become rows whose fields were
    computed by the slow path (`extra`).
    """

    def __init__(self, cap, max_packets):
        self.cap, self.mm, self.end = cap, cap._mm, cap.size
        self.max_packets = max_packets
        self.warnings = cap.warnings
        self.off = 0
        self.order = None
        self.ifaces = []
        self.done = False
        self.last_time = 0.0  # simple packet blocks carry no timestamp: reuse it

    def batches(self):
        while not self.done:
            batch = self._batch()
            if batch is not None and len(batch):
                yield batch

    def _batch(self):
        offs = array("q")
        extra = []  # (row, time, data_off, caplen, origlen, interface)
        mm, end, maxn = self.mm, self.end, self.max_packets
        off = self.off
        while len(offs) < maxn:
            if self.order is not None:
                unpack = BLOCK_HEADER[self.order].unpack_from
                append = offs.append
                lim = end - 8
                for _ in range(maxn - len(offs)):  # hot loop: a run of EPBs
                    if off > lim:
                        break
                    btype, blen = unpack(mm, off)
                    if btype != PCAPNG_EPB or blen < PCAPNG_EPB_HEADER_LEN + 4:
                        break
                    append(off)
                    off += blen
                else:
                    break  # batch full
                if off > end:  # the last EPB runs past the end of the file
                    last = offs.pop()
                    _truncated(self.warnings, last, end - last, off - last)
                    self.done = True
                    break
            if off >= end:
                self.done = True
                break
            if end - off < 8:
                _truncated(self.warnings, off, end - off, 8)
                self.done = True
                break
            if mm[off:off + 4] == PCAPNG_SHB.to_bytes(4, "big") and offs:
                break  # a new section starts a new batch
            nxt = self._block(off, offs, extra)
            if nxt is None:
                self.done = True
                break
            off = nxt
        self.off = off
        return self._columns(offs, extra)

    def _block(self, off, offs, extra):
        """Handle one non-EPB block; return the next offset or None to stop."""
        mm, end = self.mm, self.end
        if mm[off:off + 4] == PCAPNG_SHB.to_bytes(4, "big"):
            if end - off < 12:
                _truncated(self.warnings, off, end - off, PCAPNG_SHB_MIN_LEN)
                return None
            bom = U32["<"].unpack_from(mm, off + 8)[0]
            if bom not in (PCAPNG_BYTE_ORDER_MAGIC, _swap32(PCAPNG_BYTE_ORDER_MAGIC)):
                _corrupt(self.warnings, off, "section header without byte-order magic")
                return None
            self.order = "<" if bom == PCAPNG_BYTE_ORDER_MAGIC else ">"
            self.ifaces = []
        elif self.order is None:
            _corrupt(self.warnings, off, "no section header block")
            return None
        btype, blen = BLOCK_HEADER[self.order].unpack_from(mm, off)
        if blen < PCAPNG_BLOCK_OVERHEAD or blen % 4:
            _corrupt(self.warnings, off, f"block length {blen}")
            return None
        if off + blen > end:
            _truncated(self.warnings, off, end - off, blen)
            return None
        if U32[self.order].unpack_from(mm, off + blen - 4)[0] != blen:
            _corrupt(self.warnings, off, "trailing block length differs")
            return None
        o = self.order
        if btype == PCAPNG_SHB and blen < PCAPNG_SHB_MIN_LEN:
            _corrupt(self.warnings, off, f"section header length {blen}")
            return None
        if btype == PCAPNG_IDB:
            if blen < PCAPNG_IDB_MIN_LEN:
                _corrupt(self.warnings, off, f"interface block length {blen}")
                return None
            linktype, snaplen = struct.unpack_from(o + "H2xI", mm, off + 8)
            ticks, offset = 10 ** PCAPNG_DEFAULT_TSRESOL, 0
            for code, value in self._options(off + 16, off + blen - 4):
                if code == PCAPNG_OPT_IF_TSRESOL and value:
                    if _tsresol_ticks(value[0]) is None:
                        self.warnings.append(
                            f"interface {len(self.ifaces)} at byte {off}: if_tsresol "
                            f"0x{value[0]:02x} out of range; timestamps read in microseconds")
                    else:
                        ticks = _tsresol_ticks(value[0])
                elif code == PCAPNG_OPT_IF_TSOFFSET and len(value) == 8:
                    offset = struct.unpack(o + "q", value)[0]
            self.ifaces.append(_Interface(linktype, snaplen, ticks, offset))
        elif btype == PCAPNG_EPB:  # too short to hold its own header
            _corrupt(self.warnings, off, f"packet block length {blen}")
            return None
        elif btype == PCAPNG_SPB:
            if not self.ifaces or blen < PCAPNG_SPB_HEADER_LEN + 4:
                _corrupt(self.warnings, off, "simple packet block without interface")
                return None
            origlen = U32[o].unpack_from(mm, off + 8)[0]
            caplen = min(origlen, blen - PCAPNG_SPB_HEADER_LEN - 4)
            if self.ifaces[0].snaplen:
                caplen = min(caplen, self.ifaces[0].snaplen)
            extra.append((len(offs), np.nan, off + PCAPNG_SPB_HEADER_LEN, caplen, origlen, 0))
            offs.append(off)
        elif btype == PCAPNG_OPB:
            if blen < PCAPNG_OPB_HEADER_LEN + 4:
                _corrupt(self.warnings, off, f"packet block length {blen}")
                return None
            ifid, hi, lo, caplen, origlen = struct.unpack_from(o + "H2xIIII", mm, off + 8)
            if ifid >= len(self.ifaces) or caplen > blen - PCAPNG_OPB_HEADER_LEN - 4:
                _corrupt(self.warnings, off, "obsolete packet block fields")
                return None
            iface = self.ifaces[ifid]
            sec, frac = divmod((hi << 32) | lo, iface.ticks)
            extra.append((len(offs), sec + frac / iface.ticks + iface.offset,
                          off + PCAPNG_OPB_HEADER_LEN, caplen, origlen, ifid))
            offs.append(off)
        return off + blen  # other blocks (NRB, ISB, DSB, custom...) are skipped

    def _options(self, off, end):
        mm, o = self.mm, self.order
        while off + 4 <= end:
            code, length = struct.unpack_from(o + "HH", mm, off)
            if code == 0 or off + 4 + length > end:
                return
            yield code, bytes(mm[off + 4:off + 4 + length])
            off += 4 + (length + 3) // 4 * 4

    def _columns(self, offs, extra):
        n = len(offs)
        if n == 0:
            return None
        o = np.frombuffer(offs, np.int64)
        epb = gather(self.mm, o, PCAPNG_EPB_LAYOUT[self.order])
        ifid = epb["interface"].astype(np.int64)
        ts = (epb["ts_high"].astype(np.uint64) << np.uint64(32)) | epb["ts_low"]
        caplen = epb["caplen"].astype(np.int64)
        origlen = epb["origlen"].astype(np.int64)
        blen = epb["length"].astype(np.int64)
        data_off = o + PCAPNG_EPB_HEADER_LEN
        is_epb = np.ones(n, bool)
        if extra:
            rows = np.array([e[0] for e in extra])
            is_epb[rows] = False
            ifid[rows] = [e[5] for e in extra]
            data_off[rows] = [e[2] for e in extra]
            caplen[rows] = [e[3] for e in extra]
            origlen[rows] = [e[4] for e in extra]
        nif = len(self.ifaces)
        bad = is_epb & ((ifid >= nif) | (caplen > blen - PCAPNG_EPB_HEADER_LEN - 4))
        bad |= caplen > MAX_CAPLEN
        trailer = np.minimum(o + blen, self.end) - PCAPNG_TRAILER[self.order].itemsize
        bad |= is_epb & (gather(self.mm, trailer, PCAPNG_TRAILER[self.order])["length"] != blen)
        bad |= is_epb & (blen % 4 != 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            _corrupt(self.warnings, int(o[first]), "enhanced packet block fields")
            self.done = True
            n = first
            o, ifid, ts, caplen, origlen, data_off, is_epb = (
                a[:n] for a in (o, ifid, ts, caplen, origlen, data_off, is_epb))
            if n == 0:
                return None
        ticks = np.array([i.ticks for i in self.ifaces] or [1], np.uint64)[ifid]
        shift = np.array([i.offset for i in self.ifaces] or [0], np.float64)[ifid]
        time = (ts // ticks).astype(np.float64) + (ts % ticks) / ticks.astype(np.float64)
        time += shift
        for row, t, *_ in extra:
            if row >= n:
                break
            if np.isnan(t):  # a simple packet block: time of the previous packet
                t = time[row - 1] if row else self.last_time
            time[row] = t
        self.last_time = float(time[-1])
        linktype = np.array([i.linktype for i in self.ifaces] or [0], np.int32)[ifid]
        return PacketBatch(self.cap.buf, time, data_off, caplen, origlen, linktype)


# ----------------------------------------------------------------- live (pipes)
class PcapStreamReader:
    """Read a pcap stream (``tcpdump -w -``) from a pipe, incrementally.

    Each batch's `buf` is that chunk's own `bytes`; a record cut by a chunk boundary
    is carried over to the next chunk.
    """

    def __init__(self, fileobj, chunk_size=STREAM_CHUNK):
        self.fileobj = fileobj
        self.chunk_size = chunk_size
        self.warnings = []
        self.format = "pcap"
        self.linktype = None
        self.snaplen = None
        self._read = getattr(fileobj, "read1", fileobj.read)

    def _read_exactly(self, n):
        data = b""
        while len(data) < n:
            more = self._read(n - len(data))
            if not more:
                break
            data += more
        return data

    def batches(self, max_packets=DEFAULT_MAX_PACKETS):
        head = self._read_exactly(PCAP_HEADER_LEN)
        if not head:
            raise CaptureError("capture stream: empty")
        hdr = _pcap_header(head, "capture stream")
        if hdr is None:
            kind = "pcapng streams are not supported" if head[:4] == PCAPNG_SHB.to_bytes(
                4, "big") else "not a pcap stream"
            raise CaptureError(f"capture stream: {kind}: {_describe_start(head[:8])}")
        order, scale, rec, self.snaplen, self.linktype = hdr
        caplen_at = U32[order]
        carry = b""
        pos = PCAP_HEADER_LEN  # stream position of the chunk's first byte
        while True:
            data = self._read(self.chunk_size)
            if not data:
                if carry:
                    need = rec + (caplen_at.unpack_from(carry, PCAP_CAPLEN_AT)[0]
                                  if len(carry) >= rec else 0)
                    _truncated(self.warnings, pos, len(carry), max(need, rec))
                return
            chunk = carry + data if carry else data
            off, end = 0, len(chunk)
            while True:
                offs, nxt = _walk_pcap(chunk, off, end, max_packets, caplen_at, rec)
                if nxt > end:  # the last record continues in the next chunk
                    nxt = offs.pop() - PCAP_CAPLEN_AT
                batch = _pcap_columns(chunk, offs, order, rec, scale, self.linktype)
                bad = _first_bad_caplen(batch)
                if bad is None and end - nxt >= rec and caplen_at.unpack_from(
                        chunk, nxt + PCAP_CAPLEN_AT)[0] > MAX_CAPLEN:
                    bad = len(batch)  # the carried-over record is the corrupt one
                if bad is not None:
                    at = (int(batch.data_off[bad]) - rec) if bad < len(batch) else nxt
                    _corrupt(self.warnings, pos + at, f"caplen exceeds {MAX_CAPLEN}")
                    if bad:
                        yield _cut(batch, bad)
                    return
                if len(batch):
                    yield batch
                off = nxt
                if len(offs) < max_packets:
                    break
            carry = chunk[off:]
            pos += off
