"""The VFS over a real metaserver and real chunkservers (no kernel): data path and semantics."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from dfs.client import vfs as vfs_module
from dfs.client.interfaces import ChunkClient, ChunkRef, Cred, SetAttr
from dfs.client.vfs import Vfs
from dfs.errors import (
    ChunkNotFound,
    DataLost,
    Exists,
    FileTooLarge,
    IOFailure,
    NameTooLong,
    NotFound,
    StaleHandle,
)
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


async def test_an_inode_removed_by_another_client_is_stale_not_missing(tmp_path: Path) -> None:
    """The kernel asks about an inode it found by name; if that inode is gone (another client
    removed it, or renamed another file over its name), the answer is ESTALE, on which the
    kernel looks the name up again (ENOENT would tell the caller the name does not exist)."""
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        fh, ino = await create_file(vfs, b"f", b"data")
        await vfs.release(fh, sync=True)
        link = await vfs.symlink(ROOT_INODE, b"l", b"target", ROOT)
        d = await vfs.mkdir(ROOT_INODE, b"d", 0o755, ROOT)
        await vfs.unlink(ROOT_INODE, b"f")
        await vfs.unlink(ROOT_INODE, b"l")
        await vfs.rmdir(ROOT_INODE, b"d")
        for call in (
            lambda: vfs.getattr(ino),
            lambda: vfs.setattr(ino, SetAttr(mode=0o600), ROOT),
            lambda: vfs.setattr(ino, SetAttr(size=0), ROOT),
            lambda: vfs.open(ino, os.O_RDONLY),
            lambda: vfs.link(ino, ROOT_INODE, b"again"),
            lambda: vfs.getxattr(ino, b"user.k"),
            lambda: vfs.getxattr(ino, b"user.dfs.goal"),
            lambda: vfs.setxattr(ino, b"user.k", b"v", 0, ROOT),
            lambda: vfs.listxattr(ino),
            lambda: vfs.removexattr(ino, b"user.k", ROOT),
            lambda: vfs.readlink(link.ino),
            lambda: vfs.opendir(d.ino),
            lambda: vfs.getattr(d.ino),
        ):
            with pytest.raises(StaleHandle):
                await call()
        # A name that is not there is still ENOENT.
        with pytest.raises(NotFound):
            await vfs.lookup(ROOT_INODE, b"f")


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


async def test_a_read_waits_for_a_replica_to_come_back(tmp_path: Path) -> None:
    """No replica answers for a while (both restarting): the read asks for the locations again
    and waits, then returns the data; it fails with EIO only after ``io_retry``."""
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(100_000)
        fh, ino = await create_file(vfs, b"f", data)
        await vfs.release(fh, sync=True)
        real_read = vfs.chunks.read
        away = [5]  # reads refused before "the servers are back"

        async def read(chunk: ChunkRef, offset: int, length: int) -> bytes:
            if away[0] > 0:
                away[0] -= 1
                raise IOFailure(f"chunk {chunk.chunk_id:x}: no replica could serve it")
            return await real_read(chunk, offset, length)

        vfs.chunks.read = read  # type: ignore[method-assign]
        vfs.io_retry = 30.0
        started = trio.current_time()
        assert await read_all(vfs, ino, len(data)) == data
        assert away == [0]
        assert trio.current_time() - started >= 0.1 + 0.2 + 0.4 + 0.8  # it waited between
        away[0] = 1_000
        vfs.io_retry = 1.0
        with pytest.raises(IOFailure):
            await read_all(vfs, ino, len(data))
        assert 1_000 - away[0] < 10  # gave up after ~1 s, a handful of tries


async def test_a_write_waits_for_a_replica_that_can_take_it(tmp_path: Path) -> None:
    """No replica can take a write for a while (the metaserver answers the lease with EIO:
    all replicas restarting, or their version being settled after a leader change): the
    flush asks again and waits, then lands; it fails with EIO only after ``io_retry``."""
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        real_alloc = vfs.meta.alloc_chunk
        away = [5]  # leases refused before "the replicas are back"

        async def alloc_chunk(ino: InodeId, index: int, **kw: Any) -> ChunkRef:
            if away[0] > 0:
                away[0] -= 1
                raise IOFailure(f"chunk of inode {ino}: no live replica to write to")
            return await real_alloc(ino, index, **kw)

        vfs.meta.alloc_chunk = alloc_chunk  # type: ignore[method-assign]
        vfs.io_retry = 30.0
        data = os.urandom(100_000)
        started = trio.current_time()
        fh, ino = await create_file(vfs, b"w", data)
        await vfs.release(fh, sync=True)
        assert away == [0]
        assert trio.current_time() - started >= 0.1 + 0.2 + 0.4 + 0.8  # it waited between
        assert await read_all(vfs, ino, len(data)) == data
        away[0] = 1_000
        vfs.io_retry = 1.0
        fh, ino = await create_file(vfs, b"w2", data)
        with pytest.raises(IOFailure):
            await vfs.release(fh, sync=True)
        assert 1_000 - away[0] < 10  # gave up after ~1 s, a handful of tries


async def test_unsynced_data_in_a_chunk_dropped_as_lost_fails_one_fsync(tmp_path: Path) -> None:
    """The leader drops an uncommitted chunk that no chunkserver holds (``drop_unheld``).
    A writer whose written but unsynced bytes were in it must not see its fsync succeed on a
    fresh chunk: it names the chunk when it asks for a lease again, gets DataLost (EIO),
    once, and the file goes on working."""
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(100_000)
        fh, ino = await create_file(vfs, b"w", data)
        await vfs.flush(fh, sync=False)  # on the chunkservers, not fdatasynced
        (written,) = await vfs.meta.file_chunks(ino, 0, 1)
        real_alloc, real_sync = vfs.meta.alloc_chunk, vfs.chunks.sync
        named: list[int | None] = []

        async def alloc_chunk(ino: InodeId, index: int, **kw: Any) -> ChunkRef:
            named.append(kw.get("chunk_id"))
            if kw.get("chunk_id") == written.chunk_id:
                raise DataLost(f"chunk {written.chunk_id} was lost with every replica")
            return await real_alloc(ino, index, **kw)

        async def sync(chunk: ChunkRef) -> None:
            if chunk.chunk_id == written.chunk_id and not named:
                raise ChunkNotFound("no such chunk", failed="cs1")
            await real_sync(chunk)

        vfs.meta.alloc_chunk = alloc_chunk  # type: ignore[method-assign]
        vfs.chunks.sync = sync  # type: ignore[method-assign]
        with pytest.raises(DataLost):
            await vfs.flush(fh, sync=True)
        assert named == [written.chunk_id]
        # Reported once; later writes and fsyncs work.
        await vfs.flush(fh, sync=True)
        await vfs.write(fh, 0, b"again")
        await vfs.release(fh, sync=True)
        assert (await read_all(vfs, ino, 5)) == b"again"


async def test_corrupt_replica_is_skipped_and_reported(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(500_000)
        fh, ino = await create_file(vfs, b"c", data)
        await vfs.release(fh, sync=True)
        victim = _flip_a_byte(cluster, len(data))
        # Every read returns the right bytes, whichever replica the client picks first.  The
        # client shuffles replicas, so keep reading (a bounded number of times) until one read
        # has gone to the damaged replica first and the report has reached the metaserver:
        # with one bad replica in three, 200 reads all missing it has odds of (2/3)**200.
        reported = False
        with trio.fail_after(30):
            for _ in range(200):
                assert await read_all(vfs, ino, len(data)) == data
                if await _reported_bad(cluster, victim):
                    reported = True
                    break
                await trio.sleep(0.01)
        assert reported, "a read served around the damaged replica but nothing was reported"


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


async def test_write_behind_and_batched_small_writes(tmp_path: Path) -> None:
    # A VFS with a nursery flushes full buffers in the background; close still returns only
    # once the data is on the chunkservers and the size is committed.
    async with inprocess_cluster(tmp_path, write_buffer=256 << 10) as cluster:
        base = cluster.vfs
        assert base is not None
        async with trio.open_nursery() as nursery:
            vfs = Vfs(base.meta, base.chunks, write_buffer=256 << 10, nursery=nursery)
            data = os.urandom(3 << 20)
            fh, ino = await create_file(vfs, b"behind")
            for pos in range(0, len(data), 100_000):  # unaligned pieces, many buffers
                await vfs.write(fh, pos, data[pos : pos + 100_000])
            await vfs.flush(fh, sync=True)
            await vfs.release(fh, sync=False)
            assert (await vfs.getattr(ino)).size == len(data)
            assert await read_all(base, ino, len(data)) == data

            # Scattered 4 KiB overwrites (each buffer full of them goes out as a few batched
            # chunk.write_extents calls), across a chunk boundary.
            expect = bytearray(data)
            rng = random.Random(7)
            fh, _ = await vfs.open(ino, os.O_WRONLY)
            for _ in range(400):
                off = rng.randrange(0, len(data) - 4096) // 4096 * 4096
                piece = rng.randbytes(4096)
                await vfs.write(fh, off, piece)
                expect[off : off + 4096] = piece
            tail = CHUNK_SIZE - 10  # straddles the first chunk's end: two chunks, one flush
            await vfs.write(fh, tail, b"q" * 20)
            expect += bytes(tail + 20 - len(expect))
            expect[tail : tail + 20] = b"q" * 20
            await vfs.release(fh, sync=True)
            assert await read_all(base, ino, len(expect)) == bytes(expect)
            assert vfs.statistics()["dirty_bytes"] == 0
            nursery.cancel_scope.cancel()


class FlakyChunks:
    """The cluster's ChunkClient with writes that fail while ``failing`` is set."""

    def __init__(self, inner: ChunkClient) -> None:
        self.inner = inner
        self.failing = False

    async def read(self, chunk: ChunkRef, offset: int, length: int) -> bytes:
        return await self.inner.read(chunk, offset, length)

    async def write(
        self, chunk: ChunkRef, offset: int, data: bytes | memoryview, sync: bool
    ) -> None:
        if self.failing:
            raise IOFailure("injected write failure")
        await self.inner.write(chunk, offset, data, sync)

    async def write_extents(
        self, chunk: ChunkRef, extents: list[tuple[int, bytes | memoryview]], sync: bool
    ) -> None:
        if self.failing:
            raise IOFailure("injected write failure")
        await self.inner.write_extents(chunk, extents, sync)

    async def truncate(self, chunk: ChunkRef, length: int) -> None:
        await self.inner.truncate(chunk, length)

    async def sync(self, chunk: ChunkRef) -> None:
        await self.inner.sync(chunk)


