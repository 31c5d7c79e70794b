"""open(2): creation, O_EXCL, O_TRUNC, O_APPEND, O_NOFOLLOW, O_DIRECTORY, name and path limits,
permission checks."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.posix.util import NOBODY, as_user, expect, read_file, write_file

pytestmark = pytest.mark.mount

RW_CREAT = os.O_RDWR | os.O_CREAT


def test_create_mode_respects_umask(d: Path) -> None:
    os.close(os.open(d / "f", RW_CREAT, 0o666))
    st = os.stat(d / "f")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_size == 0
    assert st.st_nlink == 1
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def test_create_keeps_requested_bits(d: Path) -> None:
    os.umask(0)
    os.close(os.open(d / "f", RW_CREAT, 0o4751))
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o4751


def test_excl_on_existing_file(d: Path) -> None:
    write_file(d / "f")
    expect(errno.EEXIST, os.open, d / "f", RW_CREAT | os.O_EXCL)


def test_excl_on_dangling_symlink(d: Path) -> None:
    os.symlink("nowhere", d / "l")
    expect(errno.EEXIST, os.open, d / "l", RW_CREAT | os.O_EXCL)
    assert not (d / "nowhere").exists()


def test_creat_through_dangling_symlink_creates_target(d: Path) -> None:
    os.symlink("target", d / "l")
    os.close(os.open(d / "l", RW_CREAT, 0o600))
    assert stat.S_ISREG(os.lstat(d / "target").st_mode)


def test_excl_on_directory(d: Path) -> None:
    (d / "sub").mkdir()
    expect(errno.EEXIST, os.open, d / "sub", RW_CREAT | os.O_EXCL)


def test_missing_file(d: Path) -> None:
    expect(errno.ENOENT, os.open, d / "nope", os.O_RDONLY)


def test_missing_component(d: Path) -> None:
    expect(errno.ENOENT, os.open, d / "nodir" / "f", RW_CREAT)


def test_component_is_a_file(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENOTDIR, os.open, d / "f" / "g", os.O_RDONLY)
    expect(errno.ENOTDIR, os.open, d / "f" / "g", RW_CREAT)


def test_trailing_slash_on_file(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENOTDIR, os.open, str(d / "f") + "/", os.O_RDONLY)


def test_creat_with_trailing_slash(d: Path) -> None:
    expect(errno.EISDIR, os.open, str(d / "new") + "/", RW_CREAT)


def test_directory_flag(d: Path) -> None:
    write_file(d / "f")
    (d / "sub").mkdir()
    expect(errno.ENOTDIR, os.open, d / "f", os.O_RDONLY | os.O_DIRECTORY)
    os.close(os.open(d / "sub", os.O_RDONLY | os.O_DIRECTORY))


def test_write_open_of_directory(d: Path) -> None:
    expect(errno.EISDIR, os.open, d, os.O_WRONLY)
    expect(errno.EISDIR, os.open, d, os.O_RDWR)
    expect(errno.EISDIR, os.open, d, RW_CREAT)


def test_nofollow(d: Path) -> None:
    write_file(d / "f", b"x")
    os.symlink("f", d / "l")
    expect(errno.ELOOP, os.open, d / "l", os.O_RDONLY | os.O_NOFOLLOW)
    os.close(os.open(d / "f", os.O_RDONLY | os.O_NOFOLLOW))


def test_symlink_loop(d: Path) -> None:
    os.symlink("b", d / "a")
    os.symlink("a", d / "b")
    expect(errno.ELOOP, os.open, d / "a", os.O_RDONLY)
    expect(errno.ELOOP, os.open, d / "a" / "x", RW_CREAT)


def test_trunc(d: Path) -> None:
    write_file(d / "f", b"hello world")
    os.utime(d / "f", ns=(10**9, 10**9))
    ctime = os.stat(d / "f").st_ctime_ns
    os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC))
    st = os.stat(d / "f")
    assert st.st_size == 0
    assert st.st_mtime_ns > 10**9
    assert st.st_ctime_ns >= ctime
    assert read_file(d / "f") == b""


def test_trunc_then_rewrite_shorter(d: Path) -> None:
    write_file(d / "f", b"0123456789" * 100)
    fd = os.open(d / "f", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"abc")
    os.close(fd)
    assert read_file(d / "f") == b"abc"


def test_append(d: Path) -> None:
    write_file(d / "f", b"abc")
    fd = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"def")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        os.lseek(fd, 1, os.SEEK_SET)
        os.write(fd, b"gh")
    finally:
        os.close(fd)
    assert read_file(d / "f") == b"abcdefgh"


def test_append_two_descriptors(d: Path) -> None:
    write_file(d / "f")
    a = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    b = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(5):
            os.write(a, b"A%d" % i)
            os.write(b, b"B%d" % i)
    finally:
        os.close(a)
        os.close(b)
    assert read_file(d / "f") == b"A0B0A1B1A2B2A3B3A4B4"


def test_read_only_descriptor_refuses_writes(d: Path) -> None:
    write_file(d / "f", b"abc")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        expect(errno.EBADF, os.write, fd, b"x")
    finally:
        os.close(fd)
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        expect(errno.EBADF, os.read, fd, 1)
    finally:
        os.close(fd)


def test_name_of_255_bytes(d: Path) -> None:
    name = "n" * 255
    write_file(d / name, b"x")
    assert name in os.listdir(d)
    assert read_file(d / name) == b"x"


def test_name_of_256_bytes(d: Path) -> None:
    expect(errno.ENAMETOOLONG, os.open, d / ("n" * 256), RW_CREAT)
    expect(errno.ENAMETOOLONG, os.open, d / ("n" * 256), os.O_RDONLY)


def test_multibyte_name_of_255_bytes(d: Path) -> None:
    name = "é" * 127 + "x"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    write_file(d / name)
    assert name in os.listdir(d)
    expect(errno.ENAMETOOLONG, os.open, d / ("é" * 128), RW_CREAT)


def _deep_dirs(d: Path, depth: int) -> str:
    """``depth`` nested directories of 200-byte names under ``d``; their relative path."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    name = "p" * 200
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    return "/".join([name] * depth)


