"""readdir(3)/getdents(2): every entry exactly once, d_type and d_ino, "." and "..", entries
removed while reading."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.posix.util import expect, write_file

pytestmark = pytest.mark.mount


def test_empty_directory(d: Path) -> None:
    assert os.listdir(d) == []
    out = subprocess.run(["ls", "-a1f", str(d)], capture_output=True, text=True, check=True)
    assert sorted(out.stdout.split()) == [".", ".."]


def test_entries_and_types(d: Path) -> None:
    write_file(d / "file")
    os.mkdir(d / "dir")
    os.symlink("file", d / "link")
    os.mkfifo(d / "fifo")
    os.mknod(d / "sock", stat.S_IFSOCK | 0o600)
    kinds = {}
    with os.scandir(d) as it:
        for e in it:
            st = os.lstat(e.path)
            assert e.inode() == st.st_ino, e.name
            kinds[e.name] = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode)
            assert e.is_dir(follow_symlinks=False) == stat.S_ISDIR(st.st_mode)
            assert e.is_symlink() == stat.S_ISLNK(st.st_mode)
            assert e.is_file(follow_symlinks=False) == stat.S_ISREG(st.st_mode)
    assert kinds == {
        "file": stat.S_IFREG,
        "dir": stat.S_IFDIR,
        "link": stat.S_IFLNK,
        "fifo": stat.S_IFIFO,
        "sock": stat.S_IFSOCK,
    }


def test_many_entries_each_once(d: Path) -> None:
    names = {f"entry-{i:04d}-{'x' * (i % 50)}" for i in range(600)}
    for n in names:
        os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644))
    listed = os.listdir(d)
    assert len(listed) == len(names)
    assert set(listed) == names


def test_unlink_while_reading(d: Path) -> None:
    names = {f"f{i:03d}" for i in range(300)}
    for n in names:
        os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644))
    seen: list[str] = []
    with os.scandir(d) as it:
        for e in it:
            seen.append(e.name)
            os.unlink(e.path)
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert set(seen) == names, "entries never removed must be returned"
    assert os.listdir(d) == []


def test_odd_names(d: Path) -> None:
    names = [b"\xff\xfe", b"new\nline", b"sp ace", b"-dash", "ünï©ødé".encode(), b"a" * 255]
    for n in names:
        write_file(Path(os.fsdecode(bytes(d) + b"/" + n)))
    assert sorted(os.listdir(bytes(d))) == sorted(names)


def test_readdir_errors(d: Path) -> None:
    write_file(d / "f")
    expect(errno.ENOTDIR, os.listdir, d / "f")
    expect(errno.ENOENT, os.listdir, d / "nope")


def test_listing_after_rename_and_rmdir(d: Path) -> None:
    os.mkdir(d / "a")
    write_file(d / "a" / "x")
    os.rename(d / "a" / "x", d / "y")
    os.rmdir(d / "a")
    assert os.listdir(d) == ["y"]


def test_long_names_across_many_reply_pages(d: Path) -> None:
    names = {f"{i:03d}".ljust(255, "n") for i in range(150)}
    for n in names:
        os.mkdir(d / n)
    listed = os.listdir(d)
    assert len(listed) == len(names)
    assert set(listed) == names
    assert os.stat(d).st_nlink == 152
