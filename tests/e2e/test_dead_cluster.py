"""Nothing hangs for ever: with every server dead, calls on the mount fail with EIO after the
client's ``op_timeout`` (at once on Ctrl-C), and ``dfs local down`` unmounts even with calls
in flight and files open (they end with ECONNABORTED)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.localcluster import local_cluster

pytestmark = pytest.mark.mount

OP_TIMEOUT = 3.0

_STAT = """
import os, sys, time
t0 = time.monotonic()
try:
    os.stat(sys.argv[1])
    print("ok", time.monotonic() - t0)
except OSError as exc:
    print(exc.errno, time.monotonic() - t0)
"""


_STAT_INTR = """
import os, signal, sys
class Interrupted(Exception):
    pass
def stop(*_):
    raise Interrupted
signal.signal(signal.SIGINT, stop)
try:
    os.stat(sys.argv[1])
    print("ok")
except Interrupted:
    print("interrupted")
except OSError as exc:
    print(exc.errno)
"""


def _kill_servers(state: Path) -> None:
    for pid_file in (state / "run").glob("*.pid"):
        if not pid_file.name.startswith("mount"):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_every_server_dead_means_eio_then_down_still_unmounts(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "--set", f"client.op_timeout={OP_TIMEOUT}") as c:
        (c.mnt / "f").write_bytes(b"data")
        (c.mnt / "d").mkdir()
        fd = os.open(c.mnt / "f", os.O_RDONLY)  # stays open through the unmount
        _kill_servers(c.state)
        calls: list[tuple[str, Callable[[], object]]] = [
            ("stat", lambda: os.stat(c.mnt / "missing")),
            ("read", (c.mnt / "f").read_bytes),
            ("mkdir", lambda: os.mkdir(c.mnt / "d" / "new")),
        ]
        for what, call in calls:
            t0 = time.monotonic()
            with pytest.raises(OSError) as info:
                call()
            took = time.monotonic() - t0
            assert info.value.errno == errno.EIO, (what, info.value)
            assert took < OP_TIMEOUT + 5, (what, took)
        # Ctrl-C interrupts a call waiting for the dead servers at once (FUSE_INTERRUPT).
        waiting = subprocess.Popen(
            [sys.executable, "-c", _STAT_INTR, str(c.mnt / "d" / "x")],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        t0 = time.monotonic()
        waiting.send_signal(signal.SIGINT)
        out, _ = waiting.communicate(timeout=10)
        assert out.strip() == "interrupted", out
        assert time.monotonic() - t0 < 1.0
        # A call in flight and an open file do not stop the unmount.
        pending = subprocess.Popen(
            [sys.executable, "-c", _STAT, str(c.mnt / "d" / "other")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            c.down()
            assert time.monotonic() - t0 < 20
            assert not os.path.ismount(c.mnt)
            out, _ = pending.communicate(timeout=OP_TIMEOUT + 10)
            code = int(out.split()[0])
            assert code in (errno.EIO, errno.ECONNABORTED, errno.ENOTCONN), out
        finally:
            with contextlib.suppress(OSError):  # ENOTCONN: the connection is gone
                os.close(fd)
            if pending.poll() is None:
                pending.kill()
