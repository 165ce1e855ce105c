"""Reference sender and receiver over loopback, captured by tcpdump, dissected.

The dissector must agree exactly with the sender's truth and the receiver's report
for every profile and compression method: per-channel bytes, every record in
order, device-state order, multifd_bytes as the profile counts it; and the
receiver's RAM image and device states must equal the sender's.  tcpdump really
runs here (setup.sh installs it; CI runs as root).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mfdscope
from mfdscope import demo
from mfdscope.analysis.accounting import accounting
from mfdscope.analysis.checks import check

REF_DIR = Path(__file__).resolve().parents[2] / "captures" / "reference"
COMMITTED = sorted(p.stem for p in REF_DIR.glob("*.pcap"))


def assert_all_pass(table):
    failed = table[~table["passed"]]
    assert failed.empty, failed.to_string()


@pytest.mark.parametrize("profile", ["7.2", "9.2", "10.0"])
@pytest.mark.parametrize("compression", ["none", "zlib", "zstd"])
def test_tcpdump_capture_agrees_with_both_truths(tmp_path, profile, compression):
    devices = 2 if profile == "10.0" and compression == "none" else 0
    pcap = str(tmp_path / "ref.pcap")
    truth, report, counts = demo.capture_reference_migration(
        pcap, channels=3, ram_size="4M", compression=compression, profile=profile,
        devices=devices, buffers_per_device=3, buffer_size=40000, iterations=2,
        zero_share=0.4, seed=7)
    assert report["ok"], report.get("error")
    assert counts.get("dropped_by_kernel") == 0, counts
    table, ok = demo.check_capture(pcap, truth, report, counts)
    assert_all_pass(table)
    assert ok
    cap = mfdscope.open(pcap)
    dev = cap.packets[cap.packets["kind"] == "device_state"]
    assert len(dev) == devices * 4


def test_device_state_interleaves_across_channels(tmp_path):
    pcap = str(tmp_path / "ref.pcap")
    truth, report, counts = demo.capture_reference_migration(
        pcap, channels=4, ram_size="8M", devices=2, buffers_per_device=8,
        buffer_size=64 << 10, seed=11)
    cap = mfdscope.open(pcap)
    dev = cap.packets[cap.packets["kind"] == "device_state"]
    for idstr, rows in dev.groupby("idstr"):
        assert rows["channel"].nunique() > 1, idstr
    # the sender's own record of which channel carried what equals the capture's
    table, ok = check(cap, truth=truth)
    assert_all_pass(table)


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_reference_captures(name):
    truth = json.loads((REF_DIR / f"{name}.truth.json").read_text())
    cap = mfdscope.open(REF_DIR / f"{name}.pcap")
    table, ok = check(cap, truth=truth)
    assert_all_pass(table)
    acc = accounting(cap, truth=truth)
    assert acc.predicted_multifd_bytes == truth["multifd_bytes"]
    assert acc.match


def test_committed_captures_cover_the_issue():
    assert {"ref10-nocomp-4ch-2dev", "ref10-zlib-4ch", "ref10-zstd-4ch",
            "ref72-nocomp-4ch"} <= set(COMMITTED)


def test_demo_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mfdscope.cli", "demo", "-o", str(tmp_path),
                          "--ram-size", "8M", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] and all(c["passed"] for c in doc["checks"])
    assert Path(doc["paths"]["capture"]).exists() and Path(doc["paths"]["truth"]).exists()


def test_demo_without_tcpdump_says_so(tmp_path, monkeypatch):
    from mfdscope.capture import tcpdump

    monkeypatch.setattr(tcpdump.shutil, "which", lambda name: None)
    with pytest.raises(tcpdump.TcpdumpError, match="tcpdump is not installed"):
        demo.capture_reference_migration(str(tmp_path / "x.pcap"), ram_size="1M")
