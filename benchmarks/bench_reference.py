"""Reference sender throughput on loopback, and a 1 GiB, 8-channel end-to-end check.

    .venv/bin/python benchmarks/bench_reference.py [--ram-size 1G] [--channels 8]

Runs the reference receiver and sender over loopback under tcpdump (as root), then
dissects the capture and checks it against both truths (as `mfdscope demo` does).
Prints the sender's throughput, the dissection speed and the check verdict.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ram-size", default="1G")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--keep", action="store_true", help="keep the capture afterwards")
    ap.add_argument("--buffer-kib", type=int, default=1 << 20,
                    help="tcpdump's kernel buffer (-B); loopback outruns a small one")
    args = ap.parse_args()
    from mfdscope import demo
    from mfdscope.capture.tcpdump import drops
    from mfdscope.reference import run_loopback

    plain, _ = run_loopback(ram_size=args.ram_size, channels=args.channels,
                            compression=args.compression, iterations=1, zero_share=0.1,
                            timeout=300, compare=False)
    wire = sum(plain["channel_bytes"])
    print(f"sender alone: {wire / 1e6:,.0f} MB of multifd in {plain['duration']:.2f} s = "
          f"{wire / plain['duration'] / 1e6:,.0f} MB/s on loopback (receiver in-process)")
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    res = demo.run(str(out), name=f"ref-{args.ram_size}-{args.channels}ch",
                   ram_size=args.ram_size, channels=args.channels,
                   compression=args.compression, devices=2 if args.compression == "none" else 0,
                   iterations=1, zero_share=0.1, timeout=300, buffer_kib=args.buffer_kib)
    total = time.perf_counter() - t0
    t = res.truth
    size = os.path.getsize(res.capture)
    wire = sum(t["channel_bytes"])
    print(f"reference migration: {args.ram_size} RAM, {args.channels} channels, "
          f"{args.compression}: {wire / 1e6:,.0f} MB of multifd in {t['duration']:.2f} s "
          f"= sender {wire / t['duration'] / 1e6:,.0f} MB/s on loopback "
          f"(under tcpdump)")
    print(f"capture {size / 1e6:,.0f} MB, tcpdump dropped {drops(res.tcpdump)}; "
          f"whole run incl. dissection and checks {total:.1f} s")
    failed = res.checks[~res.checks["passed"]]
    print(f"checks: {len(res.checks) - len(failed)} passed, {len(failed)} failed")
    if len(failed):
        print(failed.to_string(index=False))
    if not args.keep:
        for p in res.paths.values():
            os.unlink(p)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
