"""getxattr(2) family: create/replace flags, missing attributes, limits, namespaces,
permissions."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.posix.util import as_user, expect, write_file

pytestmark = pytest.mark.mount


def test_set_get_list_remove(d: Path) -> None:
    write_file(d / "f")
    os.setxattr(d / "f", "user.one", b"1")
    os.setxattr(d / "f", "user.two", b"\x00binary\xff\x00")
    os.setxattr(d / "f", "user.empty", b"")
    assert os.getxattr(d / "f", "user.one") == b"1"
    assert os.getxattr(d / "f", "user.two") == b"\x00binary\xff\x00"
    assert os.getxattr(d / "f", "user.empty") == b""
    assert sorted(os.listxattr(d / "f")) == ["user.empty", "user.one", "user.two"]
    os.setxattr(d / "f", "user.one", b"replaced")
    assert os.getxattr(d / "f", "user.one") == b"replaced"
    os.removexattr(d / "f", "user.one")
    assert sorted(os.listxattr(d / "f")) == ["user.empty", "user.two"]
    expect(errno.ENODATA, os.getxattr, d / "f", "user.one")


def test_flags(d: Path) -> None:
    write_file(d / "f")
    os.setxattr(d / "f", "user.a", b"1", os.XATTR_CREATE)
    expect(errno.EEXIST, os.setxattr, d / "f", "user.a", b"2", os.XATTR_CREATE)
    expect(errno.ENODATA, os.setxattr, d / "f", "user.b", b"2", os.XATTR_REPLACE)
    os.setxattr(d / "f", "user.a", b"3", os.XATTR_REPLACE)
    assert os.getxattr(d / "f", "user.a") == b"3"
    assert os.listxattr(d / "f") == ["user.a"]


def test_missing(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENODATA, os.getxattr, d / "f", "user.nope")
    expect(errno.ENODATA, os.removexattr, d / "f", "user.nope")
    expect(errno.ENOENT, os.getxattr, d / "nope", "user.a")
    expect(errno.ENOENT, os.setxattr, d / "nope", "user.a", b"")
    assert os.listxattr(d / "f") == []


def test_limits(d: Path) -> None:
    write_file(d / "f")
    os.setxattr(d / "f", "user." + "n" * 250, b"v")  # 255 bytes
    expect(errno.ERANGE, os.setxattr, d / "f", "user." + "n" * 251, b"v")
    expect(errno.ERANGE, os.getxattr, d / "f", "user." + "n" * 251)
    expect(errno.E2BIG, os.setxattr, d / "f", "user.big", b"v" * (65536 + 1))
    write_file(d / "g")
    os.setxattr(d / "g", "user.3k", b"v" * 3000)
    assert os.getxattr(d / "g", "user.3k") == b"v" * 3000


def test_unknown_namespace(d: Path) -> None:
    write_file(d / "f")
    expect(errno.EOPNOTSUPP, os.setxattr, d / "f", "nonsense.a", b"v")
    expect(errno.EOPNOTSUPP, os.getxattr, d / "f", "nonsense.a")


def test_many_attributes(d: Path) -> None:
    write_file(d / "f")
    names = {f"user.attr{i:02d}" for i in range(40)}
    for n in names:
        os.setxattr(d / "f", n, n.encode())
    assert set(os.listxattr(d / "f")) == names
    assert all(os.getxattr(d / "f", n) == n.encode() for n in names)


def test_directory_and_symlink(d: Path) -> None:
    os.mkdir(d / "dir")
    os.setxattr(d / "dir", "user.d", b"dir")
    assert os.getxattr(d / "dir", "user.d") == b"dir"
    write_file(d / "f")
    os.symlink("f", d / "l")
    os.setxattr(d / "l", "user.via", b"link")  # follows the link
    assert os.getxattr(d / "f", "user.via") == b"link"
    expect(errno.EPERM, os.setxattr, d / "l", "user.x", b"", follow_symlinks=False)
    assert os.listxattr(d / "l", follow_symlinks=False) == []


def test_shared_by_hard_links_and_kept_by_rename(d: Path) -> None:
    write_file(d / "f")
    os.setxattr(d / "f", "user.k", b"v")
    os.link(d / "f", d / "g")
    os.rename(d / "f", d / "h")
    assert os.getxattr(d / "g", "user.k") == b"v"
    assert os.getxattr(d / "h", "user.k") == b"v"
    os.unlink(d / "h")
    write_file(d / "h")
    assert os.listxattr(d / "h") == []


def test_trusted_namespace(d: Path) -> None:
    write_file(d / "f", mode=0o666)
    os.setxattr(d / "f", "trusted.t", b"root only")
    assert os.getxattr(d / "f", "trusted.t") == b"root only"
    expect(errno.EPERM, as_user, lambda: os.setxattr(d / "f", "trusted.u", b""))
    expect(errno.ENODATA, as_user, lambda: os.getxattr(d / "f", "trusted.t"))
    assert as_user(lambda: os.listxattr(d / "f")) == []


def test_unprivileged(d: Path) -> None:
    write_file(d / "ro", mode=0o644)
    write_file(d / "rw", mode=0o666)
    write_file(d / "none", mode=0o600)
    os.setxattr(d / "ro", "user.r", b"visible")
    os.setxattr(d / "none", "user.r", b"hidden")
    expect(errno.EACCES, as_user, lambda: os.setxattr(d / "ro", "user.x", b""))
    expect(errno.EACCES, as_user, lambda: os.removexattr(d / "ro", "user.r"))
    assert as_user(lambda: os.getxattr(d / "ro", "user.r")) == b"visible"
    expect(errno.EACCES, as_user, lambda: os.getxattr(d / "none", "user.r"))
    as_user(lambda: os.setxattr(d / "rw", "user.x", b"ok"))
    assert os.getxattr(d / "rw", "user.x") == b"ok"
