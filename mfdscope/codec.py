"""Multifd payload compression, both ways (spec 4.4): one persistent stream per channel.

QEMU keeps one zlib or zstd stream per channel for the whole migration and flushes it
at the end of every packet (``Z_SYNC_FLUSH``, ``ZSTD_e_flush``), never ending it; a
receiver (or a dissector) must inflate every payload of the channel in order.  The
synthetic streams and the reference sender compress with `compressor`; the parser
inflates with `Decoder`, whose output is bounded whatever the input claims.
"""
from __future__ import annotations

import zlib

from . import wire

#: decompressed bytes produced per input piece are bounded by feeding small pieces
DECOMP_PIECE = 1024


def compressor(method: int):
    """One persistent compressor per channel, sync-flushed per packet: a function
    from a packet's page bytes to its payload (None for no compression)."""
    if method == wire.Compression.ZLIB:
        obj = zlib.compressobj(1)
        return lambda raw: obj.compress(raw) + obj.flush(zlib.Z_SYNC_FLUSH)
    if method == wire.Compression.ZSTD:
        import zstandard  # only needed when asked for

        zobj = zstandard.ZstdCompressor(level=1).compressobj()
        return lambda raw: zobj.compress(raw) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    return None


class DecodeError(Exception):
    """The compressed data is corrupt (message in QEMU's words, spec 5.6)."""


class Decoder:
    """One persistent decompressor per channel (zlib or zstd), bounded output."""

    def __init__(self, method: int):
        self.method = method
        self.broken = False
        if method == wire.Compression.ZLIB:
            self._obj = zlib.decompressobj()
        else:
            import zstandard  # imported lazily: only needed on request

            self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data, budget: int) -> bytes | None:
        """Output for ``data``; None once more than ``budget`` bytes would come out.

        Raises `DecodeError` for corrupt input: zlib and zstandard raise their own
        exceptions on it, and corrupt input must become an expert item, not a crash.
        """
        out = []
        produced = 0
        for i in range(0, len(data), DECOMP_PIECE):
            piece = bytes(data[i:i + DECOMP_PIECE])
            if self.method == wire.Compression.ZLIB:
                try:
                    chunk = self._obj.decompress(piece, budget - produced + 1)
                except zlib.error as e:
                    raise DecodeError(f"inflate returned an error instead of Z_OK ({e})") \
                        from None
                if self._obj.unconsumed_tail:
                    return None
            else:
                try:
                    chunk = self._obj.decompress(piece)
                except Exception as e:  # zstandard.ZstdError; zstandard is imported lazily
                    raise DecodeError(f"decompressStream returned {e}") from None
            produced += len(chunk)
            if produced > budget:
                return None
            out.append(chunk)
        return b"".join(out)
