"""Vectorised link / IP / TCP decoding of a `PacketBatch`.

Every header is gathered for all frames of a batch at once (`pcapfile.gather`: one
numpy fancy index reads a structured header at each frame's offset).  Only IPv6 frames with
extension headers take a per-frame Python path.  Non-TCP frames are counted, never
errors.
"""
from __future__ import annotations

import numpy as np

from .pcapfile import gather, layout

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0  # 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OPENBSD = 12  # DLT_RAW as some systems number it
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108  # like NULL, family always big-endian
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SLL_HEADER_LEN = 16
SLL_PROTOCOL_AT = 14
SLL2_HEADER_LEN = 20
SLL2_PROTOCOL_AT = 0
NULL_HEADER_LEN = 4
ETH_HEADER_LEN = 14
ETH_TYPE_AT = 12
VLAN_TAG_LEN = 4
MAX_VLAN_TAGS = 2  # 802.1ad outer + 802.1Q inner

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8

AF_INET = 2
AF_INET6_VALUES = (24, 28, 30)  # NetBSD/OpenBSD, FreeBSD, macOS

IPV4_MIN_HEADER = 20
IPV6_HEADER_LEN = 40
IPV4_FRAGMENT_MASK = 0x3FFF  # MF flag + fragment offset
IPV4_MAPPED_PREFIX = 0xFFFF << 32  # IPv4 addresses are keyed as ::ffff:a.b.c.d
IPPROTO_TCP = 6
IPV6_EXTENSION_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options
IPPROTO_FRAGMENT = 44
IPV6_MAX_EXTENSION_HEADERS = 8

TCP_MIN_HEADER = 20
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_FLAGS_MASK = 0xFF

COUNTERS = ("frames", "tcp", "non_ip", "non_tcp", "fragments", "truncated",
            "malformed", "unknown_linktype")


ETH_TYPES = layout([("type", 0, "u2"), ("tag1_type", 4, "u2"), ("tag2_type", 8, "u2")])
BE16 = layout([("v", 0, "u2")])
NULL_FAMILY = layout([("b0", 0, "u1"), ("b3", 3, "u1")])
FIRST_BYTE = layout([("v", 0, "u1")])
IPV4_HEADER = layout([("vihl", 0, "u1"), ("total", 2, "u2"), ("frag", 6, "u2"),
                      ("proto", 9, "u1"), ("src", 12, "u4"), ("dst", 16, "u4")])
IPV6_HEADER = layout([("vtc", 0, "u1"), ("plen", 4, "u2"), ("nh", 6, "u1"),
                      ("src_hi", 8, "u8"), ("src_lo", 16, "u8"), ("dst_hi", 24, "u8"),
                      ("dst_lo", 32, "u8")])
TCP_HEADER = layout([("sport", 0, "u2"), ("dport", 2, "u2"), ("seq", 4, "u4"),
                     ("ack", 8, "u4"), ("offset_flags", 12, "u2")])


class Segments:
    """Decoded TCP frames of one batch, in capture order (one entry per TCP frame).

    ``frame`` indexes the batch.  Addresses are 128-bit as two uint64 halves; IPv4
    addresses are IPv4-mapped (``hi == 0``, ``lo == 0xffff_xxxxxxxx``).
    ``payload_len`` is what the IP header says (capped by the frame's original length);
    ``payload_caplen`` is the part actually present in the buffer.
    """

    __slots__ = ("frame", "ipver", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport",
                 "dport", "seq", "ack", "flags", "payload_off", "payload_len",
                 "payload_caplen", "time", "wire_len")

    def __init__(self, **columns):
        for name in self.__slots__:
            setattr(self, name, columns[name])

    def __len__(self):
        return len(self.frame)


def _clipped(buf, pos, dtype):
    """Gather at positions that may lie past the buffer end (short frames, whose rows
    the caller masks out by caplen)."""
    last = len(buf) - dtype.itemsize
    if last < 0:
        return np.zeros(len(pos), dtype)
    return gather(buf, np.minimum(pos, last), dtype)


