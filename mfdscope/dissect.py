"""Reassembled TCP streams in, multifd records out: the driver around the parser.

`Dissector` is the sink of `capture.tcp.Reassembler`: it classifies each
client-to-server stream by its first bytes (spec 1.4) and drives one sans-IO
`ChannelParser` per multifd stream and one `MainChannelParser` per main stream
(its events become ``main_rows``, the ``main`` DataFrame).  Page data is skipped span by span: the parser
says how many bytes it will not look at and the driver jumps over whole TCP
segments with a bisection, so Python runs per record, not per segment.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np

from . import wire
from .events import DeviceStatePacket, Expert, InitPacket, RamPacket
from .mainchannel import MainChannelParser
from .parse import ChannelParser

#: bytes needed to tell an initial packet from a packet header on a stream whose
#: handshake was not captured
_PREFIX_LEN = wire.INIT.size


_MIGRATION_ROLES = (wire.Role.MAIN, wire.Role.MULTIFD)


class StreamState:
    """What the dissector knows of one client-to-server stream."""

    __slots__ = ("stream", "role", "parser", "prefix", "prefix_start", "channel_id", "uuid", "records",
                 "counts", "normal_pages", "zero_pages", "resyncs", "opaque_row")

    def __init__(self, stream):
        self.stream = stream
        self.role: wire.Role | None = None
        self.parser: ChannelParser | None = None
        self.prefix = bytearray()  # first bytes, kept until the role is known
        self.prefix_start = 0
        self.channel_id: int | None = None
        self.uuid: bytes | None = None
        self.records = 0
        self.counts = {"init": 0, "ram": 0, "sync": 0, "device_state": 0}
        self.normal_pages = 0
        self.zero_pages = 0
        self.resyncs = 0
        self.opaque_row: int | None = None  # index in Dissector.main_rows


class Dissector:
    """Reassembler sink that turns multifd streams into records.

    ``on_record(state, event)`` and ``on_expert(state, event)`` are called for every
    event; the default collects rows for the DataFrames (`mfdscope.frames`).
    """

    def __init__(self, page_size: int | None = None, decompress: bool = False,
                 bin_seconds: float = 0.001):
        self.page_size = page_size
        self.decompress = decompress
        self.states: dict = {}
        self.timeline = Timeline(bin_seconds)
        self.flows: dict = {}  # Connection -> flow number, in order of appearance
        self.ends: dict = {}  # Stream -> how it ended
        self.packet_rows: list[tuple] = []
        self.expert_rows: list[tuple] = []
        self._main_rows: list[tuple] = []

    # ------------------------------------------------------------------ sink API
    def on_stream(self, stream) -> None:
        self.flows.setdefault(stream.conn, len(self.flows))
        # Both directions: without a captured SYN the reassembler guesses the client
        # from the ports, and a migration port above the ephemeral range would put the
        # migration in the server-to-client stream.
        self.states[stream] = StreamState(stream)

    def on_spans(self, stream, buf, spans) -> None:
        st = self.states.get(stream)
        if st is None or len(spans) == 0:
            return
        if stream.direction == "s2c" and (stream.syn_seen or stream.peer.syn_seen):
            del self.states[stream]  # a known server's replies: the return path
            return
        if st.role is None:
            classified = self._classify(st, buf, spans)
            self._add_timeline(st, spans)
            if classified is None:
                return
            spans = classified
        else:
            self._add_timeline(st, spans)
        if st.parser is not None:
            self._drive(st, buf, spans)

    def _add_timeline(self, st: StreamState, spans) -> None:
        """Wire bytes of the stream that carries the connection's data (client to
        server, or the other way when a capture without handshake says so)."""
        if st.stream.direction == "c2s" or st.role in _MIGRATION_ROLES \
                or st.role is None:
            self.timeline.add(self.flows[st.stream.conn], spans)

    def primary(self, conn):
        """``(stream, reverse stream, state)`` of the direction that carries the
        migration: client to server, unless only the other direction parsed as one."""
        fwd, rev = conn.c2s, conn.s2c
        st, alt = self.states.get(fwd), self.states.get(rev)
        if (st is None or st.role not in _MIGRATION_ROLES) and alt is not None \
                and alt.role in _MIGRATION_ROLES:
            return rev, fwd, alt
        return fwd, rev, st

    def on_hole(self, stream, stream_off, length, time, reason) -> None:
        st = self.states.get(stream)
        if st is None:
            return
        if st.role is None:
            # the first bytes are gone: decide on what we have
            self._decide(st, float(time), hole=True)
        if st.parser is not None:
            self._handle(st, st.parser.feed_hole(int(length), float(time)))

    def on_end(self, stream, time, how) -> None:
        self.ends[stream] = how
        st = self.states.get(stream)
        if st is None:
            return
        if st.role is None:
            self._decide(st, float(time))
        if st.parser is not None:
            self._handle(st, st.parser.end(float(time)))

    # ------------------------------------------------------------------ classification
    def _classify(self, st: StreamState, buf, spans):
        """Collect the stream's first bytes; return the spans still to parse, or None."""
        if not st.prefix:
            st.prefix_start = int(spans["stream_off"][0])
        need = _PREFIX_LEN - len(st.prefix)
        for i in range(len(spans)):
            off, length = int(spans["buf_off"][i]), int(spans["length"][i])
            take = min(need, length)
            st.prefix += buf[off:off + take]
            need -= take
            if need == 0:
                break
        else:
            return None  # fewer bytes than needed so far: wait for more
        self._decide(st, float(spans["time"][i]))
        if st.parser is None:
            return None
        # the parser has been fed the prefix; trim it off the remaining spans
        rest = spans[i:].copy()
        cut = st.prefix_start + _PREFIX_LEN - int(rest["stream_off"][0])
        rest["buf_off"][0] += cut
        rest["stream_off"][0] += cut
        rest["length"][0] -= cut
        if rest["length"][0] == 0:
            rest = rest[1:]
        return rest if len(rest) else None

    def _decide(self, st: StreamState, t: float, hole: bool = False) -> None:
        """Pick the role from the prefix and start a parser for multifd streams."""
        prefix = bytes(st.prefix)
        role = wire.classify_prefix(prefix) or wire.Role.UNKNOWN
        start = None
        if role == wire.Role.MULTIFD:
            start = "init" if st.stream.syn_seen or _looks_like_init(prefix) else "resync"
        elif role == wire.Role.UNKNOWN and not st.stream.syn_seen and prefix:
            start = "resync"  # a capture that began mid-stream: look for headers
        st.role = role
        if role == wire.Role.MAIN:
            st.parser = MainChannelParser(self.page_size)
            self._handle(st, st.parser.feed(prefix, t))
        elif start is not None:
            st.parser = ChannelParser(self.page_size, decompress=self.decompress, start=start)
            if prefix:
                self._handle(st, st.parser.feed(prefix, t))
        st.prefix = bytearray()

    # ------------------------------------------------------------------ parsing
    def _drive(self, st: StreamState, buf, spans) -> None:
        parser = st.parser
        stream_off = spans["stream_off"].tolist()
        buf_off = spans["buf_off"].tolist()
        length = spans["length"].tolist()
        times = spans["time"].tolist()
        n = len(length)
        ends = None
        i, inner = 0, 0  # current span and position inside it
        while i < n:
            skip = parser.skippable
            if skip:
                avail = length[i] - inner
                if skip < avail:
                    self._handle(st, parser.skip(skip, times[i]))
                    inner += skip
                    continue
                if ends is None:
                    ends = [a + b for a, b in zip(stream_off, length)]
                target = stream_off[i] + inner + skip  # first byte after the skipped run
                last = bisect_right(ends, target - 1)  # span holding the last skipped byte
                if last >= n:
                    remaining = ends[-1] - (stream_off[i] + inner)
                    self._handle(st, parser.skip(remaining, times[-1]))
                    return
                self._handle(st, parser.skip(skip, times[last]))
                i, inner = last, target - stream_off[last]
                if inner >= length[i]:
                    i, inner = i + 1, 0
                continue
            start = buf_off[i] + inner
            self._handle(st, parser.feed(buf[start:buf_off[i] + length[i]], times[i]))
            i, inner = i + 1, 0

    def _handle(self, st: StreamState, events: list) -> None:
        for ev in events:
            if isinstance(ev, Expert):
                self.expert_rows.append((ev.severity, ev.group, self.flows[st.stream.conn],
                                         ev.offset, ev.t, ev.message))
                continue
            if st.role == wire.Role.MAIN:
                if ev.kind == "opaque":
                    st.opaque_row = len(self._main_rows)
                self._main_rows.append(_main_row(self.flows[st.stream.conn], ev))
                continue
            kind = ev.kind
            if kind == "init":
                st.channel_id = ev.channel_id
                st.uuid = ev.uuid
            elif kind == "resync":
                st.resyncs += 1
                if st.role == wire.Role.UNKNOWN:
                    st.role = wire.Role.MULTIFD
                continue
            elif kind == "hole":
                continue
            st.records += 1
            st.counts[kind] += 1
            self.packet_rows.append(_packet_row(self.flows[st.stream.conn], st, ev))
            if kind in ("ram", "sync"):
                st.normal_pages += ev.normal_pages
                st.zero_pages += ev.zero_pages


    @property
    def main_rows(self) -> list[tuple]:
        """Rows of the ``main`` DataFrame; an ``opaque`` row carries the bytes counted
        after it so far."""
        rows = list(self._main_rows)
        for st in self.states.values():
            if st.opaque_row is not None and isinstance(st.parser, MainChannelParser):
                row = rows[st.opaque_row]
                rows[st.opaque_row] = row[:_UNPARSED] + (st.parser.unparsed,) \
                    + row[_UNPARSED + 1:]
        return rows


