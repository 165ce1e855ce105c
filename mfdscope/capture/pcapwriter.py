"""Writing captures: pcap / pcapng writers, TCP frame builders, whole TCP flows.

Used by tests, benchmarks and live capture.  `TcpFlowWriter` produces a TCP
conversation as a list of `Segment`s that tests can damage (drop, duplicate, reorder,
retransmit with overlap...) before turning them into frames.
"""
from __future__ import annotations

import heapq
import ipaddress
import random
import struct
from dataclasses import dataclass, replace

from .decode import (
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, IPPROTO_TCP,
    LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW,
    LINKTYPE_RAW_OPENBSD, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
)
from .pcapfile import (
    PCAP_MAGIC_NS, PCAP_MAGIC_US, PCAPNG_BYTE_ORDER_MAGIC, PCAPNG_DEFAULT_TSRESOL,
    PCAPNG_EPB, PCAPNG_IDB, PCAPNG_OPB, PCAPNG_OPT_IF_TSRESOL, PCAPNG_SHB, PCAPNG_SPB,
    PCAPNG_TSRESOL_POW2,
)

DEFAULT_SNAPLEN = 262144
ETH_MIN_FRAME = 60  # without FCS: shorter frames are padded (the IP length rules)
ETH_CLIENT_MAC = bytes.fromhex("020000000001")
ETH_SERVER_MAC = bytes.fromhex("020000000002")
AF_INET6_NULL = 30  # the family a NULL header carries for IPv6 (macOS value)
IP_TTL = 64
TCP_WINDOW = 65535
TCP_HEADER_LEN = 20
SEQ_MOD = 1 << 32
FLAG_LETTERS = {"F": TCP_FIN, "S": TCP_SYN, "R": TCP_RST, "P": TCP_PSH, "A": TCP_ACK,
                "U": TCP_URG}


def _flags(flags):
    if isinstance(flags, str):
        return sum(FLAG_LETTERS[c] for c in flags)
    return flags


def _ts(time, ticks):
    whole = int(time)
    frac = round((time - whole) * ticks)
    if frac >= ticks:
        whole, frac = whole + 1, frac - ticks
    return whole, frac


class PcapWriter:
    """Classic pcap: one link type, micro- or nanosecond timestamps, either byte order."""

    def __init__(self, fileobj, linktype=LINKTYPE_ETHERNET, nanosecond=False,
                 snaplen=DEFAULT_SNAPLEN, byteorder="<"):
        self.f = fileobj
        self.snaplen = snaplen
        self.ticks = 10**9 if nanosecond else 10**6
        self._rec = struct.Struct(byteorder + "IIII")
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        fileobj.write(struct.pack(byteorder + "IHHiIII", magic, 2, 4, 0, 0, snaplen,
                                  linktype))

    def write_frame(self, time, frame, origlen=None):
        sec, frac = _ts(time, self.ticks)
        data = frame[:self.snaplen]
        self.f.write(self._rec.pack(sec, frac, len(data),
                                    len(frame) if origlen is None else origlen))
        self.f.write(data)


class PcapngWriter:
    """pcapng: sections, several interfaces (link type, snaplen, if_tsresol)."""

    def __init__(self, fileobj, byteorder="<"):
        self.f = fileobj
        self.o = byteorder
        self.interfaces = []  # (snaplen, ticks) per interface of the current section
        self.new_section()

    def _block(self, btype, body):
        body += b"\0" * (-len(body) % 4)
        blen = len(body) + 12
        self.f.write(struct.pack(self.o + "II", btype, blen) + body +
                     struct.pack(self.o + "I", blen))

    def new_section(self):
        self._block(PCAPNG_SHB, struct.pack(self.o + "IHHq", PCAPNG_BYTE_ORDER_MAGIC,
                                            1, 0, -1))
        self.interfaces = []

    def add_interface(self, linktype=LINKTYPE_ETHERNET, snaplen=DEFAULT_SNAPLEN,
                      tsresol=PCAPNG_DEFAULT_TSRESOL, pow2=False):
        """Add an interface (timestamps in 10**-tsresol or 2**-tsresol s); its id."""
        code = tsresol | (PCAPNG_TSRESOL_POW2 if pow2 else 0)
        opts = b""
        if code != PCAPNG_DEFAULT_TSRESOL:
            opts = struct.pack(self.o + "HHB3x", PCAPNG_OPT_IF_TSRESOL, 1, code)
        opts += struct.pack(self.o + "HH", 0, 0)
        self._block(PCAPNG_IDB, struct.pack(self.o + "HHI", linktype, 0, snaplen) + opts)
        self.interfaces.append((snaplen, 2**tsresol if pow2 else 10**tsresol))
        return len(self.interfaces) - 1

    def write_frame(self, time, frame, origlen=None, interface=0):
        """An enhanced packet block."""
        snaplen, ticks = self.interfaces[interface]
        ts = _ticks(time, ticks)
        data = frame[:snaplen] if snaplen else frame
        self._block(PCAPNG_EPB, struct.pack(
            self.o + "IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(data),
            len(frame) if origlen is None else origlen) + bytes(data))

    def write_simple(self, frame):
        """A simple packet block (interface 0, no timestamp)."""
        snaplen = self.interfaces[0][0]
        data = frame[:snaplen] if snaplen else frame
        self._block(PCAPNG_SPB, struct.pack(self.o + "I", len(frame)) + bytes(data))

    def write_obsolete(self, time, frame, interface=0):
        """An obsolete packet block (type 2)."""
        snaplen, ticks = self.interfaces[interface]
        ts = _ticks(time, ticks)
        data = frame[:snaplen] if snaplen else frame
        self._block(PCAPNG_OPB, struct.pack(
            self.o + "HHIIII", interface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data),
            len(frame)) + bytes(data))

    def write_block(self, btype, body):
        """Any other block (name resolution, statistics, custom...)."""
        self._block(btype, body)


