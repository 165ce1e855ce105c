"""Interval figures of a live run, as plain JSON-able dicts (one per refresh).

Everything is computed from a `Capture` snapshot with the offline helpers:
`Capture.channels()` for per-connection totals and `mfdscope.analysis.accounting`
for ``multifd_bytes`` as the chosen QEMU version counts it.  Only the difference
between two snapshots (bytes in the interval) is computed here.
"""
from __future__ import annotations

import time

from ..analysis.accounting import accounting, qmp_values
from ..api import KINDS, Capture


class Reporter:
    """Turns successive snapshots into interval reports."""

    def __init__(self, source: str, *, qemu_version: str | None = None,
                 started: float | None = None):
        self.source = source
        self.qemu_version = qemu_version
        self.started = time.time() if started is None else started
        self._prev_bytes: dict[int, int] = {}
        self._prev_t: float | None = None
        self.ticks = 0

    def report(self, cap: Capture, *, source_stats: dict | None = None,
               qmp: dict | None = None, now: float | None = None, final: bool = False) -> dict:
        now = time.time() if now is None else now
        dt = now - (self._prev_t if self._prev_t is not None else self.started)
        channels = []
        for c in cap.channels():
            prev = self._prev_bytes.get(c["flow"], 0)
            delta = c["bytes"] - prev
            self._prev_bytes[c["flow"]] = c["bytes"]
            channels.append({
                "flow": c["flow"], "role": c["role"], "channel_id": c["channel_id"],
                "src": c["src"], "dst": c["dst"], "bytes": c["bytes"],
                "bytes_interval": delta, "MBps": delta / dt / 1e6 if dt > 0 else 0.0,
                "records": c["records"], "sync_round": c["records"]["sync"],
                "holes": c["holes"], "hole_bytes": c["hole_bytes"],
                "end": _end_of(cap, c["flow"]),
            })
        self._prev_t = now
        self.ticks += 1
        mf = [c for c in channels if c["role"] == "multifd"]
        qmp_reply = (qmp or {}).get("return") if qmp else None
        acc = accounting(cap.packets, cap.connections, qemu_version=self.qemu_version,
                         qmp=qmp_reply if final and qmp_reply else None)
        stats = dict(source_stats or {})
        out = {
            "t": now, "elapsed": now - self.started, "interval": dt, "source": self.source,
            "final": final,
            "channels": channels,
            "totals": {
                "multifd_channels": len(mf),
                "multifd_tcp_bytes": sum(c["bytes"] for c in mf),
                "main_bytes": sum(c["bytes"] for c in channels if c["role"] == "main"),
                "MBps": sum(c["MBps"] for c in mf),
                "records": {k: sum(c["records"][k] for c in mf) for k in KINDS},
                "sync_round": min((c["sync_round"] for c in mf), default=0),
                "holes": sum(c["holes"] for c in channels),
                "hole_bytes": sum(c["hole_bytes"] for c in channels),
            },
            "devices": _devices(cap),
            "multifd_bytes": {
                "value": acc.predicted_multifd_bytes, "qemu_version": acc.qemu_version,
                "version_source": acc.version_source, "rule": acc.rule,
                "wire": acc.wire_multifd_bytes,
            },
            "drops": stats.pop("drops", None),
            "capture": stats,
            "qmp": _qmp_view(qmp),
            "expert": cap.summary()["expert"],
            "warnings": [m for m in cap.expert.loc[cap.expert["group"] == "capture", "message"]]
            if len(cap.expert) else [],
        }
        if final:
            out["accounting"] = {k: v for k, v in acc.to_dict().items() if k != "breakdown"}
            out["accounting"]["breakdown"] = acc.breakdown
        return out


def _end_of(cap: Capture, flow: int):
    row = cap.connections.loc[cap.connections["flow"] == flow, "end"]
    return None if not len(row) else str(row.iloc[0])


def _devices(cap: Capture) -> list[dict]:
    pk = cap.packets
    if not len(pk):
        return []
    ds = pk[pk["kind"] == "device_state"]
    if not len(ds):
        return []
    out = []
    for (idstr, inst), g in ds.groupby(["idstr", "instance_id"], sort=True, dropna=False):
        cfg = g["vfio_flags"].fillna(0).astype("int64") & 1
        out.append({"idstr": str(idstr), "instance_id": int(inst), "buffers": len(g),
                    "config_seen": bool(cfg.any()), "bytes": int(g["wire_len"].sum())})
    return out


def _qmp_view(sample: dict | None) -> dict | None:
    """The figures of a query-migrate sample shown beside the wire's."""
    if not sample:
        return None
    if "error" in sample and "return" not in sample:
        return {"t": sample.get("t"), "error": sample["error"]}
    ret = sample.get("return") or {}
    mb, tr, ram = qmp_values(ret)
    return {"t": sample.get("t"), "status": ret.get("status"), "multifd_bytes": mb,
            "transferred": tr, "total_time": ret.get("total-time"),
            "mbps": ram.get("mbps"), "dirty_sync_count": ram.get("dirty-sync-count")}