class Timeline:
    """TCP payload and frame bytes per flow per fixed time bin.

    Records tell what multifd carried; this tells what the wire carried, headers
    included, at segment resolution, without keeping one row per segment.  Memory is
    bounded too: at most ``max_bins`` bins per flow; a longer capture doubles the bin
    width (bins stay whole multiples of it in absolute time, as analyses assume).
    """

    def __init__(self, bin_seconds: float, max_bins: int = 1 << 16):
        self.bin_seconds = bin_seconds
        self.max_bins = max_bins
        self.first = None  # absolute index of bin 0 (time = index * bin_seconds)
        self.flows: dict[int, np.ndarray] = {}  # flow -> (3, n): payload, frame, segments

    def add(self, flow: int, spans) -> None:
        t = spans["time"]
        idx = np.floor_divide(t, self.bin_seconds).astype(np.int64)
        lo = int(idx.min())
        if self.first is None:
            self.first = lo
        elif lo < self.first:  # capture timestamps are not always in order
            self._grow_front(self.first - lo)
        rel = idx - self.first
        while int(rel.max()) >= self.max_bins:
            self._coarsen()
            idx = np.floor_divide(t, self.bin_seconds).astype(np.int64)
            rel = idx - self.first
        need = int(rel.max()) + 1
        arr = self.flows.get(flow)
        if arr is None or arr.shape[1] < need:
            cap = min(self.max_bins, max(need, 2 * (0 if arr is None else arr.shape[1]), 64))
            grown = np.zeros((3, cap), np.int64)
            if arr is not None:
                grown[:, :arr.shape[1]] = arr
            self.flows[flow] = arr = grown
        n = arr.shape[1]
        arr[0] += np.bincount(rel, weights=spans["length"], minlength=n).astype(np.int64)
        arr[1] += np.bincount(rel, weights=spans["wire_len"], minlength=n).astype(np.int64)
        arr[2] += np.bincount(rel, minlength=n)

    def _grow_front(self, k: int) -> None:
        self.first -= k
        for flow, arr in self.flows.items():
            self.flows[flow] = np.concatenate([np.zeros((3, k), np.int64), arr], axis=1)
        while any(a.shape[1] > self.max_bins for a in self.flows.values()):
            self._coarsen()

    def _coarsen(self) -> None:
        """Double the bin width, keeping bins aligned to multiples of the new width."""
        pad_front = self.first % 2
        self.first = (self.first - pad_front) // 2
        self.bin_seconds *= 2
        for flow, arr in self.flows.items():
            width = arr.shape[1] + pad_front
            a = np.zeros((3, width + width % 2), np.int64)
            a[:, pad_front:pad_front + arr.shape[1]] = arr
            self.flows[flow] = a.reshape(3, -1, 2).sum(axis=2)

    def rows(self) -> list[tuple]:
        out = []
        for flow in sorted(self.flows):
            arr = self.flows[flow]
            for i in np.flatnonzero(arr[2]).tolist():
                p, f, n = arr[:, i].tolist()
                out.append((flow, (self.first + i) * self.bin_seconds, p, f, n))
        return out


