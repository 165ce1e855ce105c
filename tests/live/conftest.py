"""Fixtures for the live tests."""
from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs (we run as root) to fill up: a full disk for --write."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)
