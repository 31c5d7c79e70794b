"""A file's first write that fails on every chunkserver leaves no damage behind.

The leader places a new chunk before anything is written to it, and a chunkserver creates the
chunk's file at its first write.  Here both chunkservers die just as a file is written, so the
write fails (``close`` gets EIO) after the chunk was placed, and no server ever stores it.
Before the fix that chunk stayed in the map for good: every later write of the file failed
with EIO and ``dfs fsck`` reported a missing chunk (chaos seed 8).  Now, once the servers are
back and registered, the leader drops the chunk (no acknowledged byte was in it), fsck is
clean, and the file can be written again.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.localcluster import local_cluster, run_dfs, wait_for

pytestmark = pytest.mark.mount

#: The client's patience for a write lease (the default is 60 s).
OP_TIMEOUT = 4


def test_a_first_write_that_failed_everywhere_leaves_fsck_clean(tmp_path: Path) -> None:
    with local_cluster(
        tmp_path,
        "--chunkservers", "2",
        "--set", "metaserver.chunkserver_timeout=3",
        "--set", "metaserver.write_lease=3",
        "--set", f"client.op_timeout={OP_TIMEOUT}",
    ) as c:  # fmt: skip
        admin = ("--config", str(c.state / "admin.toml"))
        keep = os.urandom(200_000)
        (c.mnt / "keep.bin").write_bytes(keep)

        def fsck_clean() -> bool:
            return run_dfs("fsck", *admin, check=False).returncode == 0

        wait_for(fsck_clean, 30, "a clean fsck before the faults")

        # Both chunkservers die; the leader still counts them alive for a few seconds, so
        # the file's chunk is placed on them, and its first write fails everywhere.
        for cs in ("cs1", "cs2"):
            os.kill(c.pid(cs), signal.SIGKILL)
        victim = c.mnt / "victim.bin"
        t0 = time.monotonic()
        # The write is buffered; the close's flush reports the failure.
        with pytest.raises(OSError) as failed, open(victim, "wb") as f:
            f.write(os.urandom(100_000))
        assert failed.value.errno == errno.EIO, failed.value
        assert time.monotonic() - t0 < 60

        chunks = json.loads(run_dfs("info", str(victim), *admin, "--json").stdout)["chunks"]
        assert len(chunks) == 1, chunks  # placed, never stored
        c.up()  # both chunkservers back, registering without the chunk

        wait_for(fsck_clean, 60, "fsck clean once the unstored chunk is dropped")
        logs = "".join(c.log(p.stem) for p in (c.state / "logs").glob("m*.log"))
        assert "never committed and held by no chunkserver; dropped from its file" in logs
        assert json.loads(run_dfs("info", str(victim), *admin, "--json").stdout)["chunks"] == []

        # The file works again, and nothing else was touched.
        again = os.urandom(150_000)
        victim.write_bytes(again)
        assert victim.read_bytes() == again
        assert (c.mnt / "keep.bin").read_bytes() == keep
        wait_for(fsck_clean, 30, "a clean fsck after the rewrite")
