"""Scapy's packet socket as a fallback capture source (where tcpdump is missing).

Frames are read with Scapy's Linux listen socket (``conf.L2listen``: AF_PACKET, BPF
filter, kernel timestamps) but never turned into Scapy packets: they are batched
raw into the same `PacketBatch` / `Reassembler` / `Dissector` path as files.

Known limits, reported loudly in the output and as expert rows:
* on a loopback interface every segment is seen twice (outgoing, then incoming): the
  outgoing copies are dropped by direction (``sll_pkttype == PACKET_OUTGOING``) and
  counted as ``duplicates_dropped``;
* a Python reader cannot keep up with loopback speed: the kernel drops frames
  (``PACKET_STATISTICS``, reported as ``drops``) and the streams get holes.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

import numpy as np

from ..capture.decode import LINKTYPE_ETHERNET, LINKTYPE_RAW
from ..capture.pcapfile import PacketBatch
from ..capture.pcapwriter import PcapWriter
from .session import LiveSession, SourceError

SOL_PACKET = getattr(socket, "SOL_PACKET", 263)
PACKET_STATISTICS = 6  # linux/if_packet.h: struct tpacket_stats {u32 packets, drops}
PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IFF_LOOPBACK = 0x8  # linux/if.h
RCVBUF = 64 << 20  # socket receive buffer asked for (root may exceed rmem_max)
MAX_FRAME = 256 << 10  # loopback GSO frames exceed 65,535 bytes
BPF_RET_K = 0x06  # BPF_RET | BPF_K: accept k bytes of the frame
BATCH_FRAMES = 512  # frames per batch handed to the reassembler at most


def is_loopback(iface: str) -> bool:
    try:
        with open(f"/sys/class/net/{iface}/flags") as fh:  # noqa: PTH123
            return bool(int(fh.read(), 16) & IFF_LOOPBACK)
    except (OSError, ValueError):
        return iface == "lo"


class ScapySource:
    """Sniff ``iface`` with Scapy's listen socket, BPF filter ``bpf``."""

    name = "scapy"

    def __init__(self, iface: str = "lo", bpf: str = "tcp", *, output=None):
        self.iface, self.bpf = iface, bpf
        self.output = output
        self.loopback = is_loopback(iface)
        self.session: LiveSession | None = None
        self.sock = None
        self.frames = 0
        self.duplicates_dropped = 0
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.filter_applied = True
        self._stopping = False
        self._last_packet: float | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stats_lock = threading.Lock()
        self._writer = None

    def set_output(self, output) -> None:
        self.output = output

    def describe(self) -> str:
        return (f"capturing on {self.iface} with Scapy's packet socket, filter "
                f"{self.bpf if self.filter_applied else 'none'!r} (lossy at high rates; "
                "drops and holes are reported)")

    # ------------------------------------------------------------------ source API
    def start(self, session: LiveSession) -> None:
        self.session = session
        try:
            import scapy.arch  # noqa: F401  (installs conf.L2listen for this platform)
            from scapy.config import conf
            from scapy.error import Scapy_Exception
        except ImportError as exc:
            raise SourceError(f"Scapy is not available: {exc}") from None
        try:
            self.sock = conf.L2listen(iface=self.iface, nofilter=1)
            try:
                _attach_filter(self.sock.ins, self.bpf, self.iface)
            except (ImportError, OSError, Scapy_Exception) as exc:  # needs libpcap
                self.filter_applied = False
                session.warn(f"Scapy could not set the BPF filter ({exc}): every frame on "
                             f"{self.iface} is read")
        except PermissionError:
            raise SourceError(f"cannot open a packet socket on {self.iface}: permission "
                              "denied (needs root or CAP_NET_RAW; --proxy needs neither)") from None
        except OSError as exc:
            raise SourceError(f"cannot sniff on {self.iface}: {exc.strerror or exc}") from None
        ins = self.sock.ins
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                ins.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                break
            except OSError:
                continue
        self._read_kernel_stats()  # start counting from now
        self.linktype = LINKTYPE_ETHERNET if getattr(self.sock, "lvl", 2) == 2 else LINKTYPE_RAW
        if self.output is not None:
            self._writer = PcapWriter(self.output, linktype=self.linktype, nanosecond=True)
        session.warn("Scapy source: frames are read by Python and the kernel drops what it "
                     "cannot hold at loopback speed: figures are lower bounds (see drops and "
                     "holes); use tcpdump or --proxy for exact ones")
        if self.loopback:
            session.warn(f"Scapy source on loopback {self.iface}: every segment is seen twice; "
                         "the outgoing copies are dropped (duplicates_dropped)")
        ins.setblocking(False)
        self._thread = threading.Thread(target=self._loop, name="scapy-sniff", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        self._read_kernel_stats()
        if self.sock is not None:
            self.sock.close()
        for s in (self._wake_r, self._wake_w):
            s.close()

    def idle_since(self) -> float | None:
        return self._last_packet

    def stats(self) -> dict:
        if not self._stopping:
            self._read_kernel_stats()
        with self._stats_lock:
            return {"source": "scapy", "interface": self.iface,
                    "filter": self.bpf if self.filter_applied else None,
                    "drops": self.kernel_drops, "kernel_packets": self.kernel_packets,
                    "frames": self.frames, "duplicates_dropped": self.duplicates_dropped,
                    "dedup": "outgoing copies dropped (loopback)" if self.loopback else None}

    # ------------------------------------------------------------------ internals
    def _read_kernel_stats(self) -> None:
        if self.sock is None or self.sock.ins is None:
            return
        try:
            raw = self.sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return
        packets, drops = struct.unpack("II", raw)  # reset by every read
        with self._stats_lock:
            self.kernel_packets += packets
            self.kernel_drops += drops

    def _loop(self) -> None:
        poller = select.poll()
        ins = self.sock.ins
        poller.register(ins.fileno(), select.POLLIN)
        poller.register(self._wake_r.fileno(), select.POLLIN)
        recv = self.sock._recv_raw  # (frame, sockaddr_ll, kernel timestamp)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}
                # read all the socket holds (when stopping too: it was captured)
                while self._read_batch(recv, ins):
                    pass
                if self._wake_r.fileno() in ready:
                    break
        except OSError as exc:
            if not self._stopping:
                self.session.request_stop("source", f"Scapy socket failed: {exc.strerror or exc}")

    def _read_batch(self, recv, ins) -> bool:
        """Read up to BATCH_FRAMES frames without blocking and feed them; True when the
        socket may hold more."""
        frames, times = [], []
        for _ in range(BATCH_FRAMES):
            try:
                data, sa_ll, ts = recv(ins, MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            if self.loopback and sa_ll[2] == PACKET_OUTGOING:
                self.duplicates_dropped += 1
                continue
            frames.append(data)
            times.append(time.time() if ts is None else ts)
        else:
            if frames:
                self._feed(frames, times)
            return True
        if frames:
            self._feed(frames, times)
        return False

    def _feed(self, frames: list[bytes], times: list[float]) -> None:
        lengths = np.fromiter((len(f) for f in frames), np.int64, len(frames))
        buf = b"".join(frames)
        off = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        batch = PacketBatch(buf, np.asarray(times, np.float64), off, lengths, lengths.copy(),
                            np.full(len(frames), self.linktype, np.int32))
        self.session.add_batch(buf, batch)
        self.frames += len(frames)
        self._last_packet = time.monotonic()
        if self._writer is not None and not self.output.failed:
            for t, f in zip(times, frames):
                self._writer.write_frame(t, f)
            self.output.flush_if_full()


def _attach_filter(sock, bpf: str, iface: str) -> None:
    """Scapy's BPF compilation, with the snap length fixed.

    Scapy compiles filters for a 65,535-byte snap length ("ret #65535"): the kernel
    would cut loopback GSO frames (65,549 bytes) and every one would leave a hole.
    The accepting returns are raised to `MAX_FRAME` before the filter is attached.
    """
    from scapy.arch.common import compile_filter, free_filter
    from scapy.data import SO_ATTACH_FILTER
    from scapy.libs.structures import sock_fprog

    prog = compile_filter(bpf, iface)
    try:
        for i in range(prog.bf_len):
            ins = prog.bf_insns[i]
            if ins.code == BPF_RET_K and ins.k > 0:
                ins.k = MAX_FRAME
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                        bytes(sock_fprog(prog.bf_len, prog.bf_insns)))
    finally:
        free_filter(prog)


def scapy_available() -> bool:
    try:
        import scapy.config  # noqa: F401
    except ImportError:
        return False
    return os.name == "posix"
