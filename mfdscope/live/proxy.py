"""The proxy tap: a TCP relay between a migration's source and destination.

It needs no privileges and cannot lose data: every connection accepted on
``listen`` is relayed unchanged to ``forward``, both directions, and the bytes each
side sent are handed to a `StreamTap` (so to the Dissector) exactly as received.

Per connection two threads pump one direction each with blocking sockets.  End of
stream is relayed as a half-close (``shutdown(SHUT_WR)``); a reset is relayed as a
reset (``SO_LINGER`` 0 then close, by the last pump to leave, so no thread ever
closes a socket another one is blocked on).  A destination that refuses a
connection ends the run: the client is reset and the error kept.
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading
import time

from ..reference.config import ConfigError, parse_address
from .session import LiveSession, SourceError

BUFSIZE = 1 << 20  # bytes per recv
CONNECT_TIMEOUT = 10.0
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def parse_tcp_address(text: str, what: str) -> tuple[str, int]:
    try:
        kind, addr = parse_address(text)
    except ConfigError as exc:
        raise SourceError(f"{what}: {exc}") from None
    if kind != "tcp":
        raise SourceError(f"{what}: the proxy relays TCP (HOST:PORT), not {text!r}")
    return addr


class _Relay:
    """One relayed connection: client socket, server socket, two pumps."""

    def __init__(self, proxy: "Proxy", client: socket.socket, peer):
        self.proxy = proxy
        self.client = client
        self.peer = peer
        self.server: socket.socket | None = None
        self.tap = None
        self.lock = threading.Lock()
        self.active = 2  # pumps still running
        self.reset_from: socket.socket | None = None  # the side that reset, if any
        self.closed = False
        self.relayed = {"c2s": 0, "s2c": 0}

    # ------------------------------------------------------------------ setup
    def run(self) -> None:
        proxy = self.proxy
        try:
            self.server = socket.create_connection(proxy.forward, timeout=CONNECT_TIMEOUT)
            self.server.settimeout(None)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self._reset(self.client)
            proxy._connection_failed(f"cannot connect to {proxy.forward_text} for client "
                                     f"{_fmt(self.peer)}: {reason}", self)
            return
        for s in (self.client, self.server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy.stopping:
            self._close_both()
            proxy._relay_done(self)
            return
        # the dissected connection is the client's: client address -> the address it
        # connected to (the proxy's listening address)
        self.tap = proxy.tap.open(_host_port(self.peer), _host_port(self.client.getsockname()))
        back = threading.Thread(target=self._pump, args=(self.server, self.client, "s2c"),
                                name=f"proxy-s2c-{self.tap.conn.index}", daemon=True)
        back.start()
        self._pump(self.client, self.server, "c2s")
        back.join()

    # ------------------------------------------------------------------ pumping
    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        buf = bytearray(BUFSIZE)
        view = memoryview(buf)
        tap = self.tap
        proxy = self.proxy
        try:
            while True:
                try:
                    n = src.recv_into(buf)
                except OSError:
                    if not proxy.stopping:
                        self._on_reset(src, direction)
                    return
                if n == 0:
                    if proxy.stopping or self.reset_from is not None:
                        return
                    tap.end(direction, "fin")
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                chunk = view[:n]
                tap.data(direction, chunk)
                self.relayed[direction] += n  # one writer per key: no lock needed
                try:
                    dst.sendall(chunk)
                except OSError:
                    if not proxy.stopping:
                        self._on_reset(dst, direction)
                    return
        finally:
            view.release()
            self._pump_done()

    def _on_reset(self, sock: socket.socket, direction: str) -> None:
        """``sock`` was reset (or failed): reset the other side too."""
        with self.lock:
            if self.reset_from is None:
                self.reset_from = sock
        tap_dir = direction if sock is (self.client if direction == "c2s" else self.server) \
            else ("s2c" if direction == "c2s" else "c2s")
        self.tap.end(tap_dir, "rst")
        for s in (self.client, self.server):  # wake the other pump
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _pump_done(self) -> None:
        with self.lock:
            self.active -= 1
            last = self.active == 0
        if last:
            self._close_both()
            self.proxy._relay_done(self)

    # ------------------------------------------------------------------ closing
    def stop(self) -> None:
        """Wake both pumps (the proxy is stopping)."""
        for s in (self.client, self.server):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _close_both(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            if s is None:
                continue
            if self.reset_from is not None and s is not self.reset_from:
                self._reset(s)
            else:
                s.close()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        sock.close()


class Proxy:
    """Relay ``listen`` -> ``forward`` and tap every connection into a session.

    Use as a live source (`start(session)`, `stop()`, `join()`), or with
    ``mfdscope proxy``.  ``address`` is the actual listening address once started.
    """

    name = "proxy"

    def __init__(self, listen: str, forward: str, *, output=None):
        self.listen_addr = parse_tcp_address(listen, "--listen")
        self.forward = parse_tcp_address(forward, "--forward")
        self.forward_text = _fmt(self.forward)
        self.output = output
        self.address: str | None = None
        self.stopping = False
        self.connections_seen = 0
        self.failures: list[str] = []
        self.session: LiveSession | None = None
        self.tap = None
        self._relays: set[_Relay] = set()
        self._all: list[_Relay] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle_since: float | None = None
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ source API
    def set_output(self, output) -> None:
        """Write the relayed traffic as a pcap into ``output`` (`CaptureFileOutput`)."""
        self.output = output

    def start(self, session: LiveSession) -> None:
        self.session = session
        self.tap = session.stream_tap(self.output)
        host, port = self.listen_addr
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
        except OSError as exc:
            raise SourceError(f"cannot listen on {_fmt(self.listen_addr)}: "
                              f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        self._sock = sock
        self.address = _fmt(sock.getsockname())
        self._accept_thread = threading.Thread(target=self._accept_loop, name="proxy-accept",
                                               daemon=True)
        self._accept_thread.start()

    def describe(self) -> str:
        return f"listening on {self.address}, forwarding to {self.forward_text}"

    def stop(self) -> None:
        """Stop accepting and wake every pump; `join` waits for them."""
        self.stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        with self._lock:
            relays = list(self._relays)
        for r in relays:
            r.stop()

    def join(self) -> None:
        if self._accept_thread is not None:
            self._accept_thread.join()
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
                self._threads = threads
            if not threads:
                break
            for t in threads:
                t.join()
        for s in (self._wake_r, self._wake_w):
            s.close()

    def idle_since(self) -> float | None:
        """Monotonic time since which no connection is open (None: busy or never used)."""
        with self._lock:
            return self._idle_since if not self._relays and self.connections_seen else None

    def stats(self) -> dict:
        with self._lock:
            open_ = len(self._relays)
            relayed = sum(sum(r.relayed.values()) for r in self._all)
        return {"source": "proxy", "listen": self.address, "forward": self.forward_text,
                "connections": self.connections_seen, "open_connections": open_,
                "bytes_relayed": relayed, "drops": 0,
                "failures": list(self.failures)}

    # ------------------------------------------------------------------ internals
    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self.stopping:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r or self.stopping:
                        return
                    try:
                        client, peer = self._sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        self.session.request_stop("error", f"accept failed: {exc.strerror}")
                        return
                    client.setblocking(True)
                    self._spawn(client, peer)
        finally:
            sel.close()
            self._sock.close()

    def _spawn(self, client: socket.socket, peer) -> None:
        relay = _Relay(self, client, peer)
        t = threading.Thread(target=relay.run, name=f"proxy-conn-{self.connections_seen}",
                             daemon=True)
        with self._lock:
            self.connections_seen += 1
            self._relays.add(relay)
            self._all.append(relay)
            self._threads.append(t)
        t.start()

    def _relay_done(self, relay: _Relay) -> None:
        with self._lock:
            self._relays.discard(relay)
            if not self._relays:
                self._idle_since = time.monotonic()

    def _connection_failed(self, message: str, relay: _Relay) -> None:
        """The first failure ends the run (one error line); later ones, usually the
        other channels of the same migration, are only counted in `stats`."""
        with self._lock:
            first = not self.failures
            self.failures.append(message)
        self._relay_done(relay)
        if first:
            self.session.request_stop("error", message)


def _host_port(sockaddr) -> tuple[str, int]:
    return str(sockaddr[0]), int(sockaddr[1])


def _fmt(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