def _link_layer(lt, buf, off):
    """(IP header offset relative to frame start, IP version 4/6/0) for one link type."""
    n = len(off)
    if lt == LINKTYPE_ETHERNET:
        types = _clipped(buf, off + ETH_TYPE_AT, ETH_TYPES)
        etype = types["type"]
        l3 = np.full(n, ETH_HEADER_LEN, np.int64)
        for tag in ("tag1_type", "tag2_type")[:MAX_VLAN_TAGS]:
            tagged = (etype == ETHERTYPE_VLAN) | (etype == ETHERTYPE_QINQ)
            if not tagged.any():
                break
            etype = np.where(tagged, types[tag], etype)
            l3 += tagged * VLAN_TAG_LEN
        return l3, _version_of_ethertype(etype)
    if lt == LINKTYPE_LINUX_SLL:
        return (np.full(n, SLL_HEADER_LEN, np.int64),
                _version_of_ethertype(_clipped(buf, off + SLL_PROTOCOL_AT, BE16)["v"]))
    if lt == LINKTYPE_LINUX_SLL2:
        return (np.full(n, SLL2_HEADER_LEN, np.int64),
                _version_of_ethertype(_clipped(buf, off + SLL2_PROTOCOL_AT, BE16)["v"]))
    if lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # small family values have three zero bytes: OR-ing the end bytes reads the
        # value in either byte order
        fam = _clipped(buf, off, NULL_FAMILY)
        fam = fam["b0"] | fam["b3"]
        ver = np.where(fam == AF_INET, 4, np.where(np.isin(fam, AF_INET6_VALUES), 6, 0))
        return np.full(n, NULL_HEADER_LEN, np.int64), ver
    if lt in (LINKTYPE_RAW, LINKTYPE_RAW_OPENBSD):
        return np.zeros(n, np.int64), (_clipped(buf, off, FIRST_BYTE)["v"] >> 4).astype(np.int64)
    if lt == LINKTYPE_IPV4:
        return np.zeros(n, np.int64), np.full(n, 4, np.int64)
    if lt == LINKTYPE_IPV6:
        return np.zeros(n, np.int64), np.full(n, 6, np.int64)
    return None


def _version_of_ethertype(etype):
    return np.where(etype == ETHERTYPE_IPV4, 4, np.where(etype == ETHERTYPE_IPV6, 6, 0))


def _ipv6_extension_walk(buf, ip, nh, caplen_end):
    """Slow path: follow IPv6 extension headers.  Returns (tcp offset or -1, is_frag)."""
    pos = ip + IPV6_HEADER_LEN
    for _ in range(IPV6_MAX_EXTENSION_HEADERS):
        if nh == IPPROTO_TCP:
            return pos, False
        if nh == IPPROTO_FRAGMENT:
            return -1, True
        if nh not in IPV6_EXTENSION_HEADERS or pos + 2 > caplen_end:
            return -1, False
        nh, pos = buf[pos], pos + (buf[pos + 1] + 1) * 8
    return -1, False


