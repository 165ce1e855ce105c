"""Fixtures for the capture tests."""
from __future__ import annotations

import io

import pytest
from capture_helpers import reassemble_file

from mfdscope.capture.pcapwriter import write_pcap


@pytest.fixture
def reassemble(tmp_path):
    """reassemble(frames or flow, batch_size=...) -> (reassembler, recorder)."""
    counter = iter(range(1 << 30))

    def run(frames, batch_size=65536, **writer_kw):
        if hasattr(frames, "frames"):
            frames = frames.frames()
        path = tmp_path / f"cap{next(counter)}.pcap"
        with open(path, "wb") as f:
            write_pcap(f, frames, **writer_kw)
        r, rec, warnings = reassemble_file(path, batch_size)
        assert warnings == []
        return r, rec
    return run


@pytest.fixture
def pcap_bytes():
    def make(frames, **kw):
        f = io.BytesIO()
        write_pcap(f, frames, **kw)
        return f.getvalue()
    return make
