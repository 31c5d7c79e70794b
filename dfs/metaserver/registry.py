"""Soft state of the metaserver: chunkservers, replica locations and what to do about them.

Nothing here is in the log or the snapshot.  After a restart it is rebuilt from what the
chunkservers tell us: ``cs.register`` (address, zone, space, every replica they hold with its
version) and ``cs.heartbeat`` (space; the answer carries the chunk ids they should delete).

Every replica a server reports is in exactly one class:

* **valid** (``locations``): at the chunk map's version and not reported bad: served to
  clients and written by them.
* **stale** (``stale``): at an older version, i.e. it missed writes (its server was down or
  failed during a write lease).  Never served; deleted once the chunk is back at its goal.
* **ahead** (``ahead``): at a newer version than the map: a version bump that reached the
  replica but was never committed (the leader failed in between).  No client ever wrote at
  that version, so the replica holds the map version's bytes; the replicator sets its version
  back and it becomes valid.
* **bad** (``bad``): reported corrupt.  Never served; deleted once the chunk is at its goal.
* **orphan** (``orphans``): its chunk id was allocated by this cluster but no file references
  it any more.  Deleted after ``orphan_delay`` seconds (a safety margin against a metadata
  mistake); ids this cluster never allocated are left alone with a warning.

Chunks freed by the namespace (unlink, truncate) are queued for deletion on every server
holding them at once.  A queued deletion is handed out once, in the server's next heartbeat
answer; a server that fails to delete re-reports the chunk when it registers again.

A server is alive while its last register/heartbeat is at most ``timeout`` seconds old (trio
clock; ``now`` is passed in so the logic is testable without a clock).  A server gone for
longer than ``grace`` loses its replicas (``expire_gone``): the chunks become under-replicated
and the replicator copies them.  Chunks whose replica set may need work are kept in
``suspects`` (see ``dfs.metaserver.chunks``).

An operator can take a server out of normal service (``Namespace.cs_modes``, replicated):

* **decommission**: it gets no new chunks or copies and its replicas no longer count toward
  any goal, so the replicator copies each of its chunks elsewhere; its replicas stay valid
  (served, used as copy sources) until it is stopped, so no chunk drops below its goal on the
  way.  It is *drained* when every chunk it holds is at its goal without it.
* **maintenance**: it gets no new chunks or copies, and while the maintenance lasts its
  absence is not "gone": its chunks wait for it instead of being copied (no re-replication
  storm for a planned restart).  Writes during its absence still make its replicas stale,
  and those chunks are copied as usual (new data is never left under its goal).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dfs.errors import NoSpace, NotFound, Unavailable
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
    #: Gone for longer than the grace period: its replicas no longer count.
    gone: bool = False
    #: Disk operations running or queued at its last heartbeat.
    load: int = 0
    #: When it last registered (trio clock): a leader trusts only registrations made since
    #: it was elected (``heartbeat(since=...)``).
    registered_at: float = 0.0

    def full(self) -> bool:
        """Too full for new chunks or copies: less than 1 % of its capacity or 4 MiB free, as
        it last reported.  (``reserved`` only spreads placements between heartbeats: most new
        chunks stay far below their 64 MiB, so counting it here would call a busy server full
        after a burst of small files.)"""
        return self.free < max(self.capacity // 100, 4 << 20)

    def server(self) -> dict[str, str]:
        """The protocol's ``server`` shape."""
        return {"id": self.id, "address": self.address}


