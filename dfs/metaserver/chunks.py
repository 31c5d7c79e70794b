"""The leader's side of chunk data: write leases with version bumps, and replica upkeep.

Write leases (GFS §3.1, §4.5).  A client gets a chunk for writing with ``file.alloc_chunk``.
The first writer of a chunk starts a *lease*: the leader picks a new version, asks every live
valid replica to move to it (``chunk.set_version``), commits the new version and the replicas
that made it (the ``set_version`` command), and answers with them.  Any replica that missed the
bump (its server was down, or the bump failed there) is *stale* from then on: chunkservers
refuse reads and writes that name another version, so a stale replica is never served, and
the replicator deletes it once the chunk is back at its goal.  While the lease lasts
(``write_lease`` seconds, renewed by every ``alloc_chunk`` of the chunk) writers reuse the
version, as long as the lease was started by the current leader (a new leader bumps again: a
replica on a chunkserver that has not registered with it yet must not keep the version).
A writer whose write failed on a replica names it (``failed``): the leader drops it and bumps
the version on the others, and the writer sends the data again.

Versions are ``term << 32 | n``: unique across leaders (one leader per term) and increasing,
so a bump that reached some replicas but was never committed (the leader died in between)
leaves them *ahead* of the map; no client ever wrote at that version, so they still hold the
map version's bytes, and the replicator sets them back (``chunk.set_version`` downward).

When a lease ends (no renewal for ``write_lease`` seconds; a new leader counts from its
election, since every member records leases from the log), the leader compares the replicas'
digests (``chunk.info``: length and block checksums).  A writer that died in the middle of a
write can leave replicas that differ; then the longest replica (ties: the lowest server id)
gets a new version alone and the others become stale, so no two up-to-date replicas ever
differ.  Unacknowledged bytes may be lost that way, acknowledged ones never: an acknowledged
write reached every replica.

Replica upkeep.  ``plan`` looks at the chunks the registry marked as suspects (a server gone
past the grace period, a corrupt replica, a registration with stale or surplus replicas, a
finished copy...) and returns copies to make (chunks with the fewest live replicas first),
replicas to delete (surplus above the goal from the fullest servers; stale and bad replicas
once the chunk is at its goal) and versions to set back.  ``ChunkKeeper.run`` executes plans
on the leader, with at most ``jobs`` copies at a time, each paced at ``rate / jobs``.
Chunks under a write lease are neither copied nor trimmed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from dfs.errors import (
    ChunkNotFound,
    DfsError,
    FsError,
    IOFailure,
    NoSpace,
    NotLeader,
    StaleChunkVersion,
    Unavailable,
)
from dfs.metaserver.namespace import Namespace
from dfs.metaserver.registry import ChunkserverInfo, Registry
from dfs.rpc.client import RpcClientPool
from dfs.security.identity import Role, TlsFiles
from dfs.types import CHUNK_SIZE, ChunkId, InodeId

logger = logging.getLogger(__name__)

#: Seconds one ``chunk.set_version`` or ``chunk.info`` call may take.
CONTROL_TIMEOUT = 5.0
#: Seconds between two passes of the replicator.
PASS_INTERVAL = 0.5
#: Why a replica above the goal is deleted (``Plan.deletes``); the keeper confirms the
#: replicas that stay before it deletes one (``ChunkKeeper._trim``).
SURPLUS = "over goal"

Propose = Callable[..., Awaitable[Any]]


def _by_id(server: ChunkserverInfo) -> str:
    return server.id


@dataclass
class CopyJob:
    chunk_id: ChunkId
    version: int
    source: ChunkserverInfo
    target: ChunkserverInfo
    #: Live valid replicas when planned (0 copies first... 1 before 2).
    live: int
    length: int


@dataclass
class Plan:
    copies: list[CopyJob] = field(default_factory=list)
    #: (chunk, server, why)
    deletes: list[tuple[ChunkId, str, str]] = field(default_factory=list)
    #: (chunk, server, from version, to version): set an ahead replica back.
    undo: list[tuple[ChunkId, str, int, int]] = field(default_factory=list)
    #: Uncommitted chunks no server holds at any version (see ``ChunkKeeper.drop_unheld``).
    unheld: list[ChunkId] = field(default_factory=list)


def plan(
    registry: Registry,
    now: float,
    *,
    busy: set[ChunkId],
    max_copies: int,
    max_examine: int = 50_000,
) -> Plan:
    """What to do about the suspect chunks now (pure: reads the registry and namespace,
    only moves chunks out of ``registry.suspects`` once nothing is left to do for them).
    At most ``max_examine`` suspects are looked at per call, so one pass never holds the
    event loop for long (after a leader change every chunk is a suspect); the others wait
    for the next pass."""
    ns = registry.namespace
    out = Plan()
    #: Replicas on servers being decommissioned are valid (read, copied from) but count
    #: toward no goal and are never trimmed: they go with their server.
    leaving = registry.leaving()
    wanted: list[tuple[int, ChunkId]] = []
    done: list[ChunkId] = []
    pending = list(registry.suspects)
    if len(pending) > max_examine:
        # A rotating window, so chunks kept waiting (busy, no room) do not starve the rest.
        start = registry.scan_pos % len(pending)
        pending = (pending[start:] + pending[:start])[:max_examine]
        registry.scan_pos = start + max_examine
    for cid in pending:
        info = ns.chunk_info(cid)
        if info is None:
            done.append(cid)
            continue
        ino, _index, version = info
        goal = ns.inodes[InodeId(ino)].goal
        everywhere = registry.valid_servers(cid, now)
        live = [s for s in everywhere if s.id not in leaving]
        valid = registry.locations.get(cid, set()) - leaving
        if cid in registry.urgent:
            # Repair now: replicas on servers that are down do not count, grace or not.
            valid = {s.id for s in live}
        if cid in busy:
            # Being written or copied: no copy, no trim (it stays a suspect), but stale and
            # corrupt copies can go as soon as the goal is met.
            if len(live) >= goal:
                _clean(registry, cid, out)
            continue
        keep = False
        for sid, v in registry.ahead.get(cid, {}).items():
            if registry.is_alive(sid, now):
                out.undo.append((cid, sid, v, version))
                keep = True
        if not everywhere:
            if keep:
                continue
            if ns.is_uncommitted(cid) and not _anywhere(registry, cid):
                # No server holds it at any version, and no acknowledged byte is in it: the
                # keeper drops it from its file once every chunkserver has registered (it
                # stays a suspect until then).
                out.unheld.append(cid)
            else:
                done.append(cid)  # missing: nothing to copy from until a holder registers
            continue
        if len(valid) < goal:
            wanted.append((len(live), cid))
            continue
        if len(live) > goal and len(live) == len(valid):
            # Surplus: remove from the fullest servers (most used share first).
            victims = sorted(live, key=lambda s: (s.free / max(s.capacity, 1), s.id))
            for s in victims[: len(live) - goal]:
                out.deletes.append((cid, s.id, SURPLUS))
        if len(live) >= goal:
            _clean(registry, cid, out)
        if not keep:
            done.append(cid)
    for cid in done:
        registry.suspects.discard(cid)
        registry.urgent.discard(cid)
    wanted.sort()
    for live_count, cid in wanted:
        if len(out.copies) >= max_copies:
            break
        job = _copy_job(registry, cid, now, live_count, out)
        if job is not None:
            out.copies.append(job)
    return out


def _anywhere(registry: Registry, cid: ChunkId) -> bool:
    """Whether any server, live or not, is known to hold the chunk at any version."""
    return bool(
        registry.locations.get(cid)
        or registry.stale.get(cid)
        or registry.ahead.get(cid)
        or registry.bad.get(cid)
    )


def _clean(registry: Registry, cid: ChunkId, out: Plan) -> None:
    """Delete the chunk's stale and corrupt copies (the caller checked the goal is met)."""
    for sid in registry.stale.get(cid, {}):
        out.deletes.append((cid, sid, "stale"))
    for sid in registry.bad.get(cid, set()):
        out.deletes.append((cid, sid, "corrupt"))


