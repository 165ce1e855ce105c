"""Reference implementation of both ends of the multifd protocol (issue 3).

* `Sender` / `send`: QEMU's source side over TCP or unix sockets, with ground truth.
* `Receiver` / `receive`: QEMU's destination side, validating like QEMU.
* `run_loopback`: both, joined over loopback, for tests and demos.
* `cli_main` / `add_subcommands`: ``mfdscope reference send|receive``.
"""
from .config import ConfigError, MigrationConfig
from .loopback import run_loopback
from .receiver import Receiver, ReceiverError, receive
from .sender import Sender, SenderError, send
from .truth import compare


def cli_main(argv=None) -> int:
    from .cli import cli_main as _main

    return _main(argv)


def add_subcommands(subparsers) -> None:
    from .cli import add_subcommands as _add

    _add(subparsers)


__all__ = ["ConfigError", "MigrationConfig", "Receiver", "ReceiverError", "Sender",
           "SenderError", "add_subcommands", "cli_main", "compare", "receive",
           "run_loopback", "send"]
