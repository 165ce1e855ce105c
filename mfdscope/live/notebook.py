"""`LiveCapture`: frames that grow while a migration runs, for notebooks.

    from mfdscope.live import LiveCapture
    lc = LiveCapture.proxy("127.0.0.1:4444", "127.0.0.1:4445")  # or .tcpdump("lo", port=4445)
    ...                 # start the migration towards lc.address
    lc.packets          # the records so far (a fresh DataFrame at every access)
    cap = lc.stop()     # the final Capture, as mfdscope.open would give
"""
from __future__ import annotations

import threading

from .capfile import CaptureFileOutput
from .report import Reporter
from .session import LiveSession


class LiveCapture:
    """A live source running in the background, read through snapshots.

    ``source`` is a `Proxy`, `TcpdumpSource` or `ScapySource`; it starts at once
    (`SourceError` if it cannot).  ``write`` tees the capture into a pcap file.
    Thread-safe: every property takes a consistent snapshot under the session lock.
    """

    def __init__(self, source, *, write: str | None = None, page_size: int | None = None,
                 qemu_version: str | None = None):
        self.source = source
        self.output = CaptureFileOutput(write) if write else None
        if self.output is not None:
            source.set_output(self.output)
        self.session = LiveSession(source.name, page_size=page_size)
        self.reporter = Reporter(source.name, qemu_version=qemu_version,
                                 started=self.session.started)
        self._stopped = False
        self._lock = threading.Lock()
        try:
            source.start(self.session)
        except Exception:
            if self.output is not None:
                self.output.close()
            raise

    # ------------------------------------------------------------------ constructors
    @classmethod
    def proxy(cls, listen: str, forward: str, **kw) -> "LiveCapture":
        from .proxy import Proxy

        return cls(Proxy(listen, forward), **kw)

    @classmethod
    def tcpdump(cls, iface: str = "lo", *, port: int | None = None, bpf: str | None = None,
                **kw) -> "LiveCapture":
        from .tcpdump import TcpdumpSource

        return cls(TcpdumpSource(iface, bpf or (f"tcp port {port}" if port else "tcp")), **kw)

    @classmethod
    def scapy(cls, iface: str = "lo", *, port: int | None = None, bpf: str | None = None,
              **kw) -> "LiveCapture":
        from .sniff import ScapySource

        return cls(ScapySource(iface, bpf or (f"tcp port {port}" if port else "tcp")), **kw)

    # ------------------------------------------------------------------ reading
    @property
    def address(self) -> str | None:
        """The proxy's listening address (None for sniffers)."""
        return getattr(self.source, "address", None)

    def snapshot(self):
        """A `mfdscope.api.Capture` of everything so far."""
        return self.session.snapshot()

    @property
    def packets(self):
        return self.snapshot().packets

    @property
    def connections(self):
        return self.snapshot().connections

    @property
    def expert(self):
        return self.snapshot().expert

    def stats(self) -> dict:
        """The live view's interval figures (throughput since the previous call)."""
        with self._lock:
            return self.reporter.report(self.snapshot(), source_stats=self.source.stats())

    @property
    def errors(self) -> list[str]:
        return list(self.session.errors)

    # ------------------------------------------------------------------ stopping
    def stop(self):
        """Stop the source, end open streams, close the file; the final Capture."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self.session.request_stop("stopped")
                self.source.stop()
                self.source.join()
                self.session.finish()
                if self.output is not None:
                    self.output.close()
                    if self.output.error:
                        self.session.errors.append(self.output.error)
        return self.snapshot()

    def wait_idle(self, seconds: float, timeout: float | None = None) -> bool:
        """Block until the source has been idle for ``seconds`` (proxy: no connection
        open); False on ``timeout``."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            idle = self.source.idle_since()
            wake = now + seconds if idle is None else idle + seconds
            if idle is not None and now >= idle + seconds:
                return True
            if end is not None and now >= end:
                return False
            if self.session.stop_requested.wait(max(0.0, min(wake, end or wake) - now)):
                return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<mfdscope.live.LiveCapture {self.source.name} ({state}): {self.snapshot()!r}>"
