"""chmod(2), chown(2): permission rules, the setuid/setgid bits they clear, ctime."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from tests.posix.util import ALICE, BOB, NOBODY, as_user, expect, write_file

pytestmark = pytest.mark.mount


@pytest.mark.parametrize("mode", [0o0, 0o644, 0o777, 0o1755, 0o2750, 0o4711, 0o7777])
def test_chmod_bits(d: Path, mode: int) -> None:
    write_file(d / "f")
    os.chmod(d / "f", mode)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == mode
    assert stat.S_ISREG(os.stat(d / "f").st_mode)


def test_chmod_directory(d: Path) -> None:
    os.mkdir(d / "dir")
    os.chmod(d / "dir", 0o3701)
    st = os.stat(d / "dir")
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o3701


def test_chmod_updates_ctime_only(d: Path) -> None:
    write_file(d / "f")
    os.utime(d / "f", ns=(10**9, 10**9))
    before = os.stat(d / "f").st_ctime_ns
    time.sleep(0.02)
    os.chmod(d / "f", 0o600)
    st = os.stat(d / "f")
    assert st.st_ctime_ns > before
    assert st.st_mtime_ns == 10**9


def test_fchmod(d: Path) -> None:
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o640)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o640
        os.write(fd, b"still writable")
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640


def test_chmod_through_symlink(d: Path) -> None:
    write_file(d / "f", mode=0o644)
    os.symlink("f", d / "l")
    os.chmod(d / "l", 0o600)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(d / "l").st_mode) == 0o777


def test_chmod_errors(d: Path) -> None:
    expect(errno.ENOENT, os.chmod, d / "nope", 0o644)
    write_file(d / "f")
    expect(errno.ENOTDIR, os.chmod, d / "f" / "x", 0o644)


def test_chmod_unprivileged(d: Path) -> None:
    write_file(d / "f", mode=0o666)
    expect(errno.EPERM, as_user, lambda: os.chmod(d / "f", 0o777))
    os.chown(d / "f", NOBODY, NOBODY)
    as_user(lambda: os.chmod(d / "f", 0o4700))
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o4700


def test_chmod_setgid_by_non_member_is_cleared(d: Path) -> None:
    write_file(d / "f")
    os.chown(d / "f", NOBODY, 4242)
    as_user(lambda: os.chmod(d / "f", 0o2755))
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o755
    as_user(lambda: os.chmod(d / "f", 0o2755), groups=[4242])
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o2755


def test_chown_as_root(d: Path) -> None:
    write_file(d / "f")
    os.chown(d / "f", ALICE, BOB)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (ALICE, BOB)
    os.chown(d / "f", -1, 4242)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (ALICE, 4242)
    os.chown(d / "f", -1, -1)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (ALICE, 4242)


def test_lchown(d: Path) -> None:
    write_file(d / "f")
    os.symlink("f", d / "l")
    os.lchown(d / "l", ALICE, ALICE)
    assert os.lstat(d / "l").st_uid == ALICE
    assert os.stat(d / "f").st_uid == 0


def test_chown_clears_setuid_and_setgid(d: Path) -> None:
    write_file(d / "f", mode=0o6755)
    os.chown(d / "f", ALICE, ALICE)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o755
    write_file(d / "g", mode=0o2745)  # setgid without group execute: mandatory locking mark
    os.chown(d / "g", BOB, BOB)
    assert stat.S_IMODE(os.stat(d / "g").st_mode) == 0o2745


def test_chown_directory_keeps_setgid(d: Path) -> None:
    os.mkdir(d / "dir")
    os.chmod(d / "dir", 0o2775)
    os.chown(d / "dir", ALICE, ALICE)
    assert stat.S_IMODE(os.stat(d / "dir").st_mode) == 0o2775


def test_chown_updates_ctime(d: Path) -> None:
    write_file(d / "f")
    before = os.stat(d / "f").st_ctime_ns
    time.sleep(0.02)
    os.chown(d / "f", ALICE, -1)
    assert os.stat(d / "f").st_ctime_ns > before


def test_chown_unprivileged(d: Path) -> None:
    write_file(d / "f")
    os.chown(d / "f", ALICE, ALICE)
    expect(errno.EPERM, as_user, lambda: os.chown(d / "f", BOB, -1), uid=ALICE)
    expect(errno.EPERM, as_user, lambda: os.chown(d / "f", -1, BOB), uid=ALICE)
    expect(errno.EPERM, as_user, lambda: os.chown(d / "f", -1, ALICE), uid=BOB)
    as_user(lambda: os.chown(d / "f", -1, 4242), uid=ALICE, groups=[4242])
    assert os.stat(d / "f").st_gid == 4242
    as_user(lambda: os.chown(d / "f", ALICE, -1), uid=ALICE)  # to oneself: allowed


def test_write_by_non_owner_clears_setuid(d: Path) -> None:
    os.umask(0)
    write_file(d / "f", b"x", mode=0o6777)
    as_user(lambda: os.close(os.open(d / "f", os.O_WRONLY)))
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o6777  # open alone changes nothing

    def write() -> None:
        fd = os.open(d / "f", os.O_WRONLY)
        try:
            os.write(fd, b"y")
        finally:
            os.close(fd)

    as_user(write)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o0777


def test_truncate_by_non_owner_clears_setuid(d: Path) -> None:
    write_file(d / "f", b"xyz", mode=0o4777)
    as_user(lambda: os.truncate(d / "f", 1))
    st = os.stat(d / "f")
    assert st.st_size == 1
    assert stat.S_IMODE(st.st_mode) == 0o777