def test_path_near_path_max(d: Path) -> None:
    rel = _deep_dirs(d, 20)  # 20 * 201 - 1 bytes
    longest = rel + "/" + "f" * (4095 - len(rel) - 1)  # 4095 bytes + NUL = PATH_MAX
    assert len(longest) == 4095
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(longest, RW_CREAT, 0o644, dir_fd=dfd)
        os.write(fd, b"deep")
        os.close(fd)
        fd = os.open(longest, os.O_RDONLY, dir_fd=dfd)
        assert os.read(fd, 10) == b"deep"
        os.close(fd)
        assert os.stat(longest, dir_fd=dfd).st_size == 4
        expect(errno.ENAMETOOLONG, os.open, longest + "g", RW_CREAT, 0o644, dir_fd=dfd)
    finally:
        os.close(dfd)


def test_unprivileged_open_of_private_file(d: Path) -> None:
    write_file(d / "f", b"secret", mode=0o600)
    os.chmod(d, 0o755)
    expect(errno.EACCES, as_user, lambda: os.open(d / "f", os.O_RDONLY))
    expect(errno.EACCES, as_user, lambda: os.open(d / "f", os.O_WRONLY))


def test_unprivileged_read_only_file(d: Path) -> None:
    write_file(d / "f", b"public", mode=0o644)
    assert as_user(lambda: read_file(d / "f")) == b"public"
    expect(errno.EACCES, as_user, lambda: os.open(d / "f", os.O_RDWR))
    expect(errno.EACCES, as_user, lambda: os.open(d / "f", os.O_WRONLY | os.O_TRUNC))
    assert read_file(d / "f") == b"public"


def test_unprivileged_create_in_read_only_dir(d: Path) -> None:
    os.chmod(d, 0o755)
    expect(errno.EACCES, as_user, lambda: os.open(d / "f", RW_CREAT, 0o644))
    assert not (d / "f").exists()


def test_unprivileged_no_search_permission(d: Path) -> None:
    (d / "sub").mkdir(mode=0o744)
    write_file(d / "sub" / "f", b"x")
    expect(errno.EACCES, as_user, lambda: os.open(d / "sub" / "f", os.O_RDONLY))
    expect(errno.EACCES, as_user, lambda: os.stat(d / "sub" / "f"))


def test_unprivileged_create_owned_by_creator(d: Path) -> None:
    os.chmod(d, 0o777)
    as_user(lambda: os.close(os.open(d / "f", RW_CREAT, 0o640)))
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(st.st_mode) == 0o640
