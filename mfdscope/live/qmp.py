"""A minimal QMP client: ``query-migrate`` sampled on the live view's clock.

QMP is line-oriented JSON over a unix socket: a greeting, ``qmp_capabilities``, then
commands answered by ``{"return": ...}`` or ``{"error": ...}``; asynchronous
``{"event": ...}`` messages may come in between and are skipped here.
"""
from __future__ import annotations

import json
import socket
import time

QMP_TIMEOUT = 2.0  # seconds for one reply


class QmpError(Exception):
    """The QMP socket cannot be used (one-line message)."""


class QmpClient:
    """``QmpClient(path).sample()`` -> ``{"t": time, "return": query-migrate result}``."""

    def __init__(self, path: str, timeout: float = QMP_TIMEOUT):
        self.path = path
        self.error: str | None = None
        self.events: list[dict] = []
        try:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError as exc:
            raise QmpError(f"QMP socket {path}: {exc.strerror or exc}") from None
        self.file = self.sock.makefile("rb")
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise QmpError(f"QMP socket {path}: no QMP greeting ({_short(greeting)})")
            self.command("qmp_capabilities")
        except (OSError, ValueError) as exc:
            self.close()
            raise QmpError(f"QMP socket {path}: {exc}") from None

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise QmpError("QMP connection closed")
            line = line.strip()
            if line:
                return json.loads(line)

    def command(self, name: str, arguments: dict | None = None) -> dict:
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(f"{name}: {err.get('class', 'error')}: {err.get('desc', err)}")
            return reply

    def sample(self) -> dict:
        """One ``query-migrate``; on failure ``{"t", "error"}`` and the client stops."""
        t = time.time()
        if self.error is not None:
            return {"t": t, "error": self.error}
        try:
            reply = self.command("query-migrate")
        except (OSError, ValueError, QmpError) as exc:
            self.error = f"QMP query-migrate failed: {exc}"
            self.close()
            return {"t": t, "error": self.error}
        return {"t": t, "return": reply.get("return", {})}

    def close(self) -> None:
        for obj in (getattr(self, "file", None), getattr(self, "sock", None)):
            try:
                if obj is not None:
                    obj.close()
            except OSError:
                pass


def _short(obj) -> str:
    text = json.dumps(obj)
    return text if len(text) < 80 else text[:77] + "..."
