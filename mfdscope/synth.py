"""Synthetic multifd byte streams with their ground truth, for tests and benchmarks.

This is not the reference sender (that one speaks over real sockets, with threads,
as QEMU does): it lays out deterministic channel streams as fast as possible so
tests can build small captures with known contents and benchmarks can build
gigabyte ones.  Records come from `wire`'s builders, like everywhere else.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import wire
from .codec import compressor
from .reference.mainchannel import MainChannelWriter


@dataclass
class SynthConfig:
    channels: int = 4
    page_size: int = wire.DEFAULT_PAGE_SIZE
    ram_pages: int = 4096  # pages of guest RAM in the one RAM block
    zero_share: float = 0.25  # share of zero pages
    compression: str = "none"  # none, zlib, zstd
    profile: str = "10.0"  # 7.2, 9.2 or 10.0
    rounds: int = 1  # dirty-scan rounds (each ends with a SYNC on every channel)
    devices: tuple[tuple[str, int, int, int], ...] = ()  # (idstr, instance, buffers, size)
    seed: int = 0
    ramblock: str = "pc.ram"
    uuid: bytes = bytes(16)
    #: reuse one random page for every non-zero page (gigabyte benchmarks)
    fast_pages: bool = False


@dataclass
class Truth:
    """What each channel carried, record by record."""

    records: list[list[dict]] = field(default_factory=list)  # per channel
    bytes: list[int] = field(default_factory=list)  # per channel


def generate(cfg: SynthConfig):
    """Yield ``(channel, data)`` in send order; ``channel`` -1 is the main channel.

    The generator returns the `Truth` (``StopIteration.value``; see `build`).
    """
    prof = wire.profile(cfg.profile)
    rng = random.Random(cfg.seed)
    count = wire.page_count(cfg.page_size)
    comp = wire.Compression.from_label(cfg.compression)
    truth = Truth([[] for _ in range(cfg.channels)], [0] * cfg.channels)
    compressors = [compressor(comp) for _ in range(cfg.channels)]
    packet_num = 0
    block = cfg.ramblock.encode()
    fixed_page = rng.randbytes(cfg.page_size)

    def emit(ch: int, kind: str, data: bytes, **info):
        info.update(kind=kind, offset=truth.bytes[ch], wire_len=len(data))
        truth.records[ch].append(info)
        truth.bytes[ch] += len(data)
        return ch, data

    # the main channel as QEMU writes its ram section (spec 4.6, 5.2): per-round
    # MULTIFD_FLUSH (8.1+) or one SYNC per ram EOS (<= 8.0), zero pages on main before 9.0
    main = MainChannelWriter(cfg.page_size)
    main.header()
    main.section_start([(cfg.ramblock, cfg.ram_pages * cfg.page_size)])
    yield -1, main.take()
    for ch in range(cfg.channels):
        yield emit(ch, "init", wire.pack_init(ch, cfg.uuid), channel_id=ch)

    def sync_round(flush: bool):
        nonlocal packet_num
        for ch in range(cfg.channels):
            alloc = 0 if prof.sync_pages_alloc_zero else count
            data = wire.pack_ram(flags=wire.FLAG_SYNC, page_size=cfg.page_size,
                                 packet_num=packet_num, pages_alloc=alloc, next_packet_size=0)
            yield emit(ch, "sync", data, packet_num=packet_num, normal_pages=0, zero_pages=0)
            packet_num += 1
        if flush:
            main.multifd_flush()

    def end_of_section():
        main.eos()
        return -1, main.take()

    yield from sync_round(prof.per_round_sync)
    yield end_of_section()
    zero_map = [rng.random() < cfg.zero_share for _ in range(cfg.ram_pages)]
    channel = 0
    for _ in range(cfg.rounds):
        main.section_part()
        for first in range(0, cfg.ram_pages, count):
            idx = range(first, min(first + count, cfg.ram_pages))
            normal = [i for i in idx if not zero_map[i]]
            zero = [i for i in idx if zero_map[i]]
            if not prof.zero_pages:  # legacy zero-page detection: on the main channel
                for i in zero:
                    main.zero_page(cfg.ramblock, i * cfg.page_size)
                zero = []
            if not normal and not zero:
                continue
            pages = [fixed_page if cfg.fast_pages else _page(cfg.seed, i, cfg.page_size)
                     for i in normal]
            raw = b"".join(pages)
            ch = channel
            channel = (channel + 1) % cfg.channels
            if comp == wire.Compression.NONE:
                payload, flags = raw, 0
            elif not normal:  # QEMU sets the method bit but runs no compressor
                payload, flags = b"", int(comp)
            else:
                payload, flags = compressors[ch](raw), int(comp)
            offsets = [i * cfg.page_size for i in normal + zero]
            hdr = wire.pack_ram(flags=flags, page_size=cfg.page_size, packet_num=packet_num,
                                ramblock=block, offsets=offsets, normal_pages=len(normal),
                                zero_pages=len(zero), next_packet_size=len(payload))
            yield emit(ch, "ram", hdr + payload, packet_num=packet_num,
                       normal_pages=len(normal), zero_pages=len(zero), payload_len=len(payload))
            packet_num += 1
        yield from sync_round(prof.per_round_sync)
        yield end_of_section()
    if prof.switchover_start:
        main.switchover_start()
    main.section_end()
    if cfg.devices and prof.device_state:
        # device buffers interleave device by device, round robin over channels
        queues = [[(idstr, inst, idx, nbuf, size) for idx in range(nbuf + 1)]
                  for idstr, inst, nbuf, size in cfg.devices]
        while any(queues):
            for q in queues:
                if not q:
                    continue
                idstr, inst, idx, nbuf, size = q.pop(0)
                is_config = idx == nbuf
                body = (wire.pack_vfio_buffer(idx, wire.VFIO_DEVICE_STATE_CONFIG_STATE,
                                              _config_blob(rng)) if is_config
                        else wire.pack_vfio_buffer(idx, 0, rng.randbytes(size)))
                hdr = wire.pack_device_state(idstr=idstr.encode(), instance_id=inst,
                                             next_packet_size=len(body))
                ch = channel
                channel = (channel + 1) % cfg.channels
                yield emit(ch, "device_state", hdr + body, idstr=idstr, instance_id=inst,
                           vfio_idx=idx, vfio_flags=int(is_config),
                           next_packet_size=len(body))
    if prof.final_sync or not prof.per_round_sync:
        yield from sync_round(prof.final_flush)
    main.eos()
    main.eof()
    yield -1, main.take()
    return truth


def build(cfg: SynthConfig) -> tuple[bytes, list[bytes], Truth]:
    """The main stream, each channel's stream, and the truth, all in memory."""
    main = bytearray()
    chans = [bytearray() for _ in range(cfg.channels)]
    truth = _run(cfg, lambda ch, data: (main if ch < 0 else chans[ch]).extend(data))
    return bytes(main), [bytes(c) for c in chans], truth


