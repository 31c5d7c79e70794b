"""read(2)/write(2)/lseek(2): holes, files above 4 GiB, short reads at EOF, mmap."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.posix.util import expect, read_file, write_file

pytestmark = pytest.mark.mount

GiB = 1 << 30


def test_sparse_file_above_4_gib(d: Path) -> None:
    fd = os.open(d / "big", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.lseek(fd, 5 * GiB, os.SEEK_SET) == 5 * GiB
        os.write(fd, b"far away")
        assert os.fstat(fd).st_size == 5 * GiB + 8
        os.pwrite(fd, b"across", 4 * GiB - 3)  # straddles the 32-bit boundary
    finally:
        os.close(fd)
    assert os.stat(d / "big").st_size == 5 * GiB + 8
    fd = os.open(d / "big", os.O_RDONLY)
    try:
        assert os.pread(fd, 8, 5 * GiB) == b"far away"
        assert os.pread(fd, 100, 5 * GiB + 4) == b"away"
        assert os.pread(fd, 6, 4 * GiB - 3) == b"across"
        assert os.pread(fd, 4096, 2 * GiB) == bytes(4096)
        assert os.pread(fd, 4096, 5 * GiB - 4096) == bytes(4096)
        assert os.pread(fd, 16, 4 * GiB - 8) == bytes(5) + b"across" + bytes(5)
        assert os.pread(fd, 10, 6 * GiB) == b""
        assert os.lseek(fd, 0, os.SEEK_END) == 5 * GiB + 8
    finally:
        os.close(fd)
    os.truncate(d / "big", 4 * GiB + 1)
    assert os.stat(d / "big").st_size == 4 * GiB + 1
    with open(d / "big", "rb") as f:
        f.seek(4 * GiB - 3)
        assert f.read() == b"across"[:4]
    os.unlink(d / "big")


def test_hole_in_the_middle(d: Path) -> None:
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"A" * 10, 0)
        os.pwrite(fd, b"B" * 10, 3 * 1024 * 1024)
    finally:
        os.close(fd)
    data = read_file(d / "f")
    assert len(data) == 3 * 1024 * 1024 + 10
    assert data[:10] == b"A" * 10
    assert data[10 : 3 * 1024 * 1024] == bytes(3 * 1024 * 1024 - 10)
    assert data[-10:] == b"B" * 10


def test_read_at_and_past_eof(d: Path) -> None:
    write_file(d / "f", b"12345")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"12345"
        assert os.read(fd, 100) == b""
        assert os.pread(fd, 10, 3) == b"45"
        assert os.pread(fd, 10, 1000) == b""
        assert os.lseek(fd, 100, os.SEEK_SET) == 100
        assert os.read(fd, 10) == b""
        expect(errno.EINVAL, os.lseek, fd, -1, os.SEEK_SET)
    finally:
        os.close(fd)


def test_overwrite_in_place(d: Path) -> None:
    write_file(d / "f", b"a" * 100)
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"XYZ", 50)
        assert os.pread(fd, 100, 0) == b"a" * 50 + b"XYZ" + b"a" * 47
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert os.stat(d / "f").st_size == 100


def test_two_descriptors_see_each_other(d: Path) -> None:
    a = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    b = os.open(d / "f", os.O_RDWR)
    try:
        os.write(a, b"from a")
        assert os.pread(b, 10, 0) == b"from a"
        os.pwrite(b, b"B", 0)
        assert os.pread(a, 10, 0) == b"Brom a"
    finally:
        os.close(a)
        os.close(b)


def test_write_to_directory_descriptor(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        expect(errno.EISDIR, os.read, fd, 10)
        expect(errno.EBADF, os.write, fd, b"x")
    finally:
        os.close(fd)


def test_mmap_shared_write_and_read(d: Path) -> None:
    write_file(d / "f", bytes(3 * 4096 + 100))
    fd = os.open(d / "f", os.O_RDWR)
    try:
        with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[4000:4010] = b"0123456789"
            m[-5:] = b"tail!"
            m.flush()
        assert os.pread(fd, 10, 4000) == b"0123456789"
    finally:
        os.close(fd)
    data = read_file(d / "f")
    assert data[4000:4010] == b"0123456789"
    assert data[-5:] == b"tail!"
    assert len(data) == 3 * 4096 + 100
    with open(d / "f", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[4000:4010] == b"0123456789"


def test_contents_survive_reopen(d: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 17)
    write_file(d / "f", payload)
    assert read_file(d / "f") == payload
    assert os.stat(d / "f").st_size == len(payload)


def test_size_visible_before_close(d: Path) -> None:
    fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"z" * 12345)
        assert os.stat(d / "f").st_size == 12345
        assert os.fstat(fd).st_size == 12345
        with open(d / "f", "rb") as other:
            assert other.read() == b"z" * 12345
    finally:
        os.close(fd)


def test_fsync_directory(d: Path) -> None:
    write_file(d / "f")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_statvfs_name_limit(d: Path) -> None:
    sv = os.statvfs(d)
    assert sv.f_namemax == 255
    assert sv.f_bsize > 0
    assert sv.f_blocks >= sv.f_bfree >= sv.f_bavail


def test_copy_file_range(d: Path) -> None:
    payload = os.urandom(300_000)
    write_file(d / "src", payload)
    src = os.open(d / "src", os.O_RDONLY)
    dst = os.open(d / "dst", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        copied = 0
        for _ in range(100):
            n = os.copy_file_range(src, dst, 1 << 20)
            if n == 0:
                break
            copied += n
    finally:
        os.close(src)
        os.close(dst)
    assert copied == len(payload)
    assert read_file(d / "dst") == payload


def test_exec_from_the_file_system(d: Path) -> None:
    shutil.copy("/bin/true", d / "true")
    os.chmod(d / "true", 0o755)
    write_file(d / "script.sh", b"#!/bin/sh\necho hello $1\n", mode=0o755)
    assert subprocess.run([str(d / "true")], check=False).returncode == 0
    out = subprocess.run([str(d / "script.sh"), "there"], capture_output=True, check=True)
    assert out.stdout == b"hello there\n"
    write_file(d / "noexec.sh", b"#!/bin/sh\n", mode=0o644)
    expect(errno.EACCES, subprocess.run, [str(d / "noexec.sh")])


def test_text_file_busy(d: Path) -> None:
    shutil.copy("/bin/sleep", d / "sleep")
    os.chmod(d / "sleep", 0o755)
    proc = subprocess.Popen([str(d / "sleep"), "5"])
    try:
        time.sleep(0.3)
        expect(errno.ETXTBSY, os.open, d / "sleep", os.O_WRONLY)
    finally:
        proc.kill()
        proc.wait()