def _ticks(time, ticks):
    sec, frac = _ts(time, ticks)
    return sec * ticks + frac


# ----------------------------------------------------------------- frame builders
def _ip_header(src, dst, payload_len, ip_len):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        total = 20 + payload_len if ip_len is None else ip_len
        return 4, struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, IP_TTL,
                              IPPROTO_TCP, 0, s.packed, d.packed)
    plen = payload_len if ip_len is None else ip_len
    return 6, struct.pack("!IHBB16s16s", 6 << 28, plen, IPPROTO_TCP, IP_TTL,
                          s.packed, d.packed)


def _link_header(linktype, version, vlan, null_byteorder):
    etype = ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6
    if linktype == LINKTYPE_ETHERNET:
        tags = b""
        vlans = () if vlan is None else (vlan,) if isinstance(vlan, int) else tuple(vlan)
        for i, vid in enumerate(vlans):
            tpid = ETHERTYPE_QINQ if i == 0 and len(vlans) > 1 else ETHERTYPE_VLAN
            tags += struct.pack("!HH", tpid, vid)
        return ETH_SERVER_MAC + ETH_CLIENT_MAC + tags + struct.pack("!H", etype)
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 1, 6, ETH_CLIENT_MAC + b"\0\0", etype)
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", etype, 0, 1, 1, 0, 6, ETH_CLIENT_MAC + b"\0\0")
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        family = 2 if version == 4 else AF_INET6_NULL
        order = ">" if linktype == LINKTYPE_LOOP else null_byteorder
        return struct.pack(order + "I", family)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return b""
    raise ValueError(f"unsupported link type {linktype}")


