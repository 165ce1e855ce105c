"""mfdscope: dissect and analyse QEMU live-migration multifd traffic.

``mfdscope.open(path)`` reads a pcap/pcapng file into a `Capture` with
``connections``, ``packets`` and ``expert`` DataFrames.
"""

__version__ = "0.1.0"
__all__ = ["Capture", "CaptureError", "open"]


def __getattr__(name: str):
    # imported lazily so that `mfdscope.wire` or `mfdscope.parse` stay light
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mfdscope' has no attribute {name!r}")
