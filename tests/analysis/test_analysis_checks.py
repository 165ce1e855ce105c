"""A capture cross-checked against a reference-sender-style truth."""
from __future__ import annotations

import copy

from mfdscope.analysis import checks


def test_all_pass(devices_capture):
    cap, _, tj, _ = devices_capture
    table, ok = checks.check(cap, truth=tj)
    assert ok, table.to_string()
    assert set(table["check"]) == {"channels", "bytes", "records", "sequence",
                                   "device_state_order", "main_bytes", "accounting",
                                   "sync_pairing"}
    assert (table["check"] == "bytes").sum() == 4


def test_failures_are_reported(devices_capture):
    cap, _, tj, _ = devices_capture
    bad = copy.deepcopy(tj)
    bad["channel_bytes"][2] += 1
    ds = [i for i, r in enumerate(bad["records"][0]) if r["kind"] == "device_state"]
    a, b = ds[0], ds[1]
    bad["records"][0][a]["vfio_idx"], bad["records"][0][b]["vfio_idx"] = \
        bad["records"][0][b]["vfio_idx"], bad["records"][0][a]["vfio_idx"]
    bad["multifd_bytes"] += 7
    table, ok = checks.check(cap, truth=bad)
    assert not ok
    failed = table[~table["passed"]]
    assert set(zip(failed["check"], failed["channel"].astype(object))) >= {
        ("bytes", 2), ("device_state_order", 0)}
    assert "accounting" in set(failed["check"])
    assert "first difference" in failed.loc[failed["check"] == "device_state_order",
                                            "detail"].iloc[0]


def test_synth_truth_object(devices_capture):
    cap, truth, _, _ = devices_capture
    table, ok = checks.check(cap, truth=truth)  # synth.Truth: no multifd_bytes, no main
    assert ok and "accounting" not in set(table["check"])
