"""Live capture through libpcap: ``tcpdump -w -`` as a subprocess.

tcpdump's pcap stream is read incrementally with the same reader as files
(`PcapStreamReader`) and fed to the same `Reassembler` + `Dissector`.  With
``--write`` the raw pcap bytes are teed to the file as they are read.  Kernel drops
come from tcpdump's statistics: asked for every interval with SIGUSR1 (one line
"N packets captured, N packets received by filter, N packets dropped by kernel") and
printed by tcpdump when it exits.
"""
from __future__ import annotations

import fcntl
import os
from collections import deque
import shutil
import signal
import subprocess
import threading
import time

from ..capture import tcpdump as _tcpdump
from ..capture.pcapfile import CaptureError, PcapStreamReader
from .session import LiveSession, SourceError

#: tcpdump -B: the kernel ring buffer, KiB.  On a loopback interface every segment
#: takes ring space twice (outgoing and incoming copies; libpcap discards the outgoing
#: one only after reading it): a burst larger than half of it that we cannot read in
#: time is dropped.  ("inbound" in the filter would halve that, but libpcap then loses
#: the first packets, filtered in user space at start; "-Q in" does not save space.)
BUFFER_KIB = 65536
#: pipe between tcpdump and us: with the default 64 KiB, tcpdump blocks on the pipe
#: after one loopback GSO frame and the kernel ring overflows
PIPE_SIZE = 64 << 20
PIPE_READ = 1 << 20  # bytes per read(2) of the pipe
QUEUE_LIMIT = 512 << 20  # bytes read ahead of the analysis before tcpdump is made to wait
READ_CHUNK = 16 << 20  # bytes handed to the pcap reader at most at once
READY_TIMEOUT = 15.0  # seconds for tcpdump to say "listening on"


class _PipeReader:
    """tcpdump's stdout for `PcapStreamReader`.

    A thread drains the pipe as fast as tcpdump writes (``os.read`` releases the GIL)
    into a queue bounded by ``limit`` bytes: an unprivileged pipe holds only 1 MiB,
    and a tcpdump blocked on a full pipe lets the kernel ring overflow.  `read1` hands
    over everything queued at once, so batches grow when the analysis falls behind and
    its per-batch cost is paid once per many frames.  Every byte read is also copied
    into the `CaptureFileOutput`, if any.
    """

    def __init__(self, fd: int, output, limit: int = QUEUE_LIMIT):
        self.fd, self.output, self.limit = fd, output, limit
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self.thread = threading.Thread(target=self._drain, name="tcpdump-pipe", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, PIPE_READ)
            except OSError:
                data = b""
            with self._cond:
                while data and self._size >= self.limit:
                    self._cond.wait()
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._chunks.append(data)
                self._size += len(data)
                self._cond.notify_all()

    def read1(self, n=READ_CHUNK):
        if n is None or n < 0:
            n = READ_CHUNK
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            parts, size = [], 0
            while self._chunks and size < n:
                c = self._chunks.popleft()
                if size + len(c) > n:  # never more than asked (the file header read)
                    if parts:
                        self._chunks.appendleft(c)
                        break
                    c, rest = c[:n], c[n:]
                    self._chunks.appendleft(rest)
                parts.append(c)
                size += len(c)
            self._size -= size
            self._cond.notify_all()
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if data and self.output is not None and not self.output.failed:
            self.output.write(data)
            self.output.flush_if_full()
        return data

    read = read1


