"""The VFS over a real metaserver and real chunkservers (no kernel): data path and semantics."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from dfs.client.interfaces import Cred, SetAttr
from dfs.client.vfs import Vfs
from dfs.errors import Exists, FileTooLarge, NameTooLong, NotFound
from dfs.types import CHUNK_SIZE, ROOT_INODE, InodeId
from tests.helpers.cluster import InProcessCluster, inprocess_cluster

pytestmark = pytest.mark.unit

ROOT = Cred(uid=0, gid=0)


async def create_file(vfs: Vfs, name: bytes, data: bytes = b"") -> tuple[int, InodeId]:
    fh, attr = await vfs.create(ROOT_INODE, name, 0o644, os.O_WRONLY, ROOT)
    if data:
        await vfs.write(fh, 0, data)
    return fh, attr.ino


async def read_all(vfs: Vfs, ino: InodeId, size: int) -> bytes:
    fh, _ = await vfs.open(ino, os.O_RDONLY)
    try:
        return await vfs.read(fh, 0, size)
    finally:
        await vfs.release(fh, sync=False)


async def test_write_read_across_chunks_and_sizes(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, write_buffer=1 << 20) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(3 << 20)
        fh, ino = await create_file(vfs, b"f")
        # Unaligned writes that straddle the first chunk boundary.
        base = CHUNK_SIZE - (1 << 20) - 17
        await vfs.write(fh, base, data)
        await vfs.flush(fh, sync=True)
        attr = await vfs.getattr(ino)
        assert attr.size == base + len(data)
        got = await vfs.read(fh, base - 10, len(data) + 20)
        assert got == bytes(10) + data  # the hole before reads as zeros; clipped at EOF
        await vfs.release(fh, sync=True)
        # A second handle sees it (close-to-open).
        assert (await read_all(vfs, ino, 100))[:100] == bytes(100)


async def test_read_your_own_buffered_writes(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        fh, ino = await create_file(vfs, b"buffered", b"hello world")
        assert (await vfs.getattr(ino)).size == 11  # the buffered size shows at once
        await vfs.write(fh, 6, b"WORLD")
        assert await vfs.read(fh, 0, 100) == b"hello WORLD"
        await vfs.release(fh, sync=False)
        assert await read_all(vfs, ino, 100) == b"hello WORLD"


async def test_truncate_shrinks_and_zero_extends(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(300_000)
        fh, ino = await create_file(vfs, b"t", data)
        await vfs.flush(fh, sync=False)
        await vfs.setattr(ino, SetAttr(size=1000), ROOT)
        await vfs.setattr(ino, SetAttr(size=5000), ROOT)
        got = await vfs.read(fh, 0, 10_000)
        assert got == data[:1000] + bytes(4000)
        await vfs.release(fh, sync=False)
        with pytest.raises(FileTooLarge):
            await vfs.setattr(ino, SetAttr(size=1 << 62), ROOT)


async def test_explicit_mtime_survives_the_close(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        fh, ino = await create_file(vfs, b"m", b"x" * 100)
        # tar sets the mtime through the open descriptor before it closes the file.
        await vfs.setattr(ino, SetAttr(mtime_ns=1_000_000_000, atime_ns=1), ROOT)
        await vfs.flush(fh, sync=False)
        await vfs.release(fh, sync=False)
        attr = await vfs.getattr(ino)
        assert (attr.mtime_ns, attr.size) == (1_000_000_000, 100)


async def test_namespace_errors_are_typed(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        with pytest.raises(NotFound):
            await vfs.lookup(ROOT_INODE, b"missing")
        with pytest.raises(NameTooLong):
            await vfs.mkdir(ROOT_INODE, b"x" * 256, 0o755, ROOT)
        d = await vfs.mkdir(ROOT_INODE, b"d", 0o755, ROOT)
        assert stat.S_ISDIR(d.mode)
        with pytest.raises(Exists):
            await vfs.mkdir(ROOT_INODE, b"d", 0o755, ROOT)
        with pytest.raises(Exists):
            await vfs.create(ROOT_INODE, b"d", 0o644, os.O_CREAT | os.O_EXCL, ROOT)


async def test_reads_survive_a_dead_chunkserver(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        blobs = {f"f{i}".encode(): os.urandom(200_000 + i) for i in range(6)}
        inos = {}
        for name, data in blobs.items():
            fh, inos[name] = await create_file(vfs, name, data)
            await vfs.release(fh, sync=True)
        cluster.kill_chunkserver("cs1")
        await trio.sleep(0.1)
        for name, data in blobs.items():
            assert await read_all(vfs, inos[name], len(data) + 10) == data


async def test_corrupt_replica_is_skipped_and_reported(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(500_000)
        fh, ino = await create_file(vfs, b"c", data)
        await vfs.release(fh, sync=True)
        victim = _flip_a_byte(cluster, len(data))
        # Every read returns the right bytes, whichever replica the client picks first.
        for _ in range(8):
            assert await read_all(vfs, ino, len(data)) == data
        with trio.fail_after(10):
            while not await _reported_bad(cluster, victim):
                await trio.sleep(0.05)


def _flip_a_byte(cluster: InProcessCluster, size: int) -> str:
    for cs_id, root in sorted(cluster.chunk_dirs.items()):
        for p in (root / "chunks").rglob("*"):
            if p.is_file() and p.stat().st_size == size:
                with open(p, "r+b") as f:
                    f.seek(size // 2)
                    b = f.read(1)
                    f.seek(size // 2)
                    f.write(bytes([b[0] ^ 0x5A]))
                return cs_id
    raise AssertionError("no chunk file of the expected size")


async def _reported_bad(cluster: InProcessCluster, cs_id: str) -> bool:
    from dfs.rpc.client import RpcClient
    from dfs.security.identity import Role

    async with RpcClient(
        cluster.meta_address, cluster.certs[Role.ADMIN], name="t", expect_roles={Role.METASERVER}
    ) as admin:
        status = await admin.call("admin.status", {}, timeout=5)
    return bool(status["counts"].get("bad_replicas", 0)) or any(
        c["id"] == cs_id and c.get("bad_replicas") for c in status["chunkservers"]
    )
