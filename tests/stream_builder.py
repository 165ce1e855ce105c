"""Byte streams for parser tests: pieces, capture holes and named offsets.

Shared by the multifd channel parser tests and the main-channel parser tests.
"""
from __future__ import annotations

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
