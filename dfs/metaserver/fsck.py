"""``dfs fsck``: what is wrong in the namespace and the chunk inventory, by path.

Pure: it reads the leader's namespace (replicated state) and registry (its soft state of
chunkservers and replicas) and reports; it changes nothing.  The namespace checks are the
invariants I1..I9 (``dfs.metaserver.invariants``) plus leaked locks and holds; the chunk checks
classify every chunk of the files checked:

* ``missing``: no live replica at the map's version (the file cannot be read there);
* ``under_goal`` / ``over_goal``: fewer / more live valid replicas than the file's goal;
* ``stale_replicas``: replicas at an older version (they missed writes; never served);
* ``corrupt_replicas``: replicas a reader, the scrubber or a startup check found corrupt;
* ``orphan_chunks``: chunks on chunkservers that no file references, seen longer than the
  cutoff.

Lists are capped at ``LIMIT`` entries each (counts are exact).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dfs.metaserver.invariants import check as check_invariants
from dfs.types import ROOT_INODE, ChunkId, InodeId

if TYPE_CHECKING:
    from dfs.metaserver.namespace import Namespace
    from dfs.metaserver.registry import Registry

#: Entries listed per kind of problem (the counts are exact).
LIMIT = 10_000

PROBLEM_KINDS = (
    "missing",
    "under_goal",
    "over_goal",
    "stale_replicas",
    "corrupt_replicas",
    "orphan_chunks",
)


def names_of(ns: Namespace) -> dict[InodeId, tuple[InodeId, bytes]]:
    """One (parent, name) per linked inode (the first seen for a file with several links)."""
    names: dict[InodeId, tuple[InodeId, bytes]] = {}
    for ino, node in ns.inodes.items():
        for name, child in (node.entries or {}).items():
            names.setdefault(child, (ino, name))
    return names


def path_of(ns: Namespace, names: dict[InodeId, tuple[InodeId, bytes]], ino: InodeId) -> str:
    """The path of ``ino`` from the root; an unlinked (open) file is ``<unlinked inode N>``."""
    parts: list[bytes] = []
    cur = ino
    for _ in range(4096):
        if cur == ROOT_INODE:
            return "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
        link = names.get(cur)
        if link is None:
            return f"<unlinked inode {ino}>"
        cur, name = link
        parts.append(name)
    return f"<inode {ino}: path too deep>"


def _subtree(ns: Namespace, top: InodeId) -> Iterator[InodeId]:
    stack = [top]
    while stack:
        ino = stack.pop()
        yield ino
        node = ns.inodes.get(ino)
        if node is not None and node.entries:
            stack.extend(node.entries.values())


class _Problems:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(PROBLEM_KINDS, 0)
        self.lists: dict[str, list[dict[str, Any]]] = {k: [] for k in PROBLEM_KINDS}

    def add(self, kind: str, entry: dict[str, Any]) -> None:
        self.counts[kind] += 1
        if len(self.lists[kind]) < LIMIT:
            self.lists[kind].append(entry)


def fsck(
    ns: Namespace,
    registry: Registry,
    now: float,
    *,
    top: InodeId = ROOT_INODE,
    orphan_cutoff: float = 3600.0,
) -> dict[str, Any]:
    """The report of the subtree at ``top`` (the whole file system by default)."""
    names = names_of(ns)
    found = _Problems()
    files = dirs = chunks = 0
    inodes = [top] if top not in ns.inodes or not ns.inodes[top].is_dir else None
    scope = list(_subtree(ns, top)) if inodes is None else inodes
    whole = top == ROOT_INODE
    if whole:
        # Open files without a name are part of the whole file system too.
        scope.extend(i for i, n in ns.inodes.items() if n.is_reg and n.nlink == 0)
    for ino in sorted(set(scope)):  # inode order: creation order, stable between runs
        node = ns.inodes.get(ino)
        if node is None:
            continue
        if node.is_dir:
            dirs += 1
        if not node.is_reg:
            continue
        files += 1
        for index, cid in sorted((node.chunks or {}).items()):
            chunks += 1
            where = {"chunk_id": int(cid), "index": index, "path": path_of(ns, names, ino)}
            _check_chunk(registry, now, cid, node.goal, where, found)
    if whole:
        for server, seen in sorted(registry.orphans.items()):
            for cid, since in sorted(seen.items()):
                age = now - since
                if age >= orphan_cutoff:
                    found.add(
                        "orphan_chunks",
                        {"chunk_id": int(cid), "server": server, "age_s": round(age, 1)},
                    )
    namespace = check_invariants(ns) if whole else []
    namespace.extend(_leaks(ns) if whole else [])
    clean = not namespace and not any(found.counts.values())
    return {
        "path": path_of(ns, names, top),
        "checked": {"files": files, "directories": dirs, "chunks": chunks},
        "namespace": namespace,
        "counts": found.counts,
        **found.lists,
        "chunkservers": {
            "known": len(registry.servers),
            "alive": sum(1 for s in registry.servers if registry.is_alive(s, now)),
        },
        "clean": clean,
    }


def _check_chunk(
    registry: Registry,
    now: float,
    cid: ChunkId,
    goal: int,
    where: dict[str, Any],
    found: _Problems,
) -> None:
    valid = registry.locations.get(cid, set())
    live = sorted(s for s in valid if registry.is_alive(s, now))
    if not live:
        found.add("missing", {**where, "replicas": sorted(valid)})
    elif len(live) < goal:
        found.add("under_goal", {**where, "live": len(live), "goal": goal, "servers": live})
    elif len(live) > goal:
        found.add("over_goal", {**where, "live": len(live), "goal": goal, "servers": live})
    for server, version in sorted(registry.stale.get(cid, {}).items()):
        found.add("stale_replicas", {**where, "server": server, "version": version})
    for server in sorted(registry.bad.get(cid, ())):
        found.add("corrupt_replicas", {**where, "server": server})


def _leaks(ns: Namespace) -> list[str]:
    """Locks of sessions that no longer exist (holds are checked by the invariants)."""
    sessions = ns.sessions.sessions
    return [
        f"leaked lock on inode {lk.ino} of ended session {lk.session}"
        for lk in ns.locks.locks()
        if lk.session not in sessions
    ]