def _looks_like_init(prefix: bytes) -> bool:
    """An initial packet has zero reserved bytes where a header has counters."""
    return (len(prefix) >= _PREFIX_LEN and prefix[:8] == wire.HEADER_PREFIX
            and not any(prefix[25:_PREFIX_LEN]))


def _packet_row(flow: int, st: StreamState, ev) -> tuple:
    channel = st.channel_id
    if isinstance(ev, InitPacket):
        return (flow, channel, "init", ev.offset, ev.t_start, ev.t_end, ev.wire_len,
                None, None, None, None, None, None, None, None, None, None, None, None,
                None, None, None, None, None)
    if isinstance(ev, RamPacket):
        comp = wire.compression_of(ev.flags)
        comp_label = wire.compression_label(comp)
        return (flow, channel, ev.kind, ev.offset, ev.t_start, ev.t_end, ev.wire_len,
                ev.flags, wire.flag_names(ev.flags), comp_label, ev.packet_num,
                ev.pages_alloc, ev.normal_pages, ev.zero_pages, ev.next_packet_size,
                ev.payload_len, ev.ramblock, None, None, None, None, None,
                ev.missing_bytes, ev.decompressed_len)
    assert isinstance(ev, DeviceStatePacket)
    return (flow, channel, "device_state", ev.offset, ev.t_start, ev.t_end, ev.wire_len,
            ev.flags, wire.flag_names(ev.flags), "none", None, None, None, None,
            ev.next_packet_size, ev.next_packet_size, None, ev.idstr, ev.instance_id,
            ev.vfio_version, ev.vfio_idx, ev.vfio_flags, ev.missing_bytes, None)