def _copy_job(
    registry: Registry, cid: ChunkId, now: float, live_count: int, out: Plan
) -> CopyJob | None:
    ns = registry.namespace
    info = ns.chunk_info(cid)
    assert info is not None
    ino, index, version = info
    node = ns.inodes[InodeId(ino)]
    sources = registry.valid_servers(cid, now)
    leaving = registry.leaving()
    try:
        (target,) = registry.place(
            1,
            now,
            exclude=registry.copy_exclusions(cid, now),
            zones={s.zone for s in sources if s.id not in leaving},
        )
    except (NoSpace, Unavailable):
        # No server without a copy: clear a stale or corrupt copy on a live server, so that
        # server can take a fresh one in a later pass (a deletion in flight must not meet
        # the new copy).
        useless = set(registry.stale.get(cid, {})) | registry.bad.get(cid, set())
        for sid in sorted(useless):
            if registry.is_alive(sid, now):
                out.deletes.append((cid, sid, "making room for a fresh copy"))
                break
        return None
    # The least busy replica is the source (ties: any, to spread the copies).
    least = min(s.load for s in sources)
    source = random.choice([s for s in sources if s.load == least])
    length = max(0, min(CHUNK_SIZE, node.size - index * CHUNK_SIZE))
    return CopyJob(cid, version, source, target, live_count, length)


