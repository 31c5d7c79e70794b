"""rename(2) and renameat2(2): replacement rules, directories, link counts, RENAME_NOREPLACE and
RENAME_EXCHANGE, permission checks."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.posix.util import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    as_user,
    expect,
    read_file,
    renameat2,
    write_file,
)

pytestmark = pytest.mark.mount


def test_rename_file(d: Path) -> None:
    write_file(d / "a", b"contents")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert not os.path.lexists(d / "a")
    st = os.stat(d / "b")
    assert st.st_ino == ino
    assert st.st_nlink == 1
    assert read_file(d / "b") == b"contents"


def test_rename_over_file(d: Path) -> None:
    write_file(d / "a", b"new")
    write_file(d / "b", b"old")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert os.listdir(d) == ["b"]
    assert os.stat(d / "b").st_ino == ino
    assert read_file(d / "b") == b"new"


def test_rename_over_open_file(d: Path) -> None:
    write_file(d / "a", b"new")
    write_file(d / "b", b"old")
    fd = os.open(d / "b", os.O_RDONLY)
    try:
        os.rename(d / "a", d / "b")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 10, 0) == b"old"
    finally:
        os.close(fd)
    assert read_file(d / "b") == b"new"


def test_rename_over_file_open_since_create(d: Path) -> None:
    fd = os.open(d / "b", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"old")
        write_file(d / "a", b"new")
        os.rename(d / "a", d / "b")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 10, 0) == b"old"
    finally:
        os.close(fd)
    assert read_file(d / "b") == b"new"


def test_rename_directory_over_empty_sibling(d: Path) -> None:
    os.mkdir(d / "p")
    os.mkdir(d / "p" / "a")
    os.mkdir(d / "p" / "b")
    assert os.stat(d / "p").st_nlink == 4
    os.rename(d / "p" / "a", d / "p" / "b")
    assert os.stat(d / "p").st_nlink == 3
    assert os.listdir(d / "p") == ["b"]


def test_rename_with_buffered_writes(d: Path) -> None:
    fd = os.open(d / "a", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"z" * 100_000)
        os.rename(d / "a", d / "b")
        os.write(fd, b"end")
    finally:
        os.close(fd)
    assert read_file(d / "b") == b"z" * 100_000 + b"end"
    assert os.listdir(d) == ["b"]


def test_rename_over_hard_link_of_target(d: Path) -> None:
    write_file(d / "a", b"x")
    write_file(d / "b", b"y")
    os.link(d / "b", d / "c")
    os.rename(d / "a", d / "b")
    assert os.stat(d / "c").st_nlink == 1
    assert read_file(d / "c") == b"y"


def test_rename_between_links_of_one_file_is_a_noop(d: Path) -> None:
    write_file(d / "a", b"x")
    os.link(d / "a", d / "b")
    os.rename(d / "a", d / "b")
    assert sorted(os.listdir(d)) == ["a", "b"]
    assert os.stat(d / "a").st_nlink == 2


def test_rename_to_itself(d: Path) -> None:
    write_file(d / "a", b"x")
    os.mkdir(d / "dir")
    os.rename(d / "a", d / "a")
    os.rename(d / "dir", d / "dir")
    assert sorted(os.listdir(d)) == ["a", "dir"]


def test_rename_directory_across_parents(d: Path) -> None:
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    os.mkdir(d / "p1" / "c")
    write_file(d / "p1" / "c" / "f", b"x")
    n1, n2 = os.stat(d / "p1").st_nlink, os.stat(d / "p2").st_nlink
    os.rename(d / "p1" / "c", d / "p2" / "c")
    assert os.stat(d / "p1").st_nlink == n1 - 1
    assert os.stat(d / "p2").st_nlink == n2 + 1
    assert os.stat(d / "p2" / "c").st_nlink == 2
    assert os.stat(d / "p2" / "c" / "..").st_ino == os.stat(d / "p2").st_ino
    assert read_file(d / "p2" / "c" / "f") == b"x"


def test_rename_directory_over_empty_directory(d: Path) -> None:
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    os.mkdir(d / "p1" / "a")
    os.mkdir(d / "p2" / "b")
    ino = os.stat(d / "p1" / "a").st_ino
    os.rename(d / "p1" / "a", d / "p2" / "b")
    assert os.stat(d / "p2" / "b").st_ino == ino
    assert os.stat(d / "p1").st_nlink == 2
    assert os.stat(d / "p2").st_nlink == 3
    assert os.listdir(d / "p1") == []


def test_rename_kind_mismatch(d: Path) -> None:
    write_file(d / "f")
    os.mkdir(d / "dir")
    os.mkdir(d / "full")
    write_file(d / "full" / "x")
    os.mkdir(d / "empty")
    expect(errno.EISDIR, os.rename, d / "f", d / "dir")
    expect(errno.ENOTDIR, os.rename, d / "dir", d / "f")
    expect(errno.ENOTEMPTY, os.rename, d / "dir", d / "full")
    expect(errno.ENOTDIR, os.rename, d / "f", str(d / "g") + "/")
    os.rename(d / "dir", d / "empty")
    assert sorted(os.listdir(d)) == ["empty", "f", "full"]


def test_rename_directory_into_itself(d: Path) -> None:
    os.makedirs(d / "a" / "b" / "c")
    expect(errno.EINVAL, os.rename, d / "a", d / "a" / "x")
    expect(errno.EINVAL, os.rename, d / "a", d / "a" / "b" / "c" / "x")
    expect(errno.EINVAL, os.rename, d / "a", d / "a" / "b")
    expect(errno.ENOTEMPTY, os.rename, d / "a" / "b", d / "a")
    assert os.path.isdir(d / "a" / "b" / "c")


def test_rename_dot_and_dotdot(d: Path) -> None:
    os.mkdir(d / "a")
    a = str(d / "a")
    expect(errno.EBUSY, os.rename, a + "/.", d / "b")
    expect(errno.EBUSY, os.rename, a + "/..", d / "b")
    expect(errno.EBUSY, os.rename, d / "b", a + "/.")
    assert os.listdir(d) == ["a"]


def test_rename_errors(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENOENT, os.rename, d / "nope", d / "x")
    expect(errno.ENOENT, os.rename, d / "f", d / "nodir" / "x")
    expect(errno.ENOTDIR, os.rename, d / "f", d / "f" / "x")
    expect(errno.ENAMETOOLONG, os.rename, d / "f", d / ("x" * 256))
    os.rename(d / "f", d / ("x" * 255))
    assert os.listdir(d) == ["x" * 255]


def test_rename_symlink_renames_the_link(d: Path) -> None:
    os.mkdir(d / "dir")
    os.symlink("dir", d / "l")
    os.rename(d / "l", d / "m")
    assert os.readlink(d / "m") == "dir"
    assert os.path.isdir(d / "dir")


def test_rename_updates_times(d: Path) -> None:
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    write_file(d / "p1" / "f")
    for p in (d / "p1", d / "p2", d / "p1" / "f"):
        os.utime(p, ns=(10**9, 10**9))
    ctime = os.stat(d / "p1" / "f").st_ctime_ns
    os.rename(d / "p1" / "f", d / "p2" / "f")
    assert os.stat(d / "p1").st_mtime_ns > 10**9
    assert os.stat(d / "p2").st_mtime_ns > 10**9
    st = os.stat(d / "p2" / "f")
    assert st.st_mtime_ns == 10**9
    assert st.st_ctime_ns >= ctime


def test_noreplace(d: Path) -> None:
    write_file(d / "a", b"a")
    write_file(d / "b", b"b")
    expect(errno.EEXIST, renameat2, d / "a", d / "b", RENAME_NOREPLACE)
    assert read_file(d / "b") == b"b"
    renameat2(d / "a", d / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(d)) == ["b", "c"]
    os.symlink("nowhere", d / "l")
    expect(errno.EEXIST, renameat2, d / "b", d / "l", RENAME_NOREPLACE)


def test_exchange_files(d: Path) -> None:
    write_file(d / "a", b"aaa")
    write_file(d / "b", b"bb")
    ia, ib = os.stat(d / "a").st_ino, os.stat(d / "b").st_ino
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    assert read_file(d / "a") == b"bb"
    assert read_file(d / "b") == b"aaa"
    assert (os.stat(d / "a").st_ino, os.stat(d / "b").st_ino) == (ib, ia)


def test_exchange_file_and_directory_across_parents(d: Path) -> None:
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    os.mkdir(d / "p1" / "dir")
    write_file(d / "p1" / "dir" / "inside", b"i")
    write_file(d / "p2" / "file", b"f")
    renameat2(d / "p1" / "dir", d / "p2" / "file", RENAME_EXCHANGE)
    assert stat.S_ISREG(os.lstat(d / "p1" / "dir").st_mode)
    assert read_file(d / "p1" / "dir") == b"f"
    assert read_file(d / "p2" / "file" / "inside") == b"i"
    assert os.stat(d / "p1").st_nlink == 2
    assert os.stat(d / "p2").st_nlink == 3
    assert os.stat(d / "p2" / "file" / "..").st_ino == os.stat(d / "p2").st_ino


def test_exchange_errors(d: Path) -> None:
    write_file(d / "a")
    os.makedirs(d / "dir" / "sub")
    expect(errno.ENOENT, renameat2, d / "a", d / "missing", RENAME_EXCHANGE)
    expect(errno.ENOENT, renameat2, d / "missing", d / "a", RENAME_EXCHANGE)
    expect(errno.EINVAL, renameat2, d / "a", d / "b", RENAME_EXCHANGE | RENAME_NOREPLACE)
    expect(errno.EINVAL, renameat2, d / "dir", d / "dir" / "sub", RENAME_EXCHANGE)
    expect(errno.EINVAL, renameat2, d / "a", d / "b", 1 << 8)


def test_rename_unprivileged(d: Path) -> None:
    os.mkdir(d / "ro", 0o755)
    os.mkdir(d / "rw")
    os.chmod(d / "rw", 0o777)
    write_file(d / "ro" / "f", mode=0o666)
    write_file(d / "rw" / "g", mode=0o644)
    expect(errno.EACCES, as_user, lambda: os.rename(d / "ro" / "f", d / "rw" / "f"))
    expect(errno.EACCES, as_user, lambda: os.rename(d / "rw" / "g", d / "ro" / "g"))
    as_user(lambda: os.rename(d / "rw" / "g", d / "rw" / "h"))
    assert os.path.exists(d / "rw" / "h")


def test_rename_unwritable_directory_to_new_parent(d: Path) -> None:
    os.chmod(d, 0o777)
    os.mkdir(d / "other")
    os.chmod(d / "other", 0o777)
    os.mkdir(d / "locked", 0o755)  # moving it must rewrite its "..": needs write permission
    expect(errno.EACCES, as_user, lambda: os.rename(d / "locked", d / "other" / "locked"))
    as_user(lambda: os.rename(d / "locked", d / "renamed"))  # same parent: ".." stays
    assert os.path.isdir(d / "renamed")
