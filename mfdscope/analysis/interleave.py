"""Device-state (VFIO) buffers over multifd: where they went, when, in which order.

Arrival order is taken as the order of ``t_end`` (the capture time of the segment
holding a record's last byte: the earliest moment a receiver could have the whole
buffer), ties broken by channel and stream offset.  Within one channel the stream
order is exact; across channels only capture times are comparable (spec 5.5).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import wire
from ._common import capture_start, channels_of, unpack

DS_COLUMNS = [
    "idstr", "instance_id", "vfio_idx", "vfio_flags", "is_config", "channel", "flow",
    "stream_offset", "t_start", "t_end", "wire_len", "data_len", "arrival",
    "after_last_ram", "dt_last_ram", "after_own_last_sync", "dt_own_last_sync",
    "syncs_done",
]


def _sort_arrival(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["t_end", "channel", "stream_offset"], kind="stable")


def device_state_table(packets, connections=None, timeline=None, *,
                       relative: bool = True) -> pd.DataFrame:
    """One row per device-state buffer, in arrival order.

    ``idstr``, ``instance_id``, ``vfio_idx``, ``vfio_flags``, ``is_config``
    (``vfio_flags & 1``), ``channel``, ``flow``, ``stream_offset``, ``t_start`` /
    ``t_end`` (relative to the capture start unless ``relative=False``),
    ``wire_len`` (276-byte header + VFIO buffer), ``data_len`` (VFIO data after its
    12-byte header), ``arrival`` (0-based rank by t_end over all buffers),
    ``after_last_ram`` (the buffer started after the last RAM packet of the whole
    migration had ended), ``dt_last_ram`` (t_end - that RAM packet's t_end),
    ``after_own_last_sync`` (in its channel's stream after that channel's last SYNC:
    exact, by stream offset), ``dt_own_last_sync`` (t_end - that SYNC's t_end),
    ``syncs_done`` (channels whose last SYNC had ended before this buffer started),
    and ``dt_sync_ch<N>`` per channel (t_end - channel N's last SYNC t_end).
    """
    packets, connections, timeline = unpack(packets, connections, timeline)
    chans = channels_of(packets, connections)
    t0 = capture_start(packets, connections, timeline) if relative else 0.0
    if not len(packets):
        return pd.DataFrame(columns=DS_COLUMNS)
    ds = packets[packets["kind"] == "device_state"].copy()
    if not len(ds):
        return pd.DataFrame(columns=DS_COLUMNS + [f"dt_sync_ch{c}" for c in chans])
    ram = packets[packets["kind"] == "ram"]
    last_ram = float(ram["t_end"].max()) if len(ram) else math.nan
    sy = packets[packets["kind"] == "sync"]
    last_sync = sy.sort_values("stream_offset").groupby("channel").last() if len(sy) else None
    ds = _sort_arrival(ds)
    out = pd.DataFrame({
        "idstr": ds["idstr"].astype("string"),
        "instance_id": ds["instance_id"].astype("Int64"),
        "vfio_idx": ds["vfio_idx"].astype("Int64"),
        "vfio_flags": ds["vfio_flags"].astype("Int64"),
    })
    out["is_config"] = (out["vfio_flags"].fillna(0).astype("int64")
                        & wire.VFIO_DEVICE_STATE_CONFIG_STATE).astype(bool)
    out["channel"] = ds["channel"].astype("Int64")
    out["flow"] = ds["flow"].astype("Int64")
    out["stream_offset"] = ds["stream_offset"].astype("Int64")
    out["t_start"] = ds["t_start"].astype(float) - t0
    out["t_end"] = ds["t_end"].astype(float) - t0
    out["wire_len"] = ds["wire_len"].astype("Int64")
    out["data_len"] = (ds["next_packet_size"].astype("Int64") - wire.VFIO_BUFFER.size).clip(lower=0)
    out["arrival"] = np.arange(len(out))
    out["after_last_ram"] = (ds["t_start"].astype(float) >= last_ram) if len(ram) else True
    out["dt_last_ram"] = ds["t_end"].astype(float) - last_ram
    own_after, own_dt = [], []
    for ch, off, te in zip(ds["channel"], ds["stream_offset"], ds["t_end"]):
        if last_sync is not None and ch in last_sync.index:
            s = last_sync.loc[ch]
            own_after.append(bool(off > s["stream_offset"]))
            own_dt.append(float(te) - float(s["t_end"]))
        else:
            own_after.append(None)
            own_dt.append(math.nan)
    out["after_own_last_sync"] = pd.array(own_after, dtype="boolean")
    out["dt_own_last_sync"] = own_dt
    sync_ends = {int(c): float(r["t_end"]) for c, r in last_sync.iterrows()} \
        if last_sync is not None else {}
    starts = ds["t_start"].astype(float).to_numpy()
    out["syncs_done"] = [sum(1 for e in sync_ends.values() if e <= s) for s in starts]
    for c in chans:
        e = sync_ends.get(c, math.nan)
        out[f"dt_sync_ch{c}"] = ds["t_end"].astype(float).to_numpy() - e
    return out.reset_index(drop=True)


def reorder_depth(idx_in_arrival_order) -> int:
    """Most buffers a receiver must hold at once, waiting for an earlier ``idx``.

    The receiver writes buffers strictly in idx order starting at the smallest idx
    (0 for VFIO); a buffer that arrives before all lower indices is held.  0 means
    the buffers arrived in order.
    """
    seq = [int(i) for i in idx_in_arrival_order]
    if not seq:
        return 0
    expected = min(seq)
    held: set[int] = set()
    depth = 0
    for i in seq:
        if i == expected:
            expected += 1
            while expected in held:
                held.discard(expected)
                expected += 1
        else:
            held.add(i)
            depth = max(depth, len(held))
    return depth


def device_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per device (idstr, instance_id) from `device_state_table`.

    ``buffers``, ``bytes`` (wire), ``data_bytes``, ``channels`` (sorted list used),
    ``first`` / ``last`` (t_start of the first, t_end of the last buffer),
    ``duration``, ``in_order`` (indices arrived in increasing order by t_end),
    ``reorder_depth`` (see `reorder_depth`), ``missing_idx`` (gaps in 0..max idx),
    ``config_idx`` / ``config_t_end`` (the buffer with vfio_flags & 1),
    ``config_last_idx`` (the config buffer has the highest idx, as QEMU sends it),
    ``config_arrived_last`` (and arrived after every data buffer of the device),
    ``arrival_order`` (idx list in arrival order).
    """
    cols = ["idstr", "instance_id", "buffers", "bytes", "data_bytes", "channels", "first",
            "last", "duration", "in_order", "reorder_depth", "missing_idx", "config_idx",
            "config_t_end", "config_last_idx", "config_arrived_last", "arrival_order"]
    if not len(table):
        return pd.DataFrame(columns=cols)
    rows = []
    for (idstr, inst), g in table.groupby(["idstr", "instance_id"], sort=False, dropna=False):
        g = g.sort_values("arrival")
        idx = [int(i) for i in g["vfio_idx"].dropna()]
        cfg = g[g["is_config"]]
        present = set(idx)
        top = max(idx) if idx else -1
        rows.append({
            "idstr": idstr, "instance_id": inst, "buffers": len(g),
            "bytes": int(g["wire_len"].sum()), "data_bytes": int(g["data_len"].sum()),
            "channels": sorted(int(c) for c in g["channel"].dropna().unique()),
            "first": float(g["t_start"].min()), "last": float(g["t_end"].max()),
            "duration": float(g["t_end"].max() - g["t_start"].min()),
            "in_order": idx == sorted(idx), "reorder_depth": reorder_depth(idx),
            "missing_idx": [i for i in range(0, top + 1) if i not in present],
            "config_idx": int(cfg["vfio_idx"].iloc[0]) if len(cfg) else None,
            "config_t_end": float(cfg["t_end"].iloc[0]) if len(cfg) else math.nan,
            "config_last_idx": bool(len(cfg) and int(cfg["vfio_idx"].iloc[0]) == top),
            "config_arrived_last": bool(len(cfg) and cfg["arrival"].iloc[0] == g["arrival"].max()),
            "arrival_order": idx,
        })
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values("first", kind="stable").reset_index(drop=True)


def device_overlaps(summary: pd.DataFrame) -> pd.DataFrame:
    """Which devices' transfers (first buffer start -> last buffer end) overlapped.

    One row per overlapping pair, in order of the overlap's start: ``device_a``,
    ``device_b`` (``idstr:instance`` labels; a started first), ``start``, ``end``,
    ``overlap`` (s), ``share_a`` / ``share_b`` (overlap / each device's duration).
    """
    cols = ["device_a", "device_b", "start", "end", "overlap", "share_a", "share_b"]
    rows = []
    s = summary.sort_values("first", kind="stable").reset_index(drop=True)
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            a, b = s.iloc[i], s.iloc[j]
            lo, hi = max(a["first"], b["first"]), min(a["last"], b["last"])
            if hi > lo:
                rows.append((device_label(a), device_label(b), lo, hi, hi - lo,
                             (hi - lo) / a["duration"] if a["duration"] else math.nan,
                             (hi - lo) / b["duration"] if b["duration"] else math.nan))
    return pd.DataFrame(rows, columns=cols).sort_values("start", kind="stable") \
        .reset_index(drop=True)


def device_label(row) -> str:
    return f"{row['idstr']}:{row['instance_id']}"


def channel_sequences(packets) -> dict[int, list[tuple[str, int]]]:
    """Per channel, the stream-order sequence of (idstr, vfio_idx) of device buffers."""
    packets, _, _ = unpack(packets)
    out: dict[int, list[tuple[str, int]]] = {}
    if not len(packets):
        return out
    ds = packets[packets["kind"] == "device_state"].sort_values(["channel", "stream_offset"])
    for ch, g in ds.groupby("channel"):
        out[int(ch)] = [(str(i), int(x)) for i, x in zip(g["idstr"], g["vfio_idx"])]
    return out


def interleaving(packets, connections=None, timeline=None) -> dict:
    """``{"buffers": device_state_table, "devices": device_summary,
    "overlaps": device_overlaps}`` for one capture."""
    table = device_state_table(packets, connections, timeline)
    summ = device_summary(table)
    return {"buffers": table, "devices": summ, "overlaps": device_overlaps(summ)}
