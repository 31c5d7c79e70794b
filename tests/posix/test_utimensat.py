"""utimensat(2): nanoseconds, times before 1970 and after 2038, UTIME_NOW/UTIME_OMIT, symlinks,
permission rules."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.posix.util import (
    UTIME_NOW,
    UTIME_OMIT,
    as_user,
    expect,
    utimensat,
    write_file,
)

pytestmark = pytest.mark.mount

NS = 10**9


@pytest.mark.parametrize(
    "t_ns",
    [
        0,
        1,
        1_234_567_891_123_456_789,  # 2009, every nanosecond digit
        -1,  # 1969-12-31 23:59:59.999999999
        -1_500_000_001,
        -(2**31 - 1) * NS,  # 1901-12-13
        2**31 * NS,  # 2038-01-19 03:14:08
        2**32 * NS + 999_999_999,  # 2106
    ],
)
def test_times_kept_to_the_nanosecond(d: Path, t_ns: int) -> None:
    write_file(d / "f")
    if d.parent.name == "local" and not -(2**31) * NS < t_ns < 15_032_385_535 * NS:
        pytest.skip("beyond the local file system's range")
    os.utime(d / "f", ns=(t_ns, t_ns + 7))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (t_ns, t_ns + 7)


def test_times_beyond_the_range_are_clamped_not_refused(d: Path) -> None:
    """dfs keeps signed 64-bit nanoseconds (1677..2262); like ext4 at its own limits, a time
    beyond is clamped, never an error."""
    if d.parent.name == "local":
        pytest.skip("the local file system has its own range")
    write_file(d / "f")
    os.utime(d / "f", ns=(2**34 * NS + 5, -(2**34) * NS))  # 2514 and 1425
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (2**63 - 1, -(2**63))


def test_times_survive_reopen_and_rename(d: Path) -> None:
    write_file(d / "f", b"x")
    os.utime(d / "f", ns=(-5 * NS + 1, 3 * NS - 1))
    os.rename(d / "f", d / "g")
    with open(d / "g", "rb") as f:
        f.read()
    st = os.stat(d / "g")
    assert st.st_mtime_ns == 3 * NS - 1


def test_utime_now(d: Path) -> None:
    write_file(d / "f")
    os.utime(d / "f", ns=(NS, NS))
    before = time.time_ns()
    os.utime(d / "f")
    after = time.time_ns()
    st = os.stat(d / "f")
    slack = 50_000_000  # coarse clocks
    assert before - slack <= st.st_mtime_ns <= after + slack
    assert before - slack <= st.st_atime_ns <= after + slack


def test_omit_and_now(d: Path) -> None:
    write_file(d / "f")
    os.utime(d / "f", ns=(5 * NS + 5, 7 * NS + 7))
    utimensat(d / "f", UTIME_OMIT, (9, 99))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5 * NS + 5, 9 * NS + 99)
    utimensat(d / "f", (11, 1), UTIME_OMIT)
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (11 * NS + 1, 9 * NS + 99)
    utimensat(d / "f", UTIME_NOW, UTIME_OMIT)
    st = os.stat(d / "f")
    assert st.st_atime_ns > 1_000_000_000 * NS
    assert st.st_mtime_ns == 9 * NS + 99


def test_utime_updates_ctime(d: Path) -> None:
    write_file(d / "f")
    ctime = os.stat(d / "f").st_ctime_ns
    time.sleep(0.02)
    os.utime(d / "f", ns=(NS, NS))
    assert os.stat(d / "f").st_ctime_ns > ctime
    ctime = os.stat(d / "f").st_ctime_ns
    time.sleep(0.02)
    utimensat(d / "f", UTIME_OMIT, UTIME_OMIT)  # changes nothing, not even ctime
    assert os.stat(d / "f").st_ctime_ns == ctime


def test_invalid_nanoseconds(d: Path) -> None:
    write_file(d / "f")
    expect(errno.EINVAL, utimensat, d / "f", (1, NS), (1, 0))
    expect(errno.EINVAL, utimensat, d / "f", (1, 0), (1, -1))


def test_symlink_times_nofollow(d: Path) -> None:
    write_file(d / "f")
    os.symlink("f", d / "l")
    os.utime(d / "f", ns=(NS, NS))
    os.utime(d / "l", ns=(2 * NS, 3 * NS), follow_symlinks=False)
    assert os.lstat(d / "l").st_mtime_ns == 3 * NS
    assert os.stat(d / "f").st_mtime_ns == NS
    os.utime(d / "l", ns=(4 * NS, 5 * NS))
    assert os.stat(d / "f").st_mtime_ns == 5 * NS
    assert os.lstat(d / "l").st_mtime_ns == 3 * NS


def test_directory_times(d: Path) -> None:
    os.mkdir(d / "dir")
    os.utime(d / "dir", ns=(-NS, 2**33 * NS))
    st = os.stat(d / "dir")
    assert (st.st_atime_ns, st.st_mtime_ns) == (-NS, 2**33 * NS)


def test_errors(d: Path) -> None:
    expect(errno.ENOENT, os.utime, d / "nope")
    write_file(d / "f")
    expect(errno.ENOTDIR, os.utime, d / "f" / "x")


def test_unprivileged(d: Path) -> None:
    write_file(d / "ro", mode=0o644)
    write_file(d / "rw", mode=0o666)
    expect(errno.EACCES, as_user, lambda: os.utime(d / "ro"))
    as_user(lambda: os.utime(d / "rw"))  # "now" needs write permission only
    expect(errno.EPERM, as_user, lambda: os.utime(d / "rw", ns=(NS, NS)))
    expect(errno.EPERM, as_user, lambda: utimensat(d / "rw", UTIME_NOW, (1, 0)))
    as_user(lambda: utimensat(d / "rw", UTIME_NOW, UTIME_NOW))


def test_times_set_on_descriptor_with_buffered_writes(d: Path) -> None:
    """The ``cp -p``/``tar``/``rsync`` pattern: write, set the times, close; the buffered data
    reaching the servers at close must not move mtime again."""
    fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 100_000)
        os.utime(fd, ns=(NS, 2 * NS))
    finally:
        os.close(fd)
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (NS, 2 * NS)
    assert st.st_size == 100_000


def test_mode_set_on_descriptor_with_buffered_writes(d: Path) -> None:
    fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"y" * 10_000)
        os.fchmod(fd, 0o4755)
        os.utime(fd, ns=(3 * NS, 4 * NS))
    finally:
        os.close(fd)
    st = os.stat(d / "f")
    assert oct(st.st_mode & 0o7777) == oct(0o4755)
    assert st.st_mtime_ns == 4 * NS
