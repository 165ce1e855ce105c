"""Two backends of the same tables: Scapy layers and the fast parser agree.

Every record of every test capture (real QEMU and synthetic) is decoded by
`mfdscope.layers.dissect_stream` and by `mfdscope.parse.ChannelParser`; the fields
must be equal, record by record (the dissect.cstruct lesson in shared/style.md).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfdscope import layers, synth, wire
from mfdscope.capture import Reassembler, open_capture
from mfdscope.layers import MultiFDDeviceStatePacket, MultiFDInit, MultiFDRamPacket
from mfdscope.parse import ChannelParser

QEMU_DIR = Path(__file__).resolve().parent.parent / "captures" / "qemu"


class StreamCollector:
    """A reassembler sink that keeps each client-to-server stream's bytes."""

    def __init__(self):
        self.data = {}

    def on_stream(self, stream):
        if stream.direction == "c2s":
            self.data[stream] = bytearray()

    def on_spans(self, stream, buf, spans):
        if stream in self.data:
            for off, n in zip(spans["buf_off"].tolist(), spans["length"].tolist()):
                self.data[stream] += buf[off:off + n]

    def on_hole(self, stream, *args):
        raise AssertionError("test captures have no holes")

    def on_end(self, stream, *args):
        pass


def multifd_streams(path: Path) -> list[bytes]:
    cap = open_capture(str(path))
    sink = StreamCollector()
    re = Reassembler(sink)
    for batch in cap.batches():
        re.add_batch(batch.buf, batch)
    re.finish()
    return [bytes(d) for d in sink.data.values() if d[:4] == wire.MULTIFD_MAGIC_BYTES]


def fast_fields(ev) -> dict:
    if ev.kind == "init":
        return dict(kind="init", channel=ev.channel_id, uuid=ev.uuid, version=ev.version)
    if ev.kind == "device_state":
        return dict(kind="device_state", flags=ev.flags, idstr=ev.idstr,
                    instance_id=ev.instance_id, next_packet_size=ev.next_packet_size,
                    vfio=(ev.vfio_version, ev.vfio_idx, ev.vfio_flags))
    return dict(kind=ev.kind, flags=ev.flags, pages_alloc=ev.pages_alloc,
                normal_pages=ev.normal_pages, zero_pages=ev.zero_pages,
                next_packet_size=ev.next_packet_size, packet_num=ev.packet_num,
                ramblock=ev.ramblock, offsets=list(ev.offsets), payload_len=ev.payload_len)


def scapy_fields(pkt) -> dict:
    if isinstance(pkt, MultiFDInit):
        return dict(kind="init", channel=pkt.id, uuid=bytes(pkt.uuid), version=pkt.version)
    if isinstance(pkt, MultiFDDeviceStatePacket):
        buf = pkt.payload
        vfio = (buf.version, buf.idx, int(buf.flags)) if buf.name.startswith("VFIO") else \
            (None, None, None)
        return dict(kind="device_state", flags=int(pkt.flags), idstr=wire.cstring(pkt.idstr),
                    instance_id=pkt.instance_id, next_packet_size=pkt.next_packet_size,
                    vfio=vfio)
    assert isinstance(pkt, MultiFDRamPacket), pkt.summary()
    flags = int(pkt.flags)
    return dict(kind="sync" if flags & wire.FLAG_SYNC else "ram", flags=flags,
                pages_alloc=pkt.pages_alloc, normal_pages=pkt.normal_pages,
                zero_pages=pkt.zero_pages, next_packet_size=pkt.next_packet_size,
                packet_num=pkt.packet_num, ramblock=wire.cstring(bytes(pkt.ramblock)[:255]),
                offsets=list(pkt.valid_offsets), payload_len=pkt.payload_len())


def assert_backends_agree(data: bytes, page_size: int) -> int:
    parser = ChannelParser(page_size)
    events = [e for e in parser.feed(data, 0.0) + parser.end(0.0)]
    assert not [e for e in events if e.kind == "expert" and e.severity != "note"], events
    fast = [fast_fields(e) for e in events if e.kind != "expert"]
    slow = [scapy_fields(p) for p in layers.dissect_stream(data, page_size=page_size)]
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert a == b, f"record {i}"
    return len(fast)


@pytest.mark.parametrize("name", sorted(p.stem for p in QEMU_DIR.glob("*.pcap")))
def test_real_captures(name):
    streams = multifd_streams(QEMU_DIR / f"{name}.pcap")
    assert streams
    assert sum(assert_backends_agree(s, 4096) for s in streams) > 4 * len(streams)


@settings(max_examples=25, deadline=None)
@given(profile=st.sampled_from(["7.2", "9.2", "10.0"]),
       compression=st.sampled_from(["none", "zlib", "zstd"]),
       page_size=st.sampled_from([1024, 4096, 16384, 65536]),
       ram_pages=st.integers(1, 700), zero_share=st.floats(0, 1),
       rounds=st.integers(1, 3), seed=st.integers(0, 2**16),
       devices=st.lists(st.tuples(st.sampled_from(["a/vfio", "0000:00:04.0/vfio"]),
                                  st.integers(0, 3), st.integers(0, 4),
                                  st.integers(1, 3000)), max_size=3))
def test_synthetic_streams(profile, compression, page_size, ram_pages, zero_share, rounds,
                           seed, devices):
    cfg = synth.SynthConfig(channels=2, profile=profile, compression=compression,
                            page_size=page_size, ram_pages=ram_pages, zero_share=zero_share,
                            rounds=rounds, seed=seed, devices=tuple(devices))
    _, chans, truth = synth.build(cfg)
    for data, recs in zip(chans, truth.records):
        assert assert_backends_agree(data, page_size) == len(recs)
