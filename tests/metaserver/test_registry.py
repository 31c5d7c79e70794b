"""The soft-state registry: placement, liveness, replica locations, deletions, bad replicas."""

from __future__ import annotations

import logging

import pytest

from dfs.errors import InvalidArgument, NoSpace, NotFound, Unavailable
from dfs.metaserver.registry import ChunkserverInfo, Registry
from dfs.types import CHUNK_SIZE, ChunkId
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def make(
    servers: list[tuple[str, str, int]],
    timeout: float = 10.0,
    *,
    grace: float = 120.0,
    orphan_delay: float = 3600.0,
) -> tuple[Driver, Registry]:
    d = Driver()
    reg = Registry(d.ns, timeout=timeout, grace=grace, orphan_delay=orphan_delay)
    for sid, zone, free in servers:
        reg.register(
            server_id=sid,
            address=f"10.0.0.{sid[-1]}:9430",
            zone=zone,
            capacity=100 * GiB,
            free=free,
            chunks=[],
            now=0.0,
        )
    return d, reg


def ids(chosen: list[ChunkserverInfo]) -> list[str]:
    return [s.id for s in chosen]


def test_placement_most_free_one_per_zone() -> None:
    _, reg = make([("s1", "z1", 90 * GiB), ("s2", "z1", 80 * GiB), ("s3", "z2", 10 * GiB)])
    assert ids(reg.place(2, 1.0)) == ["s1", "s3"]  # s2 has more space but shares s1's zone
    _, reg = make([("s1", "z1", 90 * GiB), ("s2", "z1", 80 * GiB), ("s3", "z2", 10 * GiB)])
    assert ids(reg.place(3, 1.0)) == ["s1", "s3", "s2"]  # no choice left: zones repeat


def test_placement_fewer_servers_than_goal_and_none() -> None:
    _, reg = make([("s1", "z1", GiB)])
    assert ids(reg.place(3, 1.0)) == ["s1"]
    _, empty = make([])
    with pytest.raises(Unavailable):  # nobody to ask: retry, not ENOSPC
        empty.place(2, 1.0)
    _, full = make([("s1", "z1", 0)])
    with pytest.raises(NoSpace):
        full.place(2, 1.0)


def test_placement_spreads_between_heartbeats() -> None:
    _, reg = make([("s1", "z1", 10 * GiB), ("s2", "z2", 10 * GiB - CHUNK_SIZE // 2)])
    first = ids(reg.place(1, 1.0))
    second = ids(reg.place(1, 1.0))
    assert first == ["s1"] and second == ["s2"]


def test_dead_servers_are_not_used(caplog: pytest.LogCaptureFixture) -> None:
    _, reg = make([("s1", "z1", 90 * GiB), ("s2", "z2", 10 * GiB)], timeout=10.0)
    reg.heartbeat(server_id="s2", capacity=100 * GiB, free=10 * GiB, now=8.0)
    with caplog.at_level(logging.WARNING):
        assert reg.check_liveness(12.0) == ["s1"]
    assert "s1" in caplog.text
    assert ids(reg.place(2, 12.0)) == ["s2"]
    assert [s["state"] for s in reg.status(12.0)] == ["dead", "alive"]
    reg.heartbeat(server_id="s1", capacity=100 * GiB, free=GiB, now=13.0)
    assert reg.status(13.0)[0]["state"] == "alive"


def test_heartbeat_from_unknown_server() -> None:
    _, reg = make([])
    with pytest.raises(NotFound):
        reg.heartbeat(server_id="ghost", capacity=1, free=1, now=0.0)


def test_register_sorts_replicas(caplog: pytest.LogCaptureFixture) -> None:
    d, reg = make([], orphan_delay=60.0)
    f = d.create(ROOT, b"f")
    live = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    gone = d.do("alloc_chunk", ino=f, index=1)["chunk_id"]
    d.do("commit_write", ino=f, size=2 * CHUNK_SIZE, mtime_ns=-1)
    d.do("setattr", ino=f, size=10)  # drops chunk index 1: orphan from now on
    d.ns.take_freed_chunks()
    foreign = d.ns.next_chunk_id + 100
    with caplog.at_level(logging.WARNING):
        reg.register(
            server_id="s1",
            address="a:1",
            zone="z",
            capacity=GiB,
            free=GiB,
            chunks=[(live, 1), (gone, 1), (foreign, 1)],
            now=0.0,
        )
    assert "does not know" in caplog.text
    assert reg.live_servers(live, 0.0) == [{"id": "s1", "address": "a:1"}]
    # The orphan is deleted only after the safety delay, and handed out once.
    assert reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=59.0) == []
    assert reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=60.0) == [gone]
    assert reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=61.0) == []
    # re-registration replaces what was known about the server
    reg.register(
        server_id="s1", address="a:2", zone="z", capacity=GiB, free=GiB, chunks=[], now=63.0
    )
    assert reg.live_servers(live, 63.0) == []
    assert reg.status(63.0)[0]["chunks"] == 0