#: index of ``unparsed_bytes`` in a main row (frames.MAIN_COLUMNS)
_UNPARSED = 15


def _main_row(flow: int, ev) -> tuple:
    """One row of frames.MAIN_COLUMNS from a main-channel event."""
    kind = ev.kind
    wire_len = getattr(ev, "wire_len", None)
    sec_type = sec_id = idstr = inst = ver = cmd = cmd_name = cmd_len = None
    zero = normal = total = blocks = unparsed = detail = None
    if kind == "header":
        wire_len = wire.QEVM_HEADER.size
        detail = f"version {ev.version}"
    elif kind == "configuration":
        detail = ev.machine
        if ev.subsections:
            detail += " (" + ", ".join(ev.subsections) + ")"
    elif kind == "section":
        sec_type, sec_id, idstr = ev.type_name, ev.section_id, ev.idstr
        inst, ver = ev.instance_id, ev.version_id
        # START/FULL: type, id, idstr length + idstr, instance, version; PART/END: type, id
        wire_len = 14 + len(idstr.encode("utf-8", "surrogateescape")) if ver is not None else 5
    elif kind == "command":
        cmd, cmd_name, cmd_len = ev.cmd, ev.name, ev.length
        wire_len = 5 + ev.length
    elif kind == "mem_size":
        total = ev.total
        blocks = " ".join(f"{b.name}:0x{b.used_length:x}" for b in ev.blocks)
    elif kind == "pages":
        sec_id, zero, normal = ev.section_id, ev.zero_pages, ev.normal_pages
    elif kind in ("flush", "eos"):
        sec_id, wire_len = ev.section_id, 8
    elif kind == "eof":
        wire_len = 1
    elif kind == "opaque":
        sec_id, idstr, detail, unparsed = ev.section_id, ev.idstr, ev.reason, 0
    row = (flow, kind, ev.offset, ev.t, wire_len, sec_type, sec_id, idstr, inst, ver, cmd,
           cmd_name, cmd_len, zero, normal, unparsed, total, blocks, detail)
    return row
