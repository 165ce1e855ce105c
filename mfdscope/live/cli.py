"""``mfdscope live`` and ``mfdscope proxy``: live analysis from the command line.

Exit status: see `mfdscope.live.run` (0 stopped normally, 1 ended on an error,
2 nothing ran).
"""
from __future__ import annotations

import argparse
import sys

from .run import run
from .session import LiveSession


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--write", "-w", metavar="FILE",
                   help="also write the capture (pcap) to FILE while analysing")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--until-idle", type=float, metavar="S",
                   help="stop once nothing happened for S seconds (proxy: no connection "
                        "open; sniffers: no packet)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="refresh period (default 1 s)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per interval on stdout, then a final one (no view)")
    p.add_argument("--qmp", metavar="PATH",
                   help="QEMU QMP unix socket: sample query-migrate every interval")
    p.add_argument("--qemu-version", default=None, metavar="V",
                   help="count multifd_bytes as this QEMU version does (default: detect)")
    p.add_argument("--page-size", type=int, default=None,
                   help="target page size (default: detected)")


def _run(args, source, prog: str) -> int:
    from .capfile import CaptureFileOutput
    from .qmp import QmpClient, QmpError

    if args.interval <= 0:
        print(f"{prog}: error: --interval must be > 0", file=sys.stderr)
        return 2
    qmp = None
    if args.qmp:
        try:
            qmp = QmpClient(args.qmp)
        except QmpError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    output = None
    if args.write:
        try:
            output = CaptureFileOutput(args.write)
        except OSError as exc:
            print(f"{prog}: error: {exc.strerror}", file=sys.stderr)
            return 2
    if hasattr(source, "set_output"):
        source.set_output(output)
    session = LiveSession(source.name, page_size=args.page_size)
    res = run(source, session, prog=prog, interval=args.interval, duration=args.duration,
              until_idle=args.until_idle, json_lines=args.json, qmp=qmp,
              qemu_version=args.qemu_version, output=output)
    return res.status


def _make_source(args):
    if args.proxy:
        from .proxy import Proxy

        return Proxy(args.proxy[0], args.proxy[1])
    bpf = args.filter or (f"tcp port {args.port}" if args.port else "tcp")
    if args.scapy:
        from .sniff import ScapySource

        return ScapySource(args.scapy, bpf)
    from .tcpdump import TcpdumpSource

    return TcpdumpSource(args.tcpdump or "lo", bpf)


def cmd_live(args) -> int:
    from .session import SourceError

    try:
        source = _make_source(args)
    except SourceError as exc:
        print(f"mfdscope live: error: {exc}", file=sys.stderr)
        return 2
    return _run(args, source, "mfdscope live")


def cmd_proxy(args) -> int:
    from .proxy import Proxy
    from .session import SourceError

    try:
        source = Proxy(args.listen, args.forward)
    except SourceError as exc:
        print(f"mfdscope proxy: error: {exc}", file=sys.stderr)
        return 2
    return _run(args, source, "mfdscope proxy")


def add_subcommands(subparsers) -> None:
    """Register ``live`` and ``proxy`` on an argparse subparsers object (each sets
    ``func`` to a callable(args) -> exit status)."""
    lv = subparsers.add_parser("live", help="analyse a migration while it runs")
    src = lv.add_mutually_exclusive_group()
    src.add_argument("--tcpdump", nargs="?", const="lo", metavar="IFACE",
                     help="sniff IFACE through tcpdump/libpcap (the default, on lo)")
    src.add_argument("--scapy", nargs="?", const="lo", metavar="IFACE",
                     help="sniff IFACE with Scapy's socket (fallback without tcpdump; lossy "
                          "at loopback speed)")
    src.add_argument("--proxy", nargs=2, metavar=("LISTEN", "FORWARD"),
                     help="relay LISTEN (HOST:PORT) to FORWARD and dissect what passes "
                          "(lossless, no root)")
    lv.add_argument("--port", type=int, help="BPF filter 'tcp port PORT' (default: all TCP, "
                                             "channels found by their magic)")
    lv.add_argument("--filter", metavar="BPF", help="BPF capture filter (overrides --port)")
    _shared(lv)
    lv.set_defaults(func=cmd_live)

    px = subparsers.add_parser("proxy", help="relay a migration and dissect it (no root)")
    px.add_argument("--listen", required=True, metavar="HOST:PORT",
                    help="address the migration source connects to (port 0: any)")
    px.add_argument("--forward", required=True, metavar="HOST:PORT",
                    help="the migration destination")
    _shared(px)
    px.set_defaults(func=cmd_proxy)


def main(argv: list[str] | None = None) -> int:
    """``python -m mfdscope.live live|proxy ...`` (the same as ``mfdscope live|proxy``)."""
    p = argparse.ArgumentParser(prog="mfdscope", description=__doc__)
    add_subcommands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)
