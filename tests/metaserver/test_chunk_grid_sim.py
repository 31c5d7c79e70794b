"""A simulated chunk grid: the registry and the upkeep planner (``dfs.metaserver.chunks.plan``)
driving chunkservers that break, hang, come back stale and get corrupted, and leaders that die
in the middle of a version bump, from one seed.

The grid keeps the truth: what each server's disk holds (chunk -> version, content) and each
chunk's latest content.  Writes follow the lease protocol (a bump reaches only the servers
that answer; the others miss the write).  After every step the registry must never offer a
replica whose bytes are not the latest; after healing, every chunk must be at its goal with
the latest bytes and no stale or corrupt copy may be left on any disk.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from dfs.errors import NotFound
from dfs.metaserver.chunks import plan
from dfs.metaserver.registry import Registry
from dfs.types import ChunkId, InodeId
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30
CORRUPT = -1


@dataclass
class Server:
    id: str
    up: bool = True
    hung: bool = False
    disk: dict[ChunkId, list[int]] = field(default_factory=dict)  # chunk -> [version, content]

    @property
    def answers(self) -> bool:
        return self.up and not self.hung


class Grid:
    def __init__(self, seed: int, n_servers: int = 5) -> None:
        self.rng = random.Random(seed)
        self.d = Driver()
        self.reg = Registry(self.d.ns, timeout=3.0, grace=6.0, orphan_delay=30.0)
        self.now = 0.0
        self.servers = {f"s{i}": Server(f"s{i}") for i in range(1, n_servers + 1)}
        self.truth: dict[ChunkId, int] = {}
        self.next_version = 100
        for s in self.servers.values():
            self.register(s)

    # ---- chunkserver behaviour ----
    def register(self, s: Server) -> None:
        self.reg.register(
            server_id=s.id,
            address=f"{s.id}:1",
            zone=s.id,
            capacity=100 * GiB,
            free=50 * GiB,
            chunks=[(cid, v) for cid, (v, _c) in s.disk.items()],
            now=self.now,
        )

    def heartbeat(self, s: Server) -> None:
        try:
            doomed = self.reg.heartbeat(
                server_id=s.id, capacity=100 * GiB, free=50 * GiB, now=self.now
            )
        except NotFound:
            self.register(s)
            return
        for cid in doomed:
            s.disk.pop(cid, None)

    # ---- metaserver behaviour ----
    def create_file(self, name: bytes, goal: int, chunks: int) -> None:
        ino = self.d.create(ROOT, name)
        self.d.do("setgoal", ino=ino, goal=goal, cred={"uid": 0, "gid": 0})
        for index in range(chunks):
            placed = self.reg.place(goal, self.now)
            cid = ChunkId(self.d.do("alloc_chunk", ino=ino, index=index)["chunk_id"])
            self.reg.add_replicas(cid, [s.id for s in placed])
            self.truth[cid] = 0
            for s in placed:
                self.servers[s.id].disk[cid] = [1, 0]
        self.d.do("commit_write", ino=ino, size=chunks * (64 << 20), mtime_ns=-1)

    def write(self, cid: ChunkId) -> None:
        """A new write lease and a write: bump on the live valid replicas that answer."""
        info = self.d.ns.chunk_info(cid)
        assert info is not None
        old = info[2]
        live = self.reg.valid_servers(cid, self.now)
        made = [s.id for s in live if self.servers[s.id].answers]
        if not made:
            return
        self.next_version += 1
        new = self.next_version
        self.d.do("set_version", chunk_id=cid, version=new, from_version=old, servers=made)
        self.reg.set_version(cid, old, made)
        self.truth[cid] += 1
        for sid in made:
            self.servers[sid].disk[cid] = [new, self.truth[cid]]

    def upkeep(self) -> None:
        """One replicator pass; copies finish at once when both ends answer."""
        self.reg.expire_gone(self.now)
        p = plan(self.reg, self.now, busy=set(), max_copies=4)
        for cid, sid, _why in p.deletes:
            self.reg.remove_replica(cid, sid)
        for cid, sid, _old, new in p.undo:
            s = self.servers[sid]
            if s.answers and cid in s.disk:
                s.disk[cid][0] = new
                self.reg.add_replicas(cid, [sid])
        for job in p.copies:
            src, dst = self.servers[job.source.id], self.servers[job.target.id]
            info = self.d.ns.chunk_info(job.chunk_id)
            if not (src.answers and dst.answers) or info is None:
                continue
            copy = src.disk.get(job.chunk_id)
            if copy is None or copy[0] != job.version or copy[1] == CORRUPT:
                continue  # the real copy fails: the source reads at that version or detects damage
            dst.disk[job.chunk_id] = list(copy)
            self.reg.add_replicas(job.chunk_id, [dst.id])

    def new_leader(self) -> None:
        """Soft state is lost: a fresh registry learns from the servers that answer."""
        self.reg = Registry(self.d.ns, timeout=3.0, grace=6.0, orphan_delay=30.0)
        for s in self.servers.values():
            if s.answers:
                self.register(s)

    def scrub(self, s: Server) -> None:
        """The scrubber (or a reader) finds corrupt copies at the current version."""
        for cid, (version, content) in s.disk.items():
            info = self.d.ns.chunk_info(cid)
            if content == CORRUPT and info is not None and info[2] == version:
                self.reg.report_bad(server_id=s.id, chunk_id=cid, version=version, reason="scrub")

    def tick(self, dt: float = 1.0) -> None:
        self.now += dt
        for s in self.servers.values():
            if s.answers:
                self.heartbeat(s)
                if self.rng.random() < 0.2:
                    self.scrub(s)
        self.reg.check_liveness(self.now)
        self.upkeep()

    # ---- faults ----
    def step(self) -> None:
        r = self.rng.random()
        chunks = sorted(self.truth)
        servers = list(self.servers.values())
        s = self.rng.choice(servers)
        if r < 0.35:
            self.write(self.rng.choice(chunks))
        elif r < 0.45 and sum(x.answers for x in servers) > 2:
            s.up = False  # kill -9: the disk stays
        elif r < 0.55 and not s.up:
            s.up = True  # restart with whatever it held (maybe stale)
            self.register(s)
        elif r < 0.62 and s.up and sum(x.answers for x in servers) > 2:
            s.hung = True
        elif r < 0.72 and s.hung:
            s.hung = False
        elif r < 0.76:
            # The leader dies in the middle of a bump: some replicas moved to a version that
            # is never committed; the new leader rebuilds its registry from registrations.
            cid = self.rng.choice(chunks)
            self.next_version += 1
            for x in self.reg.valid_servers(cid, self.now):
                if self.servers[x.id].answers and self.rng.random() < 0.7:
                    self.servers[x.id].disk[cid][0] = self.next_version
            self.new_leader()
        elif r < 0.80:
            cid = self.rng.choice(chunks)
            valid = [x for x in self.reg.valid_servers(cid, self.now) if self.servers[x.id].answers]
            if len(valid) >= 2:
                victim = self.servers[self.rng.choice(valid).id]
                victim.disk[cid][1] = CORRUPT
                info = self.d.ns.chunk_info(cid)
                assert info is not None
                self.reg.report_bad(
                    server_id=victim.id, chunk_id=cid, version=info[2], reason="sim"
                )
        self.tick(self.rng.choice([0.5, 1.0, 2.0, 4.0]))

    # ---- checks ----
    def check_never_serves_stale(self) -> None:
        for cid, (_ino, _index, version) in self.d.ns.chunks.items():
            for s in self.reg.valid_servers(cid, self.now):
                held = self.servers[s.id].disk.get(cid)
                if held is None:
                    continue  # lost from the disk: a read fails over (ChunkNotFound)
                assert held[0] == version, (cid, s.id, held, version)
                # Corrupt bytes fail their checksums on every read (and are reported); old
                # bytes under the current version would be served: never allowed.
                assert held[1] in (self.truth[cid], CORRUPT), (cid, s.id, "would serve old bytes")

    def heal(self) -> None:
        for s in self.servers.values():
            if not s.up:
                s.up = True
                self.register(s)
            s.hung = False
        for _ in range(300):
            for s in self.servers.values():
                self.scrub(s)
            self.tick(1.0)
            reg = self.reg
            if (
                not reg.suspects
                and not (reg.stale or reg.bad or reg.ahead)
                and all(len(reg.valid_servers(c, self.now)) == self.goal(c) for c in self.truth)
            ):
                break
        for _ in range(3):  # hand out the last deletions
            self.tick(1.0)

    def goal(self, cid: ChunkId) -> int:
        info = self.d.ns.chunk_info(cid)
        assert info is not None
        return self.d.ns.inodes[InodeId(info[0])].goal

    def check_healed(self) -> None:
        for cid, (_ino, _index, version) in self.d.ns.chunks.items():
            holders = [
                s.id for s in self.servers.values() if cid in s.disk and s.disk[cid][0] == version
            ]
            assert len(holders) == self.goal(cid), (cid, holders)
            for sid in holders:
                assert self.servers[sid].disk[cid][1] == self.truth[cid], (cid, sid)
            for s in self.servers.values():
                held = s.disk.get(cid)
                assert held is None or held[0] == version, (cid, s.id, "stale copy left", held)
        assert not self.reg.stale and not self.reg.bad and not self.reg.ahead


@pytest.mark.parametrize("seed", range(40))
def test_grid_heals_and_never_serves_stale_bytes(seed: int) -> None:
    g = Grid(seed)
    for i in range(4):
        g.create_file(b"f%d" % i, goal=2 + i % 2, chunks=2)
    for _ in range(150):
        g.step()
        g.check_never_serves_stale()
    g.heal()
    g.check_never_serves_stale()
    g.check_healed()
