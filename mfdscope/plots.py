"""Figures for a dissected capture (matplotlib, Agg canvas; every function returns a
`matplotlib.figure.Figure` and never touches pyplot's global state).

* `io_graph`: bytes/s per channel over time (multifd goodput, TCP frame bytes).
* `timeline`: one lane per channel, records as bars between t_start and t_end,
  devices in distinct colours, SYNC rounds as vertical lines.
* `accounting_chart`: multifd-bytes by source (wire, predicted, query-migrate, truth).
"""
from __future__ import annotations

import os

import matplotlib

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from . import wire
from .analysis import throughput as _tp
from .analysis._common import capture_start, channel_label, channels_of, unpack
from .analysis.accounting import AccountingResult

KIND_COLORS = {"init": "#7f7f7f", "ram": "#4c72b0", "sync": "#222222"}
DEVICE_COLORS = ["#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
                 "#8c8c8c", "#ccb974", "#64b5cd"]


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _bytes_fmt(v: float, _pos=None) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= div:
            return f"{v / div:g} {unit}"
    return f"{v:g} B"


def _title(cap, what: str) -> str:
    path = getattr(cap, "path", None)
    return f"{what} — {os.path.basename(path)}" if path else what


def io_graph(cap, connections=None, timeline=None, *, bin_seconds: float | None = None,
             tp=None, show_wire: bool = True, show_main: bool = True) -> Figure:
    """Bytes per second per channel over time.

    Solid lines: multifd goodput per channel (record bytes spread over their
    duration).  Dotted, same colour: frame bytes on the wire (TCP/IP headers
    included) when the capture has a timeline.  Grey dashed: the main channel.
    """
    packets, connections, timeline = unpack(cap, connections, timeline)
    if tp is None:
        tp = _tp.throughput(cap, connections, timeline, bin_seconds=bin_seconds)
    bin_s = tp.attrs["bin_seconds"]
    fig = _figure(10, 4.8)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"]
    wire_on = show_wire and tp.attrs.get("has_timeline")
    handles = []
    for i, (ch, g) in enumerate(tp.groupby("channel")):
        x = g["t"].to_numpy()
        line, = ax.step(x, g["goodput_Bps"], where="post", color=colors(i % 10), lw=1.4,
                        label=channel_label(ch))
        handles.append(line)
        if wire_on:
            ax.step(x, g["wire_Bps"], where="post", color=colors(i % 10), lw=0.9, ls=":",
                    alpha=0.9, label=f"{channel_label(ch)} wire (frames)")
    if wire_on:
        handles.append(Line2D([], [], color="k", lw=1.4, label="solid: multifd goodput"))
        handles.append(Line2D([], [], color="k", lw=0.9, ls=":",
                              label="dotted: wire (frames, TCP/IP incl.)"))
    if show_main and timeline is not None and len(timeline):
        main = _tp.connection_series(timeline, connections, bin_seconds=bin_s,
                                     t0=tp.attrs["t0"])
        if len(main):
            line, = ax.step(main["t"], main["wire_bytes"] / bin_s, where="post", color="0.45",
                            lw=1, ls="--", label="main channel (wire)")
            handles.append(line)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, p: _bytes_fmt(v) + "/s"))
    ax.set_xlabel("time since capture start (s)")
    ax.set_ylabel("throughput (bytes/s)")
    ax.set_title(_title(cap, f"IO graph per multifd channel (bin {bin_s * 1e3:g} ms)"))
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)
    return fig


def _device_key(idstr, inst) -> str:
    return f"{idstr}:{inst}"


