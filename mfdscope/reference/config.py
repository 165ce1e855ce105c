"""Configuration shared by the reference sender and receiver.

Both ends of a migration must be configured alike, as with QEMU (same
``multifd-channels``, compression, guest RAM layout, devices).  `MigrationConfig`
holds those settings; `Behaviour` turns a QEMU version into the switches that
change what goes on the wire.  `wire.profile()` groups versions into ranges
(<=8.0, 8.1-9.2, 10.x); a few rules change inside the 8.1-9.2 range (spec 4.5,
5.2, 7), so `Behaviour` keeps the exact version too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict

from .. import wire

DEFAULT_BLOCK = "pc.ram"
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgKMG]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class ConfigError(ValueError):
    """A configuration mistake, reported as one line."""


def parse_size(text: str | int) -> int:
    """``"64M"`` / ``"512k"`` / ``"1G"`` / ``4096`` -> bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"bad size {text!r} (use e.g. 64M, 512K, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_blocks(text: str) -> tuple[tuple[str, int], ...]:
    """``"64M"`` or ``"pc.ram=56M,vga.vram=8M"`` -> ((name, size), ...)."""
    blocks = []
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        if "=" in part:
            name, size = part.split("=", 1)
            name = name.strip()
        else:
            name, size = (DEFAULT_BLOCK if i == 0 else f"ram{i}"), part
        blocks.append((name, parse_size(size)))
    if not blocks:
        raise ConfigError("no RAM blocks given")
    return tuple(blocks)


def parse_devices(text: str | int) -> tuple[tuple[str, int], ...]:
    """``2`` -> two VFIO-like devices; ``"a/vfio:0,b/vfio:1"`` -> explicit (idstr, instance)."""
    if isinstance(text, int) or str(text).strip().isdigit():
        return default_devices(int(text))
    devices = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        idstr, _, inst = part.rpartition(":")
        if not idstr or not inst.isdigit():
            idstr, inst = part, "0"
        devices.append((idstr, int(inst)))
    return tuple(devices)


def default_devices(n: int) -> tuple[tuple[str, int], ...]:
    """SaveStateEntry-style idstrs of ``n`` VFIO PCI functions (spec 2.4)."""
    return tuple((f"0000:00:{0x10 + i:02x}.0/vfio", 0) for i in range(n))


def parse_address(text: str) -> tuple[str, object]:
    """``HOST:PORT`` / ``tcp:HOST:PORT`` / ``unix:PATH``.

    Returns ``("tcp", (host, port))`` or ``("unix", path)``.
    """
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ConfigError(f"bad address {text!r}: unix: needs a path")
        return "unix", path
    if text.startswith("tcp:"):
        text = text[4:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"bad address {text!r} (use HOST:PORT or unix:PATH)")
    return "tcp", (host.strip("[]") or "127.0.0.1", int(port))


def format_address(kind: str, addr) -> str:
    return f"unix:{addr}" if kind == "unix" else f"{addr[0]}:{addr[1]}"


