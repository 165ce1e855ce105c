"""Sender and receiver joined over loopback, for tests and demos."""
from __future__ import annotations

import os
import tempfile
from typing import Callable

from .config import MigrationConfig
from .receiver import Receiver
from .sender import Sender, SenderError


def run_loopback(*, transport: str = "tcp", timeout: float = 30.0, compare: bool = True,
                 config: MigrationConfig | None = None,
                 before_send: Callable[[str], None] | None = None,
                 **options) -> tuple[dict, dict]:
    """Start a receiver on 127.0.0.1 (ephemeral port) or a unix socket in a thread,
    migrate to it, and return ``(sender_truth, receiver_report)``.

    ``options`` are `MigrationConfig` fields (``channels``, ``blocks`` or
    ``ram_size``, ``compression``, ``profile``, ``devices``, ...).  A sender error
    does not raise: it is in ``truth["error"]``; the receiver's in ``report["error"]``.
    With ``compare`` the report carries ``comparison`` against the truth.
    ``before_send(address)`` runs once the receiver listens, before the sender
    connects (e.g. to start a capture filtered on the port).
    """
    if "ram_size" in options:
        options["blocks"] = options.pop("ram_size")
    cfg = config or MigrationConfig(**options)
    cfg.validate()
    tmpdir = None
    if transport == "unix":
        tmpdir = tempfile.mkdtemp(prefix="mfdscope-")
        listen = f"unix:{os.path.join(tmpdir, 'migrate.sock')}"
    elif transport == "tcp":
        listen = "127.0.0.1:0"
    else:
        raise ValueError(f"transport must be tcp or unix, not {transport!r}")
    receiver = Receiver(cfg, listen, timeout=timeout).start()
    if before_send is not None:
        try:
            before_send(receiver.address)
        except BaseException:
            receiver.fail("aborted before the sender started")
            receiver.join()
            raise
    sender = Sender(cfg, receiver.address)
    try:
        truth = sender.run()
    except SenderError:
        truth = sender._truth or sender.truth()
    report = receiver.join()
    if compare and report is not None:
        from .truth import compare as _compare

        report["comparison"] = _compare(truth, report)
    if tmpdir:
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass
    return truth, report
