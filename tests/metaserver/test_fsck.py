"""``dfs fsck``'s report (``dfs.metaserver.fsck``): every kind of damage found and named by
path, a clean cluster reported clean, a subtree checked alone."""

from __future__ import annotations

import pytest

from dfs.metaserver.fsck import fsck
from dfs.metaserver.registry import Registry
from dfs.types import CHUNK_SIZE, InodeId
from tests.metaserver.nsutil import ROOT, Driver

pytestmark = pytest.mark.unit

GiB = 1 << 30


def _register(reg: Registry, sid: str, chunks: list[tuple[int, int]], now: float = 0.0) -> None:
    reg.register(
        server_id=sid,
        address=f"a:{sid}",
        zone=sid,
        capacity=GiB,
        free=GiB,
        chunks=chunks,
        now=now,
    )


def _file(d: Driver, parent: int, name: bytes, chunks: int) -> tuple[int, list[int]]:
    f = d.create(parent, name)
    cids = [int(d.do("alloc_chunk", ino=f, index=i)["chunk_id"]) for i in range(chunks)]
    d.do("commit_write", ino=f, size=chunks * CHUNK_SIZE, mtime_ns=-1)
    return f, cids


def test_clean_cluster_is_clean() -> None:
    d = Driver(goal=2)
    sub = d.mkdir(ROOT, b"sub")
    _, cids = _file(d, sub, b"f", 2)
    reg = Registry(d.ns, timeout=10.0)
    for sid in ("s1", "s2"):
        _register(reg, sid, [(c, 1) for c in cids])
    report = fsck(d.ns, reg, 1.0)
    assert report["clean"] is True
    assert report["checked"] == {"files": 1, "directories": 2, "chunks": 2}
    assert report["namespace"] == [] and not any(report["counts"].values())


def test_every_kind_of_damage_is_reported_by_path() -> None:
    d = Driver(goal=2)
    sub = d.mkdir(ROOT, b"dir")
    _, (lost,) = _file(d, sub, b"lost", 1)
    _, (thin,) = _file(d, sub, b"thin", 1)
    _, (fat,) = _file(d, ROOT, b"fat", 1)
    _, (old,) = _file(d, ROOT, b"old", 1)
    d.do("set_version", chunk_id=old, version=7, from_version=1, servers=[])
    _, (bad,) = _file(d, ROOT, b"bad", 1)
    orphan = d.ns.next_chunk_id  # an id this cluster allocated, then freed
    _, (gone,) = _file(d, ROOT, b"gone", 1)
    d.do("unlink", parent=ROOT, name=b"gone")
    d.ns.take_freed_chunks()
    reg = Registry(d.ns, timeout=10.0, orphan_delay=1e9)
    _register(reg, "s1", [(thin, 1), (fat, 1), (old, 7), (bad, 1), (gone, 1)])
    _register(reg, "s2", [(fat, 1), (old, 1), (bad, 1)])
    _register(reg, "s3", [(fat, 1), (old, 7)])
    assert reg.report_bad(server_id="s2", chunk_id=bad, version=1, reason="checksum")
    report = fsck(d.ns, reg, 5.0, orphan_cutoff=0.0)
    assert report["clean"] is False
    assert [(e["path"], e["chunk_id"]) for e in report["missing"]] == [("/dir/lost", lost)]
    assert [(e["path"], e["live"]) for e in report["under_goal"]] == [("/dir/thin", 1), ("/bad", 1)]
    assert [(e["path"], e["live"]) for e in report["over_goal"]] == [("/fat", 3)]
    assert [(e["path"], e["server"], e["version"]) for e in report["stale_replicas"]] == [
        ("/old", "s2", 1)
    ]
    assert [(e["path"], e["server"]) for e in report["corrupt_replicas"]] == [("/bad", "s2")]
    assert [(e["chunk_id"], e["server"]) for e in report["orphan_chunks"]] == [(gone, "s1")]
    assert orphan == gone
    assert report["counts"]["missing"] == 1
    # Seen 5 s ago: younger than a cutoff of an hour, not reported.
    assert fsck(d.ns, reg, 5.0, orphan_cutoff=3600.0)["counts"]["orphan_chunks"] == 0


def test_subtree_only_and_dead_servers_count_as_missing() -> None:
    d = Driver(goal=1)
    sub = d.mkdir(ROOT, b"a")
    _, (inside,) = _file(d, sub, b"in", 1)
    _, (outside,) = _file(d, ROOT, b"out", 1)
    reg = Registry(d.ns, timeout=10.0)
    _register(reg, "s1", [(inside, 1), (outside, 1)], now=0.0)
    assert fsck(d.ns, reg, 5.0)["clean"]
    later = fsck(d.ns, reg, 60.0)  # s1 silent for 60 s: dead
    assert [e["path"] for e in later["missing"]] == ["/a/in", "/out"]
    assert later["chunkservers"] == {"known": 1, "alive": 0}
    part = fsck(d.ns, reg, 60.0, top=InodeId(sub))
    assert part["path"] == "/a"
    assert [e["path"] for e in part["missing"]] == ["/a/in"]
    assert part["checked"] == {"files": 1, "directories": 1, "chunks": 1}


def test_leaked_lock_and_broken_invariant_are_namespace_problems() -> None:
    d = Driver()
    f = d.create(ROOT, b"f")
    sid = int(d.do("open_session", owner="c", kind="mount", label="h:/m")["session"])
    d.do("lock_set", ino=f, sid=sid, owner=1, kind="posix", type=1, start=0, end=9, pid=1)
    d.ns.sessions.sessions.pop(sid)  # as if the session vanished without its locks
    d.ns.inodes[InodeId(f)].nlink = 3  # and a link count gone wrong
    report = fsck(d.ns, Registry(d.ns, timeout=10.0), 0.0)
    assert report["clean"] is False
    assert any("leaked lock" in p for p in report["namespace"])
    assert any(p.startswith("I4") for p in report["namespace"])
