"""mfdscope.open on synthetic captures: every record against the generator's truth.

The captures are built here from `mfdscope.synth` streams and the capture writer's
TCP flows, so each test states exactly what is on the wire and what is damaged.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import mfdscope
from mfdscope import synth, wire
from mfdscope.capture import pcapwriter as pw

DEVICES = (("0000:00:04.0/vfio", 0, 3, 5000), ("0000:00:05.0/vfio", 0, 2, 700))


def flows_for(cfg: synth.SynthConfig, segment_size: int = 1448):
    """One TcpFlowWriter per channel (index = channel id) plus the main one (last)."""
    main, chans, truth = synth.build(cfg)
    return synth.tcp_flows(main, chans, segment_size=segment_size), truth


def write(tmp_path, flows, name="mig.pcap"):
    path = tmp_path / name
    with open(path, "wb") as fh:
        pw.write_pcap(fh, pw.interleave(*flows))
    return path


def check_against_truth(cap, truth, channels=None):
    """Every record of every channel equals the truth, in order and at its offset."""
    mf = cap.multifd
    for ch, recs in enumerate(truth.records):
        if channels is not None and ch not in channels:
            continue
        conn = mf[mf["channel_id"] == ch]
        assert len(conn) == 1, f"channel {ch} not found"
        assert int(conn["bytes"].iloc[0]) == truth.bytes[ch]
        got = cap.packets[cap.packets["channel"] == ch].sort_values("stream_offset")
        assert got["kind"].tolist() == [r["kind"] for r in recs]
        assert got["stream_offset"].tolist() == [r["offset"] for r in recs]
        assert got["wire_len"].tolist() == [r["wire_len"] for r in recs]
        for (_, row), r in zip(got.iterrows(), recs):
            for key in ("packet_num", "normal_pages", "zero_pages", "idstr", "instance_id",
                        "vfio_idx", "vfio_flags"):
                if key in r:
                    assert row[key] == r[key], (ch, r, key)


CASES = [
    pytest.param(dict(profile="10.0", devices=DEVICES), 1448, id="10.0-nocomp-devices-1448"),
    pytest.param(dict(profile="10.0", devices=DEVICES), 65483, id="10.0-nocomp-devices-64k"),
    pytest.param(dict(profile="10.0", page_size=16384, ram_pages=600), 1448, id="10.0-16k-pages"),
    pytest.param(dict(profile="10.0", page_size=65536, ram_pages=100), 9000, id="10.0-64k-pages"),
    pytest.param(dict(profile="7.2"), 1448, id="7.2-nocomp"),
    pytest.param(dict(profile="7.2", compression="zlib"), 1448, id="7.2-zlib"),
    pytest.param(dict(profile="10.0", compression="zstd"), 4000, id="10.0-zstd"),
    pytest.param(dict(profile="9.2", rounds=3, channels=2), 1448, id="9.2-3-rounds"),
    pytest.param(dict(profile="10.0", channels=8, ram_pages=2048), 333, id="10.0-8ch-odd-segments"),
]


@pytest.mark.parametrize("cfg,segment", CASES)
def test_records_equal_truth(tmp_path, cfg, segment):
    flows, truth = flows_for(synth.SynthConfig(ram_pages=cfg.pop("ram_pages", 1024), **cfg),
                             segment)
    cap = mfdscope.open(write(tmp_path, flows))
    check_against_truth(cap, truth)
    assert cap.expert.empty, cap.expert.to_string()
    assert (cap.connections["role"] == "main").sum() == 1
    assert cap.connections["holes"].sum() == 0


def test_decompress_checks_sizes(tmp_path):
    cfg = synth.SynthConfig(profile="10.0", compression="zlib", ram_pages=1024)
    flows, truth = flows_for(cfg)
    cap = mfdscope.open(write(tmp_path, flows), decompress=True)
    ram = cap.packets[(cap.packets["kind"] == "ram") & (cap.packets["normal_pages"] > 0)]
    assert len(ram) > 0
    assert (ram["decompressed_len"] == ram["normal_pages"] * 4096).all()
    assert cap.expert.empty


# --------------------------------------------------------------------------- damage
def test_missing_segment_is_a_hole_and_parser_resynchronises(tmp_path):
    cfg = synth.SynthConfig(profile="10.0", ram_pages=2048, channels=2)
    flows, truth = flows_for(cfg, 1448)
    ch0 = flows[0]
    # drop the segment holding the header of channel 0's 5th record
    target = truth.records[0][4]["offset"]
    idx = [i for i in ch0.data_indices()
           if (ch0.segments[i].seq - 1001) <= target < (ch0.segments[i].seq - 1001)
           + len(ch0.segments[i].payload)][0]
    lost = len(ch0.drop(idx).payload)
    cap = mfdscope.open(write(tmp_path, flows))
    conn = cap.multifd.set_index("channel_id").loc[0]
    assert conn["holes"] == 1 and conn["hole_bytes"] == lost
    got = cap.packets[cap.packets["channel"] == 0]["stream_offset"].tolist()
    want = [r["offset"] for r in truth.records[0]]
    assert want[4] not in got  # its header was in the hole
    assert got == [o for o in want if o != want[4]]  # everything else decoded
    assert cap.expert["group"].isin(["hole", "resync"]).any()
    check_against_truth(cap, truth, channels={1})


def test_missing_page_data_keeps_the_record(tmp_path):
    cfg = synth.SynthConfig(profile="10.0", ram_pages=1024, channels=1)
    flows, truth = flows_for(cfg, 1448)
    rec = truth.records[0][3]
    middle = rec["offset"] + rec["wire_len"] // 2
    ch0 = flows[0]
    idx = [i for i in ch0.data_indices()
           if (ch0.segments[i].seq - 1001) <= middle < (ch0.segments[i].seq - 1001) + 1448][0]
    lost = len(ch0.drop(idx).payload)
    cap = mfdscope.open(write(tmp_path, flows))
    row = cap.packets[cap.packets["stream_offset"] == rec["offset"]].iloc[0]
    assert row["missing_bytes"] == lost
    assert len(cap.packets[cap.packets["channel"] == 0]) == len(truth.records[0])


def test_capture_starting_mid_stream(tmp_path):
    cfg = synth.SynthConfig(profile="10.0", ram_pages=1024, channels=1)
    flows, truth = flows_for(cfg, 1448)
    flows[0].start_midstream(200)  # no handshake, no initial packet, mid page data
    cap = mfdscope.open(write(tmp_path, flows))
    conn = cap.connections[cap.connections["src"] == "192.0.2.1:40000"].iloc[0]
    assert conn["role"] == "multifd" and not conn["syn_seen"]
    got = cap.packets[cap.packets["flow"] == conn["flow"]]
    assert len(got) > 0 and "init" not in got["kind"].tolist()
    # offsets are relative to the first captured byte; lengths and numbers still match
    tail = truth.records[0][-len(got):]
    assert got["packet_num"].dropna().tolist() == [r["packet_num"] for r in tail
                                                   if "packet_num" in r]


def test_corrupted_header(tmp_path):
    main, chans, truth = synth.build(synth.SynthConfig(profile="10.0", ram_pages=512,
                                                       channels=1))
    data = bytearray(chans[0])
    bad = truth.records[0][2]["offset"]
    data[bad:bad + 4] = b"XXXX"
    f = pw.TcpFlowWriter().handshake().send(bytes(data)).close()
    cap = mfdscope.open(write(tmp_path, [f]))
    ex = cap.expert
    assert ex["message"].str.contains("received packet magic 58585858, expected 11223344").any()
    got = cap.packets["stream_offset"].tolist()
    assert got == [r["offset"] for i, r in enumerate(truth.records[0]) if i != 2]


def test_lying_length_does_not_allocate_or_hang(tmp_path):
    data = (wire.pack_init(0)
            + wire.pack_device_state(idstr=b"dev", instance_id=0, next_packet_size=0xFFFFFFF0)
            + wire.pack_ram(flags=1, page_size=4096, packet_num=1))
    f = pw.TcpFlowWriter().handshake().send(data).close()
    cap = mfdscope.open(write(tmp_path, [f]))
    assert cap.expert["message"].str.contains("treated as corrupt").any()
    assert cap.packets["kind"].tolist() == ["init", "sync"]


# --------------------------------------------------------------------------- bad input
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mfdscope.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_truncated_file_keeps_what_was_read(tmp_path):
    cfg = synth.SynthConfig(profile="10.0", ram_pages=512, channels=2)
    flows, truth = flows_for(cfg)
    path = write(tmp_path, flows)
    raw = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[: len(raw) * 2 // 3 + 5])
    cap = mfdscope.open(cut)
    assert cap.expert["message"].str.contains("truncated").any()
    assert len(cap.packets) > 0
    out = run_cli("summary", cut)
    assert out.returncode == 0 and "Traceback" not in out.stderr


@pytest.mark.parametrize("content", [b"", b"hello, this is not a capture\n" * 10,
                                     b"\xd4\xc3\xb2"], ids=["empty", "text", "short"])
def test_not_a_capture_gives_one_line_reason(tmp_path, content):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    out = run_cli("summary", path)
    assert out.returncode == 2
    assert out.stderr.startswith("mfdscope: error: ") and out.stderr.count("\n") == 1
    with pytest.raises(mfdscope.CaptureError):
        mfdscope.open(path)


def test_missing_file(tmp_path):
    out = run_cli("dissect", tmp_path / "nope.pcap")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_capture_without_tcp(tmp_path):
    path = tmp_path / "udp.pcap"
    with open(path, "wb") as fh:
        w = pw.PcapWriter(fh)
        w.write_frame(1.0, bytes(14) + b"\x45" + bytes(40))  # ethertype 0: not IP
    cap = mfdscope.open(path)
    assert cap.connections.empty and cap.packets.empty
    assert cap.expert["message"].str.contains("no TCP in this capture").any()
    out = run_cli("summary", "--json", path)
    assert out.returncode == 0
    assert json.loads(out.stdout)["frames"]["non_ip"] == 1


def test_tcp_that_is_not_a_migration(tmp_path):
    f = pw.TcpFlowWriter().handshake().send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100).close()
    cap = mfdscope.open(write(tmp_path, [f]))
    assert cap.connections["role"].tolist() == ["unknown"]
    assert cap.packets.empty
    assert cap.expert["message"].str.contains("no migration traffic").any()


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def small_capture(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    flows, truth = flows_for(synth.SynthConfig(profile="10.0", ram_pages=1024,
                                               devices=DEVICES))
    return write(tmp, flows), truth


def test_cli_dissect_lines(small_capture):
    path, truth = small_capture
    out = run_cli("dissect", path)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert len(lines) == sum(len(r) for r in truth.records)
    assert sum("device_state" in ln for ln in lines) == 4 + 3


def test_cli_filter_and_exports(small_capture, tmp_path):
    path, truth = small_capture
    out = run_cli("dissect", path, "--filter", "multifd.kind == 'sync' and channel == 1")
    assert len(out.stdout.splitlines()) == sum(r["kind"] == "sync" for r in truth.records[1])
    out = run_cli("dissect", path, "-o", "json", "--filter", "kind == 'device_state'")
    rows = json.loads(out.stdout)
    assert sorted((r["idstr"], r["vfio_idx"]) for r in rows) == sorted(
        (d[0], i) for d in DEVICES for i in range(d[2] + 1))
    csv = tmp_path / "p.csv"
    assert run_cli("dissect", path, "-o", "csv", "-w", csv).returncode == 0
    assert len(pd.read_csv(csv)) == sum(len(r) for r in truth.records)
    pq = tmp_path / "p.parquet"
    assert run_cli("dissect", path, "-o", "parquet", "-w", pq).returncode == 0
    assert pd.read_parquet(pq)["packet_num"].dtype == "UInt64"
    bad = run_cli("dissect", path, "--filter", "no_such_column > 1")
    assert bad.returncode == 2 and "bad --filter" in bad.stderr


def test_summary_json_shape(small_capture):
    path, truth = small_capture
    doc = json.loads(run_cli("summary", "--json", path).stdout)
    by_id = {c["channel_id"]: c for c in doc["channels"] if c["role"] == "multifd"}
    for ch, recs in enumerate(truth.records):
        c = by_id[ch]
        assert c["bytes"] == truth.bytes[ch]
        for kind in ("init", "ram", "sync", "device_state"):
            assert c["records"][kind] == sum(r["kind"] == kind for r in recs)
        assert c["normal_pages"] == sum(r.get("normal_pages", 0) for r in recs)


def test_mid_stream_capture_with_migration_port_above_the_client_port(tmp_path):
    """Without a handshake the reassembler guesses the client by port; a destination
    listening above the ephemeral range must not hide the migration."""
    cfg = synth.SynthConfig(profile="10.0", ram_pages=512, channels=1)
    main, chans, truth = synth.build(cfg)
    f = pw.TcpFlowWriter(client=("192.0.2.1", 40000), server=("192.0.2.2", 50000))
    f.handshake().send(chans[0], segment_size=1448).close()
    f.start_midstream(3)  # just the handshake missing: starts at the initial packet
    cap = mfdscope.open(write(tmp_path, [f]))
    conn = cap.connections.iloc[0]
    assert (conn["role"], conn["channel_id"], conn["bytes"]) == ("multifd", 0, truth.bytes[0])
    assert conn["src"] == "192.0.2.1:40000"
    assert cap.packets["stream_offset"].tolist() == [r["offset"] for r in truth.records[0]]


def test_duplicate_channel_id_and_uuid_mismatch_are_flagged(tmp_path):
    a = wire.pack_init(1, bytes(16)) + wire.pack_ram(flags=1, page_size=4096, packet_num=0)
    b = wire.pack_init(1, b"\x01" * 16) + wire.pack_ram(flags=1, page_size=4096, packet_num=1)
    flows = [pw.TcpFlowWriter(client=("192.0.2.1", 40000 + i)).handshake().send(d).close()
             for i, d in enumerate((a, b))]
    cap = mfdscope.open(write(tmp_path, flows))
    msgs = cap.expert["message"]
    assert msgs.str.contains("multifd: received id '1' already setup'").any()
    assert msgs.str.contains("multifd channels carry different UUIDs").any()


def test_analyses_count_a_channel_whose_initial_packet_was_not_captured(tmp_path):
    from mfdscope.analysis import accounting, throughput
    from mfdscope.analysis._common import channel_label

    cfg = synth.SynthConfig(profile="10.0", ram_pages=1024, channels=1)
    flows, truth = flows_for(cfg, 1448)
    flows[0].start_midstream(200)
    cap = mfdscope.open(write(tmp_path, flows))
    flow = int(cap.multifd["flow"].iloc[0])
    stats = throughput.channel_stats(cap)
    row = stats[stats["channel"] == -1 - flow].iloc[0]
    assert row["records"] == len(cap.packets)
    assert channel_label(-1 - flow) == f"flow {flow} (no initial packet)"
    acc = accounting.accounting(cap)
    first = int(cap.packets["stream_offset"].min())
    assert acc.breakdown["leading_bytes"] == first > 0
    assert f"{first:,} bytes before their first header" in acc.explanation
