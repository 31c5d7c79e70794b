"""Soft state of the metaserver: chunkservers, replica locations, deletions, bad replicas.

Nothing here is in the log or the snapshot.  After a restart it is rebuilt from what the
chunkservers tell us: ``cs.register`` (address, zone, space, every replica they hold) and
``cs.heartbeat`` (space; the answer carries the chunk ids they should delete).

Rules:

* A server is alive while its last register/heartbeat is at most ``timeout`` seconds old
  (trio clock; ``now`` is passed in so the logic is testable without a clock).
* A replica reported at registration is recorded when the chunk map knows the chunk at the
  same version.  It is queued for deletion on that server when the chunk id was allocated by
  this cluster (below ``next_chunk_id``) but no file references it any more (an orphan), or
  when its version is older than the map's (stale).  Ids this cluster never allocated are
  left alone with a warning (not ours to delete).
* Chunks freed by the namespace (unlink, truncate) are queued for deletion on every server
  holding them.  A queued deletion is handed out once, in the server's next heartbeat
  answer; a server that fails to delete re-reports the chunk when it registers again and
  the orphan rule catches it.
* A replica reported bad (``cs.report_bad``) is dropped from the locations so clients are
  not sent there, and stays excluded (a later issue re-replicates and deletes it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dfs.errors import NoSpace, NotFound
from dfs.metaserver.namespace import Namespace
from dfs.types import CHUNK_SIZE, ChunkId

logger = logging.getLogger(__name__)


@dataclass
class ChunkserverInfo:
    id: str
    address: str
    zone: str
    capacity: int
    free: int
    last_heartbeat: float
    alive: bool = True
    #: Bytes promised to new chunks since the last report of ``free`` (placement estimate).
    reserved: int = 0

    def server(self) -> dict[str, str]:
        """The protocol's ``server`` shape."""
        return {"id": self.id, "address": self.address}


