"""TCP reassembly: decoded segments in, ordered byte spans per direction out.

Per batch the segments are grouped by direction (a hash of the 4-tuple, checked
exactly).  A direction whose segments in the batch simply continue its byte stream
(no gap, no retransmission, no SYN/FIN/RST in its connection, nothing cut by the snap
length) is handled with numpy alone and delivered in one `on_spans` call.  Everything
else goes through a per-segment path, in capture order across all such directions.

Out-of-order data waits as references into the capture buffer (a copy only when the
buffer is one a live source will reuse), bounded per stream; past the bound, when the
peer ACKs beyond a gap, or at the end of the capture, a gap becomes a "missing" hole.
Nothing is kept per delivered segment except the last few spans of each stream, used
to check retransmitted bytes against what was delivered.
"""
from __future__ import annotations

import bisect
import ipaddress
import mmap
from collections import deque

import numpy as np

from .decode import COUNTERS, IPV4_MAPPED_PREFIX, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, decode

SPAN_DTYPE = np.dtype([("stream_off", "<i8"), ("buf_off", "<i8"), ("length", "<i8"),
                       ("time", "<f8"), ("wire_len", "<i8")])
SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
SEQ_HALF = 1 << 31  # sequence numbers compare within half the space
MAX_PENDING_BYTES = 32 << 20  # out-of-order data held per stream before a gap is given up
MAX_PENDING_SEGMENTS = 4096
RECENT_DELIVERIES = 4  # deliveries per stream kept to check retransmissions against
RECENT_SPANS = 256  # spans kept of each of those
UNUSUAL_FLAGS = TCP_SYN | TCP_FIN | TCP_RST
# odd multipliers mixing the 4-tuple into one uint64 group key (collisions are checked)
FLOW_HASH = tuple(np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F,
                                         0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                                         0xFF51AFD7ED558CCD))
KEY_FIELDS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport")
REASSEMBLY_COUNTERS = ("ignored",)  # data segments of a stream that already ended


def _endpoint(hi, lo, port):
    if hi == 0 and lo >> 32 == IPV4_MAPPED_PREFIX >> 32:
        return f"{ipaddress.IPv4Address(lo & SEQ_MASK)}:{port}"
    return f"[{ipaddress.IPv6Address((hi << 64) | lo)}]:{port}"


def _is_stable(buf):
    """True when `buf` cannot change under us (a file map or bytes), so it may be
    referenced after the call; a live source's reused buffer must be copied."""
    if isinstance(buf, bytes):
        return True
    return isinstance(buf, memoryview) and isinstance(buf.obj, (bytes, mmap.mmap))


class Connection:
    """One incarnation of a TCP 4-tuple: `c2s` and `s2c` streams."""

    __slots__ = ("index", "client", "server", "c2s", "s2c")

    def __repr__(self):
        return f"Connection({self.index}, {self.client} -> {self.server})"


class Stream:
    """One direction of a connection, as seen by the sink."""

    __slots__ = ("conn", "direction", "src", "dst", "bytes", "hole_bytes", "holes",
                 "segments", "retransmitted_bytes", "duplicate_segments",
                 "out_of_order_segments", "overlap_conflicts", "first_time",
                 "last_time", "syn_seen", "fin_seen", "rst_seen", "wire_bytes", "ended",
                 "peer", "_isn", "_base", "next_off", "_fin_off", "_last_ack", "_snap_claim",
                 "_pending", "_pending_bytes", "_out", "_recent")

    def __init__(self, conn, direction, key):
        self.conn, self.direction = conn, direction
        self.src = _endpoint(key[0], key[1], key[4])
        self.dst = _endpoint(key[2], key[3], key[5])
        self.bytes = self.hole_bytes = self.holes = self.segments = 0
        self.retransmitted_bytes = self.duplicate_segments = 0
        self.out_of_order_segments = self.overlap_conflicts = self.wire_bytes = 0
        self.first_time = self.last_time = None
        self.syn_seen = self.fin_seen = self.rst_seen = self.ended = False
        self.peer = None
        self._isn = None  # the SYN's sequence number
        self._base = None  # sequence number of stream offset 0
        self.next_off = 0  # everything before was delivered or declared a hole
        self._fin_off = None
        self._last_ack = None  # last ACK number this direction sent
        #: end a snaplen-cut segment claimed (from the frame's original length), not yet
        #: confirmed by what follows it
        self._snap_claim = None
        self._pending = []  # (start, end, tiebreak, buf, buf_off, caplen, time, wire_len)
        self._pending_bytes = 0
        self._out = []  # deliveries not yet passed to the sink: (buf, span fields...)
        self._recent = deque(maxlen=RECENT_DELIVERIES)  # (buf, spans)

    def __repr__(self):
        return f"Stream({self.src} -> {self.dst}, {self.direction}, {self.bytes} B)"

    def _offset(self, seq):
        """Stream offset of `seq`, unwrapped around the next expected offset."""
        d = (seq - self._base - self.next_off) & SEQ_MASK
        return self.next_off + (d - SEQ_MOD if d >= SEQ_HALF else d)

    def _how(self):
        return "rst" if self.rst_seen else "fin" if self.fin_seen else "eof"


