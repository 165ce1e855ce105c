"""Real QEMU captures (captures/qemu/): the dissector against QEMU's own truth.

Each capture was made by captures/qemu/make_qemu_captures.py with real QEMU 7.2 or
10.0 migrating over loopback.  Truth comes from three independent places: the TCP
payload bytes counted here by a deliberately naive pcap walker, QEMU's source trace
(one `multifd_send` / `multifd_send_fill` line per RAM or SYNC packet), and the
source's final `query-migrate`.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import mfdscope

QEMU_DIR = Path(__file__).resolve().parent.parent / "captures" / "qemu"
CAPTURES = sorted(p.stem for p in QEMU_DIR.glob("*.pcap"))


def naive_tcp_payload(path: Path) -> dict[tuple[int, int], int]:
    """Bytes of TCP payload per (client port, server port), from SYN to last byte.

    Loopback Ethernet + IPv4 only, which is what these captures hold; independent of
    mfdscope's reader on purpose (sequence arithmetic instead of reassembly).
    """
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    isn, end = {}, defaultdict(int)
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16: off + 16 + incl]
        off += 16 + incl
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        tcp = ip[ihl:]
        sport, dport, seq = struct.unpack_from(">HHI", tcp)
        doff = (tcp[12] >> 4) * 4
        flags = tcp[13]
        plen = total - ihl - doff
        key = (sport, dport)
        if flags & 0x02:  # SYN: the stream starts one after it
            isn[key] = seq + 1
        if plen and key in isn:
            end[key] = max(end[key], (seq - isn[key]) % 2**32 + plen)
    return dict(end)


def trace_counts(path: Path, version: str) -> Counter:
    """RAM + SYNC packets per channel id from the source trace."""
    event = "multifd_send_fill" if version.startswith("10") else "multifd_send"
    pat = re.compile(rf":{event} channel (\d+) ")
    return Counter(int(m.group(1)) for m in map(pat.search, path.open()) if m)


@pytest.fixture(scope="module", params=CAPTURES)
def real(request):
    name = request.param
    meta = json.loads((QEMU_DIR / f"{name}.json").read_text())
    qmp = json.loads((QEMU_DIR / f"{name}.query-migrate.json").read_text())
    cap = mfdscope.open(QEMU_DIR / f"{name}.pcap")
    return name, meta, qmp, cap


def test_there_are_real_captures():
    assert {"qemu72-nocomp-4ch", "qemu10-nocomp-4ch"} <= set(CAPTURES)


def test_every_channel_found_and_clean(real):
    name, meta, _, cap = real
    mf = cap.multifd
    assert sorted(mf["channel_id"].tolist()) == list(range(meta["channels"]))
    assert set(mf["uuid"]) == {meta["uuid"]}
    assert (cap.connections["role"] == "main").sum() == 1
    assert (mf["page_size"] == 4096).all()
    bad = cap.expert[cap.expert["severity"].isin(["error", "warn"])]
    assert bad.empty, bad.to_string()


def test_bytes_equal_tcp_payload(real):
    name, _, _, cap = real
    naive = naive_tcp_payload(QEMU_DIR / f"{name}.pcap")
    for ch in cap.channels():
        cport = int(ch["src"].rsplit(":", 1)[1])
        sport = int(ch["dst"].rsplit(":", 1)[1])
        assert ch["bytes"] == naive.get((cport, sport), 0), ch
    # and the records tile every multifd stream exactly
    for flow, recs in cap.packets.groupby("flow"):
        conn = cap.connections.set_index("flow").loc[flow]
        assert recs["wire_len"].sum() == conn["bytes"]
        assert (recs["stream_offset"].sort_values().diff().dropna()
                == recs.sort_values("stream_offset")["wire_len"].iloc[:-1].values).all()


def test_record_counts_equal_qemu_trace(real):
    name, meta, _, cap = real
    sent = trace_counts(QEMU_DIR / f"{name}.src-trace.log", meta["qemu_major_minor"])
    for ch in cap.channels():
        if ch["role"] != "multifd":
            continue
        rec = ch["records"]
        assert rec["init"] == 1
        assert rec["ram"] + rec["sync"] == sent[ch["channel_id"]], (ch["channel_id"], rec)
        assert rec["device_state"] == 0


def test_multifd_bytes_from_query_migrate(real):
    """Spec section 10: how QEMU's counter relates to the wire, per version."""
    name, meta, qmp, cap = real
    ram = qmp["ram"]
    mf = cap.multifd
    wire_bytes = int(mf["bytes"].sum())
    main = int(cap.connections.loc[cap.connections["role"] == "main", "bytes"].sum())
    if meta["qemu_major_minor"].startswith("10"):
        assert ram["multifd-bytes"] == wire_bytes
        assert ram["transferred"] == wire_bytes + main
    else:
        pk = cap.packets[cap.packets["kind"].isin(["ram", "sync"])]
        predicted = int((pk["normal_pages"] * 4096 + 1344).sum())
        assert ram["multifd-bytes"] == predicted
        if meta["compression"] == "none":
            assert wire_bytes - ram["multifd-bytes"] == 64 * meta["channels"]


def test_summary_json_cli_on_default_capture():
    out = subprocess.run([sys.executable, "-m", "mfdscope.cli", "summary", "--json",
                          str(QEMU_DIR / "qemu10-nocomp-4ch.pcap")],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    chans = [c for c in doc["channels"] if c["role"] == "multifd"]
    assert len(chans) == 4
    for c in chans:
        assert set(c) >= {"role", "channel_id", "src", "dst", "bytes", "records",
                          "normal_pages", "zero_pages", "holes", "first_time", "last_time"}
        assert set(c["records"]) == {"init", "ram", "sync", "device_state"}
        assert c["holes"] == 0
