"""What one client sees of another's namespace changes, on two real kernel mounts (two FUSE
client processes, as two machines would have).

``rename`` over an existing name is atomic: a process on the other mount that looks the name
up finds the old file or the new one, never nothing."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster, second_mount

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Attributes not cached: each stat asks the mount for the attributes of the inode the
    # kernel found by the name, which another client may have just freed.
    with local_cluster(tmp_path_factory.mktemp("dfs-two"), "--set", "client.attr_timeout=0") as c:
        yield c


#: Renames over one name, done as fast as mount A can.
ROUNDS = 200


def test_a_name_renamed_over_elsewhere_never_vanishes(cluster: Cluster, tmp_path: Path) -> None:
    """Mount B stats ``x`` in a loop while mount A renames 200 files over it.  The kernel
    finds ``x`` (LOOKUP, or its cache) and then asks for that inode's attributes (GETATTR); a
    rename on A in between frees that inode.  B must answer ESTALE then, so that the kernel
    looks the name up again: ENOENT would be a lie (``x`` always exists).  Before that was
    so, one stat in five to ten failed with ENOENT here."""
    a = cluster.mnt
    with second_mount(cluster, tmp_path / "b"):
        b = tmp_path / "b"
        (a / "x").write_bytes(b"0")
        for i in range(ROUNDS):
            (a / f"n{i}").write_bytes(b"%d" % i)
        time.sleep(1)  # mount A's holds of the files it wrote end 50 ms after each close
        renamed = threading.Event()

        def renamer() -> None:
            try:
                for i in range(ROUNDS):
                    os.rename(a / f"n{i}", a / "x")
            finally:
                renamed.set()

        thread = threading.Thread(target=renamer)
        thread.start()
        stats = 0
        errors: dict[str, int] = {}
        try:
            deadline = time.monotonic() + 120
            while not renamed.is_set() and time.monotonic() < deadline:
                stats += 1
                try:
                    os.stat(b / "x")
                except OSError as exc:
                    name = errno.errorcode[exc.errno or 0]
                    errors[name] = errors.get(name, 0) + 1
        finally:
            thread.join(60)
        assert renamed.is_set() and stats > ROUNDS
        assert "ENOENT" not in errors, f"{stats} stats through B: {errors}"
        # The kernel retries once: ESTALE reaches the caller only when the name was replaced
        # again during the retry, which this back-to-back renaming makes possible but rare.
        assert errors.get("ESTALE", 0) * 50 < stats, f"{stats} stats through B: {errors}"
        assert set(errors) <= {"ESTALE"}, errors
        assert (b / "x").read_bytes() == b"%d" % (ROUNDS - 1)
