"""One live analysis: a source feeding the offline path's Dissector, under one lock.

Packet sources (tcpdump, Scapy) feed `PacketBatch`es to the same
`mfdscope.capture.tcp.Reassembler` as files do; byte-stream sources (the proxy) feed
a `StreamTap`.  Either way the sink is a `mfdscope.dissect.Dissector`, and
`snapshot()` turns it into a `mfdscope.api.Capture` with `mfdscope.api._build`, the
function `mfdscope.open` ends with: the live frames are the offline frames.
"""
from __future__ import annotations

import threading
import time

from ..api import Capture, _build
from ..capture.tcp import Reassembler
from ..dissect import Dissector
from .tap import StreamTap


class SourceError(Exception):
    """A live source that cannot start (one-line, user-facing message)."""


class LiveSession:
    """State shared by a source (writer) and the view / notebook (readers)."""

    def __init__(self, name: str = "live", *, page_size: int | None = None,
                 decompress: bool = False, bin_seconds: float = 0.001):
        self.name = name
        self.lock = threading.Lock()
        self.dissector = Dissector(page_size=page_size, decompress=decompress,
                                   bin_seconds=bin_seconds)
        self.reassembler: Reassembler | None = None
        self.tap: StreamTap | None = None
        self.warnings: list[str] = []
        self.started = time.time()
        self.stop_requested = threading.Event()
        self.stop_reason: str | None = None
        self.errors: list[str] = []
        self._finished = False

    # ------------------------------------------------------------------ feeding
    def packet_sink(self) -> Reassembler:
        """The reassembler packet sources feed (call `add_batch` under `lock`)."""
        if self.reassembler is None:
            self.reassembler = Reassembler(self.dissector)
        return self.reassembler

    def stream_tap(self, output=None) -> StreamTap:
        """The tap byte-stream sources feed (its methods take `lock` themselves)."""
        if self.tap is None:
            self.tap = StreamTap(self.dissector, self.lock, output)
        return self.tap

    def add_batch(self, buf, batch) -> None:
        with self.lock:
            self.packet_sink().add_batch(buf, batch)

    def warn(self, message: str) -> None:
        """A capture-wide warning: an expert row of the live and final frames."""
        with self.lock:
            if message not in self.warnings:
                self.warnings.append(message)

    # ------------------------------------------------------------------ stopping
    def request_stop(self, reason: str, error: str | None = None) -> None:
        """Ask the run to end; the first reason is kept, every error too."""
        if error:
            self.errors.append(error)
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_requested.set()

    def finish(self) -> None:
        """The source has stopped: end every open stream (``"eof"``)."""
        with self.lock:
            if self._finished:
                return
            self._finished = True
            if self.reassembler is not None:
                self.reassembler.finish()
        if self.tap is not None:
            self.tap.finish()  # takes the lock itself

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> Capture:
        """The frames so far, as `mfdscope.open` would build them."""
        with self.lock:
            warnings = list(self.warnings)
            reasm = self.reassembler or self.tap or self.packet_sink()
            warnings += list(getattr(reasm, "warnings", []))
            return _build(self.name, "live", self.dissector, reasm, warnings)
