"""Figures checked for content: lanes, series labels, bar values (not pixels)."""
from __future__ import annotations

from mfdscope import plots
from mfdscope.analysis import accounting as acc

from conftest import open_real, qmp_of


def test_io_graph_series(tmp_path):
    cap = open_real("qemu10-nocomp-4ch")
    fig = plots.io_graph(cap)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    for ch in range(4):
        assert f"channel {ch}" in labels and f"channel {ch} wire (frames)" in labels
    assert "main channel (wire)" in labels
    assert "bytes/s" in ax.get_ylabel() and "(s)" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "channel 3" in legend
    plots.save(fig, tmp_path / "io.png")
    assert (tmp_path / "io.png").stat().st_size > 10_000


def test_timeline_lanes_and_devices(devices_capture, tmp_path):
    cap = devices_capture[0]
    fig = plots.timeline(cap)
    ax = fig.axes[0]
    assert fig.lanes == 4
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"channel {c}" for c in range(4)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "device 0000:00:04.0/vfio:0" in legend and "device 0000:00:05.0/vfio:0" in legend
    assert "end of SYNC round" in legend
    # one vertical line per SYNC round (2 rounds in this synthetic migration)
    assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]) == 2
    zoom = plots.timeline(cap, xlim="device_state").axes[0].get_xlim()
    assert zoom[1] - zoom[0] < ax.get_xlim()[1] - ax.get_xlim()[0]
    plots.save(fig, tmp_path / "t.png")


def test_timeline_real_two_channels():
    fig = plots.timeline(open_real("qemu10-nocomp-2ch-running"))
    assert fig.lanes == 2


def test_accounting_bars():
    res = acc.accounting(open_real("qemu72-zlib-4ch"), qmp=qmp_of("qemu72-zlib-4ch"))
    fig = plots.accounting_chart(res)
    ax = fig.axes[0]
    heights = [int(p.get_height()) for p in ax.patches]
    assert heights == [res.wire_multifd_bytes, res.predicted_multifd_bytes,
                       res.qmp_multifd_bytes]
    assert [t.get_text() for t in ax.get_xticklabels()] == \
        ["wire (TCP payload)", "predicted (<=8.0)", "query-migrate"]
    assert "matches" in ax.get_title()
