"""notebooks/analysis.ipynb runs clean on a committed capture (nbclient, python3 kernel)."""
from __future__ import annotations

import pytest

from conftest import QEMU, ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'CAPTURE = "../captures/qemu/qemu10-nocomp-4ch.pcap"' in \
        tagged[0].source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


@pytest.mark.parametrize("name", ["qemu10-nocomp-4ch", "qemu72-zlib-4ch"])
def test_runs_clean(name, monkeypatch):
    monkeypatch.setenv("MFDSCOPE_CAPTURE", str(QEMU / f"{name}.pcap"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # io graph, timeline, accounting chart
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "matches query-migrate multifd-bytes" in text
