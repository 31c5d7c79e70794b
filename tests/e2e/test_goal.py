"""``dfs setgoal`` / ``dfs getgoal`` on a real mount of a local cluster (three chunkservers):
the virtual xattr ``user.dfs.goal``, inheritance, placement of new chunks on ``goal``
chunkservers, and the errors a user sees."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster, run_dfs

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("dfs")) as c:
        yield c


def replica_files(cluster: Cluster, size: int) -> list[Path]:
    """Chunk data files of exactly ``size`` bytes on every chunkserver (one per replica)."""
    return [
        p
        for d in cluster.chunk_dirs()
        for p in (d / "chunks").rglob("*")
        if p.is_file() and p.suffix != ".meta" and p.stat().st_size == size
    ]


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_setgoal_recursive_and_new_file_placement(cluster: Cluster) -> None:
    d = cluster.mnt / "goal3"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_bytes(b"a")
    (d / "sub" / "b").write_bytes(b"b")
    os.symlink("a", d / "link")
    os.mkfifo(d / "fifo")

    assert run_dfs("getgoal", str(d / "a")).stdout == f"{d / 'a'}: 2\n"
    out = run_dfs("setgoal", "3", str(d), "-r").stdout
    assert out.splitlines() == [
        f"{d}:",
        " files set to 3: 2",
        " directories set to 3: 2",
        " symlinks and special files skipped: 2",
    ]
    for p in (d, d / "a", d / "sub", d / "sub" / "b"):
        assert run_dfs("getgoal", str(p)).stdout == f"{p}: 3\n"
    assert os.getxattr(d, "user.dfs.goal") == b"3"
    out = run_dfs("getgoal", "-r", str(d)).stdout
    assert " files with goal 3: 2" in out.splitlines()
    assert " directories with goal 3: 2" in out.splitlines()

    # A new file inherits the directory's goal and its chunk lands on all three servers.
    size = 777_777
    (d / "sub" / "new.bin").write_bytes(os.urandom(size))
    assert run_dfs("getgoal", str(d / "sub" / "new.bin")).stdout.endswith(": 3\n")
    assert len(replica_files(cluster, size)) == 3
    # Outside the directory the default goal (2) still applies.
    other = 777_001
    (cluster.mnt / "default.bin").write_bytes(os.urandom(other))
    assert len(replica_files(cluster, other)) == 2


def test_goal_is_not_listed(cluster: Cluster) -> None:
    f = cluster.mnt / "listed.txt"
    f.write_text("x")
    os.setxattr(f, "user.color", b"blue")
    assert os.listxattr(f) == ["user.color"]
    getfattr = shutil.which("getfattr")
    if getfattr is not None:
        out = subprocess.run(
            [getfattr, "-d", str(f)], capture_output=True, text=True, check=True
        ).stdout
        assert "user.color" in out and "user.dfs.goal" not in out


def test_goal_errors_are_one_line(cluster: Cluster, tmp_path: Path) -> None:
    f = cluster.mnt / "small.txt"
    f.write_text("x")
    line = one_line_error(run_dfs("setgoal", "4", str(f), check=False))
    assert "more than the number of chunkservers" in line
    assert run_dfs("getgoal", str(f)).stdout == f"{f}: 2\n"

    line = one_line_error(run_dfs("getgoal", str(tmp_path), check=False))
    assert line == f"dfs: error: {tmp_path} is not on a dfs mount"
    local = tmp_path / "local.txt"
    local.write_text("x")
    line = one_line_error(run_dfs("setgoal", "2", str(local), check=False))
    assert line == f"dfs: error: {local} is not on a dfs mount"
    with pytest.raises(OSError) as exc_info:
        os.getxattr(local, "user.dfs.goal")  # nothing was written there
    assert exc_info.value.errno == errno.ENODATA

    line = one_line_error(run_dfs("getgoal", str(cluster.mnt / "missing"), check=False))
    assert "missing" in line
    with pytest.raises(OSError) as exc_info:
        os.setxattr(f, "user.dfs.goal", b"three")
    assert exc_info.value.errno == errno.EINVAL
    proc = run_dfs("setgoal", "0", str(f), check=False)
    assert proc.returncode == 2 and "between 1 and 16" in proc.stderr


def test_only_the_owner_may_set_the_goal(cluster: Cluster) -> None:
    d = cluster.mnt / "owned"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    f = d / "roots"
    f.write_text("x")
    os.chmod(f, 0o666)  # writable by all: the kernel lets the call through, dfs refuses it
    code = (
        "import os\n"
        "try:\n"
        "    os.setxattr('roots', 'user.dfs.goal', b'1')\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
        "open('mine', 'w').close()\n"
        "os.setxattr('mine', 'user.dfs.goal', b'1')\n"
        "print(os.getxattr('mine', 'user.dfs.goal').decode())\n"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=4321", "--regid=4322", "--clear-groups", sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=d,
    ).stdout
    assert out.split() == [str(errno.EPERM), "1"]
    assert os.getxattr(f, "user.dfs.goal") == b"2"
