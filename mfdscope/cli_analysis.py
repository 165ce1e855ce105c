"""Analysis subcommands of ``mfdscope``: stats, interleave, accounting, check, plot.

``mfdscope/cli.py`` wires them in with ``add_subcommands(sub, capture_args)``.
Exit status: 0 on success, 1 when a comparison fails (accounting mismatch, a
failed check), 2 (via ``cli.UsageError``) for unusable input.
"""
from __future__ import annotations

import json
import math
import os

import pandas as pd

from .analysis import accounting as acc_mod
from .analysis import checks as checks_mod
from .analysis import interleave as il
from .analysis import throughput as tp_mod
from .analysis._common import frame_records


def _cli():
    from . import cli  # late: cli.py imports this module from build_parser

    return cli


def _load_json(path: str | None, what: str):
    if not path:
        return None
    try:
        with open(path) as fh:  # noqa: PTH123
            doc = json.load(fh)
    except OSError as exc:
        raise _cli().UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _cli().UsageError(f"{what} {path} is not JSON: {exc}") from None
    # a swapped or unrelated file must not pass as "no reference given"
    if what == "query-migrate file" and acc_mod.qmp_values(doc)[0] is None:
        raise _cli().UsageError(f"{path} has no ram.multifd-bytes: not a query-migrate result")
    if what == "truth file" and (not isinstance(doc, dict) or "multifd_bytes" not in doc
                                 or "records" not in doc):
        raise _cli().UsageError(f"{path} has no multifd_bytes and records: not a reference "
                                "sender's truth file")
    return doc


def _or_na(v) -> str:
    return "n/a" if v is None else f"{v:,}"


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def _dump(obj) -> None:
    print(json.dumps(_clean(obj), indent=2, default=str))


def _table(df: pd.DataFrame) -> str:
    if not len(df):
        return "(none)"
    return df.to_string(index=False, float_format=lambda v: f"{v:.4g}")


# --------------------------------------------------------------------------- stats
def cmd_stats(args) -> int:
    cap = _cli()._open(args)
    if args.bin is not None and args.bin <= 0:
        raise _cli().UsageError("--bin must be a positive number of seconds")
    s = tp_mod.summary(cap, bin_seconds=args.bin, min_bins=args.stall_bins)
    stats = s["channels"]
    if args.json:
        _dump({"capture": cap.path, "bin_seconds": s["bin_seconds"],
               "imbalance": s["imbalance"], "channels": frame_records(stats),
               "stalls": frame_records(s["stalls"]), "sync_rounds": frame_records(s["rounds"])})
        return 0
    print(f"{cap.path}: {len(stats)} multifd channels, bin {s['bin_seconds'] * 1e3:g} ms")
    # units in the headers: a QEMU developer reads MB/s and percentages, not B/s in e-notation
    view = pd.DataFrame({
        "channel": stats["channel"], "records": stats["records"],
        "ram": stats["ram_packets"], "sync": stats["sync_packets"],
        "device_state": stats["device_state_packets"],
        "multifd_bytes": stats["goodput"], "share_%": (stats["share"] * 100).round(1),
        "tcp_bytes": stats["tcp_bytes"], "frame_bytes": stats["frame_bytes"],
        "duration_s": stats["duration"], "mean_MB/s": (stats["mean_Bps"] / 1e6).round(2),
        "compression": stats["compression"], "ratio": stats["compression_ratio"],
    }) if len(stats) else stats
    print(_table(view))
    im = s["imbalance"]
    print(f"imbalance: cv {im['cv']:.3f}, shares {im['min_share']:.1%} .. {im['max_share']:.1%} "
          f"(busiest channel {im['busiest']}, idlest {im['idlest']})")
    print(f"\nstalls (>= {args.stall_bins} bins with no bytes while other channels sent):")
    print(_table(s["stalls"]))
    print("\nSYNC rounds:")
    r = s["rounds"]
    print(_table(r[["round", "channels", "start", "end", "duration", "first_channel",
                    "last_channel", "spread", "bytes"]] if len(r) else r))
    return 0


# --------------------------------------------------------------------------- interleave
def cmd_interleave(args) -> int:
    cap = _cli()._open(args)
    res = il.interleaving(cap)
    if args.json:
        _dump({"capture": cap.path, "buffers": frame_records(res["buffers"]),
               "devices": frame_records(res["devices"]),
               "overlaps": frame_records(res["overlaps"])})
        return 0
    buf = res["buffers"]
    print(f"{cap.path}: {len(buf)} device-state buffers, {len(res['devices'])} devices")
    if not len(buf):
        return 0
    cols = ["arrival", "idstr", "instance_id", "vfio_idx", "vfio_flags", "channel", "t_start",
            "t_end", "data_len", "after_last_ram", "dt_last_ram", "after_own_last_sync",
            "syncs_done"]
    print(_table(buf[cols]))
    print("\ndevices:")
    print(_table(res["devices"][["idstr", "instance_id", "buffers", "data_bytes", "channels",
                                 "first", "last", "in_order", "reorder_depth", "config_idx",
                                 "config_t_end", "config_arrived_last"]]))
    print("\noverlapping device transfers:")
    print(_table(res["overlaps"]))
    return 0


