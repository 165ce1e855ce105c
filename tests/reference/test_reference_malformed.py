"""Hand-made streams fed to the reference receiver over raw sockets.

Each malformed record is rejected with QEMU's message (spec 5.6); the valid
records before it stay in the report (records and RAM image).
"""
from __future__ import annotations

import hashlib

import pytest

from mfdscope import wire
from mfdscope.reference.receiver import Receiver

from reference_helpers import (BLOCK, BLOCK_SIZE, PS, config_buffer_data, craft, ds_packet,
                       main_stream, ram_packet, small_config)

PAGE = bytes(range(256)) * (PS // 256)
DEV = "0000:00:10.0/vfio"


def good_prefix(channel_id: int = 0) -> bytes:
    """Initial packet + one valid RAM packet writing PAGE at offset 0."""
    return wire.pack_init(channel_id) + ram_packet([0], PAGE, packet_num=0)


def image_with_good_page() -> str:
    img = bytearray(BLOCK_SIZE)
    img[:PS] = PAGE
    return hashlib.sha256(img).hexdigest()


def assert_rejected(report: dict, message: str, *, kept: bool = True) -> None:
    assert not report["ok"]
    assert message in report["error"], report["errors"]
    if kept:  # nothing received before the bad record is lost
        recs = report["records"][0]
        assert [r["kind"] for r in recs[:2]] == ["init", "ram"]
        assert recs[1]["normal_pages"] == 1
        assert report["blocks"][0]["sha256"] == image_with_good_page()


def run(channel: bytes, *, close_main=False, **cfg) -> dict:
    cfg = small_config(**cfg)
    return craft(cfg, main_stream(cfg, complete=False), [channel], close_main=close_main)


def test_valid_crafted_stream_is_accepted():
    cfg = small_config(devices=1, buffers_per_device=0)
    ch = good_prefix() + ds_packet(0, config_buffer_data(), vfio_flags=1)
    report = craft(cfg, main_stream(cfg), [ch])
    assert report["ok"], report["errors"]
    assert report["blocks"][0]["sha256"] == image_with_good_page()
    assert report["devices"][0]["complete"]


def test_bad_initial_magic():
    bad = bytearray(wire.pack_init(0))
    bad[3] = 0x45
    report = run(bytes(bad))
    assert_rejected(report, "multifd: received packet magic 11223345 expected 11223344",
                    kept=False)
    assert report["error"].startswith("failed to receive packet via multifd channel 0: ")


def test_bad_initial_version():
    bad = wire.INIT.pack(magic=wire.MULTIFD_MAGIC, version=2, id=0)
    assert_rejected(run(bad), "multifd: received packet version 2 expected 1", kept=False)


def test_bad_packet_header_magic():
    bad = bytearray(ram_packet([PS], PAGE))
    bad[0] = 0x12
    assert_rejected(run(good_prefix() + bytes(bad)),
                    "multifd: received packet magic 12223344, expected 11223344")


def test_bad_packet_header_version():
    bad = bytearray(ram_packet([PS], PAGE))
    bad[7] = 9
    assert_rejected(run(good_prefix() + bytes(bad)),
                    "multifd: received packet version 9, expected 1")


def test_too_many_pages():
    count = wire.page_count(PS)
    offsets = [i * PS for i in range(count)]
    hdr = wire.pack_ram(flags=0, page_size=PS, packet_num=1, ramblock=BLOCK.encode(),
                        offsets=offsets, normal_pages=count + 1)
    assert_rejected(run(good_prefix() + hdr + bytes((count + 1) * PS)),
                    f"multifd: received packet with {count + 1} non-zero pages, which "
                    f"exceeds maximum expected pages {count}")


def test_pages_alloc_too_large():
    pkt = ram_packet([PS], PAGE, pages_alloc=200)
    assert_rejected(run(good_prefix() + pkt),
                    f"multifd: received packet with 200 pages, expected {wire.page_count(PS)}")


def test_unknown_ramblock():
    assert_rejected(run(good_prefix() + ram_packet([PS], PAGE, block="nosuch.ram")),
                    "multifd: unknown ram block nosuch.ram")


def test_offset_beyond_block():
    assert_rejected(run(good_prefix() + ram_packet([BLOCK_SIZE], PAGE)),
                    f"multifd: offset too long {BLOCK_SIZE} (max {BLOCK_SIZE:x})")


def test_zero_page_offset_beyond_block():
    pkt = ram_packet([BLOCK_SIZE + PS], b"", zero=1)
    assert_rejected(run(good_prefix() + pkt),
                    f"multifd: offset too long {BLOCK_SIZE + PS} (max {BLOCK_SIZE:x})")


def test_compression_flags_mismatch():
    import zlib

    comp = zlib.compressobj(1)
    data = comp.compress(PAGE) + comp.flush(zlib.Z_SYNC_FLUSH)
    pkt = ram_packet([PS], data, flags=int(wire.Compression.ZLIB), next_packet_size=len(data))
    assert_rejected(run(good_prefix() + pkt), "multifd 0: flags received 2 flags expected 0")


def test_sync_on_device_state():
    pkt = ds_packet(0, flags=wire.FLAG_DEVICE_STATE | wire.FLAG_SYNC)
    assert_rejected(run(good_prefix() + pkt, devices=1),
                    "multifd: received SYNC device state packet")


def test_empty_device_state():
    pkt = wire.pack_device_state(idstr=DEV.encode(), instance_id=0, next_packet_size=0)
    assert_rejected(run(good_prefix() + pkt, devices=1),
                    "multifd: received empty device state packet")


def test_idstr_without_nul():
    body = wire.pack_vfio_buffer(0, 0, b"x" * 64)
    pkt = wire.DEVICE_STATE.pack(magic=wire.MULTIFD_MAGIC, version=wire.MULTIFD_VERSION,
                                 flags=wire.FLAG_DEVICE_STATE, idstr=b"A" * 256,
                                 instance_id=0, next_packet_size=len(body)) + body
    assert_rejected(run(good_prefix() + pkt, devices=1),
                    "unterminated multifd device state idstr")


def test_unknown_device():
    pkt = ds_packet(0, idstr="0000:00:1f.0/vfio", instance_id=3)
    assert_rejected(run(good_prefix() + pkt, devices=1),
                    "Unknown idstr 0000:00:1f.0/vfio or instance id 3 for load state buffer")


def test_device_state_without_device_state_profile():
    """<= 9.2 knows no device state: no device can take the buffer."""
    pkt = ds_packet(0)
    assert_rejected(run(good_prefix() + pkt, profile="9.2"),
                    f"Unknown idstr {DEV} or instance id 0 for load state buffer")


def test_vfio_duplicate_idx():
    pkt = ds_packet(1) + ds_packet(1)
    assert_rejected(run(good_prefix() + pkt, devices=1), f"{DEV}: state buffer 1 already filled")


def test_vfio_bad_config_marker():
    pkt = ds_packet(0, b"\0" * 24, vfio_flags=1)
    assert_rejected(run(good_prefix() + pkt, devices=1),
                    f"{DEV}: expected FLAG_DEV_CONFIG_STATE but got 0")


def test_channel_id_out_of_range():
    report = run(wire.pack_init(5))
    assert_rejected(report, "multifd: received channel id 5 is greater than number of "
                            "channels 1", kept=False)


def test_channel_id_equal_to_n_is_rejected_too():
    """QEMU lets id == N slip through (spec 9.12); the reference receiver does not."""
    assert_rejected(run(wire.pack_init(1)), "multifd: received channel id 1 is greater "
                                           "than number of channels 1", kept=False)


def test_duplicate_channel_id():
    cfg = small_config(channels=2)
    report = craft(cfg, main_stream(cfg, complete=False),
                   [good_prefix(0), wire.pack_init(0)], close_main=False)
    assert_rejected(report, "multifd: received id '0' already setup'", kept=False)


def test_uuid_mismatch():
    cfg = small_config(uuid=bytes(range(16)))
    report = craft(cfg, main_stream(cfg, complete=False), [wire.pack_init(0)],
                   close_main=False)
    assert_rejected(report, "multifd: received uuid '00000000-0000-0000-0000-000000000000' "
                            "and expected uuid '00010203-0405-0607-0809-0a0b0c0d0e0f' for "
                            "channel 0", kept=False)


def test_eof_after_header():
    report = run(good_prefix() + ram_packet([PS], PAGE)[:100])
    assert_rejected(report, "multifd: unexpected EOF after packet header")


def test_main_channel_not_a_migration_stream():
    cfg = small_config()
    report = craft(cfg, b"QEVX\0\0\0\3", [good_prefix()], channels_first=True)
    # 8.0+ peeks: "QEVX" is not QEVM, so it is taken as a multifd channel
    assert not report["ok"]


def test_main_length_mismatch():
    cfg = small_config()
    other = small_config(blocks=((BLOCK, 2 * BLOCK_SIZE),))
    report = craft(cfg, main_stream(other), [good_prefix()])
    assert_rejected(report, f"Length mismatch: {BLOCK}: 0x{2 * BLOCK_SIZE:x} in != "
                            f"0x{BLOCK_SIZE:x}", kept=False)


def test_flush_unknown_to_7_2():
    cfg = small_config(profile="7.2")
    w_cfg = small_config(profile="10.0")
    from mfdscope.reference.mainchannel import MainChannelWriter

    w = MainChannelWriter(PS)
    w.header()
    w.section_start(w_cfg.blocks)
    w.multifd_flush()
    report = craft(cfg, w.take(), [good_prefix()], close_main=False)
    assert_rejected(report, "Unknown combination of migration flags: 0x200", kept=False)


def test_peek_classifies_channel_connected_before_main():
    """8.0+: the magic decides, not the accept order (spec 1.4)."""
    cfg = small_config()
    report = craft(cfg, main_stream(cfg), [good_prefix()], channels_first=True)
    assert report["ok"], report["errors"]
    assert report["connections"][0]["accept_index"] == 0


def test_legacy_first_connection_is_main():
    """<= 7.2: the first accepted connection is the main channel, whatever it holds."""
    cfg = small_config(profile="7.2")
    report = craft(cfg, main_stream(cfg), [good_prefix()], channels_first=True)
    # the real main connection became "multifd channel" 0 and fails its initial packet
    # (the main thread waits for all channels, so this error always comes first)
    assert_rejected(report, "multifd: received packet magic 5145564d expected 11223344",
                    kept=False)


def test_reorder_buffer_on_one_channel():
    """Buffers arriving in reverse idx order are held and loaded in idx order."""
    cfg = small_config(devices=1, buffers_per_device=3)
    data = [bytes([i]) * (1000 + i) for i in range(3)]
    ch = (wire.pack_init(0) + ds_packet(3, config_buffer_data(), vfio_flags=1)
          + ds_packet(2, data[2]) + ds_packet(1, data[1]) + ds_packet(0, data[0]))
    report = craft(cfg, main_stream(cfg), [ch])
    assert report["ok"], report["errors"]
    dev = report["devices"][0]
    assert dev["arrival_order"] == [3, 2, 1, 0] and dev["out_of_order"]
    assert dev["max_reorder_depth"] == 3 and report["max_reorder_depth"] == 3
    assert dev["complete"] and dev["loaded"] == 4
    expect = hashlib.sha256(b"".join(data) + config_buffer_data()).hexdigest()
    assert dev["sha256"] == expect


def test_reorder_across_channels():
    cfg = small_config(channels=2, devices=1, buffers_per_device=2)
    data = [b"a" * 500, b"b" * 700]
    ch0 = wire.pack_init(0) + ds_packet(1, data[1])
    ch1 = wire.pack_init(1) + ds_packet(2, config_buffer_data(), vfio_flags=1) + \
        ds_packet(0, data[0])
    report = craft(cfg, main_stream(cfg), [ch0, ch1])
    assert report["ok"], report["errors"]
    dev = report["devices"][0]
    assert dev["complete"] and dev["channels"] == [0, 1]
    assert dev["sha256"] == hashlib.sha256(b"".join(data) + config_buffer_data()).hexdigest()


def test_connection_timeout_is_reported():
    cfg = small_config(channels=2)
    rx = Receiver(cfg, "127.0.0.1:0", timeout=0.5).start()
    report = rx.join(10)
    assert report is not None and not report["ok"]
    assert "timed out" in report["error"]


@pytest.mark.parametrize("profile", ["7.2", "9.2", "10.0"])
def test_sync_blocks_until_flush(profile):
    """A channel that reads SYNC stops until the main thread saw the matching
    FLUSH (EOS in 7.2): page 0 is rewritten after the barrier and must win."""
    from mfdscope.reference.mainchannel import MainChannelWriter

    cfg = small_config(channels=2, profile=profile)
    beh = cfg.behaviour
    page2 = bytes(reversed(PAGE))
    sync = wire.pack_ram(flags=wire.FLAG_SYNC, page_size=PS, packet_num=9,
                         pages_alloc=0 if profile != "7.2" else wire.page_count(PS),
                         next_packet_size=0)
    # round 1: channel 0 writes PAGE at 0; round 2: channel 1 writes page2 at 0
    ch0 = wire.pack_init(0) + ram_packet([0], PAGE) + sync + sync
    ch1 = wire.pack_init(1) + sync + ram_packet([0], page2, packet_num=3) + sync
    w = MainChannelWriter(PS)
    w.header()
    w.section_start(cfg.blocks)
    if beh.per_round_sync:
        w.multifd_flush()
    w.eos()
    w.section_part()
    if beh.per_round_sync:
        w.multifd_flush()
    w.eos()
    if beh.switchover_start:
        w.switchover_start()
    w.section_end()
    w.eos()
    if not beh.per_round_sync:  # legacy: every EOS is a sync point, so a third round
        ch0 += sync
        ch1 += sync
    w.eof()
    report = craft(cfg, w.take(), [ch0, ch1])
    assert report["ok"], report["errors"]
    img = bytearray(BLOCK_SIZE)
    img[:PS] = page2
    assert report["blocks"][0]["sha256"] == hashlib.sha256(img).hexdigest()
    assert report["sync_rounds"] == (2 if beh.per_round_sync else 3)


def test_channel_ending_before_its_sync_fails_cleanly():
    from mfdscope.reference.mainchannel import MainChannelWriter

    cfg = small_config(channels=1)
    w = MainChannelWriter(PS)
    w.header()
    w.section_start(cfg.blocks)
    w.multifd_flush()
    report = craft(cfg, w.take(), [good_prefix()], close_main=False)
    assert_rejected(report, "multifd 0: stream ended before the SYNC")
