"""Columns of the DataFrames and their columnar builders.

One registry maps every column to its pandas dtype, its Wireshark-style field name
(``multifd.packet_num``) and what it means, as mptcpanalyzer does; the README's
column tables and the CLI's ``--filter`` translation are derived from it.  Columns
that can be missing use nullable dtypes (``Int64``, ``string``), never float.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import pandas as pd


#: record kinds, in the order tables show them
KINDS = ("init", "ram", "sync", "device_state")


class Column(NamedTuple):
    name: str
    dtype: str
    field: str  # Wireshark-style display-filter name
    doc: str


PACKET_COLUMNS = (
    Column("flow", "Int64", "tcp.stream", "connection number (as in `connections.flow`)"),
    Column("channel", "Int64", "multifd.channel", "multifd channel id from the initial packet"),
    Column("kind", "string", "multifd.kind", "init, ram, sync or device_state"),
    Column("stream_offset", "Int64", "multifd.offset", "offset of the record's first byte in the client-to-server stream"),
    Column("t_start", "float64", "multifd.time_start", "capture time of the segment holding the first byte (s)"),
    Column("t_end", "float64", "multifd.time_end", "capture time of the segment holding the last byte (s)"),
    Column("wire_len", "Int64", "multifd.wire_len", "bytes of the record on the wire, header and payload"),
    Column("flags", "Int64", "multifd.flags", "hdr.flags"),
    Column("flag_names", "string", "multifd.flags.names", "flags by name, e.g. SYNC|ZLIB"),
    Column("compression", "string", "multifd.compression", "none, zlib, zstd, qpl, uadk, qatzip (from the flags)"),
    Column("packet_num", "UInt64", "multifd.packet_num", "global packet number (RAM and SYNC only; a u64 on the wire)"),
    Column("pages_alloc", "Int64", "multifd.pages_alloc", "pages_alloc (0 in 9.2+ SYNC packets)"),
    Column("normal_pages", "Int64", "multifd.normal_pages", "pages whose data is in the payload"),
    Column("zero_pages", "Int64", "multifd.zero_pages", "zero pages listed after the normal ones (9.0+)"),
    Column("next_packet_size", "Int64", "multifd.next_packet_size", "next_packet_size as sent"),
    Column("payload_len", "Int64", "multifd.payload_len", "payload bytes that followed the packet"),
    Column("ramblock", "string", "multifd.ramblock", "RAMBlock idstr of a RAM packet"),
    Column("idstr", "string", "multifd.idstr", "device idstr of a device-state packet"),
    Column("instance_id", "Int64", "multifd.instance_id", "device instance id"),
    Column("vfio_version", "Int64", "multifd.vfio.version", "VFIO buffer header version"),
    Column("vfio_idx", "Int64", "multifd.vfio.idx", "VFIO buffer index"),
    Column("vfio_flags", "Int64", "multifd.vfio.flags", "VFIO buffer flags (1 = config state)"),
    Column("missing_bytes", "Int64", "multifd.missing", "payload bytes lost in capture holes"),
    Column("decompressed_len", "Int64", "multifd.decompressed_len", "decompressed payload size, when decompression was asked for"),
)

CONNECTION_COLUMNS = (
    Column("flow", "Int64", "tcp.stream", "connection number, in order of first appearance"),
    Column("role", "string", "multifd.role", "main, multifd, tls or unknown (from the first bytes)"),
    Column("channel_id", "Int64", "multifd.channel", "multifd channel id (initial packet byte 24)"),
    Column("uuid", "string", "multifd.uuid", "source VM UUID from the initial packet"),
    Column("src", "string", "tcp.src", "client address:port"),
    Column("dst", "string", "tcp.dst", "server address:port"),
    Column("bytes", "Int64", "tcp.bytes", "TCP payload bytes client to server (unique, retransmissions excluded)"),
    Column("bytes_reverse", "Int64", "tcp.bytes_reverse", "TCP payload bytes server to client"),
    Column("wire_bytes", "Int64", "frame.bytes", "frame bytes client to server, headers included"),
    Column("segments", "Int64", "tcp.segments", "TCP segments client to server"),
    Column("records", "Int64", "multifd.records", "multifd records decoded on this connection"),
    Column("page_size", "Int64", "multifd.page_size", "page size used (detected or given)"),
    Column("compression", "string", "multifd.compression", "compression seen on packets with pages"),
    Column("first_time", "float64", "frame.time_first", "first segment time (s)"),
    Column("last_time", "float64", "frame.time_last", "last segment time (s)"),
    Column("holes", "Int64", "tcp.holes", "number of gaps in the client-to-server stream"),
    Column("hole_bytes", "Int64", "tcp.hole_bytes", "bytes missing in those gaps"),
    Column("retransmitted_bytes", "Int64", "tcp.retransmitted_bytes", "payload bytes seen more than once"),
    Column("out_of_order_segments", "Int64", "tcp.out_of_order", "segments that arrived before a gap was filled"),
    Column("syn_seen", "boolean", "tcp.syn_seen", "the handshake was captured"),
    Column("end", "string", "tcp.end", "fin, rst or eof (capture ended first)"),
    Column("main_flushes", "Int64", "main.flushes", "main connection: RAM_SAVE_FLAG_MULTIFD_FLUSH records"),
    Column("main_eos", "Int64", "main.eos", "main connection: RAM_SAVE_FLAG_EOS records (ram section parts ended)"),
    Column("main_zero_pages", "Int64", "main.zero_pages", "main connection: zero pages sent on main (legacy zero-page detection)"),
    Column("main_normal_pages", "Int64", "main.normal_pages", "main connection: full pages sent on main (RAM_SAVE_FLAG_PAGE)"),
    Column("main_switchover_start", "Int64", "main.switchover_start", "main connection: MIG_CMD_SWITCHOVER_START commands (10.0+)"),
    Column("main_unparsed_bytes", "Int64", "main.unparsed", "main connection: bytes after the point where parsing stopped (device sections)"),
)

#: what `mfdscope.mainchannel` decodes of the main connection, one row per item
MAIN_KINDS = ("header", "configuration", "section", "command", "mem_size", "pages", "flush",
              "eos", "eof", "opaque")

MAIN_COLUMNS = (
    Column("flow", "Int64", "tcp.stream", "connection number (as in `connections.flow`)"),
    Column("kind", "string", "main.kind", "header, configuration, section, command, mem_size, pages, flush, eos, eof or opaque"),
    Column("stream_offset", "Int64", "main.offset", "offset of the item's first byte in the main stream"),
    Column("time", "float64", "main.time", "capture time of the bytes that completed the item (s)"),
    Column("wire_len", "Int64", "main.wire_len", "bytes of the item (pages: of all its page records)"),
    Column("section_type", "string", "main.section.type", "start, part, end or full"),
    Column("section_id", "Int64", "main.section.id", "section id (sections, and the ram section a flush, eos or pages row belongs to)"),
    Column("idstr", "string", "main.section.idstr", "section idstr (ram, timer, ...)"),
    Column("instance_id", "Int64", "main.section.instance", "section instance id (START/FULL)"),
    Column("version_id", "Int64", "main.section.version", "section version id (START/FULL)"),
    Column("cmd", "Int64", "main.cmd", "MIG_CMD_* value of a command"),
    Column("cmd_name", "string", "main.cmd.name", "command name, e.g. SWITCHOVER_START"),
    Column("cmd_len", "Int64", "main.cmd.len", "command payload length"),
    Column("zero_pages", "Int64", "main.zero_pages", "pages: RAM_SAVE_FLAG_ZERO records in this ram section part"),
    Column("normal_pages", "Int64", "main.normal_pages", "pages: RAM_SAVE_FLAG_PAGE records in this ram section part"),
    Column("unparsed_bytes", "Int64", "main.unparsed", "opaque: bytes after this point, counted but not parsed"),
    Column("mem_total", "Int64", "main.mem_size", "mem_size: total RAM bytes announced"),
    Column("blocks", "string", "main.blocks", "mem_size: RAMBlocks as name:used_length"),
    Column("detail", "string", "main.detail", "header version, machine type, or why parsing stopped"),
)

TIMELINE_COLUMNS = (
    Column("flow", "Int64", "tcp.stream", "connection"),
    Column("time", "float64", "frame.time", "start of the time bin (s)"),
    Column("payload_bytes", "Int64", "tcp.len", "TCP payload bytes client to server in the bin (first transmissions)"),
    Column("wire_bytes", "Int64", "frame.len", "frame bytes of those segments, TCP/IP headers included"),
    Column("segments", "Int64", "tcp.segments", "segments in the bin"),
)

EXPERT_COLUMNS = (
    Column("severity", "string", "expert.severity", "error, warn or note"),
    Column("group", "string", "expert.group", "what kind of problem (header, length, hole, ...)"),
    Column("flow", "Int64", "tcp.stream", "connection, or <NA> for the capture as a whole"),
    Column("offset", "Int64", "multifd.offset", "stream offset the item refers to"),
    Column("time", "float64", "frame.time", "capture time (s)"),
    Column("message", "string", "expert.message", "what was found"),
)


def opt(v):
    """A pandas scalar as a plain Python value (None for NA), for JSON."""
    if v is None or v is pd.NA:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v


def build(columns: tuple[Column, ...], rows: list[tuple]) -> pd.DataFrame:
    """A DataFrame from row tuples in column order, with the registry's dtypes."""
    data = list(zip(*rows)) if rows else [()] * len(columns)
    return pd.DataFrame({c.name: pd.array(list(v), dtype=c.dtype) for c, v in zip(columns, data)})


_FIELD_TO_COLUMN = {c.field: c.name for c in PACKET_COLUMNS}
_FIELD_RE = re.compile(r"\b(?:multifd|tcp)(?:\.[a-z_]+)+\b")


def translate_filter(expr: str) -> str:
    """Accept Wireshark-style names in a pandas query: ``multifd.packet_num > 3``."""
    return _FIELD_RE.sub(lambda m: _FIELD_TO_COLUMN.get(m.group(0), m.group(0)), expr)
