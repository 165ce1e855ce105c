"""`mfdscope.open(path)`: a capture file in, DataFrames out."""
from __future__ import annotations

import json
import os
import uuid as uuidlib
from dataclasses import dataclass, field

import pandas as pd

from . import frames, wire
from .capture import CaptureError, Reassembler, open_capture
from .dissect import Dissector
from .mainchannel import MainChannelParser

from .frames import KINDS, opt as _opt


@dataclass
class Capture:
    """A dissected capture: ``connections``, ``packets``, ``expert`` and ``main`` (the
    main migration channel's sections, commands and RAM markers) DataFrames."""

    path: str
    format: str
    connections: pd.DataFrame
    packets: pd.DataFrame
    expert: pd.DataFrame
    #: payload and frame bytes per flow per time bin (``bin_seconds``)
    timeline: pd.DataFrame = field(default_factory=pd.DataFrame)
    bin_seconds: float = 0.001
    stats: dict = field(default_factory=dict)
    #: the main channel, one row per item (`frames.MAIN_COLUMNS`)
    main: pd.DataFrame = field(default_factory=lambda: frames.build(frames.MAIN_COLUMNS, []))

    # -------------------------------------------------------------- convenience
    @property
    def multifd(self) -> pd.DataFrame:
        """The multifd connections, by channel id."""
        c = self.connections
        return c[c["role"] == "multifd"].sort_values("channel_id", na_position="last")

    def channels(self) -> list[dict]:
        """One dict per connection, as ``mfdscope summary --json`` prints them."""
        counts = {}
        if len(self.packets):
            grouped = self.packets.groupby(["flow", "kind"], observed=True).size()
            for (flow, kind), n in grouped.items():
                counts.setdefault(int(flow), {})[kind] = int(n)
        pages = self.packets.groupby("flow")[["normal_pages", "zero_pages"]].sum() \
            if len(self.packets) else None
        out = []
        for row in self.connections.itertuples(index=False):
            flow = int(row.flow)
            c = counts.get(flow, {})
            main = {}
            if row.role == "main":
                main = {k: _opt(getattr(row, k)) for k in _MAIN_SUMMARY}
            out.append({
                "flow": flow,
                "role": row.role,
                "channel_id": _opt(row.channel_id),
                "uuid": _opt(row.uuid),
                "src": row.src,
                "dst": row.dst,
                "bytes": int(row.bytes),
                "bytes_reverse": int(row.bytes_reverse),
                "records": {k: c.get(k, 0) for k in KINDS},
                "normal_pages": int(pages.loc[flow, "normal_pages"]) if pages is not None
                and flow in pages.index else 0,
                "zero_pages": int(pages.loc[flow, "zero_pages"]) if pages is not None
                and flow in pages.index else 0,
                "page_size": _opt(row.page_size),
                "compression": _opt(row.compression),
                "holes": int(row.holes),
                "hole_bytes": int(row.hole_bytes),
                "first_time": _opt(row.first_time),
                "last_time": _opt(row.last_time),
                **main,
            })
        return out

    def summary(self) -> dict:
        """The capture as one JSON-able dict (``mfdscope summary --json``)."""
        sev = self.expert["severity"].value_counts().to_dict() if len(self.expert) else {}
        return {
            "capture": self.path,
            "format": self.format,
            "channels": self.channels(),
            "expert": {k: int(sev.get(k, 0)) for k in ("error", "warn", "note")},
            **self.stats,
        }

    def summary_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.summary(), indent=indent)

    def __repr__(self) -> str:
        mf = self.multifd
        return (f"<mfdscope.Capture {os.path.basename(self.path)}: {len(self.connections)} "
                f"connections ({len(mf)} multifd), {len(self.packets)} records, "
                f"{len(self.expert)} expert items>")

    def _repr_html_(self) -> str:
        head = f"<p><b>{self.path}</b> ({self.format}): {len(self.packets)} multifd records, " \
               f"{len(self.expert)} expert items</p>"
        cols = ["flow", "role", "channel_id", "src", "dst", "bytes", "records", "holes",
                "first_time", "last_time"]
        return head + self.connections[cols].to_html(index=False)


#: main-connection figures that ``summary --json`` adds to a main connection's entry
_MAIN_SUMMARY = ("main_flushes", "main_eos", "main_zero_pages", "main_normal_pages",
                 "main_switchover_start", "main_unparsed_bytes")


def open(path: str | os.PathLike, *, page_size: int | None = None,  # noqa: A001
         decompress: bool = False, bin_seconds: float = 0.001) -> Capture:
    """Read, reassemble and dissect a pcap or pcapng file.

    Raises `CaptureError` (with a one-line reason) when the file cannot be read as a
    capture; problems inside a readable capture become rows of ``expert``.
    """
    path = os.fspath(path)
    cap = open_capture(path)
    try:
        dis = Dissector(page_size=page_size, decompress=decompress, bin_seconds=bin_seconds)
        reasm = Reassembler(dis)
        for batch in cap.batches():
            reasm.add_batch(batch.buf, batch)
        reasm.finish()
        warnings = list(cap.warnings) + list(getattr(reasm, "warnings", []))
        return _build(path, cap.format, dis, reasm, warnings)
    finally:
        close = getattr(cap, "close", None)
        if close:
            close()