def timeline(cap, connections=None, *, show_sync_rounds: bool = True,
             xlim: tuple[float, float] | str | None = None) -> Figure:
    """One lane per multifd channel; each record a bar from t_start to t_end.

    RAM packets blue, SYNC packets black (thin), initial packets grey, device-state
    buffers one colour per device (config buffers hatched).  Vertical dashed lines:
    the end of each SYNC round (the last channel's k-th SYNC).  ``xlim``: a (start,
    end) window in seconds since capture start, or ``"device_state"`` to zoom on the
    device-state buffers (and the records around them).
    """
    packets, connections, _ = unpack(cap, connections)
    t0 = capture_start(packets, connections)
    chans = channels_of(packets, connections)
    fig = _figure(11, 1.2 + 0.75 * max(1, len(chans)))
    ax = fig.add_subplot()
    lane = {c: i for i, c in enumerate(chans)}
    span = float(packets["t_end"].max() - t0) if len(packets) else 1.0
    min_w = span / 2000 if span > 0 else 1e-6  # keep instantaneous records visible
    devices = {}
    if len(packets):
        ds = packets[packets["kind"] == "device_state"]
        for k in dict.fromkeys(zip(ds["idstr"], ds["instance_id"])):
            devices[_device_key(*k)] = DEVICE_COLORS[len(devices) % len(DEVICE_COLORS)]
        for kind in ("init", "ram", "sync", "device_state"):
            pk = packets[(packets["kind"] == kind) & packets["channel"].notna()]
            if not len(pk):
                continue
            starts = pk["t_start"].to_numpy(dtype=float) - t0
            widths = (pk["t_end"].to_numpy(dtype=float) - t0 - starts).clip(min_w)
            ys = [lane[int(c)] for c in pk["channel"]]
            if kind == "device_state":
                cols = [devices[_device_key(i, n)] for i, n in zip(pk["idstr"], pk["instance_id"])]
                hatch = ["//" if (int(f) & wire.VFIO_DEVICE_STATE_CONFIG_STATE) else "" for f in pk["vfio_flags"].fillna(0)]
                for y, s, w, c, h in zip(ys, starts, widths, cols, hatch):
                    ax.broken_barh([(s, w)], (y - 0.3, 0.6), facecolors=c, edgecolor="k",
                                   linewidth=0.3, hatch=h)
            else:
                height = 0.6 if kind == "ram" else 0.8
                for y, s, w in zip(ys, starts, widths):
                    ax.broken_barh([(s, w)], (y - height / 2, height),
                                   facecolors=KIND_COLORS[kind],
                                   edgecolor="white" if kind == "ram" else KIND_COLORS[kind],
                                   linewidth=0.3)
    rounds = _tp.sync_rounds(packets, connections) if show_sync_rounds and len(packets) else None
    if rounds is not None and len(rounds):
        for end in rounds["end"]:
            ax.axvline(end, color="crimson", ls="--", lw=0.8, alpha=0.8)
    if isinstance(xlim, str) and xlim == "device_state" and devices:
        ds = packets[packets["kind"] == "device_state"]
        lo, hi = float(ds["t_start"].min()) - t0, float(ds["t_end"].max()) - t0
        pad = max((hi - lo) * 0.5, 1e-5)
        ax.set_xlim(lo - pad, hi + pad)
    elif isinstance(xlim, tuple):
        ax.set_xlim(*xlim)
    ax.set_yticks(range(len(chans)), [channel_label(c) for c in chans])
    ax.set_ylim(-0.7, len(chans) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("time since capture start (s)")
    ax.set_title(_title(cap, "multifd records per channel"))
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=KIND_COLORS["ram"], label="RAM packet"),
               Patch(facecolor=KIND_COLORS["sync"], label="SYNC packet"),
               Patch(facecolor=KIND_COLORS["init"], label="initial packet")]
    handles += [Patch(facecolor=c, edgecolor="k", label=f"device {d}") for d, c in devices.items()]
    if devices:
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="//",
                             label="config buffer (vfio_flags & 1)"))
    if rounds is not None and len(rounds):
        handles.append(Line2D([], [], color="crimson", ls="--", label="end of SYNC round"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    fig.lanes = len(chans)  # for tests and callers: number of channel lanes
    return fig


def accounting_chart(result: AccountingResult, *, title: str | None = None) -> Figure:
    """Bars: multifd-bytes on the wire, predicted, from query-migrate and from truth."""
    tab = result.table()
    fig = _figure(8, 4.2)
    ax = fig.add_subplot()
    colors = ["#8c8c8c", "#4c72b0", "#55a868", "#dd8452"][:len(tab)]
    bars = ax.bar(tab["source"], tab["multifd_bytes"], color=colors)
    ax.bar_label(bars, labels=[f"{v:,}" for v in tab["multifd_bytes"]], fontsize=9, padding=2)
    ax.yaxis.set_major_formatter(FuncFormatter(_bytes_fmt))
    ax.set_ylabel("multifd-bytes (bytes)")
    verdict = "prediction matches" if result.match else "prediction does NOT match"
    ax.set_title(title or f"multifd-bytes accounting, QEMU {result.qemu_version} "
                          f"(rule: {result.rule}) — {verdict}")
    ax.set_ylim(0, max(tab["multifd_bytes"].max(), 1) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    return fig


def save(fig: Figure, path: str) -> str:
    fig.savefig(path, dpi=100)
    return path
