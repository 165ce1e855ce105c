"""The ``mfdscope`` command line."""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from . import frames, wire
from .api import KINDS, Capture, CaptureError, open as open_capture


class UsageError(Exception):
    """A user mistake reported as one line and exit status 2."""


def _open(args) -> Capture:
    return open_capture(args.capture, page_size=args.page_size,
                        decompress=getattr(args, "decompress", False))


def _apply_filter(packets: pd.DataFrame, expr: str | None) -> pd.DataFrame:
    if not expr:
        return packets
    try:
        return packets.query(frames.translate_filter(expr), engine="python")
    except Exception as exc:  # pandas raises many types for a bad expression
        raise UsageError(f"bad --filter {expr!r}: {exc}") from None


def _fmt_record(r, t0: float) -> str:
    head = (f"{r.t_start - t0:12.6f}  flow {r.flow:<3} ch {_na(r.channel):<3} "
            f"{r.kind:<12} off={r.stream_offset:<10} len={r.wire_len:<7}")
    if r.kind == "init":
        return head
    flags = f"flags=0x{int(r.flags):x}" + (f"({r.flag_names})" if r.flag_names else "")
    if r.kind == "device_state":
        vf = f"idx={_na(r.vfio_idx)} vfio_flags={_na(r.vfio_flags)}"
        return (f"{head} {flags} idstr={r.idstr!r} instance={r.instance_id} "
                f"size={r.next_packet_size} {vf}")
    line = (f"{head} {flags} packet_num={r.packet_num} normal={r.normal_pages} "
            f"zero={r.zero_pages} next_size={r.next_packet_size}")
    if r.ramblock:
        line += f" block={r.ramblock}"
    if r.missing_bytes:
        line += f" MISSING={r.missing_bytes}"
    return line


def _na(v):
    return "-" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def cmd_dissect(args) -> int:
    cap = _open(args)
    pk = _apply_filter(cap.packets, args.filter)
    if args.write and not args.output:
        raise UsageError("-w FILE needs -o csv|json|parquet")
    if args.output:
        return _export(pk, args.output, args.write)
    t0 = float(cap.connections["first_time"].min()) if len(cap.connections) else 0.0
    out = sys.stdout
    for r in pk.itertuples(index=False):
        out.write(_fmt_record(r, t0) + "\n")
    if args.expert or len(cap.expert):
        ex = cap.expert
        if not args.expert:
            ex = ex[ex["severity"] != "note"]
        if args.filter:  # the items of the connections the filter kept, and the capture's
            ex = ex[ex["flow"].isna() | ex["flow"].isin(pk["flow"].dropna().unique())]
        for r in ex.itertuples(index=False):
            where = f"flow {r.flow} off={r.offset}" if r.flow is not pd.NA else "capture"
            out.write(f"[{r.severity}] {where}: {r.message}\n")
    return 0


def _export(df: pd.DataFrame, fmt: str, path: str | None) -> int:
    if fmt == "parquet":
        if not path:
            raise UsageError("-o parquet needs -w FILE")
        df.to_parquet(path, index=False)
    elif fmt == "csv":
        df.to_csv(path or sys.stdout, index=False)
    else:
        text = df.to_json(orient="records", lines=False)
        if path:
            with open(path, "w") as fh:  # noqa: PTH123
                fh.write(text + "\n")
        else:
            sys.stdout.write(text + "\n")
    return 0


def cmd_summary(args) -> int:
    cap = _open(args)
    if args.json:
        print(cap.summary_json())
        return 0
    rows = []
    for c in cap.channels():
        rec = c["records"]
        rows.append({
            "flow": c["flow"], "role": c["role"], "ch": _na(c["channel_id"]),
            "src": c["src"], "dst": c["dst"], "bytes": c["bytes"],
            **{k: rec[k] for k in KINDS},
            "normal": c["normal_pages"], "zero": c["zero_pages"],
            "comp": c["compression"] or "-", "holes": c["holes"],
            "duration": (c["last_time"] - c["first_time"]) if c["first_time"] else 0.0,
        })
    df = pd.DataFrame(rows)
    print(f"{cap.path} ({cap.format}): {len(cap.connections)} connections, "
          f"{len(cap.packets)} multifd records")
    if len(df):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    sev = cap.summary()["expert"]
    print(f"expert: {sev['error']} errors, {sev['warn']} warnings, {sev['note']} notes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfdscope", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def capture_args(sp):
        sp.add_argument("capture", help="pcap or pcapng file")
        sp.add_argument("--page-size", type=int, default=None,
                        choices=wire.SUPPORTED_PAGE_SIZES, metavar="BYTES",
                        help="target page size, one of "
                        f"{', '.join(map(str, wire.SUPPORTED_PAGE_SIZES))} (default: detected)")

    d = sub.add_parser("dissect", help="one line per multifd record, like tshark")
    capture_args(d)
    d.add_argument("--filter", "-Y", help="pandas query over the packets frame, e.g. "
                   "\"kind == 'sync' and channel == 2\" (multifd.* names accepted)")
    d.add_argument("-o", "--output", choices=("csv", "json", "parquet"),
                   help="export the (filtered) packets frame instead of printing lines")
    d.add_argument("-w", "--write", help="file for -o (default: standard output)")
    d.add_argument("--decompress", action="store_true",
                   help="inflate zlib/zstd payloads and check their sizes")
    d.add_argument("--expert", action="store_true", help="also print expert notes")
    d.set_defaults(func=cmd_dissect)

    s = sub.add_parser("summary", help="one row per TCP connection")
    capture_args(s)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_summary)

    from .cli_analysis import add_subcommands as add_analysis
    from .reference import add_subcommands as add_reference

    from .demo import add_subcommands as add_demo
    from .live.cli import add_subcommands as add_live

    add_analysis(sub, capture_args)
    add_reference(sub)
    add_demo(sub)
    add_live(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # piped into head: not an error (an OSError, so first)
        sys.stderr.close()
        return 0
    except (CaptureError, UsageError, OSError) as exc:
        print(f"mfdscope: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
