"""Conformance suite of the pure Namespace: every operation and every errno case.

Every command goes through ``Driver.do``, which also checks that failed commands change
nothing and that the schema invariants hold after each step.
"""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest

from dfs.errors import (
    DirectoryNotEmpty,
    Exists,
    FileTooLarge,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NotADirectory,
    NotFound,
    NotPermitted,
    RangeError,
)
from dfs.metaserver.namespace import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    XATTR_CREATE,
    XATTR_REPLACE,
    Namespace,
    SnapshotCorrupt,
)
from dfs.types import CHUNK_SIZE
from tests.metaserver.nsutil import ROOT, USER, Driver

pytestmark = pytest.mark.unit


@pytest.fixture
def d() -> Driver:
    return Driver()


# ---------------------------------------------------------------- root and names
def test_root_is_owned_by_root_0755(d: Driver) -> None:
    a = d.attr(ROOT)
    assert a["mode"] == stat.S_IFDIR | 0o755
    assert (a["uid"], a["gid"], a["nlink"], a["goal"]) == (0, 0, 2, 2)
    assert a["mtime_ns"] == a["ctime_ns"] == a["atime_ns"] == d.now
    assert d.ns.readdir(ROOT) == []


def test_init_twice_refused(d: Driver) -> None:
    with pytest.raises(InvalidArgument):
        d.do("init", goal=3, cluster_id="x")


def test_uninitialised_namespace_has_no_root() -> None:
    ns = Namespace()
    with pytest.raises(NotFound):
        ns.getattr(ROOT)


def test_unknown_op_refused(d: Driver) -> None:
    with pytest.raises(InvalidArgument):
        d.do("frobnicate")


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b", b"/"])
def test_invalid_names(d: Driver, name: bytes) -> None:
    with pytest.raises(InvalidArgument):
        d.mkdir(ROOT, name)
    with pytest.raises(InvalidArgument):
        d.create(ROOT, name)
    with pytest.raises(InvalidArgument):
        d.ns.lookup(ROOT, name)


def test_name_length_limit(d: Driver) -> None:
    d.create(ROOT, b"x" * 255)
    with pytest.raises(NameTooLong):
        d.create(ROOT, b"y" * 256)
    with pytest.raises(NameTooLong):
        d.mkdir(ROOT, b"y" * 256)
    with pytest.raises(NameTooLong):
        d.ns.lookup(ROOT, b"y" * 256)
    # bytes, not characters: 128 two-byte characters are 256 bytes
    with pytest.raises(NameTooLong):
        d.create(ROOT, "é".encode() * 128)


