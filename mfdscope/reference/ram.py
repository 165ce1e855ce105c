"""The guest the reference sender migrates: RAM blocks and VFIO-like device state.

Content is deterministic in the seed.  Each page is zero, random (incompressible)
or compressible (a short motif repeated, stamped with the page number); the same
mix is used when the "guest" dirties pages between rounds, so pages can turn zero
or non-zero from one round to the next (which is what makes the receiver's SYNC
barrier and zero-page handling matter).
"""
from __future__ import annotations

import hashlib

import numpy as np

from .. import wire

_MOTIF = 64


class RamBlock:
    """One RAMBlock: ``idstr``, ``used_length`` bytes, viewed as pages."""

    def __init__(self, name: str, size: int, page_size: int):
        self.name = name
        self.size = size
        self.page_size = page_size
        self.npages = size // page_size
        self.data = bytearray(size)
        self.pages = np.frombuffer(self.data, dtype=np.uint8).reshape(self.npages, page_size)
        self.words = np.frombuffer(self.data, dtype=np.uint64).reshape(
            self.npages, page_size // 8)

    def zero_mask(self, indices: np.ndarray) -> np.ndarray:
        """True for every page of ``indices`` that is all zero (QEMU buffer_is_zero)."""
        if len(indices) == 0:
            return np.zeros(0, dtype=bool)
        return ~self.words[indices].any(axis=1)

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class GuestRam:
    """RAM blocks plus the dirty-page model of the source guest."""

    def __init__(self, blocks, page_size: int, *, seed: int = 0, zero_share: float = 0.25,
                 random_share: float = 0.5):
        self.page_size = page_size
        self.blocks = [RamBlock(n, s, page_size) for n, s in blocks]
        self.zero_share = zero_share
        self.random_share = random_share
        self._rng = np.random.default_rng(seed)
        self._stamp = 0

    def fill(self) -> list[np.ndarray]:
        """Initial contents; returns every page of every block as dirty."""
        dirty = []
        for b in self.blocks:
            idx = np.arange(b.npages)
            self._write(b, idx)
            dirty.append(idx)
        return dirty

    def dirty(self, share: float) -> list[np.ndarray]:
        """The guest rewrites ``share`` of its pages; returns the dirty page indices."""
        dirty = []
        for b in self.blocks:
            mask = self._rng.random(b.npages) < share
            idx = np.flatnonzero(mask)
            self._write(b, idx)
            dirty.append(idx)
        return dirty

    def _write(self, b: RamBlock, idx: np.ndarray) -> None:
        n = len(idx)
        if not n:
            return
        ps = self.page_size
        kind = self._rng.random(n)
        zero = idx[kind < self.zero_share]
        rest = idx[kind >= self.zero_share]
        rnd_mask = self._rng.random(len(rest)) < self.random_share
        rnd, comp = rest[rnd_mask], rest[~rnd_mask]
        b.pages[zero] = 0
        if len(rnd):
            b.pages[rnd] = self._rng.integers(0, 256, size=(len(rnd), ps), dtype=np.uint8)
        if len(comp):
            motif = self._rng.integers(0, 256, size=(len(comp), _MOTIF), dtype=np.uint8)
            pages = np.tile(motif, (1, ps // _MOTIF))
            # stamp: page number and a generation counter, so no page is all zero
            self._stamp += 1
            stamp = (comp.astype(np.uint64) << np.uint64(16)) | np.uint64(self._stamp & 0xFFFF)
            pages[:, :8] = (stamp | np.uint64(1)).astype(">u8").view(np.uint8).reshape(-1, 8)
            b.pages[comp] = pages

    def hashes(self) -> list[dict]:
        return [{"name": b.name, "size": b.size, "sha256": b.sha256()} for b in self.blocks]


def device_buffers(idstr: str, instance_id: int, count: int, size: int, seed: int) -> list[bytes]:
    """The K data buffers and the config buffer of one device (spec 2.5), as VFIO packets.

    Data buffers are opaque bytes; short reads are modelled by varying the size.
    The config buffer is DEV_CONFIG_STATE + a blob + END_OF_STATE.
    """
    h = hashlib.sha256(f"{seed}/{idstr}/{instance_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "big"))
    out = []
    for idx in range(count):
        n = int(size if idx % 3 else max(1, size - int(rng.integers(0, size // 2 + 1))))
        out.append(wire.pack_vfio_buffer(idx, 0, rng.bytes(n)))
    blob = rng.bytes(256)
    config = (wire.OFFSET.pack(wire.VFIO_MIG_FLAG_DEV_CONFIG_STATE) + blob
              + wire.OFFSET.pack(wire.VFIO_MIG_FLAG_END_OF_STATE))
    out.append(wire.pack_vfio_buffer(count, wire.VFIO_DEVICE_STATE_CONFIG_STATE, config))
    return out


def device_state_digest(buffers_in_idx_order) -> str:
    """sha256 of a device's state: the data of every VFIO buffer, in idx order."""
    h = hashlib.sha256()
    for buf in buffers_in_idx_order:
        h.update(memoryview(buf)[wire.VFIO_BUFFER.size:])
    return h.hexdigest()
