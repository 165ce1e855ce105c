"""Throughput per multifd channel over time, imbalance, stalls, SYNC rounds, compression.

Conventions (all functions here):

* Time is in seconds relative to ``t0``, the capture start (first segment of any
  connection); the absolute bin start is kept in ``time``.
* Bins are aligned on the absolute clock (``floor(time / bin) * bin``), like the
  ``timeline`` frame, so the 1 ms timeline bins fall whole into the analysis bins.
  Without ``bin_seconds`` the width is chosen from the capture length: the smallest
  1/2/5 x 10^k seconds giving at most 400 bins (160-400 bins), never finer than the
  timeline's own bin.
* A record's bytes are spread over the bins between its ``t_start`` and ``t_end``
  in proportion to the time spent in each (integer bytes, largest remainders, so
  per-channel totals are exact); a record whose ends fall in one bin counts there.
  The ``timeline`` frame (TCP payload and frame bytes per segment time) gives the
  wire view at segment resolution.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import wire
from ._common import (KINDS, capture_end, capture_start, channels_of, flow_to_channel, nice_bin,
                      page_size_by_channel, timeline_bin, unpack)

RATE_COLUMNS = ("goodput_Bps", "payload_Bps", "wire_Bps")


def choose_bin(packets, connections=None, timeline=None, *, max_bins: int = 400,
               minimum: float | None = None) -> float:
    """Automatic bin width (s) for a capture: 1/2/5 x 10^k, 160-400 bins."""
    packets, connections, timeline = unpack(packets, connections, timeline)
    t0 = capture_start(packets, connections, timeline)
    t1 = capture_end(packets, connections, timeline)
    return nice_bin(t1 - t0, max_bins=max_bins, minimum=minimum)


def _spread(start: float, end: float, nbytes: int, bin_s: float, origin_idx: int):
    """Integer bytes per bin index for one record spread over [start, end] (absolute)."""
    b0 = math.floor(start / bin_s)
    b1 = math.floor(end / bin_s)
    if b1 <= b0 or end <= start:
        return [(b0 - origin_idx, nbytes)]
    edges = np.arange(b0, b1 + 2, dtype=float) * bin_s
    lo = np.maximum(edges[:-1], start)
    hi = np.minimum(edges[1:], end)
    share = np.clip(hi - lo, 0, None) / (end - start) * nbytes
    whole = np.floor(share).astype(np.int64)
    rest = int(nbytes - whole.sum())
    if rest:
        order = np.argsort(-(share - whole), kind="stable")[:rest]
        whole[order] += 1
    return [(b0 + i - origin_idx, int(n)) for i, n in enumerate(whole) if n]


def throughput(packets, connections=None, timeline=None, *, bin_seconds: float | None = None,
               t0: float | None = None) -> pd.DataFrame:
    """Bytes per channel per time bin.

    One row per (channel, bin), every bin of the capture for every multifd channel:
    ``channel``, ``bin`` (index), ``time`` (absolute bin start), ``t`` (bin start
    relative to ``t0``), bytes by record kind ``init``, ``ram``, ``sync``,
    ``device_state``, their sum ``goodput`` (multifd bytes, spread over each record's
    time), ``payload_bytes`` / ``wire_bytes`` / ``segments`` (TCP payload, frame
    bytes incl. TCP/IP headers, segments; from ``timeline``, 0 without it), and rates
    ``goodput_Bps``, ``payload_Bps``, ``wire_Bps``.  ``df.attrs`` holds
    ``bin_seconds``, ``t0`` and ``origin`` (absolute start of bin 0).
    """
    src = packets
    packets, connections, timeline = unpack(packets, connections, timeline)
    tl_bin = timeline_bin(src, timeline)
    if t0 is None:
        t0 = capture_start(packets, connections, timeline)
    t1 = capture_end(packets, connections, timeline, tl_bin or 0.0)
    if bin_seconds is None:
        bin_seconds = nice_bin(t1 - t0, minimum=tl_bin)
    if bin_seconds <= 0:
        raise ValueError("bin_seconds must be positive")
    origin_idx = math.floor(t0 / bin_seconds)
    nbins = max(1, math.floor(t1 / bin_seconds) - origin_idx + 1)
    chans = channels_of(packets, connections)
    pos = {c: i for i, c in enumerate(chans)}
    acc = {k: np.zeros((len(chans), nbins), dtype=np.int64) for k in KINDS}

    if len(packets):
        pk = packets[packets["channel"].notna()]
        for ch, kind, s, e, n in zip(pk["channel"].to_numpy(), pk["kind"].to_numpy(),
                                     pk["t_start"].to_numpy(dtype=float),
                                     pk["t_end"].to_numpy(dtype=float),
                                     pk["wire_len"].to_numpy(dtype="int64", na_value=0)):
            row = acc.get(kind)
            if row is None:
                continue
            for b, nb in _spread(s, e, int(n), bin_seconds, origin_idx):
                row[pos[int(ch)], min(max(b, 0), nbins - 1)] += nb

    wire = {k: np.zeros((len(chans), nbins), dtype=np.int64)
            for k in ("payload_bytes", "wire_bytes", "segments")}
    if timeline is not None and len(timeline):
        fmap = flow_to_channel(connections)
        tl = timeline[timeline["flow"].isin(list(fmap))]
        if len(tl):
            ch_idx = np.array([pos[fmap[int(f)]] for f in tl["flow"]], dtype=np.int64)
            b = np.floor(tl["time"].to_numpy(dtype=float) / bin_seconds + 1e-6).astype(np.int64)
            b = np.clip(b - origin_idx, 0, nbins - 1)
            for k in wire:
                np.add.at(wire[k], (ch_idx, b), tl[k].to_numpy(dtype="int64", na_value=0))

    rows = {
        "channel": np.repeat(np.array(chans, dtype=np.int64), nbins),
        "bin": np.tile(np.arange(nbins), len(chans)),
    }
    df = pd.DataFrame(rows)
    df["time"] = (df["bin"] + origin_idx) * bin_seconds
    df["t"] = df["time"] - t0
    for k in KINDS:
        df[k] = acc[k].reshape(-1)
    df["goodput"] = df[list(KINDS)].sum(axis=1)
    for k, v in wire.items():
        df[k] = v.reshape(-1)
    df["goodput_Bps"] = df["goodput"] / bin_seconds
    df["payload_Bps"] = df["payload_bytes"] / bin_seconds
    df["wire_Bps"] = df["wire_bytes"] / bin_seconds
    df["channel"] = df["channel"].astype("Int64")
    df.attrs.update(bin_seconds=float(bin_seconds), t0=float(t0),
                    origin=float(origin_idx * bin_seconds),
                    has_timeline=bool(timeline is not None and len(timeline)))
    return df


def connection_series(timeline: pd.DataFrame, connections: pd.DataFrame, *,
                      bin_seconds: float, t0: float, role: str = "main") -> pd.DataFrame:
    """TCP payload/frame bytes per bin of the connections with ``role`` (e.g. main)."""
    cols = ["t", "payload_bytes", "wire_bytes"]
    if timeline is None or not len(timeline) or connections is None:
        return pd.DataFrame(columns=cols)
    flows = connections.loc[connections["role"] == role, "flow"].astype(int).tolist()
    tl = timeline[timeline["flow"].isin(flows)]
    if not len(tl):
        return pd.DataFrame(columns=cols)
    b = np.floor(tl["time"].to_numpy(dtype=float) / bin_seconds + 1e-6).astype(np.int64)
    g = tl.assign(b=b).groupby("b")[["payload_bytes", "wire_bytes"]].sum()
    full = np.arange(g.index.min(), g.index.max() + 1)
    g = g.reindex(full, fill_value=0)
    out = pd.DataFrame({"t": full * bin_seconds - t0,
                        "payload_bytes": g["payload_bytes"].to_numpy(dtype="int64"),
                        "wire_bytes": g["wire_bytes"].to_numpy(dtype="int64")})
    return out


def channel_stats(packets, connections=None, timeline=None, *,
                  page_size: int | None = None) -> pd.DataFrame:
    """One row per multifd channel: bytes by kind, share, records, rate, compression.

    Columns: ``channel``, ``flow``, ``records``, ``ram_packets``, ``sync_packets``,
    ``device_state_packets``, bytes ``init``/``ram``/``sync``/``device_state``,
    ``goodput`` (Σ record wire_len), ``tcp_bytes`` / ``frame_bytes`` (from
    ``connections``; frame bytes include TCP/IP headers), ``overhead`` (frame/tcp - 1),
    ``share`` (of all goodput), ``first``/``last`` (record times relative to the
    capture start), ``duration``, ``mean_Bps`` (goodput / duration), ``normal_pages``,
    ``zero_pages``, ``uncompressed_bytes`` (normal_pages x page_size),
    ``page_payload_bytes`` (payload of packets with pages), ``compression`` and
    ``compression_ratio`` (uncompressed / payload, 1.0 without compression).
    """
    packets, connections, timeline = unpack(packets, connections, timeline)
    t0 = capture_start(packets, connections, timeline)
    chans = channels_of(packets, connections)
    psize = page_size_by_channel(packets, connections, page_size)
    comp = compression_ratio(packets, connections, page_size=page_size).set_index("channel")
    fmap = {c: f for f, c in flow_to_channel(connections).items()}
    conn = connections.set_index("flow") if connections is not None and len(connections) \
        else None
    rows = []
    for ch in chans:
        pk = packets[packets["channel"] == ch] if len(packets) else packets
        by_kind = pk.groupby("kind", observed=True)["wire_len"].agg(["sum", "size"]) \
            if len(pk) else pd.DataFrame(columns=["sum", "size"])
        flow = fmap.get(ch)
        tcp = frame = None
        if conn is not None and flow is not None and flow in conn.index:
            tcp = int(conn.loc[flow, "bytes"])
            frame = int(conn.loc[flow, "wire_bytes"])
        first = float(pk["t_start"].min()) - t0 if len(pk) else math.nan
        last = float(pk["t_end"].max()) - t0 if len(pk) else math.nan
        goodput = int(pk["wire_len"].sum()) if len(pk) else 0
        dur = last - first if len(pk) else 0.0
        row = {
            "channel": ch, "flow": flow, "records": len(pk),
            **{f"{k}_packets": int(by_kind.loc[k, "size"]) if k in by_kind.index else 0
               for k in ("ram", "sync", "device_state")},
            **{k: int(by_kind.loc[k, "sum"]) if k in by_kind.index else 0 for k in KINDS},
            "goodput": goodput, "tcp_bytes": tcp, "frame_bytes": frame,
            "overhead": (frame / tcp - 1) if tcp else math.nan,
            "first": first, "last": last, "duration": dur,
            "mean_Bps": goodput / dur if dur > 0 else math.nan,
            "page_size": psize.get(ch),
        }
        if ch in comp.index:
            c = comp.loc[ch]
            row.update(normal_pages=int(c["normal_pages"]), zero_pages=int(c["zero_pages"]),
                       uncompressed_bytes=int(c["uncompressed_bytes"]),
                       page_payload_bytes=int(c["payload_bytes"]),
                       compression=c["compression"], compression_ratio=c["ratio"])
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        total = df["goodput"].sum()
        df["share"] = df["goodput"] / total if total else math.nan
        for k in ("flow", "tcp_bytes", "frame_bytes", "page_size"):
            df[k] = df[k].astype("Int64")
    return df


def imbalance(stats: pd.DataFrame, column: str = "goodput") -> dict:
    """How evenly the channels shared the bytes.

    ``cv`` is the coefficient of variation of bytes per channel (population standard
    deviation / mean; 0 = perfectly even), ``max_share`` / ``min_share`` the largest
    and smallest share, ``max_over_min`` their ratio, ``busiest`` / ``idlest`` the
    channels.
    """
    if not len(stats) or stats[column].sum() == 0:
        return {"channels": int(len(stats)), "cv": math.nan, "max_share": math.nan,
                "min_share": math.nan, "max_over_min": math.nan, "busiest": None,
                "idlest": None}
    v = stats[column].to_numpy(dtype=float)
    share = v / v.sum()
    return {
        "channels": int(len(v)),
        "cv": float(v.std(ddof=0) / v.mean()),
        "max_share": float(share.max()),
        "min_share": float(share.min()),
        "max_over_min": float(v.max() / v.min()) if v.min() > 0 else math.inf,
        "busiest": int(stats["channel"].iloc[int(v.argmax())]),
        "idlest": int(stats["channel"].iloc[int(v.argmin())]),
    }


def stalls(tp: pd.DataFrame, *, min_bins: int = 3, min_seconds: float | None = None,
           column: str | None = None) -> pd.DataFrame:
    """Intervals where one channel carried nothing while other channels did.

    A stall is a maximal run of consecutive bins of ``tp`` (from `throughput`) in
    which the channel carried 0 bytes while, in every bin of the run, at least one
    other channel carried some; bins where no channel carried anything (a pause of
    the whole migration) end a run.  It is reported when it lasts at least
    ``min_bins`` bins, or, if ``min_seconds`` is given, at least that long (rounded
    up to whole bins).  ``column`` defaults to ``payload_bytes`` (TCP, segment
    times) when the throughput has a timeline, else ``goodput``.

    Columns: ``channel``, ``start``, ``end`` (relative s), ``duration``, ``bins``,
    ``position`` (``start``: before the channel's first byte, ``end``: after its
    last, ``middle``), ``others_bytes`` (what the other channels carried meanwhile).
    """
    cols = ["channel", "start", "end", "duration", "bins", "position", "others_bytes"]
    if not len(tp):
        return pd.DataFrame(columns=cols)
    bin_s = tp.attrs.get("bin_seconds") or float(np.diff(np.unique(tp["t"]))[:1].sum() or 1)
    if column is None:
        column = "payload_bytes" if tp.attrs.get("has_timeline") else "goodput"
    need = max(1, int(min_bins)) if min_seconds is None else \
        max(1, math.ceil(min_seconds / bin_s - 1e-9))
    grid = tp.pivot(index="bin", columns="channel", values=column).fillna(0)
    arr = grid.to_numpy(dtype=np.int64)
    t = tp.drop_duplicates("bin").set_index("bin")["t"].reindex(grid.index).to_numpy()
    total = arr.sum(axis=1)
    out = []
    for j, ch in enumerate(grid.columns):
        col = arr[:, j]
        others = total - col
        busy = np.flatnonzero(col > 0)
        first, last = (busy[0], busy[-1]) if len(busy) else (len(col), -1)
        i = 0
        while i < len(col):
            if col[i] == 0 and others[i] > 0:
                k = i
                while k < len(col) and col[k] == 0 and others[k] > 0:
                    k += 1
                if k - i >= need:
                    pos = "start" if k <= first else "end" if i > last else "middle"
                    out.append((int(ch), float(t[i]), float(t[i] + (k - i) * bin_s),
                                float((k - i) * bin_s), k - i, pos, int(others[i:k].sum())))
                i = k
            else:
                i += 1
    return pd.DataFrame(out, columns=cols)


def assign_rounds(packets: pd.DataFrame) -> pd.Series:
    """SYNC round of every record: round k ends with the k-th SYNC (0-based) of its
    channel; the SYNC itself belongs to the round it ends.  Records after a channel's
    last SYNC get that count (an unfinished round).  Init packets get -1."""
    out = pd.Series(pd.NA, index=packets.index, dtype="Int64")
    if not len(packets):
        return out
    for _, pk in packets[packets["channel"].notna()].groupby("channel"):
        pk = pk.sort_values("stream_offset")
        is_sync = (pk["kind"] == "sync").to_numpy()
        before = np.concatenate([[0], np.cumsum(is_sync)[:-1]])
        r = before.astype(np.int64)
        r[(pk["kind"] == "init").to_numpy()] = -1
        out.loc[pk.index] = r
    return out


def sync_rounds(packets, connections=None, timeline=None) -> pd.DataFrame:
    """One row per SYNC round k (the k-th SYNC packet on every channel).

    ``round``, ``channels`` (how many channels sent their k-th SYNC), ``start``
    (relative time the previous round ended: the last channel's SYNC k-1 ``t_end``;
    round 0 starts at the first record), ``end`` (last channel's SYNC k ``t_end``),
    ``duration``, ``first_channel`` / ``last_channel`` (whose SYNC k completed first /
    last), ``spread`` (end - first channel's SYNC time), ``bytes`` (multifd bytes of
    the round on all channels, SYNC included), and one ``sync_ch<N>`` column per
    channel with the relative ``t_end`` of that channel's SYNC k.
    """
    packets, connections, timeline = unpack(packets, connections, timeline)
    t0 = capture_start(packets, connections, timeline)
    cols = ["round", "channels", "start", "end", "duration", "first_channel", "last_channel",
            "spread", "bytes"]
    if not len(packets):
        return pd.DataFrame(columns=cols)
    pk = packets.assign(round=assign_rounds(packets))
    sy = pk[pk["kind"] == "sync"].sort_values(["channel", "stream_offset"])
    if not len(sy):
        return pd.DataFrame(columns=cols)
    grid = sy.pivot_table(index="round", columns="channel", values="t_end", aggfunc="max")
    rbytes = pk[pk["round"] >= 0].groupby("round")["wire_len"].sum()
    rows = []
    prev_end = float(pk["t_start"].min())
    for k, row in grid.iterrows():
        done = row.dropna()
        end = float(done.max())
        rows.append({
            "round": int(k), "channels": int(len(done)),
            "start": prev_end - t0, "end": end - t0, "duration": end - prev_end,
            "first_channel": int(done.idxmin()), "last_channel": int(done.idxmax()),
            "spread": end - float(done.min()), "bytes": int(rbytes.get(k, 0)),
            **{f"sync_ch{int(c)}": (float(v) - t0 if not pd.isna(v) else math.nan)
               for c, v in row.items()},
        })
        prev_end = end
    return pd.DataFrame(rows)


def round_bytes(packets) -> pd.DataFrame:
    """Multifd bytes per SYNC round (rows) and channel (columns)."""
    packets, _, _ = unpack(packets)
    if not len(packets):
        return pd.DataFrame()
    pk = packets.assign(round=assign_rounds(packets))
    pk = pk[pk["round"] >= 0]
    return pk.pivot_table(index="round", columns="channel", values="wire_len",
                          aggfunc="sum", fill_value=0)


def compression_ratio(packets, connections=None, *, page_size: int | None = None) -> pd.DataFrame:
    """Per channel: pages sent uncompressed-equivalent vs payload bytes on the wire.

    ``normal_pages``, ``zero_pages`` (RAM and SYNC packets), ``uncompressed_bytes`` =
    normal_pages x page_size, ``payload_bytes`` = payload of the packets carrying pages
    (compressed size with zlib/zstd), ``ratio`` = uncompressed / payload (1.0 for
    nocomp; NaN without pages), ``compression`` (method seen on packets with pages).
    """
    packets, connections, _ = unpack(packets, connections)
    psize = page_size_by_channel(packets, connections, page_size)
    rows = []
    for ch in channels_of(packets, connections):
        pk = packets[(packets["channel"] == ch) & packets["kind"].isin(["ram", "sync"])] \
            if len(packets) else packets
        normal = int(pk["normal_pages"].fillna(0).sum()) if len(pk) else 0
        zero = int(pk["zero_pages"].fillna(0).sum()) if len(pk) else 0
        with_pages = pk[pk["normal_pages"].fillna(0) > 0] if len(pk) else pk
        payload = int(with_pages["payload_len"].fillna(0).sum()) if len(with_pages) else 0
        methods = sorted(set(with_pages["compression"].dropna())) if len(with_pages) else []
        unc = normal * psize.get(ch, wire.DEFAULT_PAGE_SIZE)
        rows.append({"channel": ch, "normal_pages": normal, "zero_pages": zero,
                     "uncompressed_bytes": unc, "payload_bytes": payload,
                     "ratio": unc / payload if payload else math.nan,
                     "compression": "/".join(methods) if methods else "none"})
    return pd.DataFrame(rows, columns=["channel", "normal_pages", "zero_pages",
                                       "uncompressed_bytes", "payload_bytes", "ratio",
                                       "compression"])


def summary(packets, connections=None, timeline=None, *, bin_seconds: float | None = None,
            min_bins: int = 3, min_seconds: float | None = None) -> dict:
    """Everything above for one capture, as frames plus the imbalance dict."""
    src = packets
    tp = throughput(src, connections, timeline, bin_seconds=bin_seconds)
    stats = channel_stats(src, connections, timeline)
    return {
        "bin_seconds": tp.attrs["bin_seconds"],
        "throughput": tp,
        "channels": stats,
        "imbalance": imbalance(stats),
        "stalls": stalls(tp, min_bins=min_bins, min_seconds=min_seconds),
        "rounds": sync_rounds(src, connections, timeline),
    }
