"""``fsck_fix``: the namespace repair of ``dfs fsck --repair`` restores every invariant and
keeps every file it can (unreachable ones go to /lost+found)."""

from __future__ import annotations

import pytest

from dfs.metaserver.invariants import check
from dfs.types import CHUNK_SIZE, ChunkId, ChunkVersion, InodeId
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit


def test_a_clean_namespace_is_left_alone() -> None:
    d = Driver()
    d.mkdir(ROOT, b"a")
    d.create(ROOT, b"f")
    before = d.ns.snapshot_state()
    assert d.do("fsck_fix") == []
    assert d.ns.snapshot_state() == before


def test_broken_invariants_are_repaired_and_nothing_reachable_is_lost() -> None:
    d = Driver()
    sub = d.mkdir(ROOT, b"sub")
    kept = d.create(sub, b"kept")
    lonely = d.create(ROOT, b"lonely")
    cid = ChunkId(d.do("alloc_chunk", ino=lonely, index=0)["chunk_id"])
    d.do("commit_write", ino=lonely, size=CHUNK_SIZE // 2, mtime_ns=-1)
    ns = d.ns
    root = ns.inodes[InodeId(ROOT)].entries
    assert root is not None
    # Damage of every kind fsck reports: an entry to nowhere, a file with no name, wrong
    # counts, a chunk map entry no file has, a detached directory.
    root[b"ghost"] = InodeId(9999)
    del root[b"lonely"]
    ns.inodes[InodeId(kept)].nlink = 5
    ns.n_files += 3
    ns.chunks[ChunkId(4242)] = (InodeId(kept), 7, ChunkVersion(1))
    ns.next_chunk_id = max(ns.next_chunk_id, 4243)
    del root[b"sub"]
    assert check(ns)
    fixes = d.do("fsck_fix")
    assert fixes and check(ns) == []
    found = ns.inodes[root[b"lost+found"]].entries
    assert found == {f"#{sub}".encode(): sub, f"#{lonely}".encode(): lonely}
    assert ns.inodes[InodeId(kept)].nlink == 1
    assert ns.chunks[cid][0] == lonely and ChunkId(4242) not in ns.chunks
    assert 4242 in ns.take_freed_chunks()
    assert d.do("fsck_fix") == []  # a second pass finds nothing


def test_zero_fill_drops_only_the_named_chunk() -> None:
    d = Driver()
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    d.do("commit_write", ino=f, size=CHUNK_SIZE, mtime_ns=-1)
    assert d.do("drop_lost_chunk", ino=f, index=0, chunk_id=cid + 1) == {"dropped": False}
    assert d.do("drop_lost_chunk", ino=f, index=0, chunk_id=cid) == {"dropped": True}
    assert d.ns.getattr(f)["size"] == CHUNK_SIZE and not d.ns.chunks
    assert check(d.ns) == []
