"""Reply, notification and dirent encoding; struct sizes against linux/fuse.h."""

from __future__ import annotations

import stat
import struct

import pytest

from dfs.fuse import abi, replies
from dfs.fuse.model import Attr, Entry, FileLock, OpenReply, Statfs

pytestmark = pytest.mark.unit

ATTR = Attr(
    ino=5,
    size=12,
    blocks=1,
    atime_ns=1_700_000_000_123_456_789,
    mtime_ns=2 * 10**9 + 7,
    ctime_ns=-1,  # one nanosecond before the epoch
    mode=stat.S_IFREG | 0o644,
    nlink=1,
    uid=1000,
    gid=100,
)


@pytest.mark.parametrize(
    ("struct_", "c_size"),
    [
        # sizeof() of each structure, from compiling against /usr/include/linux/fuse.h
        (abi.IN_HEADER, 40),
        (abi.OUT_HEADER, 16),
        (abi.ATTR, 88),
        (abi.KSTATFS, 80),
        (abi.SETATTR_IN, 88),
        (abi.LK_IN, 48),
        (abi.INIT_IN, 64),
        (abi.INIT_OUT, 64),
        (abi.READ_IN, 40),
        (abi.WRITE_IN, 40),
        (abi.RELEASE_IN, 24),
        (abi.IOCTL_IN, 32),
        (abi.COPY_FILE_RANGE_IN, 56),
        (abi.NOTIFY_RETRIEVE_IN, 40),
        (abi.NOTIFY_INVAL_ENTRY_OUT, 16),
        (abi.NOTIFY_INVAL_INODE_OUT, 24),
        (abi.DIRENT_HEAD, 24),
    ],
)
def test_struct_sizes(struct_: struct.Struct, c_size: int) -> None:
    assert struct_.size == c_size


def test_composite_sizes() -> None:
    assert abi.ENTRY_OUT_SIZE == 128  # sizeof(struct fuse_entry_out)
    assert abi.ATTR_OUT_SIZE == 104  # sizeof(struct fuse_attr_out)
    assert abi.DIRENTPLUS_NAME_OFFSET == 152  # sizeof(struct fuse_direntplus)


def test_error_reply_is_header_only() -> None:
    msg = replies.error_reply(9, 2)
    assert msg == (
        b"\x10\x00\x00\x00"  # len = 16
        b"\xfe\xff\xff\xff"  # error = -2 (ENOENT)
        b"\x09\x00\x00\x00\x00\x00\x00\x00"  # unique = 9
    )
    with pytest.raises(ValueError, match="positive"):
        replies.error_reply(9, 0)


def test_empty_success_reply() -> None:
    assert replies.reply(3) == struct.pack("<IiQ", 16, 0, 3)


def test_attr_encoding_splits_times() -> None:
    raw = replies.encode_attr(ATTR)
    fields = abi.ATTR.unpack(raw)
    assert fields[:3] == (5, 12, 1)
    assert fields[3:6] == (1_700_000_000, 2, -1)  # atime mtime ctime seconds
    assert fields[6:9] == (123_456_789, 7, 999_999_999)  # nanoseconds
    assert fields[9:15] == (stat.S_IFREG | 0o644, 1, 1000, 100, 0, 65536)


def test_entry_reply_layout() -> None:
    msg = replies.entry_reply(11, Entry(ATTR, generation=3, entry_timeout=1.5, attr_timeout=0))
    assert len(msg) == 16 + 128
    length, error, unique = abi.OUT_HEADER.unpack_from(msg)
    assert (length, error, unique) == (144, 0, 11)
    assert abi.ENTRY_OUT_HEAD.unpack_from(msg, 16) == (5, 3, 1, 0, 500_000_000, 0)
    assert msg[16 + 40 :] == replies.encode_attr(ATTR)


def test_attr_reply_and_timeouts() -> None:
    msg = replies.attr_reply(1, ATTR, float("inf"))
    valid, nsec, _dummy = abi.ATTR_OUT_HEAD.unpack_from(msg, 16)
    assert (valid, nsec) == (2**31, 0)
    assert replies.split_timeout(-3) == (0, 0)
    assert replies.split_timeout(float("nan")) == (0, 0)
    assert replies.split_timeout(0.25) == (0, 250_000_000)


def test_open_and_create_replies() -> None:
    opened = OpenReply(fh=77, direct_io=True, keep_cache=True)
    msg = replies.open_reply(2, opened)
    assert abi.OPEN_OUT.unpack_from(msg, 16) == (77, abi.FOPEN_DIRECT_IO | abi.FOPEN_KEEP_CACHE, 0)
    msg = replies.create_reply(2, Entry(ATTR), OpenReply(fh=1, nonseekable=True))
    assert len(msg) == 16 + 128 + 16
    assert abi.OPEN_OUT.unpack_from(msg, 16 + 128) == (1, abi.FOPEN_NONSEEKABLE, 0)


def test_small_replies() -> None:
    assert replies.write_reply(1, 4096)[16:] == struct.pack("<II", 4096, 0)
    assert replies.getxattr_size_reply(1, 33)[16:] == struct.pack("<II", 33, 0)
    assert replies.lseek_reply(1, 2**40)[16:] == struct.pack("<Q", 2**40)
    lock = FileLock(start=1, end=9, type=abi.F_RDLCK, pid=5)
    assert replies.lk_reply(1, lock)[16:] == struct.pack("<QQII", 1, 9, 0, 5)
    st = replies.statfs_reply(1, Statfs(blocks=10, bfree=5, bavail=4, files=3, ffree=2))
    assert len(st) == 16 + 80
    assert struct.unpack_from("<QQQQQIII", st, 16) == (10, 5, 4, 3, 2, 65536, 255, 65536)