class TcpdumpSource:
    """``tcpdump -i IFACE -U -w - -s 0 -B BUFFER_KIB BPF`` feeding a session."""

    name = "tcpdump"

    def __init__(self, iface: str = "lo", bpf: str = "tcp", *, output=None,
                 tcpdump: str = "tcpdump", buffer_kib: int = BUFFER_KIB):
        self.iface, self.bpf = iface, bpf
        self.output = output
        self.tcpdump = tcpdump
        self.buffer_kib = buffer_kib
        self.proc: subprocess.Popen | None = None
        self.session: LiveSession | None = None
        self.counts: dict[str, int] = {}
        self.stderr_lines: list[str] = []
        self.packets = 0
        self._ready = threading.Event()
        self._stopping = False
        self._last_packet: float | None = None
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()

    def set_output(self, output) -> None:
        self.output = output

    def command(self) -> list[str]:
        return _tcpdump.argv(self.tcpdump, self.iface, self.bpf, "-", self.buffer_kib)

    def describe(self) -> str:
        return f"capturing on {self.iface} with tcpdump, filter {self.bpf!r}"

    # ------------------------------------------------------------------ source API
    def start(self, session: LiveSession) -> None:
        self.session = session
        exe = shutil.which(self.tcpdump)
        if exe is None:
            raise SourceError(f"{self.tcpdump} not found (install tcpdump, or use --scapy or "
                              "--proxy)")
        try:
            self.proc = subprocess.Popen([exe, *self.command()[1:]], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # our signals only
        except OSError as exc:
            raise SourceError(f"cannot run {exe}: {exc.strerror}") from None
        _grow_pipe(self.proc.stdout.fileno())
        err = threading.Thread(target=self._stderr_loop, name="tcpdump-stderr", daemon=True)
        err.start()
        self._threads.append(err)
        if not self._ready.wait(READY_TIMEOUT) or self.proc.poll() is not None:
            if self.proc.poll() is None:
                self._signal(signal.SIGTERM)
            self.proc.wait()
            err.join()
            raise SourceError(f"tcpdump did not start: {self._last_error() or 'no message'}")
        rd = threading.Thread(target=self._read_loop, name="tcpdump-reader", daemon=True)
        rd.start()
        self._threads.append(rd)

    def stop(self) -> None:
        """Ask tcpdump to end (SIGINT: it flushes, prints its statistics, exits)."""
        self._stopping = True
        self._signal(signal.SIGINT)

    def join(self) -> None:
        for t in self._threads:
            t.join()
        if self.proc is not None:
            self.proc.wait()

    def idle_since(self) -> float | None:
        return self._last_packet

    def stats(self) -> dict:
        """Drops as tcpdump last reported them (asks for fresh ones: SIGUSR1)."""
        if not self._stopping:
            self._signal(signal.SIGUSR1)
        with self._stats_lock:
            counts = dict(self.counts)
        return {"source": "tcpdump", "interface": self.iface, "filter": self.bpf,
                "drops": _tcpdump.drops(counts), "packets": self.packets, "tcpdump": counts,
                "exit_status": None if self.proc is None else self.proc.returncode}

    # ------------------------------------------------------------------ threads
    def _signal(self, sig) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _stderr_loop(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            if "listening on" in line:
                self._ready.set()
            found = _tcpdump.parse_stats(line)
            if found:
                with self._stats_lock:
                    self.counts.update(found)
            elif line:
                self.stderr_lines.append(line)
        self._ready.set()  # tcpdump is gone: whoever waits must look at why

    def _read_loop(self) -> None:
        session = self.session
        pipe = _PipeReader(self.proc.stdout.fileno(), self.output)
        reader = PcapStreamReader(pipe, chunk_size=READ_CHUNK)
        error = None
        try:
            for batch in reader.batches():
                session.add_batch(batch.buf, batch)
                self.packets += len(batch)
                self._last_packet = time.monotonic()
        except CaptureError as exc:
            error = str(exc)
        for w in reader.warnings:
            session.warn(f"tcpdump stream: {w}")
        pipe.thread.join()
        status = self.proc.wait()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        if self._stopping and error is None:
            return
        if error is None and status == 0:
            session.request_stop("source")
            return
        why = error or (f"tcpdump exited with status {status}" if status >= 0 else
                        f"tcpdump was killed by signal {-status}")
        last = self._last_error()
        session.request_stop("source", f"{why}" + (f": {last}" if last else ""))

    def _last_error(self) -> str | None:
        for line in reversed(self.stderr_lines):
            if not line.startswith("tcpdump: listening on"):
                return line
        return None


def _grow_pipe(fd: int) -> int | None:
    """Enlarge the pipe (F_SETPIPE_SZ); root may pass /proc/sys/fs/pipe-max-size."""
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is None:
        return None
    for size in (PIPE_SIZE, 1 << 20):
        try:
            return fcntl.fcntl(fd, setsz, size)
        except OSError:
            continue
    return None


def tcpdump_available(name: str = "tcpdump") -> bool:
    return shutil.which(name) is not None and os.access(shutil.which(name), os.X_OK)
