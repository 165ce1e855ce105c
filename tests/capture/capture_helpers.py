"""Shared by the capture tests: a recording sink and one-call reassembly."""
from __future__ import annotations

from mfdscope.capture.pcapfile import open_capture
from mfdscope.capture.tcp import Reassembler


class Recorder:
    """A sink that rebuilds each stream and checks the call contract as it goes."""

    def __init__(self):
        self.streams = []
        self.data = {}  # stream -> bytearray of delivered bytes (holes as b"\0")
        self.holes = {}  # stream -> [(stream_off, length, reason)]
        self.ends = {}  # stream -> how
        self.calls = {}  # stream -> number of on_spans calls
        self.log = []

    def on_stream(self, st):
        assert st not in self.data, "on_stream twice"
        self.streams.append(st)
        self.data[st] = bytearray()
        self.holes[st] = []
        self.calls[st] = 0
        self.log.append(("stream", st.direction))

    def on_spans(self, st, buf, spans):
        assert st not in self.ends, "data after on_end"
        assert len(spans), "empty spans"
        self.calls[st] += 1
        out = self.data[st]
        for stream_off, buf_off, length, _t, wire in spans.tolist():
            assert stream_off == len(out), "spans not contiguous with what came before"
            assert 0 < length <= wire
            out += bytes(buf[buf_off:buf_off + length])

    def on_hole(self, st, stream_off, length, t, reason):
        assert st not in self.ends
        assert stream_off == len(self.data[st]) and length > 0
        assert reason in ("missing", "snaplen")
        self.holes[st].append((stream_off, length, reason))
        self.data[st] += b"\0" * length

    def on_end(self, st, t, how):
        assert st not in self.ends, "on_end twice"
        assert how in ("fin", "rst", "eof")
        self.ends[st] = how
        self.log.append(("end", st.direction, how))

    def delivered(self, st):
        """Delivered bytes of a stream, holes as zero bytes."""
        return bytes(self.data[st])


def reassemble_file(path, batch_size=65536):
    rec = Recorder()
    r = Reassembler(rec)
    with open_capture(path) as cap:
        for batch in cap.batches(batch_size):
            r.add_batch(cap.buf, batch)
        r.finish()
        warnings = list(cap.warnings)
    return r, rec, warnings
