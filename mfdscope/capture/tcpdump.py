"""Run tcpdump as a capture source: start it, know when it listens, stop it, read drops.

libpcap through tcpdump is the serious live path on Linux (kernel ring buffer, BPF
filter); Scapy's own sniffer loses data at loopback speed (shared/design.md).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time

#: tcpdump's statistics line ("N packets captured, N packets received by filter, N
#: packets dropped by kernel"), printed at exit and on SIGUSR1
STATS_RE = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel|"
                      r"dropped by interface)")
STAT_KEYS = {"captured": "captured", "received by filter": "received_by_filter",
             "dropped by kernel": "dropped_by_kernel",
             "dropped by interface": "dropped_by_interface"}


def parse_stats(line: str) -> dict[str, int]:
    """The counts in one line of tcpdump's stderr (empty if it holds none)."""
    return {STAT_KEYS[what]: int(n) for n, what in STATS_RE.findall(line)}


def drops(stats: dict[str, int]) -> int | None:
    """Packets the kernel or the interface dropped; None before tcpdump reported."""
    if not stats:
        return None
    return stats.get("dropped_by_kernel", 0) + stats.get("dropped_by_interface", 0)


def argv(binary: str, iface: str, bpf: str, out: str, buffer_kib: int) -> list[str]:
    """The command line: snap length 0, packet-buffered output, and immediate mode.

    Immediate mode matters: without it libpcap hands packets over per ring block (up
    to a second late), and stopping tcpdump then loses the last ones.
    """
    return [binary, "-i", iface, "-n", "-s", "0", "-U", "--immediate-mode",
            "-B", str(buffer_kib), "-w", out, *bpf.split()]


class TcpdumpError(Exception):
    """tcpdump is missing or could not start; the message says why, in one line."""


class Tcpdump:
    """tcpdump writing a capture file (see `argv`), as a managed subprocess.

    ``out`` is a file path, or ``"-"`` for the pcap stream on ``self.stdout``.
    The live view's pipe source (`mfdscope.live.tcpdump`) shares `argv` and the
    statistics parsing.
    """

    def __init__(self, iface: str = "lo", bpf: str = "tcp", out: str = "-",
                 buffer_kib: int = 65536, binary: str | None = None):
        self.binary = binary or shutil.which("tcpdump")
        if not self.binary:
            raise TcpdumpError("tcpdump is not installed (apt-get install tcpdump; "
                               "./setup.sh does it)")
        self.argv = argv(self.binary, iface, bpf, out, buffer_kib)
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self.stats: dict[str, int] = {}
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def stdout(self):
        return self.proc.stdout

    def start(self, timeout: float = 10.0) -> "Tcpdump":
        try:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE if self.out == "-"
                                         else subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL, text=False, bufsize=0)
        except OSError as exc:
            raise TcpdumpError(f"cannot run tcpdump: {exc}") from None
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(1)
                last = self.stderr_lines[-1] if self.stderr_lines else "no message"
                raise TcpdumpError(f"tcpdump exited with status {self.proc.returncode}: {last}")
            if time.monotonic() > deadline:
                self.stop()
                raise TcpdumpError(f"tcpdump did not start listening within {timeout:.0f} s")
        return self

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_lines.append(line)
            if "listening on" in line:
                self._listening.set()
            self.stats.update(parse_stats(line))

    def wait_quiet(self, quiet: float = 0.3, limit: float = 5.0) -> None:
        """Wait until the output file stops growing (the kernel ring is drained)."""
        if self.out == "-":
            return
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = os.path.getsize(self.out) if os.path.exists(self.out) else 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """SIGINT, wait, and return tcpdump's own counts (`STAT_KEYS` values)."""
        if self.proc is None:
            return self.stats
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        return self.stats

    def __enter__(self) -> "Tcpdump":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
