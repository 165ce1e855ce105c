"""Ground truth (sender) and report (receiver) files, and comparing the two.

Both are JSON objects.  Shared keys: ``profile``, ``compression``, ``page_size``,
``channels``, ``main_bytes``, ``channel_bytes`` (list by channel id), ``records``
(list by channel id of record lists, in stream order), ``blocks``
(``name``/``size``/``sha256``) and ``devices`` (``idstr``/``instance_id``/``sha256``).
Record keys: ``kind`` (init, ram, sync, device_state), ``offset`` (stream offset),
``wire_len``, ``t`` (wall time written / parsed), and per kind ``packet_num``,
``flags``, ``pages_alloc``, ``normal_pages``, ``zero_pages``, ``next_packet_size``,
``payload_len``, ``ramblock``; ``idstr``, ``instance_id``, ``vfio_idx``, ``vfio_flags``.

The sender's truth adds ``multifd_bytes`` counted as the chosen QEMU version counts
it (spec 6), ``seed`` and the configuration.  The receiver's report adds errors,
warnings, reorder depths and, given the sender's truth, ``comparison``.
"""
from __future__ import annotations

import json

#: the record fields both ends know; ramblock of page-less packets is left out
#: (<= 9.1 sends stale bytes there) and so are times
RECORD_KEY = ("kind", "offset", "wire_len", "packet_num", "flags", "normal_pages",
              "zero_pages", "next_packet_size", "idstr", "instance_id", "vfio_idx",
              "vfio_flags")


def load(path: str) -> dict:
    with open(path) as fh:  # noqa: PTH123
        return json.load(fh)


def record_key(rec: dict) -> tuple:
    return tuple(rec.get(k) for k in RECORD_KEY)


def compare(truth: dict, report: dict) -> dict:
    """Which parts of the receiver's report equal the sender's truth."""
    out: dict = {}
    tb = {b["name"]: b["sha256"] for b in truth.get("blocks", [])}
    rb = {b["name"]: b["sha256"] for b in report.get("blocks", [])}
    out["ram_equal"] = bool(tb) and tb == rb
    td = {(d["idstr"], d["instance_id"]): d.get("sha256") for d in truth.get("devices", [])}
    rd = {(d["idstr"], d["instance_id"]): d.get("sha256") for d in report.get("devices", [])}
    out["devices_equal"] = td == rd
    out["channel_bytes_equal"] = truth.get("channel_bytes") == report.get("channel_bytes")
    out["main_bytes_equal"] = truth.get("main_bytes") == report.get("main_bytes")
    tr, rr = truth.get("records", []), report.get("records", [])
    mismatch = None
    if len(tr) != len(rr):
        mismatch = f"{len(tr)} channels in the truth, {len(rr)} in the report"
    else:
        for cid, (a, b) in enumerate(zip(tr, rr)):
            ka, kb = [record_key(r) for r in a], [record_key(r) for r in b]
            if ka != kb:
                i = next((i for i, (x, y) in enumerate(zip(ka, kb)) if x != y),
                         min(len(ka), len(kb)))
                mismatch = (f"channel {cid}: record {i} differs "
                            f"(sender {ka[i] if i < len(ka) else None}, "
                            f"receiver {kb[i] if i < len(kb) else None})")
                break
    out["records_equal"] = mismatch is None
    if mismatch:
        out["records_mismatch"] = mismatch
    out["equal"] = all(out[k] for k in ("ram_equal", "devices_equal", "channel_bytes_equal",
                                        "main_bytes_equal", "records_equal"))
    return out
