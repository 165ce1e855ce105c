"""Helpers for the live tests: reference migrations, CLI subprocesses, truth checks."""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

from mfdscope.analysis.accounting import accounting
from mfdscope.reference import MigrationConfig, Receiver, Sender, SenderError
from mfdscope.reference.truth import compare

PY = sys.executable
LINE_TIMEOUT = 30.0


def config(**kw) -> MigrationConfig:
    opts = dict(channels=4, blocks="16M", profile="10.0", iterations=2, seed=5)
    opts.update(kw)
    return MigrationConfig(**opts)


def receiver(cfg, timeout: float = 30.0) -> Receiver:
    return Receiver(cfg, "127.0.0.1:0", timeout=timeout).start()


def migrate(cfg, address: str) -> dict:
    """Run the reference sender to ``address``; the truth (error in truth["error"])."""
    sender = Sender(cfg, address)
    try:
        return sender.run()
    except SenderError:
        return sender._truth or sender.truth()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def records_by_channel(cap) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    pk = cap.packets.sort_values(["channel", "stream_offset"])
    for row in pk.itertuples(index=False):
        out.setdefault(int(row.channel), []).append((row.kind, int(row.stream_offset),
                                                     int(row.wire_len)))
    return out


def assert_matches_truth(cap, truth: dict) -> None:
    """Per-channel bytes and records, main bytes and multifd_bytes equal the truth."""
    conns = cap.connections
    mf = conns[conns["role"] == "multifd"]
    got = {int(r.channel_id): int(r.bytes) for r in mf.itertuples(index=False)}
    assert [got.get(i) for i in range(len(truth["channel_bytes"]))] == truth["channel_bytes"]
    assert int(conns.loc[conns["role"] == "main", "bytes"].sum()) == truth["main_bytes"]
    recs = records_by_channel(cap)
    for cid, want in enumerate(truth["records"]):
        assert recs.get(cid) == [(r["kind"], r["offset"], r["wire_len"]) for r in want], cid
    acc = accounting(cap.packets, cap.connections, qemu_version=truth["profile"])
    assert acc.predicted_multifd_bytes == truth["multifd_bytes"]
    assert int(cap.connections["holes"].sum()) == 0


def assert_summary_matches_truth(final: dict, truth: dict) -> None:
    """The same, from a final JSON line of ``mfdscope live|proxy --json``."""
    chans = {c["channel_id"]: c for c in final["summary"]["channels"] if c["role"] == "multifd"}
    assert [chans[i]["bytes"] for i in range(len(truth["channel_bytes"]))] == \
        truth["channel_bytes"]
    for cid, want in enumerate(truth["records"]):
        kinds = {}
        for r in want:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        assert {k: v for k, v in chans[cid]["records"].items() if v} == kinds
    assert final["multifd_bytes"]["value"] == truth["multifd_bytes"]
    assert final["totals"]["main_bytes"] == truth["main_bytes"]


def assert_received(truth: dict, report: dict) -> None:
    assert truth["error"] is None, truth["error"]
    assert report["ok"], report.get("errors")
    assert compare(truth, report)["equal"]


class LiveProc:
    """``python -m mfdscope.live ARGS`` with stdout / stderr lines collected."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([PY, "-m", "mfdscope.live", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.out: list[str] = []
        self.err: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._read, args=(s, lines, name), daemon=True)
                         for s, lines, name in ((self.proc.stdout, self.out, "out"),
                                                (self.proc.stderr, self.err, "err"))]
        for t in self._threads:
            t.start()

    def _read(self, stream, lines, name) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            self._q.put((name, line))
        self._q.put((name, None))

    def wait_line(self, predicate, timeout: float = LINE_TIMEOUT) -> str:
        """The first new line (either stream) for which ``predicate(name, line)``."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line; stderr: {self.err}")
            name, line = self._q.get(timeout=left)
            if line is not None and predicate(name, line):
                return line

    def wait_ready(self) -> str:
        line = self.wait_line(lambda n, l: n == "err" and (
            "listening on" in l or "capturing on" in l or "error" in l))
        assert "error" not in line, line
        return line

    def finish(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join()
        return rc

    def json_lines(self) -> list[dict]:
        return [json.loads(l) for l in self.out if l.startswith("{")]

    @property
    def final(self) -> dict:
        lines = [j for j in self.json_lines() if j.get("final")]
        assert len(lines) == 1, self.out[-3:]
        return lines[0]
