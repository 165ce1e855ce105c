"""Regenerate the reference captures in this folder (run as root: tcpdump on lo).

    .venv/bin/python captures/reference/make_reference_captures.py [NAME ...]

Each capture is a reference migration (mfdscope.reference) over loopback captured
by tcpdump, with the sender's truth (NAME.truth.json) and the receiver's report
(NAME.receiver.json) beside it.  The content is deterministic (seeded); which
channel carries which packet depends on thread timing, so a regenerated capture
differs from the committed one in layout, never in what the checks assert.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from mfdscope import demo  # noqa: E402

#: name -> reference options; what each exercises is in README.md beside this file
CAPTURES = {
    "ref10-nocomp-4ch-2dev": dict(profile="10.0", channels=4, ram_size="4M", devices=2,
                                  buffers_per_device=6, buffer_size=64 << 10,
                                  zero_share=0.5, dirty_share=0.9, iterations=2, seed=1),
    "ref10-zlib-4ch": dict(profile="10.0", channels=4, ram_size="8M", compression="zlib",
                           zero_share=0.5, random_share=0.3, iterations=1, seed=2),
    "ref10-zstd-4ch": dict(profile="10.0", channels=4, ram_size="8M", compression="zstd",
                           zero_share=0.5, random_share=0.3, iterations=1, seed=3),
    "ref72-nocomp-4ch": dict(profile="7.2", channels=4, ram_size="8M", zero_share=0.5,
                             iterations=2, seed=4),
    "ref92-zlib-2ch": dict(profile="9.2", channels=2, ram_size="4M", compression="zlib",
                           zero_share=0.5, random_share=0.3, iterations=1, seed=5),
}


def make(name: str) -> bool:
    result = demo.run(str(HERE), name=name, **CAPTURES[name])
    cmd = {"command": f"python captures/reference/make_reference_captures.py {name}",
           "options": CAPTURES[name], "tcpdump": result.tcpdump, "checks_ok": result.ok}
    (HERE / f"{name}.json").write_text(json.dumps(cmd, indent=1) + "\n")
    print(f"{name}: {Path(result.capture).stat().st_size:,} bytes, checks "
          f"{'ok' if result.ok else 'FAILED'}")
    if not result.ok:
        print(result.checks[~result.checks["passed"]].to_string(index=False))
    return result.ok


if __name__ == "__main__":
    names = sys.argv[1:] or list(CAPTURES)
    sys.exit(0 if all([make(n) for n in names]) else 1)