# --------------------------------------------------------------------------- accounting
def cmd_accounting(args) -> int:
    cap = _cli()._open(args)
    qmp = _load_json(args.qmp, "query-migrate file")
    truth = _load_json(args.truth, "truth file")
    try:
        res = acc_mod.accounting(cap, qemu_version=args.qemu_version, qmp=qmp, truth=truth,
                                 page_size=args.page_size)
    except ValueError as exc:  # unknown --qemu-version
        raise _cli().UsageError(str(exc)) from None
    if args.json:
        _dump({"capture": cap.path, **res.to_dict()})
    else:
        print(f"{cap.path}: QEMU {res.qemu_version} ({res.version_source}), rule {res.rule}")
        print(_table(res.table()))
        if res.predicted_transferred_bytes is not None or res.qmp_transferred_bytes is not None:
            print(f"transferred: predicted {_or_na(res.predicted_transferred_bytes)}, "
                  f"query-migrate {_or_na(res.qmp_transferred_bytes)}")
        print("match" if res.match else "MISMATCH")
        for line in res.explanation.split("\n"):
            print(f"  - {line}")
    return 0 if res.match else 1


# --------------------------------------------------------------------------- check
def cmd_check(args) -> int:
    cap = _cli()._open(args)
    truth = _load_json(args.truth, "truth file")
    qmp = _load_json(args.qmp, "query-migrate file")
    table, ok = checks_mod.check(cap, truth=truth, qemu_version=args.qemu_version, qmp=qmp)
    if args.json:
        _dump({"capture": cap.path, "passed": ok, "checks": frame_records(table)})
    else:
        print(_table(table))
        print(f"{int(table['passed'].sum())}/{len(table)} checks passed: "
              + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


# --------------------------------------------------------------------------- plot
def cmd_plot(args) -> int:
    from . import plots

    if args.bin is not None and args.bin <= 0:
        raise _cli().UsageError("--bin must be a positive number of seconds")
    cap = _cli()._open(args)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as exc:
        raise _cli().UsageError(f"cannot create {args.output}: {exc.strerror or exc}") from None
    qmp = _load_json(args.qmp, "query-migrate file")
    truth = _load_json(args.truth, "truth file")
    res = acc_mod.accounting(cap, qemu_version=args.qemu_version, qmp=qmp, truth=truth)
    figs = {"io.png": plots.io_graph(cap, bin_seconds=args.bin),
            "timeline.png": plots.timeline(cap),
            "accounting.png": plots.accounting_chart(res)}
    if (cap.packets["kind"] == "device_state").any():
        # at whole-migration scale the switchover phase is a few pixels wide
        figs["timeline-device-state.png"] = plots.timeline(cap, xlim="device_state")
    for name, fig in figs.items():
        print(plots.save(fig, os.path.join(args.output, name)))
    return 0


def add_subcommands(subparsers, capture_args) -> None:
    """Add stats, interleave, accounting, check and plot to ``mfdscope``'s subparsers."""
    s = subparsers.add_parser("stats", help="throughput, imbalance, stalls and SYNC rounds "
                              "per multifd channel")
    capture_args(s)
    s.add_argument("--bin", type=float, default=None, metavar="SECONDS",
                   help="time bin (default: 1/2/5 x 10^k s giving 160-400 bins)")
    s.add_argument("--stall-bins", type=int, default=3, metavar="N",
                   help="report a stall after N empty bins (default 3)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_stats)

    i = subparsers.add_parser("interleave", help="device-state buffers: channels, order, "
                              "reorder depth")
    capture_args(i)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_interleave)

    a = subparsers.add_parser("accounting", help="predict query-migrate multifd-bytes and "
                              "compare (exit 1 on mismatch)")
    capture_args(a)
    a.add_argument("--qemu-version", metavar="V", help="QEMU version of the source, e.g. 7.2 "
                   "or 10.0 (default: detected from the wire)")
    a.add_argument("--qmp", metavar="FILE", help="query-migrate JSON of the source")
    a.add_argument("--truth", metavar="FILE", help="reference sender truth JSON")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_accounting)

    c = subparsers.add_parser("check", help="SYNC/FLUSH pairing (spec 5.2) and, with --truth, "
                              "a cross-check against a reference sender's truth "
                              "(exit 1 if any check fails)")
    capture_args(c)
    c.add_argument("--truth", metavar="FILE", help="reference sender truth JSON")
    c.add_argument("--qmp", metavar="FILE", help="also compare with a query-migrate JSON")
    c.add_argument("--qemu-version", metavar="V", help="override the truth's QEMU version")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check)

    p = subparsers.add_parser("plot", help="write io.png, timeline.png, accounting.png (and timeline-device-state.png)")
    capture_args(p)
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="output directory")
    p.add_argument("--bin", type=float, default=None, metavar="SECONDS", help="IO graph bin")
    p.add_argument("--qemu-version", metavar="V", help="for the accounting chart")
    p.add_argument("--qmp", metavar="FILE", help="query-migrate JSON for the accounting chart")
    p.add_argument("--truth", metavar="FILE", help="truth JSON for the accounting chart")
    p.set_defaults(func=cmd_plot)


__all__ = ["add_subcommands"]

