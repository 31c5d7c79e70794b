"""``dfs fsck --repair`` for the namespace: restore invariants I3..I9 (``namespace`` docstring).

The state machine never breaks them itself (every command checks before it mutates, and a
snapshot that breaks one is refused), so this exists for what the state machine cannot rule
out: a bug in an older version, or a hand-edited snapshot.  It is a committed command
(``fsck_fix``), so every member repairs the same way; it is deterministic (inode order) and
keeps every byte it can:

* entries pointing at missing inodes, or with invalid names, are removed (nothing to keep);
* a directory referenced from several places keeps the entry in the directory its ``parent``
  names (or, if that one is gone, the first in inode order); the others are removed;
* directories and files that no path reaches (and no session holds open) are linked into
  ``/lost+found`` as ``#<inode>``, as e2fsck does;
* link counts, directory ``nlink`` and the file and directory counters are recomputed;
* the chunk map is rebuilt from the files' chunk tables (unreferenced chunk ids are freed);
* holds and locks of sessions that no longer exist, or of missing inodes, are dropped.
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from dfs.errors import FsError
from dfs.metaserver.inode import Inode
from dfs.types import ROOT_INODE, ChunkId, ChunkVersion, InodeId

if TYPE_CHECKING:
    from dfs.metaserver.namespace import Namespace

LOST_FOUND = b"lost+found"


def repair(ns: Namespace, now_ns: int) -> list[str]:
    """Fix ``ns`` in place; returns what was done, one line per fix."""
    from dfs.metaserver.namespace import check_name

    done: list[str] = []
    inodes = ns.inodes
    # 1. Entries to nowhere, bad names; directories referenced more than once.
    referrers: dict[InodeId, list[tuple[InodeId, bytes]]] = {}
    for ino in sorted(inodes):
        node = inodes[ino]
        if not node.entries:
            continue
        for name, child in list(node.entries.items()):
            try:
                check_name(name)
                ok = child in inodes and child != ROOT_INODE
            except FsError:
                ok = False
            if not ok:
                del node.entries[name]
                done.append(f"removed entry {name!r} in directory {ino} (to inode {child})")
                continue
            referrers.setdefault(child, []).append((ino, name))
    for child, refs in sorted(referrers.items()):
        node = inodes[child]
        if not node.is_dir or len(refs) == 1:
            continue
        keep = next((r for r in refs if r[0] == node.parent), refs[0])
        for d, name in refs:
            if (d, name) != keep:
                entries = inodes[d].entries
                assert entries is not None
                del entries[name]
                done.append(f"removed extra entry {name!r} in {d} to directory {child}")
        referrers[child] = [keep]
    for child, refs in referrers.items():
        node = inodes[child]
        if node.is_dir and node.parent != refs[0][0]:
            node.parent = refs[0][0]
            done.append(f"directory {child}: parent set to {refs[0][0]}")
    # 2. Whatever the root does not reach, and no session holds, goes to /lost+found.
    for _ in range(len(inodes) + 1):
        reached = _reachable(ns)
        lost = [
            i
            for i in sorted(inodes)
            if i not in reached and not (inodes[i].is_reg and i in ns.holds)
        ]
        if not lost:
            break
        ino = lost[0]
        target = _lost_found(ns, now_ns, done)
        name = f"#{ino}".encode()
        assert target.entries is not None
        for d, n in referrers.get(ino, []):
            entries = inodes[d].entries
            if entries is not None and entries.get(n) == ino:
                del entries[n]
        target.entries[name] = ino
        referrers[ino] = [(target.ino, name)]
        if inodes[ino].is_dir:
            inodes[ino].parent = target.ino
        done.append(f"inode {ino} had no path: linked as /lost+found/{name.decode()}")
    # 3. Counts.
    links: dict[InodeId, int] = {}
    subdirs: dict[InodeId, int] = {}
    for ino, node in inodes.items():
        for child in (node.entries or {}).values():
            links[child] = links.get(child, 0) + 1
            if inodes[child].is_dir:
                subdirs[ino] = subdirs.get(ino, 0) + 1
    for ino in sorted(inodes):
        node = inodes[ino]
        want = 2 + subdirs.get(ino, 0) if node.is_dir else links.get(ino, 0)
        if node.nlink != want:
            done.append(f"inode {ino}: link count {node.nlink} -> {want}")
            node.nlink = want
    files = sum(1 for n in inodes.values() if n.is_reg)
    dirs = sum(1 for n in inodes.values() if n.is_dir)
    if (files, dirs) != (ns.n_files, ns.n_dirs):
        done.append(f"counters: files {ns.n_files} -> {files}, directories {ns.n_dirs} -> {dirs}")
        ns.n_files, ns.n_dirs = files, dirs
    # 4. The chunk map is the inverse of the files' chunk tables.
    wanted: dict[ChunkId, tuple[InodeId, int, ChunkVersion]] = {}
    for ino in sorted(inodes):
        node = inodes[ino]
        for index, cid in sorted((node.chunks or {}).items()):
            if cid in wanted:
                del node.chunks[index]  # type: ignore[union-attr]
                done.append(f"inode {ino}: chunk {cid} at index {index} was another file's")
                continue
            old = ns.chunks.get(cid)
            version = old[2] if old is not None else ChunkVersion(1)
            wanted[cid] = (ino, index, version)
        if node.chunks is not None and not node.chunks:
            node.chunks = None
    for cid in sorted(set(ns.chunks) - set(wanted)):
        done.append(f"chunk {cid} belonged to no file: freed")
        ns._freed.append(cid)
    changed = sum(1 for c, v in wanted.items() if ns.chunks.get(c) != v)
    if changed:
        done.append(f"chunk map: {changed} entries rebuilt from the files")
    ns.chunks = wanted
    # 5. Holds and locks of sessions or inodes that are gone.
    sessions = ns.sessions.sessions
    holds = {
        i: {s for s in sids if s in sessions}
        for i, sids in ns.holds.items()
        if i in inodes and inodes[i].is_reg
    }
    if holds != ns.holds:
        done.append("dropped holds of ended sessions or missing files")
        ns._set_holds(holds)
    for lk in ns.locks.locks():
        if lk.ino not in inodes:
            ns.locks.inode_gone(lk.ino)
            done.append(f"dropped the locks of missing inode {lk.ino}")
        elif lk.session not in sessions:
            ns.locks.release_session(lk.session)
            done.append(f"dropped the locks of ended session {lk.session}")
    # An unlinked file nobody holds any more is freed now.
    for ino in sorted(inodes):
        maybe = inodes.get(ino)
        if maybe is not None and not maybe.is_dir and maybe.nlink == 0 and ino not in ns.holds:
            ns._free(maybe)
            done.append(f"inode {ino}: no name and not open: freed")
    # Uncommitted chunks that left their files.
    for ino, cids in list(ns.uncommitted.items()):
        for cid in sorted(cids):
            if ns.chunks.get(cid, (None,))[0] != ino:
                ns._committed(ino, cid)
                done.append(f"inode {ino}: forgot uncommitted chunk {cid} (not its chunk)")
    return done


def _reachable(ns: Namespace) -> set[InodeId]:
    seen = {ROOT_INODE}
    stack = [ROOT_INODE]
    while stack:
        node = ns.inodes[stack.pop()]
        for child in (node.entries or {}).values():
            if child not in seen:
                seen.add(child)
                if ns.inodes[child].is_dir:
                    stack.append(child)
    return seen


def _lost_found(ns: Namespace, now_ns: int, done: list[str]) -> Inode:
    root = ns.inodes[ROOT_INODE]
    assert root.entries is not None
    ino = root.entries.get(LOST_FOUND)
    if ino is not None and ns.inodes[ino].is_dir:
        return ns.inodes[ino]
    name = LOST_FOUND
    while name in root.entries:
        name += b"_"
    node = Inode(
        InodeId(ns.next_ino),
        stat.S_IFDIR | 0o700,
        uid=0,
        gid=0,
        now_ns=now_ns,
        goal=root.goal,
        nlink=2,
    )
    ns.next_ino += 1
    node.parent = ROOT_INODE
    node.entries = {}
    ns.inodes[node.ino] = node
    root.entries[name] = node.ino
    ns.n_dirs += 1
    done.append(f"created /{name.decode()}")
    return node
