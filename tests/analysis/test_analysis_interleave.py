"""Device-state buffers: the table against the generator's truth, reorder depth by hand."""
from __future__ import annotations

import pandas as pd

from mfdscope.analysis import interleave as il

from conftest import DEVICES


def test_table_equals_truth(devices_capture):
    cap, truth, _, _ = devices_capture
    table = il.device_state_table(cap)
    expected = sorted(
        (ch, r["offset"], r["idstr"], r["instance_id"], r["vfio_idx"], r["vfio_flags"])
        for ch, recs in enumerate(truth.records) for r in recs if r["kind"] == "device_state")
    got = sorted(zip(table["channel"], table["stream_offset"], table["idstr"],
                     table["instance_id"], table["vfio_idx"], table["vfio_flags"]))
    assert got == expected
    assert len(table) == sum(n + 1 for _, _, n, _ in DEVICES)
    assert table["t_end"].is_monotonic_increasing and list(table["arrival"]) == \
        list(range(len(table)))
    assert (table["is_config"] == (table["vfio_flags"] == 1)).all()
    assert (table["data_len"][~table["is_config"]].isin([5000, 700])).all()
    # synth sends device state after the last SYNC of every channel
    assert table["after_own_last_sync"].all()
    seqs = il.channel_sequences(cap)
    for ch, recs in enumerate(truth.records):
        exp = [(r["idstr"], r["vfio_idx"]) for r in recs if r["kind"] == "device_state"]
        assert seqs.get(ch, []) == exp


def test_device_summary(devices_capture):
    cap = devices_capture[0]
    res = il.interleaving(cap)
    dev = res["devices"].set_index("idstr")
    for idstr, _, nbuf, size in DEVICES:
        d = dev.loc[idstr]
        assert d["buffers"] == nbuf + 1 and d["config_idx"] == nbuf and d["config_last_idx"]
        assert d["missing_idx"] == []
        assert d["reorder_depth"] == il.reorder_depth(d["arrival_order"])
        assert d["in_order"] == (d["arrival_order"] == sorted(d["arrival_order"]))
    assert len(res["overlaps"]) == 1  # the two devices interleave round robin


def test_reorder_depth_by_hand():
    assert il.reorder_depth([0, 1, 2, 3]) == 0
    # 2 held; 0 written; 3 held (2 held); 1 releases 1, 2, 3; 4 written
    assert il.reorder_depth([2, 0, 3, 1, 4]) == 2
    assert il.reorder_depth([3, 2, 1, 0]) == 3
    assert il.reorder_depth([]) == 0


def _ds(rows):
    """A packets frame of device-state records: (channel, offset, t_start, t_end, idstr, idx,
    flags)."""
    n = len(rows)
    ch, off, ts, te, idstr, idx, fl = zip(*rows)
    return pd.DataFrame({
        "flow": pd.array(ch, dtype="Int64"), "channel": pd.array(ch, dtype="Int64"),
        "kind": pd.array(["device_state"] * n, dtype="string"),
        "stream_offset": pd.array(off, dtype="Int64"), "t_start": list(ts), "t_end": list(te),
        "wire_len": pd.array([276 + 112] * n, dtype="Int64"),
        "next_packet_size": pd.array([112] * n, dtype="Int64"),
        "idstr": pd.array(idstr, dtype="string"), "instance_id": pd.array([0] * n, dtype="Int64"),
        "vfio_idx": pd.array(idx, dtype="Int64"), "vfio_flags": pd.array(fl, dtype="Int64"),
    })


def test_crafted_reordering_and_overlap():
    # device A: idx 0..3, config = 3; arrivals by t_end: 1, 3(config), 0, 2 -> depth 2
    # device B: idx 0..1 arrives in order, entirely inside A's interval
    pk = _ds([
        (0, 100, 1.00, 1.10, "A", 0, 0),
        (1, 100, 1.00, 1.02, "A", 1, 0),
        (2, 100, 1.00, 1.30, "A", 2, 0),
        (3, 100, 1.01, 1.05, "A", 3, 1),
        (0, 500, 1.11, 1.12, "B", 0, 0),
        (1, 500, 1.13, 1.14, "B", 1, 1),
    ])
    table = il.device_state_table(pk)
    a = table[table["idstr"] == "A"]
    assert a["vfio_idx"].tolist() == [1, 3, 0, 2]
    summ = il.device_summary(table).set_index("idstr")
    assert summ.loc["A", "reorder_depth"] == 2 and not summ.loc["A", "in_order"]
    assert summ.loc["A", "config_t_end"] == 1.05 - 1.00  # relative to the first record
    assert not summ.loc["A", "config_arrived_last"] and summ.loc["A", "config_last_idx"]
    assert summ.loc["B", "reorder_depth"] == 0 and summ.loc["B", "in_order"]
    ov = il.device_overlaps(il.device_summary(table))
    assert ov[["device_a", "device_b"]].values.tolist() == [["A:0", "B:0"]]
    assert ov["share_b"].iloc[0] == 1.0