class Registry:
    def __init__(self, namespace: Namespace, *, timeout: float) -> None:
        self.namespace = namespace
        self.timeout = timeout
        self.servers: dict[str, ChunkserverInfo] = {}
        self.locations: dict[ChunkId, set[str]] = {}
        self._held: dict[str, set[ChunkId]] = {}
        #: Chunkservers the leader announced in the log as registered (see MetaService).
        self.expected: set[str] = set()
        self._delete: dict[str, set[ChunkId]] = {}
        self.bad: dict[ChunkId, set[str]] = {}

    # ------------------------------------------------------------------ chunkserver RPCs
    def register(
        self,
        *,
        server_id: str,
        address: str,
        zone: str,
        capacity: int,
        free: int,
        chunks: Iterable[tuple[int, int]],
        now: float,
    ) -> None:
        """(Re-)register a chunkserver and replace everything known about its replicas."""
        old = self.servers.get(server_id)
        if old is not None:
            for cid in self._held.pop(server_id, set()):
                self._unlocate(cid, server_id)
        self.servers[server_id] = ChunkserverInfo(server_id, address, zone, capacity, free, now)
        held: set[ChunkId] = set()
        deletes = self._delete.setdefault(server_id, set())
        ns = self.namespace
        unknown = 0
        for raw_cid, version in chunks:
            cid = ChunkId(raw_cid)
            info = ns.chunk_info(cid)
            if info is not None and version == info[2]:
                if server_id not in self.bad.get(cid, ()):
                    held.add(cid)
                    self.locations.setdefault(cid, set()).add(server_id)
            elif info is not None and version < info[2]:
                deletes.add(cid)  # stale replica
            elif info is None and 0 < cid < ns.next_chunk_id:
                deletes.add(cid)  # orphan: its file is gone
            else:
                unknown += 1
        self._held[server_id] = held
        if unknown:
            logger.warning(
                "chunkserver %s holds %d chunks this cluster does not know; leaving them alone",
                server_id,
                unknown,
            )
        logger.info(
            "chunkserver %s registered from %s (zone %s): %d replicas, %d to delete",
            server_id,
            address,
            zone,
            len(held),
            len(deletes),
        )

    def heartbeat(self, *, server_id: str, capacity: int, free: int, now: float) -> list[ChunkId]:
        """Record a heartbeat; return (and forget) the chunk ids this server should delete."""
        info = self.servers.get(server_id)
        if info is None:
            raise NotFound(f"chunkserver {server_id!r} is not registered; register first")
        if not info.alive:
            logger.info("chunkserver %s is back", server_id)
        info.capacity, info.free, info.reserved = capacity, free, 0
        info.last_heartbeat = now
        info.alive = True
        pending = self._delete.get(server_id)
        if not pending:
            return []
        self._delete[server_id] = set()
        return sorted(pending)

    def report_bad(self, *, server_id: str, chunk_id: int, version: int, reason: str) -> None:
        cid = ChunkId(chunk_id)
        logger.warning(
            "bad replica of chunk %d (version %d) on chunkserver %s: %s",
            cid,
            version,
            server_id,
            reason,
        )
        self.bad.setdefault(cid, set()).add(server_id)
        self._unlocate(cid, server_id)
        held = self._held.get(server_id)
        if held is not None:
            held.discard(cid)

    def check_liveness(self, now: float) -> list[str]:
        """Mark servers silent for longer than ``timeout`` dead; return the newly dead."""
        dead = []
        for info in self.servers.values():
            if info.alive and now - info.last_heartbeat > self.timeout:
                info.alive = False
                dead.append(info.id)
                logger.warning(
                    "chunkserver %s missed heartbeats for %.1f s: marked dead",
                    info.id,
                    now - info.last_heartbeat,
                )
        return dead

    # ------------------------------------------------------------------ namespace events
    def place(self, goal: int, now: float) -> list[ChunkserverInfo]:
        """Choose servers for a new chunk: ``goal`` live servers with the most free space,
        never two in one zone while another zone is available; all live ones if fewer."""
        live = [s for s in self.servers.values() if self._alive(s, now) and s.free > 0]
        if not live:
            raise NoSpace("no live chunkserver with free space")
        live.sort(key=lambda s: (-(s.free - s.reserved), s.id))
        chosen: list[ChunkserverInfo] = []
        zones: set[str] = set()
        for s in live:
            if len(chosen) < goal and s.zone not in zones:
                chosen.append(s)
                zones.add(s.zone)
        for s in live:
            if len(chosen) < goal and s not in chosen:
                chosen.append(s)
        for s in chosen:
            s.reserved += CHUNK_SIZE
        return chosen

    def add_replicas(self, chunk_id: int, server_ids: Iterable[str]) -> None:
        """A new chunk was allocated on ``server_ids``."""
        cid = ChunkId(chunk_id)
        for sid in server_ids:
            self.locations.setdefault(cid, set()).add(sid)
            self._held.setdefault(sid, set()).add(cid)

    def forget_chunks(self, chunk_ids: Iterable[ChunkId]) -> None:
        """The namespace dropped these chunks: delete them wherever they are."""
        for cid in chunk_ids:
            holders = self.locations.pop(cid, set()) | self.bad.pop(cid, set())
            for sid in holders:
                held = self._held.get(sid)
                if held is not None:
                    held.discard(cid)
                self._delete.setdefault(sid, set()).add(cid)

    # ------------------------------------------------------------------ queries
    def missing_known(self, now: float) -> set[str]:
        """Chunkservers known to hold chunks (from registrations or, on a member that was a
        follower, from applied allocations) that are not alive here now."""
        known = set(self._held) | set(self.servers) | self.expected
        return {
            sid
            for sid in known
            if (info := self.servers.get(sid)) is None or not self._alive(info, now)
        }

    def _alive(self, info: ChunkserverInfo, now: float) -> bool:
        return info.alive and now - info.last_heartbeat <= self.timeout

    def live_servers(self, chunk_id: int, now: float) -> list[dict[str, str]]:
        """Live, non-bad replica locations of a chunk as protocol ``server`` maps."""
        out = []
        for sid in sorted(self.locations.get(ChunkId(chunk_id), ())):
            info = self.servers.get(sid)
            if info is not None and self._alive(info, now):
                out.append(info.server())
        return out

    def pending_deletions(self, server_id: str) -> set[ChunkId]:
        return set(self._delete.get(server_id, ()))

    def _unlocate(self, cid: ChunkId, server_id: str) -> None:
        where = self.locations.get(cid)
        if where is not None:
            where.discard(server_id)
            if not where:
                del self.locations[cid]

    def status(self, now: float) -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "address": s.address,
                "zone": s.zone,
                "capacity": s.capacity,
                "free": s.free,
                "used": max(0, s.capacity - s.free),
                "state": "alive" if self._alive(s, now) else "dead",
                "last_heartbeat_age": now - s.last_heartbeat,
                "chunks": len(self._held.get(s.id, ())),
                "bad_replicas": sum(1 for holders in self.bad.values() if s.id in holders),
            }
            for s in sorted(self.servers.values(), key=lambda s: s.id)
        ]

    def health(self, now: float) -> tuple[int, int]:
        """``(under_goal, missing)``: chunks with fewer live replicas than their file's goal
        but at least one, and chunks with none.  O(chunks): for status pages only."""
        under = missing = 0
        inodes = self.namespace.inodes
        for cid, (ino, _index, _version) in self.namespace.chunks.items():
            live = sum(
                1
                for sid in self.locations.get(cid, ())
                if (s := self.servers.get(sid)) is not None and self._alive(s, now)
            )
            if live == 0:
                missing += 1
            elif live < inodes[ino].goal:
                under += 1
        return under, missing

    def totals(self, now: float) -> tuple[int, int, int]:
        """``(capacity, free, live servers)`` over live servers."""
        live = [s for s in self.servers.values() if self._alive(s, now)]
        return sum(s.capacity for s in live), sum(s.free for s in live), len(live)
