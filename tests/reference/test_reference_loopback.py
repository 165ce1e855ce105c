"""Reference sender -> reference receiver over real loopback sockets."""
from __future__ import annotations

from collections import Counter

import pytest

from mfdscope import wire
from mfdscope.reference import run_loopback

PROFILES = ("7.2", "9.2", "10.0")
COMPRESSIONS = ("none", "zlib", "zstd")
_RUNS: dict = {}


def loopback(profile: str, compression: str, transport: str = "tcp", **kw):
    key = (profile, compression, transport, tuple(sorted(kw.items())))
    if key not in _RUNS:
        opts = dict(channels=4, ram_size="8M", iterations=2, dirty_share=0.3, seed=7)
        opts.update(kw)
        _RUNS[key] = run_loopback(profile=profile, compression=compression,
                                  transport=transport, **opts)
    return _RUNS[key]


def assert_same(truth: dict, report: dict) -> None:
    assert truth["error"] is None, truth["error"]
    assert report["ok"], report["errors"]
    cmp = report["comparison"]
    assert cmp["equal"], cmp
    assert [b["sha256"] for b in truth["blocks"]] == [b["sha256"] for b in report["blocks"]]
    assert truth["channel_bytes"] == report["channel_bytes"]
    assert [len(r) for r in truth["records"]] == [len(r) for r in report["records"]]
    assert truth["main_bytes"] == report["main_bytes"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_roundtrip(profile, compression):
    truth, report = loopback(profile, compression)
    assert_same(truth, report)
    kinds = Counter(r["kind"] for recs in truth["records"] for r in recs)
    assert kinds["init"] == 4 and kinds["ram"] > 0 and kinds["sync"] >= 4
    zero = sum(r["zero_pages"] for recs in truth["records"] for r in recs if r["kind"] != "init")
    if profile == "7.2":  # legacy zero-page detection: zero pages on the main channel
        assert zero == 0 and truth["main_records"]["zero"] > 0
        assert report["main_records"]["zero"] == truth["main_records"]["zero"]
    else:
        assert zero > 0 and truth["main_records"]["zero"] == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_unix_socket(profile):
    truth, report = loopback(profile, "zstd" if profile == "7.2" else "none", "unix")
    assert_same(truth, report)
    assert report["address"].startswith("unix:")


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_multifd_bytes_formula(profile, compression):
    """multifd_bytes as the version counts it (spec 6), recomputed from the records."""
    truth, _ = loopback(profile, compression)
    ps, plen = truth["page_size"], truth["packet_len"]
    assert plen == wire.packet_len(ps)
    recs = [r for chan in truth["records"] for r in chan]
    if profile == "7.2":
        # <= 8.0: at enqueue, normal_pages x page_size + packet_len per packet, no init
        expected = sum(r["normal_pages"] * ps + plen for r in recs if r["kind"] != "init")
        assert expected == truth["multifd_bytes"]
        if compression == "none":
            assert truth["multifd_bytes"] == sum(truth["channel_bytes"]) - 64 * 4
    else:
        # 8.1+: every byte written, 64 per initial packet (spec 6.1 identity)
        n = Counter(r["kind"] for r in recs)
        expected = (64 * n["init"] + (n["ram"] + n["sync"]) * plen
                    + sum(r["payload_len"] for r in recs if r["kind"] == "ram")
                    + sum(276 + r["next_packet_size"] for r in recs
                          if r["kind"] == "device_state"))
        assert expected == truth["multifd_bytes"] == sum(truth["channel_bytes"])


def test_sync_contents_by_profile():
    """SYNC packets: 9.2+ pages_alloc 0; <= 8.2 pages_alloc = page_count (spec 4.5)."""
    count = wire.page_count(wire.DEFAULT_PAGE_SIZE)
    for profile, alloc in (("7.2", count), ("9.2", 0), ("10.0", 0)):
        truth, report = loopback(profile, "none")
        syncs = [r for chan in report["records"] for r in chan if r["kind"] == "sync"]
        assert syncs and all(r["pages_alloc"] == alloc for r in syncs
                             if r["normal_pages"] == 0)
        # 9.0+: dedicated SYNC packets carry nothing but the flag
        if profile != "7.2":
            assert all(r["flags"] == wire.FLAG_SYNC and r["normal_pages"] == 0 for r in syncs)


def test_sync_rounds_pair_with_main_channel():
    """Per-round mode: one MULTIFD_FLUSH per SYNC round (9.2: final SYNC without FLUSH);
    legacy 7.2: one EOS per SYNC round (spec 5.2)."""
    for profile in PROFILES:
        truth, report = loopback(profile, "none")
        main = truth["main_records"]
        per_channel = [sum(1 for r in chan if r["kind"] == "sync") for chan in truth["records"]]
        assert len(set(per_channel)) == 1
        rounds = per_channel[0]
        assert rounds == truth["sync_rounds"]
        if profile == "7.2":
            assert main["flush"] == 0 and main["eos"] == rounds
        elif profile == "9.2":
            assert main["flush"] == rounds - 1
        else:
            assert main["flush"] == rounds
        assert report["sync_rounds"] == (main["eos"] if profile == "7.2" else main["flush"])


def test_legacy_sync_piggyback_and_stale_fields():
    """7.2: SYNC can ride on a data packet, followed by an empty packet repeating its
    packet_num with a stale next_packet_size and no compression bit (spec 10)."""
    truth, report = loopback("7.2", "zlib", iterations=4, dirty_share=0.5)
    assert_same(truth, report)
    riders = empties = 0
    for chan in truth["records"]:
        for prev, rec in zip(chan, chan[1:]):
            if rec["kind"] == "ram" and rec["normal_pages"] == 0:
                empties += 1
                assert prev["kind"] == "sync" and prev["normal_pages"] > 0
                assert rec["packet_num"] == prev["packet_num"]
                assert rec["flags"] == 0 and rec["next_packet_size"] > 0
            if rec["kind"] == "sync" and rec["normal_pages"]:
                riders += 1
    assert riders == empties
    # packet_num: strictly increasing per channel apart from the repeat (5.1)
    for chan in truth["records"]:
        nums = [r["packet_num"] for r in chan if r["kind"] != "init"]
        assert all(b >= a for a, b in zip(nums, nums[1:]))


def test_packet_num_global_and_unique_9x():
    for profile in ("9.2", "10.0"):
        truth, _ = loopback(profile, "none")
        nums = sorted(r["packet_num"] for chan in truth["records"] for r in chan
                      if r["kind"] in ("ram", "sync"))
        assert nums == list(range(len(nums)))


def test_zero_copy_same_wire_same_total():
    truth, report = loopback("10.0", "none", zero_copy=True)
    assert_same(truth, report)
    assert any(r.get("zero_copy") for chan in truth["records"] for r in chan)
    assert truth["multifd_bytes"] == sum(truth["channel_bytes"])


def test_several_ram_blocks_and_page_size():
    truth, report = loopback("10.0", "zstd", ram_size="pc.ram=4M,vga.vram=1M,rom=64K",
                             page_size=16384)
    assert_same(truth, report)
    assert [b["name"] for b in report["blocks"]] == ["pc.ram", "vga.vram", "rom"]
    # one RAM packet always refers to exactly one RAMBlock (5.3)
    blocks = {r["ramblock"] for chan in truth["records"] for r in chan if r["kind"] == "ram"}
    assert blocks == {"pc.ram", "vga.vram", "rom"}


def test_device_state_interleaves_across_channels():
    """10.0, 4 channels, 2 devices saving from their own threads during switchover."""
    out_of_order = False
    for attempt in range(3):
        truth, report = loopback("10.0", "none", ram_size="16M", dirty_share=0.5,
                                 devices=2, buffers_per_device=6, buffer_size=128 << 10,
                                 seed=attempt)
        assert_same(truth, report)
        assert all(d["complete"] for d in report["devices"])
        for dev in truth["devices"]:
            chans = {c for c, recs in enumerate(truth["records"]) for r in recs
                     if r["kind"] == "device_state" and r["idstr"] == dev["idstr"]}
            assert len(chans) > 1, f"{dev['idstr']} used only channel(s) {chans}"
        # device-state packets interleave with the last RAM packets across channels
        recs = sorted((r for chan in truth["records"] for r in chan), key=lambda r: r["t"])
        kinds = [r["kind"] for r in recs if r["kind"] in ("ram", "device_state")]
        first_ds = kinds.index("device_state")
        assert "ram" in kinds[first_ds:], "no RAM packet written after device state began"
        # and the two devices' packets interleave with each other
        ids = [r["idstr"] for r in recs if r["kind"] == "device_state"]
        assert any(a != b for a, b in zip(ids, ids[1:-1])) and len(set(ids)) == 2
        assert all(r["flags"] == wire.FLAG_DEVICE_STATE for chan in truth["records"]
                   for r in chan if r["kind"] == "device_state")
        out_of_order = any(d["out_of_order"] for d in report["devices"])
        if out_of_order:
            assert report["max_reorder_depth"] >= 1
            break
    assert out_of_order, "no device's buffers arrived out of idx order in 3 runs"