async def test_failed_background_flush_reaches_the_writer(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        base = cluster.vfs
        assert base is not None
        chunks = FlakyChunks(base.chunks)
        buf = 64 << 10
        async with trio.open_nursery() as nursery:
            vfs = Vfs(base.meta, chunks, write_buffer=buf, nursery=nursery)
            fh, ino = await create_file(vfs, b"flaky")
            data = os.urandom(8 * buf)
            chunks.failing = True
            with pytest.raises(IOFailure):  # bounded: the writer sees the error within 3 buffers
                for i in range(8):
                    await vfs.write(fh, i * buf, data[i * buf : (i + 1) * buf])
                    await trio.sleep(0.01)  # let the background flush run (and fail)
            assert i <= 3
            chunks.failing = False
            for j in range(i + 1, 8):
                await vfs.write(fh, j * buf, data[j * buf : (j + 1) * buf])
            await vfs.release(fh, sync=True)  # the kept data goes out now
            assert await read_all(base, ino, len(data)) == data
            nursery.cancel_scope.cancel()


async def test_fsync_on_a_reopened_file_reaches_the_disks(tmp_path: Path) -> None:
    """write, close (replicated, not synced), open again, fsync: the earlier writes get synced."""
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        synced: list[int] = []
        real_sync = vfs.chunks.sync

        async def counting_sync(chunk: ChunkRef) -> None:
            synced.append(chunk.chunk_id)
            await real_sync(chunk)

        vfs.chunks.sync = counting_sync  # type: ignore[method-assign]
        fh, ino = await create_file(vfs, b"later-fsync", os.urandom(100_000))
        await vfs.flush(fh, sync=False)
        await vfs.release(fh, sync=False)
        assert synced == []
        fh2, _ = await vfs.open(ino, os.O_RDONLY)
        await vfs.flush(fh2, sync=True)
        assert len(synced) == 1
        await vfs.release(fh2, sync=False)


async def test_closed_unsynced_files_are_forgotten_with_their_last_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed, never-fsynced file is remembered for a later fsync until its last name goes
    (unlink, or a rename over it); a forgotten file whose chunk is gone does not fail the
    close of another one."""
    monkeypatch.setattr(vfs_module, "MAX_UNSYNCED_CLOSED", 2)
    async with inprocess_cluster(tmp_path) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        remembered = vfs._unsynced_closed

        async def closed_file(name: bytes) -> InodeId:
            fh, ino = await create_file(vfs, name, os.urandom(5000))
            await vfs.release(fh, sync=False)
            return ino

        a = await closed_file(b"a")
        b = await closed_file(b"b")
        assert list(remembered) == [a, b]
        await vfs.link(a, ROOT_INODE, b"a2")
        await vfs.unlink(ROOT_INODE, b"a")  # a2 still names it: an fsync may come
        assert list(remembered) == [a, b]
        await vfs.unlink(ROOT_INODE, b"a2")
        assert list(remembered) == [b]
        c = await closed_file(b"c")
        await vfs.rename(ROOT_INODE, b"c", ROOT_INODE, b"b", 0)  # c replaces b's last name
        assert list(remembered) == [c]
        # Another client deletes c: this one still remembers it, and forgetting it (the
        # bound is 2) syncs a chunk that is gone, which the next close does not see.
        d = await closed_file(b"d")
        await vfs.meta.unlink(ROOT_INODE, b"b")  # not through this VFS
        gone = {ref.chunk_id for ref in remembered[c].values()}
        real_sync = vfs.chunks.sync
        tried: list[int] = []

        async def sync(chunk: ChunkRef) -> None:
            if chunk.chunk_id in gone:
                tried.append(chunk.chunk_id)
                raise ChunkNotFound(f"chunk {chunk.chunk_id:x} was deleted")
            await real_sync(chunk)

        vfs.chunks.sync = sync  # type: ignore[method-assign]
        e = await closed_file(b"e")
        assert list(remembered) == [d, e]
        assert tried and set(tried) == gone
