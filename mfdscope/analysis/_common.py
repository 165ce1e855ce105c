"""Helpers shared by the analysis modules: unpacking frames, channel maps, time origin.

Every analysis function takes DataFrames (``packets``, ``connections``, ``timeline``
as built by `mfdscope.frames`); for convenience the first argument may also be a
`mfdscope.Capture` (anything with those attributes), which is unpacked here.
Nothing in ``mfdscope.analysis`` reads files or sockets.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import wire

from ..frames import KINDS, opt  # noqa: F401  (re-exported for the analyses)


def unpack(obj, connections=None, timeline=None):
    """``(packets, connections, timeline)`` from a Capture or from explicit frames."""
    if hasattr(obj, "packets") and not isinstance(obj, pd.DataFrame):
        packets = obj.packets
        connections = obj.connections if connections is None else connections
        if timeline is None:
            timeline = getattr(obj, "timeline", None)
    else:
        packets = obj
    return _key_unnamed_channels(packets, connections) + (timeline,)


def _key_unnamed_channels(packets, connections):
    """A multifd connection whose initial packet was not captured (the capture began
    mid-stream) has no channel id; analyses key its records by ``-(flow + 1)`` so they
    are counted, not dropped (`channel_label` names it)."""
    if len(packets) and "channel" in packets and packets["channel"].isna().any():
        packets = packets.copy()
        na = packets["channel"].isna()
        packets.loc[na, "channel"] = -1 - packets.loc[na, "flow"]
    if connections is not None and len(connections) and "channel_id" in connections:
        na = (connections["role"] == "multifd") & connections["channel_id"].isna()
        if na.any():
            connections = connections.copy()
            connections.loc[na, "channel_id"] = -1 - connections.loc[na, "flow"]
    return packets, connections


def channel_label(ch) -> str:
    """``channel 2``, or ``flow 5 (no initial packet)`` for an unnamed channel."""
    ch = int(ch)
    return f"channel {ch}" if ch >= 0 else f"flow {-1 - ch} (no initial packet)"


def timeline_bin(obj, timeline) -> float | None:
    """Bin width of a Capture's timeline (``bin_seconds``), or a guess from the frame."""
    bs = getattr(obj, "bin_seconds", None)
    if bs:
        return float(bs)
    if timeline is None or not len(timeline):
        return None
    times = np.unique(timeline["time"].to_numpy(dtype=float))
    if len(times) < 2:
        return None
    return float(np.round(np.min(np.diff(times)), 9))


def multifd_connections(connections: pd.DataFrame | None) -> pd.DataFrame:
    if connections is None or not len(connections):
        return pd.DataFrame(columns=["flow", "role", "channel_id"])
    c = connections[connections["role"] == "multifd"]
    return c.sort_values("channel_id", na_position="last")


def flow_to_channel(connections: pd.DataFrame | None) -> dict[int, int]:
    mf = multifd_connections(connections)
    return {int(f): int(c) for f, c in zip(mf["flow"], mf["channel_id"]) if not pd.isna(c)}


def channels_of(packets: pd.DataFrame, connections: pd.DataFrame | None = None) -> list[int]:
    """Every multifd channel id seen in the connections or the packets, sorted."""
    chans = set(flow_to_channel(connections).values())
    if len(packets):
        chans |= {int(c) for c in packets["channel"].dropna().unique()}
    return sorted(chans)


def capture_start(packets, connections=None, timeline=None) -> float:
    """The time origin: the first segment of any connection, else the first record."""
    cands = []
    if connections is not None and len(connections) and "first_time" in connections:
        v = pd.to_numeric(connections["first_time"], errors="coerce").min()
        if not pd.isna(v):
            cands.append(float(v))
    if len(packets):
        cands.append(float(packets["t_start"].min()))
    if timeline is not None and len(timeline):
        cands.append(float(timeline["time"].min()))
    return min(cands) if cands else 0.0


def capture_end(packets, connections=None, timeline=None, timeline_bin_s: float = 0.0) -> float:
    cands = []
    if connections is not None and len(connections) and "last_time" in connections:
        v = pd.to_numeric(connections["last_time"], errors="coerce").max()
        if not pd.isna(v):
            cands.append(float(v))
    if len(packets):
        cands.append(float(packets["t_end"].max()))
    if timeline is not None and len(timeline):
        cands.append(float(timeline["time"].max()) + timeline_bin_s)
    return max(cands) if cands else 0.0


def page_size_by_channel(packets, connections=None, page_size: int | None = None) -> dict:
    """Page size per channel: given, else the connection's detected one, else 4096."""
    out = {}
    if connections is not None and len(connections) and "page_size" in connections:
        mf = multifd_connections(connections)
        for c, p in zip(mf["channel_id"], mf["page_size"]):
            if not pd.isna(c) and not pd.isna(p):
                out[int(c)] = int(p)
    for c in channels_of(packets, connections):
        if page_size is not None:
            out[c] = int(page_size)
        out.setdefault(c, wire.DEFAULT_PAGE_SIZE)
    return out


def nice_bin(duration: float, max_bins: int = 400, minimum: float | None = None) -> float:
    """Smallest 1/2/5 x 10^k seconds giving at most ``max_bins`` bins (so 160-400)."""
    if not duration or duration <= 0 or not math.isfinite(duration):
        return minimum or 0.001
    target = duration / max_bins
    exp = math.floor(math.log10(target))
    best = None
    for e in (exp, exp + 1):
        for m in (1, 2, 5):
            b = m * 10.0 ** e
            if b >= target * (1 - 1e-9) and (best is None or b < best):
                best = b
    best = float(f"{best:.1g}")
    if minimum is not None and best < minimum:
        best = minimum
    return best


def as_int(v, default=0) -> int:
    if v is None or v is pd.NA:
        return default
    try:
        if pd.isna(v):
            return default
    except (TypeError, ValueError):
        pass
    return int(v)


def frame_records(df: pd.DataFrame) -> list[dict]:
    """A DataFrame as JSON-able row dicts (NA -> None)."""
    return [{k: opt(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