def _channel_set_problems(conn_rows: list[tuple]) -> list[tuple]:
    """What a QEMU destination would refuse across channels (spec 5.6): the same id
    twice, or initial packets whose UUIDs differ (each must equal the destination's)."""
    out, seen = [], {}
    uuids = {}
    for flow, role, cid, uuid, *_ in conn_rows:
        if role != "multifd" or cid is None:
            continue
        if cid in seen:
            out.append(("error", "init", flow, 0, None,
                        f"multifd: received id '{cid}' already setup' (channel {cid} also on "
                        f"flow {seen[cid]})"))
        seen.setdefault(cid, flow)
        if uuid is not None:
            uuids.setdefault(uuid, []).append(cid)
    if len(uuids) > 1:
        out.append(("error", "init", None, None, None, "multifd channels carry different "
                    "UUIDs: " + "; ".join(f"{u} on channel(s) {sorted(c)}"
                                          for u, c in uuids.items())))
    return out


def _build(path: str, fmt: str, dis: Dissector, reasm, warnings: list[str]) -> Capture:
    conn_rows = []
    for conn, flow in sorted(dis.flows.items(), key=lambda kv: kv[1]):
        c2s, s2c, st = dis.primary(conn)  # "c2s": the direction carrying the migration
        role = st.role.value if st is not None and st.role is not None else "unknown"
        parser = st.parser if st is not None else None
        mp = parser if isinstance(parser, MainChannelParser) else None
        comp = None
        if parser is not None and mp is None and parser.compression is not None:
            comp = wire.compression_label(parser.compression)
        uuid = str(uuidlib.UUID(bytes=st.uuid)) if st is not None and st.uuid else None
        main = (mp.counts["flush"], mp.counts["eos"], mp.counts["zero_pages"],
                mp.counts["normal_pages"], mp.counts["switchover_start"], mp.unparsed) \
            if mp is not None else (None,) * len(_MAIN_SUMMARY)
        times = [t for t in (c2s.first_time, s2c.first_time) if t is not None]
        ltimes = [t for t in (c2s.last_time, s2c.last_time) if t is not None]
        conn_rows.append((
            flow, role, st.channel_id if st else None, uuid, c2s.src, c2s.dst,
            c2s.bytes, s2c.bytes, c2s.wire_bytes, c2s.segments,
            st.records if st else 0,
            parser.page_size if parser is not None and mp is None else None, comp,
            min(times) if times else None, max(ltimes) if ltimes else None,
            c2s.holes, c2s.hole_bytes, c2s.retransmitted_bytes, c2s.out_of_order_segments,
            bool(c2s.syn_seen or s2c.syn_seen), dis.ends.get(c2s, "eof"), *main,
        ))
    expert_rows = [("warn", "capture", None, None, None, w) for w in warnings]
    expert_rows += dis.expert_rows
    for conn, flow in dis.flows.items():
        s = dis.primary(conn)[0]
        if s.holes:
            expert_rows.append(("warn", "hole", flow, None, s.last_time,
                                f"{s.holes} gap(s), {s.hole_bytes} bytes missing from the "
                                f"capture ({s.src} -> {s.dst})"))
    expert_rows += _channel_set_problems(conn_rows)
    counts = reasm.counters
    roles = [r[1] for r in conn_rows]
    if not counts["tcp"]:
        expert_rows.append(("note", "capture", None, None, None,
                            f"no TCP in this capture ({counts['frames']} frames: "
                            f"{counts['non_ip']} not IP, {counts['non_tcp']} IP but not TCP)"))
    elif not {"main", "multifd"} & set(roles):
        expert_rows.append(("note", "capture", None, None, None,
                            f"no migration traffic: none of the {len(conn_rows)} TCP "
                            "connections starts with QEVM or the multifd magic"))
    connections = frames.build(frames.CONNECTION_COLUMNS, conn_rows)
    packets = frames.build(frames.PACKET_COLUMNS, dis.packet_rows)
    if len(packets):
        packets = packets.sort_values(["t_start", "flow", "stream_offset"], kind="stable") \
            .reset_index(drop=True)
    expert = frames.build(frames.EXPERT_COLUMNS, expert_rows)
    # frame counts by what they were (tcp, non_ip, fragments, ...): a capture with no
    # migration in it says here why
    stats = {"frames": {k: int(v) for k, v in reasm.counters.items()}}
    timeline = frames.build(frames.TIMELINE_COLUMNS, dis.timeline.rows())
    main = frames.build(frames.MAIN_COLUMNS, dis.main_rows)
    if len(main):
        main = main.sort_values(["flow", "stream_offset"], kind="stable").reset_index(drop=True)
    return Capture(path, fmt, connections, packets, expert, timeline,
                   dis.timeline.bin_seconds, stats, main)


__all__ = ["Capture", "CaptureError", "open"]
