"""The kernel FUSE ABI: constants and one ``struct.Struct`` per structure of ``linux/fuse.h``.

Everything here mirrors ``/usr/include/linux/fuse.h`` (protocol 7.38) field by field.  All
structures are little-endian (``<``) with the explicit padding fields of the header, so the
sizes below equal ``sizeof`` in C; ``tests/fuse/test_abi.py`` pins every size.

Times in ``fuse_attr`` / ``fuse_setattr_in`` are declared ``uint64_t`` in C but the kernel
treats them as signed seconds; they are packed as ``q`` (same width) so pre-1970 times work.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

#: Protocol version we implement (``FUSE_KERNEL_VERSION``.``FUSE_KERNEL_MINOR_VERSION``).
KERNEL_VERSION: Final = 7
KERNEL_MINOR_VERSION: Final = 38
#: Oldest kernel minor we accept: from 7.12 on no request carries a "compat" short layout
#: that we would have to special-case (mknod, write, statfs, entry/attr out).
MIN_KERNEL_MINOR_VERSION: Final = 12
#: Before 7.23 ``fuse_init_out`` is only the first 24 bytes.
INIT_OUT_FULL_SINCE_MINOR: Final = 23
COMPAT_22_INIT_OUT_SIZE: Final = 24
#: Before 7.36 ``fuse_init_in`` has no ``flags2``/``unused`` tail (16 bytes).
COMPAT_INIT_IN_SIZE: Final = 16
#: ``fuse_setxattr_in`` without ``FUSE_SETXATTR_EXT`` is the 8-byte compat layout.
COMPAT_SETXATTR_IN_SIZE: Final = 8

ROOT_ID: Final = 1
MIN_READ_BUFFER: Final = 8192
#: The kernel's cap on ``max_pages`` (``FUSE_MAX_MAX_PAGES``); 256 pages = 1 MiB requests.
MAX_MAX_PAGES: Final = 256


class Opcode(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    #: Newer than the 7.38 header, but 6.x kernels send it regardless; answered ENOSYS.
    STATX = 52


class NotifyCode(enum.IntEnum):
    POLL = 1
    INVAL_INODE = 2
    INVAL_ENTRY = 3
    STORE = 4
    RETRIEVE = 5
    DELETE = 6


# ---- INIT flags (64-bit view: bits 32..63 travel in flags2 when FUSE_INIT_EXT is set) ----
FUSE_ASYNC_READ: Final = 1 << 0
FUSE_POSIX_LOCKS: Final = 1 << 1
FUSE_FILE_OPS: Final = 1 << 2
FUSE_ATOMIC_O_TRUNC: Final = 1 << 3
FUSE_EXPORT_SUPPORT: Final = 1 << 4
FUSE_BIG_WRITES: Final = 1 << 5
FUSE_DONT_MASK: Final = 1 << 6
FUSE_SPLICE_WRITE: Final = 1 << 7
FUSE_SPLICE_MOVE: Final = 1 << 8
FUSE_SPLICE_READ: Final = 1 << 9
FUSE_FLOCK_LOCKS: Final = 1 << 10
FUSE_HAS_IOCTL_DIR: Final = 1 << 11
FUSE_AUTO_INVAL_DATA: Final = 1 << 12
FUSE_DO_READDIRPLUS: Final = 1 << 13
FUSE_READDIRPLUS_AUTO: Final = 1 << 14
FUSE_ASYNC_DIO: Final = 1 << 15
FUSE_WRITEBACK_CACHE: Final = 1 << 16
FUSE_NO_OPEN_SUPPORT: Final = 1 << 17
FUSE_PARALLEL_DIROPS: Final = 1 << 18
FUSE_HANDLE_KILLPRIV: Final = 1 << 19
FUSE_POSIX_ACL: Final = 1 << 20
FUSE_ABORT_ERROR: Final = 1 << 21
FUSE_MAX_PAGES: Final = 1 << 22
FUSE_CACHE_SYMLINKS: Final = 1 << 23
FUSE_NO_OPENDIR_SUPPORT: Final = 1 << 24
FUSE_EXPLICIT_INVAL_DATA: Final = 1 << 25
FUSE_MAP_ALIGNMENT: Final = 1 << 26
FUSE_SUBMOUNTS: Final = 1 << 27
FUSE_HANDLE_KILLPRIV_V2: Final = 1 << 28
FUSE_SETXATTR_EXT: Final = 1 << 29
FUSE_INIT_EXT: Final = 1 << 30
FUSE_INIT_RESERVED: Final = 1 << 31
FUSE_SECURITY_CTX: Final = 1 << 32
FUSE_HAS_INODE_DAX: Final = 1 << 33
FUSE_HAS_EXPIRE_ONLY: Final = 1 << 35

# ---- setattr valid bits ----
FATTR_MODE: Final = 1 << 0
FATTR_UID: Final = 1 << 1
FATTR_GID: Final = 1 << 2
FATTR_SIZE: Final = 1 << 3
FATTR_ATIME: Final = 1 << 4
FATTR_MTIME: Final = 1 << 5
FATTR_FH: Final = 1 << 6
FATTR_ATIME_NOW: Final = 1 << 7
FATTR_MTIME_NOW: Final = 1 << 8
FATTR_LOCKOWNER: Final = 1 << 9
FATTR_CTIME: Final = 1 << 10
FATTR_KILL_SUIDGID: Final = 1 << 11

# ---- open reply flags ----
FOPEN_DIRECT_IO: Final = 1 << 0
FOPEN_KEEP_CACHE: Final = 1 << 1
FOPEN_NONSEEKABLE: Final = 1 << 2
FOPEN_CACHE_DIR: Final = 1 << 3
FOPEN_STREAM: Final = 1 << 4
FOPEN_NOFLUSH: Final = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES: Final = 1 << 6

# ---- per-request flags ----
FUSE_RELEASE_FLUSH: Final = 1 << 0
FUSE_RELEASE_FLOCK_UNLOCK: Final = 1 << 1
FUSE_GETATTR_FH: Final = 1 << 0
FUSE_LK_FLOCK: Final = 1 << 0
FUSE_WRITE_CACHE: Final = 1 << 0
FUSE_WRITE_LOCKOWNER: Final = 1 << 1
FUSE_WRITE_KILL_SUIDGID: Final = 1 << 2
FUSE_READ_LOCKOWNER: Final = 1 << 1
FUSE_FSYNC_FDATASYNC: Final = 1 << 0
FUSE_OPEN_KILL_SUIDGID: Final = 1 << 0
FUSE_SETXATTR_ACL_KILL_SGID: Final = 1 << 0
FUSE_EXPIRE_ONLY: Final = 1 << 0

# ---- rename(2) flags (RENAME2) ----
RENAME_NOREPLACE: Final = 1 << 0
RENAME_EXCHANGE: Final = 1 << 1
RENAME_WHITEOUT: Final = 1 << 2

# ---- lock types in fuse_file_lock.type (the fcntl values on Linux) ----
F_RDLCK: Final = 0
F_WRLCK: Final = 1
F_UNLCK: Final = 2
#: ``OFFSET_MAX``: the ``end`` of a lock that runs to end of file.
OFFSET_MAX: Final = 0x7FFF_FFFF_FFFF_FFFF

# ---- structures ----
# fmt: off
IN_HEADER = struct.Struct("<IIQQIIIHH")          # len opcode unique nodeid uid gid pid
                                                 # total_extlen padding
OUT_HEADER = struct.Struct("<IiQ")               # len error unique

ATTR = struct.Struct("<QQQqqqIIIIIIIIII")        # ino size blocks atime mtime ctime
                                                 # {a,m,c}timensec mode nlink
                                                 # uid gid rdev blksize flags
KSTATFS = struct.Struct("<QQQQQIIII24x")         # blocks bfree bavail files ffree
                                                 # bsize namelen frsize
                                                 # padding spare[6]
FILE_LOCK = struct.Struct("<QQII")               # start end type pid

ENTRY_OUT_HEAD = struct.Struct("<QQQQII")        # nodeid generation entry_valid attr_valid *_nsec
ATTR_OUT_HEAD = struct.Struct("<QII")            # attr_valid attr_valid_nsec dummy
FORGET_IN = struct.Struct("<Q")                  # nlookup
FORGET_ONE = struct.Struct("<QQ")                # nodeid nlookup
BATCH_FORGET_IN = struct.Struct("<II")           # count dummy
GETATTR_IN = struct.Struct("<IIQ")               # getattr_flags dummy fh
MKNOD_IN = struct.Struct("<IIII")                # mode rdev umask padding
MKDIR_IN = struct.Struct("<II")                  # mode umask
RENAME_IN = struct.Struct("<Q")                  # newdir
RENAME2_IN = struct.Struct("<QII")               # newdir flags padding
LINK_IN = struct.Struct("<Q")                    # oldnodeid
SETATTR_IN = struct.Struct("<IIQQQqqqIIIIIIII")  # valid pad fh size lock_owner atime mtime ctime
                                                 # *nsec mode unused4 uid gid unused5
OPEN_IN = struct.Struct("<II")                   # flags open_flags
CREATE_IN = struct.Struct("<IIII")               # flags mode umask open_flags
OPEN_OUT = struct.Struct("<QII")                 # fh open_flags padding
RELEASE_IN = struct.Struct("<QIIQ")              # fh flags release_flags lock_owner
FLUSH_IN = struct.Struct("<QIIQ")                # fh unused padding lock_owner
READ_IN = struct.Struct("<QQIIQII")              # fh offset size read_flags lock_owner
                                                 # flags padding
WRITE_IN = struct.Struct("<QQIIQII")             # fh offset size write_flags lock_owner
                                                 # flags padding
WRITE_OUT = struct.Struct("<II")                 # size padding
FSYNC_IN = struct.Struct("<QII")                 # fh fsync_flags padding
SETXATTR_IN = struct.Struct("<IIII")             # size flags setxattr_flags padding (SETXATTR_EXT)
SETXATTR_IN_COMPAT = struct.Struct("<II")        # size flags
GETXATTR_IN = struct.Struct("<II")               # size padding
GETXATTR_OUT = struct.Struct("<II")              # size padding
LK_IN = struct.Struct("<QQQQIIII")               # fh owner lk{start end type pid}
                                                 # lk_flags padding
LK_OUT = FILE_LOCK                               # lk
ACCESS_IN = struct.Struct("<II")                 # mask padding
INIT_IN = struct.Struct("<IIIII44x")             # major minor max_readahead flags flags2 unused[11]
INIT_IN_COMPAT = struct.Struct("<IIII")          # major minor max_readahead flags
INIT_OUT_COMPAT = struct.Struct("<II")           # major minor (the answer to a newer major)
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")      # major minor max_readahead flags max_background
                                                 # congestion_threshold max_write time_gran
                                                 # max_pages map_alignment flags2 unused[7]
INTERRUPT_IN = struct.Struct("<Q")               # unique
BMAP_IN = struct.Struct("<QII")                  # block blocksize padding
BMAP_OUT = struct.Struct("<Q")                   # block
IOCTL_IN = struct.Struct("<QIIQII")              # fh flags cmd arg in_size out_size
POLL_IN = struct.Struct("<QQII")                 # fh kh flags events
POLL_OUT = struct.Struct("<II")                  # revents padding
FALLOCATE_IN = struct.Struct("<QQQII")           # fh offset length mode padding
LSEEK_IN = struct.Struct("<QQII")                # fh offset whence padding
LSEEK_OUT = struct.Struct("<Q")                  # offset
COPY_FILE_RANGE_IN = struct.Struct("<QQQQQQQ")   # fh_in off_in nodeid_out fh_out off_out len flags
NOTIFY_RETRIEVE_IN = struct.Struct("<QQIIQQ")    # dummy1 offset size dummy2 dummy3 dummy4
SYNCFS_IN = struct.Struct("<Q")                  # padding
DIRENT_HEAD = struct.Struct("<QQII")             # ino off namelen type (name follows)

NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")   # ino off len
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("<QII")   # parent namelen flags
NOTIFY_DELETE_OUT = struct.Struct("<QQII")       # parent child namelen padding
NOTIFY_STORE_OUT = struct.Struct("<QQII")        # nodeid offset size padding
# fmt: on

ENTRY_OUT_SIZE: Final = ENTRY_OUT_HEAD.size + ATTR.size  # sizeof(struct fuse_entry_out)
ATTR_OUT_SIZE: Final = ATTR_OUT_HEAD.size + ATTR.size  # sizeof(struct fuse_attr_out)
STATFS_OUT_SIZE: Final = KSTATFS.size
#: ``FUSE_NAME_OFFSET`` and ``FUSE_NAME_OFFSET_DIRENTPLUS``.
DIRENT_NAME_OFFSET: Final = DIRENT_HEAD.size
DIRENTPLUS_NAME_OFFSET: Final = ENTRY_OUT_SIZE + DIRENT_HEAD.size


def rec_align(n: int) -> int:
    """``FUSE_REC_ALIGN``: round ``n`` up to a multiple of 8."""
    return (n + 7) & ~7


def opcode_name(opcode: int) -> str:
    """Human name of an opcode, or ``OP_<n>`` for one we do not know."""
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"OP_{opcode}"
