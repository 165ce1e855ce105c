"""Analysis of dissected captures: pure functions of the DataFrames.

* `throughput`: bytes per channel over time, imbalance, stalls, SYNC rounds,
  compression ratio.
* `interleave`: device-state (VFIO) buffers: placement, order, reorder depth,
  overlap between devices.
* `accounting`: ``multifd-bytes`` / ``transferred`` as each QEMU version counts them.
* `checks`: a capture against a reference sender's ground truth.

Each function takes ``packets`` (and, where needed, ``connections`` / ``timeline``)
frames, or a `mfdscope.Capture` in their place.  No file or socket access here.
"""
from . import accounting, checks, interleave, throughput
from .accounting import AccountingResult, detect_version
from .checks import check
from .interleave import device_overlaps, device_state_table, device_summary, interleaving
from .throughput import (channel_stats, compression_ratio, imbalance, stalls, sync_rounds)

# The modules `throughput` and `accounting` hold functions of the same name:
# call them as ``analysis.throughput.throughput(...)`` / ``analysis.accounting.accounting(...)``.
__all__ = ["AccountingResult", "accounting", "channel_stats", "check", "checks",
           "compression_ratio", "detect_version", "device_overlaps", "device_state_table",
           "device_summary", "imbalance", "interleave", "interleaving", "stalls", "sync_rounds",
           "throughput"]
