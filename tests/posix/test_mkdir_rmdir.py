"""mkdir(2) and rmdir(2): errors, link counts, setgid inheritance, permission checks."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.posix.util import NOBODY, as_user, expect, write_file

pytestmark = pytest.mark.mount


def test_mkdir_mode_and_links(d: Path) -> None:
    before = os.stat(d).st_nlink
    os.mkdir(d / "sub", 0o777)
    st = os.stat(d / "sub")
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert st.st_nlink == 2
    assert os.stat(d).st_nlink == before + 1
    assert os.stat(d / "sub" / "..").st_ino == os.stat(d).st_ino
    assert os.stat(d / "sub" / ".").st_ino == st.st_ino


def test_mkdir_sticky_and_setgid_bits(d: Path) -> None:
    os.umask(0)
    os.mkdir(d / "sub", 0o1777)
    assert stat.S_IMODE(os.stat(d / "sub").st_mode) == 0o1777


def test_nlink_counts_subdirectories(d: Path) -> None:
    os.mkdir(d / "sub")
    for i in range(3):
        os.mkdir(d / "sub" / f"c{i}")
    write_file(d / "sub" / "f")
    assert os.stat(d / "sub").st_nlink == 5
    os.rmdir(d / "sub" / "c0")
    assert os.stat(d / "sub").st_nlink == 4


def test_mkdir_existing(d: Path) -> None:
    os.mkdir(d / "sub")
    write_file(d / "f")
    os.symlink("nowhere", d / "l")
    expect(errno.EEXIST, os.mkdir, d / "sub")
    expect(errno.EEXIST, os.mkdir, d / "f")
    expect(errno.EEXIST, os.mkdir, d / "l")
    expect(errno.EEXIST, os.mkdir, d / ".")
    expect(errno.EEXIST, os.mkdir, d / "..")


def test_mkdir_errors(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENOENT, os.mkdir, d / "a" / "b")
    expect(errno.ENOTDIR, os.mkdir, d / "f" / "b")
    expect(errno.ENAMETOOLONG, os.mkdir, d / ("x" * 256))
    os.mkdir(d / ("x" * 255))
    os.mkdir(str(d / "slash") + "/")
    assert os.path.isdir(d / "slash")


def test_mkdir_unprivileged(d: Path) -> None:
    os.chmod(d, 0o755)
    expect(errno.EACCES, as_user, lambda: os.mkdir(d / "sub"))
    os.chmod(d, 0o777)
    as_user(lambda: os.mkdir(d / "sub", 0o700))
    st = os.stat(d / "sub")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


def test_setgid_directory_inheritance(d: Path) -> None:
    os.chown(d, -1, 4242)
    os.chmod(d, 0o2775)
    os.mkdir(d / "sub", 0o755)
    st = os.stat(d / "sub")
    assert st.st_gid == 4242
    assert st.st_mode & stat.S_ISGID, "a subdirectory of a setgid directory is setgid"
    os.mkdir(d / "sub" / "deeper")
    st = os.stat(d / "sub" / "deeper")
    assert st.st_gid == 4242
    assert st.st_mode & stat.S_ISGID


def test_rmdir(d: Path) -> None:
    os.mkdir(d / "sub")
    before = os.stat(d).st_nlink
    os.rmdir(d / "sub")
    assert not os.path.lexists(d / "sub")
    assert os.stat(d).st_nlink == before - 1


def test_rmdir_open_directory(d: Path) -> None:
    os.mkdir(d / "sub")
    fd = os.open(d / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d / "sub")
        assert os.fstat(fd).st_nlink == 0
        expect(errno.ENOENT, os.open, "f", os.O_RDWR | os.O_CREAT, 0o644, dir_fd=fd)
    finally:
        os.close(fd)


def test_list_removed_open_directory(d: Path) -> None:
    os.mkdir(d / "sub")
    fd = os.open(d / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d / "sub")
        assert os.listdir(fd) == []
    finally:
        os.close(fd)


def test_rmdir_not_empty(d: Path) -> None:
    os.mkdir(d / "sub")
    write_file(d / "sub" / "f")
    expect(errno.ENOTEMPTY, os.rmdir, d / "sub")
    os.unlink(d / "sub" / "f")
    os.mkdir(d / "sub" / "c")
    expect(errno.ENOTEMPTY, os.rmdir, d / "sub")
    os.rmdir(d / "sub" / "c")
    os.rmdir(d / "sub")


def test_rmdir_errors(d: Path) -> None:
    write_file(d / "f")
    os.mkdir(d / "sub")
    os.symlink("sub", d / "l")
    expect(errno.ENOENT, os.rmdir, d / "nope")
    expect(errno.ENOTDIR, os.rmdir, d / "f")
    expect(errno.ENOTDIR, os.rmdir, d / "l")
    expect(errno.ENOTDIR, os.rmdir, d / "f" / "x")
    expect(errno.EINVAL, os.rmdir, str(d / "sub") + "/.")
    expect(errno.ENOTEMPTY, os.rmdir, str(d / "sub") + "/..")
    expect(errno.ENAMETOOLONG, os.rmdir, d / ("x" * 256))
    assert os.path.isdir(d / "sub")


def test_rmdir_unprivileged(d: Path) -> None:
    os.mkdir(d / "sub", 0o777)
    os.chmod(d, 0o755)
    expect(errno.EACCES, as_user, lambda: os.rmdir(d / "sub"))
    assert os.path.isdir(d / "sub")


def test_rmdir_sticky(d: Path) -> None:
    os.chmod(d, 0o1777)
    os.mkdir(d / "root_owned", 0o777)
    expect(errno.EPERM, as_user, lambda: os.rmdir(d / "root_owned"))
    as_user(lambda: os.mkdir(d / "mine"))
    as_user(lambda: os.rmdir(d / "mine"))