def decode(buf, batch, counters):
    """Decode a batch; add to `counters` (dict with COUNTERS keys); return Segments."""
    n = len(batch)
    counters["frames"] += n
    off, caplen, origlen, lts = batch.data_off, batch.caplen, batch.origlen, batch.linktype

    # ---- link layer: per link type present in the batch
    if n and lts[0] == lts[-1] and (lts == lts[0]).all():
        kinds = [(int(lts[0]), None)]
    else:
        kinds = [(int(lt), np.flatnonzero(lts == lt)) for lt in np.unique(lts)]
    l3 = np.zeros(n, np.int64)
    ver = np.zeros(n, np.int64)
    for lt, rows in kinds:
        sel = slice(None) if rows is None else rows
        res = _link_layer(lt, buf, off[sel])
        if res is None:
            counters["unknown_linktype"] += n if rows is None else len(rows)
            continue
        l3[sel], ver[sel] = res
    counters["non_ip"] += int(np.count_nonzero(ver == 0))
    is4 = (ver == 4) & (caplen >= l3 + IPV4_MIN_HEADER)
    is6 = (ver == 6) & (caplen >= l3 + IPV6_HEADER_LEN)
    counters["truncated"] += int(np.count_nonzero(ver != 0)) - int(
        np.count_nonzero(is4) + np.count_nonzero(is6))
    ip = off + l3
    parts = []
    if is4.any():
        rows = None if is4.all() else np.flatnonzero(is4)
        parts.append(_ipv4(rows, buf, ip, l3, origlen, counters))
    if is6.any():
        rows = None if is6.all() else np.flatnonzero(is6)
        parts.append(_ipv6(rows, buf, ip, l3, caplen, origlen, counters))
    if not parts:
        return _tcp(np.zeros(0, np.int64), None, buf, batch, counters)
    if len(parts) == 1:
        rows, cols = parts[0]
    else:
        rows = np.concatenate([p[0] for p in parts])
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        cols = {k: np.concatenate([p[1][k] for p in parts])[order] for k in parts[0][1]}
    return _tcp(rows, cols, buf, batch, counters)


def _take(rows, *arrays):
    return arrays if rows is None else tuple(a[rows] for a in arrays)


def _ipv4(rows, buf, ip, l3, origlen, counters):
    """IPv4 frames `rows` (None: all) -> (rows of TCP frames, their columns)."""
    ip, l3, origlen = _take(rows, ip, l3, origlen)
    h = gather(buf, ip, IPV4_HEADER)
    vihl = h["vihl"]
    ihl = (vihl & 0xF).astype(np.int64) * 4
    total = h["total"].astype(np.int64)
    frag = (h["frag"] & IPV4_FRAGMENT_MASK) != 0
    tcp = h["proto"] == IPPROTO_TCP
    bad = ((vihl >> 4) != 4) | (ihl < IPV4_MIN_HEADER) | ((total != 0) & (total < ihl))
    counters["malformed"] += int(np.count_nonzero(bad))
    counters["fragments"] += int(np.count_nonzero(frag & ~bad))
    counters["non_tcp"] += int(np.count_nonzero(~tcp & ~frag & ~bad))
    # TSO/GSO frames on loopback may carry total length 0: the frame length rules
    ip_end = np.where(total == 0, origlen, l3 + total)
    keep = tcp & ~frag & ~bad
    if rows is None:
        rows = np.arange(len(ip))
    if not keep.all():
        sub = np.flatnonzero(keep)
        rows, h, l3, ihl, ip_end = rows[sub], h[sub], l3[sub], ihl[sub], ip_end[sub]
    zero = np.zeros(len(rows), np.uint64)
    prefix = np.uint64(IPV4_MAPPED_PREFIX)
    return rows, dict(ipver=np.full(len(rows), 4, np.uint8), src_hi=zero,
                      src_lo=h["src"].astype(np.uint64) | prefix, dst_hi=zero,
                      dst_lo=h["dst"].astype(np.uint64) | prefix, tcp=l3 + ihl,
                      ip_end=ip_end)


