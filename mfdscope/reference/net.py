"""Small socket helpers shared by the reference sender and receiver."""
from __future__ import annotations

import os
import socket

from .config import ConfigError, format_address, parse_address


def connect(address: str, timeout: float | None = 10.0) -> socket.socket:
    """A connected stream socket to ``HOST:PORT`` or ``unix:PATH``; OSError on failure."""
    kind, addr = parse_address(address)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection(addr, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


def listen(address: str, backlog: int = 64) -> tuple[socket.socket, str]:
    """A listening socket and its actual address (port 0 becomes the ephemeral port)."""
    kind, addr = parse_address(address)
    if kind == "unix":
        if os.path.exists(addr):
            raise ConfigError(f"unix socket path {addr} already exists")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(addr)
        sock.listen(backlog)
        return sock, format_address(kind, addr)
    infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(sockaddr)
    sock.listen(backlog)
    host, port = sock.getsockname()[:2]
    return sock, format_address(kind, (host, port))


def sendv(sock: socket.socket, parts: list) -> int:
    """writev-all: send every buffer of ``parts`` in order (qio_channel_writev_all)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    total = sum(len(v) for v in views)
    while views:
        sent = sock.sendmsg(views[:1024])
        while sent:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0
    return total


def close_quietly(sock: socket.socket | None, how: int | None = socket.SHUT_RDWR) -> None:
    if sock is None:
        return
    if how is not None:
        try:
            sock.shutdown(how)
        except OSError:
            pass
    try:
        sock.close()
    except OSError:
        pass
