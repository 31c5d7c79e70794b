"""unlink(2): errors, link counts, open-but-unlinked files, sticky directories."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.posix.util import ALICE, BOB, as_user, expect, read_file, write_file

pytestmark = pytest.mark.mount


def test_unlink(d: Path) -> None:
    write_file(d / "f", b"x")
    os.unlink(d / "f")
    assert not os.path.lexists(d / "f")
    assert os.listdir(d) == []


def test_unlink_one_of_two_links(d: Path) -> None:
    write_file(d / "f", b"data")
    os.link(d / "f", d / "g")
    ctime = os.stat(d / "g").st_ctime_ns
    os.unlink(d / "f")
    st = os.stat(d / "g")
    assert st.st_nlink == 1
    assert st.st_ctime_ns >= ctime
    assert read_file(d / "g") == b"data"


def test_unlink_open_file(d: Path) -> None:
    write_file(d / "f", b"still here")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        assert not os.path.lexists(d / "f")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b"and more", 10)
        assert os.pread(fd, 100, 0) == b"still hereand more"
        assert os.fstat(fd).st_size == 18
    finally:
        os.close(fd)
    write_file(d / "f", b"new")  # the name is free again
    assert read_file(d / "f") == b"new"


def test_unlink_file_open_since_create(d: Path) -> None:
    """The mkstemp-then-unlink temporary file."""
    fd = os.open(d / "tmp", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"scratch")
        os.unlink(d / "tmp")
        assert os.fstat(fd).st_nlink == 0
        os.write(fd, b" space")
        assert os.pread(fd, 100, 0) == b"scratch space"
    finally:
        os.close(fd)
    assert os.listdir(d) == []


def test_attribute_changes_on_unlinked_open_file(d: Path) -> None:
    write_file(d / "f", b"abc")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        os.fchmod(fd, 0o600)
        os.fchown(fd, 4001, 4001)
        os.ftruncate(fd, 10)
        os.utime(fd, ns=(10**9, 2 * 10**9))
        os.fsync(fd)
        st = os.fstat(fd)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_mtime_ns) == (0o600, 4001, 2 * 10**9)
        assert st.st_size == 10
        assert os.pread(fd, 100, 0) == b"abc" + bytes(7)
    finally:
        os.close(fd)


def test_unlink_symlink_not_target(d: Path) -> None:
    write_file(d / "f", b"x")
    os.symlink("f", d / "l")
    os.unlink(d / "l")
    assert read_file(d / "f") == b"x"
    os.symlink("missing", d / "dangling")
    os.unlink(d / "dangling")


def test_unlink_errors(d: Path) -> None:
    os.mkdir(d / "sub")
    write_file(d / "f")
    expect(errno.EISDIR, os.unlink, d / "sub")
    expect(errno.ENOENT, os.unlink, d / "nope")
    expect(errno.ENOENT, os.unlink, d / "nodir" / "f")
    expect(errno.ENOTDIR, os.unlink, d / "f" / "x")
    expect(errno.ENAMETOOLONG, os.unlink, d / ("x" * 256))
    expect(errno.ENOTDIR, os.unlink, str(d / "f") + "/")


def test_unlink_special_files(d: Path) -> None:
    os.mkfifo(d / "p")
    os.unlink(d / "p")
    assert os.listdir(d) == []


def test_unlink_unprivileged(d: Path) -> None:
    write_file(d / "f", mode=0o666)
    os.chmod(d, 0o755)
    expect(errno.EACCES, as_user, lambda: os.unlink(d / "f"))
    os.chmod(d, 0o777)
    as_user(lambda: os.unlink(d / "f"))  # the file's own mode does not matter
    assert not os.path.lexists(d / "f")


def _owned(path: Path, uid: int) -> Path:
    write_file(path, mode=0o666)
    os.chown(path, uid, uid)
    return path


def test_sticky_directory(d: Path) -> None:
    os.chmod(d, 0o1777)
    _owned(d / "alices", ALICE)
    _owned(d / "bobs", BOB)
    expect(errno.EPERM, as_user, lambda: os.unlink(d / "alices"), uid=BOB)
    expect(errno.EPERM, as_user, lambda: os.rename(d / "alices", d / "x"), uid=BOB)
    expect(errno.EPERM, as_user, lambda: os.rename(d / "bobs", d / "alices"), uid=BOB)
    assert os.path.exists(d / "alices")
    as_user(lambda: os.unlink(d / "alices"), uid=ALICE)
    as_user(lambda: os.rename(d / "bobs", d / "b2"), uid=BOB)
    assert os.path.exists(d / "b2")


def test_sticky_directory_owner_may_delete(d: Path) -> None:
    os.mkdir(d / "shared", 0o1777)
    os.chown(d / "shared", BOB, BOB)
    _owned(d / "shared" / "alices", ALICE)
    as_user(lambda: os.unlink(d / "shared" / "alices"), uid=BOB)
    assert os.listdir(d / "shared") == []


def test_no_sticky_anyone_with_write_permission(d: Path) -> None:
    os.chmod(d, 0o777)
    _owned(d / "alices", ALICE)
    as_user(lambda: os.unlink(d / "alices"), uid=BOB)


def test_unlink_without_search_permission(d: Path) -> None:
    os.mkdir(d / "dir")
    write_file(d / "dir" / "f")
    os.chmod(d / "dir", 0o766)  # writable by others but not searchable
    expect(errno.EACCES, as_user, lambda: os.unlink(d / "dir" / "f"))
    assert os.path.exists(d / "dir" / "f")
