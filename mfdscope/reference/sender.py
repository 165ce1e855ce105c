"""Reference multifd sender: QEMU's source side over real sockets, with ground truth.

Threads mirror QEMU's (``migration/multifd.c``, ``multifd-nocomp.c``,
``multifd-device-state.c``):

* the *migration thread* (the caller of `Sender.run`) writes the main channel,
  scans dirty pages, batches them per RAMBlock (``multifd_queue_page``) and hands
  each batch over with `Sender.multifd_send`;
* one *sender thread* per channel writes its initial packet first, then loops:
  post ``channels_ready``, wait on its ``sem``, send the pending job (RAM batch or
  device-state buffer) or, if none, the pending SYNC (spec 5.2);
* one *save thread* per device queues VFIO buffers with
  `Sender.queue_device_state` during the switchover phase (spec 5.4).

``multifd_send`` is thread-safe (10.0): under one mutex it waits for a ready
channel and scans round robin from a static ``next_channel`` for one without a
pending job (spec 5.3).  QEMU <= 8.2 (profile 7.2) uses its older model: the
migration thread assigns ``packet_num`` and sets ``MULTIFD_FLAG_SYNC`` on the
channel (``p->flags``), so a SYNC can ride on a data packet and be followed by an
empty packet repeating its number, with a stale ``next_packet_size``, exactly as
real 7.2 captures show (spec 4.5, 5.1, 10).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

import numpy as np

from .. import wire
from ..codec import compressor
from . import net
from .config import ConfigError, MigrationConfig
from .mainchannel import MainChannelWriter
from .ram import GuestRam, device_buffers

_SYNC = wire.FLAG_SYNC


class SenderError(Exception):
    """The migration failed; the message is one line."""


class _Batch:
    """``MultiFDPages_t``: pages of one RAMBlock (page indices)."""

    __slots__ = ("block", "pages")

    def __init__(self, block=None):
        self.block = block
        self.pages: list[int] = []


class _DeviceJob:
    """``MultiFDDeviceState_t``: copies of idstr and buffer."""

    __slots__ = ("idstr", "instance_id", "buf")

    def __init__(self, idstr: str, instance_id: int, buf: bytes):
        self.idstr = str(idstr)
        self.instance_id = instance_id
        self.buf = bytes(buf)


class _Channel:
    """``MultiFDSendParams``."""

    def __init__(self, cid: int, method, packet_len: int):
        self.id = cid
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.sem = threading.Semaphore(0)
        self.sem_sync = threading.Semaphore(0)
        self.mutex = threading.Lock()  # p->mutex (<= 8.2 model)
        self.pending_job = 0
        self.pending_sync = False
        self.data = None
        self.flags = 0  # <= 8.2: p->flags, SYNC set by the migration thread
        self.packet_num = 0  # <= 8.2: assigned by the migration thread
        self.next_packet_size = 0  # <= 9.1: stale across packets
        self.packet = bytearray(packet_len)  # <= 9.1: reused without clearing
        self.compress = compressor(method)
        self.bytes = 0
        self.records: list[dict] = []
        self.packets_sent = 0  # RAM + SYNC (multifd_send_thread_end)


class Sender:
    """One migration to ``address`` (``HOST:PORT`` or ``unix:PATH``)."""

    def __init__(self, config: MigrationConfig, address: str, *, connect_timeout: float = 10.0):
        config.validate()
        self.cfg = config
        self.address = address
        self.connect_timeout = connect_timeout
        self.beh = config.behaviour
        self.method = config.method
        self.page_size = config.page_size
        self.page_count = wire.page_count(config.page_size)
        self.packet_len = wire.packet_len(config.page_size)
        n = config.channels
        self.channels = [_Channel(i, self.method, self.packet_len) for i in range(n)]
        self.channels_ready = threading.Semaphore(0)
        self.send_mutex = threading.Lock()  # multifd_send_mutex (10.0)
        self.queue_job_mutex = threading.Lock()  # multifd-device-state.c
        self._free = threading.Condition(threading.Lock())
        self.next_channel = 0
        self._packet_num = 0
        self._packet_num_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.multifd_bytes = 0
        self.exiting = False
        self.error: str | None = None
        self._error_lock = threading.Lock()
        self._created = threading.Semaphore(0)
        self.main: socket.socket | None = None
        self.main_bytes = 0
        self.writer = MainChannelWriter(config.page_size)
        self.ram: GuestRam | None = None
        self._batch = _Batch()
        self.devices: list[dict] = []
        self.passes: list[dict] = []
        self.sync_rounds = 0
        self.t_start = self.t_end = 0.0
        self._truth: dict | None = None

    # ------------------------------------------------------------------ accounting
    def _account(self, n: int) -> None:
        with self._stats_lock:
            self.multifd_bytes += n

    def _next_packet_num(self) -> int:
        with self._packet_num_lock:  # qatomic_fetch_inc (9.0+, 98ea497d8b)
            num = self._packet_num
            self._packet_num += 1
            return num

    # ------------------------------------------------------------------ failure
    def fail(self, message: str) -> None:
        """First error wins; wake every waiter and shut every socket down."""
        with self._error_lock:
            if self.error is None:
                self.error = message
            if self.exiting:
                return
            self.exiting = True
        for _ in range(2):  # a device thread and the migration thread may both wait
            self.channels_ready.release()
        for ch in self.channels:
            ch.sem.release()
            ch.sem_sync.release()
            self.channels_ready.release()
            self._created.release()
            if ch.sock is not None:
                try:
                    ch.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        with self._free:
            self._free.notify_all()
        if self.main is not None:
            try:
                self.main.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _check(self) -> None:
        if self.exiting:
            raise SenderError(self.error or "migration cancelled")

    # ------------------------------------------------------------------ multifd_send
    def _pick_channel(self) -> _Channel:
        """Round robin from next_channel, first channel without a pending job (5.3)."""
        n = len(self.channels)
        with self._free:
            while True:
                if self.exiting:
                    raise SenderError(self.error or "migration cancelled")
                start = self.next_channel % n
                for k in range(n):
                    ch = self.channels[(start + k) % n]
                    if not ch.pending_job:
                        self.next_channel = (ch.id + 1) % n
                        return ch
                # QEMU spins here; a ready token without an idle channel only
                # happens with the <= 8.2 token drift.  Wait instead of spinning.
                self._free.wait()

    def multifd_send(self, job) -> bool:
        """Hand ``job`` to the next idle channel; False when the migration is exiting."""
        with self.send_mutex:
            self.channels_ready.acquire()
            if self.exiting:
                return False
            try:
                ch = self._pick_channel()
            except SenderError:
                return False
            if self.beh.legacy_send:  # multifd_send_pages() <= 8.2
                with ch.mutex:
                    ch.pending_job += 1
                    ch.packet_num = self._next_packet_num()
                    ch.data = job
                if self.beh.counts_at_enqueue:
                    self._account(len(job.pages) * self.page_size + self.packet_len)
            else:
                ch.data = job
                ch.pending_job = 1
            ch.sem.release()
            return True

    def queue_device_state(self, idstr: str, instance_id: int, buf) -> bool:
        """``multifd_queue_device_state``: callable from several threads at once."""
        with self.queue_job_mutex:
            job = _DeviceJob(idstr, instance_id, buf)  # copies idstr and buffer
            return self.multifd_send(job)

    def queue_page(self, block, page: int) -> None:
        """``multifd_queue_page``: a batch holds one RAMBlock, at most page_count pages."""
        b = self._batch
        if b.pages and (b.block is not block or len(b.pages) == self.page_count):
            self._flush_batch()
            b = self._batch
        b.block = block
        b.pages.append(page)

    def _flush_batch(self) -> None:
        if self._batch.pages:
            job, self._batch = self._batch, _Batch()
            if not self.multifd_send(job):
                self._check()

    def sync_main(self) -> None:
        """``multifd_send_sync_main`` (SYNC_ALL): a SYNC packet on every channel."""
        self._flush_batch()
        self._check()
        if self.beh.legacy_send:
            for ch in self.channels:
                with ch.mutex:
                    ch.packet_num = self._next_packet_num()
                    ch.flags |= _SYNC
                    ch.pending_job += 1
                if self.beh.counts_at_enqueue:
                    self._account(self.packet_len)
                ch.sem.release()
            for ch in self.channels:
                ch.sem_sync.acquire()
                self._check()
        else:
            for ch in self.channels:
                ch.pending_sync = True
                ch.sem.release()
            for ch in self.channels:
                self.channels_ready.acquire()
                ch.sem_sync.acquire()
                self._check()
        self.sync_rounds += 1

    # ------------------------------------------------------------------ sender threads
    def _write(self, ch: _Channel, parts: list) -> int:
        n = net.sendv(ch.sock, parts)
        ch.bytes += n
        return n

    def _record(self, ch: _Channel, offset: int, wire_len: int, **info) -> None:
        info.update(offset=offset, wire_len=wire_len, t=time.time())
        ch.records.append(info)

    def _channel_thread(self, ch: _Channel) -> None:
        try:
            try:
                ch.sock = net.connect(self.address, self.connect_timeout)
            except OSError as exc:
                self.fail(f"multifd {ch.id}: cannot connect to {self.address}: "
                          f"{exc.strerror or exc}")
                return
            if self.exiting:
                return
            init = wire.pack_init(ch.id, self.cfg.uuid)
            self._write(ch, [init])
            self._record(ch, 0, len(init), kind="init", channel_id=ch.id)
            if self.beh.profile.counts_initial_packet:
                self._account(len(init))
            self._created.release()
            if self.beh.legacy_send:
                self._legacy_loop(ch)
            else:
                self._loop(ch)
        except OSError as exc:
            self.fail(f"multifd {ch.id}: write failed: {exc.strerror or exc}")
        except Exception as exc:  # a bug: fail the migration rather than hang it
            self.fail(f"multifd {ch.id}: sender thread crashed: {exc!r}")

    def _loop(self, ch: _Channel) -> None:
        """``multifd_send_thread`` 9.0+."""
        while True:
            self.channels_ready.release()
            ch.sem.acquire()
            if self.exiting:
                return
            if ch.pending_job:
                job = ch.data
                if isinstance(job, _DeviceJob):
                    self._send_device_state(ch, job)
                else:
                    self._send_ram(ch, job)
                ch.data = None
                with self._free:
                    ch.pending_job = 0
                    self._free.notify()
            else:
                assert ch.pending_sync
                self._send_sync(ch)
                ch.pending_sync = False
                ch.sem_sync.release()

    def _legacy_loop(self, ch: _Channel) -> None:
        """``multifd_send_thread`` <= 8.2: one packet per pending_job, SYNC in p->flags."""
        self.channels_ready.release()
        while True:
            ch.sem.acquire()
            if self.exiting:
                return
            with ch.mutex:
                if not ch.pending_job:
                    continue
                job, ch.data = ch.data, None
                flags, ch.flags = ch.flags, 0
                num = ch.packet_num
            self._send_ram(ch, job, flags=flags, packet_num=num)
            with self._free:
                with ch.mutex:
                    ch.pending_job -= 1
                self._free.notify()
            if flags & _SYNC:
                ch.sem_sync.release()
            self.channels_ready.release()

    def _fill(self, ch: _Channel, *, flags: int, packet_num: int, block: str | None,
              offsets: list[int], normal: int, zero: int, nps: int, alloc: int) -> bytes:
        """``multifd_send_fill_packet`` + ``multifd_ram_fill_packet``."""
        fresh = wire.pack_ram(flags=flags, page_size=self.page_size, packet_num=packet_num,
                              ramblock=block.encode() if block else b"", offsets=offsets,
                              normal_pages=normal, zero_pages=zero, next_packet_size=nps,
                              pages_alloc=alloc)
        if self.beh.clears_packet:  # 9.2+: buffer cleared before each fill
            return fresh
        buf = ch.packet  # <= 9.1: stale ramblock / offset slots from earlier packets
        buf[:wire.RAM.offsets["ramblock"]] = fresh[:wire.RAM.offsets["ramblock"]]
        if block:
            buf[wire.RAM.offsets["ramblock"]:wire.RAM.size] = \
                fresh[wire.RAM.offsets["ramblock"]:wire.RAM.size]
        end = wire.RAM.size + wire.OFFSET.size * len(offsets)
        buf[wire.RAM.size:end] = fresh[wire.RAM.size:end]
        return bytes(buf)

    def _send_ram(self, ch: _Channel, job: _Batch | None, *, flags: int = 0,
                  packet_num: int | None = None) -> None:
        ps = self.page_size
        block = job.block if job is not None and job.pages else None
        pages = np.asarray(job.pages if block is not None else [], dtype=np.int64)
        if block is not None and self.beh.multifd_zero_pages:
            # multifd_send_zero_page_detect: partition in place by swapping
            is_zero = block.zero_mask(pages).tolist()
            order = pages.tolist()
            i, j = 0, len(order) - 1
            while i <= j:
                if not is_zero[i]:
                    i += 1
                    continue
                order[i], order[j] = order[j], order[i]
                is_zero[i], is_zero[j] = is_zero[j], is_zero[i]
                j -= 1
            normal, zero = order[:i], order[i:]
        else:
            normal, zero = pages.tolist(), []
        views = []
        if normal:
            mv = memoryview(block.data)
            views = [mv[p * ps:(p + 1) * ps] for p in normal]
        comp = self.method
        if comp != wire.Compression.NONE and normal:
            payload = [ch.compress(b"".join(views))]
            ch.next_packet_size = len(payload[0])
        elif normal:
            payload = views
            ch.next_packet_size = len(normal) * ps
        else:
            payload = []
            if not self.beh.legacy_send:
                ch.next_packet_size = 0
            # <= 8.2: send_prepare did not run, next_packet_size stays stale
        if comp != wire.Compression.NONE and (normal or (zero and not self.beh.legacy_send)):
            flags |= int(comp)
        if packet_num is None:
            packet_num = self._next_packet_num()
        nps = ch.next_packet_size
        offsets = [p * ps for p in normal + zero]
        header = self._fill(ch, flags=flags, packet_num=packet_num,
                            block=block.name if block is not None else None, offsets=offsets,
                            normal=len(normal), zero=len(zero), nps=nps, alloc=self.page_count)
        payload_len = wire.ram_payload_len(flags, len(normal), nps, ps)
        start = ch.bytes
        if self.cfg.zero_copy and payload:
            # zero-copy-send: header with its own write, pages with MSG_ZEROCOPY (4.8)
            self._write(ch, [header])
            if self.beh.zero_copy_header_separate and not self.beh.counts_at_enqueue:
                self._account(len(header))
                self._write(ch, payload)
                self._account(payload_len)
            else:
                self._write(ch, payload)
                if not self.beh.counts_at_enqueue:
                    self._account(len(header) + payload_len)
        else:
            self._write(ch, [header, *payload])
            if not self.beh.counts_at_enqueue:
                self._account(len(header) + payload_len)
        ch.packets_sent += 1
        self._record(ch, start, ch.bytes - start, kind="sync" if flags & _SYNC else "ram",
                     packet_num=packet_num, flags=flags, pages_alloc=self.page_count,
                     normal_pages=len(normal), zero_pages=len(zero), next_packet_size=nps,
                     payload_len=payload_len,
                     ramblock=block.name if block is not None else None,
                     zero_copy=bool(self.cfg.zero_copy and payload))

    def _send_sync(self, ch: _Channel) -> None:
        """A dedicated SYNC packet (9.0+); 9.2+: no RAM fields (pages_alloc 0)."""
        num = self._next_packet_num()
        alloc = 0 if self.beh.clears_packet else self.page_count
        header = self._fill(ch, flags=_SYNC, packet_num=num, block=None, offsets=[],
                            normal=0, zero=0, nps=0, alloc=alloc)
        start = ch.bytes
        self._write(ch, [header])
        self._account(len(header))
        ch.packets_sent += 1
        self._record(ch, start, len(header), kind="sync", packet_num=num, flags=_SYNC,
                     pages_alloc=alloc, normal_pages=0, zero_pages=0, next_packet_size=0,
                     payload_len=0, ramblock=None, zero_copy=False)

    def _send_device_state(self, ch: _Channel, job: _DeviceJob) -> None:
        """``multifd_device_state_send_prepare``: 276-byte header + buffer, never SYNC."""
        flags = wire.FLAG_DEVICE_STATE  # NOCOMP | DEVICE_STATE
        assert not flags & _SYNC
        header = wire.pack_device_state(idstr=job.idstr.encode(), instance_id=job.instance_id,
                                        next_packet_size=len(job.buf), flags=flags)
        start = ch.bytes
        n = self._write(ch, [header, job.buf])
        self._account(n)
        vf = wire.VFIO_BUFFER.unpack_from(job.buf)
        self._record(ch, start, n, kind="device_state", flags=flags, idstr=job.idstr,
                     instance_id=job.instance_id, next_packet_size=len(job.buf),
                     vfio_idx=vf["idx"], vfio_flags=vf["flags"])

    # ------------------------------------------------------------------ device threads
    def _device_thread(self, dev: dict) -> None:
        """``vfio_multifd_save_complete_precopy_thread``: K data buffers + config."""
        digest = hashlib.sha256()
        sent = 0
        try:
            for buf in device_buffers(dev["idstr"], dev["instance_id"],
                                      self.cfg.buffers_per_device, self.cfg.buffer_size,
                                      self.cfg.seed):
                digest.update(buf[wire.VFIO_BUFFER.size:])
                if not self.queue_device_state(dev["idstr"], dev["instance_id"], buf):
                    return
                sent += 1
                dev["bytes"] += len(buf) - wire.VFIO_BUFFER.size
        except Exception as exc:
            self.fail(f"{dev['idstr']}: save thread crashed: {exc!r}")
        finally:
            dev["buffers_sent"] = sent
            dev["sha256"] = digest.hexdigest()

    # ------------------------------------------------------------------ migration thread
    def _main_flush(self) -> None:
        """``qemu_fflush`` of the main channel."""
        data = self.writer.take()
        if data:
            try:
                self.main.sendall(data)
            except OSError as exc:
                self.fail(f"main channel: write failed: {exc.strerror or exc}")
                self._check()
            self.main_bytes += len(data)

    def _ram_pass(self, dirty: list[np.ndarray]) -> dict:
        """Send every dirty page once, block by block (``ram_find_and_save_block``)."""
        info = {"dirty": 0, "zero_on_main": 0}
        legacy_zero = not self.beh.multifd_zero_pages
        for block, idx in zip(self.ram.blocks, dirty):
            info["dirty"] += len(idx)
            if legacy_zero:  # save_zero_page on the migration thread
                zmask = block.zero_mask(idx)
                for page, is_zero in zip(idx.tolist(), zmask.tolist()):
                    if is_zero:
                        self.writer.zero_page(block.name, page * self.page_size)
                        info["zero_on_main"] += 1
                    else:
                        self.queue_page(block, page)
                    if len(self.writer) > 32768:  # QEMUFile buffer full
                        self._main_flush()
            else:
                for page in idx.tolist():
                    self.queue_page(block, page)
            self._check()
        return info

    def _pass_wrapped(self) -> None:
        """The dirty scan wrapped past the last block (``find_dirty_block``)."""
        if self.beh.per_round_sync:
            self.sync_main()
            self.writer.multifd_flush()
            self._main_flush()

    def _end_section(self, final: bool = False) -> None:
        if not self.beh.per_round_sync:  # legacy: SYNC on all channels, then EOS
            self.sync_main()
        elif final and self.beh.final_sync:  # 8.1-9.2: one more SYNC in complete()
            self.sync_main()
            if self.beh.final_flush:
                self.writer.multifd_flush()
        self.writer.eos()
        self._main_flush()

    def run(self, truth_path: str | None = None) -> dict:
        """Migrate; returns the ground truth and raises SenderError on failure.

        With ``truth_path`` the truth is written (atomically) before the multifd
        streams are closed, so a receiver that sees their end can read it.
        """
        try:
            self._run()
        except SenderError:
            pass
        finally:
            self._shutdown(truth_path)
        if self.error:
            raise SenderError(self.error)
        return self._truth

    def _run(self) -> None:
        cfg = self.cfg
        self.ram = GuestRam(cfg.blocks, cfg.page_size, seed=cfg.seed,
                            zero_share=cfg.zero_share, random_share=cfg.random_share)
        dirty = self.ram.fill()
        self.t_start = time.time()
        try:
            self.main = net.connect(self.address, self.connect_timeout)
        except OSError as exc:
            self.fail(f"cannot connect to {self.address}: {exc.strerror or exc}")
            self._check()
        # the main channel is connected (and so accepted first) before any multifd one
        self.writer.header()
        self._main_flush()
        for ch in self.channels:
            ch.thread = threading.Thread(target=self._channel_thread, args=(ch,),
                                         name=f"multifdsend_{ch.id}", daemon=True)
            ch.thread.start()
        for _ in self.channels:  # multifd_send_channels_created
            self._created.acquire()
            self._check()
        # ram_save_setup
        self.writer.section_start([(b.name, b.size) for b in self.ram.blocks])
        self._pass_wrapped()
        self._end_section()
        # bulk pass, then dirtying rounds
        for r in range(max(cfg.iterations, 1)):
            if r:
                dirty = self.ram.dirty(cfg.dirty_share)
            self.writer.section_part()
            info = self._ram_pass(dirty)
            self._pass_wrapped()
            self._end_section()
            self.passes.append({"phase": "iterate", **info})
        # switchover: the guest is stopped after one last dirtying round
        dirty = (self.ram.dirty(cfg.dirty_share) if cfg.iterations
                 else [np.zeros(0, dtype=np.int64) for _ in self.ram.blocks])
        if self.beh.switchover_start:
            self.writer.switchover_start()
            self._main_flush()
        threads = []
        if cfg.devices and self.beh.device_state:
            for idstr, inst in cfg.devices:
                dev = {"idstr": idstr, "instance_id": inst, "buffers": cfg.buffers_per_device + 1,
                       "buffers_sent": 0, "bytes": 0, "sha256": None}
                self.devices.append(dev)
                t = threading.Thread(target=self._device_thread, args=(dev,),
                                     name=f"vfio-save-{idstr}", daemon=True)
                threads.append(t)
            for t in threads:
                t.start()
        self.writer.section_end()
        info = self._ram_pass(dirty)
        self._pass_wrapped()
        for t in threads:  # multifd_join_device_state_save_threads
            t.join()
        self._check()
        self._end_section(final=True)
        self.passes.append({"phase": "complete", **info})
        self.writer.eof()
        self._main_flush()

    def _shutdown(self, truth_path: str | None = None) -> None:
        """``multifd_send_shutdown``: stop the threads, then end every stream cleanly.

        Jobs already handed to a channel are written first (device-state buffers
        queued after the last SYNC included), so no queued work is dropped.
        """
        with self._free:
            while not self.exiting and any(ch.pending_job for ch in self.channels):
                self._free.wait()
        with self._error_lock:
            already = self.exiting
            self.exiting = True
        if not already:
            for ch in self.channels:
                ch.sem.release()
            with self._free:
                self._free.notify_all()
        for ch in self.channels:
            if ch.thread is not None:
                ch.thread.join()
        self.t_end = time.time()
        self._truth = self.truth()
        if truth_path:
            write_json(truth_path, self._truth)
        for ch in self.channels:
            net.close_quietly(ch.sock, socket.SHUT_WR)
        net.close_quietly(self.main, socket.SHUT_WR)

    # ------------------------------------------------------------------ truth
    def truth(self) -> dict:
        cfg = self.cfg
        duration = max(self.t_end - self.t_start, 1e-9)
        chan_bytes = [ch.bytes for ch in self.channels]
        return {
            "role": "sender",
            "ok": self.error is None,
            "error": self.error,
            "profile": cfg.profile,
            "profile_range": self.beh.profile.name,
            "compression": self.method.label,
            "page_size": cfg.page_size,
            "packet_len": self.packet_len,
            "channels": cfg.channels,
            "seed": cfg.seed,
            "zero_copy": cfg.zero_copy,
            "config": cfg.to_json(),
            "address": self.address,
            "main_bytes": self.main_bytes,
            "main_records": dict(self.writer.counts),
            "channel_bytes": chan_bytes,
            "multifd_bytes": self.multifd_bytes,
            "multifd_bytes_rule": ("enqueue: normal_pages x page_size + packet_len per packet, "
                                   "no initial packets" if self.beh.counts_at_enqueue else
                                   "written: every byte written, 64 per initial packet"),
            "packets_sent": [ch.packets_sent for ch in self.channels],
            "sync_rounds": self.sync_rounds,
            "packet_num_next": self._packet_num,
            "passes": self.passes,
            "blocks": self.ram.hashes() if self.ram else [],
            "devices": self.devices,
            "records": [ch.records for ch in self.channels],
            "t_start": self.t_start,
            "t_end": self.t_end,
            "duration": duration,
            "throughput_MBps": (sum(chan_bytes) + self.main_bytes) / duration / 1e6,
        }


def write_json(path: str, obj: dict) -> None:
    """Write ``obj`` so that a reader never sees a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:  # noqa: PTH123
        json.dump(obj, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def send(config: MigrationConfig, address: str, truth_path: str | None = None) -> dict:
    """Run one migration to ``address``; returns the truth (raises SenderError)."""
    try:
        sender = Sender(config, address)
    except ConfigError as exc:
        raise SenderError(str(exc)) from None
    return sender.run(truth_path)
