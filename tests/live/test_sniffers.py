"""tcpdump (libpcap) and Scapy sources against the reference migration on loopback.

tcpdump must really run here (it is installed by setup.sh; as root it can capture):
its totals must equal the truth whenever it reports no kernel drops.  The Scapy
source is lossy by design: the test checks its loopback de-duplication and that drops
are reported.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading

import pytest
from live_helpers import (LiveProc, assert_matches_truth, assert_received,
                          assert_summary_matches_truth, config, migrate, receiver)

import mfdscope
from mfdscope.live import LiveCapture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sniffing needs root")


class FakeQmp:
    """A QMP server on a unix socket: greeting, capabilities, query-migrate whose
    multifd-bytes grows by 1000 per call, with an event before every reply."""

    def __init__(self, path: str):
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.calls = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _send(self, conn, obj) -> None:
        conn.sendall(json.dumps(obj).encode() + b"\r\n")

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        self._send(conn, {"QMP": {"version": {"qemu": {"major": 10}}, "capabilities": []}})
        for line in conn.makefile("rb"):
            cmd = json.loads(line)["execute"]
            if cmd == "qmp_capabilities":
                self._send(conn, {"return": {}})
                continue
            self.calls += 1
            self._send(conn, {"event": "MIGRATION_PASS", "data": {"pass": self.calls}})
            self._send(conn, {"return": {"status": "active", "ram": {
                "multifd-bytes": 1000 * self.calls, "transferred": 1100 * self.calls}}})
        conn.close()
        self.srv.close()


def _seen_all_or_dropped(line: str, total: int) -> bool:
    rep = json.loads(line)
    return rep["totals"]["multifd_tcp_bytes"] == total or bool(rep["drops"])


def test_tcpdump_cli_matches_truth_with_qmp(tmp_path):
    assert shutil.which("tcpdump"), "tcpdump is part of the setup (setup.sh installs it)"
    cfg = config(blocks="16M", devices=1)
    rx = receiver(cfg)
    port = rx.address.rsplit(":", 1)[1]
    qmp = FakeQmp(str(tmp_path / "qmp.sock"))
    path = tmp_path / "td.pcap"
    lp = LiveProc("live", "--tcpdump", "lo", "--port", port, "--json", "--interval", "0.2",
                  "--write", str(path), "--qmp", qmp.path)
    lp.wait_ready()
    truth = migrate(cfg, rx.address)
    assert_received(truth, rx.join())
    total = sum(truth["channel_bytes"])
    try:  # everything seen (or drops reported): then stop
        lp.wait_line(lambda n, l: n == "out" and _seen_all_or_dropped(l, total), timeout=15)
    except AssertionError:
        pass
    lp.proc.send_signal(signal.SIGINT)
    assert lp.finish() == 0, lp.err
    final = lp.final
    assert final["stop_reason"] == "interrupted"
    assert final["capture"]["tcpdump"]["captured"] > 0  # tcpdump's own statistics
    drops = final["drops"]
    assert isinstance(drops, int)
    # QMP sampled on the same clock, shown beside the wire figures, kept
    samples = [j["qmp"] for j in lp.json_lines() if j.get("qmp")]
    assert samples and samples[-1]["status"] == "active"
    assert samples[-1]["multifd_bytes"] == 1000 * qmp.calls
    assert final["accounting"]["qmp_multifd_bytes"] == 1000 * qmp.calls
    reopened = mfdscope.open(path)
    if drops:
        pytest.skip(f"tcpdump reported {drops} kernel drops: totals cannot equal the truth "
                    "(drops were reported, as required)")
    assert_summary_matches_truth(final, truth)
    assert_matches_truth(reopened, truth)


def test_tcpdump_disk_full(tiny_fs):
    """The raw pcap tee hits a full disk: one error line, exit 1, the analysis went
    on, the file is cut after its last whole record and opens."""
    cfg = config(blocks="16M")
    rx = receiver(cfg)
    path = tiny_fs / "td.pcap"
    lp = LiveProc("live", "--tcpdump", "lo", "--port", rx.address.rsplit(":", 1)[1],
                  "--json", "--interval", "0.2", "--write", str(path))
    lp.wait_ready()
    truth = migrate(cfg, rx.address)
    assert_received(truth, rx.join())
    total = sum(truth["channel_bytes"])
    try:
        lp.wait_line(lambda n, l: n == "out" and _seen_all_or_dropped(l, total), timeout=15)
    except AssertionError:
        pass
    lp.proc.send_signal(signal.SIGINT)
    assert lp.finish() == 1
    errors = [l for l in lp.err if "error:" in l]
    assert len(errors) == 1 and "No space left on device" in errors[0], lp.err
    final = lp.final
    if not final["drops"]:
        assert_summary_matches_truth(final, truth)  # the analysis saw everything
    cap = mfdscope.open(path)
    assert len(cap.expert[cap.expert["group"] == "capture"]) == 0  # whole records only
    assert len(cap.connections) >= 1


def test_tcpdump_api_and_killed_tcpdump(tmp_path):
    """LiveCapture.tcpdump grows while capturing; a tcpdump that dies ends the run
    with an error and keeps what was captured."""
    cfg = config(blocks="8M")
    rx = receiver(cfg)
    port = int(rx.address.rsplit(":", 1)[1])
    lc = LiveCapture.tcpdump("lo", port=port)
    truth = migrate(cfg, rx.address)
    assert_received(truth, rx.join())
    pid = lc.source.proc.pid
    os.kill(pid, signal.SIGKILL)
    assert lc.session.stop_requested.wait(10)
    cap = lc.stop()
    assert lc.errors == ["tcpdump was killed by signal 9"]
    assert len(cap.connections) >= 1  # what was read before is kept


def test_tcpdump_cli_killed():
    lp = LiveProc("live", "--tcpdump", "lo", "--port", "1", "--json")
    lp.wait_ready()
    children = open(f"/proc/{lp.proc.pid}/task/{lp.proc.pid}/children").read().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    assert lp.finish() == 1
    errors = [l for l in lp.err if "error:" in l]
    assert errors == ["mfdscope live: error: tcpdump was killed by signal 9"]
    assert lp.final["stop_reason"] == "source"


def test_scapy_dedups_loopback_and_reports_drops():
    cfg = config(blocks="4M", channels=2)
    rx = receiver(cfg)
    port = int(rx.address.rsplit(":", 1)[1])
    lc = LiveCapture.scapy("lo", port=port)
    truth = migrate(cfg, rx.address)
    assert_received(truth, rx.join())
    cap = lc.stop()
    stats = lc.source.stats()
    assert stats["duplicates_dropped"] > 0  # the outgoing copies on lo
    assert stats["duplicates_dropped"] >= stats["frames"] * 0.9
    assert isinstance(stats["drops"], int)  # kernel drops are reported (maybe 0 here)
    # without de-duplication every byte would count as retransmitted once; what is
    # left are real retransmissions (tail-loss probes when the receiver stalls)
    assert int(cap.connections["retransmitted_bytes"].sum()) < \
        0.1 * int(cap.connections["bytes"].sum())
    msgs = " ".join(cap.expert["message"])
    assert "seen twice" in msgs and "lower bounds" in msgs  # said loudly
    if stats["drops"] == 0 and int(cap.connections["holes"].sum()) == 0:
        assert_matches_truth(cap, truth)
