"""The per-flow wire timeline: exact sums, bounded memory, absolute bin alignment."""
from __future__ import annotations

import numpy as np
import pytest

from mfdscope.capture.tcp import SPAN_DTYPE
from mfdscope.dissect import Timeline


def spans(times, length=1448, wire=1514):
    s = np.zeros(len(times), SPAN_DTYPE)
    s["time"], s["length"], s["wire_len"] = times, length, wire
    return s


@pytest.mark.parametrize("max_bins", [4, 64, 1 << 16])
def test_sums_equal_brute_force_binning(max_bins):
    rng = np.random.default_rng(1)
    tl = Timeline(0.001, max_bins=max_bins)
    seen = {0: [], 1: [], 2: []}
    for k in range(60):
        # mostly increasing times, one batch earlier than everything before it
        t = 1000 + k * 0.05 + rng.random(15) * 0.2 if k != 40 else 999.0 + rng.random(3)
        tl.add(k % 3, spans(t))
        seen[k % 3] += list(t)
    assert max(a.shape[1] for a in tl.flows.values()) <= max_bins
    width = tl.bin_seconds
    rows = tl.rows()
    for flow, times in seen.items():
        want = {}
        for t in times:
            b = int(np.floor(t / width))
            want[b] = want.get(b, 0) + 1
        got = {round(t0 / width): n for f, t0, p, fr, n in rows if f == flow}
        assert got == want
        assert all(p == 1448 * n and fr == 1514 * n for f, _, p, fr, n in rows if f == flow)


def test_a_long_capture_coarsens_instead_of_growing():
    tl = Timeline(0.001)
    for k in range(600):  # ten minutes, one batch a second
        tl.add(0, spans(1000.0 + k + np.linspace(0, 0.9, 50)))
    assert tl.flows[0].shape[1] <= tl.max_bins and tl.bin_seconds == 0.016
    assert sum(r[4] for r in tl.rows()) == 600 * 50