def _run(cfg: SynthConfig, on_chunk) -> Truth:
    """Drive `generate`, handing each ``(channel, data)`` to ``on_chunk``."""
    gen = generate(cfg)
    while True:
        try:
            ch, data = next(gen)
        except StopIteration as stop:
            return stop.value
        on_chunk(ch, data)


def tcp_flows(main: bytes, channels: list[bytes], *, segment_size: int = 1448,
              dt: float = 1e-5) -> list:
    """Editable TCP conversations (`capture.pcapwriter.TcpFlowWriter`), one per
    channel (index = channel id) plus the main one last, for tests to damage and
    write; `write_capture` is the streaming path for big captures."""
    from .capture import pcapwriter as pw

    flows = []
    for i, data in enumerate([*channels, main]):
        f = pw.TcpFlowWriter(client=("192.0.2.1", 40000 + i), server=("192.0.2.2", 4444),
                             t0=1000.0 + i * 1e-4, dt=dt)
        f.handshake().send(data, segment_size=segment_size, ack_every=8).close()
        flows.append(f)
    return flows


def _page(seed: int, index: int, page_size: int) -> bytes:
    return random.Random(seed * 1_000_003 + index).randbytes(page_size)


def _config_blob(rng: random.Random) -> bytes:
    return (wire.OFFSET.pack(wire.VFIO_MIG_FLAG_DEV_CONFIG_STATE) + rng.randbytes(64)
            + wire.OFFSET.pack(wire.VFIO_MIG_FLAG_END_OF_STATE))


def write_capture(fileobj, cfg: SynthConfig, *, segment_size: int = 65483,
                  dt: float = 1e-5, port: int = 4444, linktype: int | None = None) -> Truth:
    """Write the synthetic migration as a pcap, streaming (constant memory).

    Each channel and the main channel is its own TCP connection from 127.0.0.1,
    opened with a handshake, closed with FIN; data is cut into ``segment_size``
    segments (65,483 is what loopback GSO gives, 1448 a real NIC).
    """
    from .capture import pcapwriter as pw

    lt = pw.LINKTYPE_ETHERNET if linktype is None else linktype
    writer = pw.PcapWriter(fileobj, linktype=lt)
    clock = [1_700_000_000.0]
    seqs = {}

    def frame(flow: int, c2s: bool, flags: str, payload=b""):
        cport = 50000 + flow
        seq, ack = seqs[flow][c2s], seqs[flow][not c2s]
        src, dst, sp, dp = (("127.0.0.1", "127.0.0.1", cport, port) if c2s else
                            ("127.0.0.1", "127.0.0.1", port, cport))
        writer.write_frame(clock[0], pw.tcp_frame(src, dst, sp, dp, seq, ack, flags, payload,
                                                  linktype=lt))
        seqs[flow][c2s] = seq + len(payload) + (1 if set(flags) & {"S", "F"} else 0)
        clock[0] += dt

    def open_flow(flow: int):
        seqs[flow] = {True: 1000 * (flow + 1), False: 7000 * (flow + 1)}
        frame(flow, True, "S")
        frame(flow, False, "SA")
        frame(flow, True, "A")

    main = cfg.channels  # the main connection's flow number

    def send(ch: int, data: bytes) -> None:
        flow = main if ch < 0 else ch
        if flow not in seqs:
            open_flow(flow)
        view = memoryview(data)
        for start in range(0, len(view), segment_size):
            frame(flow, True, "PA", view[start:start + segment_size])

    truth = _run(cfg, send)
    for flow in sorted(seqs):
        frame(flow, True, "FA")
        frame(flow, False, "FA")
        frame(flow, True, "A")
    return truth
