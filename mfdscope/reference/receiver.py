"""Reference multifd receiver: QEMU's destination side over real sockets.

One more driver of `mfdscope.parse.ChannelParser` (``keep_payload=True``): each
multifd connection gets a thread that feeds the parser from ``recv()`` and applies
its events, validating them as QEMU does (spec 5.6) with QEMU's error texts.  The
main channel is parsed by the dissector's own `mfdscope.mainchannel.MainChannelParser`
(one decoder for both), asked for one event per page record.

Threads and barriers mirror ``migration/multifd.c``:

* connections are classified as the chosen version does (spec 1.4): <= 7.2 the
  first accepted connection is the main channel; 8.0+ peeks 4 bytes (MSG_PEEK)
  and ``QEVM`` means main, anything else multifd;
* a channel thread that reads a SYNC packet posts ``sem_sync`` (main) and blocks
  on its own ``sem_sync`` -- it stops reading its socket -- until the main thread
  runs ``multifd_recv_sync_main``: on ``RAM_SAVE_FLAG_MULTIFD_FLUSH`` in per-round
  mode, on ``RAM_SAVE_FLAG_EOS`` in legacy per-section mode (spec 5.2); that waits
  until every channel reached its SYNC, then releases them all;
* the main thread starts reading only when the main channel and all N multifd
  channels are present (``multifd_recv_all_channels_created``).

Any validation error records QEMU's message, shuts every socket down and wakes
every waiter; what was received until then stays in the report.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid as uuidlib

from .. import wire
from ..events import DeviceStatePacket, Expert, InitPacket, RamPacket
from ..mainchannel import MainChannelParser
from ..parse import ChannelParser
from . import mainchannel as mc
from . import net
from .config import ConfigError, MigrationConfig
from .truth import compare, load

_RECV_CHUNK = 256 * 1024
#: parser expert groups QEMU would reject even though the parser only warns
_FATAL_GROUPS = {"vfio"}
#: parser expert groups the receiver checks itself, with its own configuration
_OWN_GROUPS = {"compression"}


class ReceiverError(Exception):
    """The migration failed; the message is one line."""


class _Block:
    def __init__(self, name: str, size: int):
        self.name = name
        self.used_length = size
        self.data = bytearray(size)


class _Device:
    """Destination side of one VFIO device: buffers reordered by idx (spec 2.5, 5.5)."""

    def __init__(self, idstr: str, instance_id: int):
        self.idstr = idstr
        self.instance_id = instance_id
        self.pending: dict[int, bytes] = {}
        self.next_idx = 0
        self.max_depth = 0
        self.arrivals: list[tuple[int, int]] = []  # (idx, channel)
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.config_idx: int | None = None
        self.before_switchover = 0

    def report(self) -> dict:
        order = [i for i, _ in self.arrivals]
        return {
            "idstr": self.idstr, "instance_id": self.instance_id,
            "buffers": len(self.arrivals), "loaded": self.next_idx, "bytes": self.bytes,
            "complete": self.config_idx is not None and self.next_idx == self.config_idx + 1,
            "sha256": self.digest.hexdigest(),
            "max_reorder_depth": self.max_depth,
            "out_of_order": order != sorted(order),
            "arrival_order": order,
            "channels": sorted({c for _, c in self.arrivals}),
            "before_switchover_start": self.before_switchover,
        }


class _Channel:
    """``MultiFDRecvParams``."""

    def __init__(self, sock: socket.socket, peer: str, index: int):
        self.sock = sock
        self.peer = peer
        self.index = index  # accept order
        self.id: int | None = None
        self.thread: threading.Thread | None = None
        self.bytes = 0
        self.records: list[dict] = []
        self.packets_recved = 0
        self.syncs = 0  # SYNC packets reached (posts of multifd_recv_state->sem_sync)
        self.released = 0  # SYNCs the main thread released (posts of p->sem_sync)
        self.eof = False
        self.prefix = b""


class Receiver:
    """Listens on ``address`` and receives one migration."""

    def __init__(self, config: MigrationConfig, address: str, *, timeout: float = 30.0,
                 expect_truth: dict | str | None = None):
        """``expect_truth``: the sender's truth, or the path of its file (read when the
        migration has ended, so the sender of this very run can still be writing it)."""
        config.validate()
        self.cfg = config
        self.beh = config.behaviour
        self.method = config.method
        self.page_size = config.page_size
        self.timeout = timeout
        self.expect_truth = expect_truth
        self.blocks = {n: _Block(n, s) for n, s in config.blocks}
        self.devices = {(i, n): _Device(i, n) for i, n in config.devices}
        self.listener, self.address = net.listen(address)
        self._unix_path = self.address[5:] if self.address.startswith("unix:") else None
        self._lock = threading.Lock()
        self.exiting = False
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.channels: dict[int, _Channel] = {}
        self._conns: list[_Channel] = []
        self._socks: list[socket.socket] = []
        self.main_sock: socket.socket | None = None
        self.main_peer: str | None = None
        self._main_prefix = b""
        self.main_parser = MainChannelParser(config.page_size, keep_page_data=True)
        self.main_counts = {"zero": 0, "flush": 0, "eos": 0, "sections": 0, "commands": 0}
        self.main_eof = False
        self._main_thread: threading.Thread | None = None
        self._all_created = threading.Event()
        # the SYNC barrier: QEMU's two semaphores as per-channel counters under one
        # condition, so that a channel ending before its SYNC fails instead of hanging
        self._barrier = threading.Condition(self._lock)
        self._completing = False
        self.switchover_started = False
        self.sync_rounds = 0
        self.t_start = self.t_end = 0.0
        self._thread: threading.Thread | None = None
        self._report: dict | None = None

    # ------------------------------------------------------------------ failure
    def fail(self, message: str) -> None:
        """Record QEMU's message; stop the migration (first error wins, the rest are kept)."""
        with self._lock:
            self.errors.append(message)
            if self.exiting:
                return
            self.exiting = True
        self._all_created.set()
        with self._barrier:
            self._barrier.notify_all()
        for s in [self.listener, *self._socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ running
    def start(self) -> "Receiver":
        """Run in a background thread; `join` returns the report."""
        self._thread = threading.Thread(target=self._run_into, name="mfd-receiver",
                                        daemon=True)
        self._thread.start()
        return self

    def _run_into(self) -> None:
        try:
            self._report = self.run()
        except Exception as exc:  # never lose the report to a bug
            self.fail(f"receiver crashed: {exc!r}")
            self._report = self.report()

    def join(self, timeout: float | None = None) -> dict | None:
        self._thread.join(timeout)
        return self._report

    def run(self, report_path: str | None = None) -> dict:
        """Accept, receive, validate; returns the report (``ok`` says whether it worked)."""
        self.t_start = time.time()
        try:
            self._accept_loop()
            if self._main_thread is not None:
                self._main_thread.join()
            for ch in list(self._conns):
                if ch.thread is not None:
                    ch.thread.join()
        finally:
            net.close_quietly(self.listener, None)
            for s in self._socks:
                net.close_quietly(s)
            if self._unix_path:
                try:
                    os.unlink(self._unix_path)
                except OSError:
                    pass
            self.t_end = time.time()
        self._finish()
        report = self.report()
        if report_path:
            with open(report_path, "w") as fh:  # noqa: PTH123
                json.dump(report, fh, indent=1)
                fh.write("\n")
        return report

    def _accept_loop(self) -> None:
        expected = 1 + self.cfg.channels
        accepted = 0
        self.listener.settimeout(self.timeout)
        while accepted < expected and not self.exiting:
            try:
                sock, peer = self.listener.accept()
            except socket.timeout:
                self.fail(f"timed out after {self.timeout:g} s waiting for connections "
                          f"({accepted} of {expected} accepted)")
                return
            except OSError as exc:
                if not self.exiting:
                    self.fail(f"accept failed: {exc.strerror or exc}")
                return
            accepted += 1
            sock.settimeout(self.timeout)
            peer = str(peer) if peer else "unix"
            with self._lock:
                self._socks.append(sock)
                if self.exiting:
                    return
            is_main, prefix = self._classify(sock, first=self.main_sock is None)
            if self.exiting:
                return
            if is_main:
                if self.main_sock is not None:
                    self.fail("main channel connected twice")
                    return
                self.main_sock, self.main_peer = sock, peer
                self._main_prefix = prefix
                self._main_thread = threading.Thread(target=self._main_thread_fn,
                                                     name="mfd-recv-main", daemon=True)
                self._main_thread.start()
                self._check_all_created()
            else:
                ch = _Channel(sock, peer, accepted - 1)
                ch.prefix = prefix
                with self._lock:
                    self._conns.append(ch)
                ch.thread = threading.Thread(target=self._channel_thread, args=(ch,),
                                             name=f"multifdrecv_{ch.index}", daemon=True)
                ch.thread.start()

    def _classify(self, sock: socket.socket, first: bool) -> tuple[bool, bytes]:
        """``migration_ioc_process_incoming`` (spec 1.4); returns (is_main, consumed prefix)."""
        if not self.beh.peek_classify:
            return first, b""
        try:
            head = sock.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
            prefix = b""
            if 0 < len(head) < 4:
                # unix stream sockets ignore MSG_WAITALL with MSG_PEEK: read the rest
                prefix = b""
                while len(prefix) < 4:
                    part = sock.recv(4 - len(prefix))
                    if not part:
                        break
                    prefix += part
                head = prefix
        except socket.timeout:
            self.fail(f"timed out after {self.timeout:g} s peeking a new connection")
            return False, b""
        except OSError as exc:
            self.fail(f"cannot peek a new connection: {exc.strerror or exc}")
            return False, b""
        is_main = len(head) == 4 and head == wire.QEVM_MAGIC_BYTES
        return is_main, prefix

    def _check_all_created(self) -> None:
        with self._lock:
            if self.main_sock is not None and len(self.channels) == self.cfg.channels:
                self._all_created.set()

    # ------------------------------------------------------------------ main channel
    def _main_thread_fn(self) -> None:
        try:
            # migration_has_all_channels(): start only with main + N multifd channels
            if not self._all_created.wait(self.timeout):
                self.fail(f"timed out after {self.timeout:g} s waiting for "
                          f"{self.cfg.channels} multifd channels ({len(self.channels)} set up)")
                return
            if self.exiting:
                return
            sock = self.main_sock
            if self._main_prefix and not self._main_events(
                    self.main_parser.feed(self._main_prefix, time.time())):
                return
            buf = bytearray(65536)
            while not self.exiting:
                try:
                    n = sock.recv_into(buf)
                except socket.timeout:
                    self.fail(f"main channel: no data for {self.timeout:g} s")
                    return
                except OSError as exc:
                    if not self.exiting:
                        self.fail(f"main channel: read failed: {exc.strerror or exc}")
                    return
                if n == 0:
                    if self._main_events(self.main_parser.end(time.time())) \
                            and not self.main_eof:
                        self.fail("main channel ended before QEMU_VM_EOF")
                    return
                if not self._main_events(self.main_parser.feed(memoryview(buf)[:n],
                                                               time.time())):
                    return
        except Exception as exc:
            self.fail(f"main channel: receiver crashed: {exc!r}")

    def _main_events(self, events) -> bool:
        """Apply main-channel events; False once the main channel is done."""
        S = wire.VMSection
        for ev in events:
            if self.exiting:
                return False
            kind = ev.kind
            if kind == "expert":
                # errors (QEMU's texts), a truncated stream or a capture hole stop the
                # migration; warnings (e.g. a zero page's fill byte) are kept
                if ev.severity == "error" or ev.group in ("truncated", "hole"):
                    self.fail(ev.message)
                    return False
                if ev.severity == "warn":
                    self.warnings.append(f"main @{ev.offset}: {ev.message}")
            elif kind == "section":
                self.main_counts["sections"] += 1
                if ev.section_type in (S.SECTION_START, S.SECTION_FULL):
                    if ev.idstr != mc.RAM_IDSTR:
                        self.fail(f"Unknown savevm section or instance '{ev.idstr}' "
                                  f"{ev.instance_id}. Make sure that your current VM setup "
                                  "matches your saved VM setup, including any hotplugged "
                                  "devices")
                        return False
                    if ev.version_id > mc.RAM_VERSION_ID:
                        self.fail(f"savevm: unsupported version {ev.version_id} for "
                                  f"'{ev.idstr}' v{mc.RAM_VERSION_ID}")
                        return False
            elif kind == "mem_size":
                self._mem_size(ev)
            elif kind == "page":
                self._main_page(ev)
            elif kind == "flush":
                self.main_counts["flush"] += 1
                if not self.beh.per_round_sync:
                    # <= 8.0 does not know the flag (RAM_SAVE_FLAG_MULTIFD_FLUSH is 8.0+)
                    self.fail(f"Unknown combination of migration flags: "
                              f"0x{int(wire.RamSaveFlag.MULTIFD_FLUSH):x}")
                    return False
                self.recv_sync_main()
            elif kind == "eos":
                self.main_counts["eos"] += 1
                if not self.beh.per_round_sync:
                    self.recv_sync_main()
            elif kind == "command":
                self.main_counts["commands"] += 1
                if ev.cmd == wire.MigCmd.SWITCHOVER_START and self.beh.switchover_start:
                    self.switchover_started = True
                else:
                    self.fail(f"MIG_CMD 0x{ev.cmd:x} unknown (len 0x{ev.length:x})")
                    return False
            elif kind == "eof":
                self.main_eof = True
                self._complete()
                return False
            elif kind == "opaque":
                self.fail(f"main channel: cannot load the stream from offset {ev.offset}: "
                          f"{ev.reason}")
                return False
        return True

    def _mem_size(self, ev) -> None:
        for b in ev.blocks:
            blk = self.blocks.get(b.name)
            if blk is None:
                return self.fail(f'Unknown ramblock "{b.name}", cannot accept migration')
            if b.used_length != blk.used_length:
                return self.fail(f"Length mismatch: {b.name}: 0x{b.used_length:x} in != "
                                 f"0x{blk.used_length:x}")

    def _main_page(self, ev) -> None:
        """A ZERO (legacy zero-page detection) or PAGE record of the main channel."""
        if ev.zero:
            self.main_counts["zero"] += 1
        blk = self.blocks.get(ev.block)
        if blk is None:
            return self.fail(f"Can't find block {ev.block}")
        ps = self.page_size
        if ev.page_offset > blk.used_length - ps:
            return self.fail(f"Illegal RAM offset {ev.page_offset:x}")
        if ev.zero:
            blk.data[ev.page_offset:ev.page_offset + ps] = bytes([ev.fill]) * ps
        elif ev.data is None:
            return self.fail(f"main channel: page {ev.block}+0x{ev.page_offset:x} incomplete")
        else:
            blk.data[ev.page_offset:ev.page_offset + ps] = ev.data

    def recv_sync_main(self) -> None:
        """``multifd_recv_sync_main``: wait until every channel reached its SYNC, then
        release them all."""
        with self._barrier:
            target = self.sync_rounds + 1
            while not self.exiting:
                chans = list(self.channels.values())
                if all(ch.syncs >= target for ch in chans):
                    break
                ended = [ch for ch in chans if ch.eof and ch.syncs < target]
                if ended:
                    self._lock.release()
                    try:
                        self.fail(f"multifd {ended[0].id}: stream ended before the SYNC "
                                  "that the main channel's sync point waits for")
                    finally:
                        self._lock.acquire()
                    return
                self._barrier.wait()
            if self.exiting:
                return
            self.sync_rounds = target
            for ch in chans:
                ch.released = target
            self._barrier.notify_all()

    def _channel_sync(self, ch: _Channel) -> None:
        """A channel read SYNC: signal the main thread and stop reading until released."""
        with self._barrier:
            ch.syncs += 1
            self._barrier.notify_all()
            while not (self.exiting or self._completing or ch.released >= ch.syncs):
                self._barrier.wait()

    def _complete(self) -> None:
        """QEMU_VM_EOF: cleanup releases channels still parked on a SYNC (9.1-9.2 final
        SYNC has no FLUSH); they then read their streams to the end."""
        with self._barrier:
            self._completing = True
            self._barrier.notify_all()

    # ------------------------------------------------------------------ channels
    def _channel_thread(self, ch: _Channel) -> None:
        parser = ChannelParser(self.page_size, keep_payload=True)
        try:
            if ch.prefix:
                ch.bytes += len(ch.prefix)
                if not self._channel_events(ch, parser.feed(ch.prefix, time.time())):
                    return
            buf = bytearray(_RECV_CHUNK)
            view = memoryview(buf)
            while not self.exiting:
                try:
                    n = ch.sock.recv_into(buf)
                except socket.timeout:
                    self.fail(f"multifd {self._name(ch)}: no data for {self.timeout:g} s")
                    return
                except OSError as exc:
                    if not self.exiting:
                        self.fail(f"multifd {self._name(ch)}: read failed: "
                                  f"{exc.strerror or exc}")
                    return
                t = time.time()
                if n == 0:
                    self._channel_events(ch, parser.end(t))
                    with self._barrier:
                        ch.eof = True
                        self._barrier.notify_all()
                    if ch.id is None and not self.exiting:
                        self.fail(f"failed to receive packet via multifd channel "
                                  f"{len(self.channels)}: stream ended after {ch.bytes} "
                                  "bytes, before the initial packet")
                    return
                ch.bytes += n
                if not self._channel_events(ch, parser.feed(view[:n], t)):
                    return
        except Exception as exc:
            self.fail(f"multifd {self._name(ch)}: receiver thread crashed: {exc!r}")

    @staticmethod
    def _name(ch: _Channel) -> str:
        return str(ch.id) if ch.id is not None else f"connection {ch.index}"

    def _channel_events(self, ch: _Channel, events) -> bool:
        for ev in events:
            if self.exiting:
                return False
            if isinstance(ev, Expert):
                if not self._expert(ch, ev):
                    return False
            elif isinstance(ev, InitPacket):
                if not self._init(ch, ev):
                    return False
            elif isinstance(ev, RamPacket):
                if not self._ram(ch, ev):
                    return False
            elif isinstance(ev, DeviceStatePacket):
                if not self._device_state(ch, ev):
                    return False
        return True

    def _expert(self, ch: _Channel, ev: Expert) -> bool:
        if ev.group in _OWN_GROUPS:
            return True
        if ev.severity == "error" or ev.group in _FATAL_GROUPS:
            msg = ev.message
            if ch.id is None:
                msg = (f"failed to receive packet via multifd channel {len(self.channels)}: "
                       f"{msg}")
            self.fail(msg)
            return False
        self.warnings.append(f"multifd {self._name(ch)} @{ev.offset}: {ev.message}")
        return True

    def _init(self, ch: _Channel, ev: InitPacket) -> bool:
        """``multifd_recv_initial_packet`` + ``multifd_recv_new_channel``."""
        n = self.cfg.channels
        prefix = f"failed to receive packet via multifd channel {len(self.channels)}: "
        ch.records.append({"kind": "init", "offset": ev.offset, "wire_len": ev.wire_len,
                           "channel_id": ev.channel_id, "t": ev.t_end})
        if ev.uuid != self.cfg.uuid:
            self.fail(prefix + f"multifd: received uuid '{uuidlib.UUID(bytes=ev.uuid)}' and "
                      f"expected uuid '{uuidlib.UUID(bytes=self.cfg.uuid)}' for channel "
                      f"{_hhd(ev.channel_id)}")
            return False
        # QEMU rejects only id > N (spec 9.12); the reference receiver is stricter
        if ev.channel_id >= n:
            self.fail(prefix + f"multifd: received channel id {ev.channel_id} is greater "
                      f"than number of channels {n}")
            return False
        with self._lock:
            if ev.channel_id in self.channels:
                dup = True
            else:
                dup = False
                ch.id = ev.channel_id
                self.channels[ch.id] = ch
        if dup:
            self.fail(f"multifd: received id '{ev.channel_id}' already setup'")
            return False
        self._check_all_created()
        return True

    def _record(self, ch: _Channel, ev) -> None:
        if isinstance(ev, RamPacket):
            rec = {"kind": ev.kind, "offset": ev.offset, "wire_len": ev.wire_len,
                   "packet_num": ev.packet_num, "flags": ev.flags,
                   "pages_alloc": ev.pages_alloc, "normal_pages": ev.normal_pages,
                   "zero_pages": ev.zero_pages, "next_packet_size": ev.next_packet_size,
                   "payload_len": ev.payload_len, "ramblock": ev.ramblock or None,
                   "t": ev.t_end}
        else:
            rec = {"kind": ev.kind, "offset": ev.offset, "wire_len": ev.wire_len,
                   "flags": ev.flags, "idstr": ev.idstr, "instance_id": ev.instance_id,
                   "next_packet_size": ev.next_packet_size, "vfio_idx": ev.vfio_idx,
                   "vfio_flags": ev.vfio_flags, "t": ev.t_end}
        ch.records.append(rec)
        ch.packets_recved += 1

    def _ram(self, ch: _Channel, ev: RamPacket) -> bool:
        """``multifd_ram_unfill_packet`` checks, then ``*_recv``, then the SYNC barrier."""
        self._record(ch, ev)
        normal, zero = ev.normal_pages, ev.zero_pages
        ps = self.page_size
        if normal or zero:
            blk = self.blocks.get(ev.ramblock)
            if blk is None:
                self.fail(f"multifd: unknown ram block {ev.ramblock}")
                return False
            limit = blk.used_length - ps
            for off in ev.offsets:
                if off > limit:
                    self.fail(f"multifd: offset too long {off} (max {blk.used_length:x})")
                    return False
                if off % ps:
                    self.warnings.append(f"multifd {ch.id}: offset {off} of block "
                                         f"{blk.name} is not page aligned")
            flags = wire.compression_of(ev.flags)
            if flags != self.method:
                self.fail(f"multifd {ch.id}: flags received {flags:x} flags expected "
                          f"{int(self.method):x}")
                return False
            data = blk.data
            if normal:
                payload = ev.payload
                if payload is None or len(payload) != normal * ps:
                    self.fail(f"multifd {ch.id}: packet size received "
                              f"{0 if payload is None else len(payload)} size expected "
                              f"{normal * ps}")
                    return False
                mv = memoryview(payload)
                for i, off in enumerate(ev.offsets[:normal]):
                    data[off:off + ps] = mv[i * ps:(i + 1) * ps]
            if zero:
                zpage = bytes(ps)
                for off in ev.offsets[normal:normal + zero]:
                    data[off:off + ps] = zpage
        if ev.flags & wire.FLAG_SYNC:
            self._channel_sync(ch)
            if self.exiting:
                return False
        return True

    def _device_state(self, ch: _Channel, ev: DeviceStatePacket) -> bool:
        """``multifd_device_state_recv`` -> ``qemu_loadvm_load_state_buffer`` -> VFIO."""
        self._record(ch, ev)
        dev = self.devices.get((ev.idstr, ev.instance_id))
        if dev is None:
            self.fail(f"Unknown idstr {ev.idstr} or instance id {ev.instance_id} for load "
                      "state buffer")
            return False
        buf = ev.payload
        if buf is None or ev.vfio_idx is None:
            self.fail(f"{ev.idstr}: packet too short at {ev.next_packet_size} "
                      f"(min is {wire.VFIO_BUFFER.size})")
            return False
        idx = ev.vfio_idx
        with self._lock:
            if idx < dev.next_idx or idx in dev.pending:
                dup = True
            else:
                dup = False
                dev.arrivals.append((idx, ch.id))
                if not self.switchover_started:
                    dev.before_switchover += 1
                dev.pending[idx] = buf
                error = self._drain(dev)
                # buffers held back because an earlier idx has not arrived yet
                dev.max_depth = max(dev.max_depth, len(dev.pending))
        if dup:
            self.fail(f"{ev.idstr}: state buffer {idx} already filled")
            return False
        if error:
            self.fail(error)
            return False
        return True

    def _drain(self, dev: _Device) -> str | None:
        """Load buffers strictly in idx order (``vfio_load_bufs_thread``)."""
        while dev.next_idx in dev.pending:
            buf = dev.pending.pop(dev.next_idx)
            vf = wire.VFIO_BUFFER.unpack_from(buf)
            data = memoryview(buf)[wire.VFIO_BUFFER.size:]
            if vf["flags"] & wire.VFIO_DEVICE_STATE_CONFIG_STATE:
                marker = wire.OFFSET.unpack_from(data)[0] if len(data) >= 8 else 0
                if marker != wire.VFIO_MIG_FLAG_DEV_CONFIG_STATE:
                    return f"{dev.idstr}: expected FLAG_DEV_CONFIG_STATE but got {marker:x}"
                dev.config_idx = dev.next_idx
            dev.digest.update(data)
            dev.bytes += len(data)
            dev.next_idx += 1
        return None

    # ------------------------------------------------------------------ report
    def _finish(self) -> None:
        if self.errors:
            return
        if not self.main_eof:
            self.fail("migration incomplete: the main channel ended without QEMU_VM_EOF")
            return
        for dev in self.devices.values():
            r = dev.report()
            if self.beh.device_state and self.cfg.devices and not r["complete"]:
                self.fail(f"{dev.idstr}: device state incomplete: {r['loaded']} buffers "
                          f"loaded, {len(dev.pending)} waiting for a missing index")

    def report(self) -> dict:
        chans = sorted(self._conns, key=lambda c: (c.id is None, c.id, c.index))
        per_id = {c.id: c for c in chans if c.id is not None}
        n = self.cfg.channels
        devices = [d.report() for d in self.devices.values()]
        rep = {
            "role": "receiver",
            "ok": not self.errors,
            "error": self.errors[0] if self.errors else None,
            "errors": list(self.errors),
            "warnings": self.warnings[:100],
            "profile": self.cfg.profile,
            "profile_range": self.beh.profile.name,
            "compression": self.method.label,
            "page_size": self.page_size,
            "channels": n,
            "address": self.address,
            "classification": "peek" if self.beh.peek_classify else "first-is-main",
            "main_bytes": self.main_parser.offset,
            "main_records": dict(self.main_counts),
            "main_eof": self.main_eof,
            "switchover_start": self.switchover_started,
            "sync_rounds": self.sync_rounds,
            "channel_bytes": [per_id[i].bytes if i in per_id else 0 for i in range(n)],
            "connections": [{"channel_id": c.id, "accept_index": c.index, "peer": c.peer,
                             "bytes": c.bytes, "packets": c.packets_recved,
                             "syncs": c.syncs, "eof": c.eof,
                             "records": _kinds(c.records)} for c in chans],
            "records": [per_id[i].records if i in per_id else [] for i in range(n)],
            "blocks": [{"name": b.name, "size": b.used_length,
                        "sha256": hashlib.sha256(b.data).hexdigest()}
                       for b in self.blocks.values()],
            "devices": devices,
            "max_reorder_depth": max((d["max_reorder_depth"] for d in devices), default=0),
            "t_start": self.t_start,
            "t_end": self.t_end,
            "duration": self.t_end - self.t_start,
        }
        if self.expect_truth is not None:
            truth = self.expect_truth
            if isinstance(truth, str):
                try:
                    truth = load(truth)
                except (OSError, ValueError) as exc:
                    truth = None
                    rep["comparison"] = {"equal": False, "truth_readable": False,
                                         "truth_error": str(exc)}
            if truth is not None:
                rep["comparison"] = compare(truth, rep)
                if truth.get("t_end", self.t_start) < self.t_start:
                    rep["comparison"].update(truth_current=False, equal=False)
            if rep["ok"] and not rep["comparison"]["equal"]:
                rep["ok"] = False
                rep["error"] = "received state differs from the sender's truth: " + \
                    ", ".join(k for k, v in rep["comparison"].items()
                              if k != "equal" and v is False)
        return rep


def _kinds(records: list[dict]) -> dict:
    out: dict[str, int] = {}
    for r in records:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return out


def _hhd(v: int) -> int:
    return v - 256 if v > 127 else v


def receive(config: MigrationConfig, address: str, *, report_path: str | None = None,
            expect_truth: dict | None = None, timeout: float = 30.0) -> dict:
    try:
        r = Receiver(config, address, timeout=timeout, expect_truth=expect_truth)
    except ConfigError as exc:
        raise ReceiverError(str(exc)) from None
    return r.run(report_path)
