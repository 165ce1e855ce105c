"""Writing a capture file while analysing, without ever losing what is already written.

`CaptureFileOutput` is the byte sink behind ``--write``: the tcpdump source tees the
raw pcap stream into it, the proxy and the Scapy source hand it a
`mfdscope.capture.pcapwriter.PcapWriter`.  A failed write (a full disk) does not
stop the analysis: writing stops, the file is cut back to its last whole record so
that it still opens with `mfdscope.open`, and `error` holds a one-line reason.
"""
from __future__ import annotations

import os

from ..capture.pcapfile import PCAP_HEADER_LEN, CaptureError, open_capture

FLUSH_AT = 1 << 20  # bytes buffered before a write(2)


class CaptureFileOutput:
    """A file-like sink (``write``) that turns write errors into ``error``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.error: str | None = None
        self.bytes_written = 0
        self._buf = bytearray()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write capture file {self.path}: "
                                     f"{exc.strerror}") from None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def write(self, data) -> int:
        """Buffer ``data``; the caller calls `flush_if_full` at record boundaries."""
        if self.error is None:
            self._buf += data
        return len(data)

    def flush_if_full(self) -> None:
        if len(self._buf) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.error is not None or not self._buf:
            return
        view = memoryview(self._buf)
        pos = 0
        try:
            while pos < len(view):
                pos += os.write(self._fd, view[pos:])
        except OSError as exc:
            self.bytes_written += pos
            view.release()
            self._fail(exc)
            return
        view.release()
        self.bytes_written += pos
        self._buf.clear()

    def _fail(self, exc: OSError) -> None:
        self._buf = bytearray()
        kept = _trim_to_last_record(self._fd, self.path)
        self.error = (f"writing {self.path} failed after {self.bytes_written:,} bytes: "
                      f"{exc.strerror or exc}; the file keeps the first {kept:,} bytes "
                      "(whole records), the analysis goes on")
        self._close_fd()

    def close(self) -> None:
        """Flush and close; afterwards the file opens with `mfdscope.open`."""
        if self.error is None:
            self.flush()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError as exc:  # a delayed write error (NFS, ...)
                if self.error is None:
                    self.error = f"closing {self.path} failed: {exc.strerror}"
            self._fd = None


def _trim_to_last_record(fd: int, path: str) -> int:
    """Cut a pcap file after its last complete record; returns the size kept."""
    try:
        cap = open_capture(path)
    except CaptureError:
        return os.fstat(fd).st_size  # not even a whole header: nothing to keep
    try:
        end = PCAP_HEADER_LEN  # the file header alone
        for batch in cap.batches():
            if len(batch):
                end = int(batch.data_off[-1] + batch.caplen[-1])
    finally:
        cap.close()
    try:
        os.ftruncate(fd, end)
    except OSError:
        pass
    return end
