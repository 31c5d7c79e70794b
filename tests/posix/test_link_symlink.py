"""link(2), symlink(2), readlink(2): link counts, targets kept byte for byte, ELOOP."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.posix.util import NOBODY, as_user, expect, read_file, write_file

pytestmark = pytest.mark.mount


def test_link(d: Path) -> None:
    write_file(d / "f", b"shared")
    os.utime(d / "f", ns=(10**9, 10**9))
    os.utime(d, ns=(10**9, 10**9))
    ctime = os.stat(d / "f").st_ctime_ns
    os.link(d / "f", d / "g")
    a, b = os.stat(d / "f"), os.stat(d / "g")
    assert a.st_ino == b.st_ino
    assert a.st_nlink == b.st_nlink == 2
    assert a.st_ctime_ns >= ctime
    assert a.st_mtime_ns == 10**9
    assert os.stat(d).st_mtime_ns > 10**9
    with open(d / "g", "r+b") as f:
        f.write(b"SH")
    assert read_file(d / "f") == b"SHared"


def test_link_counts_many(d: Path) -> None:
    write_file(d / "f")
    os.mkdir(d / "sub")
    for i in range(5):
        os.link(d / "f", d / "sub" / f"l{i}")
    assert os.stat(d / "f").st_nlink == 6
    os.unlink(d / "f")
    os.rename(d / "sub" / "l0", d / "back")
    assert os.stat(d / "back").st_nlink == 5
    for i in range(1, 5):
        os.unlink(d / "sub" / f"l{i}")
    assert os.stat(d / "back").st_nlink == 1


def test_link_errors(d: Path) -> None:
    write_file(d / "f")
    write_file(d / "g")
    os.mkdir(d / "dir")
    expect(errno.EEXIST, os.link, d / "f", d / "g")
    expect(errno.EEXIST, os.link, d / "f", d / "dir")
    expect(errno.EPERM, os.link, d / "dir", d / "dir2")
    expect(errno.ENOENT, os.link, d / "nope", d / "x")
    expect(errno.ENOENT, os.link, d / "f", d / "nodir" / "x")
    expect(errno.ENOTDIR, os.link, d / "f", d / "g" / "x")
    expect(errno.ENAMETOOLONG, os.link, d / "f", d / ("x" * 256))
    assert os.stat(d / "f").st_nlink == 1


def test_link_to_symlink_links_the_symlink(d: Path) -> None:
    os.symlink("target", d / "l")
    os.link(d / "l", d / "l2", follow_symlinks=False)
    st = os.lstat(d / "l2")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_nlink == 2
    assert os.readlink(d / "l2") == "target"


def test_link_unprivileged(d: Path) -> None:
    os.chmod(d, 0o777)
    write_file(d / "theirs", mode=0o600)
    # fs.protected_hardlinks: no hard link to a file one can neither read nor write
    protected = Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    code = errno.EPERM if protected else 0
    expect(code, as_user, lambda: os.link(d / "theirs", d / "mine"))
    write_file(d / "public", mode=0o666)
    as_user(lambda: os.link(d / "public", d / "public2"))


def test_symlink(d: Path) -> None:
    os.symlink("some/where/../else", d / "l")
    st = os.lstat(d / "l")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("some/where/../else")
    assert stat.S_IMODE(st.st_mode) == 0o777
    assert os.readlink(d / "l") == "some/where/../else"
    expect(errno.ENOENT, os.stat, d / "l")


def test_symlink_odd_bytes(d: Path) -> None:
    target = b"\x01\xff weird \n name/\xc3"
    os.symlink(target, bytes(d / "l"))
    assert os.readlink(bytes(d / "l")) == target


def test_symlink_long_target(d: Path) -> None:
    target = "/".join(["t" * 100] * 41)[:4095]
    os.symlink(target, d / "l")
    assert os.readlink(d / "l") == target
    assert os.lstat(d / "l").st_size == 4095
    expect(errno.ENAMETOOLONG, os.symlink, target + "x", d / "m")


def test_symlink_relative_to_its_directory(d: Path) -> None:
    os.mkdir(d / "sub")
    write_file(d / "sub" / "f", b"inner")
    write_file(d / "f", b"outer")
    os.symlink("f", d / "sub" / "l")
    os.symlink("../f", d / "sub" / "up")
    assert read_file(d / "sub" / "l") == b"inner"
    assert read_file(d / "sub" / "up") == b"outer"


def test_symlink_to_directory(d: Path) -> None:
    os.mkdir(d / "dir")
    write_file(d / "dir" / "f", b"via link")
    os.symlink("dir", d / "l")
    assert read_file(d / "l" / "f") == b"via link"
    assert os.listdir(d / "l") == ["f"]


def test_symlink_errors(d: Path) -> None:
    write_file(d / "f")
    os.mkdir(d / "dir")
    expect(errno.EEXIST, os.symlink, "x", d / "f")
    expect(errno.EEXIST, os.symlink, "x", d / "dir")
    expect(errno.ENOENT, os.symlink, "x", d / "nodir" / "l")
    expect(errno.ENOTDIR, os.symlink, "x", d / "f" / "l")
    expect(errno.ENAMETOOLONG, os.symlink, "x", d / ("l" * 256))
    expect(errno.ENOENT, os.symlink, "", d / "empty")
    expect(errno.EINVAL, os.readlink, d / "f")
    expect(errno.EINVAL, os.readlink, d / "dir")
    expect(errno.ENOENT, os.readlink, d / "nope")


def test_symlink_loops(d: Path) -> None:
    os.symlink("self", d / "self")
    expect(errno.ELOOP, os.stat, d / "self")
    os.symlink("b", d / "a")
    os.symlink("a", d / "b")
    expect(errno.ELOOP, os.stat, d / "a")
    expect(errno.ELOOP, os.listdir, d / "a")
    assert os.readlink(d / "a") == "b"


def test_symlink_chain_limit(d: Path) -> None:
    write_file(d / "f", b"end")
    os.symlink("f", d / "l0")
    for i in range(1, 41):
        os.symlink(f"l{i - 1}", d / f"l{i}")
    assert read_file(d / "l39") == b"end"  # 40 links followed: the limit
    expect(errno.ELOOP, os.stat, d / "l40")


def test_symlink_unprivileged_owner(d: Path) -> None:
    os.chmod(d, 0o777)
    as_user(lambda: os.symlink("t", d / "l"))
    assert os.lstat(d / "l").st_uid == NOBODY
    os.chmod(d, 0o755)
    expect(errno.EACCES, as_user, lambda: os.symlink("t", d / "m"))
