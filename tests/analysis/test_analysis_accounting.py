"""multifd-bytes as QEMU counts it, on the committed real captures and synthetic ones."""
from __future__ import annotations

import pytest

import mfdscope
from mfdscope import synth
from mfdscope.analysis import accounting as acc

from conftest import REAL, flows_for, open_real, qmp_of, truth_json, write


@pytest.mark.parametrize("name", REAL)
def test_prediction_equals_query_migrate(name):
    cap = open_real(name)
    qmp = qmp_of(name)
    res = acc.accounting(cap, qmp=qmp)
    assert res.predicted_multifd_bytes == qmp["ram"]["multifd-bytes"], res.explanation
    assert res.qmp_multifd_bytes == qmp["ram"]["multifd-bytes"]
    assert res.match, res.explanation
    wire = int(cap.multifd["bytes"].sum())
    assert res.wire_multifd_bytes == wire
    if name.startswith("qemu10"):
        assert res.rule == "written"
        assert res.predicted_multifd_bytes == wire  # every byte written, init included
        main = int(cap.connections.loc[cap.connections["role"] == "main", "bytes"].sum())
        assert res.predicted_transferred_bytes == wire + main == qmp["ram"]["transferred"]
        assert res.transferred_match is True
    else:
        assert res.qemu_version == "<=8.0" and res.rule == "enqueue"
        assert res.predicted_transferred_bytes is None
        assert "not derivable" in res.explanation
        bd = res.breakdown
        assert res.predicted_multifd_bytes == bd["packet_header_bytes"] + \
            bd["normal_pages"] * 4096
        if "nocomp" in name:
            assert wire == res.predicted_multifd_bytes + 64 * 4
            assert "4 x 64 = 256: initial packets are not counted before 8.1" in res.explanation
        else:  # compressed: multifd-bytes counts uncompressed pages
            assert wire < res.predicted_multifd_bytes
            assert "uncompressed pages" in res.explanation


@pytest.mark.parametrize("name,version", [("qemu72-nocomp-4ch", "7.2"),
                                          ("qemu72-zstd-4ch", "7.2"),
                                          ("qemu10-zstd-4ch", "10.0")])
def test_given_version(name, version):
    res = acc.accounting(open_real(name), qmp=qmp_of(name), qemu_version=version)
    assert res.qemu_version == version and res.version_source == "given"
    assert res.match


def test_wrong_version_is_a_mismatch_explained():
    res = acc.accounting(open_real("qemu72-nocomp-4ch"), qmp=qmp_of("qemu72-nocomp-4ch"),
                         qemu_version="10.0")
    assert not res.match
    assert res.predicted_multifd_bytes - res.qmp_multifd_bytes == 256
    assert "initial packets" in res.explanation


def test_detection_on_real_captures():
    # MIG_CMD_SWITCHOVER_START on the main channel (mfdscope.mainchannel) says 10.0+
    g = acc.detect_version(open_real("qemu10-nocomp-4ch"))
    assert g.qemu_version == "10.x" and not g.ambiguous
    assert any("SWITCHOVER_START" in e for e in g.evidence)
    # the bare packets frame has no main channel: SYNC pages_alloc 0 gives 9.2+ only
    assert acc.detect_version(open_real("qemu10-nocomp-4ch").packets).qemu_version == "9.2+"
    g = acc.detect_version(open_real("qemu72-zlib-4ch"))
    assert g.qemu_version == "<=8.0" and g.ambiguous
    assert any("SYNC packets carry pages" in e for e in g.evidence)
    assert any("legacy per-section sync" in e for e in g.evidence)


def test_no_reference_checks_the_wire():
    res = acc.accounting(open_real("qemu72-zstd-4ch"))
    assert res.qmp_multifd_bytes is None and res.match
    res = acc.accounting(open_real("qemu10-nocomp-4ch"))
    assert res.match and res.predicted_multifd_bytes == res.wire_multifd_bytes


def test_qmp_accepts_metadata_and_reply_shapes():
    q = qmp_of("qemu10-nocomp-4ch")
    assert acc.qmp_values({"return": q})[0] == q["ram"]["multifd-bytes"]
    assert acc.qmp_values({"source_final_query_migrate": q})[1] == q["ram"]["transferred"]


def test_device_state_means_10x_and_truth(devices_capture):
    cap, truth, tj, _ = devices_capture
    res = acc.accounting(cap, truth=tj)
    assert res.qemu_version == "10.x" and res.match
    assert res.truth_multifd_bytes == sum(truth.bytes) == res.predicted_multifd_bytes
    bad = dict(tj, multifd_bytes=tj["multifd_bytes"] - 4 * 64)
    res = acc.accounting(cap, truth=bad)
    assert not res.match and "initial packets" in res.explanation


def test_synthetic_72_without_markers_is_ambiguous(tmp_path):
    """Without the main channel (not captured) and without 7.2's wire quirks, the
    multifd packets alone cannot tell 7.2 from 8.1-9.1."""
    cfg = synth.SynthConfig(profile="7.2", ram_pages=512, channels=2)
    flows, truth, main = flows_for(cfg)
    cap = mfdscope.open(write(tmp_path / "s72.pcap", flows[:-1]))
    g = acc.detect_version(cap)
    assert g.ambiguous and g.qemu_version == "8.1-9.1"
    bd = acc.breakdown(cap)
    enqueue = acc.predict(bd, "enqueue")
    # a query-migrate value that only the <= 8.0 rule reproduces decides it
    res = acc.accounting(cap, qmp={"ram": {"multifd-bytes": enqueue}})
    assert res.rule == "enqueue" and res.match and res.version_source == "detected+reference"
    # so does a truth naming its profile
    res = acc.accounting(cap, truth=dict(truth_json(truth, main, "7.2"), multifd_bytes=enqueue))
    assert res.qemu_version == "7.2" and res.match
    # and with the main channel captured, its per-section EOS pairing says <= 8.0
    full = mfdscope.open(write(tmp_path / "s72-main.pcap", flows))
    assert acc.detect_version(full).rule == "enqueue"
