"""The single-node committer: group commit, results and errors, restart and snapshots."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dfs.errors import Exists, NotFound, Unavailable
from dfs.metaserver.commit import Committer
from dfs.metaserver.invariants import check
from dfs.types import ChunkId
from tests.metaserver.nsutil import ROOT, T0, USER

pytestmark = pytest.mark.unit


def recover(data_dir: Path, snapshot_every: int = 1_000_000, **kw: Any) -> Committer:
    return Committer.recover(data_dir, node_id="m1", snapshot_every=snapshot_every, **kw)


@asynccontextmanager
async def running(c: Committer, *, init: bool = True) -> AsyncIterator[Committer]:
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        if init and not c.namespace.initialised:
            await c.propose({"op": "init", "now_ns": T0, "goal": 2, "cluster_id": "c"})
        yield c
        nursery.cancel_scope.cancel()


def mknod(parent: int, name: bytes, now: int = T0) -> dict[str, Any]:
    return {
        "op": "mknod",
        "now_ns": now,
        "parent": parent,
        "name": name,
        "mode": stat.S_IFREG | 0o644,
        "rdev": 0,
        "cred": USER,
    }


async def test_propose_returns_result_and_errors(tmp_path: Path) -> None:
    async with running(recover(tmp_path)) as c:
        attr = await c.propose(mknod(ROOT, b"f"))
        assert attr["nlink"] == 1
        with pytest.raises(Exists):
            await c.propose(mknod(ROOT, b"f"))
        with pytest.raises(NotFound):
            await c.propose({"op": "unlink", "now_ns": T0, "parent": ROOT, "name": b"zz"})
        stats = c.statistics()
        assert stats.failed_commands == 2
        assert stats.commit_index == stats.applied_index == 5  # noop, init, 3 proposals
        assert stats.term == 1


async def test_propose_before_run_is_unavailable(tmp_path: Path) -> None:
    c = recover(tmp_path)
    with pytest.raises(Unavailable):
        await c.propose({"op": "noop"})
    c.log.close()


async def test_concurrent_proposals_share_one_fsync(tmp_path: Path) -> None:
    async with running(recover(tmp_path)) as c:
        before = c.statistics()
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append(await c.propose(mknod(ROOT, b"f%d" % i)))

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, i)
        after = c.statistics()
        assert len(results) == 64
        assert after.proposals - before.proposals == 64
        # every proposer queued before the driver woke: one batch, one fsync
        assert after.fsyncs - before.fsyncs <= 2
        assert after.batches - before.batches <= 2
        assert sorted(n for n, _ in c.namespace.readdir(ROOT)) == sorted(
            b"f%d" % i for i in range(64)
        )


async def test_listener_sees_applied_commands_and_freed_chunks(tmp_path: Path) -> None:
    seen: list[tuple[str, list[ChunkId]]] = []
    c = recover(tmp_path)
    c.add_listener(lambda cmd, _result, freed: seen.append((cmd["op"], freed)))
    async with running(c):
        ino = (await c.propose(mknod(ROOT, b"f")))["ino"]
        chunk = await c.propose({"op": "alloc_chunk", "now_ns": T0, "ino": ino, "index": 0})
        with pytest.raises(Exists):
            await c.propose(mknod(ROOT, b"f"))
        await c.propose({"op": "unlink", "now_ns": T0, "parent": ROOT, "name": b"f"})
    assert seen[-3:] == [("mknod", []), ("alloc_chunk", []), ("unlink", [chunk["chunk_id"]])]


async def _workload(c: Committer, n: int) -> None:
    d = (await c.propose({**mknod(ROOT, b"d"), "op": "mkdir", "mode": 0o755}))["ino"]
    for i in range(n):
        now = T0 + i
        ino = (await c.propose(mknod(d, b"f%d" % i, now)))["ino"]
        await c.propose({"op": "alloc_chunk", "now_ns": now, "ino": ino, "index": i % 3})
        if i % 4 == 0:
            await c.propose({"op": "unlink", "now_ns": now, "parent": d, "name": b"f%d" % i})
        elif i % 5 == 0:
            cmd = {"op": "rename", "now_ns": now, "parent": d, "name": b"f%d" % i}
            await c.propose({**cmd, "newparent": ROOT, "newname": b"r%d" % i, "flags": 0})
        with pytest.raises(Exists):
            await c.propose({**mknod(ROOT, b"d"), "op": "mkdir", "mode": 0o755})


@pytest.mark.parametrize("snapshot_every", [1_000_000, 7])
async def test_restart_gives_identical_state(tmp_path: Path, snapshot_every: int) -> None:
    c = recover(tmp_path, snapshot_every, segment_bytes=4096)
    async with running(c):
        await _workload(c, 60)
    state = c.namespace.snapshot_state()
    last = c.statistics().applied_index
    snapshots = list((tmp_path / "snapshots").glob("snapshot-*"))
    if snapshot_every == 7:
        assert len(snapshots) == 1
        assert c.statistics().snapshot_index > last - 7
        assert c.log.first_index > 1  # compacted
    else:
        assert snapshots == []

    again = recover(tmp_path, snapshot_every, segment_bytes=4096)
    assert again.namespace.snapshot_state() == state
    assert again.statistics().applied_index == last
    assert check(again.namespace) == []
    async with running(again):
        assert again.statistics().term == 2
        await again.propose(mknod(ROOT, b"after-restart"))
    third = recover(tmp_path, snapshot_every, segment_bytes=4096)
    assert third.namespace.lookup(ROOT, b"after-restart")["nlink"] == 1
    third.log.close()


async def test_snapshot_then_crash_before_compaction(tmp_path: Path) -> None:
    # A snapshot whose covered entries are still in the log: replay skips them.
    c = recover(tmp_path)
    async with running(c):
        await _workload(c, 10)
        await c.take_snapshot()
        await c.propose(mknod(ROOT, b"tail"))
    state = c.namespace.snapshot_state()
    again = recover(tmp_path)
    assert again.namespace.snapshot_state() == state
    again.log.close()
