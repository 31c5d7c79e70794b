"""Full disks on real processes: a write that does not fit fails with ENOSPC, nothing already
stored is damaged, full chunkservers get no new chunks, and deleting files makes room again."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster, wait_for

pytestmark = pytest.mark.mount

MiB = 1 << 20
CAPACITY = 200 * MiB


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(
        tmp_path_factory.mktemp("dfs-full"), "--set", f"chunkserver.capacity_bytes={CAPACITY}"
    ) as c:
        yield c


def write_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes with fsync; return the sha256 (raises OSError)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            h.update(block)
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def test_enospc_then_room_again(cluster: Cluster) -> None:
    kept: dict[Path, str] = {}
    failure: OSError | None = None
    # Three chunkservers of 200 MiB with goal 2 hold about 300 MiB of files.
    for i in range(12):
        path = cluster.mnt / f"fill{i}"
        try:
            kept[path] = write_file(path, 48 * MiB)
        except OSError as exc:
            failure = exc
            break
    assert failure is not None, "the cluster never filled up"
    assert failure.errno == errno.ENOSPC, failure
    assert len(kept) >= 3, len(kept)
    # Nothing stored before is damaged.
    for path, digest in kept.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name
    # df shows the cluster (nearly) full.
    st = os.statvfs(cluster.mnt)
    assert st.f_bavail * st.f_frsize < 3 * CAPACITY // 4
    # Deleting files frees space on the chunkservers; new writes fit again.
    for path in list(kept)[:3]:
        path.unlink()
        del kept[path]
    for stale in cluster.mnt.glob("fill*"):
        if stale not in kept:
            stale.unlink()

    def room() -> bool:
        rows = cluster.admin_status()["chunkservers"]
        return sum(int(r["free"]) for r in rows) >= 200 * MiB

    wait_for(room, 30, "the deleted files' space to come back")
    digest = write_file(cluster.mnt / "after", 48 * MiB)
    assert hashlib.sha256((cluster.mnt / "after").read_bytes()).hexdigest() == digest
    for path, digest in kept.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name
