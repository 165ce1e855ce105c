"""Capture files in, ordered TCP byte spans per direction out (knows nothing of multifd).

See docs/internals.md, section "mfdscope.capture", for the contract.
"""
from .pcapfile import CaptureError, CaptureFile, PacketBatch, PcapStreamReader, open_capture
from .tcp import SPAN_DTYPE, Connection, Reassembler, Stream

__all__ = ["CaptureError", "CaptureFile", "Connection", "PacketBatch", "PcapStreamReader",
           "Reassembler", "SPAN_DTYPE", "Stream", "open_capture"]
