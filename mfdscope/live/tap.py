"""Exact byte streams in (a relay's sockets), the reassembler's sink calls out.

A relay receives each direction of a connection as an ordered, complete byte
stream: no reassembly is needed.  `StreamTap` plays the part of
`mfdscope.capture.tcp.Reassembler` towards the sink (a `mfdscope.dissect.Dissector`):
it creates the same `Connection` / `Stream` objects, keeps their counters, and calls
``on_stream`` / ``on_spans`` / ``on_end`` with spans over the received bytes (see
docs/internals.md).  Each chunk is cut into the TCP segments a capture file of the
relay would hold, so that the live figures and those of the file written with
``--write`` (synthesised frames through `PcapWriter`, real timestamps) are the same.
"""
from __future__ import annotations

import ipaddress
import threading
import time

import numpy as np

from ..capture.decode import COUNTERS, IPV4_MAPPED_PREFIX, LINKTYPE_RAW, TCP_ACK, TCP_FIN, TCP_PSH, \
    TCP_RST, TCP_SYN
from ..capture.pcapwriter import PcapWriter, tcp_frame
from ..capture.tcp import REASSEMBLY_COUNTERS, SEQ_MASK, SPAN_DTYPE, Connection, Stream

#: payload bytes per synthesised segment: an IPv4 total length (16 bits) must hold
#: the 20-byte IP and 20-byte TCP headers too
MAX_SEGMENT = 0xFFFF - 40
LINKTYPE = LINKTYPE_RAW  # frames start at the IP header: no padding, any address family
CLIENT_ISN = 1_000_000
SERVER_ISN = 2_000_000