def test_versions_sort_replicas_into_valid_stale_and_ahead() -> None:
    d, reg = make([])
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    d.do("set_version", chunk_id=cid, version=5, from_version=1, servers=[])
    with pytest.raises(InvalidArgument):  # versions only grow
        d.do("set_version", chunk_id=cid, version=5, from_version=5, servers=[])
    for sid, version in (("s1", 5), ("s2", 1), ("s3", 9)):
        reg.register(
            server_id=sid,
            address=f"a:{sid}",
            zone=sid,
            capacity=GiB,
            free=GiB,
            chunks=[(cid, version)],
            now=0,
        )
    assert [s["id"] for s in reg.live_servers(cid, 0)] == ["s1"]
    assert reg.stale[ChunkId(cid)] == {"s2": 1}
    assert reg.ahead[ChunkId(cid)] == {"s3": 9}
    assert reg.pending_deletions("s2") == set()  # kept until the chunk is back at its goal
    # A bump that reached s1 and s3 only: s2 stays stale, s3 becomes valid.
    d.do("set_version", chunk_id=cid, version=10, from_version=5, servers=["s1", "s3"])
    reg.set_version(cid, 5, ["s1", "s3"])
    assert [s["id"] for s in reg.live_servers(cid, 0)] == ["s1", "s3"]
    assert ChunkId(cid) not in reg.ahead
    # Reports about an old version are ignored; about the current one they count.
    assert not reg.report_bad(server_id="s1", chunk_id=cid, version=5, reason="x")
    assert reg.report_bad(server_id="s1", chunk_id=cid, version=10, reason="x")
    assert [s["id"] for s in reg.live_servers(cid, 0)] == ["s3"]


def test_gone_server_loses_its_replicas_after_the_grace_period() -> None:
    d, reg = make([("s1", "z1", GiB), ("s2", "z2", GiB)], timeout=10.0, grace=30.0)
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    reg.add_replicas(cid, ["s1", "s2"])
    reg.suspects.clear()
    reg.heartbeat(server_id="s2", capacity=GiB, free=GiB, now=39.0)
    reg.check_liveness(39.0)
    assert reg.expire_gone(39.0) == []  # s1: dead, but inside the grace period
    assert reg.locations[ChunkId(cid)] == {"s1", "s2"}
    assert reg.expire_gone(40.5) == ["s1"]
    assert reg.locations[ChunkId(cid)] == {"s2"}
    assert reg.suspects == {cid}
    with pytest.raises(NotFound):  # it must register again (listing what it holds)
        reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=41.0)


def test_freed_chunks_are_deleted_where_they_are() -> None:
    _, reg = make([("s1", "z1", GiB), ("s2", "z2", GiB)])
    reg.add_replicas(7, ["s1", "s2"])
    reg.forget_chunks([ChunkId(7)])
    assert reg.live_servers(7, 1.0) == []
    assert reg.heartbeat(server_id="s1", capacity=GiB, free=GiB, now=1.0) == [7]
    assert reg.heartbeat(server_id="s2", capacity=GiB, free=GiB, now=1.0) == [7]


def test_bad_replicas_are_hidden(caplog: pytest.LogCaptureFixture) -> None:
    d, reg = make([("s1", "z1", GiB), ("s2", "z2", GiB)])
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    reg.add_replicas(cid, ["s1", "s2"])
    with caplog.at_level(logging.WARNING):
        reg.report_bad(server_id="s1", chunk_id=cid, version=1, reason="checksum")
    assert "bad replica" in caplog.text
    assert reg.live_servers(cid, 1.0) == [{"id": "s2", "address": "10.0.0.2:9430"}]
    assert reg.health(1.0) == (1, 0)  # goal 2, one good replica
    # a re-registration does not bring the bad replica back
    reg.register(
        server_id="s1", address="x:1", zone="z1", capacity=GiB, free=GiB, chunks=[(cid, 1)], now=2.0
    )
    assert [s["id"] for s in reg.live_servers(cid, 2.0)] == ["s2"]
    reg.forget_chunks([ChunkId(cid)])
    assert cid in reg.pending_deletions("s1")


def test_health_and_totals() -> None:
    d, reg = make([("s1", "z1", GiB), ("s2", "z2", 2 * GiB)], timeout=5.0)
    f = d.create(ROOT, b"f")
    c0 = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    d.do("alloc_chunk", ino=f, index=1)
    reg.add_replicas(c0, ["s1", "s2"])
    assert reg.health(1.0) == (0, 1)
    assert reg.totals(1.0) == (200 * GiB, 3 * GiB, 2)
    assert reg.health(6.0) == (0, 2)  # everyone silent for longer than the timeout
    assert reg.totals(6.0) == (0, 0, 0)


def test_a_burst_of_new_chunks_never_makes_a_server_full() -> None:
    # 1,000 small files between two heartbeats reserve far more than the free space; only
    # the reported free space may make a server full (the burst once got ENOSPC).
    _, reg = make([("s1", "z1", 10 * GiB), ("s2", "z2", 10 * GiB)])
    for _ in range(1000):
        assert len(reg.place(2, 1.0)) == 2
    reg.heartbeat(server_id="s1", capacity=100 * GiB, free=GiB // 2, now=2.0)
    assert ids(reg.place(2, 2.0)) == ["s2"]  # s1 reported less than 1 % free: full
