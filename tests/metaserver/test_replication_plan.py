"""The replica upkeep planner (dfs.metaserver.chunks.plan): what gets copied, trimmed, cleaned."""

from __future__ import annotations

import pytest

from dfs.metaserver.chunks import plan
from dfs.metaserver.registry import Registry
from dfs.types import CHUNK_SIZE, ChunkId
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def cluster(n: int, *, grace: float = 30.0) -> tuple[Driver, Registry]:
    d = Driver()
    reg = Registry(d.ns, timeout=10.0, grace=grace)
    for i in range(1, n + 1):
        reg.register(
            server_id=f"s{i}",
            address=f"10.0.0.{i}:9430",
            zone=f"z{i}",
            capacity=100 * GiB,
            free=(50 + i) * GiB,
            chunks=[],
            now=0.0,
        )
    return d, reg


def chunk(d: Driver, reg: Registry, name: bytes, holders: list[str], *, goal: int = 2) -> ChunkId:
    f = d.create(ROOT, name)
    d.do("setgoal", ino=f, goal=goal, cred={"uid": 0, "gid": 0})
    cid = ChunkId(d.do("alloc_chunk", ino=f, index=0)["chunk_id"])
    d.do("commit_write", ino=f, size=CHUNK_SIZE // 2, mtime_ns=-1)
    reg.add_replicas(cid, holders)
    return cid


def heartbeat_all(reg: Registry, now: float, *, skip: tuple[str, ...] = ()) -> None:
    for sid, info in reg.servers.items():
        if sid not in skip:
            reg.heartbeat(server_id=sid, capacity=info.capacity, free=info.free, now=now)


def test_single_copies_are_copied_first_to_a_server_without_one() -> None:
    d, reg = cluster(4)
    two_left = chunk(d, reg, b"a", ["s1", "s2", "s4"], goal=3)
    one_left = chunk(d, reg, b"b", ["s1", "s4"], goal=2)
    heartbeat_all(reg, 50.0, skip=("s4",))
    reg.check_liveness(50.0)
    assert reg.expire_gone(50.0) == ["s4"]
    p = plan(reg, 50.0, busy=set(), max_copies=1)
    assert [job.chunk_id for job in p.copies] == [one_left]  # the lone copy goes first
    job = p.copies[0]
    assert job.source.id == "s1" and job.target.id not in ("s1", "s4")
    assert job.length == CHUNK_SIZE // 2
    p = plan(reg, 50.0, busy={one_left}, max_copies=4)
    assert [job.chunk_id for job in p.copies] == [two_left]


def test_nothing_is_copied_inside_the_grace_period() -> None:
    d, reg = cluster(3)
    cid = chunk(d, reg, b"a", ["s1", "s2"])
    heartbeat_all(reg, 20.0, skip=("s2",))
    reg.check_liveness(20.0)
    assert reg.expire_gone(20.0) == []
    p = plan(reg, 20.0, busy=set(), max_copies=4)
    assert p.copies == [] and p.deletes == []
    assert cid not in reg.suspects  # nothing to do until the grace period ends


def test_surplus_replicas_are_trimmed_from_the_fullest_server() -> None:
    d, reg = cluster(3)
    cid = chunk(d, reg, b"a", ["s1", "s2", "s3"], goal=2)
    p = plan(reg, 1.0, busy=set(), max_copies=4)
    assert p.copies == []
    assert p.deletes == [(cid, "s1", "over goal")]  # s1 has the least free space


def test_stale_and_corrupt_replicas_go_only_once_the_goal_is_met() -> None:
    d, reg = cluster(3)
    cid = chunk(d, reg, b"a", ["s1", "s2"], goal=2)
    reg.report_bad(server_id="s2", chunk_id=cid, version=1, reason="checksum")
    p = plan(reg, 1.0, busy=set(), max_copies=4)
    assert p.deletes == []  # the corrupt copy is all we have besides s1: keep it for now
    assert [(j.source.id, j.target.id) for j in p.copies] == [("s1", "s3")]
    reg.add_replicas(cid, ["s3"])  # the copy finished
    p = plan(reg, 1.0, busy=set(), max_copies=4)
    assert p.deletes == [(cid, "s2", "corrupt")]
    assert cid not in reg.suspects


def test_chunks_being_written_are_left_alone() -> None:
    d, reg = cluster(3)
    cid = chunk(d, reg, b"a", ["s1"], goal=2)
    p = plan(reg, 1.0, busy={cid}, max_copies=4)
    assert p.copies == [] and cid in reg.suspects


def test_a_replica_ahead_of_the_map_is_set_back() -> None:
    d, reg = cluster(2)
    cid = chunk(d, reg, b"a", [], goal=1)
    reg.register(
        server_id="s1",
        address="10.0.0.1:9430",
        zone="z1",
        capacity=100 * GiB,
        free=GiB,
        chunks=[(cid, 7 << 32 | 1)],
        now=1.0,
    )
    p = plan(reg, 1.0, busy=set(), max_copies=4)
    assert p.undo == [(cid, "s1", 7 << 32 | 1, 1)]
    assert cid in reg.suspects


def test_deleted_chunks_leave_the_suspects() -> None:
    d, reg = cluster(2)
    cid = chunk(d, reg, b"a", ["s1"], goal=2)
    d.do("unlink", parent=ROOT, name=b"a")
    reg.forget_chunks(d.ns.take_freed_chunks())
    reg.suspects.add(cid)
    p = plan(reg, 1.0, busy=set(), max_copies=4)
    assert p.copies == [] and reg.suspects == set()


def test_a_bounded_pass_rotates_over_the_suspects() -> None:
    d, reg = cluster(3)
    cids = [chunk(d, reg, b"f%d" % i, ["s1"], goal=2) for i in range(6)]
    reg.suspects = set(cids)
    busy = set(cids[:4])  # waiting chunks must not starve the others
    seen: set[ChunkId] = set()
    for _ in range(6):
        p = plan(reg, 1.0, busy=busy, max_copies=10, max_examine=2)
        seen.update(job.chunk_id for job in p.copies)
    assert seen == set(cids[4:])
