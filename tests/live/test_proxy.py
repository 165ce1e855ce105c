"""The proxy tap: lossless, root-free; live figures equal the reference truth."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

import pytest
from live_helpers import (PY, LiveProc, assert_matches_truth, assert_received,
                          assert_summary_matches_truth, closed_port, config, migrate, receiver)

import mfdscope
from mfdscope.live import LiveCapture, Proxy
from mfdscope.live.session import LiveSession, SourceError


def _same_frames(a, b) -> None:
    """Two Captures hold the same records and connections (times to the nanosecond)."""
    cols = [c for c in a.packets.columns if c not in ("t_start", "t_end")]
    assert a.packets[cols].equals(b.packets[cols])
    assert (abs(a.packets["t_end"] - b.packets["t_end"]) < 1e-6).all()
    ccols = ["flow", "role", "channel_id", "src", "dst", "bytes", "bytes_reverse",
             "wire_bytes", "segments", "records", "end", "holes"]
    assert a.connections[ccols].equals(b.connections[ccols])


def test_proxy_64mib_matches_truth_and_file(tmp_path):
    """64 MiB, 4 channels, device state: exact per-channel bytes, records, multifd_bytes;
    the receiver verifies the RAM image; the written pcap gives the same frames."""
    cfg = config(blocks="64M", devices=2)
    rx = receiver(cfg)
    path = tmp_path / "proxy.pcap"
    lc = LiveCapture.proxy("127.0.0.1:0", rx.address, write=str(path))
    truth = migrate(cfg, lc.address)
    report = rx.join()
    assert lc.wait_idle(0.0, timeout=30)
    cap = lc.stop()
    assert_received(truth, report)
    assert_matches_truth(cap, truth)
    assert lc.errors == []
    stats = lc.source.stats()
    assert stats["drops"] == 0 and stats["open_connections"] == 0
    assert stats["bytes_relayed"] == sum(truth["channel_bytes"]) + truth["main_bytes"] + \
        int(cap.connections["bytes_reverse"].sum())
    assert set(cap.connections["end"]) == {"fin"}
    reopened = mfdscope.open(path)
    _same_frames(cap, reopened)
    assert_matches_truth(reopened, truth)


@pytest.mark.parametrize("profile,compression", [("7.2", "zlib"), ("9.2", "zstd")])
def test_proxy_other_versions(profile, compression):
    """multifd_bytes as 7.2 (at enqueue) and 9.2 count it, with compression."""
    cfg = config(blocks="8M", profile=profile, compression=compression)
    rx = receiver(cfg)
    with LiveCapture.proxy("127.0.0.1:0", rx.address, qemu_version=profile) as lc:
        truth = migrate(cfg, lc.address)
        assert_received(truth, rx.join())
        lc.wait_idle(0.0, timeout=30)
    cap = lc.stop()
    assert_matches_truth(cap, truth)
    assert lc.stats()["multifd_bytes"]["value"] == truth["multifd_bytes"]


def test_half_close_is_relayed():
    """A client that shuts down its sending side still gets the server's answer."""
    srv = socket.create_server(("127.0.0.1", 0))
    got = {}

    def serve():
        conn, _ = srv.accept()
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        got["server"] = data
        conn.sendall(b"answer:" + str(len(data)).encode())
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    session = LiveSession("proxy")
    proxy = Proxy("127.0.0.1:0", f"127.0.0.1:{srv.getsockname()[1]}")
    proxy.start(session)
    c = socket.create_connection(("127.0.0.1", int(proxy.address.rsplit(":", 1)[1])))
    c.sendall(b"x" * 300000)
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := c.recv(65536):
        reply += chunk
    c.close()
    t.join()
    srv.close()
    proxy.stop()
    proxy.join()
    session.finish()
    assert got["server"] == b"x" * 300000
    assert reply == b"answer:300000"
    conn = session.snapshot().connections.iloc[0]
    assert (conn["bytes"], conn["bytes_reverse"], conn["role"], conn["end"]) == \
        (300000, 13, "unknown", "fin")


def test_listen_failure_is_a_source_error():
    busy = socket.create_server(("127.0.0.1", 0))
    proxy = Proxy(f"127.0.0.1:{busy.getsockname()[1]}", "127.0.0.1:1")
    with pytest.raises(SourceError, match="cannot listen on"):
        proxy.start(LiveSession("proxy"))
    busy.close()


def test_cli_until_idle_json_and_write(tmp_path):
    cfg = config(blocks="16M", devices=1)
    rx = receiver(cfg)
    path = tmp_path / "cli.pcap"
    lp = LiveProc("proxy", "--listen", "127.0.0.1:0", "--forward", rx.address, "--json",
                  "--interval", "0.2", "--until-idle", "0.3", "--write", str(path))
    addr = lp.wait_ready().split("listening on ")[1].split(",")[0]
    truth = migrate(cfg, addr)
    assert_received(truth, rx.join())
    assert lp.finish() == 0
    final = lp.final
    assert final["stop_reason"] == "idle" and final["errors"] == []
    assert_summary_matches_truth(final, truth)
    assert final["devices"] == [{"idstr": "0000:00:10.0/vfio", "instance_id": 0,
                                 "buffers": cfg.buffers_per_device + 1, "config_seen": True,
                                 "bytes": final["devices"][0]["bytes"]}]
    assert final["capture_file"]["error"] is None
    assert "stopped after --until-idle" in lp.err[-1]
    assert_matches_truth(mfdscope.open(path), truth)


