"""Reconstruct QEMU's ``multifd-bytes`` (and ``transferred``) from the wire (spec 6).

Two counting rules (`wire.AccountingRule`):

* **written** (8.1 - 10.x): every byte written on the multifd connections, the
  64-byte initial packets and device-state packets included, so the prediction is
  Σ ``wire_len`` of all multifd records (= Σ TCP payload when nothing is missing).
  ``transferred`` = ``multifd-bytes`` + the main connection's bytes (spec 6.3).
* **enqueue** (<= 8.0): counted when a batch is queued: Σ over RAM and SYNC packets
  of ``normal_pages x page_size + packet_len``; no initial packets, and uncompressed
  page bytes even with zlib/zstd.  ``transferred`` was a separate counter and cannot
  be derived from the capture.

The QEMU version is detected from what the wire shows unless given (`detect_version`).
Everything here is a pure function of DataFrames and already-loaded JSON objects.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from .. import wire
from ._common import channels_of, multifd_connections, page_size_by_channel, unpack

WRITTEN = wire.AccountingRule.WRITTEN.value
ENQUEUE = wire.AccountingRule.ENQUEUE.value


@dataclass
class VersionGuess:
    qemu_version: str  # "10.x", "9.2+", "9.0+", "<=8.0", "8.1-9.1", or what the user gave
    rule: str  # "written" or "enqueue"
    source: str  # "given", "detected", "detected+reference"
    evidence: list[str] = field(default_factory=list)
    ambiguous: bool = False


@dataclass
class AccountingResult:
    qemu_version: str
    version_source: str
    rule: str
    predicted_multifd_bytes: int
    wire_multifd_bytes: int
    qmp_multifd_bytes: int | None
    truth_multifd_bytes: int | None
    match: bool
    explanation: str
    predicted_transferred_bytes: int | None
    qmp_transferred_bytes: int | None
    main_channel_bytes: int
    transferred_match: bool | None
    channels: int
    version_evidence: list[str] = field(default_factory=list)
    breakdown: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> pd.DataFrame:
        """Bytes by source, for a bar chart: wire, predicted, QMP, truth (when known)."""
        rows = [("wire (TCP payload)", self.wire_multifd_bytes),
                (f"predicted ({self.qemu_version})", self.predicted_multifd_bytes)]
        if self.qmp_multifd_bytes is not None:
            rows.append(("query-migrate", self.qmp_multifd_bytes))
        if self.truth_multifd_bytes is not None:
            rows.append(("truth", self.truth_multifd_bytes))
        return pd.DataFrame(rows, columns=["source", "multifd_bytes"])

    def _repr_html_(self) -> str:
        ok = "match" if self.match else "MISMATCH"
        return (f"<p><b>multifd-bytes ({self.qemu_version}, rule {self.rule}): {ok}</b></p>"
                + self.table().to_html(index=False)
                + "<ul>" + "".join(f"<li>{s}</li>" for s in self.explanation.split("\n"))
                + "</ul>")


# --------------------------------------------------------------------------- references
def qmp_values(obj) -> tuple[int | None, int | None, dict]:
    """``(multifd-bytes, transferred, ram)`` from a query-migrate result.

    Accepts the bare return value (``{"ram": {...}}``), a QMP reply
    (``{"return": {...}}``), or the capture metadata JSON
    (``source_final_query_migrate``).
    """
    if not isinstance(obj, dict):
        return None, None, {}
    for key in ("return", "source_final_query_migrate", "query_migrate", "query-migrate"):
        if isinstance(obj.get(key), dict) and "ram" not in obj:
            obj = obj[key]
            break
    ram = obj.get("ram") if isinstance(obj.get("ram"), dict) else {}
    mb = ram.get("multifd-bytes", ram.get("multifd_bytes"))
    tr = ram.get("transferred")
    return (int(mb) if mb is not None else None, int(tr) if tr is not None else None, ram)


def truth_values(truth) -> dict:
    """Normalise a reference-sender truth (JSON dict) or a `synth.Truth`.

    Returns ``multifd_bytes``, ``profile``, ``channel_bytes`` (list), ``records``
    (list per channel of dicts), ``main_bytes``; missing keys are None.
    """
    if truth is None:
        return {}
    if not isinstance(truth, dict):  # synth.Truth or similar
        return {"multifd_bytes": getattr(truth, "multifd_bytes", None),
                "profile": getattr(truth, "profile", None),
                "channel_bytes": list(getattr(truth, "bytes", []) or []),
                "records": list(getattr(truth, "records", []) or []),
                "main_bytes": getattr(truth, "main_bytes", None)}
    chan_bytes = truth.get("channel_bytes", truth.get("bytes"))
    recs = truth.get("records")
    if isinstance(recs, dict):  # {"0": [...], "1": [...]}
        recs = [recs[k] for k in sorted(recs, key=lambda x: int(x))]
    if chan_bytes is None and isinstance(truth.get("channels"), list):
        chans = truth["channels"]
        chan_bytes = [c.get("bytes") for c in chans if isinstance(c, dict)]
        if recs is None:
            recs = [c.get("records", []) for c in chans if isinstance(c, dict)]
    mb = truth.get("multifd_bytes", truth.get("multifd-bytes"))
    return {"multifd_bytes": int(mb) if mb is not None else None,
            "profile": truth.get("profile") or truth.get("qemu_version"),
            "channel_bytes": list(chan_bytes) if chan_bytes is not None else None,
            "records": recs, "main_bytes": truth.get("main_bytes"),
            "ok": truth.get("ok")}


# --------------------------------------------------------------------------- version
def main_frame(obj):
    """The ``main`` DataFrame of a Capture (None for bare frames or an empty one)."""
    main = getattr(obj, "main", None) if not isinstance(obj, pd.DataFrame) else None
    return main if isinstance(main, pd.DataFrame) and len(main) else None


def main_markers(main) -> dict | None:
    """What the main channel says about syncs and the version (spec 4.6, 5.2, 7).

    From a Capture's ``main`` frame (`mfdscope.frames.MAIN_COLUMNS`): counts of
    ``MULTIFD_FLUSH``, ``EOS`` of ram sections, ``MIG_CMD_SWITCHOVER_START``, zero and
    normal pages on main, the machine type, whether the ram END section's EOS was seen
    (``ram_complete``) and why parsing stopped.  None when no main channel was parsed.
    """
    if main is None or not len(main):
        return None
    flows = sorted({int(f) for f in main["flow"].dropna()})
    kinds = main["kind"]
    cmds = main.loc[kinds == "command", "cmd"]
    sections = main[kinds == "section"]
    ram_ids = set(sections.loc[sections["idstr"] == "ram", "section_id"].dropna().astype(int))
    ram_end = False
    cur = None
    for kind, stype, sid in zip(kinds, main["section_type"], main["section_id"]):
        if kind == "section":
            cur = (stype, None if pd.isna(sid) else int(sid))
        elif kind == "eos" and cur is not None and cur[0] in ("end", "full") \
                and cur[1] in ram_ids:
            ram_end = True
    machine = main.loc[kinds == "configuration", "detail"].dropna()
    opaque = main[kinds == "opaque"]
    return {
        "flows": flows,
        "flushes": int((kinds == "flush").sum()),
        "eos": int((kinds == "eos").sum()),
        "ram_sections": int(sections["idstr"].eq("ram").fillna(False).sum()),
        "switchover_start": int((cmds == int(wire.MigCmd.SWITCHOVER_START)).sum()),
        "zero_pages": int(main["zero_pages"].fillna(0).sum()),
        "normal_pages": int(main["normal_pages"].fillna(0).sum()),
        "machine": str(machine.iloc[0]) if len(machine) else None,
        "ram_complete": ram_end,
        "stopped": str(opaque["detail"].iloc[0]) if len(opaque) else None,
    }


def _main_evidence(mk: dict | None) -> list[str]:
    if not mk or not mk["eos"]:
        return []
    out = []
    if mk["flushes"]:
        out.append(f"{mk['flushes']} MULTIFD_FLUSH on the main channel: per-round sync "
                   "(8.1+ machine types, spec 5.2)")
    else:
        out.append(f"{mk['eos']} ram EOS and no MULTIFD_FLUSH on the main channel: legacy "
                   "per-section sync (<= 8.0, or an 8.1+ QEMU with a <= 8.0 machine type)")
    if mk["zero_pages"]:
        out.append(f"{mk['zero_pages']} zero pages on the main channel: legacy zero-page "
                   "detection (<= 8.2, or zero-page-detection=legacy)")
    if mk["machine"]:
        out.append(f"machine type {mk['machine']} (the QEMU is at least that version)")
    return out


def detect_version(packets, connections=None, *, page_size: int | None = None,
                   main=None) -> VersionGuess:
    """Which accounting rule the wire implies (spec 6, 7, 10).

    ``MIG_CMD_SWITCHOVER_START`` on the main channel or device-state packets -> 10.x;
    SYNC with pages_alloc 0 -> 9.2+; zero_pages > 0 -> 9.0+ (all: the "written" rule).
    SYNC with pages_alloc = page_count and no zero pages -> <= 9.1, which is ambiguous
    between 7.2 (enqueue) and 8.1-9.1 (written): ``MULTIFD_FLUSH`` on the main channel
    (per-round sync) selects 8.1-9.1; a main channel whose ram sections end without
    any (per-section sync), SYNC packets carrying pages, or page-less packets repeating
    a packet_num, are what 7.2 does (captures/qemu/README.md) and select <= 8.0.
    ``main``: the Capture's ``main`` frame (taken from a Capture given as ``packets``).
    """
    if main is None:
        main = main_frame(packets)
    mk = main_markers(main)
    mev = _main_evidence(mk)
    packets, connections, _ = unpack(packets, connections)
    if mk and mk["switchover_start"]:
        n_ds = int((packets["kind"] == "device_state").sum()) if len(packets) else 0
        return VersionGuess("10.x", WRITTEN, "detected",
                            [f"{mk['switchover_start']} MIG_CMD_SWITCHOVER_START on the main "
                             "channel: 10.0+"]
                            + ([f"{n_ds} device-state packets: 10.0+"] if n_ds else []) + mev)
    if not len(packets):
        return VersionGuess("10.x", WRITTEN, "detected", ["no multifd records: assuming 10.x"]
                            + mev, ambiguous=True)
    kinds = packets["kind"]
    n_ds = int((kinds == "device_state").sum())
    if n_ds:
        return VersionGuess("10.x", WRITTEN, "detected",
                            [f"{n_ds} device-state packets (MULTIFD_FLAG_DEVICE_STATE): 10.0+"]
                            + mev)
    sy = packets[kinds == "sync"]
    alloc0 = int((sy["pages_alloc"].fillna(-1) == 0).sum())
    if alloc0:
        return VersionGuess("9.2+", WRITTEN, "detected",
                            [f"{alloc0} SYNC packets with pages_alloc 0: 9.2+ "
                             "(counted like 10.x; same totals as 8.1+)"]
                            + (["no MIG_CMD_SWITCHOVER_START on the main channel: 9.2, or "
                                "10.x with send-switchover-start off (<= 9.2 machine type)"]
                               if mk and mk["ram_complete"] else []) + mev)
    zp = int(packets["zero_pages"].fillna(0).sum())
    if zp:
        return VersionGuess("9.0+", WRITTEN, "detected",
                            [f"{zp} zero pages listed in packets: 9.0+ multifd zero-page "
                             "detection (counted after writing, as 8.1+)"] + mev)
    psize = page_size_by_channel(packets, connections, page_size)
    full = sum(int(a) == wire.page_count(psize.get(int(c), wire.DEFAULT_PAGE_SIZE))
               for a, c in zip(sy["pages_alloc"].fillna(-1), sy["channel"].fillna(-1)))
    ev = [f"{full} of {len(sy)} SYNC packets have pages_alloc = page_count and no packet "
          "lists zero pages: <= 9.1, ambiguous between 7.2 (<= 8.0 rule: counted at enqueue) "
          "and 8.1-9.1 (counted after writing)"]
    if mk and mk["eos"] and mk["flushes"]:
        # MULTIFD_FLUSH exists on the wire from 8.1 on (8.0 forced per-section sync)
        return VersionGuess("8.1-9.1", WRITTEN, "detected",
                            ev + mev + ["per-round sync needs QEMU 8.1+: chose 8.1-9.1"])
    markers = []
    sync_pages = int((sy["normal_pages"].fillna(0) > 0).sum())
    if sync_pages:
        markers.append(f"{sync_pages} SYNC packets carry pages (7.2 piggy-backs SYNC on data)")
    rs = packets[kinds.isin(["ram", "sync"])]
    dup = rs[rs["packet_num"].duplicated(keep=False)]
    rep = int((dup["normal_pages"].fillna(0) == 0).sum()) if len(dup) else 0
    if rep:
        markers.append(f"{rep} page-less packets repeat a packet_num (as 7.2 does)")
    if mk and mk["eos"] and not mk["flushes"]:
        markers += mev
    if markers:
        return VersionGuess("<=8.0", ENQUEUE, "detected", ev + markers + ["chose <= 8.0"],
                            ambiguous=True)
    return VersionGuess("8.1-9.1", WRITTEN, "detected",
                        ev + ["no 7.2 markers (SYNC with pages, repeated packet_num): chose "
                              "8.1-9.1; give qemu_version='7.2' if it is 7.2"], ambiguous=True)


def _given(version: str) -> VersionGuess:
    prof = wire.profile(str(version))
    return VersionGuess(str(version), prof.accounting.value, "given",
                        [f"given: QEMU {version} ({prof.versions} rule: {prof.accounting.value})"])


# --------------------------------------------------------------------------- prediction
def breakdown(packets, connections=None, *, page_size: int | None = None) -> dict:
    """The byte counts both rules are built from."""
    packets, connections, _ = unpack(packets, connections)
    psize = page_size_by_channel(packets, connections, page_size)
    pk = packets[packets["channel"].notna()] if len(packets) else packets
    kinds = pk["kind"] if len(pk) else pd.Series(dtype="string")
    rs = pk[kinds.isin(["ram", "sync"])]
    ds = pk[kinds == "device_state"]
    init = pk[kinds == "init"]
    plen = [wire.packet_len(psize.get(int(c), wire.DEFAULT_PAGE_SIZE)) for c in rs["channel"]]
    normal = rs["normal_pages"].fillna(0).astype("int64").tolist()
    uncompressed = sum(n * psize.get(int(c), wire.DEFAULT_PAGE_SIZE) for n, c in zip(normal, rs["channel"]))
    wire_bytes = int(multifd_connections(connections)["bytes"].fillna(0).sum()) \
        if connections is not None and len(connections) else int(pk["wire_len"].sum())
    mf = multifd_connections(connections)
    comp = sorted(set(rs.loc[rs["normal_pages"].fillna(0) > 0, "compression"].dropna())) \
        if len(rs) else []
    # a stream captured from its middle: bytes before its first record are no record
    headless = pk.groupby("flow")["kind"].apply(lambda k: "init" not in set(k)) \
        if len(pk) else pd.Series(dtype=bool)
    leading = int(pk[pk["flow"].isin(headless[headless].index)]
                  .groupby("flow")["stream_offset"].min().sum()) if len(pk) else 0
    return {
        "channels": len(channels_of(packets, connections)),
        "page_size": sorted(set(psize.values())),
        "init_packets": len(init), "init_bytes": int(init["wire_len"].sum()),
        "ram_packets": int((kinds == "ram").sum()), "sync_packets": int((kinds == "sync").sum()),
        "packet_header_bytes": int(sum(plen)),
        "page_payload_bytes": int(rs["payload_len"].fillna(0).sum()),
        "normal_pages": int(sum(normal)),
        "zero_pages": int(rs["zero_pages"].fillna(0).sum()),
        "uncompressed_page_bytes": int(uncompressed),
        "device_state_packets": len(ds), "device_state_bytes": int(ds["wire_len"].sum()),
        "record_bytes": int(pk["wire_len"].sum()),
        "tcp_bytes": wire_bytes,
        "missing_bytes": int(pk["missing_bytes"].fillna(0).sum()) if len(pk) else 0,
        "hole_bytes": int(mf["hole_bytes"].fillna(0).sum()) if "hole_bytes" in mf else 0,
        "headless_streams": int(headless.sum()) if len(headless) else 0,
        "leading_bytes": leading,
        "compression": comp or ["none"],
    }


def predict(bd: dict, rule: str) -> int:
    """``multifd-bytes`` under ``rule`` from a `breakdown`."""
    if rule == ENQUEUE:
        return bd["packet_header_bytes"] + bd["uncompressed_page_bytes"]
    return bd["record_bytes"]


def _n(v: int) -> str:
    return f"{v:,}"


def _explain_wire(bd: dict, rule: str, predicted: int) -> list[str]:
    wire_b = bd["tcp_bytes"]
    n = bd["channels"]
    out = []
    if rule == WRITTEN:
        if predicted == wire_b:
            out.append(f"multifd-bytes counts every byte written on the {n} multifd connections, "
                       f"the {n} x 64-byte initial packets included: predicted = Σ TCP payload "
                       f"= {_n(wire_b)}")
        else:
            d = wire_b - predicted
            why = f"holes: {_n(bd['hole_bytes'])} bytes"
            if bd["headless_streams"]:
                why += (f"; {bd['headless_streams']} connection(s) captured from the middle: "
                        f"{_n(bd['leading_bytes'])} bytes before their first header")
            out.append(f"the decoded records add up to {_n(predicted)} bytes but the multifd "
                       f"connections carried {_n(wire_b)} ({d:+,}): bytes the dissector could not "
                       f"attribute to a record ({why})")
        return out
    diff = wire_b - predicted
    parts = []
    if bd["init_packets"]:
        parts.append(f"{bd['init_packets']} x 64 = {_n(bd['init_bytes'])}: initial packets are "
                     "not counted before 8.1")
    comp_delta = bd["page_payload_bytes"] - bd["uncompressed_page_bytes"]
    if comp_delta:
        parts.append(f"multifd-bytes counts {_n(bd['normal_pages'])} uncompressed pages "
                     f"({_n(bd['uncompressed_page_bytes'])} bytes) while the wire carries "
                     f"{_n(bd['page_payload_bytes'])} {'/'.join(bd['compression'])} bytes of page "
                     f"data ({comp_delta:+,})")
    rest = diff - bd["init_bytes"] - comp_delta
    if bd["device_state_bytes"]:
        parts.append(f"{_n(bd['device_state_bytes'])} bytes of device state are not counted "
                     "by the <= 8.0 rule")
        rest -= bd["device_state_bytes"]
    if rest:
        parts.append(f"{rest:+,} bytes not attributed to any record (holes or unparsed data)")
    out.append(f"wire - predicted = {_n(wire_b)} - {_n(predicted)} = {diff:+,}"
               + (": " + "; ".join(parts) if parts else ""))
    return out


def _explain_diff(name: str, predicted: int, ref: int, bd: dict, rule: str) -> str:
    d = ref - predicted
    hints = []
    if rule == ENQUEUE and d == bd["init_bytes"] and d:
        hints.append(f"exactly the {bd['init_packets']} initial packets: the reference counts "
                     "them, as 8.1+ does")
    if rule == WRITTEN and d == -bd["init_bytes"] and d:
        hints.append(f"minus the {bd['init_packets']} initial packets: the reference does not "
                     "count them, as <= 8.0 does")
    other = ENQUEUE if rule == WRITTEN else WRITTEN
    if predict(bd, other) == ref:
        hints.append(f"the {other!r} rule gives exactly {_n(ref)}: "
                     f"{'<= 8.0' if other == ENQUEUE else '8.1+'} counting")
    for unit, label in ((wire.packet_len(bd['page_size'][0]) if bd['page_size'] else 0,
                         "packet_len"), (bd['page_size'][0] if bd['page_size'] else 0, "pages")):
        if unit and d and d % unit == 0 and not hints:
            hints.append(f"{d // unit:+d} x {unit} ({label})")
    return (f"{name} {_n(ref)} != predicted {_n(predicted)} ({d:+,})"
            + (": " + "; ".join(hints) if hints else ""))


def accounting(packets, connections=None, *, qemu_version: str | None = None,
               qmp: dict | None = None, truth=None, page_size: int | None = None
               ) -> AccountingResult:
    """Predict ``multifd-bytes`` as the capture's QEMU counted it and compare.

    ``qmp``: a loaded query-migrate JSON (see `qmp_values`); ``truth``: a loaded
    reference-sender truth or `synth.Truth` (see `truth_values`).  ``match`` is True
    when the prediction equals every reference given (QMP multifd-bytes and
    transferred when it can be derived, truth multifd_bytes); with no reference it
    says whether the decoded records account for every multifd byte on the wire.
    """
    main_fr = main_frame(packets)
    packets, connections, _ = unpack(packets, connections)
    bd = breakdown(packets, connections, page_size=page_size)
    qmp_mb, qmp_tr, ram = qmp_values(qmp) if qmp is not None else (None, None, {})
    tv = truth_values(truth)
    truth_mb = tv.get("multifd_bytes")
    main = connections[connections["role"] == "main"] if connections is not None \
        and len(connections) else pd.DataFrame(columns=["bytes"])
    main_bytes = int(main["bytes"].fillna(0).sum())

    if qemu_version:
        guess = _given(qemu_version)
    else:
        guess = detect_version(packets, connections, page_size=page_size, main=main_fr)
        refs = [r for r in (qmp_mb, truth_mb) if r is not None]
        if guess.ambiguous and tv.get("profile"):
            evidence = guess.evidence
            guess = _given(str(tv["profile"]))
            guess.source = "truth profile"
            guess.evidence = evidence + [f"the truth names QEMU {tv['profile']}: using it"]
        elif guess.ambiguous and refs:
            fits = [r for r in (WRITTEN, ENQUEUE) if all(predict(bd, r) == x for x in refs)]
            if len(fits) == 1 and fits[0] != guess.rule:
                guess.rule = fits[0]
                guess.qemu_version = "<=8.0" if fits[0] == ENQUEUE else "8.1-9.1"
                guess.evidence.append(f"only the {fits[0]!r} rule reproduces the reference "
                                      f"value: chose {guess.qemu_version}")
                guess.source = "detected+reference"
    rule = guess.rule
    predicted = predict(bd, rule)

    lines = list(guess.evidence)
    lines += _explain_wire(bd, rule, predicted)
    checks = []
    match_parts = []
    if qmp_mb is not None:
        ok = predicted == qmp_mb
        match_parts.append(ok)
        checks.append({"check": "query-migrate multifd-bytes", "expected": qmp_mb,
                       "observed": predicted, "passed": ok})
        lines.append(f"matches query-migrate multifd-bytes {_n(qmp_mb)} exactly" if ok else
                     _explain_diff("query-migrate multifd-bytes", predicted, qmp_mb, bd, rule))
    if truth_mb is not None:
        ok = predicted == truth_mb
        match_parts.append(ok)
        checks.append({"check": "truth multifd_bytes", "expected": truth_mb,
                       "observed": predicted, "passed": ok})
        lines.append(f"matches the reference sender's multifd_bytes {_n(truth_mb)} exactly" if ok
                     else _explain_diff("truth multifd_bytes", predicted, truth_mb, bd, rule))

    pred_tr = None
    tr_match = None
    if rule == WRITTEN:
        pred_tr = predicted + main_bytes
        note = (f"transferred = multifd-bytes + main connection payload {_n(main_bytes)} "
                f"= {_n(pred_tr)} (8.1+: qemu_file + multifd + rdma)")
        if qmp_tr is not None:
            tr_match = pred_tr == qmp_tr
            match_parts.append(tr_match)
            checks.append({"check": "query-migrate transferred", "expected": qmp_tr,
                           "observed": pred_tr, "passed": tr_match})
            note += (": matches query-migrate" if tr_match else
                     f": query-migrate says {_n(qmp_tr)} ({qmp_tr - pred_tr:+,})"
                     + ("; VFIO config state serialised through a buffer QEMUFile also adds "
                        "to qemu_file_transferred (spec 6.3)" if bd["device_state_packets"]
                        else ""))
        lines.append(note)
    else:
        note = ("transferred is not derivable from the capture for <= 8.0: it was its own "
                "counter (ram_counters.transferred), fed by multifd at enqueue time and by the "
                "main channel's RAM page records, not by every QEMUFile byte")
        if qmp_tr is not None and qmp_mb is not None:
            extra = qmp_tr - qmp_mb
            phases = sum(int(ram.get(k, 0) or 0) for k in
                         ("precopy-bytes", "downtime-bytes", "postcopy-bytes"))
            note += (f"; query-migrate: transferred - multifd-bytes = {_n(extra)}"
                     + (" = precopy-bytes + downtime-bytes + postcopy-bytes" if extra == phases
                        else "")
                     + f", while the main connection carried {_n(main_bytes)} bytes")
        lines.append(note)

    if match_parts:
        match = all(match_parts)
    else:
        match = predicted == bd["tcp_bytes"] if rule == WRITTEN else \
            bd["tcp_bytes"] - predicted == (bd["init_bytes"] + bd["page_payload_bytes"]
                                            - bd["uncompressed_page_bytes"]
                                            + bd["device_state_bytes"])
        lines.append("no reference given: match says whether the decoded records account for "
                     "every multifd byte on the wire")
    return AccountingResult(
        qemu_version=guess.qemu_version, version_source=guess.source, rule=rule,
        predicted_multifd_bytes=int(predicted), wire_multifd_bytes=int(bd["tcp_bytes"]),
        qmp_multifd_bytes=qmp_mb, truth_multifd_bytes=truth_mb, match=bool(match),
        explanation="\n".join(lines), predicted_transferred_bytes=pred_tr,
        qmp_transferred_bytes=qmp_tr, main_channel_bytes=main_bytes,
        transferred_match=tr_match, channels=bd["channels"], version_evidence=guess.evidence,
        breakdown=bd, checks=checks)


__all__ = ["AccountingResult", "VersionGuess", "accounting", "breakdown", "detect_version",
           "main_frame", "main_markers", "predict", "qmp_values", "truth_values"]
