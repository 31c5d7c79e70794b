"""POSIX ACLs and the umask in the namespace state machine (the pure codec: test_acl.py)."""

from __future__ import annotations

import stat

import pytest

from dfs.errors import InvalidArgument, NoAttribute, NotPermitted, PermissionDenied
from dfs.metaserver import acl
from dfs.metaserver.acl import GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Entry
from dfs.metaserver.namespace import Namespace
from tests.metaserver.nsutil import ROOT, Driver
from tests.metaserver.nsutil import USER as OWNER

ACCESS, DEFAULT = acl.XATTR_ACCESS, acl.XATTR_DEFAULT
OTHER_USER = {"uid": 2000, "gid": 2000}
ROOT_CRED = {"uid": 0, "gid": 0}
#: user::rwx user:3000:r-x group::r-x mask::r-x other::---
NAMED = (
    Entry(USER_OBJ, 7),
    Entry(USER, 5, 3000),
    Entry(GROUP_OBJ, 5),
    Entry(MASK, 5),
    Entry(OTHER, 0),
)


@pytest.fixture
def d() -> Driver:
    return Driver()


def perm(d: Driver, ino: int) -> int:
    return int(d.attr(ino)["mode"]) & 0o7777


def xattr(d: Driver, ino: int, name: bytes) -> bytes | None:
    try:
        return d.ns.getxattr(ino, name)
    except NoAttribute:
        return None


def set_acl(d: Driver, ino: int, name: bytes, entries: acl.Acl, cred: object = OWNER) -> None:
    d.do("setxattr", ino=ino, name=name, value=acl.encode(entries), flags=0, cred=cred)


# ---------------------------------------------------------------- umask
def test_umask_applies_without_default_acl(d: Driver) -> None:
    f = d.do("mknod", parent=ROOT, name=b"f", mode=stat.S_IFREG | 0o666, cred=OWNER, umask=0o022)
    assert f["mode"] == stat.S_IFREG | 0o644
    sub = d.do("mkdir", parent=ROOT, name=b"d", mode=0o777, cred=OWNER, umask=0o077)
    assert sub["mode"] == stat.S_IFDIR | 0o700
    assert d.ns.listxattr(f["ino"]) == [] and d.ns.listxattr(sub["ino"]) == []


def test_commands_without_umask_keep_the_mode(d: Driver) -> None:
    # Log entries written before umask existed replay exactly as they did.
    assert perm(d, d.create(ROOT, b"f", 0o666)) == 0o666
    assert perm(d, d.mkdir(ROOT, b"d", 0o777)) == 0o777