# ---------------------------------------------------------------- create
def test_mkdir_links_and_times(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a", 0o750)
    attr = d.attr(a)
    assert attr["mode"] == stat.S_IFDIR | 0o750
    assert attr["nlink"] == 2
    assert (attr["uid"], attr["gid"]) == (1000, 1000)
    assert attr["mtime_ns"] == attr["ctime_ns"] == attr["atime_ns"] == d.now
    root = d.attr(ROOT)
    assert root["nlink"] == 3
    assert root["mtime_ns"] == root["ctime_ns"] == d.now
    d.mkdir(a, b"b")
    assert d.attr(a)["nlink"] == 3
    assert d.attr(ROOT)["nlink"] == 3
    assert d.ns.lookup(ROOT, b"a")["ino"] == a


def test_mkdir_errors(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.mkdir(ROOT, b"a")
    with pytest.raises(Exists):
        d.mkdir(ROOT, b"a")
    with pytest.raises(Exists):
        d.mkdir(ROOT, b"f")
    with pytest.raises(NotADirectory):
        d.mkdir(f, b"x")
    with pytest.raises(NotFound):
        d.mkdir(999, b"x")


def test_mknod_types(d: Driver) -> None:
    for name, kind in [(b"fifo", stat.S_IFIFO), (b"sock", stat.S_IFSOCK)]:
        attr = d.do("mknod", parent=ROOT, name=name, mode=kind | 0o600, rdev=5, cred=USER)
        assert attr["mode"] == kind | 0o600
        assert attr["rdev"] == 0
        assert attr["nlink"] == 1
    attr = d.do(
        "mknod", parent=ROOT, name=b"dev", mode=stat.S_IFCHR | 0o600, rdev=0x0103, cred=USER
    )
    assert attr["rdev"] == 0x0103
    # no type bits = regular file
    attr = d.do("mknod", parent=ROOT, name=b"plain", mode=0o640, rdev=0, cred=USER)
    assert attr["mode"] == stat.S_IFREG | 0o640
    assert attr["size"] == 0
    assert d.ns.counts()["files"] == 1


def test_mknod_refuses_directories_and_symlinks(d: Driver) -> None:
    with pytest.raises(NotPermitted):
        d.do("mknod", parent=ROOT, name=b"d", mode=stat.S_IFDIR | 0o755, rdev=0, cred=USER)
    with pytest.raises(InvalidArgument):
        d.do("mknod", parent=ROOT, name=b"l", mode=stat.S_IFLNK | 0o777, rdev=0, cred=USER)


def test_symlink(d: Driver) -> None:
    attr = d.do("symlink", parent=ROOT, name=b"l", target=b"../x/y", cred=USER)
    assert attr["mode"] == stat.S_IFLNK | 0o777
    assert attr["size"] == 6
    assert d.ns.readlink(attr["ino"]) == b"../x/y"
    f = d.create(ROOT, b"f")
    with pytest.raises(InvalidArgument):
        d.ns.readlink(f)
    with pytest.raises(NotFound):
        d.do("symlink", parent=ROOT, name=b"e", target=b"", cred=USER)
    with pytest.raises(NameTooLong):
        d.do("symlink", parent=ROOT, name=b"e", target=b"x" * 4096, cred=USER)
    with pytest.raises(Exists):
        d.do("symlink", parent=ROOT, name=b"f", target=b"t", cred=USER)


def test_inode_numbers_never_reused(d: Driver) -> None:
    a = d.create(ROOT, b"a")
    d.do("unlink", parent=ROOT, name=b"a")
    b = d.create(ROOT, b"a")
    assert b > a


# ---------------------------------------------------------------- setgid and ownership
def test_setgid_directory_gives_group_and_propagates(d: Driver) -> None:
    g = d.mkdir(ROOT, b"g", 0o2775, cred={"uid": 5, "gid": 50})
    assert d.attr(g)["mode"] & stat.S_ISGID
    other = {"uid": 7, "gid": 70}
    f = d.create(g, b"f", cred=other)
    assert (d.attr(f)["uid"], d.attr(f)["gid"]) == (7, 50)
    assert not d.attr(f)["mode"] & stat.S_ISGID
    sub = d.mkdir(g, b"sub", 0o755, cred=other)
    assert d.attr(sub)["gid"] == 50
    assert d.attr(sub)["mode"] == stat.S_IFDIR | stat.S_ISGID | 0o755
    deeper = d.create(sub, b"x", cred=other)
    assert d.attr(deeper)["gid"] == 50


def test_no_setgid_uses_cred_group(d: Driver) -> None:
    p = d.mkdir(ROOT, b"p", cred={"uid": 5, "gid": 50})
    f = d.create(p, b"f", cred={"uid": 7, "gid": 70})
    assert d.attr(f)["gid"] == 70


# ---------------------------------------------------------------- link / unlink / rmdir
def test_hard_links(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    f = d.create(ROOT, b"f")
    t_create = d.attr(f)["ctime_ns"]
    attr = d.do("link", ino=f, parent=a, name=b"g")
    assert attr["nlink"] == 2
    assert attr["ctime_ns"] == d.now > t_create
    assert d.attr(a)["mtime_ns"] == d.attr(a)["ctime_ns"] == d.now
    assert d.ns.lookup(a, b"g")["ino"] == f
    d.do("unlink", parent=ROOT, name=b"f")
    assert d.attr(f)["nlink"] == 1
    assert d.attr(f)["ctime_ns"] == d.now
    d.do("unlink", parent=a, name=b"g")
    with pytest.raises(NotFound):
        d.attr(f)


def test_link_errors(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    f = d.create(ROOT, b"f")
    with pytest.raises(NotPermitted):
        d.do("link", ino=a, parent=ROOT, name=b"a2")
    with pytest.raises(Exists):
        d.do("link", ino=f, parent=ROOT, name=b"a")
    with pytest.raises(NotFound):
        d.do("link", ino=999, parent=ROOT, name=b"x")
    with pytest.raises(NotADirectory):
        d.do("link", ino=f, parent=f, name=b"x")


def test_unlink_errors(d: Driver) -> None:
    d.mkdir(ROOT, b"a")
    f = d.create(ROOT, b"f")
    with pytest.raises(IsADirectory):
        d.do("unlink", parent=ROOT, name=b"a")
    with pytest.raises(NotFound):
        d.do("unlink", parent=ROOT, name=b"nope")
    with pytest.raises(NotADirectory):
        d.do("unlink", parent=f, name=b"x")


def test_rmdir(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    b = d.mkdir(a, b"b")
    d.create(b, b"f")
    with pytest.raises(DirectoryNotEmpty):
        d.do("rmdir", parent=ROOT, name=b"a")
    with pytest.raises(NotADirectory):
        d.do("rmdir", parent=b, name=b"f")
    with pytest.raises(NotFound):
        d.do("rmdir", parent=ROOT, name=b"zz")
    d.do("unlink", parent=b, name=b"f")
    d.do("rmdir", parent=a, name=b"b")
    assert d.attr(a)["nlink"] == 2
    assert d.attr(a)["mtime_ns"] == d.attr(a)["ctime_ns"] == d.now
    with pytest.raises(NotFound):
        d.attr(b)
    d.do("rmdir", parent=ROOT, name=b"a")
    assert d.attr(ROOT)["nlink"] == 2
    assert d.ns.counts() == {"inodes": 1, "files": 0, "directories": 1, "chunks": 0}


def test_lookup_and_readdir_errors(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    with pytest.raises(NotADirectory):
        d.ns.lookup(f, b"x")
    with pytest.raises(NotADirectory):
        d.ns.readdir(f)
    with pytest.raises(NotFound):
        d.ns.lookup(ROOT, b"x")
    with pytest.raises(NotFound):
        d.ns.readdir(12345)


def test_readdir_lists_entries_with_attrs(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    f = d.create(ROOT, b"f")
    listing = dict((name, attr["ino"]) for name, attr in d.ns.readdir(ROOT))
    assert listing == {b"a": a, b"f": f}


# ---------------------------------------------------------------- rename
def test_rename_file_same_dir(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=0)
    assert d.names(ROOT) == [b"g"]
    assert d.attr(f)["ctime_ns"] == d.now
    assert d.attr(ROOT)["mtime_ns"] == d.now


def test_rename_over_existing_file_drops_its_link(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    g = d.create(ROOT, b"g")
    d.do("link", ino=g, parent=ROOT, name=b"g2")
    d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=0)
    assert d.ns.lookup(ROOT, b"g")["ino"] == f
    assert d.attr(g)["nlink"] == 1
    assert d.attr(g)["ctime_ns"] == d.now
    d.do("rename", parent=ROOT, name=b"g", newparent=ROOT, newname=b"g2", flags=0)
    with pytest.raises(NotFound):
        d.attr(g)


def test_rename_directory_across_parents_moves_link_counts(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    b = d.mkdir(ROOT, b"b")
    c = d.mkdir(a, b"c")
    d.do("rename", parent=a, name=b"c", newparent=b, newname=b"c", flags=0)
    assert d.attr(a)["nlink"] == 2
    assert d.attr(b)["nlink"] == 3
    assert d.ns.inodes[c].parent == b  # type: ignore[index]
    for ino in (a, b):
        assert d.attr(ino)["mtime_ns"] == d.attr(ino)["ctime_ns"] == d.now
    assert d.attr(c)["ctime_ns"] == d.now


def test_rename_directory_over_empty_directory(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    b = d.mkdir(ROOT, b"b")
    src = d.mkdir(a, b"src")
    dst = d.mkdir(b, b"dst")
    d.do("rename", parent=a, name=b"src", newparent=b, newname=b"dst", flags=0)
    assert d.ns.lookup(b, b"dst")["ino"] == src
    with pytest.raises(NotFound):
        d.attr(dst)
    assert d.attr(a)["nlink"] == 2
    assert d.attr(b)["nlink"] == 3


def test_rename_directory_over_nonempty_directory(d: Driver) -> None:
    d.mkdir(ROOT, b"a")
    b = d.mkdir(ROOT, b"b")
    d.create(b, b"f")
    with pytest.raises(DirectoryNotEmpty):
        d.do("rename", parent=ROOT, name=b"a", newparent=ROOT, newname=b"b", flags=0)


def test_rename_type_mismatch(d: Driver) -> None:
    d.mkdir(ROOT, b"dir")
    d.create(ROOT, b"file")
    with pytest.raises(NotADirectory):
        d.do("rename", parent=ROOT, name=b"dir", newparent=ROOT, newname=b"file", flags=0)
    with pytest.raises(IsADirectory):
        d.do("rename", parent=ROOT, name=b"file", newparent=ROOT, newname=b"dir", flags=0)


def test_rename_into_own_subtree(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    b = d.mkdir(a, b"b")
    c = d.mkdir(b, b"c")
    with pytest.raises(InvalidArgument):
        d.do("rename", parent=ROOT, name=b"a", newparent=c, newname=b"x", flags=0)
    with pytest.raises(InvalidArgument):
        d.do("rename", parent=ROOT, name=b"a", newparent=a, newname=b"x", flags=0)
    # the target is an ancestor of the source: it cannot be empty
    with pytest.raises(DirectoryNotEmpty):
        d.do("rename", parent=b, name=b"c", newparent=ROOT, newname=b"a", flags=0)
    with pytest.raises(InvalidArgument):
        d.do("rename", parent=b, name=b"c", newparent=ROOT, newname=b"a", flags=RENAME_EXCHANGE)


def test_rename_onto_itself_and_hard_link_is_noop(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.do("link", ino=f, parent=ROOT, name=b"g")
    before = d.ns.snapshot_state()
    d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"f", flags=0)
    d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=0)
    a = d.mkdir(ROOT, b"a")
    before = d.ns.snapshot_state()
    d.do("rename", parent=ROOT, name=b"a", newparent=ROOT, newname=b"a", flags=0)
    assert d.ns.snapshot_state() == before
    assert d.attr(f)["nlink"] == 2
    assert d.attr(a)["nlink"] == 2


def test_rename_noreplace(d: Driver) -> None:
    d.create(ROOT, b"f")
    d.create(ROOT, b"g")
    with pytest.raises(Exists):
        d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=RENAME_NOREPLACE)
    with pytest.raises(Exists):
        d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"f", flags=RENAME_NOREPLACE)
    d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"h", flags=RENAME_NOREPLACE)
    assert sorted(d.names(ROOT)) == [b"g", b"h"]


def test_rename_exchange(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    sub = d.mkdir(a, b"sub")
    f = d.create(ROOT, b"f")
    d.do("rename", parent=a, name=b"sub", newparent=ROOT, newname=b"f", flags=RENAME_EXCHANGE)
    assert d.ns.lookup(ROOT, b"f")["ino"] == sub
    assert d.ns.lookup(a, b"sub")["ino"] == f
    assert d.attr(ROOT)["nlink"] == 4  # a and sub are now its subdirectories
    assert d.attr(a)["nlink"] == 2
    assert d.ns.inodes[sub].parent == ROOT  # type: ignore[index]
    assert d.attr(f)["ctime_ns"] == d.attr(sub)["ctime_ns"] == d.now
    with pytest.raises(NotFound):
        d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"zz", flags=RENAME_EXCHANGE)


def test_rename_bad_flags_and_missing(d: Driver) -> None:
    d.create(ROOT, b"f")
    with pytest.raises(InvalidArgument):
        d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=3)
    with pytest.raises(InvalidArgument):
        d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=4)
    with pytest.raises(NotFound):
        d.do("rename", parent=ROOT, name=b"x", newparent=ROOT, newname=b"g", flags=0)
    with pytest.raises(NotFound):
        d.do("rename", parent=ROOT, name=b"f", newparent=999, newname=b"g", flags=0)
    with pytest.raises(NameTooLong):
        d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g" * 256, flags=0)


# ---------------------------------------------------------------- setattr / truncate
def test_setattr_mode_owner_times(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    r = d.do("setattr", ino=f, mode=0o4711, uid=1, gid=2)
    a = r["attr"]
    assert a["mode"] == stat.S_IFREG | 0o4711
    assert (a["uid"], a["gid"]) == (1, 2)
    assert a["ctime_ns"] == d.now
    assert r["trim"] == []
    r = d.do("setattr", ino=f, atime_ns=5, mtime_ns=-1)
    assert r["attr"]["atime_ns"] == 5
    assert r["attr"]["mtime_ns"] == r["attr"]["ctime_ns"] == d.now
    # a mode change cannot change the file type
    d.do("setattr", ino=f, mode=stat.S_IFDIR | 0o755)
    assert stat.S_ISREG(d.attr(f)["mode"])


def test_truncate_drops_chunks_and_trims_partial(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    ids = [d.do("alloc_chunk", ino=f, index=i)["chunk_id"] for i in range(4)]
    d.do("commit_write", ino=f, size=4 * CHUNK_SIZE, mtime_ns=-1)
    r = d.do("setattr", ino=f, size=CHUNK_SIZE + 100)
    assert r["attr"]["size"] == CHUNK_SIZE + 100
    assert r["attr"]["mtime_ns"] == r["attr"]["ctime_ns"] == d.now
    assert r["trim"] == [{"index": 1, "chunk_id": ids[1], "version": 1, "trim_length": 100}]
    assert sorted(d.ns.take_freed_chunks()) == ids[2:]
    assert [c["index"] for c in d.ns.file_chunks(f, 0, 10)] == [0, 1]
    # shrink to a chunk boundary: the chunk starting there is dropped, nothing to trim
    r = d.do("setattr", ino=f, size=CHUNK_SIZE)
    assert r["trim"] == []
    assert d.ns.take_freed_chunks() == [ids[1]]
    # growing keeps everything
    r = d.do("setattr", ino=f, size=10 * CHUNK_SIZE)
    assert r["trim"] == [] and d.ns.take_freed_chunks() == []
    r = d.do("setattr", ino=f, size=0)
    assert d.ns.take_freed_chunks() == [ids[0]]
    assert d.ns.counts()["chunks"] == 0


def test_truncate_errors(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    ln = d.do("symlink", parent=ROOT, name=b"l", target=b"t", cred=USER)["ino"]
    f = d.create(ROOT, b"f")
    with pytest.raises(IsADirectory):
        d.do("setattr", ino=a, size=0)
    with pytest.raises(InvalidArgument):
        d.do("setattr", ino=ln, size=0)
    with pytest.raises(FileTooLarge):
        d.do("setattr", ino=f, size=1 << 61)
    with pytest.raises(NotFound):
        d.do("setattr", ino=999, mode=0o600)


# ---------------------------------------------------------------- chunks and writes
def test_alloc_chunk_and_commit_write(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    c0 = d.do("alloc_chunk", ino=f, index=0, servers=["cs1"])
    assert c0 == {"index": 0, "chunk_id": 1, "version": 1, "created": True}
    again = d.do("alloc_chunk", ino=f, index=0)
    assert again == {**c0, "created": False}
    c5 = d.do("alloc_chunk", ino=f, index=5)
    assert c5["chunk_id"] == 2
    assert d.ns.chunk_info(2) == (f, 5, 1)
    assert [c["index"] for c in d.ns.file_chunks(f, 0, 100)] == [0, 5]
    assert [c["index"] for c in d.ns.file_chunks(f, 1, 5)] == [5]
    assert d.ns.file_chunks(f, 6, 1 << 31) == []
    a = d.do("commit_write", ino=f, size=1000, mtime_ns=123)
    assert (a["size"], a["mtime_ns"], a["ctime_ns"]) == (1000, 123, d.now)
    a = d.do("commit_write", ino=f, size=10, mtime_ns=-1)
    assert a["size"] == 1000
    assert a["mtime_ns"] == d.now


def test_chunk_ops_need_regular_file(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    fifo = d.do("mknod", parent=ROOT, name=b"p", mode=stat.S_IFIFO | 0o600, rdev=0, cred=USER)
    with pytest.raises(IsADirectory):
        d.do("alloc_chunk", ino=a, index=0)
    with pytest.raises(InvalidArgument):
        d.do("alloc_chunk", ino=fifo["ino"], index=0)
    with pytest.raises(IsADirectory):
        d.do("commit_write", ino=a, size=1, mtime_ns=-1)
    with pytest.raises(IsADirectory):
        d.ns.file_chunks(a, 0, 1)
    f = d.create(ROOT, b"f")
    with pytest.raises(InvalidArgument):
        d.do("alloc_chunk", ino=f, index=-1)
    with pytest.raises(FileTooLarge):
        d.do("alloc_chunk", ino=f, index=1 << 40)


def test_unlink_frees_chunks_only_at_last_link(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    cid = d.do("alloc_chunk", ino=f, index=0)["chunk_id"]
    d.do("link", ino=f, parent=ROOT, name=b"g")
    d.do("unlink", parent=ROOT, name=b"f")
    assert d.ns.take_freed_chunks() == []
    d.do("unlink", parent=ROOT, name=b"g")
    assert d.ns.take_freed_chunks() == [cid]
    assert d.ns.chunk_info(cid) is None
    assert d.ns.next_chunk_id == cid + 1


def test_rename_over_file_frees_its_chunks(d: Driver) -> None:
    d.create(ROOT, b"f")
    g = d.create(ROOT, b"g")
    cid = d.do("alloc_chunk", ino=g, index=0)["chunk_id"]
    d.do("rename", parent=ROOT, name=b"f", newparent=ROOT, newname=b"g", flags=0)
    assert d.ns.take_freed_chunks() == [cid]


def test_goal_is_inherited(d: Driver) -> None:
    d3 = Driver(goal=3)
    a = d3.mkdir(ROOT, b"a")
    f = d3.create(a, b"f")
    assert d3.attr(a)["goal"] == d3.attr(f)["goal"] == 3


# ---------------------------------------------------------------- xattrs
def test_xattrs(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.do("setxattr", ino=f, name=b"user.a", value=b"1", flags=0)
    assert d.attr(f)["ctime_ns"] == d.now
    assert d.ns.getxattr(f, b"user.a") == b"1"
    with pytest.raises(Exists):
        d.do("setxattr", ino=f, name=b"user.a", value=b"2", flags=XATTR_CREATE)
    with pytest.raises(NoAttribute):
        d.do("setxattr", ino=f, name=b"user.b", value=b"2", flags=XATTR_REPLACE)
    d.do("setxattr", ino=f, name=b"user.a", value=b"3", flags=XATTR_REPLACE)
    d.do("setxattr", ino=f, name=b"user.b", value=b"", flags=XATTR_CREATE)
    assert d.ns.getxattr(f, b"user.a") == b"3"
    assert d.ns.getxattr(f, b"user.b") == b""
    assert sorted(d.ns.listxattr(f)) == [b"user.a", b"user.b"]
    d.do("removexattr", ino=f, name=b"user.a")
    with pytest.raises(NoAttribute):
        d.ns.getxattr(f, b"user.a")
    with pytest.raises(NoAttribute):
        d.do("removexattr", ino=f, name=b"user.a")
    with pytest.raises(InvalidArgument):
        d.do("setxattr", ino=f, name=b"user.c", value=b"", flags=3)
    with pytest.raises(RangeError):
        d.do("setxattr", ino=f, name=b"", value=b"", flags=0)
    with pytest.raises(RangeError):
        d.do("setxattr", ino=f, name=b"u" * 256, value=b"", flags=0)
    with pytest.raises(RangeError):
        d.do("setxattr", ino=f, name=b"user.big", value=b"v" * (64 * 1024 + 1), flags=0)
    with pytest.raises(NotFound):
        d.ns.listxattr(999)
    assert d.ns.listxattr(ROOT) == []


# ---------------------------------------------------------------- snapshot
def test_snapshot_round_trip(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a", 0o2755)
    f = d.create(a, b"f")
    d.do("link", ino=f, parent=ROOT, name=b"hard")
    d.do("symlink", parent=a, name=b"l", target=b"/etc", cred=USER)
    d.do("setxattr", ino=f, name=b"user.k", value=b"\x00\xff", flags=0)
    d.do("alloc_chunk", ino=f, index=3)
    d.do("commit_write", ino=f, size=5 * CHUNK_SIZE, mtime_ns=-1)
    d.do("mknod", parent=ROOT, name=b"dev", mode=stat.S_IFBLK | 0o600, rdev=77, cred=USER)
    blob = d.ns.snapshot_state()
    other = Namespace()
    other.restore(blob)
    assert other.snapshot_state() == blob
    assert other.counts() == d.ns.counts()
    assert other.readdir(ROOT) == d.ns.readdir(ROOT)
    assert other.next_ino == d.ns.next_ino and other.next_chunk_id == d.ns.next_chunk_id
    assert other.cluster_id == "test-cluster"


def test_corrupt_snapshot_is_refused(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.do("link", ino=f, parent=ROOT, name=b"g")
    blob = d.ns.snapshot_state()
    d.ns.inodes[f].nlink = 5  # type: ignore[index]
    bad = d.ns.snapshot_state()
    fresh = Namespace()
    with pytest.raises(SnapshotCorrupt, match="I4"):
        fresh.restore(bad)
    with pytest.raises(SnapshotCorrupt):
        fresh.restore(blob[:-3])
    assert not fresh.initialised  # a refused snapshot leaves the state alone
    fresh.restore(blob)
    assert fresh.getattr(f)["nlink"] == 2


def test_state_machine_modules_do_no_io() -> None:
    """The import boundary of the pure state machine: no trio, no os, no clock."""
    allowed = {
        "__future__",
        "stat",
        "collections",
        "collections.abc",
        "typing",
        "msgpack",
        "dfs.errors",
        "dfs.types",
        "dfs.metaserver.inode",
        "dfs.metaserver.namespace",
        "dfs.metaserver.invariants",
        "dfs.metaserver.sessions",
        "dfs.metaserver.locks",
        "dfs.metaserver.acl",
        "dfs.metaserver.nsrepair",
        "dataclasses",
        "struct",
    }
    root = Path(__file__).resolve().parents[2] / "dfs" / "metaserver"
    modules = (
        "namespace.py",
        "inode.py",
        "invariants.py",
        "sessions.py",
        "locks.py",
        "acl.py",
        "nsrepair.py",
    )
    for module in modules:
        tree = ast.parse((root / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module == "dfs.metaserver":
                names = {f"dfs.metaserver.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""}
            else:
                continue
            assert names <= allowed, f"{module} imports {names - allowed}"


def test_member_addresses_are_replicated_state(d: Driver) -> None:
    d.do("set_member", id="m4", address="10.0.0.4:9420")
    d.do("set_member", id="m5", address="10.0.0.5:9420")
    d.do("drop_member", id="m5")
    d.do("drop_member", id="m5")  # a repeated drop is harmless
    assert d.ns.members == {"m4": "10.0.0.4:9420"}
    with pytest.raises(InvalidArgument):
        d.do("set_member", id="m6", address="no-port")
    restored = Namespace()
    restored.restore(d.ns.snapshot_state())
    assert restored.members == {"m4": "10.0.0.4:9420"}


def test_punch_hole_drops_whole_chunks_and_keeps_the_size(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    ids = [d.do("alloc_chunk", ino=f, index=i)["chunk_id"] for i in range(4)]
    d.do("commit_write", ino=f, size=4 * CHUNK_SIZE, mtime_ns=123)
    a = d.do("punch_hole", ino=f, first=1, count=2)
    assert a["size"] == 4 * CHUNK_SIZE
    assert a["mtime_ns"] == a["ctime_ns"] == d.now
    assert sorted(d.ns.take_freed_chunks()) == ids[1:3]
    assert [c["index"] for c in d.ns.file_chunks(f, 0, 10)] == [0, 3]
    # Nothing there (or nothing at all): only the times change.
    d.do("punch_hole", ino=f, first=1, count=2)
    d.do("punch_hole", ino=f, first=0, count=0)
    assert d.ns.take_freed_chunks() == []
    d.do("punch_hole", ino=f, first=0, count=1 << 40)
    assert sorted(d.ns.take_freed_chunks()) == [ids[0], ids[3]]
    assert d.ns.counts()["chunks"] == 0
    assert d.ns.getattr(f)["size"] == 4 * CHUNK_SIZE
    a_dir = d.mkdir(ROOT, b"dir")
    with pytest.raises(IsADirectory):
        d.do("punch_hole", ino=a_dir, first=0, count=1)
    with pytest.raises(InvalidArgument):
        d.do("punch_hole", ino=f, first=-1, count=1)
    with pytest.raises(NotFound):
        d.do("punch_hole", ino=999, first=0, count=1)


# ---------------------------------------------------------------- O_APPEND reservations
def test_append_reserves_consecutive_ranges_at_the_end(d: Driver) -> None:
    f = d.create(ROOT, b"log")
    d.do("commit_write", ino=f, size=10, mtime_ns=5)
    first = d.do("append", ino=f, length=100)
    second = d.do("append", ino=f, length=7)
    assert (first["offset"], second["offset"]) == (10, 110)
    assert second["attr"]["size"] == 117 and second["attr"]["mtime_ns"] == d.now
    # A commit of the data written into the first range never shrinks the file.
    d.do("commit_write", ino=f, size=110, mtime_ns=-1)
    assert d.attr(f)["size"] == 117
    with pytest.raises(IsADirectory):
        d.do("append", ino=d.mkdir(ROOT, b"dir"), length=1)
    with pytest.raises(FileTooLarge):
        d.do("append", ino=f, length=1 << 61)
