"""What the VFS needs from the cluster: the metadata service and the chunk servers.

The VFS only talks to these two interfaces, so tests can replace them with in-memory fakes
(``tests/client/fakes.py``).  Implementations raise the typed errors of ``dfs.errors``; nothing
here knows about errno.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dfs.types import ChunkId, ChunkVersion, InodeId


@dataclass(slots=True)
class InodeAttr:
    """An inode's attributes as the metaserver reports them (see docs/protocol.md ``attr``)."""

    ino: InodeId
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    generation: int = 0
    goal: int = 0

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> InodeAttr:
        return cls(
            ino=InodeId(int(d["ino"])),
            mode=int(d["mode"]),
            nlink=int(d["nlink"]),
            uid=int(d["uid"]),
            gid=int(d["gid"]),
            size=int(d["size"]),
            rdev=int(d.get("rdev", 0)),
            atime_ns=int(d["atime_ns"]),
            mtime_ns=int(d["mtime_ns"]),
            ctime_ns=int(d["ctime_ns"]),
            generation=int(d.get("generation", 0)),
            goal=int(d.get("goal", 0)),
        )


@dataclass(frozen=True, slots=True)
class ServerRef:
    id: str
    address: str

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ServerRef:
        return cls(id=str(d["id"]), address=str(d["address"]))

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "address": self.address}


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file: its position, identity, version and the servers holding it."""

    index: int
    chunk_id: ChunkId
    version: ChunkVersion
    servers: tuple[ServerRef, ...]
    #: For trims after a shrinking truncate: the chunk's new length.
    trim_length: int = -1
    #: Seconds the write lease lasts (chunks returned for writing; 0 otherwise).
    lease: float = 0.0

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ChunkRef:
        return cls(
            index=int(d["index"]),
            chunk_id=ChunkId(int(d["chunk_id"])),
            version=ChunkVersion(int(d["version"])),
            servers=tuple(ServerRef.from_wire(s) for s in d.get("servers", ())),
            trim_length=int(d.get("trim_length", -1)),
            lease=float(d.get("lease", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Cred:
    """Credentials of the process that made a request (owner of what it creates)."""

    uid: int
    gid: int

    def to_wire(self) -> dict[str, int]:
        return {"uid": self.uid, "gid": self.gid}


@dataclass(frozen=True, slots=True)
class StatFs:
    total_bytes: int
    free_bytes: int
    files: int


@dataclass(slots=True)
class SetAttr:
    """Attribute changes; ``None`` leaves a field alone.  ``atime_now``/``mtime_now``: the
    server's now (then ``atime_ns``/``mtime_ns`` are ignored; any other value, -1 included,
    is a time)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    atime_now: bool = False
    mtime_now: bool = False
    #: An access-time update by a read (``atime_now``): the change time stays.
    atime_access: bool = False


