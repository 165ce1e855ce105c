"""Bulk-path benchmark: `mfdscope.open` on large synthetic captures, Scapy as baseline.

    .venv/bin/python benchmarks/run.py            # generates the captures on first use
    .venv/bin/python benchmarks/run.py --quick    # 1/8 of the sizes, for a smoke run

Prints, per capture: MB/s, TCP segments/s and peak anonymous memory (RssAnon sampled
from /proc every 5 ms: the mapped capture itself is file-backed and not counted, which
is the point of mapping it) for the bulk path, and the same for Scapy's `PcapReader`
with full dissection on a slice of the file.  Targets (issue 2): >= 3 GB/s on 64 KiB
segments, >= 700,000 segments/s on 1448-byte segments, RssAnon < 200 MB for 1 GiB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

#: name, segment size, target file size, what it models
CAPTURES = (
    ("loopback-64k", 65483, 1 << 30, "loopback GSO segments"),
    ("nic-1448", 1448, 300 << 20, "a real NIC's MSS"),
)


def make(name: str, segment: int, size: int) -> Path:
    """Generate the capture once (a synthetic 10.0 migration of `size` bytes)."""
    path = DATA / f"{name}-{size >> 20}M.pcap"
    if path.exists():
        return path
    sys.path.insert(0, str(HERE.parent))
    from mfdscope import synth, wire

    DATA.mkdir(exist_ok=True)
    # every page non-zero: wire bytes ~= pages * page_size
    pages = size // wire.DEFAULT_PAGE_SIZE
    cfg = synth.SynthConfig(channels=4, ram_pages=pages, zero_share=0.0, fast_pages=True,
                            devices=(("0000:00:04.0/vfio", 0, 8, 1 << 20),))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb", buffering=1 << 22) as fh:
        synth.write_capture(fh, cfg, segment_size=segment)
    tmp.rename(path)
    return path


MEASURE = r"""
import json, os, sys, threading, time
peak = [0]
stop = threading.Event()
def rss_anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.005)
mode, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = rss_anon()
th = threading.Thread(target=sample, daemon=True); th.start()
t0 = time.perf_counter()
if mode == "mfdscope":
    import mfdscope
    import mfdscope.api  # pandas and friends: import time is not throughput
    t0 = time.perf_counter()
    cap = mfdscope.open(path)
    nbytes = os.path.getsize(path)
    segs = int(cap.connections["segments"].sum() + 0)
    records = len(cap.packets)
else:
    from scapy.utils import PcapReader
    from scapy.layers.inet import TCP
    t0 = time.perf_counter()
    nbytes = segs = records = 0
    with PcapReader(path) as rd:
        for pkt in rd:
            nbytes += len(pkt) + 16
            if TCP in pkt:
                segs += 1
                bytes(pkt[TCP].payload)
            if nbytes >= limit:
                break
elapsed = time.perf_counter() - t0
stop.set(); th.join()
peak[0] = max(peak[0], rss_anon())
print(json.dumps({"bytes": nbytes, "segments": segs, "records": records,
                  "seconds": elapsed, "peak_rss_anon": peak[0], "base_rss_anon": base}))
"""


def measure(mode: str, path: Path, limit: int = 0) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, mode, str(path), str(limit)],
                         capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode:
        raise SystemExit(f"{mode} on {path.name} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1/8 of the sizes")
    ap.add_argument("--scapy-slice", type=int, default=32 << 20,
                    help="bytes of each capture Scapy reads (default 32 MiB)")
    ap.add_argument("--repeat", type=int, default=3, help="bulk runs per capture; best kept")
    args = ap.parse_args()
    print(f"{'capture':<26}{'path':<10}{'MB/s':>10}{'segments/s':>14}{'peak RssAnon':>15}"
          f"{'records':>9}")
    for name, segment, size, _ in CAPTURES:
        size = size // 8 if args.quick else size
        path = make(name, segment, size)
        runs = [measure("mfdscope", path) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        peak = max(r["peak_rss_anon"] for r in runs)
        sc = measure("scapy", path, args.scapy_slice)
        for label, r, pk in (("mfdscope", best, peak), ("scapy", sc, sc["peak_rss_anon"])):
            print(f"{path.name:<26}{label:<10}{r['bytes'] / r['seconds'] / 1e6:>10.0f}"
                  f"{r['segments'] / r['seconds']:>14,.0f}{pk / 2**20:>12.1f} MB"
                  f"{r['records']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
