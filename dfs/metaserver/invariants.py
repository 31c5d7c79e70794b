"""Checks of the namespace invariants I1..I9 (documented in ``dfs.metaserver.namespace``).

``check(ns)`` returns a list of human-readable violations, empty when the state is sound.  It
is the test oracle of the namespace tests, runs on every snapshot restore, and is what a
metadata fsck reports.  Cost is O(inodes + entries + chunks).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from dfs.errors import FsError
from dfs.types import ROOT_INODE, InodeId

if TYPE_CHECKING:
    from dfs.metaserver.namespace import Namespace


def check(ns: Namespace) -> list[str]:
    """Every violated invariant of ``ns`` as one line each."""
    from dfs.metaserver.namespace import check_name

    problems: list[str] = []
    if not ns.inodes:
        return problems if not ns.chunks else ["I8: chunks exist but there are no inodes"]
    root = ns.inodes.get(ROOT_INODE)
    if root is None or not root.is_dir or root.parent != ROOT_INODE:
        return ["I1: root inode missing, not a directory or not its own parent"]

    refs: Counter[InodeId] = Counter()
    held_by: dict[InodeId, InodeId] = {}
    subdirs: Counter[InodeId] = Counter()
    for ino, node in ns.inodes.items():
        if ino != node.ino or not 1 <= ino < ns.next_ino:
            problems.append(f"I2: inode key {ino} / number {node.ino} / next_ino {ns.next_ino}")
        if node.is_dir != (node.entries is not None) or node.is_dir != (node.parent is not None):
            problems.append(f"I7: inode {ino} directory fields do not match its type")
        if node.is_symlink != (node.target is not None):
            problems.append(f"I7: inode {ino} symlink target does not match its type")
        elif node.target is not None and node.size != len(node.target):
            problems.append(f"I7: symlink {ino} size {node.size} != target length")
        if node.chunks is not None and not node.is_reg:
            problems.append(f"I7: inode {ino} has chunks but is not a regular file")
        for name, child in (node.entries or {}).items():
            try:
                check_name(name)
            except FsError:
                problems.append(f"I3: directory {ino} has invalid entry name {name!r}")
            target = ns.inodes.get(child)
            if target is None:
                problems.append(f"I3: entry {name!r} in {ino} points at missing inode {child}")
                continue
            refs[child] += 1
            if target.is_dir:
                held_by[child] = ino
                subdirs[ino] += 1

    for ino, node in ns.inodes.items():
        if node.is_dir:
            want = 0 if ino == ROOT_INODE else 1
            if refs[ino] != want:
                problems.append(f"I5: directory {ino} is referenced by {refs[ino]} entries")
            elif ino != ROOT_INODE and held_by.get(ino) != node.parent:
                problems.append(f"I5: directory {ino} parent {node.parent} != {held_by.get(ino)}")
            if node.nlink != 2 + subdirs[ino]:
                problems.append(f"I5: directory {ino} nlink {node.nlink} != 2 + {subdirs[ino]}")
        elif node.nlink != refs[ino] or (node.nlink < 1 and ino not in ns.holds):
            problems.append(f"I4: inode {ino} nlink {node.nlink} but {refs[ino]} entries")
    for ino, sids in ns.holds.items():
        held = ns.inodes.get(ino)
        if held is None or not held.is_reg or not sids:
            problems.append(f"I4: held inode {ino} is missing, not a regular file or unheld")
        for sid in sids:
            if sid not in ns.sessions.sessions:
                problems.append(f"I4: inode {ino} held by unknown session {sid}")
            elif ino not in ns.held_by.get(sid, ()):
                problems.append(f"I4: hold of inode {ino} by session {sid} not indexed")
    if sum(len(v) for v in ns.held_by.values()) != sum(len(v) for v in ns.holds.values()):
        problems.append("I4: session -> held inodes index does not match the holds")

    problems.extend(_check_tree(ns))
    problems.extend(_check_chunks(ns))

    files = sum(1 for n in ns.inodes.values() if n.is_reg)
    dirs = sum(1 for n in ns.inodes.values() if n.is_dir)
    if (files, dirs) != (ns.n_files, ns.n_dirs):
        problems.append(f"I9: counters {ns.n_files}/{ns.n_dirs} != actual {files}/{dirs}")
    return problems


def _check_tree(ns: Namespace) -> list[str]:
    """I6: every directory reaches the root through ``parent`` links."""
    problems: list[str] = []
    reaches_root: set[InodeId] = {ROOT_INODE}
    for ino, node in ns.inodes.items():
        if not node.is_dir:
            continue
        path: list[InodeId] = []
        seen: set[InodeId] = set()
        cur: InodeId | None = ino
        while cur is not None and cur not in reaches_root:
            if cur in seen:
                problems.append(f"I6: directory {ino} is on a parent cycle")
                break
            seen.add(cur)
            path.append(cur)
            step = ns.inodes.get(cur)
            cur = step.parent if step is not None and step.is_dir else None
        else:
            if cur is None:
                problems.append(f"I6: directory {ino} does not reach the root")
            else:
                reaches_root.update(path)
    return problems


def _check_chunks(ns: Namespace) -> list[str]:
    """I8: the chunk map is the exact inverse of the files' chunk tables."""
    problems: list[str] = []
    seen = 0
    for ino, node in ns.inodes.items():
        for index, cid in (node.chunks or {}).items():
            seen += 1
            info = ns.chunks.get(cid)
            if info is None or info[0] != ino or info[1] != index:
                problems.append(f"I8: inode {ino} index {index} -> chunk {cid}, map has {info}")
    if seen != len(ns.chunks):
        problems.append(f"I8: chunk map has {len(ns.chunks)} entries, files reference {seen}")
    for cid, (_ino, _index, version) in ns.chunks.items():
        if not 1 <= cid < ns.next_chunk_id or version < 1:
            problems.append(f"I8: chunk {cid} version {version} next_chunk_id {ns.next_chunk_id}")
    for ino, cids in ns.uncommitted.items():
        for cid in cids:
            if ns.chunks.get(cid, (None,))[0] != ino:
                problems.append(f"I8: uncommitted chunk {cid} of inode {ino} is not its chunk")
    return problems