def _ipv6(rows, buf, ip, l3, caplen, origlen, counters):
    """IPv6 frames `rows` (None: all) -> (rows of TCP frames, their columns)."""
    ip, l3, caplen, origlen = _take(rows, ip, l3, caplen, origlen)
    h = gather(buf, ip, IPV6_HEADER)
    bad = (h["vtc"] >> 4) != 6
    plen = h["plen"].astype(np.int64)
    nh = h["nh"]
    tcp = np.where((nh == IPPROTO_TCP) & ~bad, l3 + IPV6_HEADER_LEN, -1)
    frag = (nh == IPPROTO_FRAGMENT) & ~bad
    for i in np.flatnonzero(np.isin(nh, IPV6_EXTENSION_HEADERS) & ~bad):
        start, head = int(ip[i]), int(l3[i])
        pos, frag[i] = _ipv6_extension_walk(buf, start, int(nh[i]),
                                            start - head + int(caplen[i]))
        if pos >= 0:
            tcp[i] = pos - start + head
    counters["malformed"] += int(np.count_nonzero(bad))
    counters["fragments"] += int(np.count_nonzero(frag))
    counters["non_tcp"] += int(np.count_nonzero((tcp < 0) & ~frag & ~bad))
    ip_end = np.where(plen == 0, origlen, l3 + IPV6_HEADER_LEN + plen)  # 0: jumbo/GSO
    keep = tcp >= 0
    if rows is None:
        rows = np.arange(len(ip))
    if not keep.all():
        sub = np.flatnonzero(keep)
        rows, h, tcp, ip_end = rows[sub], h[sub], tcp[sub], ip_end[sub]
    return rows, dict(ipver=np.full(len(rows), 6, np.uint8), src_hi=h["src_hi"],
                      src_lo=h["src_lo"], dst_hi=h["dst_hi"], dst_lo=h["dst_lo"],
                      tcp=tcp, ip_end=ip_end)


def _tcp(rows, cols, buf, batch, counters):
    all_rows = len(rows) == len(batch)  # rows is then 0..n-1: skip the gathers
    off, caplen, origlen, time = ((batch.data_off, batch.caplen, batch.origlen, batch.time)
                                  if all_rows else
                                  _take(rows, batch.data_off, batch.caplen, batch.origlen,
                                        batch.time))
    if cols is None:
        cols = dict(ipver=np.zeros(0, np.uint8), ip_end=np.zeros(0, np.int64),
                    tcp=np.zeros(0, np.int64),
                    **{k: np.zeros(0, np.uint64) for k in ("src_hi", "src_lo",
                                                            "dst_hi", "dst_lo")})
    tcp_rel = cols["tcp"]
    short = caplen < tcp_rel + TCP_MIN_HEADER
    if short.any():
        counters["truncated"] += int(np.count_nonzero(short))
        sub = np.flatnonzero(~short)
        rows, off, caplen, origlen, time, tcp_rel = _take(sub, rows, off, caplen, origlen,
                                                          time, tcp_rel)
        cols = {k: v[sub] for k, v in cols.items()}
    h = gather(buf, off + tcp_rel, TCP_HEADER)
    hl = h["offset_flags"]
    pay_rel = tcp_rel + (hl >> 12).astype(np.int64) * 4
    # the IP length rules (Ethernet padding is not payload), capped by the frame length
    payload_len = np.minimum(cols["ip_end"], origlen) - pay_rel
    bad = (pay_rel - tcp_rel < TCP_MIN_HEADER) | (payload_len < 0)
    if bad.any():
        counters["malformed"] += int(np.count_nonzero(bad))
        sub = np.flatnonzero(~bad)
        rows, off, caplen, origlen, time, h, hl, pay_rel, payload_len = _take(
            sub, rows, off, caplen, origlen, time, h, hl, pay_rel, payload_len)
        cols = {k: v[sub] for k, v in cols.items()}
    counters["tcp"] += len(rows)
    return Segments(
        frame=rows, ipver=cols["ipver"],
        src_hi=cols["src_hi"], src_lo=cols["src_lo"],
        dst_hi=cols["dst_hi"], dst_lo=cols["dst_lo"],
        sport=h["sport"].astype(np.int64), dport=h["dport"].astype(np.int64),
        seq=h["seq"].astype(np.int64), ack=h["ack"].astype(np.int64),
        flags=(hl & TCP_FLAGS_MASK).astype(np.int64),
        payload_off=off + pay_rel, payload_len=payload_len,
        payload_caplen=np.clip(caplen - pay_rel, 0, payload_len),
        time=time, wire_len=origlen)
