"""TCP reassembly: what the sink receives for each kind of capture damage."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_helpers import Recorder

from mfdscope.capture import tcp
from mfdscope.capture.pcapfile import open_capture
from mfdscope.capture.pcapwriter import TcpFlowWriter, interleave, write_pcap
from mfdscope.capture.tcp import Reassembler

MSS = 100
DATA = bytes(random.Random(7).randrange(256) for _ in range(1000))  # 10 segments


def flow(data=DATA, acks=0, isn=1000, **kw):
    f = TcpFlowWriter(isn_client=isn, **kw).handshake()
    f.send(data, MSS, ack_every=acks)
    return f.close()


def data_index(f, k):
    """List position of the k-th client data segment."""
    return f.data_indices()[k]


def with_holes(data, holes):
    out = bytearray(data)
    for off, n, _ in holes:
        out[off:off + n] = bytes(n)
    return bytes(out)


# ------------------------------------------------------------------ table
def clean(f):
    pass


def wraparound(f):
    pass  # see CASES: isn near 2**32


def duplicate_all(f):
    for i in reversed(f.data_indices()):
        f.duplicate(i)


def swap_two(f):
    f.swap(data_index(f, 2), data_index(f, 3))


def reverse_five(f):
    idx = f.data_indices()[1:6]
    segs = [f.segments[i] for i in idx]
    for i, s in zip(idx, reversed(segs)):
        f.segments[i] = s


def drop_one(f):
    f.drop(data_index(f, 4))


def drop_last_before_fin(f):
    f.drop(data_index(f, 9))


def retransmit_overlap(f):
    """Bytes 350-400 sent again after segment 5: old bytes, counted, not delivered."""
    f.retransmit(data_index(f, 3), 50, None, at=data_index(f, 5))


def partial_new_overlap(f):
    """Segment 4 is lost; a retransmission covers the end of 3 and all of 4."""
    i3, i4 = data_index(f, 3), data_index(f, 4)
    seg3, seg4 = f.segments[i3], f.segments[i4]
    f.drop(i4)
    f.segments.insert(i4, type(seg3)(seg3.time, True, seg3.seq + 60, seg3.ack, seg3.flags,
                                      seg3.payload[60:] + seg4.payload))


def conflicting_retransmit(f):
    f.retransmit(data_index(f, 2), 0, None, at=data_index(f, 3), payload=b"X" * MSS)


def snaplen_cut(f):
    f.truncate(data_index(f, 5), 54 + 30)  # headers + 30 payload bytes


def snaplen_cut_out_of_order(f):
    snaplen_cut(f)
    f.swap(data_index(f, 5), data_index(f, 6))


def midstream(f):
    f.start_midstream(data_index(f, 3))


CASES = {  # name: (fault, flow kwargs, expected c2s holes, counters, ends)
    "clean": (clean, {}, [], {}, ("fin", "fin")),
    "wraparound": (wraparound, {"isn": 2**32 - 450}, [], {}, ("fin", "fin")),
    "exact duplicates": (duplicate_all, {}, [], {"duplicate_segments": 10,
                                                 "retransmitted_bytes": 1000},
                         ("fin", "fin")),
    "reordered pair": (swap_two, {}, [], {"out_of_order_segments": 1}, ("fin", "fin")),
    "reversed run": (reverse_five, {}, [], {"out_of_order_segments": 4}, ("fin", "fin")),
    "lost segment, peer ACKs past it": (drop_one, {"acks": 1},
                                        [(400, 100, "missing")], {}, ("fin", "fin")),
    "lost segment, no ACKs": (drop_one, {}, [(400, 100, "missing")], {}, ("fin", "fin")),
    "lost last segment before FIN": (drop_last_before_fin, {},
                                     [(900, 100, "missing")], {}, ("fin", "fin")),
    "retransmission of old bytes": (retransmit_overlap, {}, [],
                                    {"retransmitted_bytes": 50, "duplicate_segments": 1,
                                     "overlap_conflicts": 0}, ("fin", "fin")),
    "retransmission with new bytes": (partial_new_overlap, {}, [],
                                      {"retransmitted_bytes": 40}, ("fin", "fin")),
    "conflicting retransmission": (conflicting_retransmit, {}, [],
                                   {"overlap_conflicts": 1, "retransmitted_bytes": 100},
                                   ("fin", "fin")),
    "snaplen cut": (snaplen_cut, {}, [(530, 70, "snaplen")], {}, ("fin", "fin")),
    "snaplen cut, out of order": (snaplen_cut_out_of_order, {},
                                  [(530, 70, "snaplen")], {}, ("fin", "fin")),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 65536])
def test_reassembly_cases(reassemble, name, batch_size):
    fault, kw, holes, counters, ends = CASES[name]
    f = flow(**kw)
    fault(f)
    r, rec = reassemble(f, batch_size)
    (conn,) = r.connections
    c2s = conn.c2s
    assert rec.holes[c2s] == holes
    assert rec.delivered(c2s) == with_holes(DATA, holes)
    assert c2s.bytes == len(DATA) - sum(n for _, n, _ in holes)
    assert (c2s.hole_bytes, c2s.holes) == (sum(n for _, n, _ in holes), len(holes))
    for attr, value in counters.items():
        assert getattr(c2s, attr) == value, attr
    assert (rec.ends[conn.c2s], rec.ends[conn.s2c]) == ends
    assert c2s.syn_seen and c2s.fin_seen and not c2s.rst_seen
    assert (conn.client, conn.server) == ("10.0.0.1:40000", "10.0.0.2:9000")
    assert rec.delivered(conn.s2c) == b""


@pytest.mark.parametrize("name", list(CASES))
def test_batch_size_does_not_change_results(reassemble, name):
    fault, kw, *_ = CASES[name]
    results = []
    for batch_size in (1, 2, 3, 7, 65536):
        f = flow(**kw)
        fault(f)
        r, rec = reassemble(f, batch_size)
        st_ = r.connections[0].c2s
        c2s_log = [e for e in rec.log if e[1] == "c2s"]  # streams end in any order
        results.append((rec.delivered(st_), rec.holes[st_], c2s_log,
                        {a: getattr(st_, a) for a in ("bytes", "hole_bytes", "segments",
                                                      "retransmitted_bytes",
                                                      "duplicate_segments",
                                                      "overlap_conflicts", "wire_bytes")}))
    assert all(x == results[-1] for x in results)


def test_counts_and_times(reassemble):
    f = flow(acks=2)
    r, rec = reassemble(f)
    c2s, s2c = r.connections[0].c2s, r.connections[0].s2c
    frames = list(f.frames())
    c2s_frames = [fr for fr, s in zip(frames, f.segments) if s.c2s]
    assert c2s.segments == len(c2s_frames) == 2 + 10 + 2  # SYN, ACK, data, FIN, ACK
    assert c2s.wire_bytes == sum(ol for _, _, ol in c2s_frames)
    assert s2c.segments == 2 + 5  # SYN-ACK, FIN, five ACKs
    assert c2s.first_time == pytest.approx(c2s_frames[0][0], abs=1e-6)
    assert c2s.last_time == pytest.approx(c2s_frames[-1][0], abs=1e-6)
    assert (c2s.src, c2s.dst, c2s.direction) == ("10.0.0.1:40000", "10.0.0.2:9000", "c2s")


def test_one_call_per_stream_per_batch_when_clean(reassemble):
    flows = [flow(client=("10.0.0.1", 50000 + i), t0=i * 1e-7, acks=3) for i in range(4)]
    r, rec = reassemble(interleave(*flows))
    for conn in r.connections:
        assert rec.calls[conn.c2s] == 1
        assert rec.delivered(conn.c2s) == DATA


def test_interleaved_flows_with_faults(reassemble):
    flows = []
    for i, fault in enumerate([drop_one, swap_two, duplicate_all, clean]):
        f = flow(client=("10.0.0.1", 50000 + i), t0=i * 1e-7, acks=1)
        fault(f)
        flows.append(f)
    for batch_size in (5, 65536):
        r, rec = reassemble(interleave(*flows), batch_size)
        got = [rec.delivered(c.c2s) for c in r.connections]
        assert got == [with_holes(DATA, [(400, 100, None)]), DATA, DATA, DATA]


def test_midstream_capture(reassemble):
    f = flow()
    midstream(f)
    r, rec = reassemble(f)
    c2s = r.connections[0].c2s
    assert not c2s.syn_seen
    assert rec.delivered(c2s) == DATA[300:]  # offset 0 = first byte seen
    assert rec.holes[c2s] == []


def test_midstream_without_syn_higher_port_is_client(reassemble):
    f = TcpFlowWriter(client=("10.0.0.1", 80), server=("10.0.0.2", 50000))
    f.handshake().send(DATA, MSS).close()
    f.start_midstream(3)
    r, rec = reassemble(f)
    conn = r.connections[0]
    assert conn.client == "10.0.0.2:50000"
    assert rec.delivered(conn.s2c) == DATA and rec.delivered(conn.c2s) == b""


def test_server_data_and_client_data(reassemble):
    f = TcpFlowWriter().handshake()
    f.send(DATA[:300], MSS).send(DATA[300:], MSS, c2s=False).close()
    r, rec = reassemble(f)
    conn = r.connections[0]
    assert rec.delivered(conn.c2s) == DATA[:300] and rec.delivered(conn.s2c) == DATA[300:]


def test_rst_ends_both_directions(reassemble):
    f = TcpFlowWriter().handshake().send(DATA, MSS).close(rst=True)
    r, rec = reassemble(f)
    conn = r.connections[0]
    assert rec.ends[conn.c2s] == rec.ends[conn.s2c] == "rst"
    assert conn.c2s.rst_seen and rec.delivered(conn.c2s) == DATA


def test_capture_ending_without_fin_is_eof(reassemble):
    f = TcpFlowWriter().handshake().send(DATA, MSS)
    r, rec = reassemble(f)
    conn = r.connections[0]
    assert rec.ends[conn.c2s] == rec.ends[conn.s2c] == "eof"
    assert not conn.c2s.fin_seen


def test_new_syn_after_fin_is_a_new_connection(reassemble):
    first = flow()
    second = TcpFlowWriter(isn_client=777_777, t0=1.0).handshake()
    second.send(DATA[::-1], MSS).close()
    r, rec = reassemble(list(first.frames()) + list(second.frames()))
    assert len(r.connections) == 2
    assert rec.delivered(r.connections[0].c2s) == DATA
    assert rec.delivered(r.connections[1].c2s) == DATA[::-1]
    assert [rec.ends[c.c2s] for c in r.connections] == ["fin", "fin"]


def test_retransmitted_syn_is_a_duplicate(reassemble):
    f = flow()
    f.duplicate(0)
    r, rec = reassemble(f)
    assert len(r.connections) == 1 and r.connections[0].c2s.duplicate_segments == 1
    assert rec.delivered(r.connections[0].c2s) == DATA


def test_pending_bound_turns_a_gap_into_a_hole(reassemble, monkeypatch):
    monkeypatch.setattr(tcp, "MAX_PENDING_SEGMENTS", 3)
    f = TcpFlowWriter().handshake().send(DATA, MSS)  # no FIN: the bound must act
    f.drop(f.data_indices()[2])
    r, rec = reassemble(f)
    c2s = r.connections[0].c2s
    assert rec.holes[c2s] == [(200, 100, "missing")]
    assert rec.delivered(c2s) == with_holes(DATA, rec.holes[c2s])
    assert rec.calls[c2s] == 2  # the bound acted before the end of the capture


def test_gap_at_capture_end_is_missing(reassemble):
    f = TcpFlowWriter().handshake().send(DATA, MSS)
    f.drop(f.data_indices()[7])
    r, rec = reassemble(f)
    c2s = r.connections[0].c2s
    assert rec.holes[c2s] == [(700, 100, "missing")] and rec.ends[c2s] == "eof"


def test_reused_live_buffer_is_not_referenced_after_the_call(tmp_path):
    """A live source reuses its buffer: buffered out-of-order data must survive it."""
    f = flow()
    reverse_five(f)
    path = tmp_path / "a.pcap"
    with open(path, "wb") as fo:
        write_pcap(fo, f.frames())
    rec = Recorder()
    r = Reassembler(rec)
    with open_capture(path) as cap:
        for batch in cap.batches(1):
            live = bytearray(cap.buf)
            r.add_batch(live, batch)
            live[:] = bytes(len(live))  # the source overwrites its buffer
        r.finish()
    assert rec.delivered(r.connections[0].c2s) == DATA


def test_ipv6_and_vlan_flow(reassemble):
    f = TcpFlowWriter(client=("2001:db8::1", 40000), server=("2001:db8::2", 9000),
                      vlan=(10, 20)).handshake().send(DATA, MSS).close()
    r, rec = reassemble(f)
    conn = r.connections[0]
    assert conn.client == "[2001:db8::1]:40000"
    assert rec.delivered(conn.c2s) == DATA


def test_gso_frames_longer_than_65535(reassemble):
    data = bytes(random.Random(1).randrange(256) for _ in range(300_000))
    f = TcpFlowWriter().handshake().send(data, 65495).close()
    r, rec = reassemble(f)
    assert rec.delivered(r.connections[0].c2s) == data


# --------------------------------------------------------------- property
@st.composite
def damaged_flows(draw):
    size = draw(st.integers(1, 3000))
    mss = draw(st.integers(1, 400))
    isn = draw(st.sampled_from([0, 12345, 2**32 - 1, 2**32 - size // 2 - 1]))
    acks = draw(st.sampled_from([0, 1, 3]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    data = rng.randbytes(size)
    f = TcpFlowWriter(isn_client=isn).handshake()
    f.send(data, mss, ack_every=acks)
    if draw(st.booleans()):
        f.close()
    n_faults = draw(st.integers(0, 12))
    for _ in range(n_faults):
        idx = f.data_indices()
        if not idx:
            break
        i = rng.choice(idx)
        kind = draw(st.sampled_from(["drop", "dup", "swap", "retransmit", "snaplen"]))
        if kind == "drop":
            f.drop(i)
        elif kind == "dup":
            f.duplicate(i, at=rng.randrange(i + 1, len(f.segments) + 1))
        elif kind == "swap":
            f.swap(i, rng.randrange(len(f.segments)))
        elif kind == "retransmit":
            n = len(f.segments[i].payload)
            a = rng.randrange(n)
            f.retransmit(i, a, rng.randrange(a + 1, n + 1),
                         at=rng.randrange(len(f.segments) + 1))
        else:
            f.truncate(i, 54 + rng.randrange(len(f.segments[i].payload)))
    return data, f, draw(st.sampled_from([1, 3, 8, 65536]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged_flows())
def test_delivered_bytes_and_holes_tile_the_stream(reassemble, case):
    data, f, batch_size = case
    r, rec = reassemble(f, batch_size)
    for conn in r.connections:
        c2s = conn.c2s
        if c2s.direction != "c2s" or not c2s.syn_seen:
            continue  # e.g. the SYN itself was swapped behind data: nothing to check
        got = rec.delivered(c2s)
        assert len(got) <= len(data)
        assert c2s.bytes + c2s.hole_bytes == len(got)
        in_hole = np.zeros(len(got), bool)
        for off, n, _ in rec.holes[c2s]:
            in_hole[off:off + n] = True
        mine = np.frombuffer(got, np.uint8)
        truth = np.frombuffer(data[:len(got)], np.uint8)
        assert np.array_equal(mine[~in_hole], truth[~in_hole])
        assert c2s in rec.ends


@pytest.mark.parametrize("batch_size", [1, 4, 65536])
def test_connections_are_announced_in_capture_order(reassemble, batch_size):
    """A connection seen mid-stream first is announced before one whose SYN comes
    later, whatever the batching."""
    late = flow(client=("10.0.0.1", 50001), t0=0.0005)
    early = flow(client=("10.0.0.1", 50000), t0=0.0)
    midstream(early)  # its first captured segment is still before the late SYN
    r, rec = reassemble(interleave(early, late), batch_size)
    assert [c.client for c in r.connections] == ["10.0.0.1:50000", "10.0.0.1:50001"]
    assert [s.conn.client for s in rec.streams[::2]] == ["10.0.0.1:50000",
                                                         "10.0.0.1:50001"]