class MetaClient(Protocol):
    """The metadata service (docs/protocol.md, ``fs.*`` and ``file.*``)."""

    async def lookup(self, parent: InodeId, name: bytes) -> InodeAttr: ...
    async def getattr(self, ino: InodeId) -> InodeAttr: ...
    async def setattr(
        self, ino: InodeId, changes: SetAttr, cred: Cred
    ) -> tuple[InodeAttr, list[ChunkRef]]: ...
    async def mknod(
        self,
        parent: InodeId,
        name: bytes,
        mode: int,
        rdev: int,
        cred: Cred,
        *,
        hold: bool = False,
        umask: int = 0,
    ) -> InodeAttr:
        """Create a non-directory; ``hold``: the client holds the new regular file open.
        ``umask`` applies to ``mode`` unless the directory has a default ACL (then the ACL
        does: ``dfs.metaserver.acl.inherit``)."""
        ...

    async def open(self, ino: InodeId) -> InodeAttr:
        """Hold a regular file open (it outlives its last name until ``release``); fresh
        attributes.  ``NotFound`` when it no longer exists."""
        ...

    async def release(self, inos: list[InodeId]) -> None:
        """This client closed its last descriptor of each of ``inos``."""
        ...

    async def mkdir(
        self, parent: InodeId, name: bytes, mode: int, cred: Cred, *, umask: int = 0
    ) -> InodeAttr: ...
    async def symlink(
        self, parent: InodeId, name: bytes, target: bytes, cred: Cred
    ) -> InodeAttr: ...
    async def link(self, ino: InodeId, parent: InodeId, name: bytes) -> InodeAttr: ...
    # unlink and rename return the inode that lost its last name (the one unlinked, the one
    # replaced at the target), else None.
    async def unlink(self, parent: InodeId, name: bytes) -> InodeId | None: ...
    async def rmdir(self, parent: InodeId, name: bytes) -> None: ...
    async def rename(
        self, parent: InodeId, name: bytes, newparent: InodeId, newname: bytes, flags: int
    ) -> InodeId | None: ...
    async def readlink(self, ino: InodeId) -> bytes: ...
    async def readdir(self, ino: InodeId) -> list[tuple[bytes, InodeAttr]]: ...
    async def statfs(self) -> StatFs: ...
    async def setxattr(
        self, ino: InodeId, name: bytes, value: bytes, flags: int, cred: Cred | None = None
    ) -> None:
        """Store an xattr.  With ``cred``, changing a POSIX ACL is refused (``NotPermitted``)
        unless ``cred`` owns the inode or is root."""
        ...

    async def getxattr(self, ino: InodeId, name: bytes) -> bytes: ...
    async def listxattr(self, ino: InodeId) -> list[bytes]: ...
    async def removexattr(self, ino: InodeId, name: bytes, cred: Cred | None = None) -> None: ...
    async def setgoal(self, ino: InodeId, goal: int, cred: Cred) -> InodeAttr:
        """Set the replication goal of a regular file or directory: ``NotPermitted`` unless
        ``cred`` owns it or is root, ``InvalidArgument`` for another type or a goal outside
        1..16, ``RangeError`` for a goal above the number of chunkservers."""
        ...

    async def file_chunks(self, ino: InodeId, first: int, count: int) -> list[ChunkRef]: ...
    async def alloc_chunk(
        self,
        ino: InodeId,
        index: int,
        *,
        failed: str | None = None,
        version: int | None = None,
        code: str | None = None,
        chunk_id: int | None = None,
    ) -> ChunkRef:
        """The chunk at ``index`` for writing (allocated when absent), under a write lease.
        ``failed``/``version``/``code``: a replica failed an update at ``version``.
        ``chunk_id``: the caller has unsynced data in that chunk; ``DataLost`` if it was
        dropped as lost."""
        ...

    async def commit_write(
        self, ino: InodeId, size: int, mtime_ns: int, *, release: list[int] | None = None
    ) -> InodeAttr:
        """Commit size and mtime; ``release``: chunk ids whose write leases this client gives
        up (its last handle of the file is closing)."""
        ...

    async def punch_hole(self, ino: InodeId, first: int, count: int) -> InodeAttr:
        """Drop the file's chunks ``first <= index < first + count`` (they become holes and
        are deleted on the chunkservers); the size stays, mtime and ctime are set to now."""
        ...

    async def append(self, ino: InodeId, length: int) -> int:
        """Reserve ``length`` bytes at the end of the file (the size grows at once): the
        offset where this O_APPEND write goes, never overlapping another client's."""
        ...

    async def release_leases(self, ino: InodeId, chunk_ids: list[int]) -> None:
        """Give up write leases without a commit (nothing left to commit)."""
        ...

    async def lock_get(
        self, ino: InodeId, owner: int, kind: str, type_: int, start: int, end: int
    ) -> dict[str, int] | None: ...
    async def lock_set(
        self,
        ino: InodeId,
        owner: int,
        kind: str,
        type_: int,
        start: int,
        end: int,
        pid: int,
        *,
        wait: bool,
    ) -> None: ...
    async def lock_cancel(self, ino: InodeId, owner: int, kind: str) -> bool: ...
    async def lock_release(self, ino: InodeId, owner: int, kind: str) -> None: ...
    async def report_bad(self, server: ServerRef, chunk: ChunkRef, reason: str) -> None: ...


class ChunkClient(Protocol):
    """The chunkservers (docs/protocol.md, ``chunk.*``)."""

    async def read(self, chunk: ChunkRef, offset: int, length: int) -> bytes:
        """Bytes of ``chunk`` at ``offset``; fewer at the chunk's stored end.

        Tries each replica in turn; raises ``IOFailure`` when none could serve the range.
        """
        ...

    async def write(
        self, chunk: ChunkRef, offset: int, data: bytes | memoryview, sync: bool
    ) -> None:
        """Write through the chain of the chunk's servers; returns once every replica has it."""
        ...

    async def write_extents(
        self, chunk: ChunkRef, extents: list[tuple[int, bytes | memoryview]], sync: bool
    ) -> None:
        """Like ``write`` for several non-overlapping ``(offset, data)`` pieces of one chunk,
        applied together (one round trip through the chain)."""
        ...

    async def truncate(self, chunk: ChunkRef, length: int) -> None: ...

    async def sync(self, chunk: ChunkRef) -> None: ...