class ChunkKeeper:
    """Write leases and replica upkeep on the leader (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        *,
        node_id: str,
        tls: TlsFiles | None,
        propose: Propose,
        is_leader: Callable[[], bool],
        term: Callable[[], int],
        leader_since: Callable[[], float | None],
        lease: float = 30.0,
        rate: float = 100 * 2**20,
        jobs: int = 4,
    ) -> None:
        self.registry = registry
        self.ns: Namespace = registry.namespace
        self._node_id = node_id
        self._tls = tls
        self._propose = propose
        self._is_leader = is_leader
        self._term = term
        self._leader_since = leader_since
        self.lease = lease
        self.rate = rate
        self.jobs = jobs
        self._pool: RpcClientPool | None = None
        self._nursery: trio.Nursery | None = None
        self._version_term = 0
        self._version_n = 0
        self._grants: dict[ChunkId, trio.Lock] = {}
        self._copying: set[ChunkId] = set()
        #: Chunks whose current lease this leader started (chunk -> term).
        self._mine: dict[ChunkId, int] = {}
        #: Who holds each lease this leader granted (client sessions); a lease whose holders
        #: all released it ends at once.
        self._holders: dict[ChunkId, set[object]] = {}
        #: Leases released by all their holders since the last pass.
        self._released: set[ChunkId] = set()
        #: Unheld uncommitted chunks being dropped (``drop_unheld``).
        self._dropping: set[ChunkId] = set()
        self.stats = {
            "copies": 0,
            "copy_failures": 0,
            "deletes": 0,
            "bumps": 0,
            "recoveries": 0,
            "unheld_dropped": 0,
        }

    # ------------------------------------------------------------------ leases
    def next_version(self) -> int:
        term = self._term()
        if term != self._version_term:
            self._version_term, self._version_n = term, 0
        self._version_n += 1
        return (term << 32) | self._version_n

    def placed(self, cid: ChunkId, holder: object = None) -> None:
        """A chunk this leader just allocated (its replicas are exactly the placed ones)."""
        self._mine[cid] = self._term()
        self._holders.setdefault(cid, set()).add(holder)
        self._released.discard(cid)

    def release(self, cids: list[ChunkId], holder: object) -> None:
        """``holder`` is done writing these chunks (its last handle of the file closed, its
        cached leases dropped).  A lease nobody else holds ends now: the chunk may be checked
        and copied at the next pass instead of after ``write_lease`` seconds."""
        now = trio.current_time()
        for cid in cids:
            holders = self._holders.get(cid)
            if holders is None:
                continue
            holders.discard(holder)
            if not holders:
                del self._holders[cid]
                self._mine.pop(cid, None)
                if cid in self.registry.leases:
                    self.registry.leases[cid] = now
                    self._released.add(cid)

    @property
    def paused(self) -> bool:
        """``dfs admin replication pause`` (a replicated flag): no copies, trims or deletions
        of replicas until resumed.  Leases still end and are checked."""
        return bool(self.ns.flags.get("replication_paused"))

    def copying(self) -> int:
        return len(self._copying)

    def copying_chunks(self) -> set[ChunkId]:
        return set(self._copying)

    def is_leader(self) -> bool:
        return self._is_leader()

    def claim(self, cid: ChunkId) -> bool:
        """Reserve ``cid`` for a copy made outside the upkeep passes (a rebalance move):
        the planner leaves it alone until ``unclaim``.  False if a copy is already running."""
        if cid in self._copying:
            return False
        self._copying.add(cid)
        return True

    def unclaim(self, cid: ChunkId) -> None:
        self._copying.discard(cid)
        self.registry.suspects.add(cid)

    async def copy_replica(
        self,
        cid: ChunkId,
        version: int,
        source: ChunkserverInfo,
        target: ChunkserverInfo,
        length: int,
        rate: float,
    ) -> None:
        """Have ``target`` copy the chunk from ``source`` at ``rate`` bytes/s (the caller
        registers the copy if it still counts)."""
        await self._require_pool().call(
            target.address,
            "chunk.replicate",
            {"chunk_id": cid, "version": version, "source": source.server(), "rate": rate},
            timeout=max(60.0, 4 * length / rate),
        )

    def lease_active(self, cid: ChunkId, now: float) -> bool:
        return self.registry.leases.get(cid, float("-inf")) > now

    @asynccontextmanager
    async def _grant_lock(self, cid: ChunkId) -> AsyncIterator[None]:
        lock = self._grants.get(cid)
        if lock is None:
            lock = self._grants[cid] = trio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._grants.pop(cid, None)

    def granting(self, cid: ChunkId) -> bool:
        lock = self._grants.get(cid)
        return lock is not None and lock.locked()

    async def wait_grants(self, cids: list[ChunkId]) -> None:
        """Wait until no version bump of these chunks is in flight (a reader that found the
        replicas at a newer version than it knew asks again, and must see the new one)."""
        for cid in cids:
            lock = self._grants.get(cid)
            if lock is not None and lock.locked():
                async with self._grant_lock(cid):
                    pass

    async def write_lease(
        self,
        cid: ChunkId,
        *,
        failed: str | None = None,
        failed_version: int | None = None,
        failed_code: str | None = None,
        holder: object = None,
    ) -> None:
        """Make sure the chunk is under a write lease whose replicas are all live; bump its
        version when a new lease starts or a replica failed.  Raises IOFailure (NoSpace when
        the failure was a full disk) when no replica is left to write to."""
        async with self._grant_lock(cid):
            self._released.discard(cid)  # a writer again: an earlier release no longer counts
            info = self.ns.chunk_info(cid)
            if info is None:
                raise IOFailure(f"chunk {cid} no longer exists")
            version = int(info[2])
            now = trio.current_time()
            force = False
            if failed is not None and failed_version == version:
                logger.info(
                    "chunk %d: writer reports replica on %s failed (%s)", cid, failed, failed_code
                )
                if self.registry.locations.get(cid, set()) - {failed}:
                    self.registry.drop_replica(cid, failed)
                # else the only replica: kept (dropped, the chunk would be lost to the map
                # until that server registers again, which a healthy server never does); the
                # new version goes to it if it answers, else the writer waits for it.
                force = True
            live = self.registry.valid_servers(cid, now)
            valid = self.registry.locations.get(cid, set())
            # Reuse the version only under a lease this leader started itself: then every
            # replica that could hold the version is known (it was bumped or placed here).  A
            # lease inherited from an earlier leader may have replicas on servers that have
            # not registered with this one, which would miss the writes.
            mine = self._mine.get(cid) == self._term()
            whole = bool(live) and len(live) == len(valid)
            if mine and whole and not force and self.lease_active(cid, now):
                self.registry.leases[cid] = now + self.lease
                self._holders.setdefault(cid, set()).add(holder)
                self._released.discard(cid)
                return
            revived = self._dead_bumps(cid, version, now, exclude={s.id for s in live})
            if not live and not revived:
                msg = f"chunk {cid}: no live replica to write to"
                if failed_code == NoSpace.code:
                    raise NoSpace(msg)
                raise IOFailure(msg)
            new = self.next_version()
            targets = [(s, version) for s in live] + revived
            seen: dict[str, int] = {}
            made = await self._set_versions(cid, targets, new, seen=seen)
            if seen:
                # Replicas not at the version we thought (a bump of an earlier leader reached
                # them after they registered here): the ones ahead by such a bump join this
                # one from where they are, the others are stale now.
                for sid, v in seen.items():
                    self.registry.note_version(cid, sid, v)
                retry = self._dead_bumps(cid, version, now, exclude={s.id for s in made})
                made = sorted([*made, *await self._set_versions(cid, retry, new)], key=_by_id)
            if not made:
                raise IOFailure(f"chunk {cid}: no replica accepted version {new}")
            try:
                await self._propose(
                    "set_version",
                    chunk_id=cid,
                    version=new,
                    from_version=version,
                    servers=[s.id for s in made],
                )
            except (NotLeader, FsError):
                # Certainly not committed (not leader when proposed, or replaced by another
                # leader's entry), or applied as a failure: put the replicas back.
                with trio.CancelScope(shield=True):
                    await self._set_versions(cid, [(s, new) for s in made], version)
                raise
            # Anything else (leadership lost with the outcome unknown, cancelled, stopping)
            # may still commit under the next leader: the replicas stay at ``new``.  If the
            # entry never commits they are "ahead" of the map and the replicator sets them
            # back; setting them back here could undo a committed version (data loss).
            self.stats["bumps"] += 1
            self._mine[cid] = self._term()
            # A new lease: whoever held the old one must ask again (its version is gone).
            self._holders[cid] = {holder}
            self._released.discard(cid)
            if len(made) < len(live):
                logger.warning(
                    "chunk %d: version %d on %d of %d live replicas",
                    cid,
                    new,
                    len(made),
                    len(live),
                )

    def _dead_bumps(
        self, cid: ChunkId, version: int, now: float, exclude: set[str]
    ) -> list[tuple[ChunkserverInfo, int]]:
        """Live replicas ahead of the map by a bump of an earlier term, as (server, their
        version).  That bump can never commit any more (this leader has applied every entry
        of earlier terms it will ever have), so no client wrote at it: they hold the map
        version's bytes and can move to a new version like a valid replica."""
        term = self._term()
        out = []
        for sid, v in sorted(self.registry.ahead.get(cid, {}).items()):
            info = self.registry.servers.get(sid)
            if (
                sid not in exclude
                and v > version
                and v >> 32 < term
                and info is not None
                and self.registry.is_alive(sid, now)
            ):
                out.append((info, v))
        return out

    async def _set_versions(
        self,
        cid: ChunkId,
        targets: list[tuple[ChunkserverInfo, int]],
        new: int,
        *,
        seen: dict[str, int] | None = None,
    ) -> list[ChunkserverInfo]:
        """``chunk.set_version`` on every target in parallel; the ones that made it.  A
        target at another version than expected is added to ``seen`` (server -> version)."""
        pool = self._require_pool()
        made: list[ChunkserverInfo] = []

        async def one(server: ChunkserverInfo, old: int) -> None:
            try:
                await pool.call(
                    server.address,
                    "chunk.set_version",
                    {"chunk_id": cid, "version": old, "new_version": new},
                    timeout=CONTROL_TIMEOUT,
                    fail_fast=True,
                )
                made.append(server)
            except DfsError as exc:
                actual = exc.details.get("version")
                if (
                    seen is not None
                    and isinstance(exc, StaleChunkVersion)
                    and isinstance(actual, int)
                    and actual != old
                ):
                    seen[server.id] = actual
                logger.warning(
                    "chunk %d: set_version %d -> %d on %s failed: %s",
                    cid,
                    old,
                    new,
                    server.id,
                    exc,
                )

        async with trio.open_nursery() as nursery:
            for server, old in targets:
                nursery.start_soon(one, server, old)
        made.sort(key=_by_id)
        return made

    def require_nursery(self) -> trio.Nursery:
        """Where jobs of the leader's (a rebalance) run: they end with the keeper."""
        if self._nursery is None:
            raise Unavailable("the chunk keeper is not running yet", retry=True)
        return self._nursery

    def require_pool(self) -> RpcClientPool:
        """The leader's connections to chunkservers (for admin calls such as a verify)."""
        return self._require_pool()

    def _require_pool(self) -> RpcClientPool:
        if self._pool is None:
            raise Unavailable("the chunk keeper is not running yet", retry=True)
        return self._pool

    # ------------------------------------------------------------------ upkeep
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._tls is None:
            raise ValueError("the chunk keeper needs the metaserver's TLS files")
        async with (
            RpcClientPool(self._tls, name=self._node_id, expect_roles={Role.CHUNKSERVER}) as pool,
            trio.open_nursery() as nursery,
        ):
            self._pool = pool
            self._nursery = nursery
            task_status.started()
            limiter = trio.CapacityLimiter(self.jobs)
            while True:
                await trio.sleep(PASS_INTERVAL)
                if not self._is_leader() or not self.ns.initialised:
                    self._prune_leases(trio.current_time())
                    continue
                try:
                    await self.one_pass(nursery, limiter)
                except DfsError as exc:
                    logger.warning("replica upkeep pass failed: %s", exc)

    async def one_pass(self, nursery: trio.Nursery, limiter: trio.CapacityLimiter) -> None:
        now = trio.current_time()
        reg = self.registry
        reg.expire_gone(now)
        self._end_leases(nursery, now)
        if self.paused:
            return
        busy = self._copying | {c for c in reg.leases if self.lease_active(c, now)}
        free_slots = int(limiter.available_tokens)
        p = plan(reg, now, busy=busy, max_copies=free_slots)
        surplus: dict[ChunkId, list[str]] = {}
        for cid, sid, why in p.deletes:
            if why == SURPLUS:
                surplus.setdefault(cid, []).append(sid)
                continue
            logger.info("chunk %d: deleting the replica on %s (%s)", cid, sid, why)
            reg.remove_replica(cid, sid)
            self.stats["deletes"] += 1
        for cid, victims in surplus.items():
            self._copying.add(cid)  # busy: not planned again while the trim runs
            nursery.start_soon(self._trim, cid, victims)
        for cid, sid, old, new in p.undo:
            nursery.start_soon(self._undo, cid, sid, old, new)
        for job in p.copies:
            self._copying.add(job.chunk_id)
            nursery.start_soon(self._copy, job, limiter)
        if p.unheld:
            self.drop_unheld(nursery, p.unheld, now)

    def drop_unheld(self, nursery: trio.Nursery, cids: list[ChunkId], now: float) -> None:
        """Uncommitted chunks that no chunkserver holds at any version leave their files (a
        write that failed before any server stored it, e.g. its chain broke at the first
        server: otherwise every later lease finds no replica and fsck a missing chunk).
        Only once every chunkserver the cluster knows is alive and has registered with this
        leader (one that has not might hold it), and never under a lease.  Their bytes read
        as zeros; a writer that still had unsynced data there learns it is gone
        (``alloc_chunk`` answers ``DataLost``)."""
        since = self._leader_since()
        if since is None or self.registry.missing_known(now, since):
            return
        for cid in cids:
            if (
                cid in self._dropping
                or cid in self._holders
                or self.lease_active(cid, now)
                or self.granting(cid)
            ):
                continue
            self._dropping.add(cid)
            nursery.start_soon(self._drop_one, cid)

    async def _drop_one(self, cid: ChunkId) -> None:
        try:
            async with self._grant_lock(cid):  # no lease starts meanwhile
                info = self.ns.chunk_info(cid)
                now = trio.current_time()
                if (
                    info is None
                    or not self.ns.is_uncommitted(cid)
                    or self.lease_active(cid, now)
                    or _anywhere(self.registry, cid)
                ):
                    return
                r = await self._propose(
                    "drop_lost_chunk",
                    ino=info[0],
                    index=info[1],
                    chunk_id=cid,
                    uncommitted=True,
                )
            if r["dropped"]:
                self.stats["unheld_dropped"] += 1
                logger.warning(
                    "chunk %d (index %d of inode %d): allocated, never committed and held by "
                    "no chunkserver; dropped from its file",
                    cid,
                    info[1],
                    info[0],
                )
        except DfsError as exc:
            logger.warning("chunk %d: could not drop the unheld chunk: %s", cid, exc)
        finally:
            self._dropping.discard(cid)

    async def _trim(self, cid: ChunkId, victims: list[str]) -> None:
        """Delete surplus replicas, but only once the replicas that stay have confirmed
        (``chunk.info``) that they hold the chunk at its version, at least ``goal`` of them.
        A location the map believes in may be no replica at all (a copy deleted under an
        earlier leader, a first write that never arrived): trimming a real replica because
        of it would lose the chunk.  One found absent is forgotten."""
        try:
            async with self._grant_lock(cid):  # no lease starts meanwhile
                info = self.ns.chunk_info(cid)
                now = trio.current_time()
                if info is None or self.lease_active(cid, now):
                    return
                version = int(info[2])
                goal = self.ns.inodes[InodeId(info[0])].goal
                stay = [s for s in self.registry.valid_servers(cid, now) if s.id not in victims]
                answers = await self._chunk_infos(cid, stay)
                confirmed = []
                for server in stay:
                    answer = answers.get(server.id)
                    if isinstance(answer, ChunkNotFound):
                        self._not_held(cid, server.id)
                    elif isinstance(answer, dict):
                        if int(answer["version"]) == version:
                            confirmed.append(server.id)
                        else:
                            self.registry.note_version(cid, server.id, int(answer["version"]))
                cur = self.ns.chunk_info(cid)
                if len(confirmed) < goal or cur is None or cur[2] != version:
                    logger.info(
                        "chunk %d: not trimming %s: only %s confirmed the replica (goal %d)",
                        cid,
                        victims,
                        confirmed,
                        goal,
                    )
                    return
                for sid in victims:
                    if sid in self.registry.locations.get(cid, ()):
                        logger.info("chunk %d: deleting the replica on %s (%s)", cid, sid, SURPLUS)
                        self.registry.remove_replica(cid, sid)
                        self.stats["deletes"] += 1
        finally:
            self._copying.discard(cid)

    def _not_held(self, cid: ChunkId, sid: str) -> None:
        """The map places the chunk on ``sid`` but that server has no such chunk (a new
        chunk's file appears at its first write, which may never have arrived; a copy
        deleted under an earlier leader): it is no replica.  Its next registration says
        otherwise if it ever holds it."""
        logger.warning("chunk %d: %s does not hold it; forgetting that replica", cid, sid)
        self.registry.drop_replica(cid, sid)

    async def _chunk_infos(
        self, cid: ChunkId, servers: list[ChunkserverInfo]
    ) -> dict[str, dict[str, Any] | DfsError]:
        """``chunk.info`` on each server in parallel: its answer or its error, by id."""
        pool = self._require_pool()
        out: dict[str, dict[str, Any] | DfsError] = {}

        async def ask(server: ChunkserverInfo) -> None:
            try:
                out[server.id] = await pool.call(
                    server.address,
                    "chunk.info",
                    {"chunk_id": cid},
                    timeout=CONTROL_TIMEOUT,
                    fail_fast=True,
                )
            except DfsError as exc:
                out[server.id] = exc

        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(ask, server)
        return out

    async def _undo(self, cid: ChunkId, sid: str, old: int, new: int) -> None:
        info = self.registry.servers.get(sid)
        if info is None:
            return
        made = await self._set_versions(cid, [(info, old)], new)
        cur = self.ns.chunk_info(cid)
        if made and cur is not None and cur[2] == new:
            logger.info("chunk %d: set the replica on %s back to version %d", cid, sid, new)
            self.registry.add_replicas(cid, [sid])

    async def _copy(self, job: CopyJob, limiter: trio.CapacityLimiter) -> None:
        cid = job.chunk_id
        try:
            async with limiter:
                t0 = trio.current_time()
                await self.copy_replica(
                    cid, job.version, job.source, job.target, job.length, self.rate / self.jobs
                )
            cur = self.ns.chunk_info(cid)
            if cur is None or cur[2] != job.version or self.lease_active(cid, trio.current_time()):
                # Deleted, or written at a new version while we copied: the copy is stale.
                self.registry.remove_replica(cid, job.target.id)
            else:
                self.registry.add_replicas(cid, [job.target.id])
                self.stats["copies"] += 1
                logger.info(
                    "chunk %d: copied %s -> %s in %.2f s (%d live replicas before)",
                    cid,
                    job.source.id,
                    job.target.id,
                    trio.current_time() - t0,
                    job.live,
                )
        except DfsError as exc:
            self.stats["copy_failures"] += 1
            logger.warning(
                "chunk %d: copy %s -> %s failed: %s", cid, job.source.id, job.target.id, exc
            )
            if isinstance(exc, ChunkNotFound) and exc.details.get("failed") == job.source.id:
                self._not_held(cid, job.source.id)
        finally:
            self._copying.discard(cid)
            self.registry.suspects.add(cid)

    # ------------------------------------------------------------------ lease ends
    def _prune_leases(self, now: float) -> None:
        """A follower keeps the leases it applied for ten lease periods (renewals happen on
        the leader only), so that if it becomes leader it still checks those chunks."""
        old = [c for c, until in self.registry.leases.items() if until + 9 * self.lease < now]
        for cid in old:
            del self.registry.leases[cid]

    def _end_leases(self, nursery: trio.Nursery, now: float) -> None:
        since = self._leader_since()
        if since is None:
            return
        # A lease a new leader inherited may still be renewed with its predecessor's
        # clock: it ends no earlier than a lease period after the election.  One whose
        # holders all released it here ends now.
        ended = [
            cid
            for cid, until in self.registry.leases.items()
            if max(until, since + self.lease) <= now or cid in self._released
        ]
        self._released.clear()
        for cid in ended:
            del self.registry.leases[cid]
            self._mine.pop(cid, None)
            self._holders.pop(cid, None)
            self.registry.suspects.add(cid)  # its replicas may be short of the goal, or none
            nursery.start_soon(self._check_replicas_agree, cid)

    async def _check_replicas_agree(self, cid: ChunkId) -> None:
        """After a lease: the valid replicas must hold identical bytes (see module doc)."""
        async with self._grant_lock(cid):
            info = self.ns.chunk_info(cid)
            if info is None or self.lease_active(cid, trio.current_time()):
                return
            version = int(info[2])
            live = self.registry.valid_servers(cid, trio.current_time())
            if len(live) < 2:
                return
            seen: dict[str, tuple[int, int]] = {}
            for sid, r in (await self._chunk_infos(cid, live)).items():
                if isinstance(r, DfsError):
                    logger.info("chunk %d: no digest from %s: %s", cid, sid, r)
                elif int(r["version"]) == version:
                    seen[sid] = (int(r["length"]), int(r["digest"]))
            if len(set(seen.values())) <= 1:
                return
            # Longest first, then the lowest id: a deterministic authority.
            authority = sorted(seen, key=lambda sid: (-seen[sid][0], sid))[0]
            logger.warning(
                "chunk %d: replicas differ after a write lease ended (%s); keeping %s",
                cid,
                {sid: f"{n} bytes/{d:016x}" for sid, (n, d) in sorted(seen.items())},
                authority,
            )
            server = self.registry.servers[authority]
            new = self.next_version()
            if not await self._set_versions(cid, [(server, version)], new):
                return
            await self._propose(
                "set_version",
                chunk_id=cid,
                version=new,
                from_version=version,
                servers=[authority],
            )
            self.stats["recoveries"] += 1