def test_cli_sigint_keeps_everything(tmp_path):
    """Ctrl-C mid-migration: exit 0, final summary printed, the file opens and holds
    what the live view counted."""
    cfg = config(blocks="512M", channels=2, iterations=0)
    rx = receiver(cfg, timeout=10)
    path = tmp_path / "int.pcap"
    lp = LiveProc("proxy", "--listen", "127.0.0.1:0", "--forward", rx.address, "--json",
                  "--interval", "0.1", "--write", str(path))
    addr = lp.wait_ready().split("listening on ")[1].split(",")[0]
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("truth", migrate(cfg, addr)))
    t.start()
    lp.wait_line(lambda n, l: n == "out" and '"multifd_tcp_bytes": 0,' not in l
                 and '"multifd_channels": 2' in l)
    lp.proc.send_signal(signal.SIGINT)
    assert lp.finish() == 0
    t.join()
    rx.join()
    final = lp.final
    assert final["stop_reason"] == "interrupted"
    assert "stopped by signal" in lp.err[-1]
    assert result["truth"]["error"]  # the migration was cut
    on_wire = final["totals"]["multifd_tcp_bytes"]
    assert 0 < on_wire < sum(result["truth"]["channel_bytes"]) + 1
    cap = mfdscope.open(path)
    assert int(cap.connections.loc[cap.connections["role"] == "multifd", "bytes"].sum()) == on_wire


def test_cli_destination_refuses():
    port = closed_port()
    lp = LiveProc("proxy", "--listen", "127.0.0.1:0", "--forward", f"127.0.0.1:{port}",
                  "--json")
    addr = lp.wait_ready().split("listening on ")[1].split(",")[0]
    truth = migrate(config(blocks="4M"), addr)
    assert truth["error"]  # the sender saw its connection reset
    assert lp.finish() == 1
    errors = [l for l in lp.err if "error:" in l]
    assert len(errors) == 1 and "cannot connect to" in errors[0] and \
        "Connection refused" in errors[0]
    assert lp.final["stop_reason"] == "error"


def test_cli_sender_killed(tmp_path):
    """The migration source dies mid-migration: the proxy relays the end, the summary
    says where each stream stopped, exit status 0 (the proxy itself worked)."""
    cfg = config(blocks="1G", channels=2, iterations=0)
    rx = receiver(cfg, timeout=10)
    lp = LiveProc("proxy", "--listen", "127.0.0.1:0", "--forward", rx.address, "--json",
                  "--interval", "0.1", "--until-idle", "0.3")
    addr = lp.wait_ready().split("listening on ")[1].split(",")[0]
    sender = subprocess.Popen([PY, "-m", "mfdscope.reference", "send", "--connect", addr,
                               "--channels", "2", "--ram-size", "1G", "--iterations", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lp.wait_line(lambda n, l: n == "out" and '"multifd_channels": 2' in l
                 and '"multifd_tcp_bytes": 0,' not in l)
    sender.kill()
    sender.wait()
    report = rx.join()
    assert not report["ok"]
    assert lp.finish() == 0
    final = lp.final
    assert final["stop_reason"] == "idle"
    ends = {c["end"] for c in final["channels"]}
    assert ends <= {"fin", "rst"}
    assert 0 < final["totals"]["multifd_tcp_bytes"] < 1 << 30  # cut short
    assert "stopped after --until-idle" in lp.err[-1]


def test_cli_disk_full(tiny_fs):
    """--write on a full file system: one-line error, exit 1, the relay and the
    analysis go on to the end, the file keeps whole records and opens."""
    cfg = config(blocks="16M")
    rx = receiver(cfg)
    path = tiny_fs / "full.pcap"
    lp = LiveProc("proxy", "--listen", "127.0.0.1:0", "--forward", rx.address, "--json",
                  "--interval", "0.2", "--until-idle", "0.3", "--write", str(path))
    addr = lp.wait_ready().split("listening on ")[1].split(",")[0]
    truth = migrate(cfg, addr)
    assert_received(truth, rx.join())
    assert lp.finish() == 1
    errors = [l for l in lp.err if "error:" in l]
    assert len(errors) == 1 and "No space left on device" in errors[0], lp.err
    final = lp.final
    assert_summary_matches_truth(final, truth)  # nothing captured was lost
    assert final["capture_file"]["error"]
    cap = mfdscope.open(path)
    assert len(cap.expert[cap.expert["group"] == "capture"]) == 0  # whole records only
    assert 0 < os.path.getsize(path) <= 2 << 20


def test_cli_rich_view():
    """Without --json: the rich view, then the summary with the accounting explanation."""
    cfg = config(blocks="8M", devices=1)
    rx = receiver(cfg)
    lp = LiveProc("proxy", "--listen", "127.0.0.1:0", "--forward", rx.address,
                  "--until-idle", "0.3", "--interval", "0.2", env={"COLUMNS": "160"})
    addr = lp.wait_ready().split("listening on ")[1].split(",")[0]
    truth = migrate(cfg, addr)
    assert_received(truth, rx.join())
    assert lp.finish() == 0
    text = "\n".join(lp.out)
    assert "multifd_bytes:" in text and "device state: 0000:00:10.0/vfio:0 5 buffers" in text
    assert f"summary: 4 multifd channels, {sum(truth['channel_bytes']):,} bytes" in text
    assert "\x1b[" not in text or "final" in text  # rich, not hand-written escapes
