"""``dfs rebalance``: move replicas until every chunkserver's use is near the cluster mean.

Meaning as in HDFS's balancer: a chunkserver's *utilization* is the bytes of the replicas it
holds over its capacity; the cluster's is their sums' ratio over the chunkservers in normal
service.  The cluster is balanced when every such chunkserver is within ``threshold``
percentage points of it.

A *move* copies one replica from a source (a server above the mean) to a target (a server
below it) and only then deletes the source's replica, so a chunk holds ``goal + 1`` replicas
for a moment and never fewer than it had.  The source replica is deleted only if the chunk is
still at its goal without it, at the version the copy was made at, under no write lease;
otherwise the new copy is a surplus the replicator trims.  Either way, a move stopped at any
point (Ctrl-C, a dead leader, a failed copy) leaves a consistent cluster.

Pairing (HDFS): sources are the servers over ``mean + threshold``, or, when none is, the
servers above the mean while some server is under ``mean - threshold``; targets the
converse.  A move never puts two replicas of a chunk on one server nor reduces the number of
zones its replicas span, and skips chunks that are busy (being written or copied), not at
their goal, or have replicas in another state (stale, ahead, corrupt).

The job runs on the leader (``Balancer``), one at a time, driven by ``admin.rebalance*``; it
stops when balanced, after ``max_moves``, when nothing more can move, on ``stop``, or when its
client stops asking for progress for ``ORPHAN_AFTER`` seconds (the ``dfs rebalance`` process
died).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from dfs.errors import BadRequest, DfsError, Unavailable
from dfs.types import CHUNK_SIZE, ChunkId, InodeId

if TYPE_CHECKING:
    from dfs.metaserver.chunks import ChunkKeeper
    from dfs.metaserver.registry import ChunkserverInfo, Registry

logger = logging.getLogger(__name__)

#: A job whose client has not asked for progress for this long stops (its CLI died).
ORPHAN_AFTER = 15.0
#: Copies running at once.
PARALLEL = 4


@dataclass
class Move:
    chunk_id: ChunkId
    version: int
    source: ChunkserverInfo
    target: ChunkserverInfo
    length: int


def chunk_length(registry: Registry, cid: ChunkId) -> int:
    """Bytes a replica of ``cid`` holds (its part of the file's size)."""
    info = registry.namespace.chunk_info(cid)
    if info is None:
        return 0
    ino, index, _v = info
    size = registry.namespace.inodes[InodeId(ino)].size
    return max(0, min(CHUNK_SIZE, size - index * CHUNK_SIZE))


def usage(registry: Registry, now: float) -> dict[str, tuple[int, int]]:
    """``{server: (bytes held, capacity)}`` for the live servers in normal service."""
    out: dict[str, tuple[int, int]] = {}
    for sid, info in sorted(registry.servers.items()):
        if not registry.is_alive(sid, now) or registry.mode(sid) != "normal":
            continue
        if info.capacity <= 0:
            continue
        held = sum(chunk_length(registry, c) for c in registry.held(sid))
        out[sid] = (held, info.capacity)
    return out


def mean_of(use: dict[str, tuple[int, int]]) -> float:
    """The cluster's utilization in percent."""
    cap = sum(c for _u, c in use.values())
    return 100.0 * sum(u for u, _c in use.values()) / cap if cap else 0.0


def spread(use: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Each server's utilization in percent."""
    return {sid: 100.0 * u / c for sid, (u, c) in use.items()}


def balanced(use: dict[str, tuple[int, int]], threshold: float) -> bool:
    mean = mean_of(use)
    return all(abs(p - mean) <= threshold for p in spread(use).values())


def bytes_to_move(use: dict[str, tuple[int, int]], threshold: float) -> int:
    """A lower bound of the bytes that must move to balance (the excess over mean+threshold
    or the lack under mean-threshold, whichever is larger)."""
    mean = mean_of(use)
    over = sum(max(0.0, u - (mean + threshold) / 100 * c) for u, c in use.values())
    under = sum(max(0.0, (mean - threshold) / 100 * c - u) for u, c in use.values())
    return int(max(over, under))


def pick_moves(
    registry: Registry,
    now: float,
    use: dict[str, tuple[int, int]],
    *,
    threshold: float,
    busy: set[ChunkId],
    limit: int,
) -> list[Move]:
    """Up to ``limit`` moves that bring the servers toward the mean (pure but for reading
    the registry).  ``use`` is updated with the moves' effect, so a caller may plan further
    rounds on it."""
    ns = registry.namespace
    mean = mean_of(use)
    pct = spread(use)
    over = [s for s in use if pct[s] > mean + threshold]
    under = [s for s in use if pct[s] < mean - threshold]
    sources = over or ([s for s in use if pct[s] > mean] if under else [])
    targets = under or ([s for s in use if pct[s] < mean] if over else [])
    if not sources or not targets:
        return []
    moves: list[Move] = []
    taken: set[ChunkId] = set()
    leaving = registry.leaving()
    # The fullest source first, each to the emptiest target that can take the chunk.
    for src in sorted(sources, key=lambda s: -pct[s]):
        for cid in sorted(registry.held(src)):
            if len(moves) >= limit:
                return moves
            u, c = use[src]
            if 100.0 * u / c <= mean + (threshold if over else 0.0) * 0.5:
                break  # this source is close enough now
            if cid in busy or cid in taken or cid in registry.suspects:
                continue
            if cid in registry.stale or cid in registry.ahead or cid in registry.bad:
                continue
            info = ns.chunk_info(cid)
            if info is None:
                continue
            ino, _index, version = info
            goal = ns.inodes[InodeId(ino)].goal
            holders = registry.valid_servers(cid, now)
            counting = [s for s in holders if s.id not in leaving]
            if len(counting) < goal or len(holders) != len(registry.locations.get(cid, ())):
                continue
            length = chunk_length(registry, cid)
            if length == 0:
                continue
            exclude = registry.copy_exclusions(cid, now)
            others = {s.zone for s in counting if s.id != src}
            zones_before = len({s.zone for s in counting})
            candidates = sorted(
                (t for t in targets if t not in exclude), key=lambda t: (pct_of(use, t), t)
            )
            for tgt in candidates:
                tu, tc = use[tgt]
                if 100.0 * (tu + length) / tc > mean + (0.0 if under else threshold) * 0.5:
                    continue  # it would overshoot
                target = registry.servers[tgt]
                if len(others | {target.zone}) < zones_before:
                    continue
                moves.append(Move(cid, int(version), registry.servers[src], target, length))
                taken.add(cid)
                use[src] = (u - length, c)
                use[tgt] = (tu + length, tc)
                break
    return moves


def pct_of(use: dict[str, tuple[int, int]], sid: str) -> float:
    u, c = use[sid]
    return 100.0 * u / c


@dataclass
class Job:
    threshold: float
    max_moves: int
    bandwidth: float  # bytes/s in all, 0: the replicator's rate
    state: str = "running"  # running | balanced | done | stopped | failed
    reason: str = ""
    moves: int = 0
    bytes: int = 0
    failures: int = 0
    started: float = 0.0
    ended: float | None = None
    total_bytes: int = 0
    before: dict[str, float] = field(default_factory=dict)
    last_poll: float = 0.0
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)

    def report(self, registry: Registry, now: float) -> dict[str, Any]:
        use = usage(registry, now)
        elapsed = (self.ended or now) - self.started
        return {
            "state": self.state,
            "reason": self.reason,
            "threshold": self.threshold,
            "moves": self.moves,
            "bytes": self.bytes,
            "failures": self.failures,
            "elapsed": elapsed,
            "rate": self.bytes / elapsed if elapsed > 0 else 0.0,
            "total_bytes": self.total_bytes,
            "mean": mean_of(use),
            "before": self.before,
            "utilization": spread(use),
        }


class Balancer:
    """The leader's rebalance job (see the module docstring)."""

    def __init__(self, keeper: ChunkKeeper) -> None:
        self.keeper = keeper
        self.registry = keeper.registry
        self.job: Job | None = None

    def plan_only(self, threshold: float, max_moves: int) -> dict[str, Any]:
        """``--dry-run``: the moves a job would start with, and the figures."""
        now = trio.current_time()
        use = usage(self.registry, now)
        before = spread(use)
        mean = mean_of(use)
        need = bytes_to_move(use, threshold)
        moves: list[Move] = []
        for _ in range(1000):
            batch = pick_moves(
                self.registry,
                now,
                use,
                threshold=threshold,
                busy={m.chunk_id for m in moves} | self._busy(now),
                limit=(max_moves or 100_000) - len(moves),
            )
            if not batch:
                break
            moves += batch
        return {
            "state": "dry-run",
            "threshold": threshold,
            "mean": mean,
            "before": before,
            "after": spread(use),
            "moves": len(moves),
            "bytes": sum(m.length for m in moves),
            "total_bytes": need,
            "sample": [
                {"chunk_id": m.chunk_id, "from": m.source.id, "to": m.target.id, "bytes": m.length}
                for m in moves[:20]
            ],
        }

    def start(
        self, nursery: trio.Nursery, *, threshold: float, max_moves: int, bandwidth: float
    ) -> Job:
        if self.job is not None and self.job.state == "running":
            raise BadRequest("a rebalance is already running (dfs rebalance --stop ends it)")
        now = trio.current_time()
        use = usage(self.registry, now)
        if len(use) < 2:
            raise BadRequest("rebalancing needs at least two live chunkservers in service")
        job = Job(threshold, max_moves, bandwidth, started=now, last_poll=now)
        job.before = spread(use)
        job.total_bytes = bytes_to_move(use, threshold)
        self.job = job
        nursery.start_soon(self._run, job)
        return job

    def poll(self) -> Job | None:
        if self.job is not None:
            self.job.last_poll = trio.current_time()
        return self.job

    def stop(self) -> Job | None:
        job = self.job
        if job is not None and job.state == "running":
            job.state, job.reason = "stopped", "stopped by the operator"
            job.cancel.cancel()
        return job

    def _busy(self, now: float) -> set[ChunkId]:
        reg = self.registry
        return set(self.keeper.copying_chunks()) | {
            c for c in reg.leases if self.keeper.lease_active(c, now)
        }

    async def _run(self, job: Job) -> None:
        rate = job.bandwidth or self.keeper.rate
        try:
            with job.cancel:
                await self._moves(job, rate)
        except DfsError as exc:
            job.state, job.reason = "failed", str(exc)
        finally:
            job.ended = trio.current_time()
            if job.state == "running":
                job.state = "done"
            logger.info(
                "rebalance %s (%s): %d moves, %d bytes, %d failures",
                job.state,
                job.reason,
                job.moves,
                job.bytes,
                job.failures,
            )

    async def _moves(self, job: Job, rate: float) -> None:
        idle_rounds = 0
        while True:
            now = trio.current_time()
            if not self.keeper.is_leader():
                raise Unavailable("this metaserver lost the leadership")
            if now - job.last_poll > ORPHAN_AFTER:
                job.state, job.reason = "stopped", "its client went away"
                return
            use = usage(self.registry, now)
            if balanced(use, job.threshold):
                job.state, job.reason = "balanced", "every chunkserver is within the threshold"
                return
            if job.max_moves and job.moves >= job.max_moves:
                job.state, job.reason = "done", f"--max-moves {job.max_moves} reached"
                return
            room = job.max_moves - job.moves if job.max_moves else PARALLEL * 4
            batch = pick_moves(
                self.registry,
                now,
                use,
                threshold=job.threshold,
                busy=self._busy(now),
                limit=min(room, PARALLEL * 4),
            )
            if not batch:
                idle_rounds += 1
                if idle_rounds > 20:  # ~10 s with nothing movable
                    job.state, job.reason = "done", "no movable replica left"
                    return
                await trio.sleep(0.5)
                continue
            idle_rounds = 0
            limiter = trio.CapacityLimiter(PARALLEL)
            async with trio.open_nursery() as nursery:
                for move in batch:
                    nursery.start_soon(self._move, job, move, limiter, rate / PARALLEL)

    async def _move(self, job: Job, move: Move, limiter: trio.CapacityLimiter, rate: float) -> None:
        reg = self.registry
        cid = move.chunk_id
        async with limiter:
            if not self.keeper.claim(cid):
                return  # the replicator took it meanwhile
            done = False
            try:
                await self.keeper.copy_replica(
                    cid, move.version, move.source, move.target, move.length, rate
                )
                now = trio.current_time()
                info = reg.namespace.chunk_info(cid)
                if (
                    info is None
                    or int(info[2]) != move.version
                    or self.keeper.lease_active(cid, now)
                    or not reg.is_alive(move.target.id, now)
                ):
                    return  # changed meanwhile: the copy is stale (deleted in ``finally``)
                reg.add_replicas(cid, [move.target.id])
                done = True
                goal = reg.namespace.inodes[InodeId(info[0])].goal
                leaving = reg.leaving()
                rest = [
                    s
                    for s in reg.valid_servers(cid, now)
                    if s.id != move.source.id and s.id not in leaving
                ]
                if len(rest) >= goal and move.source.id in reg.locations.get(cid, ()):
                    reg.remove_replica(cid, move.source.id)
                    job.moves += 1
                    job.bytes += move.length
                # else: a surplus copy the replicator trims (still consistent).
            except DfsError as exc:
                job.failures += 1
                logger.warning(
                    "rebalance: moving chunk %d %s -> %s failed: %s",
                    cid,
                    move.source.id,
                    move.target.id,
                    exc,
                )
            finally:
                if not done:
                    # A copy that did not count (failed, cancelled, stale) must not linger.
                    reg.remove_replica(cid, move.target.id)
                self.keeper.unclaim(cid)


def check_threshold(value: float) -> float:
    if not math.isfinite(value) or not 0 < value < 100:
        raise BadRequest("the threshold is in percentage points, between 0 and 100")
    return value