class Reassembler:
    """Feed batches with `add_batch`, then call `finish`; see docs/internals.md."""

    def __init__(self, sink):
        self.sink = sink
        self.connections = []
        self.counters = dict.fromkeys(COUNTERS + REASSEMBLY_COUNTERS, 0)
        self._streams = {}  # directional 4-tuple -> stream of the current incarnation
        self._gappy = {}  # streams waiting behind a gap (ordered set)
        self._dirty = {}  # streams with deliveries not yet passed to the sink
        self._tiebreak = 0
        self._last_time = 0.0

    # ------------------------------------------------------------------ batches
    def add_batch(self, buf, batch):
        seg = decode(buf, batch, self.counters)
        n = len(seg)
        if not n:
            return
        self._last_time = max(self._last_time, float(seg.time[-1]))
        stable = _is_stable(buf)
        prefix, middle, tail = self._split(seg, self._groups(seg))
        # connections whose start was not captured are born at their first segment,
        # in capture order with those the per-segment path creates
        unborn = {}
        for key, rows in middle:
            if key not in self._streams:
                unborn.setdefault(_canonical(key), (0 if rows is None else int(rows[0]), key))
        self._slow(seg, prefix, buf, stable, sorted(unborn.values()))
        slow = []
        for key, rows in middle:
            st = self._streams[key]
            if st.ended or not self._fast(st, seg, rows, buf):
                slow.append(np.arange(n) if rows is None else rows)
        self._slow(seg, slow, buf, stable)
        self._slow(seg, tail, buf, stable)
        self._check_acks()
        self._flush_dirty()

    def _split(self, seg, groups):
        """Rows that must go one by one: per connection with SYN/FIN/RST in the batch,
        those up to its last SYN (prefix) and from its first FIN/RST after that (tail).
        The rest (middle) is [(key, rows)], rows None meaning all."""
        unusual = {}  # canonical 4-tuple -> [last SYN row, [(rows, flags)]]
        for key, rows, flags in groups:
            if flags & UNUSUAL_FLAGS:
                r = np.arange(len(seg)) if rows is None else rows
                f = seg.flags[r]
                entry = unusual.setdefault(_canonical(key), [-1, []])
                syn = r[(f & TCP_SYN) != 0]
                if len(syn):
                    entry[0] = max(entry[0], int(syn[-1]))
                entry[1].append((r, f))
        cuts = {}
        for conn, (last_syn, parts) in unusual.items():
            ends = [int(r[0]) for r in (r[((f & (TCP_FIN | TCP_RST)) != 0) & (r > last_syn)]
                                        for r, f in parts) if len(r)]
            cuts[conn] = (last_syn, min(ends) if ends else len(seg))
        prefix, middle, tail = [], [], []
        for key, rows, _ in groups:
            cut = cuts.get(_canonical(key))
            if cut is None:
                middle.append((key, rows))
                continue
            r = np.arange(len(seg)) if rows is None else rows
            prefix.append(r[r <= cut[0]])
            tail.append(r[r >= cut[1]])
            mid = r[(r > cut[0]) & (r < cut[1])]
            if len(mid):
                middle.append((key, mid))
        return prefix, middle, tail

    def finish(self):
        """The capture ended: give up remaining gaps, end every open stream."""
        for conn in self.connections:
            for st in (conn.c2s, conn.s2c):
                if not st.ended:
                    self._close(st, self._last_time, "fin" if st.fin_seen else "eof")

    def _groups(self, seg):
        """[(directional key, rows or None for all, OR of the flags)] in first-seen order."""
        k = FLOW_HASH
        h = (seg.src_lo * k[0]) ^ (seg.dst_lo * k[1]) ^ (seg.src_hi * k[2]) ^ (
            seg.dst_hi * k[3]) ^ (((seg.sport << 16) | seg.dport).astype(np.uint64) * k[4])
        if h[0] == h[-1] and (h == h[0]).all():
            if self._same_key(seg, np.zeros(len(h), np.int64)):
                return [(self._key(seg, 0), None, int(np.bitwise_or.reduce(seg.flags)))]
        _, first, inv = np.unique(h, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        if not self._same_key(seg, first[inv]):
            return self._groups_exact(seg)
        order = np.argsort(inv, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(inv))))
        flags = np.bitwise_or.reduceat(seg.flags[order], bounds[:-1])
        groups = [(first[g], self._key(seg, first[g]), order[bounds[g]:bounds[g + 1]],
                   int(flags[g])) for g in range(len(first))]
        groups.sort(key=lambda g: g[0])
        return [g[1:] for g in groups]

    def _groups_exact(self, seg):
        """Hash collision (never seen in practice): group by the exact tuples."""
        rows = {}
        for i, key in enumerate(zip(*(getattr(seg, f).tolist() for f in KEY_FIELDS))):
            rows.setdefault(key, []).append(i)
        return [(key, np.array(r), int(np.bitwise_or.reduce(seg.flags[r])))
                for key, r in rows.items()]

    @staticmethod
    def _same_key(seg, rep):
        return all((a == a[rep]).all() for a in (getattr(seg, f) for f in KEY_FIELDS))

    @staticmethod
    def _key(seg, i):
        return tuple(int(getattr(seg, f)[i]) for f in KEY_FIELDS)

    # ------------------------------------------------------------- fast path
    def _fast(self, st, seg, rows, buf):
        """Deliver a stream's batch with numpy if it simply continues the stream."""
        if st._pending or st._fin_off is not None or st._snap_claim is not None:
            return False

        def take(a):
            return a if rows is None else a[rows]
        seq, length = take(seg.seq), take(seg.payload_len)
        if st._base is None and length.any():
            # a capture started mid-stream: offset 0 = first byte seen
            st._base = int(seq[np.argmax(length > 0)])
        if st._base is not None:
            if seq[0] != (st._base + st.next_off) & SEQ_MASK:
                return False
            if len(seq) > 1 and not np.array_equal(seq[1:], (seq[:-1] + length[:-1]) & SEQ_MASK):
                return False
            if not np.array_equal(take(seg.payload_caplen), length):
                return False
        time, wire, flags = take(seg.time), take(seg.wire_len), take(seg.flags)
        st.segments += len(seq)
        st.wire_bytes += int(wire.sum())
        if st.first_time is None:
            st.first_time = float(time[0])
        st.last_time = float(time[-1])
        if flags[-1] & TCP_ACK:
            st._last_ack = int(take(seg.ack)[-1])
        else:
            acked = np.flatnonzero(flags & TCP_ACK)
            if len(acked):
                st._last_ack = int(take(seg.ack)[acked[-1]])
        data = length > 0
        n = int(np.count_nonzero(data))
        if n == 0:
            return True
        off = take(seg.payload_off)
        if n != len(data):
            sel = np.flatnonzero(data)
            length, off, time, wire = length[sel], off[sel], time[sel], wire[sel]
        spans = np.empty(n, SPAN_DTYPE)
        end = np.cumsum(length)
        spans["stream_off"] = end - length + st.next_off
        spans["buf_off"] = off
        spans["length"] = length
        spans["time"] = time
        spans["wire_len"] = wire
        total = int(end[-1])
        st.next_off += total
        st.bytes += total
        self._flush(st)  # what the per-segment path delivered earlier in this batch
        self.sink.on_spans(st, buf, spans)
        if _is_stable(buf):
            st._recent.append((buf, spans[-RECENT_SPANS:].copy()))
        return True

    # ------------------------------------------------------------- slow path
    def _slow(self, seg, parts, buf, stable, births=()):
        """Segments of `parts` (row arrays) one by one, in capture order; `births`
        [(row, key)] are connections to create when the walk passes their row."""
        births = list(births)
        parts = [p for p in parts if len(p)]
        rows = (np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]) if parts else \
            np.zeros(0, np.int64)
        cols = [rows.tolist()] + [getattr(seg, f)[rows].tolist() for f in KEY_FIELDS + (
            "seq", "ack", "flags", "payload_off", "payload_len", "payload_caplen", "time",
            "wire_len")]
        for row, sh, sl, dh, dl, sp, dp, seq, ack, flags, poff, plen, pcap, t, wire in zip(*cols):
            while births and births[0][0] < row:
                self._birth(seg, *births.pop(0))
            self._segment((sh, sl, dh, dl, sp, dp), buf, stable, t, wire, flags, seq, ack,
                          poff, plen, pcap)
        for birth in births:
            self._birth(seg, *birth)

    def _birth(self, seg, row, key):
        if key not in self._streams:
            self._new_connection(key, None, float(seg.time[row]))

    def _segment(self, key, buf, stable, t, wire, flags, seq, ack, poff, plen, pcap):
        st = self._streams.get(key)
        if flags & TCP_SYN:
            st = self._on_syn(key, st, t, flags, seq)
        elif st is None:
            self._new_connection(key, None, t)
            st = self._streams[key]
        st.segments += 1
        st.wire_bytes += wire
        if st.first_time is None:
            st.first_time = t
        st.last_time = t
        if flags & TCP_ACK:
            st._last_ack = ack
        if st.ended:
            self.counters["ignored"] += bool(plen)
            return
        if st._base is None:
            if not plen and not flags & (TCP_FIN | TCP_RST):
                return
            st._base = seq  # a capture started mid-stream: offset 0 = first byte seen
        s = st._offset(seq) + (1 if flags & TCP_SYN else 0)  # SYN takes one number
        if plen:
            self._data(st, buf, stable, s, plen, pcap, poff, t, wire)
        if flags & TCP_FIN and st._fin_off is None:
            self._settle_snap(st, s + plen, t)  # the FIN marks where the data ended
            st.fin_seen = True
            st._fin_off = max(s + plen, st.next_off)
            if st._fin_off > st.next_off:
                self._gappy[st] = None
        if flags & TCP_RST:
            st.rst_seen = True
            for x in (st.conn.c2s, st.conn.s2c):
                self._close(x, t, "rst")
            return
        self._maybe_end(st, t)

    def _on_syn(self, key, st, t, flags, seq):
        if st is not None and st.syn_seen and seq == st._isn:
            st.duplicate_segments += 1  # a retransmitted SYN or SYN-ACK
            return st
        if flags & TCP_ACK:  # SYN-ACK: the sender is the server
            if st is not None and not st.syn_seen and st._base is None and not st.ended:
                st.syn_seen, st._isn, st._base = True, seq, (seq + 1) & SEQ_MASK
                return st
            st = self._new_connection(key, False, t).s2c
        else:
            st = self._new_connection(key, True, t).c2s
        st.syn_seen, st._isn, st._base = True, seq, (seq + 1) & SEQ_MASK
        return st

    def _new_connection(self, key, src_is_client, t):
        old = self._streams.get(key)
        if old is not None:  # a new incarnation of the 4-tuple ends the old one
            for x in (old.conn.c2s, old.conn.s2c):
                self._close(x, t, x._how())
        rev = (key[2], key[3], key[0], key[1], key[5], key[4])
        if src_is_client is None:  # no SYN seen: the higher port is the client
            src_is_client = key[4] >= key[5]
        ckey, skey = (key, rev) if src_is_client else (rev, key)
        conn = Connection()
        conn.index = len(self.connections)
        conn.c2s, conn.s2c = Stream(conn, "c2s", ckey), Stream(conn, "s2c", skey)
        conn.c2s.peer, conn.s2c.peer = conn.s2c, conn.c2s
        conn.client, conn.server = conn.c2s.src, conn.c2s.dst
        self._streams[ckey], self._streams[skey] = conn.c2s, conn.s2c
        self.connections.append(conn)
        self.sink.on_stream(conn.c2s)
        self.sink.on_stream(conn.s2c)
        return conn

    def _data(self, st, buf, stable, s, plen, pcap, poff, t, wire):
        if st._fin_off is not None and s + plen > st._fin_off:
            plen = max(st._fin_off - s, 0)  # bytes after the FIN are not stream data
            pcap = min(pcap, plen)
            if not plen:
                return
        self._settle_snap(st, s, t)
        nxt = st.next_off
        if s + plen <= nxt:
            st.duplicate_segments += 1
            st.retransmitted_bytes += plen
            self._compare(st, buf, s, poff, pcap)
            return
        if s < nxt:  # partial overlap: only the new bytes go on
            k = nxt - s
            st.retransmitted_bytes += k
            self._compare(st, buf, s, poff, min(k, pcap))
            s, poff, plen, pcap = nxt, poff + k, plen - k, max(pcap - k, 0)
        if s > nxt:
            self._buffer(st, buf, stable, s, plen, pcap, poff, t, wire)
            return
        self._deliver(st, buf, s, plen, pcap, poff, t, wire)
        self._drain(st)

    def _buffer(self, st, buf, stable, s, plen, pcap, poff, t, wire):
        p = st._pending
        i = bisect.bisect_left(p, (s,))
        while i < len(p) and p[i][0] == s:
            if p[i][1] == s + plen:
                st.duplicate_segments += 1
                st.retransmitted_bytes += plen
                return
            i += 1
        st.out_of_order_segments += 1
        if not stable:
            buf, poff = bytes(buf[poff:poff + pcap]), 0
        self._tiebreak += 1
        bisect.insort(p, (s, s + plen, self._tiebreak, buf, poff, pcap, t, wire))
        st._pending_bytes += plen
        self._gappy[st] = None
        while st._pending_bytes > MAX_PENDING_BYTES or len(p) > MAX_PENDING_SEGMENTS:
            self._fill_gap(st, p[0][0], t)

    def _deliver(self, st, buf, s, plen, pcap, poff, t, wire):
        if pcap:
            if not st._out:
                self._dirty[st] = None
            st._out.append((buf, s, poff, pcap, t, wire))
            st.bytes += pcap
        if pcap < plen:
            # The cut-off bytes become a hole once what follows confirms where the
            # segment really ended: a corrupt original length must not swallow the
            # real segments after it as "retransmissions".
            st.next_off = s + pcap
            st._snap_claim = s + plen
            return
        st.next_off = s + plen

    def _settle_snap(self, st, s, t):
        """Data resumes at stream offset `s`: the cut segment's missing tail ends there
        (or at its claimed end, if `s` is further: the rest is an ordinary gap)."""
        claim = st._snap_claim
        if claim is None or s < st.next_off:  # nothing pending, or older bytes again
            return
        st._snap_claim = None
        end = min(s, claim)
        if end > st.next_off:
            self._hole(st, st.next_off, end - st.next_off, t, "snaplen")
            st.next_off = end

    def _drain(self, st):
        """Deliver buffered segments that now continue the stream."""
        p = st._pending
        if p and st._snap_claim is not None:
            self._settle_snap(st, p[0][0], p[0][6])
        while p and p[0][0] <= st.next_off:
            s, e, _, buf, poff, pcap, t, wire = p.pop(0)
            st._pending_bytes -= e - s
            nxt = st.next_off
            if e <= nxt:
                st.retransmitted_bytes += e - s
                self._compare(st, buf, s, poff, pcap)
                continue
            if s < nxt:
                k = nxt - s
                st.retransmitted_bytes += k
                self._compare(st, buf, s, poff, min(k, pcap))
                s, poff, pcap = nxt, poff + k, max(pcap - k, 0)
            self._deliver(st, buf, s, e - s, pcap, poff, t, wire)

    def _fill_gap(self, st, upto, t):
        """Give up waiting for the bytes before `upto`: a "missing" hole."""
        self._settle_snap(st, upto, t)
        if upto > st.next_off:
            self._hole(st, st.next_off, upto - st.next_off, t, "missing")
            st.next_off = upto
        self._drain(st)

    def _hole(self, st, off, n, t, reason):
        self._flush(st)
        st.hole_bytes += n
        st.holes += 1
        self.sink.on_hole(st, off, n, t, reason)

    def _maybe_end(self, st, t):
        if st._fin_off is not None and not st._pending and st.next_off >= st._fin_off:
            self._close(st, t, "fin")

    def _close(self, st, t, how):
        if st.ended:
            return
        while st._pending:
            self._fill_gap(st, st._pending[0][0], t)
        if st._snap_claim is not None:
            end = st._snap_claim if st._fin_off is None else min(st._snap_claim, st._fin_off)
            self._settle_snap(st, max(end, st.next_off), t)
        if st._fin_off is not None and st.next_off < st._fin_off:
            self._fill_gap(st, st._fin_off, t)
        self._flush(st)
        st.ended = True
        st._recent.clear()
        self._gappy.pop(st, None)
        self.sink.on_end(st, t, how)

    def _check_acks(self):
        """A gap the peer has ACKed was received but not captured: a hole now."""
        for st in list(self._gappy):
            ack = st.peer._last_ack
            if st.ended or ack is None or st._base is None:
                self._gappy.pop(st, None)
                continue
            acked = st._offset(ack)
            # evidence must cover the gap and what follows it (the next buffered segment,
            # or the FIN): an ACK of the gap alone may just be captured early
            while st._pending and acked >= st._pending[0][1]:
                # the hole takes the time of what follows it, whatever the batching
                self._fill_gap(st, st._pending[0][0], st._pending[0][6])
            if not st._pending and st._fin_off is not None and acked > st._fin_off:
                self._fill_gap(st, st._fin_off, st.last_time)
            self._maybe_end(st, st.last_time)
            if not st._pending and (st._fin_off is None or st.next_off >= st._fin_off):
                self._gappy.pop(st, None)

    # -------------------------------------------------------------- delivery
    def _flush(self, st):
        out = st._out
        if not out:
            return
        st._out = []
        self._dirty.pop(st, None)
        i = 0
        while i < len(out):  # one call per run of spans in the same buffer
            buf = out[i][0]
            j = i + 1
            while j < len(out) and out[j][0] is buf:
                j += 1
            spans = np.array([o[1:] for o in out[i:j]], dtype=SPAN_DTYPE)
            self.sink.on_spans(st, buf, spans)
            if _is_stable(buf):
                st._recent.append((buf, spans[-RECENT_SPANS:]))
            i = j

    def _flush_dirty(self):
        for st in list(self._dirty):
            self._flush(st)

    def _compare(self, st, buf, s, poff, n):
        """Count an overlap conflict if retransmitted bytes differ from delivered ones.

        Only what is still at hand is compared: the stream's undelivered spans and its
        last few deliveries.
        """
        if n <= 0:
            return
        pieces = [o[:4] for o in st._out[-RECENT_SPANS:]]
        for old_buf, spans in st._recent:
            so = spans["stream_off"]
            lo = max(int(np.searchsorted(so, s, "right")) - 1, 0)
            hi = int(np.searchsorted(so, s + n, "left"))
            pieces.extend((old_buf, *row) for row in
                          spans[["stream_off", "buf_off", "length"]][lo:hi].tolist())
        new = memoryview(buf)
        for old_buf, sp_off, b_off, length in pieces:
            a, z = max(s, sp_off), min(s + n, sp_off + length)
            if a < z and memoryview(old_buf)[b_off + a - sp_off:b_off + z - sp_off] != \
                    new[poff + a - s:poff + z - s]:
                st.overlap_conflicts += 1
                return


def _canonical(key):
    a, b = (key[0], key[1], key[4]), (key[2], key[3], key[5])
    return (a, b) if a <= b else (b, a)
