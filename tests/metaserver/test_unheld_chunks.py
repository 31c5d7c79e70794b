"""A chunk whose first write failed before any server stored it must not stay "missing".

The leader places a new chunk on servers before anything is written to it; a chunkserver
creates the chunk's file at its first write.  When that write fails everywhere (the chain
broke at its first server, the other one was cut off), no server ever holds the chunk, every
later lease finds no replica to write to, and fsck reports a missing chunk, for ever.  No
acknowledged byte is in such a chunk while no commit has followed its allocation, so once
every chunkserver has registered with the leader and none holds it, the leader drops it from
its file (bytes there read as zeros, the next write allocates a fresh chunk).  A chunk with
committed data is never dropped that way, nor one a server that has not registered may hold.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from dfs.errors import ChunkNotFound
from dfs.metaserver.chunks import plan
from dfs.metaserver.namespace import DROPPED_KEEP, Namespace
from dfs.metaserver.registry import Registry
from dfs.types import ChunkId, InodeId
from tests.metaserver.keeperutil import leader_keeper, one_pass
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def test_a_chunk_is_uncommitted_from_its_allocation_to_its_files_next_commit() -> None:
    d = Driver()
    ino = d.create(ROOT, b"f")
    a = ChunkId(d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
    b = ChunkId(d.do("alloc_chunk", ino=ino, index=1)["chunk_id"])
    assert d.ns.is_uncommitted(a) and d.ns.is_uncommitted(b)
    d.do("alloc_chunk", ino=ino, index=0)  # the same chunk again: nothing changes
    assert d.ns.uncommitted == {ino: {a, b}}
    d.do("commit_write", ino=ino, size=10, mtime_ns=-1)
    assert not d.ns.is_uncommitted(a) and not d.ns.is_uncommitted(b)
    assert d.ns.uncommitted == {}
    # Truncated away or freed with the file: forgotten with the chunk.
    c = ChunkId(d.do("alloc_chunk", ino=ino, index=2)["chunk_id"])
    assert d.ns.uncommitted == {ino: {c}}
    d.do("setattr", ino=ino, size=0, cred={"uid": 0, "gid": 0})
    assert d.ns.uncommitted == {}
    d.do("alloc_chunk", ino=ino, index=0)
    d.do("unlink", parent=ROOT, name=b"f", cred={"uid": 0, "gid": 0})
    assert d.ns.uncommitted == {}


def test_only_an_uncommitted_chunk_is_dropped_and_the_drop_is_remembered() -> None:
    d = Driver()
    ino = d.create(ROOT, b"f")
    a = ChunkId(d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
    d.do("commit_write", ino=ino, size=100, mtime_ns=-1)
    b = ChunkId(d.do("alloc_chunk", ino=ino, index=1)["chunk_id"])
    ctime = d.ns.inodes[InodeId(ino)].ctime_ns
    # Committed data may be in ``a``: the leader's drop refuses it (fsck --zero-fill only).
    assert not d.do("drop_lost_chunk", ino=ino, index=0, chunk_id=a, uncommitted=True)["dropped"]
    assert d.do("drop_lost_chunk", ino=ino, index=1, chunk_id=b, uncommitted=True)["dropped"]
    assert d.ns.chunk_info(b) is None and d.ns.chunk_info(a) is not None
    assert d.ns.inodes[InodeId(ino)].chunks == {0: a}
    assert d.ns.inodes[InodeId(ino)].ctime_ns == ctime  # nothing anybody could read changed
    assert b in d.ns.dropped and d.ns.take_freed_chunks() == [b]
    # The next write at index 1 gets a fresh chunk.
    fresh = d.do("alloc_chunk", ino=ino, index=1)
    assert fresh["created"] and fresh["chunk_id"] != b
    # A snapshot keeps both tables.
    copy = Namespace()
    copy.restore(d.ns.snapshot_state())
    assert copy.uncommitted == d.ns.uncommitted == {ino: {fresh["chunk_id"]}}
    assert copy.dropped == d.ns.dropped == {b: ino}


def test_the_record_of_dropped_chunks_is_bounded() -> None:
    d = Driver()
    ino = d.create(ROOT, b"f")
    first = None
    for _ in range(DROPPED_KEEP + 3):
        cid = ChunkId(
            d.ns.apply({"op": "alloc_chunk", "now_ns": d.tick(), "ino": ino, "index": 0})[
                "chunk_id"
            ]
        )
        first = first or cid
        d.ns.apply(
            {
                "op": "drop_lost_chunk",
                "now_ns": d.tick(),
                "ino": ino,
                "index": 0,
                "chunk_id": cid,
                "uncommitted": True,
            }
        )
    assert len(d.ns.dropped) == DROPPED_KEEP
    assert first not in d.ns.dropped and cid in d.ns.dropped


class Rig:
    """A leader's keeper over a namespace with one file, its chunk placed on s1 and s2."""

    def __init__(self) -> None:
        self.d = Driver()
        self.reg = Registry(self.d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
        self.ino = self.d.create(ROOT, b"f")
        self.cid = ChunkId(self.d.do("alloc_chunk", ino=self.ino, index=0)["chunk_id"])
        self.proposed: list[str] = []
        self.keeper = leader_keeper(self.reg, self.propose)

    async def propose(self, op: str, **args: Any) -> Any:
        self.proposed.append(op)
        return self.d.do(op, **args)

    def register(self, sid: str, chunks: list[tuple[int, int]], now: float) -> None:
        self.reg.register(
            server_id=sid,
            address=f"{sid}:1",
            zone=sid,
            capacity=100 * GiB,
            free=50 * GiB,
            chunks=chunks,
            now=now,
        )

    async def pass_(self) -> None:
        await one_pass(self.keeper)


def test_a_chunk_no_server_ever_stored_leaves_its_file_once_every_server_registered() -> None:
    """The chaos run's case: placed on s1 and s2, the first write failed on both, both
    registered again (restarted, healed) without it."""

    async def main() -> None:
        rig = Rig()
        now = trio.current_time()
        for sid in ("s1", "s2", "s3"):
            rig.register(sid, [], now)
        rig.reg.add_replicas(rig.cid, ["s1", "s2"])
        # s1 restarts; s3 has not registered with this leader yet (it was: the namespace
        # knows it), so it might hold the chunk: nothing happens.
        rig.d.do("noop", registered="s3")
        rig.reg.servers.pop("s3")
        rig.register("s1", [], now)
        await rig.pass_()
        assert rig.d.ns.chunk_info(rig.cid) is not None
        assert rig.reg.locations[rig.cid] == {"s2"}
        # s2 and s3 register: nobody holds it.
        rig.register("s2", [], now)
        rig.register("s3", [], now)
        await rig.pass_()
        assert rig.proposed == ["drop_lost_chunk"]
        assert rig.d.ns.chunk_info(rig.cid) is None
        assert rig.d.ns.inodes[InodeId(rig.ino)].chunks is None
        assert rig.keeper.stats["unheld_dropped"] == 1

    trio.run(main)


def test_a_chunk_with_committed_data_or_under_a_lease_stays() -> None:
    async def main() -> None:
        rig = Rig()
        now = trio.current_time()
        leased = ChunkId(rig.d.do("alloc_chunk", ino=rig.ino, index=1)["chunk_id"])
        rig.reg.leases[leased] = now + 30.0
        for sid in ("s1", "s2"):
            rig.register(sid, [], now)
        rig.d.do("commit_write", ino=rig.ino, size=10, mtime_ns=-1)
        other = rig.d.create(ROOT, b"g")
        unheld = ChunkId(rig.d.do("alloc_chunk", ino=other, index=0)["chunk_id"])
        rig.reg.leases[unheld] = now + 30.0
        rig.reg.suspects.update({rig.cid, leased, unheld})
        await rig.pass_()
        # rig.cid: committed, so it is missing (fsck says so) until a holder registers.
        # ``unheld``: uncommitted but under a lease (its writer may be about to store it).
        assert rig.proposed == []
        assert rig.cid not in rig.reg.suspects  # nothing to do until a holder registers
        assert unheld in rig.reg.suspects
        # Its lease ends: now it goes.
        rig.reg.leases.pop(unheld)
        rig.reg.leases.pop(leased)
        await rig.pass_()
        assert rig.d.ns.chunk_info(unheld) is None
        assert rig.d.ns.chunk_info(rig.cid) is not None
        # ``leased`` was allocated before the commit: committed too, so it stays.
        assert rig.d.ns.chunk_info(leased) is not None

    trio.run(main)


def test_a_stale_or_corrupt_copy_counts_as_held() -> None:
    """Any version anywhere, even stale, or a corrupt one: the chunk is not dropped (the
    replicator or an operator deals with it, as before)."""
    rig = Rig()
    now = 100.0
    rig.register("s1", [(rig.cid, 1)], now)
    rig.d.do("set_version", chunk_id=rig.cid, version=5, from_version=1, servers=[])
    rig.register("s1", [(rig.cid, 1)], now)
    assert rig.reg.stale[rig.cid] == {"s1": 1}
    p = plan(rig.reg, now, busy=set(), max_copies=4)
    assert p.unheld == []
    rig.reg.stale.clear()
    rig.reg.suspects.add(rig.cid)
    p = plan(rig.reg, now, busy=set(), max_copies=4)
    assert p.unheld == [rig.cid]


class NoSuchChunk:
    """Chunkservers that hold no chunk at all: every copy fails at its source."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def call(self, address: str, method: str, params: dict[str, Any], **_: Any) -> Any:
        self.calls.append((address, method))
        assert method == "chunk.replicate", method
        source = params["source"]["id"]
        raise ChunkNotFound(f"replica {source}: no chunk {params['chunk_id']}", failed=source)


def test_a_placed_replica_whose_file_never_appeared_is_forgotten_when_a_copy_finds_it_absent() -> (
    None
):
    """The same failed first write, but the server the chunk was placed on came back without
    registering again (it was only paused): the map still places the chunk there.  The
    replicator's copy from it finds nothing; that replica is forgotten, and the chunk, held
    by nobody and uncommitted, leaves its file."""

    async def main() -> None:
        rig = Rig()
        servers = NoSuchChunk()
        rig.keeper._pool = servers  # type: ignore[assignment]
        now = trio.current_time()
        for sid in ("s1", "s2"):
            rig.register(sid, [], now)
        rig.reg.add_replicas(rig.cid, ["s1"])
        for _ in range(3):
            await rig.pass_()
        assert [m for _a, m in servers.calls] == ["chunk.replicate"]
        assert rig.keeper.stats["copy_failures"] == 1
        assert rig.proposed == ["drop_lost_chunk"]
        assert rig.d.ns.chunk_info(rig.cid) is None

    trio.run(main)
