"""truncate(2), ftruncate(2): sizes, zeros after growing, errors, times."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.posix.util import as_user, expect, read_file, write_file

pytestmark = pytest.mark.mount


def test_grow_reads_zeros(d: Path) -> None:
    write_file(d / "f", b"abc")
    os.truncate(d / "f", 10)
    assert os.stat(d / "f").st_size == 10
    assert read_file(d / "f") == b"abc" + bytes(7)


def test_shrink(d: Path) -> None:
    write_file(d / "f", b"0123456789")
    os.truncate(d / "f", 4)
    assert os.stat(d / "f").st_size == 4
    assert read_file(d / "f") == b"0123"


def test_shrink_then_grow_exposes_zeros(d: Path) -> None:
    write_file(d / "f", b"x" * 100_000)
    os.truncate(d / "f", 10)
    os.truncate(d / "f", 100_000)
    assert read_file(d / "f") == b"x" * 10 + bytes(99_990)


def test_shrink_then_write_beyond(d: Path) -> None:
    write_file(d / "f", b"y" * 5000)
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
        os.pwrite(fd, b"end", 4000)
        assert os.pread(fd, 5000, 0) == b"y" * 100 + bytes(3900) + b"end"
    finally:
        os.close(fd)
    assert read_file(d / "f") == b"y" * 100 + bytes(3900) + b"end"


def test_truncate_to_zero_then_append(d: Path) -> None:
    write_file(d / "f", b"first")
    fd = os.open(d / "f", os.O_RDWR | os.O_APPEND)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, b"second")
    finally:
        os.close(fd)
    assert read_file(d / "f") == b"second"


def test_ftruncate_with_unflushed_writes(d: Path) -> None:
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"a" * 3000)
        os.ftruncate(fd, 1000)
        assert os.fstat(fd).st_size == 1000
        os.pwrite(fd, b"b", 1999)
        assert os.fstat(fd).st_size == 2000
    finally:
        os.close(fd)
    assert read_file(d / "f") == b"a" * 1000 + bytes(999) + b"b"


def test_truncate_by_path_while_open(d: Path) -> None:
    write_file(d / "f", b"z" * 1000)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 0) == b"z" * 10
        os.truncate(d / "f", 5)
        assert os.pread(fd, 1000, 0) == b"z" * 5
    finally:
        os.close(fd)


def test_truncate_updates_times(d: Path) -> None:
    write_file(d / "f", b"abc")
    os.utime(d / "f", ns=(10**9, 10**9))
    ctime = os.stat(d / "f").st_ctime_ns
    time.sleep(0.02)
    os.truncate(d / "f", 1)
    st = os.stat(d / "f")
    assert st.st_mtime_ns > 10**9
    assert st.st_ctime_ns > ctime


def test_truncate_errors(d: Path) -> None:
    write_file(d / "f", b"abc")
    os.mkdir(d / "dir")
    expect(errno.EINVAL, os.truncate, d / "f", -1)
    expect(errno.EISDIR, os.truncate, d / "dir", 0)
    expect(errno.ENOENT, os.truncate, d / "nope", 0)
    expect(errno.ENOTDIR, os.truncate, d / "f" / "x", 0)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        expect(errno.EINVAL, os.ftruncate, fd, 0)
    finally:
        os.close(fd)
    assert read_file(d / "f") == b"abc"


def test_truncate_unprivileged(d: Path) -> None:
    write_file(d / "ro", b"abc", mode=0o644)
    write_file(d / "rw", b"abc", mode=0o666)
    expect(errno.EACCES, as_user, lambda: os.truncate(d / "ro", 0))
    as_user(lambda: os.truncate(d / "rw", 1))
    assert read_file(d / "ro") == b"abc"
    assert read_file(d / "rw") == b"a"
