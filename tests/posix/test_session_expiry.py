"""An open file must stay usable after its name is removed, even when the client's metadata
session expired in between (the client paused longer than the session timeout and opened a new
session): the client has to hold its open files again in the new session."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster
from tests.posix.util import write_file

pytestmark = pytest.mark.mount

SESSION_TIMEOUT = 8.0  # the local cluster's default


def test_open_file_survives_session_expiry(cluster: Cluster, mnt_dir: Path) -> None:
    write_file(mnt_dir / "f", b"before the pause")
    fd = os.open(mnt_dir / "f", os.O_RDWR)
    try:
        mount = cluster.pid("mount")
        os.kill(mount, signal.SIGSTOP)
        try:
            time.sleep(SESSION_TIMEOUT + 3)
        finally:
            os.kill(mount, signal.SIGCONT)
        time.sleep(0.5)
        os.unlink(mnt_dir / "f")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"before the pause"
        os.pwrite(fd, b"!", 16)
        assert os.pread(fd, 100, 0) == b"before the pause!"
    finally:
        os.close(fd)
    assert os.listdir(mnt_dir) == []
