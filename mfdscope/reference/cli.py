"""``mfdscope reference send|receive``: the reference ends from the command line.

Exit status: 0 success, 1 the migration failed (one-line reason on stderr),
2 bad usage or configuration.
"""
from __future__ import annotations

import argparse
import json
import sys

from .. import wire
from .config import ConfigError, MigrationConfig, parse_blocks, parse_devices, parse_size
from .receiver import Receiver
from .sender import Sender, SenderError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=int, default=2, help="multifd-channels (default 2)")
    p.add_argument("--ram-size", default="64M",
                   help="guest RAM: SIZE or NAME=SIZE[,NAME=SIZE...] (default 64M as pc.ram)")
    p.add_argument("--page-size", type=int, default=wire.DEFAULT_PAGE_SIZE,
                   help="target page size (default 4096)")
    p.add_argument("--compression", choices=("none", "zlib", "zstd"), default="none")
    p.add_argument("--profile", choices=wire.REFERENCE_VERSIONS, default="10.0",
                   help="QEMU version to behave as (default 10.0)")
    p.add_argument("--devices", default="0",
                   help="VFIO-like devices with multifd device state (10.0 only): a count, "
                        "or IDSTR[:INSTANCE][,...]")
    p.add_argument("--buffers-per-device", type=int, default=4,
                   help="data buffers per device before its config buffer (default 4)")
    p.add_argument("--buffer-size", default="256K", help="VFIO data buffer size (default 256K)")
    p.add_argument("--uuid", default="0" * 32, help="VM uuid, hex (default all zero)")
    p.add_argument("--json", action="store_true", help="print the whole JSON to stdout")


def _config(args, sender: bool) -> MigrationConfig:
    kw = dict(channels=args.channels, blocks=parse_blocks(args.ram_size),
              page_size=args.page_size, compression=args.compression, profile=args.profile,
              devices=parse_devices(args.devices), buffers_per_device=args.buffers_per_device,
              buffer_size=parse_size(args.buffer_size), uuid=args.uuid)
    if sender:
        kw.update(iterations=args.iterations, zero_share=args.zero_share,
                  dirty_share=args.dirty_share, seed=args.seed, zero_copy=args.zero_copy)
    cfg = MigrationConfig(**kw)
    cfg.validate()
    return cfg


def cmd_send(args) -> int:
    try:
        cfg = _config(args, sender=True)
        sender = Sender(cfg, args.connect)
    except (ConfigError, ValueError) as exc:
        print(f"mfdscope reference send: error: {exc}", file=sys.stderr)
        return 2
    try:
        truth = sender.run(args.truth)
    except SenderError as exc:
        print(f"mfdscope reference send: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(truth, sys.stdout, indent=1)
        print()
    else:
        total = sum(truth["channel_bytes"]) + truth["main_bytes"]
        print(f"sent {total / 2**20:.1f} MiB ({truth['main_bytes']} main + "
              f"{sum(truth['channel_bytes'])} on {cfg.channels} multifd channels) in "
              f"{truth['duration']:.3f} s, {truth['throughput_MBps']:.0f} MB/s; "
              f"profile {cfg.profile}, {truth['compression']}, "
              f"{truth['sync_rounds']} sync rounds, multifd_bytes={truth['multifd_bytes']}")
        for b in truth["blocks"]:
            print(f"  ram {b['name']} {b['size']} bytes sha256 {b['sha256'][:16]}")
        for d in truth["devices"]:
            print(f"  device {d['idstr']}:{d['instance_id']} {d['buffers_sent']} buffers "
                  f"sha256 {d['sha256'][:16]}")
        if args.truth:
            print(f"  truth written to {args.truth}")
    return 0


def cmd_receive(args) -> int:
    try:
        cfg = _config(args, sender=False)
        receiver = Receiver(cfg, args.listen, timeout=args.timeout,
                            expect_truth=args.expect_truth)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"mfdscope reference receive: error: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {receiver.address}", file=sys.stderr, flush=True)
    report = receiver.run(args.truth)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        total = sum(report["channel_bytes"]) + report["main_bytes"]
        print(f"received {total / 2**20:.1f} MiB ({report['main_bytes']} main + "
              f"{sum(report['channel_bytes'])} on {cfg.channels} multifd channels) in "
              f"{report['duration']:.3f} s; {report['sync_rounds']} sync rounds; "
              f"deepest reorder buffer {report['max_reorder_depth']}")
        for b in report["blocks"]:
            print(f"  ram {b['name']} {b['size']} bytes sha256 {b['sha256'][:16]}")
        for d in report["devices"]:
            print(f"  device {d['idstr']}:{d['instance_id']} {d['buffers']} buffers on "
                  f"channels {d['channels']} reorder depth {d['max_reorder_depth']} "
                  f"sha256 {d['sha256'][:16]}")
        if "comparison" in report:
            c = report["comparison"]
            print("  matches the sender's truth" if c["equal"] else
                  "  DIFFERS from the sender's truth: " +
                  ", ".join(k for k, v in c.items() if v is False))
        if args.truth:
            print(f"  report written to {args.truth}")
    if not report["ok"]:
        print(f"mfdscope reference receive: error: {report['error']}", file=sys.stderr)
        return 1
    return 0


def add_subcommands(subparsers) -> argparse.ArgumentParser:
    """Register ``reference`` (with ``send`` and ``receive``) on an argparse subparsers
    object; each sets ``func`` to a callable(args) -> exit status."""
    ref = subparsers.add_parser("reference", help="reference multifd sender and receiver")
    sub = ref.add_subparsers(dest="reference_command", required=True)
    s = sub.add_parser("send", help="migrate a synthetic guest to a receiver")
    s.add_argument("--connect", required=True, metavar="HOST:PORT|unix:PATH")
    _common(s)
    s.add_argument("--iterations", type=int, default=2,
                   help="dirtying rounds after the bulk pass, the last at switchover")
    s.add_argument("--zero-share", type=float, default=0.25, help="share of zero pages")
    s.add_argument("--dirty-share", type=float, default=0.25,
                   help="share of pages dirtied per round")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--zero-copy", action="store_true",
                   help="zero-copy-send: header and pages in separate writes (nocomp)")
    s.add_argument("--truth", metavar="FILE", help="write the ground truth JSON here")
    s.set_defaults(func=cmd_send)
    r = sub.add_parser("receive", help="receive one migration and validate it like QEMU")
    r.add_argument("--listen", required=True, metavar="HOST:PORT|unix:PATH")
    _common(r)
    r.add_argument("--truth", metavar="FILE", help="write the receiver's report JSON here")
    r.add_argument("--expect-truth", metavar="FILE",
                   help="the sender's truth: compare RAM, device state, bytes, records")
    r.add_argument("--timeout", type=float, default=60.0,
                   help="seconds without progress before giving up (default 60)")
    r.set_defaults(func=cmd_receive)
    return ref


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m mfdscope.reference send|receive ...``; returns the exit status."""
    p = argparse.ArgumentParser(prog="mfdscope", description=__doc__)
    add_subcommands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["reference", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(cli_main())
