"""Live analysis of a migration while it runs (issue 5).

Three sources, one path: every source feeds the offline path's
`mfdscope.dissect.Dissector` (packet sources through `mfdscope.capture.tcp.Reassembler`,
the proxy through `StreamTap`), and snapshots are built by `mfdscope.api._build`.

* `TcpdumpSource`: libpcap through ``tcpdump -w -`` (kernel drops reported).
* `ScapySource`: Scapy's packet socket, the fallback without tcpdump (lossy).
* `Proxy`: a TCP relay between source and destination: lossless, no root.
* `LiveCapture`: the notebook helper; ``mfdscope live`` / ``mfdscope proxy``: the CLI
  (`mfdscope.live.cli.add_subcommands`).
"""
from .notebook import LiveCapture
from .proxy import Proxy
from .session import LiveSession, SourceError
from .sniff import ScapySource
from .tcpdump import TcpdumpSource


def add_subcommands(subparsers) -> None:
    from .cli import add_subcommands as _add

    _add(subparsers)


__all__ = ["LiveCapture", "LiveSession", "Proxy", "ScapySource", "SourceError",
           "TcpdumpSource", "add_subcommands"]
