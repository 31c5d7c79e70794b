"""mknod(2), mkfifo(3), creat(2) and the owner/group a new node gets."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from tests.posix.util import NOBODY, as_user, expect, read_file, write_file

pytestmark = pytest.mark.mount


def test_creat_truncates(d: Path) -> None:
    write_file(d / "f", b"old contents")
    fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"new")
    os.close(fd)
    assert read_file(d / "f") == b"new"
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o644  # the mode of an existing file stays


def test_fifo(d: Path) -> None:
    os.mkfifo(d / "p", 0o640)
    st = os.lstat(d / "p")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 0
    r = os.open(d / "p", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(d / "p", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(w, b"through the pipe")
        assert os.read(r, 100) == b"through the pipe"
    finally:
        os.close(w)
        os.close(r)


def test_mknod_fifo(d: Path) -> None:
    os.mknod(d / "p", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.lstat(d / "p").st_mode)


def test_mknod_regular(d: Path) -> None:
    os.mknod(d / "r", stat.S_IFREG | 0o600)
    st = os.lstat(d / "r")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert read_file(d / "r") == b""


def test_mknod_socket(d: Path) -> None:
    os.mknod(d / "s", stat.S_IFSOCK | 0o600)
    assert stat.S_ISSOCK(os.lstat(d / "s").st_mode)


def test_bound_unix_socket(d: Path) -> None:
    os.chdir(d)  # sun_path is at most 107 bytes
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind("sock")
            assert stat.S_ISSOCK(os.lstat(d / "sock").st_mode)
    finally:
        os.chdir("/")


def test_char_device_as_root(d: Path) -> None:
    os.mknod(d / "c", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    st = os.lstat(d / "c")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(1, 3)


def test_block_device_as_root(d: Path) -> None:
    os.mknod(d / "b", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    st = os.lstat(d / "b")
    assert stat.S_ISBLK(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 200)


def test_device_node_unprivileged(d: Path) -> None:
    os.chmod(d, 0o777)
    expect(errno.EPERM, as_user, lambda: os.mknod(d / "c", stat.S_IFCHR | 0o600, os.makedev(1, 3)))
    as_user(lambda: os.mkfifo(d / "p"))
    assert os.lstat(d / "p").st_uid == NOBODY


def test_mknod_existing(d: Path) -> None:
    write_file(d / "f")
    expect(errno.EEXIST, os.mkfifo, d / "f")
    expect(errno.EEXIST, os.mknod, d / "f", stat.S_IFSOCK | 0o600)


def test_mknod_errors(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENOENT, os.mkfifo, d / "nodir" / "p")
    expect(errno.ENOTDIR, os.mkfifo, d / "f" / "p")
    expect(errno.ENAMETOOLONG, os.mkfifo, d / ("p" * 256))
    os.mkfifo(d / ("p" * 255))


def test_nlink_of_parent_unchanged_by_files(d: Path) -> None:
    before = os.stat(d).st_nlink
    write_file(d / "f")
    os.mkfifo(d / "p")
    assert os.stat(d).st_nlink == before


def test_setgid_directory_gives_its_group(d: Path) -> None:
    os.chown(d, -1, 4242)
    os.chmod(d, 0o2777)
    write_file(d / "f")
    os.mkfifo(d / "p")
    assert os.stat(d / "f").st_gid == 4242
    assert os.lstat(d / "p").st_gid == 4242
    as_user(lambda: os.close(os.open(d / "g", os.O_WRONLY | os.O_CREAT, 0o644)))
    st = os.stat(d / "g")
    assert (st.st_uid, st.st_gid) == (NOBODY, 4242)


def test_setgid_bit_of_new_file_dropped_for_non_member(d: Path) -> None:
    os.chown(d, -1, 4242)
    os.chmod(d, 0o2777)
    os.umask(0)
    as_user(lambda: os.close(os.open(d / "g", os.O_WRONLY | os.O_CREAT, 0o2775)))
    st = os.stat(d / "g")
    assert st.st_gid == 4242
    assert stat.S_IMODE(st.st_mode) == 0o775  # a non-member may not create a setgid file


def test_group_without_setgid_directory(d: Path) -> None:
    os.chown(d, -1, 4242)
    os.chmod(d, 0o777)
    as_user(lambda: os.close(os.open(d / "g", os.O_WRONLY | os.O_CREAT, 0o644)))
    assert os.stat(d / "g").st_gid == NOBODY
