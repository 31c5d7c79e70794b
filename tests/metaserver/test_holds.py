"""Open-but-unlinked files in the pure namespace: a regular file a session holds open
(``open``, ``mknod`` with ``hold``) outlives its last name until the last holder releases it
or its session ends; its chunks are freed only then."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from dfs.errors import IsADirectory, NotFound, SessionExpired
from dfs.metaserver.namespace import Namespace
from tests.metaserver.nsutil import ROOT, USER, Driver

pytestmark = pytest.mark.unit


class Sessions:
    """Per-session sequence numbers for a Driver."""

    def __init__(self, d: Driver) -> None:
        self.d = d
        self.seq: dict[int, int] = {}

    def open(self, owner: str = "client") -> int:
        sid = int(self.d.do("open_session", owner=owner, kind="mount", label="h:/m")["session"])
        self.seq[sid] = 0
        return sid

    def do(self, sid: int, op: str, **args: Any) -> Any:
        self.seq[sid] += 1
        n = self.seq[sid]
        return self.d.do(op, session=sid, seq=n, acked=n, **args)


@pytest.fixture
def d() -> Driver:
    return Driver()


def _file_with_chunk(d: Driver, s: Sessions, sid: int, name: bytes) -> tuple[int, int]:
    attr = s.do(
        sid,
        "mknod",
        parent=ROOT,
        name=name,
        mode=stat.S_IFREG | 0o644,
        rdev=0,
        cred=USER,
        hold=True,
    )
    ino = int(attr["ino"])
    cid = int(d.do("alloc_chunk", ino=ino, index=0)["chunk_id"])
    d.do("commit_write", ino=ino, size=100, mtime_ns=-1)
    return ino, cid


def test_unlinked_file_held_by_its_creator_stays_until_release(d: Driver) -> None:
    s = Sessions(d)
    a = s.open()
    ino, cid = _file_with_chunk(d, s, a, b"f")
    d.do("unlink", parent=ROOT, name=b"f")
    assert d.ns.readdir(ROOT) == []
    attr = d.ns.getattr(ino)
    assert (attr["nlink"], attr["size"]) == (0, 100)
    assert d.ns.file_chunks(ino, 0, 1)[0]["chunk_id"] == cid
    assert d.ns.take_freed_chunks() == []
    # Still writable: a new chunk and a commit.
    d.do("alloc_chunk", ino=ino, index=1)
    s.do(a, "release", inos=[ino])
    with pytest.raises(NotFound):
        d.ns.getattr(ino)
    assert sorted(d.ns.take_freed_chunks()) == sorted([cid, cid + 1])
    assert d.ns.counts()["files"] == 0


def test_file_held_by_two_sessions_goes_with_the_last(d: Driver) -> None:
    s = Sessions(d)
    a, b = s.open("a"), s.open("b")
    ino, _ = _file_with_chunk(d, s, a, b"f")
    assert s.do(b, "open", ino=ino)["ino"] == ino
    d.do("unlink", parent=ROOT, name=b"f")
    s.do(a, "release", inos=[ino])
    assert d.ns.getattr(ino)["nlink"] == 0
    s.do(b, "release", inos=[ino])
    with pytest.raises(NotFound):
        d.ns.getattr(ino)


def test_release_of_a_named_file_frees_nothing(d: Driver) -> None:
    s = Sessions(d)
    a = s.open()
    ino, _ = _file_with_chunk(d, s, a, b"f")
    s.do(a, "release", inos=[ino])
    s.do(a, "release", inos=[ino, 999])  # repeated and unknown: harmless
    assert d.ns.getattr(ino)["nlink"] == 1
    assert d.ns.holds == {}
    d.do("unlink", parent=ROOT, name=b"f")
    with pytest.raises(NotFound):
        d.ns.getattr(ino)


@pytest.mark.parametrize("end", ["close", "expire"])
def test_holds_end_with_their_session(d: Driver, end: str) -> None:
    s = Sessions(d)
    a = s.open()
    ino, cid = _file_with_chunk(d, s, a, b"f")
    d.do("unlink", parent=ROOT, name=b"f")
    if end == "close":
        d.do("close_session", id=a)
    else:
        assert d.do("expire_sessions", ids=[a]) == [a]
    with pytest.raises(NotFound):
        d.ns.getattr(ino)
    assert d.ns.take_freed_chunks() == [cid]
    assert d.ns.holds == {} and d.ns.held_by == {}


def test_rename_over_a_held_file_keeps_it(d: Driver) -> None:
    s = Sessions(d)
    a = s.open()
    ino, _ = _file_with_chunk(d, s, a, b"old")
    d.create(ROOT, b"new")
    d.do("rename", parent=ROOT, name=b"new", newparent=ROOT, newname=b"old", flags=0)
    assert d.ns.getattr(ino)["nlink"] == 0
    s.do(a, "release", inos=[ino])
    with pytest.raises(NotFound):
        d.ns.getattr(ino)


def test_open_refuses_directories_and_missing_inodes(d: Driver) -> None:
    s = Sessions(d)
    a = s.open()
    sub = d.mkdir(ROOT, b"d")
    with pytest.raises(IsADirectory):
        s.do(a, "open", ino=sub)
    with pytest.raises(NotFound):
        s.do(a, "open", ino=12345)
    d.do("close_session", id=a)
    with pytest.raises(SessionExpired):
        s.do(a, "open", ino=sub)


def test_holds_survive_a_snapshot(d: Driver) -> None:
    s = Sessions(d)
    a = s.open()
    ino, _ = _file_with_chunk(d, s, a, b"f")
    d.do("unlink", parent=ROOT, name=b"f")
    restored = Namespace()
    restored.restore(d.ns.snapshot_state())
    assert restored.holds == {ino: {a}} and restored.held_by == {a: {ino}}
    assert restored.getattr(ino)["nlink"] == 0
    restored.apply({"op": "close_session", "now_ns": d.tick(), "id": a})
    with pytest.raises(NotFound):
        restored.getattr(ino)
