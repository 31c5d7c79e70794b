"""Data that survives, on real processes: a killed chunkserver's chunks are copied back to their
goal with nobody acting while a reader keeps verifying; the same chunkserver, restarted with
its old chunks after the files were rewritten, never serves them and loses them; a corrupt
replica is repaired.

The cluster runs with a short grace period (``--set metaserver.replication_grace=2``) so the
test does not wait minutes; the mechanism is the same with the default.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster, wait_for

pytestmark = pytest.mark.mount

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(
        tmp_path_factory.mktemp("dfs-data"),
        "--chunkservers", "4",
        "--set", "metaserver.replication_grace=2",
        "--set", "metaserver.chunkserver_timeout=3",
        "--set", "metaserver.write_lease=3",
        "--set", "metaserver.orphan_delay=5",
    ) as c:  # fmt: skip
        yield c


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def chunk_versions(cluster: Cluster, cs: str) -> dict[int, int]:
    """chunk id -> version of every chunk in one chunkserver's store (read from sidecars)."""
    from dfs.chunkserver import layout

    out: dict[int, int] = {}
    root = cluster.state / "data" / cs / "chunks"
    for sidecar in root.rglob("*" + layout.SIDECAR_SUFFIX):
        header = layout.decode_header(sidecar.read_bytes()[: layout.HEADER_SIZE])
        if header is not None:
            out[header.chunk_id] = header.version
    return out


def healthy(cluster: Cluster) -> bool:
    st = cluster.admin_status()
    counts = st.get("counts", {})
    return bool(counts.get("under_goal") == 0 and counts.get("missing") == 0)