def _key(src: tuple[str, int], dst: tuple[str, int]) -> tuple:
    """The reassembler's directional key (src_hi, src_lo, dst_hi, dst_lo, sport, dport)."""
    out = []
    for host, _ in (src, dst):
        ip = ipaddress.ip_address(host.split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.version == 4:
            out += [0, IPV4_MAPPED_PREFIX | int(ip)]
        else:
            out += [int(ip) >> 64, int(ip) & ((1 << 64) - 1)]
    return (*out, src[1], dst[1])


class TapConnection:
    """One relayed connection: ``conn`` (with ``c2s`` / ``s2c``) and frame state."""

    def __init__(self, tap: "StreamTap", index: int, client, server):
        self.tap = tap
        self.conn = Connection()
        self.conn.index = index
        key = _key(client, server)
        rev = (key[2], key[3], key[0], key[1], key[5], key[4])
        self.conn.c2s = Stream(self.conn, "c2s", key)
        self.conn.s2c = Stream(self.conn, "s2c", rev)
        self.conn.c2s.peer, self.conn.s2c.peer = self.conn.s2c, self.conn.c2s
        self.conn.client, self.conn.server = self.conn.c2s.src, self.conn.c2s.dst
        self.addr = {"c2s": (client, server), "s2c": (server, client)}
        self.seq = {"c2s": CLIENT_ISN, "s2c": SERVER_ISN}  # next sequence number
        hdr = tcp_frame(client[0], server[0], client[1], server[1], 0, 0, 0, b"",
                        linktype=LINKTYPE, pad=False)
        self.header_len = len(hdr)

    def stream(self, direction: str) -> Stream:
        return self.conn.c2s if direction == "c2s" else self.conn.s2c

    def data(self, direction: str, data) -> None:
        """Bytes received in ``direction`` (consumed during the call)."""
        self.tap._data(self, direction, data)

    def end(self, direction: str, how: str) -> None:
        """``direction`` ended: ``"fin"`` (orderly) or ``"rst"`` (reset, ends both)."""
        self.tap._end(self, direction, how)


class StreamTap:
    """Byte streams to sink calls (and frames, when a ``writer`` is given).

    Every method takes ``lock`` (shared with whoever reads the sink's results);
    ``on_activity`` is called with the time of every event.
    """

    def __init__(self, sink, lock: threading.Lock, output=None):
        self.sink = sink
        self.lock = lock
        self.output = output  # CaptureFileOutput or None
        self.writer = PcapWriter(output, linktype=LINKTYPE, nanosecond=True) \
            if output is not None else None
        self.connections: list[TapConnection] = []
        self.last_time: float | None = None
        #: frame counts as the reassembler keeps them, for the synthesised frames
        self.counters = dict.fromkeys(COUNTERS + REASSEMBLY_COUNTERS, 0)

    # ------------------------------------------------------------------ events
    def open(self, client: tuple[str, int], server: tuple[str, int]) -> TapConnection:
        """A new connection from ``client`` to ``server`` (the handshake is complete)."""
        with self.lock:
            t = self._now()
            tc = TapConnection(self, len(self.connections), client, server)
            self.connections.append(tc)
            for st in (tc.conn.c2s, tc.conn.s2c):
                st.syn_seen = True
                st.first_time = st.last_time = t
                st.segments = 1
                st.wire_bytes = tc.header_len
            self._frame(tc, "c2s", t, TCP_SYN, consume=1, ack=0)
            self._frame(tc, "s2c", t, TCP_SYN | TCP_ACK, consume=1)
            self._frame(tc, "c2s", t, TCP_ACK)
            tc.conn.c2s.segments += 1
            tc.conn.c2s.wire_bytes += tc.header_len
            self.sink.on_stream(tc.conn.c2s)
            self.sink.on_stream(tc.conn.s2c)
            return tc

    def _data(self, tc: TapConnection, direction: str, data) -> None:
        n = len(data)
        if not n:
            return
        with self.lock:
            t = self._now()
            st = tc.stream(direction)
            if st.ended:
                return
            starts = np.arange(0, n, MAX_SEGMENT, dtype=np.int64)
            lengths = np.minimum(n - starts, MAX_SEGMENT)
            spans = np.empty(len(starts), SPAN_DTYPE)
            spans["stream_off"] = starts + st.bytes
            spans["buf_off"] = starts
            spans["length"] = lengths
            spans["time"] = t
            spans["wire_len"] = lengths + tc.header_len
            st.bytes += n
            st.segments += len(starts)
            st.wire_bytes += int(spans["wire_len"].sum())
            st.last_time = t
            if self.writer is not None:
                for s in starts.tolist():
                    self._frame(tc, direction, t, TCP_PSH | TCP_ACK, data[s:s + MAX_SEGMENT])
            self.sink.on_spans(st, data, spans)

    def _end(self, tc: TapConnection, direction: str, how: str) -> None:
        with self.lock:
            t = self._now()
            st = tc.stream(direction)
            if st.ended:
                return
            if how == "rst":
                st.rst_seen = True
                self._frame(tc, direction, t, TCP_RST | TCP_ACK)
                ends = (tc.conn.c2s, tc.conn.s2c)
            else:
                st.fin_seen = True
                self._frame(tc, direction, t, TCP_FIN | TCP_ACK, consume=1)
                ends = (st,)
            st.segments += 1
            st.wire_bytes += tc.header_len
            st.last_time = t
            for x in ends:
                if not x.ended:
                    x.ended = True
                    self.sink.on_end(x, t, how)

    def finish(self) -> None:
        """The capture ends: streams still open end with ``"eof"``."""
        with self.lock:
            t = self._now()
            for tc in self.connections:
                for st in (tc.conn.c2s, tc.conn.s2c):
                    if not st.ended:
                        st.ended = True
                        self.sink.on_end(st, t, "eof")

    # ------------------------------------------------------------------ frames
    def _now(self) -> float:
        t = time.time()
        if self.last_time is not None and t < self.last_time:
            t = self.last_time  # keep the file in time order if the clock steps back
        self.last_time = t
        return t

    def _frame(self, tc: TapConnection, direction: str, t: float, flags: int,
               payload=b"", consume: int = 0, ack: int | None = None) -> None:
        self.counters["frames"] += 1
        self.counters["tcp"] += 1
        seq = tc.seq[direction]
        tc.seq[direction] = (seq + len(payload) + consume) & SEQ_MASK
        if self.writer is None or self.output.failed:
            return
        other = "s2c" if direction == "c2s" else "c2s"
        (src, sport), (dst, dport) = tc.addr[direction]
        frame = tcp_frame(src, dst, sport, dport, seq, tc.seq[other] if ack is None else ack,
                          flags, payload, linktype=LINKTYPE, pad=False)
        self.writer.write_frame(t, frame)
        self.output.flush_if_full()

    @property
    def connection_objects(self) -> list:
        return [tc.conn for tc in self.connections]
