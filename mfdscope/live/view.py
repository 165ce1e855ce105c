"""The live view: one interval report as a `rich` renderable."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..api import KINDS


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f}"


def render(rep: dict):
    """Tables for one report from `mfdscope.live.report.Reporter`."""
    title = (f"mfdscope · {rep['source']} · {rep['elapsed']:.1f} s"
             + (" · final" if rep.get("final") else ""))
    t = Table(title=title, title_justify="left", expand=False)
    for name, just in (("flow", "right"), ("role", "left"), ("ch", "right"),
                       ("MB/s", "right"), ("MB", "right"),
                       *((k if k != "device_state" else "dev", "right") for k in KINDS),
                       ("round", "right"), ("holes", "right"), ("end", "left")):
        t.add_column(name, justify=just)
    for c in rep["channels"]:
        rec = c["records"]
        holes = f"{c['holes']} ({c['hole_bytes']:,} B)" if c["holes"] else "0"
        t.add_row(str(c["flow"]), c["role"], "-" if c["channel_id"] is None else
                  str(c["channel_id"]), f"{c['MBps']:,.1f}", _mb(c["bytes"]),
                  *(str(rec[k]) for k in KINDS),
                  str(c["sync_round"]) if c["role"] == "multifd" else "-",
                  holes, c["end"] or "")
    tot = rep["totals"]
    mb = rep["multifd_bytes"]
    lines = [
        Text.assemble(("multifd: ", "bold"),
                      f"{tot['multifd_channels']} channels, {tot['MBps']:,.1f} MB/s now, "
                      f"{_mb(tot['multifd_tcp_bytes'])} MB on the wire, SYNC round "
                      f"{tot['sync_round']}, records "
                      + ", ".join(f"{k} {v}" for k, v in tot["records"].items())),
        Text.assemble(("multifd_bytes: ", "bold"),
                      f"{mb['value']:,} as QEMU {mb['qemu_version']} counts it "
                      f"(rule {mb['rule']}, version {mb['version_source']})"),
    ]
    q = rep.get("qmp")
    if q is not None:
        if "error" in q:
            lines.append(Text.assemble(("QMP: ", "bold"), (q["error"], "red")))
        else:
            lines.append(Text.assemble(
                ("QMP: ", "bold"), f"status {q['status']}, multifd-bytes "
                f"{'-' if q['multifd_bytes'] is None else format(q['multifd_bytes'], ',')}, "
                f"transferred {'-' if q['transferred'] is None else format(q['transferred'], ',')}"))
    if rep["devices"]:
        lines.append(Text.assemble(("device state: ", "bold"), "; ".join(
            f"{d['idstr']}:{d['instance_id']} {d['buffers']} buffers"
            + (" (config)" if d["config_seen"] else "") for d in rep["devices"])))
    drops = rep.get("drops")
    style = "red" if drops or tot["holes"] else ""
    lines.append(Text.assemble(("losses: ", "bold"), (
        f"dropped {'-' if drops is None else drops}, holes {tot['holes']} "
        f"({tot['hole_bytes']:,} bytes missing)", style)))
    for w in rep.get("warnings", []):
        lines.append(Text(f"warning: {w}", style="yellow"))
    ex = rep["expert"]
    if ex["error"] or ex["warn"]:
        lines.append(Text(f"expert: {ex['error']} errors, {ex['warn']} warnings, "
                          f"{ex['note']} notes", style="yellow"))
    return Group(t, *lines)
