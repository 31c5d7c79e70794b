"""The replication goal through the VFS (virtual xattr ``user.dfs.goal``) over a real
metaserver and three real chunkservers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dfs.client.interfaces import Cred
from dfs.client.vfs import XATTR_GOAL, Vfs
from dfs.errors import InvalidArgument, NoAttribute, NotPermitted, RangeError
from dfs.types import CHUNK_SIZE, ROOT_INODE, InodeId
from tests.helpers.cluster import inprocess_cluster

pytestmark = pytest.mark.unit

ROOT = Cred(uid=0, gid=0)
USER = Cred(uid=1000, gid=1000)
OTHER = Cred(uid=1001, gid=1000)


async def write_file(vfs: Vfs, parent: InodeId, name: bytes, offset: int = 0) -> InodeId:
    fh, attr = await vfs.create(parent, name, 0o644, os.O_WRONLY, USER)
    await vfs.write(fh, offset, b"data")
    await vfs.release(fh, sync=True)
    return attr.ino


async def replicas(vfs: Vfs, ino: InodeId, index: int = 0) -> int:
    (chunk,) = await vfs.meta.file_chunks(ino, index, 1)
    return len(chunk.servers)


async def test_goal_xattr_sets_and_is_inherited(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, chunkservers=3) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        d = (await vfs.mkdir(ROOT_INODE, b"d", 0o755, USER)).ino
        old = await write_file(vfs, d, b"old")
        assert await vfs.getxattr(d, XATTR_GOAL) == b"2"  # the cluster's default
        assert await replicas(vfs, old) == 2

        await vfs.setxattr(d, XATTR_GOAL, b"3", 0, USER)
        assert await vfs.getxattr(d, XATTR_GOAL) == b"3"
        assert (await vfs.getattr(d)).goal == 3
        assert await vfs.getgoal(d) == 3
        assert XATTR_GOAL not in await vfs.listxattr(d)

        new = await write_file(vfs, d, b"new")
        assert await vfs.getxattr(new, XATTR_GOAL) == b"3"
        assert await replicas(vfs, new) == 3

        # An existing file: its chunks keep their replicas, new chunks get the new goal.
        assert await vfs.getxattr(old, XATTR_GOAL) == b"2"
        await vfs.setgoal(old, 3, USER)
        fh, _ = await vfs.open(old, os.O_WRONLY)
        await vfs.write(fh, CHUNK_SIZE, b"more")
        await vfs.release(fh, sync=True)
        assert await replicas(vfs, old, 0) == 2
        assert await replicas(vfs, old, 1) == 3

        # Ordinary xattrs still work next to the virtual one.
        await vfs.setxattr(new, b"user.color", b"blue", 0, USER)
        assert await vfs.listxattr(new) == [b"user.color"]


async def test_goal_xattr_errors(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, chunkservers=3) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        f = await write_file(vfs, ROOT_INODE, b"f")
        with pytest.raises(RangeError):  # only three chunkservers
            await vfs.setxattr(f, XATTR_GOAL, b"4", 0, USER)
        for bad in (b"", b"0", b"17", b"x", b"3\n", b"-1", b"1234"):
            with pytest.raises(InvalidArgument):
                await vfs.setxattr(f, XATTR_GOAL, bad, 0, USER)
        with pytest.raises(NotPermitted):
            await vfs.setxattr(f, XATTR_GOAL, b"1", 0, OTHER)
        with pytest.raises(InvalidArgument):
            await vfs.removexattr(f, XATTR_GOAL)
        assert await vfs.getxattr(f, XATTR_GOAL) == b"2"
        await vfs.setxattr(f, XATTR_GOAL, b"1", 0, ROOT)
        assert await vfs.getxattr(f, XATTR_GOAL) == b"1"
        link = await vfs.symlink(ROOT_INODE, b"s", b"f", USER)
        with pytest.raises(NoAttribute):
            await vfs.getxattr(link.ino, XATTR_GOAL)
        with pytest.raises(InvalidArgument):
            await vfs.setgoal(link.ino, 2, USER)
