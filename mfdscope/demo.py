"""`mfdscope demo`: a reference migration on loopback, captured, dissected and checked.

The reference receiver listens on 127.0.0.1, tcpdump captures its port, the
reference sender migrates a synthetic guest; then the capture is dissected and
compared with both ends' ground truth.  Exit status 0 only when every check holds,
so the demo is also an end-to-end self-test of the whole tool.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pandas as pd

from . import wire
from .capture.tcpdump import Tcpdump, TcpdumpError, drops


@dataclass
class DemoResult:
    capture: str
    truth: dict
    report: dict
    tcpdump: dict
    checks: pd.DataFrame
    ok: bool
    paths: dict = field(default_factory=dict)


def capture_reference_migration(pcap: str, *, iface: str = "lo", timeout: float = 60.0,
                                buffer_kib: int = 65536, **options) -> tuple[dict, dict, dict]:
    """Run a reference migration on loopback under tcpdump; ``(truth, report, counts)``.

    ``options`` are `mfdscope.reference.MigrationConfig` fields.  Raises
    `TcpdumpError` when capturing is impossible.
    """
    from .reference import run_loopback

    dump: list[Tcpdump] = []

    def start_capture(address: str) -> None:
        port = address.rsplit(":", 1)[1]
        dump.append(Tcpdump(iface, f"tcp port {port}", pcap, buffer_kib=buffer_kib).start())

    try:
        truth, report = run_loopback(timeout=timeout, before_send=start_capture, **options)
    finally:
        if dump:
            dump[0].wait_quiet()
            counts = dump[0].stop()
    return truth, report, counts


def check_capture(pcap: str, truth: dict, report: dict, counts: dict,
                  qemu_version: str | None = None) -> tuple[pd.DataFrame, bool]:
    """The capture against the sender's truth and the receiver's report, as one table."""
    import mfdscope

    from .analysis.checks import check

    cap = mfdscope.open(pcap)
    table, _ = check(cap, truth=truth, qemu_version=qemu_version or truth.get("profile"))
    extra = []
    comp = report.get("comparison", {})
    for key, label in (("ram_equal", "receiver RAM image = sender's (sha256)"),
                       ("devices_equal", "receiver device states = sender's (sha256)"),
                       ("records_equal", "receiver records = sender's")):
        extra.append({"check": label, "channel": None, "expected": "True",
                      "observed": str(comp.get(key)), "passed": bool(comp.get(key)),
                      "detail": comp.get("records_mismatch", "") if key == "records_equal"
                      else ""})
    extra.append({"check": "receiver accepted the migration", "channel": None,
                  "expected": "no error", "observed": report.get("error") or "no error",
                  "passed": bool(report.get("ok")), "detail": ""})
    dropped = drops(counts)
    extra.append({"check": "tcpdump dropped no packet", "channel": None, "expected": "0",
                  "observed": str(dropped), "passed": dropped == 0,
                  "detail": f"{counts.get('captured')} captured"})
    bad = cap.expert[cap.expert["severity"].isin(["error", "warn"])]
    extra.append({"check": "no expert errors or warnings", "channel": None, "expected": "0",
                  "observed": str(len(bad)), "passed": bad.empty,
                  "detail": "; ".join(bad["message"].head(3).tolist())})
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    return table, bool(table["passed"].all())


def run(out_dir: str, *, name: str = "demo", **options) -> DemoResult:
    os.makedirs(out_dir, exist_ok=True)
    pcap = os.path.join(out_dir, f"{name}.pcap")
    truth, report, counts = capture_reference_migration(pcap, **options)
    paths = {"capture": pcap, "truth": os.path.join(out_dir, f"{name}.truth.json"),
             "report": os.path.join(out_dir, f"{name}.receiver.json")}
    with open(paths["truth"], "w") as fh:
        json.dump(truth, fh, indent=1)
    with open(paths["report"], "w") as fh:
        json.dump(report, fh, indent=1)
    table, ok = check_capture(pcap, truth, report, counts)
    return DemoResult(pcap, truth, report, counts, table, ok, paths)


def add_subcommands(subparsers) -> None:
    d = subparsers.add_parser(
        "demo", help="reference migration on loopback, captured with tcpdump and checked")
    d.add_argument("-o", "--out", default="out/demo", help="directory for the capture and "
                   "truth files (default out/demo)")
    d.add_argument("--channels", type=int, default=4)
    d.add_argument("--ram-size", default="64M")
    d.add_argument("--page-size", type=int, default=4096)
    d.add_argument("--compression", default="none", choices=("none", "zlib", "zstd"))
    d.add_argument("--profile", default="10.0", choices=wire.REFERENCE_VERSIONS)
    d.add_argument("--devices", default="2", help="count, or idstr[:instance],...")
    d.add_argument("--buffers-per-device", type=int, default=4)
    d.add_argument("--buffer-size", default="256K")
    d.add_argument("--iterations", type=int, default=2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="print the check table as JSON")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .reference.config import ConfigError, parse_size

    devices = args.devices if args.profile == "10.0" and args.compression == "none" else "0"
    try:
        result = run(args.out, channels=args.channels, ram_size=args.ram_size,
                     page_size=args.page_size, compression=args.compression,
                     profile=args.profile, devices=devices,
                     buffers_per_device=args.buffers_per_device,
                     buffer_size=parse_size(args.buffer_size), iterations=args.iterations,
                     seed=args.seed)
    except TcpdumpError as exc:
        print(f"mfdscope: error: cannot capture: {exc}", file=__import__("sys").stderr)
        return 3
    except ConfigError as exc:
        print(f"mfdscope: error: {exc}", file=__import__("sys").stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": result.ok, "paths": result.paths,
                          "checks": result.checks.to_dict(orient="records")}, indent=1))
        return 0 if result.ok else 1
    t = result.truth
    print(f"reference migration: profile {t.get('profile')}, {t.get('channels')} channels, "
          f"compression {t.get('compression')}, {len(t.get('devices', []))} devices, "
          f"{sum(t.get('channel_bytes', [])):,} multifd bytes in "
          f"{t.get('duration', 0):.2f} s")
    print(f"capture: {result.capture} (tcpdump: {result.tcpdump.get('captured')} captured, "
          f"{drops(result.tcpdump)} dropped)")
    print(f"truth: {result.paths['truth']}  receiver: {result.paths['report']}\n")
    view = result.checks.assign(result=result.checks["passed"].map({True: "ok", False: "FAIL"}))
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(view[["check", "channel", "expected", "observed", "result"]]
              .fillna("").to_string(index=False))
    failed = int((~result.checks["passed"]).sum())
    print(f"\n{len(result.checks) - failed} checks passed, {failed} failed")
    return 0 if result.ok else 1