class Reader(threading.Thread):
    """Reads every file over and over from a cold cache and checks its sha256."""

    def __init__(self, files: dict[Path, str]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for path, digest in list(self.files.items()):
                try:
                    got = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as exc:
                    self.errors.append(f"{path.name}: {exc}")
                    continue
                if got != digest:
                    self.errors.append(f"{path.name}: wrong bytes")
                self.reads += 1
                if self.stop.is_set():
                    return


def test_killed_chunkserver_is_re_replicated_then_its_stale_copies_go(cluster: Cluster) -> None:
    d = cluster.mnt / "survive"
    d.mkdir()
    files: dict[Path, str] = {}
    for i in range(6):
        data = os.urandom(12 * MiB + i * 4097)
        (d / f"f{i}").write_bytes(data)
        files[d / f"f{i}"] = hashlib.sha256(data).hexdigest()
    wait_for(lambda: healthy(cluster), 20, "every chunk at its goal")
    holders = {cs: chunk_versions(cluster, cs) for cs in ("cs1", "cs2", "cs3", "cs4")}
    victim = max(holders, key=lambda cs: len(holders[cs]))
    assert holders[victim], "the victim holds no replica"

    reader = Reader(files)
    reader.start()
    try:
        t0 = time.monotonic()
        os.kill(cluster.pid(victim), signal.SIGKILL)
        drop_caches()
        wait_for(
            lambda: any(
                c["id"] == victim and c["state"] != "alive"
                for c in cluster.admin_status()["chunkservers"]
            ),
            20,
            f"{victim} to be seen dead",
        )
        wait_for(lambda: healthy(cluster), 90, "the victim's chunks back at their goal")
        healed = time.monotonic() - t0
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    assert reader.errors == [], reader.errors[:5]
    assert reader.reads > 0
    copies = cluster.admin_status()["replication"]["copies"]
    assert copies >= len(holders[victim]), (copies, len(holders[victim]))
    print(f"\n{len(holders[victim])} replicas of {victim} re-replicated in {healed:.1f} s")

    # Rewrite part of every file while the victim is away: its copies become stale.
    new_files: dict[Path, str] = {}
    for path in files:
        with open(path, "r+b") as f:
            f.seek(1000)
            f.write(os.urandom(64 * 1024))
        new_files[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    old_ids = set(holders[victim])
    cluster.up()  # restarts the victim with its old chunks
    wait_for(
        lambda: any(
            c["id"] == victim and c["state"] == "alive"
            for c in cluster.admin_status()["chunkservers"]
        ),
        30,
        f"{victim} to register again",
    )
    # Its stale replicas are never served: every read from a cold cache is the new content.
    for _ in range(5):
        drop_caches()
        for path, digest in new_files.items():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name

    def stale_gone() -> bool:
        now = chunk_versions(cluster, victim)
        return all(now.get(cid) != v for cid, v in holders[victim].items() if cid in old_ids)

    wait_for(stale_gone, 30, f"{victim}'s stale replicas to be deleted")
    wait_for(lambda: healthy(cluster), 30, "the goal after the return")
    assert cluster.admin_status()["counts"]["stale_replicas"] == 0


def test_corrupt_replica_is_repaired(cluster: Cluster) -> None:
    path = cluster.mnt / "repair.bin"
    data = os.urandom(3 * MiB + 123)
    path.write_bytes(data)
    wait_for(lambda: healthy(cluster), 20, "every chunk at its goal")
    size = len(data)
    replicas = [
        p
        for cs in cluster.chunk_dirs()
        for p in (cs / "chunks").rglob("*")
        if p.is_file() and p.suffix == "" and p.stat().st_size == size
    ]
    assert len(replicas) == 2, replicas
    victim = replicas[0]
    copies_before = cluster.admin_status()["replication"]["copies"]
    with open(victim, "r+b") as f:
        f.seek(2 * MiB + 77)
        b = f.read(1)
        f.seek(2 * MiB + 77)
        f.write(bytes([b[0] ^ 0x5A]))
    # Reads pick a replica at random: keep reading (bounded) until one has gone to the
    # damaged replica first and it was reported (4 fixed reads all missed it 1 time in 16).
    for _ in range(64):
        drop_caches()
        assert path.read_bytes() == data
        status = cluster.admin_status()
        if status["counts"]["bad_replicas"] or status["replication"]["copies"] > copies_before:
            break

    def repaired() -> bool:
        copies = [
            p
            for cs in cluster.chunk_dirs()
            for p in (cs / "chunks").rglob(victim.name)
            if p.is_file() and p.suffix == ""
        ]
        return (
            len(copies) == 2
            and all(p.read_bytes() == data for p in copies)
            and cluster.admin_status()["counts"]["bad_replicas"] == 0
        )

    wait_for(repaired, 30, "the corrupt replica to be replaced by a good copy")


def test_writes_go_on_when_a_chunkserver_dies_mid_write(cluster: Cluster) -> None:
    """kill -9 of a chunkserver in the middle of a large write: the writer sees no error (the
    failed replica is dropped and the others move to a new version), and every byte is
    there afterwards."""
    wait_for(lambda: healthy(cluster), 30, "every chunk at its goal")
    path = cluster.mnt / "big-write.bin"
    block = os.urandom(MiB)
    total = 160
    victim_killed = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        try:
            with open(path, "wb") as f:
                for i in range(total):
                    f.write(bytes([i & 0xFF]) + block[1:])
                    if i == 40:
                        f.flush()
                        os.fsync(f.fileno())
                        victim_killed.wait(30)
                os.fsync(f.fileno())
        except OSError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not path.exists() or path.stat().st_size < 41 * MiB:
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.05)
        # The writer is inside a chunk now: kill a chunkserver holding its replicas.
        with_chunks = [cs.name for cs in cluster.chunk_dirs() if chunk_versions(cluster, cs.name)]
        victim = with_chunks[0]
        os.kill(cluster.pid(victim), signal.SIGKILL)
        victim_killed.set()
        t_kill = time.monotonic()
        t.join(120)
        assert not t.is_alive(), "the writer hangs"
        print(f"\nwriter finished {time.monotonic() - t_kill:.1f} s after {victim} was killed")
        assert errors == [], errors
        drop_caches()
        with open(path, "rb") as f:
            for i in range(total):
                assert f.read(MiB) == bytes([i & 0xFF]) + block[1:], f"MiB {i}"
    finally:
        victim_killed.set()
        t.join(5)
        cluster.up()
    t_up = time.monotonic()
    wait_for(lambda: healthy(cluster), 60, "every chunk back at its goal")
    print(f"healthy {time.monotonic() - t_up:.1f} s after the restart")


def up_to_date_replicas(cluster: Cluster) -> dict[int, list[bytes]]:
    """chunk id -> the bytes of every replica at the newest version found (from the files)."""
    from dfs.chunkserver import layout

    best: dict[int, tuple[int, list[bytes]]] = {}
    for cs in cluster.chunk_dirs():
        for sidecar in (cs / "chunks").rglob("*" + layout.SIDECAR_SUFFIX):
            header = layout.decode_header(sidecar.read_bytes()[: layout.HEADER_SIZE])
            if header is None or header.version == 0:
                continue
            data = layout.data_path(cs / "chunks", header.chunk_id).read_bytes()[: header.length]
            version, copies = best.get(header.chunk_id, (-1, []))
            if header.version > version:
                best[header.chunk_id] = (header.version, [data])
            elif header.version == version:
                copies.append(data)
    return {cid: copies for cid, (_v, copies) in best.items()}


def test_kill_writer_and_chunkserver_mid_write_keeps_what_was_fsynced(cluster: Cluster) -> None:
    """kill -9 of the client (the mount process) and of a chunkserver while a large file is
    being written: every byte fsynced before is intact, and once the write lease has ended no
    two up-to-date replicas differ."""
    import subprocess
    import sys

    wait_for(lambda: healthy(cluster), 30, "every chunk at its goal")
    path = cluster.mnt / "killed-writer.bin"
    script = f"""
import os, sys
block = bytes(range(256)) * 4096
fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(400):
    os.write(fd, bytes([i & 0xFF]) + block[1:])
    if i % 8 == 7:
        os.fsync(fd)
        print(i + 1, flush=True)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    synced = 0
    try:
        for line in proc.stdout:
            synced = int(line)
            if synced >= 96:
                break
        os.kill(cluster.pid("mount"), signal.SIGKILL)
        os.kill(cluster.pid("cs3"), signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert synced >= 96
    subprocess.run(["umount", "-l", str(cluster.mnt)], capture_output=True, check=False)
    cluster.up()
    block = bytes(range(256)) * 4096
    drop_caches()
    with open(path, "rb") as f:
        for i in range(synced):
            assert f.read(MiB) == bytes([i & 0xFF]) + block[1:], f"MiB {i} (fsynced) differs"
    # The writer's lease ends (write_lease = 3 s) and the leader compares the replicas.
    time.sleep(5)
    wait_for(lambda: healthy(cluster), 60, "every chunk back at its goal")
    for cid, copies in up_to_date_replicas(cluster).items():
        assert all(c == copies[0] for c in copies), f"replicas of chunk {cid} differ"
