"""Cross-check a dissected capture against a reference sender's ground truth, and
against the protocol's own pairing rule (spec 5.2), which needs no truth.

The truth is the JSON the reference sender writes (``mfdscope/reference/sender.py``
``Sender.truth``: ``channels``, ``channel_bytes``, ``records`` per channel with
``kind``/``offset``/``wire_len`` and device-state ``idstr``/``vfio_idx``,
``multifd_bytes``, ``profile``, ``main_bytes``) or a `mfdscope.synth.Truth`.  Keys
are read defensively: a check whose truth is absent is skipped, not failed.
"""
from __future__ import annotations

import pandas as pd

from .. import wire
from ._common import channels_of, flow_to_channel, unpack
from .accounting import accounting, main_frame, main_markers, truth_values
from .interleave import channel_sequences

CHECK_COLUMNS = ["check", "channel", "expected", "observed", "passed", "detail"]


def _row(check, channel, expected, observed, passed, detail=""):
    return {"check": check, "channel": channel, "expected": str(expected),
            "observed": str(observed), "passed": bool(passed), "detail": detail}


def _counts(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def _first_diff(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at record {i}: expected {x}, got {y}"
    if len(a) != len(b):
        return f"lengths differ: expected {len(a)}, got {len(b)}"
    return ""


def check(packets, connections=None, truth=None, *, qemu_version: str | None = None,
          qmp: dict | None = None) -> tuple[pd.DataFrame, bool]:
    """Pass/fail table and overall verdict.

    Rows: ``channels`` (count), per channel ``bytes`` (TCP payload = truth bytes),
    ``records`` (count by kind), ``sequence`` (every record's kind, stream offset and
    length, in order), ``device_state_order`` (stream-order (idstr, idx) sequence),
    then ``main_bytes`` and ``accounting`` (the predicted ``multifd-bytes`` for the
    truth's QEMU version equals the sender's own count), and per channel
    ``sync_pairing`` (`sync_flush_pairing`, whenever the main channel was parsed
    through its ram sections; it needs no truth).
    """
    main_fr = main_frame(packets)
    packets, connections, _ = unpack(packets, connections)
    tv = truth_values(truth)
    rows = []
    recs = tv.get("records") or []
    tbytes = tv.get("channel_bytes")
    fmap = flow_to_channel(connections)
    conn = connections.set_index("flow") if connections is not None and len(connections) \
        else None
    cap_bytes = {ch: int(conn.loc[f, "bytes"]) for f, ch in fmap.items()} \
        if conn is not None else {}
    n_truth = len(recs) if recs else (len(tbytes) if tbytes else None)
    cap_chans = sorted(set(cap_bytes) | ({int(c) for c in packets["channel"].dropna().unique()}
                                         if len(packets) else set()))
    if n_truth is not None:
        rows.append(_row("channels", pd.NA, n_truth, len(cap_chans),
                         n_truth == len(cap_chans) and cap_chans == list(range(n_truth))))
    seqs = channel_sequences(packets)
    for ch in range(n_truth or 0):
        if tbytes is not None and ch < len(tbytes) and tbytes[ch] is not None:
            got = cap_bytes.get(ch)
            rows.append(_row("bytes", ch, tbytes[ch], got, got == tbytes[ch]))
        if not recs or ch >= len(recs):
            continue
        trec = recs[ch] or []
        pk = packets[packets["channel"] == ch].sort_values("stream_offset") if len(packets) \
            else packets
        tcount = pd.Series([r.get("kind") for r in trec]).value_counts().to_dict()
        gcount = pk["kind"].value_counts().to_dict() if len(pk) else {}
        kinds = sorted(set(tcount) | set(gcount))
        tc = {k: int(tcount.get(k, 0)) for k in kinds}
        gc = {k: int(gcount.get(k, 0)) for k in kinds}
        rows.append(_row("records", ch, _counts(tc), _counts(gc), tc == gc))
        if all("offset" in r and "wire_len" in r for r in trec):
            exp = [(r["kind"], int(r["offset"]), int(r["wire_len"])) for r in trec]
            got = [(k, int(o), int(n)) for k, o, n in
                   zip(pk["kind"], pk["stream_offset"], pk["wire_len"])] if len(pk) else []
            rows.append(_row("sequence", ch, f"{len(exp)} records", f"{len(got)} records",
                             exp == got, _first_diff(exp, got)))
        tds = [(str(r.get("idstr")), int(r.get("vfio_idx")))
               for r in trec if r.get("kind") == "device_state" and r.get("vfio_idx") is not None]
        gds = seqs.get(ch, [])
        if tds or gds:
            rows.append(_row("device_state_order", ch, f"{len(tds)} buffers",
                             f"{len(gds)} buffers", tds == gds, _first_diff(tds, gds)))
    main_truth = tv.get("main_bytes")
    if main_truth is not None and connections is not None and len(connections):
        main = connections[connections["role"] == "main"]
        if len(main):
            got = int(main["bytes"].sum())
            rows.append(_row("main_bytes", pd.NA, main_truth, got, got == int(main_truth)))
    if tv.get("multifd_bytes") is not None:
        acc = accounting(packets, connections, qemu_version=qemu_version or tv.get("profile"),
                         truth=truth, qmp=qmp)
        rows.append(_row("accounting", pd.NA, acc.truth_multifd_bytes,
                         acc.predicted_multifd_bytes, acc.match,
                         f"QEMU {acc.qemu_version}, rule {acc.rule}"))
    pairing = sync_flush_pairing(packets, connections, main=main_fr,
                                 qemu_version=qemu_version or tv.get("profile"))
    rows += pairing.to_dict("records")
    table = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    table["channel"] = table["channel"].astype("Int64")
    return table, bool(len(table)) and bool(table["passed"].all())


def sync_flush_pairing(packets, connections=None, *, main=None,
                       qemu_version: str | None = None) -> pd.DataFrame:
    """Spec 5.2: every sync point on the main channel pairs with one SYNC per channel.

    Per-round mode (``MULTIFD_FLUSH`` present on main, 8.1+ machine types): each
    channel carries one SYNC packet per ``MULTIFD_FLUSH``, plus one in 9.1-9.2 (the
    final SYNC of ``ram_save_complete`` has no FLUSH); 10.0+ (known from
    ``MIG_CMD_SWITCHOVER_START``, device-state packets or ``qemu_version``) none extra,
    8.1-9.0 none extra (its final SYNC has its FLUSH).  Without a version either is
    accepted, and the detail says so.  Legacy per-section mode (ram sections end with
    EOS and no FLUSH, <= 8.0): one SYNC per ram EOS.

    One row per channel (`CHECK_COLUMNS`, check ``sync_pairing``); no rows when the
    capture holds no main channel parsed through the ram END section's EOS (a
    capture that stops earlier, a synthetic main channel without ram sections), no
    multifd channel, or several migrations.

    Real QEMU agrees on every committed capture (captures/qemu): 7.2 (legacy) 4, 4 and
    3 EOS against 4, 4 and 3 SYNC per channel; 10.0 3, 3 and 24 FLUSH against 3, 3 and
    24 SYNC per channel.  The wire order does not always follow the write order: in
    qemu10-zstd-4ch the second FLUSH reaches the wire up to 9.4 ms before the second
    SYNC of three channels (QEMU writes the SYNC first, but a write() only queues it in
    the socket; a destination channel parked on its previous SYNC stops reading and
    closes the window).  So capture times are reported in the detail, never judged.
    """
    if main is None:
        main = main_frame(packets)
    mk = main_markers(main)
    packets, connections, _ = unpack(packets, connections)
    empty = pd.DataFrame(columns=CHECK_COLUMNS)
    if not mk or not mk["eos"] or not mk["ram_complete"] or len(mk["flows"]) != 1:
        return empty
    chans = channels_of(packets, connections)
    if not chans:
        return empty
    kinds = main["kind"]
    if mk["flushes"]:
        mode, marker = "per-round sync", "flush"
        if qemu_version:
            prof = wire.profile(str(qemu_version))
            extra = {1} if prof.final_sync and not prof.final_flush else {0}
            why = f"QEMU {qemu_version}"
        elif mk["switchover_start"] or (len(packets) and
                                        (packets["kind"] == "device_state").any()):
            extra, why = {0}, "10.0+: switchover-start or device state seen"
        else:
            extra, why = {0, 1}, "version unknown: 8.1-9.0 and 10.0+ add none, 9.1-9.2 one"
        expected = sorted(mk["flushes"] + e for e in extra)
        rule = (f"{mk['flushes']} MULTIFD_FLUSH on main + "
                f"{' or '.join(map(str, sorted(extra)))} final SYNC without FLUSH ({why})")
    else:
        mode, marker = "legacy per-section sync", "eos"
        expected = [mk["eos"]]
        rule = f"{mk['eos']} ram EOS on main (no MULTIFD_FLUSH), one SYNC each"
    mtimes = main.loc[kinds == marker, "time"].astype(float).tolist()
    rows = []
    for ch in chans:
        sy = packets[(packets["channel"] == ch) & (packets["kind"] == "sync")] \
            if len(packets) else packets
        n = len(sy)
        stimes = sy.sort_values("stream_offset")["t_end"].astype(float).tolist() if n else []
        late = sum(s > m for s, m in zip(stimes, mtimes))
        timing = (f"; {late} of {min(n, len(mtimes))} SYNCs reached the wire after their "
                  f"{'FLUSH' if marker == 'flush' else 'EOS'} (capture order is not write order)"
                  if late else "")
        rows.append(_row("sync_pairing", ch, " or ".join(map(str, expected)), n,
                         n in expected, f"{mode}: {rule}{timing}"))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)
