"""Byte streams for parser tests: pieces, capture holes and named offsets.

Shared by the multifd channel parser tests and the main-channel parser tests.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gap:
    """Bytes of the stream that the capture does not hold (`feed_hole`)."""

    n: int


@dataclass
class Stream:
    """A channel under construction: byte pieces, capture holes and named offsets."""

    segs: list = field(default_factory=list)
    at: dict = field(default_factory=dict)
    size: int = 0

    def add(self, data: bytes, name: str | None = None) -> "Stream":
        if name:
            self.at[name] = self.size
        if self.segs and isinstance(self.segs[-1], bytes):
            self.segs[-1] += data
        else:
            self.segs.append(bytes(data))
        self.size += len(data)
        return self

    def hole(self, n: int, name: str | None = None) -> "Stream":
        if name:
            self.at[name] = self.size
        self.segs.append(Gap(n))
        self.size += n
        return self

    def __getitem__(self, name: str) -> int:
        return self.at[name]

    @property
    def data(self) -> bytes:
        assert all(isinstance(s, bytes) for s in self.segs)
        return b"".join(self.segs)


# ------------------------------------------------------------------ drivers (h11 style)
class Drivers:
    """The ways every parser test feeds a stream: whole, byte by byte, split at random
    points (the buffer overwritten after each call, as a live capture reuses it), and
    skipping page data whenever the parser allows it.  All must give the same events.

    ``make_parser(**kw)`` builds the parser under test; ``boundary_cuts(data)`` may add
    cut points (e.g. around guessed record boundaries) to the random splits.
    """

    def __init__(self, make_parser, t: float = 0.0, boundary_cuts=None, skip_piece: int = 40):
        self.make_parser, self.t = make_parser, t
        self.boundary_cuts = boundary_cuts or (lambda data: set())
        self.skip_piece = skip_piece
        self.all = [self.byte_by_byte, *(self.random_splits(s) for s in range(4)),
                    self.skipping]

    def run(self, segs, kw, feed_bytes):
        """``(events, parser)`` after feeding every piece (holes as `feed_hole`) and ending."""
        p = self.make_parser(**kw)
        out = []
        for seg in segs:
            out += p.feed_hole(seg.n, self.t) if isinstance(seg, Gap) else feed_bytes(p, seg)
        out += p.end(self.t)
        return out, p

    def whole(self, segs, kw):
        return self.run(segs, kw, lambda p, b: p.feed(b, self.t))

    def byte_by_byte(self, segs, kw):
        def feed(p, b):
            mv, out = memoryview(b), []
            for i in range(len(b)):
                out += p.feed(mv[i:i + 1], self.t)
            return out
        return self.run(segs, kw, feed)

    def random_splits(self, seed: int):
        def driver(segs, kw):
            rnd = random.Random(seed)

            def feed(p, b):
                cuts = {rnd.randrange(len(b) + 1) for _ in range(20)} | self.boundary_cuts(b)
                out, prev = [], 0
                for c in sorted(c for c in cuts if 0 < c < len(b)) + [len(b)]:
                    buf = bytearray(b[prev:c])  # the parser must not keep references
                    out += p.feed(buf, self.t)
                    buf[:] = b"\xee" * len(buf)
                    prev = c
                return out
            return self.run(segs, kw, feed)
        driver.__name__ = f"random_splits({seed})"
        return driver

    def skipping(self, segs, kw):
        rnd = random.Random(7)

        def feed(p, b):
            out, pos = [], 0
            while pos < len(b):
                n = min(p.skippable, len(b) - pos)
                if n > 0:
                    out += p.skip(n, self.t)
                else:
                    n = min(rnd.randint(1, self.skip_piece), len(b) - pos)
                    out += p.feed(b[pos:pos + n], self.t)
                pos += n
            return out
        return self.run(segs, kw, feed)


@dataclass
class E:
    """Matches one event: its kind, and the listed attributes (``msg``: substring)."""

    kind: str
    fields: dict

    def mismatch(self, ev) -> str | None:
        if ev.kind != self.kind:
            return f"kind {ev.kind!r} != {self.kind!r}"
        for name, want in self.fields.items():
            if name == "msg":
                if want not in ev.message:
                    return f"message {ev.message!r} lacks {want!r}"
                continue
            got = getattr(ev, name)
            if got != want:
                return f"{name} = {got!r}, expected {want!r}"
        return None

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(f'{k}={v!r}' for k, v in self.fields.items())})"