class Registry:
    def __init__(
        self,
        namespace: Namespace,
        *,
        timeout: float,
        grace: float = 120.0,
        orphan_delay: float = 3600.0,
    ) -> None:
        self.namespace = namespace
        self.timeout = timeout
        self.grace = grace
        self.orphan_delay = orphan_delay
        self.servers: dict[str, ChunkserverInfo] = {}
        #: Valid replicas: chunk -> servers holding it at the map's version.
        self.locations: dict[ChunkId, set[str]] = {}
        self._held: dict[str, set[ChunkId]] = {}
        #: Chunkservers the leader announced in the log as registered (see MetaService).
        self.expected: set[str] = set()
        self._delete: dict[str, set[ChunkId]] = {}
        #: server -> {chunk: time} of deletions handed out in its last heartbeat answer (the
        #: server may not have carried them out yet: no copy of that chunk goes there).
        self._handed: dict[str, dict[ChunkId, float]] = {}
        self.bad: dict[ChunkId, set[str]] = {}
        #: chunk -> {server: version} of replicas older / newer than the map's version.
        self.stale: dict[ChunkId, dict[str, int]] = {}
        self.ahead: dict[ChunkId, dict[str, int]] = {}
        #: server -> {chunk: time first seen} of chunks no file references.
        self.orphans: dict[str, dict[ChunkId, float]] = {}
        #: Chunks whose replica set may need work (copy, trim, clean up, undo a bump).
        self.suspects: set[ChunkId] = set()
        #: Chunks to copy now even if a replica's server may come back within the grace
        #: period (``dfs fsck --repair``): for these, only live replicas count.
        self.urgent: set[ChunkId] = set()
        #: Where the planner's bounded window over ``suspects`` starts next time.
        self.scan_pos = 0
        #: Write leases: chunk -> time (trio clock) the lease ends unless renewed.  Set on
        #: every member when a lease is applied from the log, so a new leader knows which
        #: chunks were being written.
        self.leases: dict[ChunkId, float] = {}

    # ------------------------------------------------------------------ operator modes
    def mode(self, server_id: str) -> str:
        """``normal``, ``decommission`` or ``maintenance`` (an expired maintenance is over)."""
        entry = self.namespace.cs_modes.get(server_id)
        if entry is None:
            return "normal"
        mode, until_ns = entry
        if mode == "maintenance" and until_ns and time.time_ns() >= until_ns:
            return "normal"
        return mode

    def leaving(self) -> set[str]:
        """Servers being decommissioned: their replicas do not count toward goals."""
        return {
            sid for sid, (mode, _u) in self.namespace.cs_modes.items() if mode == "decommission"
        }

    def mode_changed(self, server_id: str) -> None:
        """An operator changed ``server_id``'s mode: every chunk it holds may need work (copies
        for a decommission, trims after a recommission)."""
        self.suspects.update(self._held.get(server_id, ()))
        for table in (self.stale, self.ahead):
            self.suspects.update(c for c, where in table.items() if server_id in where)

    def forget_server(self, server_id: str) -> None:
        """An operator removed ``server_id`` from the cluster: forget it and its replicas
        (its chunks become suspects, copied elsewhere if they need it)."""
        self._forget_server_replicas(server_id)
        self.servers.pop(server_id, None)
        self.expected.discard(server_id)
        self._delete.pop(server_id, None)
        self._handed.pop(server_id, None)
        for holders in self.bad.values():
            holders.discard(server_id)

    def remaining(self, server_id: str, now: float) -> int:
        """Chunks on ``server_id`` that are not at their goal without it (0: drained)."""
        leaving = self.leaving() | {server_id}
        ns = self.namespace
        n = 0
        for cid in self._held.get(server_id, ()):
            info = ns.chunk_info(cid)
            if info is None:
                continue
            others = sum(1 for s in self.valid_servers(cid, now) if s.id not in leaving)
            if others < ns.inodes[info[0]].goal:
                n += 1
        return n

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
        """(Re-)register a chunkserver and replace everything known about its replicas.

        What the server lists is the truth (what this node learnt otherwise, from the log or
        an earlier registration, may be out of date: copies deleted meanwhile, versions moved
        by another leader), except for chunks being written: a new chunk's file appears only
        at its first write, which may still be on its way when the server registers (every
        server registers again after an election), so a replica under a write lease that the
        server does not list yet is kept.  Only under a lease that has not run out by this
        node's clock: a member keeps the leases it applied for ten lease periods (in case it
        becomes leader), and keeping every unlisted replica of those would bring back copies
        deleted long ago, which then count toward the goal and get real replicas trimmed."""
        chunks = list(chunks)
        listed = {ChunkId(c) for c, _v in chunks}
        kept = {
            c
            for c in self._held.get(server_id, ())
            if c not in listed and self.leases.get(c, float("-inf")) > now
        }
        seen_orphans = self.orphans.get(server_id, {})
        self._forget_server_replicas(server_id)
        for cid in kept:
            self.locations.setdefault(cid, set()).add(server_id)
        self.servers[server_id] = ChunkserverInfo(
            server_id, address, zone, capacity, free, now, registered_at=now
        )
        held: set[ChunkId] = set(kept)
        self._held[server_id] = held
        doomed = self._delete.get(server_id, set())
        ns = self.namespace
        unknown = stale = orphans = 0
        for raw_cid, version in chunks:
            cid = ChunkId(raw_cid)
            if cid in doomed:
                continue  # its deletion is queued (stale, corrupt, trimmed): it is going away
            info = ns.chunk_info(cid)
            if info is None:
                if 0 < cid < ns.next_chunk_id:
                    # Its age counts from when it was first seen, registrations or not.
                    self.orphans.setdefault(server_id, {})[cid] = seen_orphans.get(cid, now)
                    orphans += 1
                else:
                    unknown += 1
                continue
            self.suspects.add(cid)
            if server_id in self.bad.get(cid, ()):
                continue  # a re-registration does not bring a corrupt replica back
            if version == info[2]:
                held.add(cid)
                self.locations.setdefault(cid, set()).add(server_id)
            elif version < info[2]:
                self.stale.setdefault(cid, {})[server_id] = version
                stale += 1
            else:
                self.ahead.setdefault(cid, {})[server_id] = version
        if unknown:
            logger.warning(
                "chunkserver %s holds %d chunks this cluster does not know; leaving them alone",
                server_id,
                unknown,
            )
        logger.info(
            "chunkserver %s registered from %s (zone %s): %d valid replicas, %d stale, %d orphans",
            server_id,
            address,
            zone,
            len(held),
            stale,
            orphans,
        )

    def heartbeat(
        self,
        *,
        server_id: str,
        capacity: int,
        free: int,
        now: float,
        load: int = 0,
        since: float | None = None,
    ) -> list[ChunkId]:
        """Record a heartbeat; return (and forget) the chunk ids this server should delete.
        ``since``: when this node became leader.  A server that registered before that must
        register again: what this node knew of its replicas may be out of date (another
        leader moved versions meanwhile, or started a bump that never committed and left
        its replicas ahead), and only a registration lists them as they are."""
        info = self.servers.get(server_id)
        if info is None:
            raise NotFound(f"chunkserver {server_id!r} is not registered; register first")
        if since is not None and info.registered_at < since:
            raise NotFound(f"chunkserver {server_id!r} registered with an earlier leader")
        if info.gone:
            # Its replicas were dropped when the grace period ended; only a registration
            # (which lists them again) brings them back.
            raise NotFound(f"chunkserver {server_id!r} was gone too long; register again")
        if not info.alive:
            logger.info("chunkserver %s is back", server_id)
            # Chunks whose upkeep waited for it (under goal while it was away) are looked at
            # again: maybe they are at their goal now and stale copies can go.
            self.suspects.update(self._held.get(server_id, ()))
        info.capacity, info.free, info.reserved, info.load = capacity, free, 0, load
        info.last_heartbeat = now
        info.alive = True
        orphans = self.orphans.get(server_id)
        if orphans:
            due = [cid for cid, seen in orphans.items() if now - seen >= self.orphan_delay]
            for cid in due:
                if self.namespace.chunk_info(cid) is None:
                    self._queue_delete(server_id, cid)
                del orphans[cid]
            if due:
                logger.info("deleting %d orphan chunk(s) on %s", len(due), server_id)
        # A chunkserver carries out the deletions of one heartbeat's answer before it sends
        # the next heartbeat: those handed out earlier are done (or lost with the answer;
        # then the chunk is junk that a copy may overwrite).
        handed = self._handed.setdefault(server_id, {})
        handed.clear()
        pending = self._delete.get(server_id)
        if not pending:
            return []
        self._delete[server_id] = set()
        for cid in pending:
            handed[cid] = now
        return sorted(pending)

    def report_bad(self, *, server_id: str, chunk_id: int, version: int, reason: str) -> bool:
        """A replica was found corrupt (or missing).  Reports about another version than the
        map's are ignored (a bump or a copy moved on meanwhile).  Returns whether it counted."""
        cid = ChunkId(chunk_id)
        info = self.namespace.chunk_info(cid)
        if info is None or info[2] != version:
            logger.info(
                "ignoring a report about chunk %d version %d on %s: not the current version",
                cid,
                version,
                server_id,
            )
            return False
        if server_id not in self.locations.get(cid, ()):
            # Not a replica we serve (a reader raced with a move or trim that deleted it, or
            # it was already dropped): nothing to repair.
            logger.info(
                "ignoring a report about chunk %d on %s: not a valid replica there", cid, server_id
            )
            return False
        logger.warning(
            "bad replica of chunk %d (version %d) on chunkserver %s: %s",
            cid,
            version,
            server_id,
            reason,
        )
        self.bad.setdefault(cid, set()).add(server_id)
        self._unlocate(cid, server_id)
        self.suspects.add(cid)
        return True

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

    def expire_gone(self, now: float) -> list[str]:
        """Servers silent for longer than ``timeout + grace`` lose their replicas (their chunks
        become suspects, to be copied elsewhere).  Returns the servers newly given up."""
        gone = []
        for info in self.servers.values():
            if info.gone or now - info.last_heartbeat <= self.timeout + self.grace:
                continue
            if self.mode(info.id) == "maintenance":
                continue
            info.alive = False
            info.gone = True
            gone.append(info.id)
            n = len(self._held.get(info.id, ()))
            self._forget_server_replicas(info.id)
            logger.warning(
                "chunkserver %s gone for %.0f s (grace %.0f s): re-replicating its %d replicas",
                info.id,
                now - info.last_heartbeat,
                self.grace,
                n,
            )
        return gone

    # ------------------------------------------------------------------ namespace events
    def place(
        self, goal: int, now: float, *, exclude: Iterable[str] = (), zones: Iterable[str] = ()
    ) -> list[ChunkserverInfo]:
        """Choose servers for a new chunk (or new replicas): ``goal`` live servers with the
        most free space, none full, none in ``exclude`` or out of normal service, never two in
        one zone (nor in one of ``zones``, those of existing replicas) while another zone is
        available."""
        skip = set(exclude)
        skip.update(sid for sid in self.namespace.cs_modes if self.mode(sid) != "normal")
        alive = [s for s in self.servers.values() if self._alive(s, now) and s.id not in skip]
        live = [s for s in alive if not s.full()]
        if not alive:
            # Not a full disk: none is reachable right now (a new leader before the
            # chunkservers registered, or all down); the client retries until its timeout.
            raise Unavailable("no live chunkserver to place a chunk on", retry=True)
        if not live:
            raise NoSpace("every live chunkserver is full")
        live.sort(key=lambda s: (-(s.free - s.reserved), s.id))
        chosen: list[ChunkserverInfo] = []
        used_zones: set[str] = set(zones)
        for s in live:
            if len(chosen) < goal and s.zone not in used_zones:
                chosen.append(s)
                used_zones.add(s.zone)
        for s in live:
            if len(chosen) < goal and s not in chosen:
                chosen.append(s)
        for s in chosen:
            s.reserved += CHUNK_SIZE
        return chosen

    def add_replicas(self, chunk_id: int, server_ids: Iterable[str]) -> None:
        """``server_ids`` now hold the chunk at the map's version (new chunk or a copy)."""
        cid = ChunkId(chunk_id)
        for sid in server_ids:
            self.locations.setdefault(cid, set()).add(sid)
            self._held.setdefault(sid, set()).add(cid)
            for table in (self.stale, self.ahead):
                self._discard(table, cid, sid)
            bad = self.bad.get(cid)
            if bad is not None:
                bad.discard(sid)
                if not bad:
                    del self.bad[cid]
        self.suspects.add(cid)

    def copy_exclusions(self, chunk_id: int, now: float) -> set[str]:
        """Servers a new copy of the chunk must not go to: those holding any copy of it
        (valid, stale, ahead, bad) and those with a deletion of it pending or just handed
        out (it could remove the new copy)."""
        cid = ChunkId(chunk_id)
        out = set(self.locations.get(cid, ()))
        out.update(self.stale.get(cid, {}), self.ahead.get(cid, {}), self.bad.get(cid, ()))
        for sid, doomed in self._delete.items():
            if cid in doomed:
                out.add(sid)
        for sid, handed in self._handed.items():
            if cid in handed:
                out.add(sid)
        return out

    def set_version(self, chunk_id: int, old_version: int, server_ids: Iterable[str]) -> None:
        """The chunk moved to a new version on ``server_ids`` only; every other valid replica
        is stale from now on (it missed the bump)."""
        cid = ChunkId(chunk_id)
        keep = set(server_ids)
        for sid in self.locations.get(cid, set()) - keep:
            self._unlocate(cid, sid)
            self.stale.setdefault(cid, {})[sid] = old_version
        for sid, v in self.ahead.pop(cid, {}).items():
            if sid not in keep:
                self.stale.setdefault(cid, {})[sid] = v  # behind the new version now
        self.add_replicas(cid, keep)

    def note_version(self, chunk_id: int, server_id: str, version: int) -> None:
        """A server said its replica of the chunk is at ``version`` (a ``chunk.set_version``
        that expected another one failed): file the replica under what that makes it."""
        cid = ChunkId(chunk_id)
        info = self.namespace.chunk_info(cid)
        if info is None or server_id in self.bad.get(cid, ()):
            return
        self._unlocate(cid, server_id)
        for table in (self.stale, self.ahead):
            self._discard(table, cid, server_id)
        if version == info[2]:
            self.add_replicas(cid, [server_id])
        else:
            table = self.ahead if version > info[2] else self.stale
            table.setdefault(cid, {})[server_id] = version
        self.suspects.add(cid)

    def drop_replica(self, chunk_id: int, server_id: str) -> None:
        """Forget a replica without deleting it (its server failed during a write: the next
        version bump makes it stale, and its next registration says what it holds)."""
        cid = ChunkId(chunk_id)
        self._unlocate(cid, server_id)
        self.suspects.add(cid)

    def remove_replica(self, chunk_id: int, server_id: str) -> None:
        """Delete one replica (trim, stale, bad, or a copy that came too late)."""
        cid = ChunkId(chunk_id)
        self._unlocate(cid, server_id)
        for table in (self.stale, self.ahead):
            self._discard(table, cid, server_id)
        bad = self.bad.get(cid)
        if bad is not None:
            bad.discard(server_id)
            if not bad:
                del self.bad[cid]
        self._queue_delete(server_id, cid)
        self.suspects.add(cid)  # it may be under its goal now: look again

    def forget_chunks(self, chunk_ids: Iterable[ChunkId], *, delete: bool = True) -> None:
        """The namespace dropped these chunks: delete them wherever they are.  Only a leader
        hands deletions out (in heartbeat answers), so a follower (``delete`` False) just
        forgets them: a queue it never drains would grow for ever; if it becomes leader, the
        chunkservers' registrations list what is left as orphans."""
        for cid in chunk_ids:
            holders = (
                self.locations.pop(cid, set())
                | self.bad.pop(cid, set())
                | set(self.stale.pop(cid, {}))
                | set(self.ahead.pop(cid, {}))
            )
            for sid in holders:
                if delete:
                    self._queue_delete(sid, cid)
                else:
                    held = self._held.get(sid)
                    if held is not None:
                        held.discard(cid)
            self.leases.pop(cid, None)
            self.suspects.discard(cid)
            self.urgent.discard(cid)

    # ------------------------------------------------------------------ queries
    def missing_known(self, now: float, since: float | None = None) -> set[str]:
        """Chunkservers known to hold chunks (from registrations or, on a member that was a
        follower, from applied allocations) that are not alive here now, or (``since``: when
        this node became leader) have not registered since."""
        known = set(self._held) | set(self.servers) | self.expected | self.namespace.chunkservers
        return {
            sid
            for sid in known
            if (info := self.servers.get(sid)) is None
            or (
                not info.gone
                and (
                    not self._alive(info, now) or (since is not None and info.registered_at < since)
                )
            )
        }

    def _alive(self, info: ChunkserverInfo, now: float) -> bool:
        return info.alive and now - info.last_heartbeat <= self.timeout

    def is_alive(self, server_id: str, now: float) -> bool:
        info = self.servers.get(server_id)
        return info is not None and self._alive(info, now)

    def valid_servers(self, chunk_id: int, now: float) -> list[ChunkserverInfo]:
        """Live servers holding a valid replica, sorted by id."""
        out = []
        for sid in sorted(self.locations.get(ChunkId(chunk_id), ())):
            info = self.servers.get(sid)
            if info is not None and self._alive(info, now):
                out.append(info)
        return out

    def live_servers(self, chunk_id: int, now: float) -> list[dict[str, str]]:
        """Live, valid replica locations of a chunk as protocol ``server`` maps."""
        return [s.server() for s in self.valid_servers(chunk_id, now)]

    def delete_orphans(self, min_age: float, now: float) -> int:
        """Queue the deletion of every orphan replica seen for at least ``min_age`` seconds
        (``dfs fsck --repair``); returns how many."""
        n = 0
        for server_id, seen in self.orphans.items():
            for cid in [c for c, since in seen.items() if now - since >= min_age]:
                if self.namespace.chunk_info(cid) is None:
                    self._queue_delete(server_id, cid)
                    n += 1
                del seen[cid]
        return n

    def held(self, server_id: str) -> set[ChunkId]:
        """Chunks ``server_id`` holds a valid replica of (a copy: safe to iterate)."""
        return set(self._held.get(server_id, ()))

    def pending_deletions(self, server_id: str) -> set[ChunkId]:
        return set(self._delete.get(server_id, ()))

    def _queue_delete(self, server_id: str, cid: ChunkId) -> None:
        held = self._held.get(server_id)
        if held is not None:
            held.discard(cid)
        self._delete.setdefault(server_id, set()).add(cid)

    def _unlocate(self, cid: ChunkId, server_id: str) -> None:
        where = self.locations.get(cid)
        if where is not None:
            where.discard(server_id)
            if not where:
                del self.locations[cid]
        held = self._held.get(server_id)
        if held is not None:
            held.discard(cid)

    @staticmethod
    def _discard(table: dict[ChunkId, dict[str, int]], cid: ChunkId, sid: str) -> None:
        where = table.get(cid)
        if where is not None:
            where.pop(sid, None)
            if not where:
                del table[cid]

    def _forget_server_replicas(self, server_id: str) -> None:
        """Drop everything known about one server's replicas (before it re-registers, or once
        it is gone past the grace period); their chunks become suspects."""
        for cid in self._held.pop(server_id, set()):
            self._unlocate(cid, server_id)
            self.suspects.add(cid)
        for table in (self.stale, self.ahead):
            for cid in [c for c, where in table.items() if server_id in where]:
                self._discard(table, cid, server_id)
        self.orphans.pop(server_id, None)

    def status(self, now: float) -> list[dict[str, Any]]:
        return [
            self.server_status(s, now) for s in sorted(self.servers.values(), key=lambda s: s.id)
        ]

    def server_status(self, s: ChunkserverInfo, now: float) -> dict[str, Any]:
        mode = self.mode(s.id)
        out = {
            "id": s.id,
            "address": s.address,
            "zone": s.zone,
            "capacity": s.capacity,
            "free": s.free,
            "used": max(0, s.capacity - s.free),
            "state": "gone" if s.gone else "alive" if self._alive(s, now) else "dead",
            "last_heartbeat_age": now - s.last_heartbeat,
            "load": s.load,
            "chunks": len(self._held.get(s.id, ())),
            "bad_replicas": sum(1 for holders in self.bad.values() if s.id in holders),
            "mode": mode,
        }
        if mode == "decommission":
            left = self.remaining(s.id, now)
            out["remaining"] = left
            out["mode"] = "decommissioned" if left == 0 else "decommissioning"
        elif mode == "maintenance":
            out["maintenance_until_ns"] = self.namespace.cs_modes[s.id][1]
        return out

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
