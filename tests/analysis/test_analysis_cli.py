"""The analysis subcommands, through an argparse parser built with add_subcommands."""
from __future__ import annotations

import argparse
import json

import pytest

from mfdscope import cli
from mfdscope.cli_analysis import add_subcommands

from conftest import QEMU

DEFAULT = str(QEMU / "qemu10-nocomp-4ch.pcap")


def _parser():
    p = argparse.ArgumentParser(prog="mfdscope")
    sub = p.add_subparsers(dest="command", required=True)

    def capture_args(sp):
        sp.add_argument("capture", help="pcap or pcapng file")
        sp.add_argument("--page-size", type=int, default=None)

    add_subcommands(sub, capture_args)
    return p


def run(argv):
    """As cli.main does: exit status, UsageError/CaptureError -> 2."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (cli.UsageError, cli.CaptureError, OSError) as exc:
        print(f"mfdscope: error: {exc}")
        return 2


def test_stats(capsys):
    assert run(["stats", DEFAULT]) == 0
    out = capsys.readouterr().out
    assert "imbalance: cv" in out and "SYNC rounds" in out
    assert run(["stats", DEFAULT, "--json", "--bin", "0.005"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["bin_seconds"] == 0.005 and len(d["channels"]) == 4
    assert sum(c["goodput"] for c in d["channels"]) == 5458496
    assert len(d["sync_rounds"]) == 3
    assert run(["stats", DEFAULT, "--bin", "0"]) == 2


def test_interleave(capsys, devices_capture):
    assert run(["interleave", DEFAULT]) == 0
    assert "0 device-state buffers" in capsys.readouterr().out
    assert run(["interleave", str(devices_capture[3]), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["buffers"]) == 7 and len(d["devices"]) == 2
    assert {"reorder_depth", "in_order", "config_t_end"} <= set(d["devices"][0])


@pytest.mark.parametrize("name", ["qemu10-nocomp-4ch", "qemu72-zlib-4ch"])
def test_accounting_matches(capsys, name):
    qmp = str(QEMU / f"{name}.query-migrate.json")
    assert run(["accounting", str(QEMU / f"{name}.pcap"), "--qmp", qmp, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"qemu_version", "predicted_multifd_bytes", "wire_multifd_bytes",
            "qmp_multifd_bytes", "match", "explanation"} <= set(d)
    assert d["match"] and d["predicted_multifd_bytes"] == d["qmp_multifd_bytes"]
    assert run(["accounting", str(QEMU / f"{name}.pcap"), "--qmp", qmp]) == 0
    assert "match" in capsys.readouterr().out


def test_accounting_mismatch_and_errors(capsys, tmp_path):
    name = "qemu72-nocomp-4ch"
    qmp = str(QEMU / f"{name}.query-migrate.json")
    assert run(["accounting", str(QEMU / f"{name}.pcap"), "--qmp", qmp,
                "--qemu-version", "10.0"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert run(["accounting", DEFAULT, "--qmp", str(tmp_path / "nope.json")]) == 2
    (tmp_path / "bad.json").write_text("{")
    assert run(["accounting", DEFAULT, "--qmp", str(tmp_path / "bad.json")]) == 2
    assert run(["accounting", DEFAULT, "--qemu-version", "banana"]) == 2


def test_check(capsys, tmp_path, devices_capture):
    _, _, tj, path = devices_capture
    good = tmp_path / "truth.json"
    good.write_text(json.dumps(tj))
    assert run(["check", str(path), "--truth", str(good)]) == 0
    assert "PASS" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(tj, multifd_bytes=1)))
    assert run(["check", str(path), "--truth", str(bad), "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["passed"] is False
    assert run(["accounting", str(path), "--truth", str(good)]) == 0


def test_plot(capsys, tmp_path):
    out = tmp_path / "figs"
    assert run(["plot", DEFAULT, "-o", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in printed] == ["io.png", "timeline.png",
                                                        "accounting.png"]
    for name in ("io.png", "timeline.png", "accounting.png"):
        assert (out / name).stat().st_size > 5000


def test_wired_into_main_parser():
    """Once mfdscope/cli.py calls add_subcommands, the real parser has them too."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"stats", "interleave", "accounting", "check", "plot"} <= set(sub.choices)
    assert cli.main(["accounting", DEFAULT, "--qmp",
                     str(QEMU / "qemu10-nocomp-4ch.query-migrate.json")]) == 0
