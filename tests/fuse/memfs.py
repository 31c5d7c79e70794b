"""A tiny in-memory file system on ``dfs.fuse.Operations`` for the FUSE layer's tests.

One file ``/hello`` ("hello world\\n") at start; supports lookup, getattr/setattr, readdir(plus),
mkdir, create, open, read, write, unlink, rmdir, rename, xattrs and statfs.  ``/slow`` is a
file whose read blocks until cancelled, to exercise FUSE_INTERRUPT.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass, field

import trio

from dfs.fuse import (
    Attr,
    DirBuffer,
    DirPlusBuffer,
    Entry,
    FuseError,
    OpenReply,
    Operations,
    RequestContext,
    SetattrChanges,
    Statfs,
)
from dfs.fuse.abi import ROOT_ID

HELLO = b"hello world\n"


@dataclass
class Node:
    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] = field(default_factory=dict)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    nlink: int = 1
    mtime_ns: int = 0


class MemFs(Operations):
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {ROOT_ID: Node(ROOT_ID, stat.S_IFDIR | 0o755, nlink=2)}
        self.next_ino = ROOT_ID + 1
        self.lookups: dict[int, int] = {}
        self.slow_read_started = trio.Event()
        self.slow_read_cancelled = trio.Event()
        self.forgotten: list[tuple[int, int]] = []
        self.destroyed = False
        self._add(ROOT_ID, b"hello", stat.S_IFREG | 0o644, HELLO)
        self._add(ROOT_ID, b"slow", stat.S_IFREG | 0o644, b"x" * 10)

    # ---- helpers ----
    def _add(self, parent: int, name: bytes, mode: int, data: bytes = b"") -> Node:
        node = Node(self.next_ino, mode, bytearray(data), nlink=2 if stat.S_ISDIR(mode) else 1)
        self.next_ino += 1
        self.nodes[node.ino] = node
        self.nodes[parent].children[name] = node.ino
        if stat.S_ISDIR(mode):
            self.nodes[parent].nlink += 1
        return node

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise FuseError(errno.ENOENT)
        return node

    def _attr(self, node: Node) -> Attr:
        return Attr(
            ino=node.ino,
            size=len(node.data),
            blocks=(len(node.data) + 511) // 512,
            atime_ns=node.mtime_ns,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.mtime_ns,
            mode=node.mode,
            nlink=node.nlink,
            uid=0,
            gid=0,
        )

    def _entry(self, node: Node) -> Entry:
        self.lookups[node.ino] = self.lookups.get(node.ino, 0) + 1
        return Entry(self._attr(node), entry_timeout=1.0, attr_timeout=1.0)

    def _child(self, parent: int, name: bytes) -> Node:
        ino = self._node(parent).children.get(name)
        if ino is None:
            raise FuseError(errno.ENOENT)
        return self._node(ino)

    # ---- operations ----
    async def destroy(self) -> None:
        self.destroyed = True

    async def lookup(self, ctx: RequestContext, parent: int, name: bytes) -> Entry:
        return self._entry(self._child(parent, name))

    async def forget(self, items: list[tuple[int, int]]) -> None:
        self.forgotten.extend(items)
        for ino, n in items:
            self.lookups[ino] = self.lookups.get(ino, 0) - n

    async def getattr(self, ctx: RequestContext, ino: int, fh: int | None) -> tuple[Attr, float]:
        return self._attr(self._node(ino)), 1.0

    async def setattr(
        self, ctx: RequestContext, ino: int, changes: SetattrChanges
    ) -> tuple[Attr, float]:
        node = self._node(ino)
        if changes.size is not None:
            del node.data[changes.size :]
            node.data.extend(b"\0" * (changes.size - len(node.data)))
        if changes.mode is not None:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(changes.mode)
        if changes.mtime_ns is not None:
            node.mtime_ns = changes.mtime_ns
        return self._attr(node), 1.0

    async def mkdir(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, umask: int
    ) -> Entry:
        if name in self._node(parent).children:
            raise FuseError(errno.EEXIST)
        node = self._add(parent, name, stat.S_IFDIR | (mode & ~umask & 0o7777))
        return self._entry(node)

    async def create(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, flags: int, umask: int
    ) -> tuple[Entry, OpenReply]:
        if name in self._node(parent).children:
            raise FuseError(errno.EEXIST)
        node = self._add(parent, name, stat.S_IFREG | (mode & ~umask & 0o7777))
        return self._entry(node), OpenReply(fh=node.ino)

    async def unlink(self, ctx: RequestContext, parent: int, name: bytes) -> None:
        node = self._child(parent, name)
        if stat.S_ISDIR(node.mode):
            raise FuseError(errno.EISDIR)
        del self.nodes[parent].children[name]

    async def rmdir(self, ctx: RequestContext, parent: int, name: bytes) -> None:
        node = self._child(parent, name)
        if not stat.S_ISDIR(node.mode):
            raise FuseError(errno.ENOTDIR)
        if node.children:
            raise FuseError(errno.ENOTEMPTY)
        del self.nodes[parent].children[name]
        self.nodes[parent].nlink -= 1

    async def rename(
        self,
        ctx: RequestContext,
        parent: int,
        name: bytes,
        newparent: int,
        newname: bytes,
        flags: int,
    ) -> None:
        if flags:
            raise FuseError(errno.EINVAL)
        node = self._child(parent, name)
        self._node(newparent).children[newname] = node.ino
        del self.nodes[parent].children[name]

    async def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        node = self._node(ino)
        # direct_io makes reads of /slow synchronous (interruptible) instead of page-cache
        # readahead, which the kernel never interrupts.
        slow = self.nodes[ROOT_ID].children.get(b"slow") == ino
        return OpenReply(fh=node.ino, direct_io=slow)

    async def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        node = self._node(ino)
        if self.nodes[ROOT_ID].children.get(b"slow") == ino:
            self.slow_read_started.set()
            try:
                await trio.sleep_forever()
            finally:
                self.slow_read_cancelled.set()
        return bytes(node.data[offset : offset + size])

    async def write(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, data: bytes, write_flags: int
    ) -> int:
        node = self._node(ino)
        if offset > len(node.data):
            node.data.extend(b"\0" * (offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        return len(data)

    async def flush(self, ctx: RequestContext, ino: int, fh: int, lock_owner: int) -> None:
        return None

    async def release(
        self,
        ctx: RequestContext,
        ino: int,
        fh: int,
        flags: int,
        lock_owner: int | None,
        flush: bool,
    ) -> None:
        return None

    async def opendir(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        if not stat.S_ISDIR(self._node(ino).mode):
            raise FuseError(errno.ENOTDIR)
        return OpenReply(fh=0)

    async def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        return None

    def _listing(self, ino: int) -> list[tuple[bytes, Node]]:
        node = self._node(ino)
        items = [(b".", node), (b"..", node)]
        items += [(name, self.nodes[child]) for name, child in sorted(node.children.items())]
        return items

    async def readdir(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, buf: DirBuffer
    ) -> None:
        for i, (name, node) in enumerate(self._listing(ino)[offset:], start=offset + 1):
            if not buf.add(node.ino, name, node.mode, i):
                break

    async def readdirplus(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, buf: DirPlusBuffer
    ) -> None:
        for i, (name, node) in enumerate(self._listing(ino)[offset:], start=offset + 1):
            entry = Entry(self._attr(node), entry_timeout=1.0, attr_timeout=1.0)
            if not buf.add(entry, name, i):
                break
            if name not in (b".", b".."):
                self.lookups[node.ino] = self.lookups.get(node.ino, 0) + 1

    async def statfs(self, ctx: RequestContext, ino: int) -> Statfs:
        return Statfs(blocks=1000, bfree=500, bavail=500, files=100, ffree=50)

    async def setxattr(
        self, ctx: RequestContext, ino: int, name: bytes, value: bytes, flags: int
    ) -> None:
        self._node(ino).xattrs[name] = value

    async def getxattr(self, ctx: RequestContext, ino: int, name: bytes) -> bytes:
        value = self._node(ino).xattrs.get(name)
        if value is None:
            raise FuseError(errno.ENODATA)
        return value

    async def listxattr(self, ctx: RequestContext, ino: int) -> list[bytes]:
        return sorted(self._node(ino).xattrs)

    async def removexattr(self, ctx: RequestContext, ino: int, name: bytes) -> None:
        if self._node(ino).xattrs.pop(name, None) is None:
            raise FuseError(errno.ENODATA)
