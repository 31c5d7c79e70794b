"""Chunkserver modes (decommission, maintenance, normal): replicated in the namespace, obeyed
by placement, the replicator's planner and the grace-period logic."""

from __future__ import annotations

import time

import pytest

from dfs.errors import InvalidArgument
from dfs.metaserver.chunks import plan
from dfs.metaserver.namespace import Namespace
from dfs.metaserver.registry import Registry
from tests.metaserver.test_replication_plan import chunk, cluster, heartbeat_all

pytestmark = pytest.mark.unit


def test_modes_are_replicated_state_and_survive_a_snapshot() -> None:
    d, _reg = cluster(3)
    assert d.do("set_cs_mode", id="s2", mode="decommission", until_ns=0) == {"previous": "normal"}
    d.do("set_cs_mode", id="s3", mode="maintenance", until_ns=123)
    again = Namespace()
    again.restore(d.ns.snapshot_state())
    assert again.cs_modes == {"s2": ("decommission", 0), "s3": ("maintenance", 123)}
    d.do("set_cs_mode", id="s2", mode="normal")
    assert "s2" not in d.ns.cs_modes
    with pytest.raises(InvalidArgument):
        d.do("set_cs_mode", id="s1", mode="retired")


def test_a_decommissioning_server_is_drained_without_any_chunk_below_its_goal() -> None:
    d, reg = cluster(4)
    a = chunk(d, reg, b"a", ["s1", "s2"])
    b = chunk(d, reg, b"b", ["s1", "s3"])
    reg.suspects.clear()
    d.do("set_cs_mode", id="s1", mode="decommission", until_ns=0)
    reg.mode_changed("s1")
    assert reg.remaining("s1", 1.0) == 2
    p = plan(reg, 1.0, busy=set(), max_copies=8)
    # Both chunks are copied, never to s1, and nothing is deleted: s1's replicas stay valid
    # (readable) until it is stopped.
    assert sorted(j.chunk_id for j in p.copies) == sorted([a, b])
    assert all(j.target.id != "s1" for j in p.copies) and p.deletes == []
    for j in p.copies:
        reg.add_replicas(j.chunk_id, [j.target.id])
    assert reg.remaining("s1", 1.0) == 0
    status = {s["id"]: s for s in reg.status(1.0)}
    assert status["s1"]["mode"] == "decommissioned"
    # Three valid replicas of a goal-2 chunk, one leaving: not over the goal.
    p = plan(reg, 1.0, busy=set(), max_copies=8)
    assert p.copies == [] and p.deletes == []
    # Placement skips it.
    assert "s1" not in {s.id for s in reg.place(3, 1.0)}


def test_recommission_trims_the_surplus_it_left() -> None:
    d, reg = cluster(3)
    a = chunk(d, reg, b"a", ["s1", "s2", "s3"])
    d.do("set_cs_mode", id="s1", mode="decommission", until_ns=0)
    reg.mode_changed("s1")
    assert plan(reg, 1.0, busy=set(), max_copies=8).deletes == []
    d.do("set_cs_mode", id="s1", mode="normal")
    reg.mode_changed("s1")
    p = plan(reg, 1.0, busy=set(), max_copies=8)
    assert [(c, why) for c, _s, why in p.deletes] == [(a, "over goal")]


def test_maintenance_holds_off_re_replication_until_it_ends() -> None:
    d, reg = cluster(3, grace=30.0)
    cid = chunk(d, reg, b"a", ["s1", "s2"])
    d.do("set_cs_mode", id="s2", mode="maintenance", until_ns=time.time_ns() + 10**12)
    assert "s2" not in {s.id for s in reg.place(3, 0.0)}
    heartbeat_all(reg, 100.0, skip=("s2",))
    reg.check_liveness(100.0)
    assert reg.expire_gone(100.0) == []  # long past the grace period, but planned
    assert plan(reg, 100.0, busy=set(), max_copies=4).copies == []
    # The maintenance window ends: the usual grace logic applies again.
    d.do("set_cs_mode", id="s2", mode="maintenance", until_ns=time.time_ns() - 1)
    assert reg.mode("s2") == "normal"
    assert reg.expire_gone(100.0) == ["s2"]
    assert [j.chunk_id for j in plan(reg, 100.0, busy=set(), max_copies=4).copies] == [cid]


def test_registered_chunkservers_are_replicated_so_a_restarted_leader_waits_for_them() -> None:
    # A leader that restarted rebuilds its namespace from the log or a snapshot but its
    # registry is empty: the chunkservers named by earlier registrations are still awaited.
    d, _reg = cluster(0)
    d.do("noop", registered="cs1")
    d.do("noop", registered="cs2")
    again = Namespace()
    again.restore(d.ns.snapshot_state())
    assert again.chunkservers == {"cs1", "cs2"}
    fresh = Registry(again, timeout=10.0)
    assert fresh.missing_known(0.0) == {"cs1", "cs2"}
    # Removed by an operator: no longer awaited.
    again.apply({"op": "set_cs_mode", "now_ns": 1, "id": "cs2", "mode": "removed"})
    assert fresh.missing_known(0.0) == {"cs1"}


def test_a_registration_replaces_locations_learnt_from_the_log() -> None:
    # A follower learns locations from the log (alloc_chunk) for servers it never saw
    # register; as leader, what each server lists when it registers is the truth.
    from tests.metaserver.nsutil import ROOT, Driver

    d = Driver()
    reg = Registry(d.ns, timeout=10.0)
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    reg.add_replicas(cid, ["cs1", "cs3"])
    info = d.ns.chunk_info(cid)
    assert info is not None
    for sid, chunks in (("cs1", []), ("cs2", [(cid, info[2])]), ("cs3", [(cid, info[2])])):
        reg.register(
            server_id=sid,
            address=f"10.0.0.{sid[-1]}:9430",
            zone=sid,
            capacity=1 << 30,
            free=1 << 30,
            chunks=chunks,
            now=1.0,
        )
    assert sorted(reg.locations[cid]) == ["cs2", "cs3"]


def test_a_chunk_being_written_keeps_its_learnt_location_until_its_first_write() -> None:
    # A new chunk's file appears on the chunkserver only at its first write: a server that
    # registers without it while the chunk is under a write lease still holds it.
    from tests.metaserver.nsutil import ROOT, Driver

    d = Driver()
    reg = Registry(d.ns, timeout=10.0)
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    reg.add_replicas(cid, ["cs1", "cs2"])
    reg.leases[cid] = 100.0
    reg.register(
        server_id="cs1", address="10.0.0.1:9430", zone="z1", capacity=1 << 30,
        free=1 << 30, chunks=[], now=1.0,
    )  # fmt: skip
    assert sorted(reg.locations[cid]) == ["cs1", "cs2"] and cid in reg.held("cs1")
