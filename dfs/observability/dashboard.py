"""The metaserver's read-only dashboard: ``/api/status`` (JSON) and ``/`` (HTML + JS).

``/api/status`` is this member's ``admin.status`` (its Raft view and every member's, the
chunkservers, chunk counts, replica upkeep) plus what a person wants on one page: warnings
sorted by severity, under-replicated and missing chunks by path, sessions and locks.  A
follower answers too, honestly: it shows its own Raft view and the members', names the
leader, and says that chunkservers and chunk health are known only to the leader (they are
the leader's soft state); sessions and locks are replicated state, so every member has them.

The answer is cached for ``CACHE_SECONDS`` so that many open browser tabs cost one
computation (chunk health is O(chunks)).  The page fetches it every ``REFRESH_MS``.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import trio

from dfs.metaserver.fsck import path_of
from dfs.observability.dashboard_page import PAGE
from dfs.observability.http import HttpRequest, Response, Route
from dfs.security.identity import Peer, Role
from dfs.types import ChunkId, InodeId

if TYPE_CHECKING:
    from dfs.metaserver.namespace import Namespace
    from dfs.metaserver.service import MetaService

CACHE_SECONDS: Final = 1.0
#: Rows listed per table (the counts are exact).
LIST_LIMIT: Final = 100
#: A chunkserver this full (used / capacity) is worth a warning.
FULL_WARNING: Final = 0.9

_PEER: Final = Peer(name="dashboard", role=Role.ADMIN, address="http")
_SEVERITY: Final = {"critical": 0, "warning": 1, "info": 2}


def _names(ns: Namespace) -> dict[InodeId, tuple[InodeId, bytes]]:
    names: dict[InodeId, tuple[InodeId, bytes]] = {}
    for ino, node in ns.inodes.items():
        for name, child in (node.entries or {}).items():
            names.setdefault(child, (ino, name))
    return names


class Dashboard:
    """Builds the status of one metaserver (see the module docstring)."""

    def __init__(self, service: MetaService) -> None:
        self.service = service
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = trio.Lock()

    def routes(self) -> dict[str, Route]:
        return {
            "/": Route(self._page, admin=True),
            "/index.html": Route(self._page, admin=True),
            "/api/status": Route(self._status, admin=True),
        }

    async def _page(self, request: HttpRequest, peer: Peer | None) -> Response:
        csp = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        return Response(
            HTTPStatus.OK,
            PAGE.encode(),
            "text/html; charset=utf-8",
            (("Content-Security-Policy", csp), ("X-Frame-Options", "DENY")),
        )

    async def _status(self, request: HttpRequest, peer: Peer | None) -> Response:
        body = json.dumps(await self.status(), separators=(",", ":"), default=str)
        return Response(HTTPStatus.OK, body.encode(), "application/json")

    async def status(self) -> dict[str, Any]:
        async with self._lock:
            now = trio.current_time()
            if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            status = await self._build()
            self._cached = (trio.current_time(), status)
            return status

    async def _build(self) -> dict[str, Any]:
        service = self.service
        base: dict[str, Any] = await service.admin_status(_PEER, {})
        leader = base.get("role") == "leader"
        ns = service.ns
        names = _names(ns)
        base["generated_at"] = time.time()
        base["leader_only_known"] = not leader
        counts = base.setdefault("counts", {})
        if not leader:
            # A follower knows no chunkserver: its chunk health would say "all missing".
            for key in ("under_goal", "missing", "bad_replicas", "stale_replicas"):
                counts.pop(key, None)
            base["replication"] = {}
        counts["sessions"] = len(ns.sessions.sessions)
        lock_counts = ns.locks.counts()
        counts["locks"] = lock_counts["posix"] + lock_counts["flock"]
        base["under_replicated"] = self._under_replicated(names) if leader else []
        base["sessions"] = self._sessions()
        base["locks"] = self._locks(names)
        base["warnings"] = health_warnings(base)
        return base

    def _under_replicated(self, names: dict[InodeId, tuple[InodeId, bytes]]) -> list[Any]:
        registry, ns = self.service.registry, self.service.ns
        now = trio.current_time()
        rows: list[dict[str, Any]] = []
        for cid, (ino, index, _version) in ns.chunks.items():
            node = ns.inodes.get(ino)
            if node is None:
                continue
            live = sorted(
                s for s in registry.locations.get(ChunkId(cid), ()) if registry.is_alive(s, now)
            )
            if len(live) >= node.goal:
                continue
            rows.append(
                {
                    "path": path_of(ns, names, InodeId(ino)),
                    "chunk_id": f"{int(cid):016x}",
                    "index": index,
                    "live": len(live),
                    "goal": node.goal,
                    "servers": live,
                }
            )
        rows.sort(key=lambda r: (r["live"], r["path"], r["index"]))
        return rows[:LIST_LIMIT]

    def _sessions(self) -> list[dict[str, Any]]:
        out = []
        for s in list(self.service.ns.sessions.sessions.values())[:LIST_LIMIT]:
            d = s.describe()
            out.append(
                {k: d.get(k) for k in ("id", "kind", "label", "owner", "created_ns", "last_ns")}
            )
        return out

    def _locks(self, names: dict[InodeId, tuple[InodeId, bytes]]) -> list[dict[str, Any]]:
        ns = self.service.ns
        out = []
        for lock in ns.locks.locks()[:LIST_LIMIT]:
            out.append(
                {
                    "path": path_of(ns, names, InodeId(lock.ino)),
                    "ino": lock.ino,
                    "session": lock.owner[0],
                    "kind": lock.kind,
                    "type": {0: "read", 1: "write"}.get(lock.type, str(lock.type)),
                    "start": lock.start,
                    "end": lock.end,
                    "pid": lock.pid,
                }
            )
        return out


def health_warnings(s: dict[str, Any]) -> list[dict[str, str]]:
    """What needs attention, most severe first."""
    out: list[dict[str, str]] = []

    def add(severity: str, text: str) -> None:
        out.append({"severity": severity, "text": text})

    role = s.get("role")
    if not s.get("initialised", True):
        add("warning", "the namespace is not initialised yet")
    if role != "leader":
        if s.get("leader"):
            add(
                "info",
                f"this metaserver is a {role}; the leader is {s['leader']} at "
                f"{s.get('leader_address') or '?'}: chunkservers and chunk health are known "
                "only there (open the leader's dashboard)",
            )
        else:
            add("critical", f"no Raft leader known (this member is a {role})")
    for m in s.get("metaservers", []):
        if m.get("role") == "unreachable":
            add("warning", f"metaserver {m.get('id')} at {m.get('address')} does not answer")
    counts = s.get("counts", {})
    if counts.get("missing"):
        add("critical", f"{counts['missing']} chunk(s) have no live replica: data unreadable")
    if counts.get("under_goal"):
        add("warning", f"{counts['under_goal']} chunk(s) are under their replication goal")
    if counts.get("bad_replicas"):
        add("warning", f"{counts['bad_replicas']} corrupt replica(s) waiting for repair")
    for c in s.get("chunkservers", []):
        state = c.get("state")
        if state != "alive":
            add(
                "critical" if state == "gone" else "warning",
                f"chunkserver {c.get('id')} is {state} "
                f"(last heartbeat {c.get('last_heartbeat_age', 0):.0f} s ago)",
            )
        elif c.get("capacity") and c.get("used", 0) / c["capacity"] >= FULL_WARNING:
            add(
                "warning",
                f"chunkserver {c.get('id')} is {100 * c['used'] / c['capacity']:.0f} % full",
            )
    if role == "leader" and not s.get("chunkservers"):
        add("critical", "no chunkserver has registered")
    out.sort(key=lambda w: _SEVERITY[w["severity"]])
    return out
