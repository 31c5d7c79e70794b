"""flock(2) and fcntl(2) locks across two mounts of one cluster (two FUSE client processes, as
two machines would have), on real kernel mounts."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster, run_dfs, second_mount, wait_for

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("dfs-locks")) as c:
        yield c


def locks_listing(cluster: Cluster) -> dict[str, list[dict[str, int]]]:
    out = run_dfs("locks", "--config", str(cluster.state / "admin.toml"), "--json")
    result: dict[str, list[dict[str, int]]] = json.loads(out.stdout)
    return result


def hold_flock(path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``flock ARGS path sleep 600`` in the background, in its own process group: holds the
    lock until ``kill_group`` (the ``sleep`` child shares the locked file description)."""
    return subprocess.Popen(["flock", *args, str(path), "sleep", "600"], start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_flock_conflicts_across_mounts_and_wakes_the_waiter(
    cluster: Cluster, tmp_path: Path
) -> None:
    path_a = cluster.mnt / "flock.lock"
    path_a.write_bytes(b"")
    with second_mount(cluster, tmp_path / "b") as _b:
        path_b = tmp_path / "b" / "flock.lock"
        holder = hold_flock(path_a, "-x")
        try:
            wait_for(lambda: locks_listing(cluster)["held"], 10, "the flock to be held")
            # A non-blocking attempt through the other mount fails at once.
            t0 = time.monotonic()
            nb = subprocess.run(["flock", "-n", str(path_b), "true"], check=False)
            assert nb.returncode == 1, "flock -n through mount B got a lock held through A"
            assert time.monotonic() - t0 < 5
            # A blocking one waits, and gets the lock soon after A's release.
            waiter = subprocess.Popen(
                [sys.executable, "-c", _WAIT_AND_REPORT, str(path_b)], stdout=subprocess.PIPE
            )
            wait_for(lambda: locks_listing(cluster)["waiting"], 10, "B to wait")
            released_at = time.time()
            kill_group(holder)
            out, _ = waiter.communicate(timeout=30)
            acquired_at = float(out)
            assert waiter.returncode == 0
            latency = acquired_at - released_at
            print(f"\nflock handed over {latency * 1000:.0f} ms after the holder died")
            assert latency < 1.0, latency
            assert locks_listing(cluster) == {"held": [], "waiting": []}
        finally:
            kill_group(holder)


_WAIT_AND_REPORT = """
import fcntl, sys, time
with open(sys.argv[1], "rb") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print(time.time(), flush=True)
"""


def test_interrupted_flock_returns_and_leaves_nothing_queued(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = cluster.mnt / "intr.lock"
    path.write_bytes(b"")
    with second_mount(cluster, tmp_path / "b") as _b:
        holder = hold_flock(path, "-x")
        try:
            wait_for(lambda: locks_listing(cluster)["held"], 10, "the flock to be held")
            waiter = subprocess.Popen(["flock", "-x", str(tmp_path / "b" / "intr.lock"), "true"])
            wait_for(lambda: locks_listing(cluster)["waiting"], 10, "the waiter to queue")
            t0 = time.monotonic()
            waiter.send_signal(signal.SIGINT)
            waiter.wait(10)
            assert time.monotonic() - t0 < 2, "the interrupted flock did not return at once"
            assert waiter.returncode != 0
            wait_for(
                lambda: locks_listing(cluster)["waiting"] == [], 5, "the waiter to leave the queue"
            )
            assert len(locks_listing(cluster)["held"]) == 1
        finally:
            kill_group(holder)


def test_fcntl_ranges_conflict_and_getlk_reports_the_holder(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = cluster.mnt / "ranges.dat"
    path.write_bytes(bytes(100))
    with second_mount(cluster, tmp_path / "b") as _b:
        script = """
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 10)   # bytes 10..19
fcntl.lockf(fd, fcntl.LOCK_SH, 10, 50)   # bytes 50..59
print("locked", flush=True)
time.sleep(600)
"""
        holder = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            fd = os.open(tmp_path / "b" / "ranges.dat", os.O_RDWR)
            try:
                with pytest.raises(OSError) as exc:  # overlaps the write lock
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 8)
                assert exc.value.errno in (11, 13)  # EAGAIN (EACCES on some systems)
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 10, 50)  # read/read: fine
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 30)  # a free range
                # F_GETLK names the holder's range and type.
                query = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 100, 0)
                got = fcntl.fcntl(fd, fcntl.F_GETLK, query)
                typ, _whence, start, length, _pid = struct.unpack("hhqqi", got)
                assert typ == fcntl.F_WRLCK and start == 10 and length == 10
            finally:
                os.close(fd)  # any close releases this process's locks
        finally:
            holder.kill()
            holder.wait(10)
        try:
            wait_for(
                lambda: locks_listing(cluster)["held"] == [], 15, "locks gone after the closes"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {locks_listing(cluster)}") from None


def test_killed_client_loses_its_locks_within_ten_seconds(cluster: Cluster, tmp_path: Path) -> None:
    b_dir = tmp_path / "b"
    with second_mount(cluster, b_dir) as b:
        path_b = b_dir / "dead.lock"
        path_b.write_bytes(b"")
        holder = hold_flock(path_b, "-x")
        try:
            wait_for(lambda: locks_listing(cluster)["held"], 10, "B's flock to be held")
            t0 = time.monotonic()
            b.kill()  # kill -9 of the client process that holds the lock
            b.wait(10)
            ok = subprocess.run(
                ["flock", "-w", "20", str(cluster.mnt / "dead.lock"), "true"], check=False
            )
            freed = time.monotonic() - t0
        finally:
            kill_group(holder)
        assert ok.returncode == 0
        print(f"\nlock of the killed client freed after {freed:.1f} s")
        assert freed < 10.0, freed


def test_sqlite_counter_from_two_mounts(cluster: Cluster, tmp_path: Path) -> None:
    """Two processes on two mounts increment one counter in one SQLite database; SQLite
    coordinates them with fcntl locks."""
    db_a = cluster.mnt / "counter.db"
    con = sqlite3.connect(db_a)
    con.execute("create table c (n integer)")
    con.execute("insert into c values (0)")
    con.commit()
    con.close()
    n = 150
    script = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
for _ in range(int(sys.argv[2])):
    con.execute("begin immediate")
    (v,) = con.execute("select n from c").fetchone()
    con.execute("update c set n = ?", (v + 1,))
    con.execute("commit")
con.close()
"""
    with second_mount(cluster, tmp_path / "b") as _b:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(db), str(n)], stderr=subprocess.PIPE, text=True
            )
            for db in (db_a, tmp_path / "b" / "counter.db")
        ]
        for p in procs:
            _out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
    con = sqlite3.connect(db_a)
    assert con.execute("select n from c").fetchone() == (2 * n,)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    con.close()