def parse_version(name: str) -> tuple[int, int]:
    try:
        return wire.parse_version(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class Behaviour:
    """What one QEMU version does on the wire, for both ends (spec 4.5, 5.1, 5.2, 6, 7)."""

    version: tuple[int, int]
    profile: wire.VersionProfile

    @property
    def per_round_sync(self) -> bool:  # 8.1+: SYNC + MULTIFD_FLUSH per dirty-scan round
        return self.profile.per_round_sync

    @property
    def legacy_send(self) -> bool:  # <= 8.2 multifd_send_pages()/p->flags model (5.1)
        return self.profile.legacy_send

    @property
    def multifd_zero_pages(self) -> bool:  # 9.0+: zero_pages in packets; else on main
        return self.profile.zero_pages

    @property
    def clears_packet(self) -> bool:  # 9.2+: packet buffer cleared, SYNC pages_alloc 0
        return self.profile.sync_pages_alloc_zero

    @property
    def final_sync(self) -> bool:  # 8.1-9.2 per-round: extra SYNC in ram_save_complete
        return self.profile.final_sync

    @property
    def final_flush(self) -> bool:  # ... with a MULTIFD_FLUSH only before 9.1
        return self.profile.final_flush

    @property
    def device_state(self) -> bool:
        return self.profile.device_state

    @property
    def switchover_start(self) -> bool:
        return self.profile.switchover_start

    @property
    def peek_classify(self) -> bool:  # 8.0+: destination peeks the magic (1.4)
        return self.profile.peek_classify

    @property
    def counts_at_enqueue(self) -> bool:  # <= 8.0 multifd_bytes rule (6.2)
        return self.profile.accounting == wire.AccountingRule.ENQUEUE

    @property
    def zero_copy_header_separate(self) -> bool:  # 10.0: header accounted on its own (6.1)
        return self.profile.zero_copy_header_separate


def behaviour(name: str) -> Behaviour:
    version = parse_version(name)
    try:
        prof = wire.profile(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Behaviour(version, prof)


@dataclass
class MigrationConfig:
    """Settings both ends must agree on, plus the sender's workload."""

    channels: int = 2
    blocks: tuple[tuple[str, int], ...] = ((DEFAULT_BLOCK, 64 << 20),)
    page_size: int = wire.DEFAULT_PAGE_SIZE
    compression: str = "none"
    profile: str = "10.0"
    devices: tuple[tuple[str, int], ...] = ()
    buffers_per_device: int = 4
    buffer_size: int = 256 << 10
    iterations: int = 2  # dirtying rounds after the bulk pass (the last one at switchover)
    zero_share: float = 0.25
    random_share: float = 0.5  # of the non-zero pages; the rest is compressible
    dirty_share: float = 0.25
    seed: int = 0
    zero_copy: bool = False
    uuid: bytes = field(default=bytes(16))

    def __post_init__(self):
        if isinstance(self.blocks, str):
            self.blocks = parse_blocks(self.blocks)
        if isinstance(self.devices, (str, int)):
            self.devices = parse_devices(self.devices)
        self.blocks = tuple((str(n), int(s)) for n, s in self.blocks)
        self.devices = tuple((str(i), int(n)) for i, n in self.devices)
        if isinstance(self.uuid, str):
            self.uuid = bytes.fromhex(self.uuid.replace("-", ""))

    @property
    def behaviour(self) -> Behaviour:
        return behaviour(self.profile)

    @property
    def method(self) -> wire.Compression:
        try:
            return wire.Compression.from_label(self.compression)
        except KeyError:
            raise ConfigError(f"unknown compression {self.compression!r}") from None

    def validate(self) -> None:
        """Refuse what QEMU refuses, with a one-line reason."""
        b = self.behaviour
        if not 1 <= self.channels <= 255:
            raise ConfigError(f"--channels {self.channels}: must be 1..255 (the id is a u8)")
        if self.page_size not in wire.SUPPORTED_PAGE_SIZES:
            raise ConfigError(f"unsupported page size {self.page_size}")
        if self.method not in (wire.Compression.NONE, wire.Compression.ZLIB,
                               wire.Compression.ZSTD):
            raise ConfigError(f"compression {self.compression!r} is not implemented "
                              "(none, zlib, zstd)")
        seen = set()
        for name, size in self.blocks:
            if not name or len(name.encode()) > 255:
                raise ConfigError(f"bad RAM block name {name!r}")
            if name in seen:
                raise ConfigError(f"duplicate RAM block {name!r}")
            seen.add(name)
            if size <= 0 or size % self.page_size:
                raise ConfigError(f"RAM block {name}: size {size} is not a positive multiple "
                                  f"of the page size {self.page_size}")
        if self.devices:
            if not b.device_state:
                raise ConfigError(f"device state over multifd needs QEMU 10.0+ "
                                  f"(profile {self.profile})")
            if self.method != wire.Compression.NONE:
                raise ConfigError("device state over multifd needs multifd-compression none")
            if len({d for d in self.devices}) != len(self.devices):
                raise ConfigError("duplicate device (idstr, instance id)")
            for idstr, _ in self.devices:
                if len(idstr.encode()) > 255:
                    raise ConfigError(f"device idstr too long: {idstr!r}")
            if self.buffers_per_device < 0 or not 0 < self.buffer_size <= (1 << 20):
                raise ConfigError("--buffer-size must be 1..1M (VFIO data_buffer_size)")
        if self.zero_copy and self.method != wire.Compression.NONE:
            raise ConfigError("Zero copy only available for non-compressed non-TLS multifd "
                              "migration")
        if self.iterations < 0:
            raise ConfigError("--iterations must be >= 0")
        if len(self.uuid) != 16:
            raise ConfigError("uuid must be 16 bytes")

    def to_json(self) -> dict:
        d = asdict(self)
        d["blocks"] = [{"name": n, "size": s} for n, s in self.blocks]
        d["devices"] = [{"idstr": i, "instance_id": n} for i, n in self.devices]
        d["uuid"] = self.uuid.hex()
        return d
