"""Fixtures for the analysis tests: the committed real captures (opened once per
session) and small synthetic captures built from `mfdscope.synth` streams."""
from __future__ import annotations

import json
import pathlib

import pytest

import mfdscope
from mfdscope import synth
from mfdscope.capture import pcapwriter as pw

ROOT = pathlib.Path(__file__).resolve().parents[2]
QEMU = ROOT / "captures" / "qemu"
REAL = ["qemu72-nocomp-4ch", "qemu72-zlib-4ch", "qemu72-zstd-4ch", "qemu10-nocomp-4ch",
        "qemu10-zstd-4ch", "qemu10-nocomp-2ch-running"]
DEVICES = (("0000:00:04.0/vfio", 0, 3, 5000), ("0000:00:05.0/vfio", 0, 2, 700))

_CACHE: dict = {}


def open_real(name: str):
    if name not in _CACHE:
        _CACHE[name] = mfdscope.open(QEMU / f"{name}.pcap")
    return _CACHE[name]


def qmp_of(name: str) -> dict:
    return json.loads((QEMU / f"{name}.query-migrate.json").read_text())


def flows_for(cfg: synth.SynthConfig, segment_size: int = 1448, dt: float = 1e-5):
    """One TcpFlowWriter per channel (index = channel id) plus the main one (last)."""
    main, chans, truth = synth.build(cfg)
    return synth.tcp_flows(main, chans, segment_size=segment_size, dt=dt), truth, main


def write(path, flows):
    with open(path, "wb") as fh:
        pw.write_pcap(fh, pw.interleave(*flows))
    return path


def truth_json(truth: synth.Truth, main: bytes, profile: str = "10.0") -> dict:
    """A reference-sender-style truth dict (mfdscope/reference/truth.py keys) from a
    synth.Truth: 10.x counts every byte written, so multifd_bytes = Σ channel bytes."""
    return {"role": "sender", "ok": True, "profile": profile,
            "channels": len(truth.bytes), "channel_bytes": list(truth.bytes),
            "main_bytes": len(main), "records": truth.records,
            "multifd_bytes": sum(truth.bytes)}


@pytest.fixture(scope="session")
def devices_capture(tmp_path_factory):
    """10.0, 4 channels, two VFIO devices: (Capture, synth.Truth, truth dict, pcap path)."""
    cfg = synth.SynthConfig(ram_pages=1024, devices=DEVICES)
    flows, truth, main = flows_for(cfg)
    path = write(tmp_path_factory.mktemp("dev") / "devices.pcap", flows)
    return mfdscope.open(path), truth, truth_json(truth, main), path
