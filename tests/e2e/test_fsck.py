"""``dfs fsck`` on a real cluster: exit 0 when clean, 1 naming the damaged files by path, 2
when it cannot run; ``--json`` for scripts."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.localcluster import local_cluster, run_dfs

pytestmark = pytest.mark.mount


def test_fsck_reports_damage_by_path_and_exits_by_state(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "--chunkservers", "2") as c:
        admin = ("--config", str(c.state / "admin.toml"))
        (c.mnt / "docs").mkdir()
        (c.mnt / "docs" / "a.bin").write_bytes(os.urandom(300_000))
        (c.mnt / "b.bin").write_bytes(os.urandom(1000))
        # Right after the writes a replica may still be on its way (a chain member that
        # failed is dropped and copied again): wait for the cluster to settle, then clean.
        deadline = time.monotonic() + 30
        while True:
            clean = run_dfs("fsck", *admin, check=False)
            if clean.returncode != 1 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert clean.returncode == 0, clean.stdout
        assert "2 files" in clean.stdout and clean.stdout.strip().endswith("clean")
        report = json.loads(run_dfs("fsck", *admin, "--json").stdout)
        assert report["clean"] and report["checked"]["files"] == 2

        # One of the two chunkservers dies: every chunk is under its goal of 2.
        os.kill(c.pid("cs2"), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            damaged = run_dfs("fsck", *admin, "--json", check=False)
            if damaged.returncode == 1 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert damaged.returncode == 1, damaged.stdout + damaged.stderr
        report = json.loads(damaged.stdout)
        assert sorted(e["path"] for e in report["under_goal"]) == ["/b.bin", "/docs/a.bin"]
        text = run_dfs("fsck", *admin, check=False)
        assert text.returncode == 1
        assert "2 chunks under their goal" in text.stdout and "/docs/a.bin" in text.stdout
        # Only a subtree, by its path on the mount.
        part = json.loads(
            run_dfs("fsck", str(c.mnt / "docs"), *admin, "--json", check=False).stdout
        )
        assert [e["path"] for e in part["under_goal"]] == ["/docs/a.bin"]

        # Cannot run: a path that does not exist, or no metaserver answers.
        missing = run_dfs("fsck", str(c.mnt / "nope"), *admin, check=False)
        assert missing.returncode == 2 and "could not check" in missing.stderr
        assert "Traceback" not in missing.stderr
