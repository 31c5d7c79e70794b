"""The best-effort readahead knob of a mount (``dfs.fuse.mount.set_readahead``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from dfs.fuse.mount import mount_device, set_readahead

pytestmark = pytest.mark.unit


def test_mount_device_reads_the_mount_table() -> None:
    device = mount_device("/")
    assert device is not None and re.fullmatch(r"\d+:\d+", device)


def test_set_readahead_never_fails_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dfs.fuse.mount")
    # Not a mount point: nothing to tune, one log line, no exception.
    assert mount_device(str(tmp_path)) is None
    assert set_readahead(str(tmp_path), 8192) is False
    assert "readahead not raised" in caplog.text
