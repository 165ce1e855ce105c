"""Proxy tap benchmark: a 1 GiB, 8-channel reference migration relayed by
``mfdscope proxy``, against the same migration sent directly.

    .venv/bin/python benchmarks/bench_proxy.py            # 1 GiB, 8 channels
    .venv/bin/python benchmarks/bench_proxy.py --ram 256M # smaller

The reference receiver runs in this process, the sender (``mfdscope reference send``)
and the proxy (``python -m mfdscope.live proxy --json``) in their own processes, as
they would around a real migration.  Prints the sender's throughput (its own
``duration``: from the first connection to the last byte written) direct and through
the proxy, the slowdown, whether the receiver verified the RAM image, and whether the
proxy's live totals equal the sender's truth (per-channel bytes, multifd_bytes).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import os
import tempfile

from mfdscope.reference import MigrationConfig, Receiver
from mfdscope.reference.truth import compare


def migrate(cfg: MigrationConfig, ram: str, via_proxy: bool) -> dict:
    rx = Receiver(cfg, "127.0.0.1:0", timeout=120).start()
    proxy = None
    address = rx.address
    if via_proxy:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "mfdscope.live", "proxy", "--listen", "127.0.0.1:0",
             "--forward", rx.address, "--json", "--until-idle", "0.5", "--interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proxy.stderr.readline()
        if "listening on" not in line:
            raise SystemExit(f"proxy did not start: {line.strip()}")
        address = line.split("listening on ")[1].split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "truth.json")
        subprocess.run([sys.executable, "-m", "mfdscope.reference", "send", "--connect",
                        address, "--channels", str(cfg.channels), "--ram-size", ram,
                        "--iterations", str(cfg.iterations), "--seed", str(cfg.seed),
                        "--truth", path], check=True, stdout=subprocess.DEVNULL)
        with open(path) as fh:  # noqa: PTH123
            truth = json.load(fh)
    wall = truth["duration"]
    report = rx.join()
    out = {"wall": wall, "truth": truth, "report": report,
           "ram_verified": bool(report["ok"] and compare(truth, report)["equal"])}
    if proxy is not None:
        stdout, stderr = proxy.communicate(timeout=120)
        final = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")][-1]
        chans = {c["channel_id"]: c["bytes"] for c in final["summary"]["channels"]
                 if c["role"] == "multifd"}
        out["proxy_exit"] = proxy.returncode
        out["proxy_equal"] = ([chans.get(i) for i in range(cfg.channels)]
                              == truth["channel_bytes"]
                              and final["multifd_bytes"]["value"] == truth["multifd_bytes"])
        out["proxy_stderr"] = stderr.strip().splitlines()[-1:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ram", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=0,
                    help="dirtying rounds after the bulk pass (default 0: one pass)")
    args = ap.parse_args()
    cfg = MigrationConfig(channels=args.channels, blocks=args.ram, iterations=args.iterations,
                          seed=1)
    results = {}
    for name, via in (("direct", False), ("proxy", True)):
        r = migrate(cfg, args.ram, via)
        total = sum(r["truth"]["channel_bytes"]) + r["truth"]["main_bytes"]
        results[name] = r
        print(f"{name:7s} {total / 2**20:8.1f} MiB in {r['wall']:6.2f} s = "
              f"{total / r['wall'] / 1e6:7.1f} MB/s  RAM verified: {r['ram_verified']}"
              + (f"  live totals == truth: {r['proxy_equal']}  (exit {r['proxy_exit']})"
                 if via else ""), flush=True)
    slow = results["proxy"]["wall"] / results["direct"]["wall"]
    print(f"slowdown through the proxy: x{slow:.2f} "
          f"({(1 - 1 / slow) * 100:.0f}% less throughput)")
    ok = all(r["ram_verified"] for r in results.values()) and results["proxy"]["proxy_equal"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
