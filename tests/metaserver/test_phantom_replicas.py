"""A location the leader believes in that is no replica must never get a real one deleted.

Chaos seed 1 at a4da623 lost an acknowledged file this way.  Its chunk had replicas on cs3
and cs1 (cs2's was corrupt and deleted, by leader m1).  Leader m3, elected next, still had the
chunk's lease entry from the log (a member keeps them for ten lease periods) and cs2 from the
allocation; cs2's registration did not list the chunk, but a registration kept every
unlisted replica of a chunk with a lease entry.  So m3 counted three replicas and trimmed
cs3's as surplus.  The next leader did the same with cs2 and cs3, both phantoms by then, and
trimmed cs1's, the last one.

Two fixes, each enough for that run: a registration keeps an unlisted replica only under a
lease that has not run out, and the keeper deletes a surplus replica only after the ones
that stay confirmed with ``chunk.info`` that they hold the chunk (forgetting any that does
not).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from dfs.errors import ChunkNotFound
from dfs.metaserver.registry import Registry
from dfs.types import ChunkId
from tests.metaserver.keeperutil import leader_keeper, one_pass
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def test_a_registration_keeps_an_unlisted_replica_only_under_a_running_lease() -> None:
    d = Driver()
    reg = Registry(d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
    ino = d.create(ROOT, b"f")
    cid = ChunkId(d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
    reg.add_replicas(cid, ["s1", "s2"])  # as a follower applies the allocation
    reg.leases[cid] = 130.0  # applied at 100, a 30 s lease
    # At 120 the lease runs: s1's first write may still be on its way.
    reg.register(
        server_id="s1", address="s1:1", zone="a", capacity=GiB, free=GiB, chunks=[], now=120
    )
    assert reg.locations[cid] == {"s1", "s2"}
    # At 200 the entry is still there (kept for ten lease periods), but the lease is over: a
    # server that does not list the chunk does not hold it.
    reg.register(
        server_id="s2", address="s2:1", zone="b", capacity=GiB, free=GiB, chunks=[], now=200
    )
    assert reg.locations[cid] == {"s1"}


class InfoServers:
    """``chunk.info`` over a dict server -> version (absent: ChunkNotFound)."""

    def __init__(self, held: dict[str, int]) -> None:
        self.held = held
        self.asked: list[str] = []

    async def call(self, address: str, method: str, params: dict[str, Any], **_: Any) -> Any:
        assert method == "chunk.info", method
        sid = address.split(":", maxsplit=1)[0]
        self.asked.append(sid)
        if sid not in self.held:
            raise ChunkNotFound(f"no chunk {params['chunk_id']}")
        return {"version": self.held[sid], "length": 100, "digest": 7}


class Rig:
    def __init__(self, held: dict[str, int]) -> None:
        self.d = Driver()  # goal 2
        self.reg = Registry(self.d.ns, timeout=30.0, grace=60.0, orphan_delay=30.0)
        ino = self.d.create(ROOT, b"f")
        self.cid = ChunkId(self.d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
        self.d.do("commit_write", ino=ino, size=100, mtime_ns=-1)
        self.servers = InfoServers(held)
        self.keeper = leader_keeper(self.reg, self.propose, pool=self.servers)

    async def propose(self, op: str, **args: Any) -> Any:
        raise AssertionError(f"nothing to propose here, got {op}")

    def register(self, sid: str, free: int, now: float) -> None:
        self.reg.register(
            server_id=sid,
            address=f"{sid}:1",
            zone=sid,
            capacity=100 * GiB,
            free=free * GiB,
            chunks=[],
            now=now,
        )

    def on_three(self) -> None:
        """s1, s2 (the fullest) and s3 registered, the map placing the chunk on all three."""
        now = trio.current_time()
        for sid, free in (("s1", 80), ("s2", 10), ("s3", 50)):
            self.register(sid, free, now)
        self.reg.add_replicas(self.cid, ["s1", "s2", "s3"])

    async def pass_(self) -> None:
        await one_pass(self.keeper)


def test_a_surplus_replica_stays_when_a_replica_counted_toward_the_goal_is_a_phantom() -> None:
    async def main() -> None:
        # Real replicas on s2 and s3; the map also places it on s1, which has nothing.
        rig = Rig({"s2": 1, "s3": 1})
        rig.on_three()
        await rig.pass_()
        # s2 (the fullest) was the victim; s1 and s3 were asked; s1 has no such chunk.
        assert sorted(rig.servers.asked) == ["s1", "s3"]
        assert rig.reg.locations[rig.cid] == {"s2", "s3"}
        assert rig.keeper.stats["deletes"] == 0
        # Back at the goal: nothing more to do, nothing deleted.
        await rig.pass_()
        assert rig.reg.locations[rig.cid] == {"s2", "s3"}
        assert rig.keeper.stats["deletes"] == 0

    trio.run(main)


def test_a_real_surplus_replica_goes_once_the_others_confirmed() -> None:
    async def main() -> None:
        rig = Rig({"s1": 1, "s2": 1, "s3": 1})
        rig.on_three()
        await rig.pass_()
        assert sorted(rig.servers.asked) == ["s1", "s3"]
        assert rig.reg.locations[rig.cid] == {"s1", "s3"}
        assert rig.keeper.stats["deletes"] == 1
        assert rig.cid in rig.reg.pending_deletions("s2")

    trio.run(main)
