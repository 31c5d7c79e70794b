"""fcntl/flock locks over a real metaserver (no kernel): waiting, wake-up, deadlock, cancel,
session expiry, snapshots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from dfs.client.interfaces import Cred
from dfs.client.remote import RpcMetaClient
from dfs.errors import Deadlock, LockConflict
from dfs.metaserver.locks import F_RDLCK, F_UNLCK, F_WRLCK, LockTable
from dfs.metaserver.namespace import Namespace
from dfs.types import ROOT_INODE, InodeId
from tests.helpers.cluster import inprocess_cluster
from tests.metaserver.nsutil import ROOT as NS_ROOT
from tests.metaserver.nsutil import Driver

pytestmark = pytest.mark.unit

ROOT = Cred(uid=0, gid=0)
EOF_ = (1 << 63) - 1


async def _file(cluster_vfs: object) -> InodeId:
    from dfs.client.vfs import Vfs

    assert isinstance(cluster_vfs, Vfs)
    fh, attr = await cluster_vfs.create(ROOT_INODE, b"f", 0o644, os.O_RDWR, ROOT)
    await cluster_vfs.release(fh, sync=False)
    return attr.ino


async def test_waiter_is_woken_by_the_release_and_deadlocks_are_refused(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        assert cluster.vfs is not None
        meta = cluster.vfs.meta
        assert isinstance(meta, RpcMetaClient)
        ino = await _file(cluster.vfs)
        a, b = 0xA, 0xB
        await meta.lock_set(ino, a, "posix", F_WRLCK, 0, 9, 1, wait=False)
        await meta.lock_set(ino, b, "posix", F_WRLCK, 10, 19, 2, wait=False)
        with pytest.raises(LockConflict):
            await meta.lock_set(ino, a, "posix", F_WRLCK, 10, 19, 1, wait=False)
        assert await meta.lock_get(ino, a, "posix", F_RDLCK, 15, 15) == {
            "type": F_WRLCK,
            "start": 10,
            "end": 19,
            "pid": 2,
        }
        got = trio.Event()

        async def a_waits() -> None:
            await meta.lock_set(ino, a, "posix", F_WRLCK, 10, 19, 1, wait=True)
            got.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(a_waits)
            await trio.sleep(0.3)
            assert not got.is_set()
            # B waiting for A's range would close the cycle A -> B -> A.
            with pytest.raises(Deadlock):
                await meta.lock_set(ino, b, "posix", F_WRLCK, 0, 9, 2, wait=True)
            t0 = trio.current_time()
            await meta.lock_set(ino, b, "posix", F_UNLCK, 10, 19, 2, wait=False)
            with trio.fail_after(5):
                await got.wait()
            assert trio.current_time() - t0 < 1.0


async def test_cancelled_waiter_leaves_no_request_and_flock_is_whole_file(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path) as cluster:
        assert cluster.vfs is not None
        meta = cluster.vfs.meta
        assert isinstance(meta, RpcMetaClient)
        ino = await _file(cluster.vfs)
        await meta.lock_set(ino, 1, "flock", F_WRLCK, 0, EOF_, 1, wait=False)
        with pytest.raises(LockConflict):
            await meta.lock_set(ino, 2, "flock", F_RDLCK, 0, EOF_, 2, wait=False)
        # fcntl locks do not conflict with flock ones.
        await meta.lock_set(ino, 2, "posix", F_WRLCK, 0, EOF_, 2, wait=False)
        with trio.move_on_after(0.3):
            await meta.lock_set(ino, 2, "flock", F_WRLCK, 0, EOF_, 2, wait=True)
        assert not await meta.lock_cancel(ino, 2, "flock")
        await meta.lock_set(ino, 1, "flock", F_UNLCK, 0, EOF_, 1, wait=False)
        await trio.sleep(0.2)
        # Nobody took the lock for the cancelled waiter: a third owner gets it at once.
        await meta.lock_set(ino, 3, "flock", F_WRLCK, 0, EOF_, 3, wait=False)


def test_locks_are_in_snapshots_and_go_with_their_session() -> None:
    d = Driver()
    f = d.create(NS_ROOT, b"f")
    s1 = d.do("open_session", owner="c1", kind="mount", label="")["session"]
    s2 = d.do("open_session", owner="c2", kind="mount", label="")["session"]
    lock = {"ino": f, "kind": "posix", "start": 0, "end": 99, "pid": 7}
    d.do("lock_set", sid=s1, owner=1, type=F_WRLCK, **lock)
    with pytest.raises(LockConflict):
        d.ns.apply({"op": "lock_set", "now_ns": 1, "sid": s2, "owner": 1, "type": 1, **lock})
    copy = Namespace()
    copy.restore(d.ns.snapshot_state())
    assert copy.locks == d.ns.locks and len(copy.locks.locks()) == 1
    d.do("expire_sessions", ids=[s1])
    assert d.ns.locks == LockTable()
    d.do("lock_set", sid=s2, owner=1, type=F_WRLCK, **lock)
    d.do("unlink", parent=NS_ROOT, name=b"f")
    assert d.ns.locks.locks() == []
