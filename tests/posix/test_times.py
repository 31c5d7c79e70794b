"""Which calls update which timestamps (mtime, ctime of the file; mtime, ctime of its
directory)."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.posix.util import write_file

pytestmark = pytest.mark.mount


def _write(p: Path) -> None:
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, b"more", 2)
    finally:
        os.close(fd)


def _read(p: Path) -> None:
    with open(p, "rb") as f:
        f.read()


def _mmap_write(p: Path) -> None:
    fd = os.open(p, os.O_RDWR)
    try:
        with mmap.mmap(fd, 3, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[0:1] = b"M"
            m.flush()
    finally:
        os.close(fd)


def _removexattr(p: Path) -> None:
    os.removexattr(p, "user.r")


def _setxattr(p: Path) -> None:
    os.setxattr(p, "user.t", b"v")


OPS: dict[str, tuple[Callable[[Path], object], str]] = {
    # name: (operation on d / "f", which of f.mtime f.ctime d.mtime d.ctime change: "MCmc")
    "write": (_write, "MC"),
    "read": (_read, ""),
    "chmod": (lambda p: os.chmod(p, 0o600), "C"),
    "chown": (lambda p: os.chown(p, 4001, -1), "C"),
    "truncate": (lambda p: os.truncate(p, 1), "MC"),
    "link": (lambda p: os.link(p, p.parent / "g"), "Cmc"),
    "rename": (lambda p: os.rename(p, p.parent / "g"), "Cmc"),
    "create_sibling": (lambda p: write_file(p.parent / "g"), "mc"),
    "unlink_sibling": (lambda p: os.unlink(p.parent / "s"), "mc"),
    "mkdir_sibling": (lambda p: os.mkdir(p.parent / "g"), "mc"),
    "setxattr": (_setxattr, "C"),
    "removexattr": (_removexattr, "C"),
    "utime": (lambda p: os.utime(p, ns=(3 * 10**9, 3 * 10**9)), "MC"),
    "mmap_write": (_mmap_write, "MC"),
    "symlink_sibling": (lambda p: os.symlink("f", p.parent / "g"), "mc"),
    "rmdir_sibling": (lambda p: os.rmdir(p.parent / "s.d"), "mc"),
    "stat": (os.stat, ""),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_times_changed_by(d: Path, op: str) -> None:
    fn, changes = OPS[op]
    f = d / "f"
    write_file(f, b"abc")
    write_file(d / "s")
    os.mkdir(d / "s.d")
    os.setxattr(f, "user.r", b"")
    os.utime(f, ns=(10**9, 10**9))
    os.utime(d, ns=(10**9, 10**9))
    time.sleep(0.02)
    before_f, before_d = os.stat(f), os.stat(d)
    time.sleep(0.02)
    fn(f)
    after_f = os.stat(f if f.exists() else d / "g")
    after_d = os.stat(d)
    got = ""
    got += "M" if after_f.st_mtime_ns != before_f.st_mtime_ns else ""
    got += "C" if after_f.st_ctime_ns != before_f.st_ctime_ns else ""
    got += "m" if after_d.st_mtime_ns != before_d.st_mtime_ns else ""
    got += "c" if after_d.st_ctime_ns != before_d.st_ctime_ns else ""
    assert got == changes, f"{op}: expected {changes!r} to change, got {got!r}"
    for a, b in ((after_f, before_f), (after_d, before_d)):
        assert a.st_mtime_ns >= b.st_mtime_ns
        assert a.st_ctime_ns >= b.st_ctime_ns


def test_read_updates_atime_relatime(d: Path) -> None:
    """POSIX: read(2) marks st_atime for update; under Linux's default relatime it is updated
    when it is not newer than mtime or ctime."""
    write_file(d / "f", b"abc")
    os.utime(d / "f", ns=(10**9, 2 * 10**9))
    _read(d / "f")
    assert os.stat(d / "f").st_atime_ns > 2 * 10**9


def test_new_file_times(d: Path) -> None:
    os.utime(d, ns=(10**9, 10**9))
    before = time.time_ns() - 50_000_000
    write_file(d / "f")
    st = os.stat(d / "f")
    assert st.st_atime_ns >= before
    assert st.st_mtime_ns >= before
    assert st.st_ctime_ns >= before
    assert os.stat(d).st_mtime_ns >= before