def tcp_frame(src, dst, sport, dport, seq, ack, flags, payload=b"",
              linktype=LINKTYPE_ETHERNET, vlan=None, ip_len=None, pad=True,
              null_byteorder="<"):
    """One TCP frame.  `flags` is an int or letters ("SA", "PA"...); `vlan` an id or
    a sequence of ids (outer first); `ip_len` overrides the IP length field (0 as in
    GSO captures); checksums are 0."""
    version, ip = _ip_header(src, dst, TCP_HEADER_LEN + len(payload), ip_len)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq % SEQ_MOD, ack % SEQ_MOD,
                      (TCP_HEADER_LEN // 4) << 4, _flags(flags), TCP_WINDOW, 0, 0)
    frame = _link_header(linktype, version, vlan, null_byteorder) + ip + tcp + bytes(payload)
    if pad and linktype == LINKTYPE_ETHERNET and len(frame) < ETH_MIN_FRAME:
        frame += b"\0" * (ETH_MIN_FRAME - len(frame))
    return frame


# ------------------------------------------------------------------- whole flows
@dataclass
class Segment:
    """One TCP segment of a flow, before it becomes a frame."""

    time: float
    c2s: bool  # sent by the client
    seq: int
    ack: int
    flags: int
    payload: bytes = b""
    snaplen: int | None = None  # cut the frame to this many bytes


class TcpFlowWriter:
    """A TCP conversation as an editable list of `Segment`s.

    Build it with `handshake`, `send`, `close`; damage it with the fault helpers (or
    by editing `segments` directly); write it with `frames` / `segments_as_frames`.
    Sequence numbers are kept modulo 2**32 in the frames, so `isn` near 2**32 forces
    wraparound.
    """

    def __init__(self, client=("10.0.0.1", 40000), server=("10.0.0.2", 9000),
                 isn_client=1000, isn_server=5000, t0=0.0, dt=1e-6,
                 linktype=LINKTYPE_ETHERNET, vlan=None):
        self.client, self.server = client, server
        self.seq = {True: isn_client, False: isn_server}  # next seq per direction
        self.time = t0
        self.dt = dt
        self.linktype, self.vlan = linktype, vlan
        self.segments: list[Segment] = []

    def _add(self, c2s, flags, payload=b"", consume=0):
        seg = Segment(self.time, c2s, self.seq[c2s] % SEQ_MOD,
                      self.seq[not c2s] % SEQ_MOD, _flags(flags), bytes(payload))
        self.segments.append(seg)
        self.seq[c2s] += len(payload) + consume
        self.time += self.dt
        return seg

    def handshake(self):
        self._add(True, TCP_SYN, consume=1).ack = 0
        self._add(False, TCP_SYN | TCP_ACK, consume=1)
        self._add(True, TCP_ACK)
        return self

    def send(self, data, segment_size=1448, c2s=True, ack_every=0):
        """Data in segments of `segment_size`; the peer ACKs every `ack_every` ones."""
        view = memoryview(data)
        for i, start in enumerate(range(0, len(view), segment_size)):
            self._add(c2s, TCP_PSH | TCP_ACK, view[start:start + segment_size])
            if ack_every and (i + 1) % ack_every == 0:
                self._add(not c2s, TCP_ACK)
        return self

    def close(self, rst=False):
        if rst:
            self._add(True, TCP_RST | TCP_ACK)
            return self
        self._add(True, TCP_FIN | TCP_ACK, consume=1)
        self._add(False, TCP_FIN | TCP_ACK, consume=1)
        self._add(True, TCP_ACK)
        return self

    # ---- faults (indices into `segments`)
    def data_indices(self, c2s=True):
        return [i for i, s in enumerate(self.segments) if s.c2s == c2s and s.payload]

    def drop(self, i):
        return self.segments.pop(i)

    def duplicate(self, i, at=None):
        self.segments.insert(i + 1 if at is None else at, replace(self.segments[i]))

    def swap(self, i, j):
        self.segments[i], self.segments[j] = self.segments[j], self.segments[i]

    def retransmit(self, i, start=0, end=None, at=None, payload=None):
        """Re-send bytes [start, end) of segment i (optionally other bytes: a
        conflicting retransmission) at list position `at` (default: the end)."""
        seg = self.segments[i]
        data = seg.payload[start:end] if payload is None else payload
        new = replace(seg, seq=(seg.seq + start) % SEQ_MOD, payload=data,
                      flags=seg.flags & ~(TCP_SYN | TCP_FIN))
        self.segments.insert(len(self.segments) if at is None else at, new)

    def truncate(self, i, snaplen):
        self.segments[i].snaplen = snaplen

    def start_midstream(self, n):
        """Forget the first n segments, as if the capture started late."""
        del self.segments[:n]

    def shuffle(self, window, rng=None):
        """Reorder segments randomly inside sliding windows of `window` segments."""
        rng = rng or random.Random(0)
        segs = self.segments
        for i in range(0, len(segs), window):
            part = segs[i:i + window]
            rng.shuffle(part)
            segs[i:i + window] = part

    def frames(self):
        """Yield (time, frame bytes, origlen) in list order, times made increasing."""
        (csrc, cport), (ssrc, sport) = self.client, self.server
        last = None
        for seg in self.segments:
            src, dst, sp, dp = ((csrc, ssrc, cport, sport) if seg.c2s else
                                (ssrc, csrc, sport, cport))
            frame = tcp_frame(src, dst, sp, dp, seg.seq, seg.ack, seg.flags, seg.payload,
                              linktype=self.linktype, vlan=self.vlan)
            t = seg.time if last is None or seg.time > last else last + self.dt
            last = t
            cut = frame if seg.snaplen is None else frame[:seg.snaplen]
            yield t, cut, len(frame)


def write_pcap(fileobj, frames, linktype=LINKTYPE_ETHERNET, **kw):
    """Write (time, frame, origlen) triples into a pcap; returns the frame count."""
    w = PcapWriter(fileobj, linktype=linktype, **kw)
    n = 0
    for t, frame, origlen in frames:
        w.write_frame(t, frame, origlen)
        n += 1
    return n


def interleave(*flows):
    """Merge several flows' frames by time (stable: ties keep the argument order)."""
    return heapq.merge(*(f.frames() for f in flows), key=lambda x: x[0])
