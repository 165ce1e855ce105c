"""Throughput per channel, imbalance, stalls, SYNC rounds, compression ratio."""
from __future__ import annotations

import math

import pandas as pd
import pytest

import mfdscope
from mfdscope import synth
from mfdscope.analysis import throughput as tp
from mfdscope.analysis._common import nice_bin

from conftest import REAL, flows_for, open_real, write


@pytest.mark.parametrize("duration,expected", [(0.179, 0.0005), (1.1, 0.005), (0.065, 0.0002),
                                               (10, 0.05), (400, 1.0), (3000, 10.0)])
def test_nice_bin(duration, expected):
    b = nice_bin(duration)
    assert b == pytest.approx(expected)
    assert 160 <= duration / b <= 400


@pytest.mark.parametrize("name", REAL)
def test_totals_per_channel_equal_connection_bytes(name):
    cap = open_real(name)
    t = tp.throughput(cap)
    n = t["bin"].nunique()
    # ~160-400 bins, but never finer than the timeline's own 1 ms bins
    assert n <= 400 and (n >= 100 or t.attrs["bin_seconds"] == cap.bin_seconds)
    sums = t.groupby("channel")[["goodput", "payload_bytes"]].sum()
    for row in cap.multifd.itertuples():
        assert sums.loc[row.channel_id, "goodput"] == row.bytes
        assert sums.loc[row.channel_id, "payload_bytes"] == row.bytes
    kinds = t.groupby("channel")[["init", "ram", "sync", "device_state"]].sum()
    assert (kinds["init"] == 64).all()


def test_given_bin_and_rates(devices_capture):
    cap = devices_capture[0]
    t = tp.throughput(cap, bin_seconds=0.002)
    assert t.attrs["bin_seconds"] == 0.002
    assert (t["goodput_Bps"] == t["goodput"] / 0.002).all()
    assert t.groupby("channel")["device_state"].sum().sum() == \
        cap.packets.loc[cap.packets["kind"] == "device_state", "wire_len"].sum()


def test_proportional_spread_hand_made():
    pk = pd.DataFrame({"channel": pd.array([0, 1], dtype="Int64"), "kind": ["ram", "ram"],
                       "stream_offset": [0, 0], "t_start": [10.0, 10.0],
                       "t_end": [10.4, 10.0], "wire_len": pd.array([1000, 7], dtype="Int64")})
    t = tp.throughput(pk, bin_seconds=0.1)
    ch0 = t[t["channel"] == 0]["ram"].tolist()
    assert ch0 == [250, 250, 250, 250, 0]  # 0.4 s spread over four 0.1 s bins
    assert t[t["channel"] == 1]["ram"].tolist()[0] == 7


def test_imbalance_by_hand():
    stats = pd.DataFrame({"channel": [0, 1, 2, 3], "goodput": [100, 100, 100, 300]})
    im = tp.imbalance(stats)
    mean, std = 150, math.sqrt((3 * 50 ** 2 + 150 ** 2) / 4)
    assert im["cv"] == pytest.approx(std / mean)
    assert im["max_share"] == 0.5 and im["busiest"] == 3 and im["max_over_min"] == 3


def test_channel_stats_real():
    cap = open_real("qemu10-nocomp-4ch")
    st = tp.channel_stats(cap)
    assert st["share"].sum() == pytest.approx(1)
    assert (st["goodput"] == st["tcp_bytes"]).all()
    assert (st["compression_ratio"] == 1.0).all()
    assert st.set_index("channel").loc[1, "normal_pages"] == 454  # captures/qemu/README.md
    z = tp.compression_ratio(open_real("qemu72-zlib-4ch"))
    assert (z["compression"] == "zlib").all() and (z["ratio"] > 1.5).all()


def test_sync_rounds_real():
    cap = open_real("qemu10-nocomp-2ch-running")
    r = tp.sync_rounds(cap)
    assert len(r) == 24 and (r["channels"] == 2).all()  # 24 SYNCs per channel (README)
    assert r["end"].is_monotonic_increasing
    assert r["duration"].sum() == pytest.approx(r["end"].iloc[-1] - r["start"].iloc[0])
    assert set(r["last_channel"]) <= {0, 1}
    rb = tp.round_bytes(cap)
    assert int(rb.to_numpy().sum()) == int(cap.multifd["bytes"].sum()) - 2 * 64
    r4 = tp.sync_rounds(open_real("qemu10-nocomp-4ch"))
    assert len(r4) == 3 and r4["bytes"].sum() == 5458496 - 4 * 64


def test_stall_detected_in_crafted_pause(tmp_path):
    """Channel 1 pauses 100 ms mid-stream while the others keep sending."""
    cfg = synth.SynthConfig(ram_pages=1024, channels=4, seed=3)
    flows, _, _ = flows_for(cfg, dt=1e-3)
    segs = flows[1].segments
    data = [i for i, s in enumerate(segs) if s.payload]
    cut = data[len(data) // 3]
    pause_at = segs[cut].time
    for s in segs[cut:]:
        s.time += 0.1
    cap = mfdscope.open(write(tmp_path / "pause.pcap", flows))
    t = tp.throughput(cap)
    bin_s = t.attrs["bin_seconds"]
    st = tp.stalls(t)
    mine = st[st["channel"] == 1]
    assert len(mine) == 1, st
    s = mine.iloc[0]
    assert s["position"] == "middle"
    assert s["duration"] == pytest.approx(0.1, abs=2 * bin_s)
    assert s["start"] == pytest.approx(pause_at - t.attrs["t0"], abs=2 * bin_s)
    assert s["others_bytes"] > 0
    # the others finish before channel 1 (it lost 100 ms): idle "end" intervals, no stall
    assert (st.loc[st["channel"] != 1, "position"] == "end").all(), st
    # a threshold longer than the pause hides it
    assert tp.stalls(t, min_seconds=0.2).empty
