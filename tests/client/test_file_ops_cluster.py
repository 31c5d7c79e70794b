"""fallocate and SEEK_DATA/SEEK_HOLE in the VFS over a real metaserver and chunkservers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dfs.client.interfaces import Cred
from dfs.client.vfs import Vfs
from dfs.errors import FileTooLarge, InvalidArgument, NotSupported
from dfs.types import CHUNK_SIZE, ROOT_INODE, InodeId
from tests.helpers.cluster import inprocess_cluster

pytestmark = pytest.mark.unit

ROOT = Cred(uid=0, gid=0)
MIB = 1 << 20
KEEP = Vfs.FALLOC_FL_KEEP_SIZE
PUNCH = Vfs.FALLOC_FL_PUNCH_HOLE | Vfs.FALLOC_FL_KEEP_SIZE


async def create_file(vfs: Vfs, name: bytes) -> tuple[int, InodeId]:
    fh, attr = await vfs.create(ROOT_INODE, name, 0o644, os.O_RDWR, ROOT)
    return fh, attr.ino


async def chunk_indexes(vfs: Vfs, ino: InodeId) -> list[int]:
    return [c.index for c in await vfs.meta.file_chunks(ino, 0, 1 << 20)]


async def test_fallocate_grows_the_committed_size(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, chunkservers=1) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        fh, ino = await create_file(vfs, b"f")
        await vfs.write(fh, 0, b"abc")  # buffered: landed with the new size
        await vfs.fallocate(fh, 0, 5 * MIB, 0)
        attr = await vfs.meta.getattr(ino)
        assert attr.size == 5 * MIB
        assert await vfs.read(fh, 0, 6) == b"abc" + bytes(3)
        await vfs.fallocate(fh, 0, 100, 0)  # inside: nothing changes
        await vfs.fallocate(fh, 0, 10 * MIB, KEEP)
        assert (await vfs.meta.getattr(ino)).size == 5 * MIB
        with pytest.raises(NotSupported):
            await vfs.fallocate(fh, 0, 10, 0x10)  # FALLOC_FL_ZERO_RANGE
        with pytest.raises(NotSupported):
            await vfs.fallocate(fh, 0, 10, Vfs.FALLOC_FL_PUNCH_HOLE)  # without KEEP_SIZE
        with pytest.raises(InvalidArgument):
            await vfs.fallocate(fh, 0, 0, 0)
        with pytest.raises(FileTooLarge):
            await vfs.fallocate(fh, 1 << 62, 10, 0)
        await vfs.release(fh, sync=False)


async def test_punch_hole_drops_buffered_bytes_and_whole_chunks(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, chunkservers=2, write_buffer=4 * MIB) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        fh, ino = await create_file(vfs, b"p")
        a, b, c = os.urandom(MIB), os.urandom(MIB), os.urandom(MIB)
        await vfs.write(fh, 0, a)
        await vfs.write(fh, CHUNK_SIZE - MIB // 2, b)
        await vfs.flush(fh, sync=True)
        await vfs.write(fh, 2 * CHUNK_SIZE, c)  # still buffered when the hole is punched
        size = 2 * CHUNK_SIZE + MIB
        assert await chunk_indexes(vfs, ino) == [0, 1]
        await vfs.fallocate(fh, 100, 2 * CHUNK_SIZE + 1000 - 100, PUNCH)
        assert await chunk_indexes(vfs, ino) == [0, 2]
        assert (await vfs.meta.getattr(ino)).size == size
        assert await vfs.read(fh, 0, MIB) == a[:100] + bytes(MIB - 100)
        assert await vfs.read(fh, CHUNK_SIZE - MIB // 2, MIB) == bytes(MIB)
        assert await vfs.read(fh, 2 * CHUNK_SIZE, MIB) == bytes(1000) + c[1000:]
        # A hole inside buffered data, then one inside a chunk's middle.
        await vfs.write(fh, 10 * MIB, a)
        await vfs.fallocate(fh, 10 * MIB + 10, 20, PUNCH)
        await vfs.fallocate(fh, 2 * CHUNK_SIZE + 5000, 100, PUNCH)
        await vfs.release(fh, sync=True)
        fh, _ = await vfs.open(ino, os.O_RDONLY)
        assert await vfs.read(fh, 10 * MIB, MIB) == a[:10] + bytes(20) + a[30:]
        assert await vfs.read(fh, 2 * CHUNK_SIZE + 4990, 200) == (
            c[4990:5000] + bytes(100) + c[5100:5190]
        )
        assert (await vfs.getattr(ino)).size == size
        await vfs.release(fh, sync=False)


async def test_seek_data_and_hole(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, chunkservers=1) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data, hole = Vfs.SEEK_DATA, Vfs.SEEK_HOLE
        fh, ino = await create_file(vfs, b"s")
        assert await vfs.lseek(fh, 0, data) is None  # empty: no data at all
        await vfs.write(fh, 0, b"a" * 4096)
        await vfs.write(fh, 130 * MIB, b"b" * 4096)  # buffered: landed before answering
        size = 130 * MIB + 4096
        assert await vfs.lseek(fh, 0, data) == 0
        assert await vfs.lseek(fh, 0, hole) == CHUNK_SIZE
        assert await vfs.lseek(fh, CHUNK_SIZE + 1, hole) == CHUNK_SIZE + 1
        assert await vfs.lseek(fh, CHUNK_SIZE + 1, data) == 2 * CHUNK_SIZE
        assert await vfs.lseek(fh, 2 * CHUNK_SIZE + 9, data) == 2 * CHUNK_SIZE + 9
        assert await vfs.lseek(fh, 2 * CHUNK_SIZE, hole) == size
        for whence in (data, hole):
            assert await vfs.lseek(fh, size, whence) is None
            assert await vfs.lseek(fh, -1, whence) is None
        with pytest.raises(InvalidArgument):
            await vfs.lseek(fh, 0, os.SEEK_END)
        # Punching the last chunk leaves no data after the first one.
        await vfs.fallocate(fh, 2 * CHUNK_SIZE, size - 2 * CHUNK_SIZE, PUNCH)
        assert await vfs.lseek(fh, CHUNK_SIZE, data) is None
        assert await chunk_indexes(vfs, ino) == [0]
        await vfs.release(fh, sync=False)
