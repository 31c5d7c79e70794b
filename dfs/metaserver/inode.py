"""In-memory inode record of the namespace state machine and its wire/snapshot encodings.

An ``Inode`` is a plain mutable record with ``__slots__`` (the metaserver holds millions of them,
so per-object overhead matters: type-specific containers are ``None`` until first used).
Only ``dfs.metaserver.namespace`` mutates inodes; everything else reads them.
"""

from __future__ import annotations

import stat
from typing import Any

from dfs.types import ChunkId, InodeId

#: Inode numbers are never reused (a counter in the state), so the NFS-style generation that
#: distinguishes reincarnations of one number is constant.
GENERATION = 1

#: Permission and special bits that ``mode`` may carry besides the S_IFMT type bits.
PERM_MASK = 0o7777


class Inode:
    """One file-system object.

    Type-specific fields (``None`` when not applicable or still empty):

    * directories: ``entries`` name -> child inode number (insertion ordered); ``parent`` is the
      inode number of the one directory holding it (the root is its own parent).
    * symlinks: ``target``.
    * regular files: ``chunks`` chunk index -> chunk id (sparse; absent index = hole).
    * any type: ``xattrs`` name -> value.
    """

    __slots__ = (
        "atime_ns",
        "chunks",
        "ctime_ns",
        "entries",
        "gid",
        "goal",
        "ino",
        "mode",
        "mtime_ns",
        "nlink",
        "parent",
        "rdev",
        "size",
        "target",
        "uid",
        "xattrs",
    )

    def __init__(
        self,
        ino: InodeId,
        mode: int,
        *,
        uid: int,
        gid: int,
        now_ns: int,
        goal: int,
        rdev: int = 0,
        nlink: int = 1,
    ) -> None:
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.nlink = nlink
        self.size = 0
        self.atime_ns = now_ns
        self.mtime_ns = now_ns
        self.ctime_ns = now_ns
        self.goal = goal
        self.parent: InodeId | None = None
        self.entries: dict[bytes, InodeId] | None = None
        self.target: bytes | None = None
        self.chunks: dict[int, ChunkId] | None = None
        self.xattrs: dict[bytes, bytes] | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def attr(self) -> dict[str, Any]:
        """The protocol's ``attr`` map (docs/protocol.md, "Common shapes")."""
        return {
            "ino": self.ino,
            "mode": self.mode,
            "nlink": self.nlink,
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "rdev": self.rdev,
            "atime_ns": self.atime_ns,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "generation": GENERATION,
            "goal": self.goal,
        }

    # ---- snapshot encoding (field order documented in dfs.metaserver.namespace) ----
    def to_record(self) -> list[Any]:
        if self.is_dir:
            extra: Any = [self.parent, list(self.entries.items()) if self.entries else []]
        elif self.is_symlink:
            extra = self.target
        elif self.is_reg:
            extra = sorted(self.chunks.items()) if self.chunks else []
        else:
            extra = None
        xattrs = list(self.xattrs.items()) if self.xattrs else []
        return [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.rdev,
            self.nlink,
            self.size,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            self.goal,
            extra,
            xattrs,
        ]

    @classmethod
    def from_record(cls, rec: list[Any]) -> Inode:
        (ino, mode, uid, gid, rdev, nlink, size, atime, mtime, ctime, goal, extra, xattrs) = rec
        node = cls(
            InodeId(ino), mode, uid=uid, gid=gid, now_ns=0, goal=goal, rdev=rdev, nlink=nlink
        )
        node.size = size
        node.atime_ns, node.mtime_ns, node.ctime_ns = atime, mtime, ctime
        if node.is_dir:
            parent, entries = extra
            node.parent = InodeId(parent)
            node.entries = {bytes(k): InodeId(v) for k, v in entries}
        elif node.is_symlink:
            node.target = bytes(extra)
        elif node.is_reg and extra:
            node.chunks = {int(i): ChunkId(c) for i, c in extra}
        if xattrs:
            node.xattrs = {bytes(k): bytes(v) for k, v in xattrs}
        return node
