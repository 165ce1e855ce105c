"""Helpers for the reference sender/receiver tests: real sockets on loopback."""
from __future__ import annotations

import socket


from mfdscope import wire
from mfdscope.reference import MigrationConfig, Receiver
from mfdscope.reference.mainchannel import MainChannelWriter

PS = wire.DEFAULT_PAGE_SIZE
BLOCK = "pc.ram"
BLOCK_SIZE = 1 << 20


def small_config(**kw) -> MigrationConfig:
    kw.setdefault("channels", 1)
    kw.setdefault("blocks", ((BLOCK, BLOCK_SIZE),))
    return MigrationConfig(**kw)


def main_stream(cfg: MigrationConfig, *, complete: bool = True) -> bytes:
    """A valid main channel without any SYNC pairing (no MULTIFD_FLUSH)."""
    w = MainChannelWriter(cfg.page_size)
    w.header()
    w.section_start(cfg.blocks)
    w.eos()
    if complete:
        if cfg.behaviour.switchover_start:
            w.switchover_start()
        w.section_end()
        w.eos()
        w.eof()
    return w.take()


def ram_packet(offsets, pages: bytes | None = None, *, page_size: int = PS, packet_num=0,
               block: str = BLOCK, flags: int = 0, zero: int = 0, **kw) -> bytes:
    normal = len(offsets) - zero
    pages = pages if pages is not None else bytes(normal * page_size)
    return wire.pack_ram(flags=flags, page_size=page_size, packet_num=packet_num,
                         ramblock=block.encode(), offsets=list(offsets), normal_pages=normal,
                         zero_pages=zero, **kw) + pages


def ds_packet(idx: int, data: bytes = b"x" * 100, *, idstr: str = "0000:00:10.0/vfio",
              instance_id: int = 0, vfio_flags: int = 0, flags: int = wire.FLAG_DEVICE_STATE
              ) -> bytes:
    body = wire.pack_vfio_buffer(idx, vfio_flags, data)
    return wire.pack_device_state(idstr=idstr.encode(), instance_id=instance_id,
                                  next_packet_size=len(body), flags=flags) + body


def config_buffer_data(blob: bytes = b"cfg" * 10) -> bytes:
    return (wire.OFFSET.pack(wire.VFIO_MIG_FLAG_DEV_CONFIG_STATE) + blob
            + wire.OFFSET.pack(wire.VFIO_MIG_FLAG_END_OF_STATE))


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the receiver may already have rejected and closed
        pass


def craft(cfg: MigrationConfig, main: bytes, channels: list[bytes], *,
          channels_first: bool = False, close_main: bool = True, timeout: float = 10.0) -> dict:
    """Run a Receiver and feed it hand-made streams over raw loopback sockets.

    ``close_main=False`` keeps the main channel open until the receiver is done, so
    that its end cannot be the first error seen.
    """
    rx = Receiver(cfg, "127.0.0.1:0", timeout=timeout).start()
    host, port = rx.address.rsplit(":", 1)
    socks = []

    def connect():
        s = socket.create_connection((host, int(port)))
        socks.append(s)
        return s

    try:
        order = ["ch"] * len(channels)
        order = order + ["main"] if channels_first else ["main"] + order
        chans = iter(channels)
        for what in order:
            s = connect()
            if what == "main":
                _send(s, main)
                if close_main:
                    s.shutdown(socket.SHUT_WR)
            else:
                _send(s, next(chans))
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        report = rx.join(timeout + 10)
    finally:
        for s in socks:
            s.close()
    assert report is not None, "receiver did not finish"
    return report


