"""The rebalance planner (dfs.metaserver.balance.pick_moves): HDFS's meaning of balanced."""

from __future__ import annotations

import pytest

from dfs.metaserver.balance import balanced, bytes_to_move, mean_of, pick_moves, spread, usage
from dfs.metaserver.registry import Registry
from dfs.types import CHUNK_SIZE, ChunkId
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def setup(n: int, zones: list[str] | None = None) -> tuple[Driver, Registry]:
    d = Driver()
    reg = Registry(d.ns, timeout=10.0)
    for i in range(1, n + 1):
        reg.register(
            server_id=f"s{i}",
            address=f"10.0.0.{i}:9430",
            zone=zones[i - 1] if zones else f"z{i}",
            capacity=4 * GiB,
            free=4 * GiB,
            chunks=[],
            now=0.0,
        )
    return d, reg


def full_chunk(d: Driver, reg: Registry, i: int, holders: list[str]) -> ChunkId:
    f = d.create(ROOT, f"f{i}".encode())
    cid = ChunkId(d.do("alloc_chunk", ino=f, index=0)["chunk_id"])
    d.do("commit_write", ino=f, size=CHUNK_SIZE, mtime_ns=-1)
    reg.add_replicas(cid, holders)
    return cid


def apply(reg: Registry, moves: list) -> None:  # type: ignore[type-arg]
    for m in moves:
        reg.add_replicas(m.chunk_id, [m.target.id])
        reg.remove_replica(m.chunk_id, m.source.id)


def test_two_empty_servers_are_filled_to_within_the_threshold() -> None:
    d, reg = setup(4)
    chunks = [full_chunk(d, reg, i, ["s1", "s2"]) for i in range(24)]  # 1.5 GiB each on s1, s2
    reg.suspects.clear()
    use = usage(reg, 1.0)
    assert spread(use) == {"s1": 37.5, "s2": 37.5, "s3": 0.0, "s4": 0.0}
    assert mean_of(use) == 18.75 and not balanced(use, 10.0)
    assert bytes_to_move(use, 10.0) > 0
    for _ in range(10):
        moves = pick_moves(reg, 1.0, usage(reg, 1.0), threshold=10.0, busy=set(), limit=8)
        if not moves:
            break
        for m in moves:
            assert m.source.id in ("s1", "s2") and m.target.id in ("s3", "s4")
            assert m.target.id not in reg.locations[m.chunk_id]
        apply(reg, moves)
        reg.suspects.clear()
    assert balanced(usage(reg, 1.0), 10.0)
    for cid in chunks:  # every chunk still at its goal, on two distinct servers
        assert len(reg.locations[cid]) == 2


def test_busy_chunks_and_chunks_under_goal_do_not_move() -> None:
    d, reg = setup(3)
    a = full_chunk(d, reg, 0, ["s1", "s2"])
    b = full_chunk(d, reg, 1, ["s1"])  # under its goal of 2
    c = full_chunk(d, reg, 2, ["s1", "s2"])
    reg.suspects.clear()
    moves = pick_moves(reg, 1.0, usage(reg, 1.0), threshold=5.0, busy={a}, limit=8)
    assert {m.chunk_id for m in moves} <= {c} and b not in {m.chunk_id for m in moves}


def test_a_move_never_reduces_the_zones_a_chunk_spans() -> None:
    # s3 is empty but shares s2's zone: a chunk on s1+s2 may move s1 -> s3 only if that keeps
    # two zones, which it does not (s2 and s3 are both in zone b); s2 -> s3 keeps a + b.
    d, reg = setup(3, zones=["a", "b", "b"])
    for i in range(8):
        full_chunk(d, reg, i, ["s1", "s2"])
    reg.suspects.clear()
    moves = pick_moves(reg, 1.0, usage(reg, 1.0), threshold=5.0, busy=set(), limit=8)
    assert moves and all(m.source.id == "s2" and m.target.id == "s3" for m in moves)


def test_servers_out_of_service_are_not_balanced() -> None:
    d, reg = setup(3)
    for i in range(8):
        full_chunk(d, reg, i, ["s1", "s2"])
    reg.suspects.clear()
    d.do("set_cs_mode", id="s3", mode="maintenance", until_ns=0)
    assert set(usage(reg, 1.0)) == {"s1", "s2"}
    assert pick_moves(reg, 1.0, usage(reg, 1.0), threshold=5.0, busy=set(), limit=8) == []
