"""``ChunkKeeper.write_lease`` against replicas whose versions are not what the leader thinks.

A leader that dies (or is cut off) between bumping the replicas of a chunk and committing the
bump leaves them *ahead* of the chunk map.  The next leader must not be stopped by that: the
chunk stays writable (and, through the registry, readable) instead of failing every write
with "no replica accepted the version" for as long as the replicas stay ahead.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from dfs.errors import NotFound, StaleChunkVersion
from dfs.metaserver.registry import Registry
from dfs.types import ChunkId
from tests.metaserver.keeperutil import leader_keeper
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def v(term: int, n: int) -> int:
    return term << 32 | n


class FakeChunkservers:
    """The ``chunk.set_version`` of each server over a dict of versions."""

    def __init__(self, versions: dict[str, int]) -> None:
        self.versions = versions
        self.calls: list[tuple[str, int, int]] = []

    async def call(self, address: str, method: str, params: dict[str, Any], **_: Any) -> Any:
        assert method == "chunk.set_version", method
        sid = address.split(":", maxsplit=1)[0]
        self.calls.append((sid, params["version"], params["new_version"]))
        have = self.versions[sid]
        if have != params["version"]:
            raise StaleChunkVersion(f"has version {have}", version=have)
        self.versions[sid] = params["new_version"]
        return {"length": 0}


class Rig:
    def __init__(self, term: int) -> None:
        self.d = Driver()
        self.reg = Registry(self.d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
        self.term = term
        ino = self.d.create(ROOT, b"f")
        self.cid = ChunkId(self.d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
        self.keeper = leader_keeper(self.reg, self.propose, term=lambda: self.term)

    async def propose(self, op: str, **args: Any) -> Any:
        assert op == "set_version"
        result = self.d.do(op, **args)
        self.reg.set_version(args["chunk_id"], args["from_version"], args["servers"])
        return result

    def register(self, sid: str, version: int, now: float) -> None:
        self.reg.register(
            server_id=sid,
            address=f"{sid}:1",
            zone=sid,
            capacity=100 * GiB,
            free=50 * GiB,
            chunks=[(self.cid, version)],
            now=now,
        )

    def commit_version(self, version: int) -> int:
        """The chunk map at ``version`` (as an earlier leader left it)."""
        self.d.do("set_version", chunk_id=self.cid, version=version, from_version=1, servers=[])
        return version

    def map_version(self) -> int:
        info = self.d.ns.chunk_info(self.cid)
        assert info is not None
        return int(info[2])

    def use(self, servers: FakeChunkservers) -> None:
        self.keeper._pool = servers  # type: ignore[assignment]


def test_a_dead_bump_of_an_earlier_term_joins_the_next_lease() -> None:
    """Registered ahead (the registration says so): the replicas take the new version from
    where they are, and the chunk is writable at once."""

    async def main() -> None:
        rig = Rig(term=3)
        rig.commit_version(v(1, 7))
        # Term 2's leader moved both replicas to v(2, 1), then died before committing it.
        cs = FakeChunkservers({"s1": v(2, 1), "s2": v(2, 1)})
        rig.use(cs)
        now = trio.current_time()
        for sid in ("s1", "s2"):
            rig.register(sid, v(2, 1), now)
        assert rig.reg.valid_servers(rig.cid, now) == []
        assert set(rig.reg.ahead[rig.cid]) == {"s1", "s2"}
        await rig.keeper.write_lease(rig.cid)
        assert rig.map_version() == v(3, 1)
        assert cs.versions == {"s1": v(3, 1), "s2": v(3, 1)}
        assert [s.id for s in rig.reg.valid_servers(rig.cid, now)] == ["s1", "s2"]
        assert rig.cid not in rig.reg.ahead

    trio.run(main)


def test_a_bump_that_lands_after_the_registration_is_learnt_from_the_refusal() -> None:
    """The registry still has the replicas at the map version (the old leader's bump reached
    them after they registered here): the refusals say where they are, and the same
    ``write_lease`` moves them on."""

    async def main() -> None:
        rig = Rig(term=3)
        committed = rig.commit_version(v(1, 7))
        now = trio.current_time()
        for sid in ("s1", "s2"):
            rig.register(sid, committed, now)
        cs = FakeChunkservers({"s1": v(2, 1), "s2": committed})
        rig.use(cs)
        await rig.keeper.write_lease(rig.cid)
        assert rig.map_version() == v(3, 1)
        assert cs.versions == {"s1": v(3, 1), "s2": v(3, 1)}
        assert [s.id for s in rig.reg.valid_servers(rig.cid, now)] == ["s1", "s2"]

    trio.run(main)


def test_a_replica_ahead_by_this_terms_bump_is_not_taken_along() -> None:
    """A bump of the current term may still commit (its outcome was unknown): the replica
    it reached is left out of the lease, which goes on with the others."""

    async def main() -> None:
        rig = Rig(term=3)
        committed = rig.commit_version(v(1, 7))
        now = trio.current_time()
        for sid in ("s1", "s2"):
            rig.register(sid, committed, now)
        cs = FakeChunkservers({"s1": v(3, 5), "s2": committed})
        rig.use(cs)
        rig.keeper._version_term, rig.keeper._version_n = 3, 5
        await rig.keeper.write_lease(rig.cid)
        assert rig.map_version() == v(3, 6)
        assert cs.versions == {"s1": v(3, 5), "s2": v(3, 6)}
        assert [s.id for s in rig.reg.valid_servers(rig.cid, now)] == ["s2"]
        # s1 is behind the map now: stale, deleted once the chunk is at its goal again.
        assert rig.reg.stale[rig.cid] == {"s1": v(3, 5)}

    trio.run(main)


def test_a_writer_reporting_the_only_replica_failed_does_not_lose_the_chunk() -> None:
    """A writer could not reach the chunk's only replica (cut off for a moment): the replica
    stays where the map knows it, and the next lease moves it to a new version as soon as
    the server answers.  Dropping it would leave the chunk without a location until that
    server registers again, which one that never stopped does not."""

    async def main() -> None:
        rig = Rig(term=3)
        committed = rig.commit_version(v(1, 7))
        now = trio.current_time()
        rig.register("s1", committed, now)
        cs = FakeChunkservers({"s1": committed})
        rig.use(cs)
        await rig.keeper.write_lease(rig.cid, failed="s1", failed_version=committed)
        assert rig.map_version() == cs.versions["s1"] > committed
        assert [s.id for s in rig.reg.valid_servers(rig.cid, now)] == ["s1"]

        # Two replicas: the failed one is dropped and the lease goes on with the other.
        rig.register("s2", rig.map_version(), now)
        cs.versions["s2"] = rig.map_version()
        before = rig.map_version()
        await rig.keeper.write_lease(rig.cid, failed="s1", failed_version=before)
        assert [s.id for s in rig.reg.valid_servers(rig.cid, now)] == ["s2"]
        assert cs.versions == {"s1": before, "s2": rig.map_version()}

    trio.run(main)


def test_a_new_leader_makes_every_chunkserver_register_again() -> None:
    """What a leader knew of a server's replicas from an earlier term may be out of date:
    its heartbeats are refused until it registered again, and the warm-up waits for that."""
    d = Driver()
    reg = Registry(d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
    reg.register(
        server_id="s1", address="s1:1", zone="z", capacity=GiB, free=GiB, chunks=[], now=10
    )
    reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=11, since=5.0)
    assert reg.missing_known(12, since=5.0) == set()
    # Leader again from t=20 (the registration at 10 was with the earlier leadership).
    with pytest.raises(NotFound):
        reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=21, since=20.0)
    assert reg.missing_known(21, since=20.0) == {"s1"}
    reg.register(
        server_id="s1", address="s1:1", zone="z", capacity=GiB, free=GiB, chunks=[], now=22
    )
    reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=23, since=20.0)
    assert reg.missing_known(23, since=20.0) == set()


def test_registering_again_keeps_a_new_chunk_whose_file_is_not_written_yet() -> None:
    """Right after an election every server registers again; a chunk allocated a moment
    before has no file on its servers until its first write lands.  Forgetting those
    locations would leave the chunk with no replica at all (the writer gets EIO, and the
    file is damaged for good); a registration keeps replicas under a write lease."""
    d = Driver()
    reg = Registry(d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
    for sid in ("s1", "s2"):
        reg.register(
            server_id=sid, address=f"{sid}:1", zone=sid, capacity=GiB, free=GiB, chunks=[], now=1
        )
    ino = d.create(ROOT, b"f")
    cid = ChunkId(d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
    reg.add_replicas(cid, ["s1", "s2"])
    reg.leases[cid] = 100.0
    old = ChunkId(d.do("alloc_chunk", ino=ino, index=1)["chunk_id"])
    reg.add_replicas(old, ["s1", "s2"])  # no lease: its file must be listed to count
    for sid in ("s1", "s2"):
        reg.register(
            server_id=sid, address=f"{sid}:1", zone=sid, capacity=GiB, free=GiB, chunks=[], now=5
        )
    assert [s.id for s in reg.valid_servers(cid, 6)] == ["s1", "s2"]
    assert reg.valid_servers(old, 6) == []


def test_an_orphan_keeps_its_age_across_registrations() -> None:
    d = Driver()
    reg = Registry(d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
    ino = d.create(ROOT, b"f")
    cid = ChunkId(d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
    d.do("unlink", parent=ROOT, name=b"f")
    assert d.ns.chunk_info(cid) is None
    for now in (1.0, 20.0):  # registering again (an election) does not reset its age
        reg.register(
            server_id="s1",
            address="s1:1",
            zone="z",
            capacity=GiB,
            free=GiB,
            chunks=[(cid, 1)],
            now=now,
        )
    assert reg.orphans["s1"] == {cid: 1.0}