def test_symlinks_ignore_umask_and_default_acl(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d", 0o755)
    set_acl(d, dino, DEFAULT, NAMED)
    link = d.do("symlink", parent=dino, name=b"l", target=b"x", cred=OWNER)
    assert link["mode"] == stat.S_IFLNK | 0o777
    assert d.ns.listxattr(link["ino"]) == []


# ---------------------------------------------------------------- setxattr of ACLs
def test_access_acl_sets_mode_and_is_stored(d: Driver) -> None:
    f = d.create(ROOT, b"f", 0o644)
    set_acl(d, f, ACCESS, NAMED)
    assert perm(d, f) == 0o750  # owner rwx, mask r-x, other ---
    assert acl.decode(d.ns.getxattr(f, ACCESS)) == NAMED


def test_minimal_access_acl_only_changes_the_mode(d: Driver) -> None:
    f = d.create(ROOT, b"f", 0o644)
    set_acl(d, f, ACCESS, NAMED)
    set_acl(d, f, ACCESS, acl.from_mode(0o604))
    assert perm(d, f) == 0o604
    assert xattr(d, f, ACCESS) is None
    assert d.ns.listxattr(f) == []


def test_setgid_and_sticky_bits_survive_an_acl(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d", 0o3775)
    set_acl(d, dino, ACCESS, NAMED)
    assert perm(d, dino) == 0o3750


def test_default_acl_only_on_directories(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    with pytest.raises(PermissionDenied):
        set_acl(d, f, DEFAULT, NAMED)
    dino = d.mkdir(ROOT, b"d")
    set_acl(d, dino, DEFAULT, acl.from_mode(0o750))
    # A default ACL is kept even when minimal: it still replaces the umask.
    assert acl.decode(d.ns.getxattr(dino, DEFAULT)) == acl.from_mode(0o750)
    assert perm(d, dino) == 0o755


def test_only_owner_or_root_sets_acls(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    with pytest.raises(NotPermitted):
        set_acl(d, f, ACCESS, NAMED, cred=OTHER_USER)
    set_acl(d, f, ACCESS, NAMED, cred=ROOT_CRED)
    with pytest.raises(NotPermitted):
        d.do("removexattr", ino=f, name=ACCESS, cred=OTHER_USER)
    d.do("removexattr", ino=f, name=ACCESS, cred=OWNER)
    assert xattr(d, f, ACCESS) is None
    # Ordinary xattrs are not restricted here (the kernel checks write access).
    d.do("setxattr", ino=f, name=b"user.x", value=b"1", flags=0, cred=OTHER_USER)


def test_commands_without_cred_skip_the_owner_check(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.do("setxattr", ino=f, name=ACCESS, value=acl.encode(NAMED), flags=0)
    assert acl.decode(d.ns.getxattr(f, ACCESS)) == NAMED


@pytest.mark.parametrize(
    "value",
    [
        b"garbage",
        acl.encode((Entry(USER_OBJ, 7), Entry(USER, 7, 5), Entry(GROUP_OBJ, 5), Entry(OTHER, 0))),
        acl.encode((Entry(USER_OBJ, 7), Entry(OTHER, 0))),
    ],
)
def test_malformed_acls_are_refused(d: Driver, value: bytes) -> None:
    f = d.create(ROOT, b"f")
    with pytest.raises(InvalidArgument):
        d.do("setxattr", ino=f, name=ACCESS, value=value, flags=0, cred=OWNER)


def test_empty_acl_removes_it(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d")
    set_acl(d, dino, ACCESS, NAMED)
    set_acl(d, dino, DEFAULT, NAMED)
    set_acl(d, dino, ACCESS, ())
    set_acl(d, dino, DEFAULT, ())
    assert d.ns.listxattr(dino) == []
    assert perm(d, dino) == 0o750  # the mode stays as the ACL left it


def test_acl_xattr_flags_are_ignored(d: Driver) -> None:
    # The kernel's ACL path has no XATTR_CREATE/REPLACE.
    f = d.create(ROOT, b"f")
    d.do("setxattr", ino=f, name=ACCESS, value=acl.encode(NAMED), flags=2, cred=OWNER)
    d.do("setxattr", ino=f, name=ACCESS, value=acl.encode(NAMED), flags=1, cred=OWNER)


# ---------------------------------------------------------------- chmod
def test_chmod_rewrites_the_access_acl(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    set_acl(d, f, ACCESS, NAMED)
    d.do("setattr", ino=f, mode=0o640)
    got = acl.decode(d.ns.getxattr(f, ACCESS))
    assert got == (
        Entry(USER_OBJ, 6),
        Entry(USER, 5, 3000),
        Entry(GROUP_OBJ, 5),
        Entry(MASK, 4),
        Entry(OTHER, 0),
    )
    assert perm(d, f) == 0o640


def test_chmod_leaves_the_default_acl(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d")
    set_acl(d, dino, DEFAULT, NAMED)
    d.do("setattr", ino=dino, mode=0o700)
    assert acl.decode(d.ns.getxattr(dino, DEFAULT)) == NAMED
    assert xattr(d, dino, ACCESS) is None


# ---------------------------------------------------------------- inheritance
def test_new_file_takes_the_default_acl_not_the_umask(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d")
    set_acl(d, dino, DEFAULT, NAMED)
    f = d.do("mknod", parent=dino, name=b"f", mode=stat.S_IFREG | 0o666, cred=OWNER, umask=0o077)
    assert f["mode"] == stat.S_IFREG | 0o640
    assert acl.decode(d.ns.getxattr(f["ino"], ACCESS)) == (
        Entry(USER_OBJ, 6),
        Entry(USER, 5, 3000),
        Entry(GROUP_OBJ, 5),
        Entry(MASK, 4),
        Entry(OTHER, 0),
    )
    assert xattr(d, f["ino"], DEFAULT) is None


def test_new_directory_inherits_both_acls(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d")
    set_acl(d, dino, DEFAULT, NAMED)
    sub = d.do("mkdir", parent=dino, name=b"s", mode=0o777, cred=OWNER, umask=0o077)
    assert sub["mode"] == stat.S_IFDIR | 0o750
    assert acl.decode(d.ns.getxattr(sub["ino"], ACCESS)) == NAMED
    assert acl.decode(d.ns.getxattr(sub["ino"], DEFAULT)) == NAMED
    # ... and passes it down again.
    deeper = d.do("mkdir", parent=sub["ino"], name=b"t", mode=0o700, cred=OWNER, umask=0)
    assert deeper["mode"] == stat.S_IFDIR | 0o700
    assert acl.decode(d.ns.getxattr(deeper["ino"], DEFAULT)) == NAMED


def test_setgid_directory_and_default_acl_combine(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d", 0o2775)
    set_acl(d, dino, DEFAULT, NAMED)
    sub = d.do("mkdir", parent=dino, name=b"s", mode=0o777, cred=OTHER_USER, umask=0o022)
    assert sub["mode"] == stat.S_IFDIR | 0o2750
    assert sub["gid"] == OWNER["gid"]


def test_acls_survive_a_snapshot(d: Driver) -> None:
    dino = d.mkdir(ROOT, b"d")
    set_acl(d, dino, DEFAULT, NAMED)
    set_acl(d, dino, ACCESS, NAMED)
    blob = d.ns.snapshot_state()
    fresh = Namespace()
    fresh.restore(blob)
    assert fresh.getxattr(dino, DEFAULT) == d.ns.getxattr(dino, DEFAULT)
    assert fresh.getxattr(dino, ACCESS) == d.ns.getxattr(dino, ACCESS)
    assert fresh.snapshot_state() == blob


def test_undecodable_stored_default_acl_counts_as_absent(d: Driver) -> None:
    # A value stored through plain setxattr before ACLs were checked (replayed old log).
    dino = d.mkdir(ROOT, b"d")
    node = d.ns.inodes[dino]  # type: ignore[index]
    node.xattrs = {DEFAULT: b"junk"}
    f = d.do("mknod", parent=dino, name=b"f", mode=stat.S_IFREG | 0o666, cred=OWNER, umask=0o022)
    assert f["mode"] == stat.S_IFREG | 0o644
