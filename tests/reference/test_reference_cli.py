"""``mfdscope reference send|receive`` end to end (receiver in its own process)."""
from __future__ import annotations

import json
import subprocess
import sys

from mfdscope.reference import cli_main

COMMON = ["--channels", "3", "--ram-size", "4M", "--profile", "10.0", "--devices", "2",
          "--buffers-per-device", "2", "--buffer-size", "64K"]


def test_send_and_receive_processes(tmp_path):
    truth, report = tmp_path / "truth.json", tmp_path / "report.json"
    rx = subprocess.Popen([sys.executable, "-m", "mfdscope.reference", "receive", "--listen",
                           "127.0.0.1:0", *COMMON, "--truth", str(report), "--expect-truth",
                           str(truth), "--timeout", "20"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = rx.stderr.readline()  # "listening on HOST:PORT", written once bound
        assert line.startswith("listening on "), line
        address = line.split()[-1]
        assert cli_main(["send", "--connect", address, *COMMON, "--truth", str(truth)]) == 0
        out, err = rx.communicate(timeout=30)
    finally:
        rx.kill()
    assert rx.returncode == 0, err
    assert "matches the sender's truth" in out
    rep = json.loads(report.read_text())
    assert rep["ok"] and rep["comparison"]["equal"]
    tr = json.loads(truth.read_text())
    assert tr["multifd_bytes"] == sum(tr["channel_bytes"]) == sum(rep["channel_bytes"])


def test_connection_refused_is_one_line(capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    assert cli_main(["send", "--connect", f"127.0.0.1:{port}", "--ram-size", "1M"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Connection refused" in err[0]


def test_bad_configuration_exit_2(capsys):
    assert cli_main(["send", "--connect", "127.0.0.1:1", "--profile", "9.2",
                     "--devices", "1"]) == 2
    assert "needs QEMU 10.0+" in capsys.readouterr().err
    assert cli_main(["send", "--connect", "127.0.0.1:1", "--compression", "zlib",
                     "--zero-copy"]) == 2