def test_init_reply_full_and_compat() -> None:
    kwargs = dict(
        major=7,
        minor=38,
        max_readahead=131072,
        flags=abi.FUSE_ASYNC_READ | abi.FUSE_INIT_EXT | abi.FUSE_SECURITY_CTX,
        max_background=64,
        congestion_threshold=48,
        max_write=1 << 20,
        time_gran=1,
        max_pages=256,
    )
    msg = replies.init_reply(2, **kwargs)
    assert len(msg) == 16 + 64
    fields = abi.INIT_OUT.unpack_from(msg, 16)
    low_flags = abi.FUSE_ASYNC_READ | abi.FUSE_INIT_EXT
    # major minor max_readahead flags max_background congestion max_write time_gran max_pages
    # map_alignment flags2 (FUSE_SECURITY_CTX is bit 32 -> bit 0 of flags2)
    assert fields == (7, 38, 131072, low_flags, 64, 48, 1 << 20, 1, 256, 0, 1)
    kwargs["minor"] = 22
    assert len(replies.init_reply(2, **kwargs)) == 16 + 24


def test_notify_inval_inode() -> None:
    msg = replies.notify_inval_inode(5, -1, 0)
    assert msg == (
        b"\x28\x00\x00\x00"  # len = 40
        b"\x02\x00\x00\x00"  # error = FUSE_NOTIFY_INVAL_INODE
        b"\x00\x00\x00\x00\x00\x00\x00\x00"  # unique = 0 (notification)
        b"\x05\x00\x00\x00\x00\x00\x00\x00"  # ino = 5
        b"\xff\xff\xff\xff\xff\xff\xff\xff"  # off = -1 (attributes only)
        b"\x00\x00\x00\x00\x00\x00\x00\x00"  # len = 0
    )


def test_notify_inval_entry_and_delete() -> None:
    msg = replies.notify_inval_entry(1, b"abc")
    assert msg == struct.pack("<IiQ", 16 + 16 + 4, 3, 0) + struct.pack("<QII", 1, 3, 0) + b"abc\0"
    msg = replies.notify_delete(1, 9, b"x")
    assert msg == struct.pack("<IiQ", 16 + 24 + 2, 6, 0) + struct.pack("<QQII", 1, 9, 1, 0) + b"x\0"
    msg = replies.notify_store(4, 100, b"data")
    assert msg[16:] == struct.pack("<QQII", 4, 100, 4, 0) + b"data"
    for bad in (b"", b"a/b", b"a\0b", b"x" * 1025):
        with pytest.raises(ValueError, match="invalid file name"):
            replies.notify_inval_entry(1, bad)


def test_dirent_packing_and_alignment() -> None:
    buf = replies.DirBuffer(4096)
    assert buf.add(1, b".", stat.S_IFDIR | 0o755, 1)
    assert buf.add(7, b"abcdefgh", stat.S_IFREG, 2)  # 24 + 8 = 32: no padding
    assert buf.add(8, b"link", stat.S_IFLNK | 0o777, 3)  # 24 + 4 -> 32
    raw = buf.getvalue()
    assert len(raw) == 32 + 32 + 32 == buf.size
    assert raw[:32] == (
        b"\x01\x00\x00\x00\x00\x00\x00\x00"  # ino = 1
        b"\x01\x00\x00\x00\x00\x00\x00\x00"  # off = 1 (cookie of the next entry)
        b"\x01\x00\x00\x00"  # namelen = 1
        b"\x04\x00\x00\x00"  # type = DT_DIR (S_IFDIR >> 12)
        b".\x00\x00\x00\x00\x00\x00\x00"  # name + zero padding to 8 bytes
    )
    assert struct.unpack_from("<QQII", raw, 64) == (8, 3, 4, 10)  # DT_LNK
    assert raw[64 + 24 : 96] == b"link\0\0\0\0"


def test_dirbuffer_stops_when_full() -> None:
    buf = replies.DirBuffer(64)
    assert buf.add(1, b"a", stat.S_IFREG, 1)
    assert buf.add(2, b"b", stat.S_IFREG, 2)
    assert not buf.add(3, b"c", stat.S_IFREG, 3)  # would need 96 bytes
    assert len(buf) == 2 and buf.size == 64


def test_direntplus_packing() -> None:
    buf = replies.DirPlusBuffer(1000)
    assert buf.add(Entry(ATTR, entry_timeout=1, attr_timeout=1), b"hello", 5)
    raw = buf.getvalue()
    assert len(raw) == abi.rec_align(152 + 5) == 160
    assert raw[:128] == replies.encode_entry_out(Entry(ATTR, entry_timeout=1, attr_timeout=1))
    assert struct.unpack_from("<QQII", raw, 128) == (5, 5, 5, stat.S_IFREG >> 12)
    assert raw[152:] == b"hello\0\0\0"
    small = replies.DirPlusBuffer(159)
    assert not small.add(Entry(ATTR), b"hello", 5)
    assert small.getvalue() == b""


def test_dirent_rejects_bad_names() -> None:
    buf = replies.DirBuffer(4096)
    with pytest.raises(ValueError, match="invalid file name"):
        buf.add(1, b"a/b", stat.S_IFREG, 1)
