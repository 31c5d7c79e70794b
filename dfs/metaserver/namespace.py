"""The namespace state machine: inodes, directories, files' chunk maps.

Pure and deterministic: no I/O, no clock, no trio.  Every replica applies the same committed
commands in the same order and ends in the same state, so everything a command needs comes in
the command (``now_ns`` chosen by the leader when it proposed, credentials) or from counters
inside the state (new inode numbers, new chunk ids).  A command that fails raises an
``FsError`` subclass and changes nothing: every check runs before the first mutation.

Commands (``apply``) are dicts with an ``"op"`` key; every op except ``noop`` carries
``now_ns``.  See the ``_op_*`` methods for each op's keys; ``dfs.metaserver.service`` builds them.

Schema (the snapshot, msgpack map ``format == 2``)
-------------------------------------------------
* ``cluster_id``: str, set by the ``init`` command ("" before it).
* ``next_ino``: int, the next inode number to hand out (numbers are never reused).
* ``next_chunk_id``: int, the next chunk id to hand out (ids are never reused, so a chunk id
  below it that no file references is an orphan that may be deleted).
* ``inodes``: list sorted by inode number of records
  ``[ino, mode, uid, gid, rdev, nlink, size, atime_ns, mtime_ns, ctime_ns, goal, extra, xattrs]``
  where ``extra`` is ``[parent, [[name, ino], ...]]`` for a directory (entries in insertion
  order), the target bytes for a symlink, ``[[index, chunk_id], ...]`` (sorted) for a regular
  file and nil otherwise; ``xattrs`` is ``[[name, value], ...]``.
* ``chunks``: list sorted by chunk id of ``[chunk_id, ino, index, version]``.
* ``sessions`` (format 2): ``{"next_id": int, "sessions": [record, ...]}``, the client
  sessions and their remembered outcomes (``dfs.metaserver.sessions``).
* ``locks`` (format 3): the fcntl and flock locks held (``dfs.metaserver.locks``, its
  ``encode``).
* ``holds`` (format 4): ``[[ino, [session, ...]], ...]`` sorted, the regular files that
  client sessions hold open (``open``, ``mknod`` with ``hold``; ``release``).  A file whose
  last name goes while it is held stays, with ``nlink`` 0 and no name, until the last holder
  releases it or its session ends: a program can go on reading and writing an unlinked file
  (POSIX), on any client.
* ``members`` (format 2): ``[[id, address], ...]`` sorted, the RPC addresses of metaservers
  added to the Raft group after it was created (``set_member``; the founding members'
  addresses come from their config).  Kept here so that every member, and every snapshot,
  knows where to reach them.
* ``cs_modes`` (format 5): ``[[id, mode, until_ns], ...]`` sorted, the chunkservers an operator
  took out of normal service (``set_cs_mode``): ``decommission`` (its replicas no longer count
  toward any goal and it gets no new ones: drained by copies elsewhere, then safe to remove)
  or ``maintenance`` (no new replicas, and while ``until_ns`` (wall clock) is ahead its
  absence does not start re-replication).  A chunkserver not listed is in normal service.
* ``chunkservers`` (format 5): sorted ids of the chunkservers that ever registered with a
  leader (a ``noop`` naming it in ``registered``), until removed (``set_cs_mode`` ``removed``):
  a new leader, even one that just restarted, waits for them to register before it trusts its
  replica locations.
* ``flags`` (format 5): ``[[name, value], ...]`` sorted, cluster-wide operator switches
  (``set_flag``); ``replication_paused`` (1: the replicator makes no copies or deletions).
* ``uncommitted`` (format 5, optional): ``[[ino, [chunk_id, ...]], ...]`` sorted, the chunks
  allocated since their file's last ``commit_write``.  No acknowledged byte is in such a
  chunk (a writer stores its data, then commits), so one that no chunkserver holds may leave
  its file (``drop_lost_chunk`` with ``uncommitted``): a write that failed before storing
  anything leaves no missing chunk behind.  Absent (older snapshots): none.
* ``dropped`` (format 5, optional): ``[[chunk_id, ino], ...]`` oldest first, the last
  ``DROPPED_KEEP`` chunks dropped that way, so that a writer whose unsynced data was in one
  learns it is gone (``alloc_chunk`` with ``chunk_id`` answers ``DataLost``).

Exactly-once: a command with a ``session`` key runs through ``SessionTable.run``, which
applies it once and answers retries with the remembered outcome.

Invariants (``dfs.metaserver.invariants.check`` verifies exactly these; fsck uses it)
-----------------------------------------------------------------------------------
I1. Once initialised, inode 1 (the root) exists, is a directory and is its own ``parent``.
I2. Every inode number is in ``[1, next_ino)``.
I3. Every directory entry name is valid (1..255 bytes, no ``/`` or NUL, not ``.``/``..``) and
    points at an existing inode.
I4. A non-directory's ``nlink`` is the number of directory entries referencing it; it is 0
    only for a regular file some session holds open (an open-unlinked file).  Every held
    inode exists and is a regular file, every holder is an existing session.
I5. A directory other than the root is referenced by exactly one entry, in the directory named
    by its ``parent``; the root by none.  A directory's ``nlink`` is 2 + its subdirectories.
I6. Every directory reaches the root by following ``parent`` (no cycles, nothing detached).
I7. Only directories have ``entries``/``parent``, only symlinks a ``target`` (and their
    ``size`` is its length), only regular files ``chunks``.
I8. The chunk map is the exact inverse of the files' chunk tables: ``chunks[cid] ==
    (ino, index, version)`` iff inode ``ino`` maps ``index`` to ``cid``; every chunk id is in
    ``[1, next_chunk_id)`` and every version is >= 1.  Every uncommitted chunk of a file is
    one of its chunks.
I9. The maintained counters (files, directories) equal the counts of those inode types.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import Any

import msgpack

from dfs.errors import (
    DirectoryNotEmpty,
    Exists,
    FileTooLarge,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NotADirectory,
    NotFound,
    NotPermitted,
    PermissionDenied,
    RangeError,
    TooManyLinks,
)
from dfs.metaserver import acl
from dfs.metaserver.inode import PERM_MASK, Inode
from dfs.metaserver.locks import LockTable
from dfs.metaserver.sessions import SessionTable
from dfs.types import CHUNK_SIZE, ROOT_INODE, ChunkId, ChunkVersion, InodeId

SNAPSHOT_FORMAT = 5
#: Formats ``restore`` reads (1: before sessions existed; 2: before locks; 3: before holds;
#: 4: before chunkserver modes).
_READABLE_FORMATS = (1, 2, 3, 4, 5)
#: Chunkserver modes of ``set_cs_mode`` (see the schema).
CS_MODES = ("normal", "decommission", "maintenance", "removed")
#: Operator switches of ``set_flag``.
FLAGS = ("replication_paused",)
#: How many dropped uncommitted chunks the namespace remembers (see the schema).
DROPPED_KEEP = 4096
NAME_MAX = 255
PATH_MAX = 4096
#: Link count limit (ext4's value); also bounds a directory's subdirectory count.
LINK_MAX = 65000
#: Largest file size (and so the highest chunk index) the namespace accepts.
MAX_FILE_SIZE = 1 << 60
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 64 * 1024
XATTR_CREATE = 1
XATTR_REPLACE = 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
#: ``atime_ns``/``mtime_ns`` value meaning "the command's now_ns".
TIME_NOW = -1
#: Replication goals the namespace accepts (the service also caps a new goal at the number
#: of chunkservers it knows).
MIN_GOAL = 1
MAX_GOAL = 16

_MKNOD_TYPES = frozenset({stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})


class SnapshotCorrupt(ValueError):
    """A snapshot could not be decoded or violates the schema's invariants."""


def check_name(name: bytes) -> None:
    """Raise unless ``name`` is a valid directory entry name (POSIX rules above)."""
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name is {len(name)} bytes, the limit is {NAME_MAX}")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise InvalidArgument(f"invalid name {name!r}")


def _stored_acl(node: Inode, name: bytes) -> acl.Acl | None:
    """The valid ACL stored under ``name`` on ``node``, else None (a value stored before ACLs
    were checked that does not decode counts as absent)."""
    value = node.xattrs.get(name) if node.xattrs else None
    if value is None:
        return None
    try:
        return acl.decode_valid(value) or None
    except InvalidArgument:
        return None


def _check_owner(node: Inode, cred: dict[str, Any] | None) -> None:
    """Only the owner or root changes an inode's ACLs (``cred`` None: checked upstream)."""
    if cred is None:
        return
    uid = int(cred["uid"])
    if uid not in (0, node.uid):
        raise NotPermitted(f"uid {uid} does not own inode {node.ino}")


class Namespace:
    """The metadata state machine.  ``apply`` mutates; the other public methods only read."""

    def __init__(self) -> None:
        self.inodes: dict[InodeId, Inode] = {}
        #: chunk id -> (inode, chunk index, version); the inverse of the files' chunk tables.
        self.chunks: dict[ChunkId, tuple[InodeId, int, ChunkVersion]] = {}
        self.next_ino = int(ROOT_INODE) + 1
        self.next_chunk_id = 1
        self.cluster_id = ""
        self.n_files = 0
        self.n_dirs = 0
        # Chunks whose file was freed or truncated since the last take_freed_chunks(); soft,
        # not part of the snapshot (after a restart orphans are found from registrations).
        self._freed: list[ChunkId] = []
        self.sessions = SessionTable()
        #: fcntl and flock locks (``dfs.metaserver.locks``).
        self.locks = LockTable()
        #: Raft member id -> "host:port" of members added online (see the schema).
        self.members: dict[str, str] = {}
        #: Chunkserver id -> (mode, until_ns) for servers out of normal service (see the schema).
        self.cs_modes: dict[str, tuple[str, int]] = {}
        #: Chunkservers that registered with a leader (see the schema).
        self.chunkservers: set[str] = set()
        #: Operator switches (see the schema); absent means 0.
        self.flags: dict[str, int] = {}
        #: Regular file -> sessions holding it open, and the inverse (see the schema).
        self.holds: dict[InodeId, set[int]] = {}
        self.held_by: dict[int, set[InodeId]] = {}
        #: Regular file -> chunks allocated since its last commit_write (see the schema).
        self.uncommitted: dict[InodeId, set[ChunkId]] = {}
        #: Recently dropped uncommitted chunks -> their file, oldest first (see the schema).
        self.dropped: dict[ChunkId, InodeId] = {}
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "init": self._op_init,
            "noop": self._op_noop,
            "mknod": self._op_mknod,
            "mkdir": self._op_mkdir,
            "symlink": self._op_symlink,
            "link": self._op_link,
            "unlink": self._op_unlink,
            "rmdir": self._op_rmdir,
            "rename": self._op_rename,
            "setattr": self._op_setattr,
            "setxattr": self._op_setxattr,
            "removexattr": self._op_removexattr,
            "setgoal": self._op_setgoal,
            "alloc_chunk": self._op_alloc_chunk,
            "commit_write": self._op_commit_write,
            "punch_hole": self._op_punch_hole,
            "append": self._op_append,
            "set_version": self._op_set_version,
            "open": self._op_open,
            "release": self._op_release,
            "open_session": self.sessions.open,
            "close_session": self._op_close_session,
            "expire_sessions": self._op_expire_sessions,
            "lock_set": self._op_lock_set,
            "lock_release": self._op_lock_release,
            "set_member": self._op_set_member,
            "drop_member": self._op_drop_member,
            "set_cs_mode": self._op_set_cs_mode,
            "set_flag": self._op_set_flag,
            "fsck_fix": self._op_fsck_fix,
            "drop_lost_chunk": self._op_drop_lost_chunk,
        }

    # ------------------------------------------------------------------ apply
    @property
    def initialised(self) -> bool:
        return ROOT_INODE in self.inodes

    def apply(self, command: dict[str, Any]) -> Any:
        """Apply one committed command; return its result or raise FsError (state unchanged).
        A command of a client session is applied at most once (retries get the first
        outcome)."""
        if "session" in command:
            return self.sessions.run(command, self._apply_op)
        return self._apply_op(command)

    def _apply_op(self, command: dict[str, Any]) -> Any:
        op = self._ops.get(command.get("op", ""))
        if op is None:
            raise InvalidArgument(f"unknown command {command.get('op')!r}")
        return op(command)

    def take_freed_chunks(self) -> list[ChunkId]:
        """Chunk ids dropped from the chunk map since the last call (to delete on servers)."""
        freed, self._freed = self._freed, []
        return freed

    # ------------------------------------------------------------------ reads
    def getattr(self, ino: int) -> dict[str, Any]:
        return self._get(ino).attr()

    def lookup(self, parent: int, name: bytes) -> dict[str, Any]:
        check_name(name)
        child = self._dir(parent).entries.get(name)  # type: ignore[union-attr]
        if child is None:
            raise NotFound(f"no entry {name!r} in directory {parent}")
        return self.inodes[child].attr()

    def readdir(self, ino: int) -> list[list[Any]]:
        d = self._dir(ino)
        assert d.entries is not None
        return [[name, self.inodes[child].attr()] for name, child in d.entries.items()]

    def readlink(self, ino: int) -> bytes:
        node = self._get(ino)
        if node.target is None:
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return node.target

    def getxattr(self, ino: int, name: bytes) -> bytes:
        node = self._get(ino)
        value = node.xattrs.get(name) if node.xattrs else None
        if value is None:
            raise NoAttribute(f"no attribute {name!r} on inode {ino}")
        return value

    def listxattr(self, ino: int) -> list[bytes]:
        node = self._get(ino)
        return list(node.xattrs) if node.xattrs else []

    def file_chunks(self, ino: int, first: int, count: int) -> list[dict[str, Any]]:
        """Existing chunks with ``first <= index < first + count``, by index."""
        node = self._regular(ino)
        if not node.chunks or count <= 0:
            return []
        if count < len(node.chunks):
            indexes = [i for i in range(first, first + count) if i in node.chunks]
        else:
            indexes = sorted(i for i in node.chunks if first <= i < first + count)
        return [self._chunk_desc(node.chunks[i]) for i in indexes]

    def chunk_info(self, chunk_id: int) -> tuple[InodeId, int, ChunkVersion] | None:
        return self.chunks.get(ChunkId(chunk_id))

    def is_uncommitted(self, chunk_id: int) -> bool:
        """Whether the chunk was allocated after its file's last ``commit_write`` (no
        acknowledged byte is in it)."""
        info = self.chunks.get(ChunkId(chunk_id))
        return info is not None and ChunkId(chunk_id) in self.uncommitted.get(info[0], ())

    def counts(self) -> dict[str, int]:
        return {
            "inodes": len(self.inodes),
            "files": self.n_files,
            "directories": self.n_dirs,
            "chunks": len(self.chunks),
        }

    # ------------------------------------------------------------------ snapshot
    def snapshot_state(self) -> bytes:
        """Encode the whole state (schema in the module docstring)."""
        data = {
            "format": SNAPSHOT_FORMAT,
            "cluster_id": self.cluster_id,
            "next_ino": self.next_ino,
            "next_chunk_id": self.next_chunk_id,
            "inodes": [self.inodes[i].to_record() for i in sorted(self.inodes)],
            "chunks": [[c, *self.chunks[c]] for c in sorted(self.chunks)],
            "sessions": self.sessions.to_record(),
            "members": [[i, self.members[i]] for i in sorted(self.members)],
            "locks": self.locks.encode(),
            "holds": [[i, sorted(self.holds[i])] for i in sorted(self.holds)],
            "cs_modes": [[i, *self.cs_modes[i]] for i in sorted(self.cs_modes)],
            "flags": [[k, self.flags[k]] for k in sorted(self.flags)],
            "chunkservers": sorted(self.chunkservers),
            "uncommitted": [[i, sorted(self.uncommitted[i])] for i in sorted(self.uncommitted)],
            "dropped": [[c, i] for c, i in self.dropped.items()],
        }
        return msgpack.packb(data, use_bin_type=True)

    def restore(self, blob: bytes) -> None:
        """Replace the state with a snapshot; raise SnapshotCorrupt if it breaks an invariant."""
        from dfs.metaserver.invariants import check

        try:
            data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
            if data.get("format") not in _READABLE_FORMATS:
                raise SnapshotCorrupt(f"unknown snapshot format {data.get('format')!r}")
            inodes = {InodeId(r[0]): Inode.from_record(r) for r in data["inodes"]}
            chunks = {
                ChunkId(c): (InodeId(i), int(x), ChunkVersion(v)) for c, i, x, v in data["chunks"]
            }
            fresh = Namespace()
            fresh.inodes = inodes
            fresh.chunks = chunks
            fresh.next_ino = int(data["next_ino"])
            fresh.next_chunk_id = int(data["next_chunk_id"])
            fresh.cluster_id = str(data["cluster_id"])
            sessions = SessionTable.from_record(data.get("sessions"))
            members = {str(i): str(a) for i, a in data.get("members", [])}
            locks = LockTable.decode(data.get("locks", []))
            holds = {InodeId(int(i)): {int(x) for x in sids} for i, sids in data.get("holds", [])}
            cs_modes = {str(i): (str(m), int(u)) for i, m, u in data.get("cs_modes", [])}
            if any(m not in ("decommission", "maintenance") for m, _u in cs_modes.values()):
                raise SnapshotCorrupt(f"unknown chunkserver mode in {cs_modes!r}")
            flags = {str(k): int(v) for k, v in data.get("flags", [])}
            known_cs = {str(x) for x in data.get("chunkservers", [])}
            uncommitted: dict[InodeId, set[ChunkId]] = {}
            for i, cids in data.get("uncommitted", []):
                # Only chunks their file still maps (anything else is meaningless here).
                mine = {ChunkId(int(c)) for c in cids if chunks.get(ChunkId(int(c)), (0,))[0] == i}
                if mine:
                    uncommitted[InodeId(int(i))] = mine
            dropped = {ChunkId(int(c)): InodeId(int(i)) for c, i in data.get("dropped", [])}
        except SnapshotCorrupt:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotCorrupt(f"undecodable snapshot: {exc!r}") from exc
        fresh.n_files = sum(1 for n in inodes.values() if n.is_reg)
        fresh.n_dirs = sum(1 for n in inodes.values() if n.is_dir)
        fresh.sessions = sessions
        fresh._set_holds(holds)
        problems = check(fresh)
        if problems:
            raise SnapshotCorrupt("snapshot violates invariants: " + "; ".join(problems[:5]))
        self.inodes, self.chunks = fresh.inodes, fresh.chunks
        self.next_ino, self.next_chunk_id = fresh.next_ino, fresh.next_chunk_id
        self.cluster_id = fresh.cluster_id
        self.n_files, self.n_dirs = fresh.n_files, fresh.n_dirs
        self._freed = []
        # The op table holds the table's bound methods: update it in place.
        self.sessions.sessions, self.sessions.next_id = sessions.sessions, sessions.next_id
        self.members = members
        self.cs_modes = cs_modes
        self.flags = flags
        self.chunkservers = known_cs
        self.locks = locks
        self.holds, self.held_by = fresh.holds, fresh.held_by
        self.uncommitted = uncommitted
        self.dropped = dropped

    # ------------------------------------------------------------------ helpers
    def _get(self, ino: int) -> Inode:
        node = self.inodes.get(InodeId(ino))
        if node is None:
            raise NotFound(f"no inode {ino}")
        return node

    def _dir(self, ino: int) -> Inode:
        node = self._get(ino)
        if node.entries is None:
            raise NotADirectory(f"inode {ino} is not a directory")
        return node

    def _regular(self, ino: int) -> Inode:
        node = self._get(ino)
        if node.is_dir:
            raise IsADirectory(f"inode {ino} is a directory")
        if not node.is_reg:
            raise InvalidArgument(f"inode {ino} is not a regular file")
        return node

    def _chunk_desc(self, cid: ChunkId) -> dict[str, Any]:
        _ino, index, version = self.chunks[cid]
        return {"index": index, "chunk_id": cid, "version": version}

    def _committed(self, ino: InodeId, cid: ChunkId) -> None:
        """``cid`` is no longer an uncommitted chunk of ``ino`` (it left the file)."""
        mine = self.uncommitted.get(ino)
        if mine is not None:
            mine.discard(cid)
            if not mine:
                del self.uncommitted[ino]

    @staticmethod
    def _touch(node: Inode, now: int) -> None:
        node.mtime_ns = now
        node.ctime_ns = now

    def _child_slot(self, parent: int, name: bytes) -> Inode:
        """The directory ``parent`` where ``name`` is about to be created (must be free)."""
        check_name(name)
        d = self._dir(parent)
        assert d.entries is not None
        if name in d.entries:
            raise Exists(f"{name!r} exists in directory {parent}")
        return d

    def _new_inode(
        self,
        parent: Inode,
        mode: int,
        cred: dict[str, Any],
        now: int,
        rdev: int = 0,
        umask: int = 0,
    ) -> Inode:
        """Allocate an inode under ``parent`` with ownership by POSIX and BSD-setgid rules.

        Its permissions follow ``posix_acl_create``: under a directory with a default ACL the
        requested ``mode`` is ANDed with that ACL (which becomes the new access ACL, and a new
        directory's default ACL too) and ``umask`` is ignored; otherwise ``mode & ~umask``.
        Symlinks keep 0777 and no ACL.
        """
        xattrs: dict[bytes, bytes] = {}
        if not stat.S_ISLNK(mode):
            inherited = acl.inherit(
                _stored_acl(parent, acl.XATTR_DEFAULT),
                mode & PERM_MASK,
                umask,
                is_dir=stat.S_ISDIR(mode),
            )
            mode = stat.S_IFMT(mode) | inherited.mode
            if inherited.access is not None:
                xattrs[acl.XATTR_ACCESS] = acl.encode(inherited.access)
            if inherited.default is not None:
                xattrs[acl.XATTR_DEFAULT] = acl.encode(inherited.default)
        gid = int(cred["gid"])
        if parent.mode & stat.S_ISGID:
            # BSD group semantics: the new object takes the directory's group, and a new
            # directory inherits the setgid bit so the rule propagates down the tree.
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        ino = InodeId(self.next_ino)
        self.next_ino += 1
        node = Inode(
            ino, mode, uid=int(cred["uid"]), gid=gid, now_ns=now, goal=parent.goal, rdev=rdev
        )
        if xattrs:
            node.xattrs = xattrs
        self.inodes[ino] = node
        return node

    def _link_new(self, parent: Inode, name: bytes, node: Inode, now: int) -> dict[str, Any]:
        assert parent.entries is not None
        parent.entries[name] = node.ino
        self._touch(parent, now)
        return node.attr()

    def _drop_link(self, node: Inode, now: int) -> None:
        """One directory entry referencing a non-directory is gone."""
        node.nlink -= 1
        if node.nlink > 0:
            node.ctime_ns = now
        else:
            self._free(node)

    def _set_holds(self, holds: dict[InodeId, set[int]]) -> None:
        self.holds = {i: set(s) for i, s in holds.items() if s}
        self.held_by = {}
        for ino, sids in self.holds.items():
            for sid in sids:
                self.held_by.setdefault(sid, set()).add(ino)

    def _hold(self, ino: InodeId, sid: int) -> None:
        self.holds.setdefault(ino, set()).add(sid)
        self.held_by.setdefault(sid, set()).add(ino)

    def _unhold(self, ino: InodeId, sid: int) -> None:
        """``sid`` no longer holds ``ino``; an unlinked file nobody holds is freed."""
        sids = self.holds.get(ino)
        if sids is None or sid not in sids:
            return
        sids.discard(sid)
        inos = self.held_by.get(sid)
        if inos is not None:
            inos.discard(ino)
            if not inos:
                del self.held_by[sid]
        if not sids:
            del self.holds[ino]
            node = self.inodes.get(ino)
            if node is not None and node.nlink == 0:
                self._free(node)

    def _drop_session_holds(self, sid: int) -> None:
        for ino in sorted(self.held_by.get(sid, ())):
            self._unhold(ino, sid)

    def _free(self, node: Inode) -> None:
        """``node`` lost its last name: gone now, or when the last session holding it open
        releases it (an open-unlinked file keeps its data, chunks and locks until then)."""
        if node.ino in self.holds:
            node.nlink = 0
            return
        del self.inodes[node.ino]
        self.locks.inode_gone(node.ino)
        self.uncommitted.pop(node.ino, None)
        if node.is_dir:
            self.n_dirs -= 1
        elif node.is_reg:
            self.n_files -= 1
            if node.chunks:
                for cid in node.chunks.values():
                    del self.chunks[cid]
                    self._freed.append(cid)

    def _is_ancestor(self, anc: InodeId, ino: InodeId) -> bool:
        """Whether directory ``anc`` is ``ino`` or one of its ancestors (O(depth))."""
        cur = ino
        while True:
            if cur == anc:
                return True
            if cur == ROOT_INODE:
                return False
            parent = self.inodes[cur].parent
            assert parent is not None
            cur = parent

    # ------------------------------------------------------------------ ops
    def _op_set_member(self, c: dict[str, Any]) -> None:
        """Record the address of Raft member ``id`` (before it is added to the group)."""
        member, address = str(c["id"]), str(c["address"])
        if not member or ":" not in address:
            raise InvalidArgument(f"bad member {member!r} at {address!r}")
        self.members[member] = address

    def _op_drop_member(self, c: dict[str, Any]) -> None:
        self.members.pop(str(c["id"]), None)

    def _op_fsck_fix(self, c: dict[str, Any]) -> list[str]:
        """``dfs fsck --repair``: restore the invariants (``dfs.metaserver.nsrepair``)."""
        from dfs.metaserver.nsrepair import repair

        if not self.initialised:
            raise InvalidArgument("namespace not initialised")
        return repair(self, int(c["now_ns"]))

    def _op_drop_lost_chunk(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, index, chunk_id, [uncommitted]}``: a chunk with no valid replica left
        leaves its file, whose bytes there read as zeros from now on: ``dfs fsck --repair
        --zero-fill``, or (``uncommitted``) the leader, for a chunk allocated since the file's
        last commit that no chunkserver holds (see the schema); that drop changes no time
        stamp, as no byte a reader could have seen changes.  A no-op unless the file still
        maps ``index`` to ``chunk_id`` (and, with ``uncommitted``, nothing committed since)."""
        node = self.inodes.get(InodeId(int(c["ino"])))
        index, cid = int(c["index"]), ChunkId(int(c["chunk_id"]))
        if node is None or not node.chunks or node.chunks.get(index) != cid:
            return {"dropped": False}
        uncommitted = bool(c.get("uncommitted"))
        if uncommitted and not self.is_uncommitted(cid):
            return {"dropped": False}
        del node.chunks[index]
        if not node.chunks:
            node.chunks = None
        del self.chunks[cid]
        self._freed.append(cid)
        self._committed(node.ino, cid)
        if uncommitted:
            self.dropped[cid] = node.ino
            while len(self.dropped) > DROPPED_KEEP:
                del self.dropped[next(iter(self.dropped))]
        else:
            node.ctime_ns = c["now_ns"]
        return {"dropped": True}

    def _op_noop(self, c: dict[str, Any]) -> None:
        """Nothing, or (``registered``) a chunkserver registered with the leader."""
        server = c.get("registered")
        if isinstance(server, str) and server:
            self.chunkservers.add(server)

    def _op_set_flag(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{name, value}``: set an operator switch (0 removes it)."""
        name, value = str(c["name"]), int(c["value"])
        if name not in FLAGS:
            raise InvalidArgument(f"unknown flag {name!r}")
        before = self.flags.get(name, 0)
        if value:
            self.flags[name] = value
        else:
            self.flags.pop(name, None)
        return {"previous": before}

    def _op_set_cs_mode(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{id, mode, until_ns}``: take chunkserver ``id`` out of normal service or put it
        back (``normal``).  ``until_ns`` bounds a maintenance (0: no bound).  Returns the
        previous mode."""
        server, mode = str(c["id"]), str(c["mode"])
        if not server or mode not in CS_MODES:
            raise InvalidArgument(f"bad chunkserver mode {mode!r} for {server!r}")
        before = self.cs_modes.get(server, ("normal", 0))[0]
        if mode == "removed":
            # Out of the cluster: no longer waited for after an election.
            self.cs_modes.pop(server, None)
            self.chunkservers.discard(server)
        elif mode == "normal":
            self.cs_modes.pop(server, None)
        else:
            self.cs_modes[server] = (mode, int(c.get("until_ns", 0)))
        return {"previous": before}

    def _op_init(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{op: init, now_ns, goal, cluster_id}``: create the root (first entry of a log)."""
        if self.initialised:
            raise InvalidArgument("namespace already initialised")
        root = Inode(
            ROOT_INODE,
            stat.S_IFDIR | 0o755,
            uid=0,
            gid=0,
            now_ns=c["now_ns"],
            goal=int(c["goal"]),
            nlink=2,
        )
        root.parent = ROOT_INODE
        root.entries = {}
        self.inodes[ROOT_INODE] = root
        self.n_dirs += 1
        self.cluster_id = str(c["cluster_id"])
        return root.attr()

    def _op_mknod(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{parent, name, mode, rdev, cred, [umask]}``: regular file, FIFO, socket or device.
        ``umask`` (0 when absent: entries logged before it existed) applies as in
        ``_new_inode``."""
        mode = int(c["mode"])
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise NotPermitted("mknod cannot create a directory")
        if kind not in _MKNOD_TYPES:
            raise InvalidArgument(f"mknod cannot create file type {kind:o}")
        d = self._child_slot(c["parent"], c["name"])
        now = c["now_ns"]
        rdev = int(c.get("rdev", 0)) if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        umask = int(c.get("umask", 0))
        node = self._new_inode(d, kind | (mode & PERM_MASK), c["cred"], now, rdev, umask)
        if kind == stat.S_IFREG:
            self.n_files += 1
            if c.get("hold") and "session" in c:
                self._hold(node.ino, int(c["session"]))
        return self._link_new(d, c["name"], node, now)

    def _op_mkdir(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{parent, name, mode, cred, [umask]}`` (``umask`` as for ``mknod``)."""
        d = self._child_slot(c["parent"], c["name"])
        if d.nlink >= LINK_MAX:
            raise TooManyLinks(f"directory {d.ino} has too many subdirectories")
        now = c["now_ns"]
        mode = stat.S_IFDIR | (int(c["mode"]) & PERM_MASK)
        node = self._new_inode(d, mode, c["cred"], now, umask=int(c.get("umask", 0)))
        node.nlink = 2
        node.parent = d.ino
        node.entries = {}
        d.nlink += 1
        self.n_dirs += 1
        return self._link_new(d, c["name"], node, now)

    def _op_symlink(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{parent, name, target, cred}``."""
        target: bytes = c["target"]
        if not target:
            raise NotFound("empty symlink target")
        if len(target) >= PATH_MAX:
            raise NameTooLong(f"symlink target is {len(target)} bytes")
        if b"\0" in target:
            raise InvalidArgument("symlink target contains NUL")
        d = self._child_slot(c["parent"], c["name"])
        now = c["now_ns"]
        node = self._new_inode(d, stat.S_IFLNK | 0o777, c["cred"], now)
        node.target = target
        node.size = len(target)
        return self._link_new(d, c["name"], node, now)

    def _op_link(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, parent, name}``: a new hard link to a non-directory."""
        node = self._get(c["ino"])
        # Linux order: the new name is looked up (EEXIST) before the type check (EPERM).
        d = self._child_slot(c["parent"], c["name"])
        if node.is_dir:
            raise NotPermitted("hard links to directories are not allowed")
        if node.nlink >= LINK_MAX:
            raise TooManyLinks(f"inode {node.ino} has {node.nlink} links")
        now = c["now_ns"]
        node.nlink += 1
        node.ctime_ns = now
        return self._link_new(d, c["name"], node, now)

    def _op_unlink(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{parent, name}``: remove a non-directory entry."""
        check_name(c["name"])
        d = self._dir(c["parent"])
        assert d.entries is not None
        child = d.entries.get(c["name"])
        if child is None:
            raise NotFound(f"no entry {c['name']!r} in directory {d.ino}")
        node = self.inodes[child]
        if node.is_dir:
            raise IsADirectory(f"{c['name']!r} is a directory")
        now = c["now_ns"]
        del d.entries[c["name"]]
        self._touch(d, now)
        self._drop_link(node, now)
        # ``gone``: no name reaches the inode any more (it lives on while a client holds it)
        return {"ino": node.ino, "gone": node.nlink == 0}

    def _op_rmdir(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{parent, name}``: remove an empty directory."""
        check_name(c["name"])
        d = self._dir(c["parent"])
        assert d.entries is not None
        child = d.entries.get(c["name"])
        if child is None:
            raise NotFound(f"no entry {c['name']!r} in directory {d.ino}")
        node = self.inodes[child]
        if node.entries is None:
            raise NotADirectory(f"{c['name']!r} is not a directory")
        if node.entries:
            raise DirectoryNotEmpty(f"directory {c['name']!r} is not empty")
        now = c["now_ns"]
        del d.entries[c["name"]]
        d.nlink -= 1
        self._touch(d, now)
        node.nlink = 0
        self._free(node)
        return {"ino": node.ino}

    def _op_rename(self, c: dict[str, Any]) -> dict[str, Any] | None:
        """``{parent, name, newparent, newname, flags}`` with Linux renameat2 semantics.

        Checks follow the kernel's order (do_renameat2 then vfs_rename) so that the error of a
        request with several problems is the one Linux reports.
        """
        name: bytes = c["name"]
        newname: bytes = c["newname"]
        flags = int(c.get("flags", 0))
        check_name(name)
        check_name(newname)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
            RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise InvalidArgument(f"invalid rename flags {flags}")
        sp = self._dir(c["parent"])
        dp = self._dir(c["newparent"])
        assert sp.entries is not None and dp.entries is not None
        src_ino = sp.entries.get(name)
        if src_ino is None:
            raise NotFound(f"no entry {name!r} in directory {sp.ino}")
        dst_ino = dp.entries.get(newname)
        if flags & RENAME_NOREPLACE and dst_ino is not None:
            raise Exists(f"{newname!r} exists in directory {dp.ino}")
        if flags & RENAME_EXCHANGE and dst_ino is None:
            raise NotFound(f"no entry {newname!r} in directory {dp.ino}")
        src = self.inodes[src_ino]
        dst = self.inodes[dst_ino] if dst_ino is not None else None
        if sp is not dp:
            if src.is_dir and self._is_ancestor(src.ino, dp.ino):
                raise InvalidArgument("cannot move a directory into its own subtree")
            if dst is not None and dst.is_dir and self._is_ancestor(dst.ino, sp.ino):
                if flags & RENAME_EXCHANGE:
                    raise InvalidArgument("cannot exchange a directory with its own subtree")
                raise DirectoryNotEmpty(f"{newname!r} contains the source")
        if src is dst:
            return None  # same entry, or two hard links of one inode: POSIX says do nothing
        now = c["now_ns"]
        if dst is not None and flags & RENAME_EXCHANGE:
            self._exchange(sp=sp, name=name, src=src, dp=dp, newname=newname, dst=dst, now=now)
            return {"ino": src.ino, "replaced": dst.ino}
        if dst is not None:
            if src.is_dir and not dst.is_dir:
                raise NotADirectory(f"{newname!r} is not a directory")
            if not src.is_dir and dst.is_dir:
                raise IsADirectory(f"{newname!r} is a directory")
            if dst.entries:
                raise DirectoryNotEmpty(f"directory {newname!r} is not empty")
        elif src.is_dir and sp is not dp and dp.nlink >= LINK_MAX:
            raise TooManyLinks(f"directory {dp.ino} has too many subdirectories")
        # ---- all checks passed: mutate ----
        del sp.entries[name]
        dp.entries[newname] = src.ino
        if dst is not None:
            if dst.is_dir:
                dp.nlink -= 1
                dst.nlink = 0
                self._free(dst)
            else:
                self._drop_link(dst, now)
        if src.is_dir and sp is not dp:
            sp.nlink -= 1
            dp.nlink += 1
            src.parent = dp.ino
        src.ctime_ns = now
        self._touch(sp, now)
        self._touch(dp, now)
        return {
            "ino": src.ino,
            "replaced": dst.ino if dst is not None else None,
            "gone": dst is not None and dst.nlink == 0,
        }

    def _exchange(
        self,
        *,
        sp: Inode,
        name: bytes,
        src: Inode,
        dp: Inode,
        newname: bytes,
        dst: Inode,
        now: int,
    ) -> None:
        assert sp.entries is not None and dp.entries is not None
        if sp is not dp and src.is_dir != dst.is_dir:
            # The directory moving into the other parent adds a subdirectory link there.
            gainer = dp if src.is_dir else sp
            if gainer.nlink >= LINK_MAX:
                raise TooManyLinks(f"directory {gainer.ino} has too many subdirectories")
        sp.entries[name] = dst.ino
        dp.entries[newname] = src.ino
        if sp is not dp:
            if src.is_dir:
                sp.nlink -= 1
                dp.nlink += 1
                src.parent = dp.ino
            if dst.is_dir:
                dp.nlink -= 1
                sp.nlink += 1
                dst.parent = sp.ino
        src.ctime_ns = now
        dst.ctime_ns = now
        self._touch(sp, now)
        self._touch(dp, now)

    def _op_setattr(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, [mode], [uid], [gid], [size], [atime_ns], [mtime_ns]}`` (absent = keep).

        A size change frees chunks wholly at or beyond the new size and, when shrinking,
        reports the now-partial last chunk in ``trim`` with its ``trim_length``.
        """
        node = self._get(c["ino"])
        size = c.get("size")
        if size is not None:
            if node.is_dir:
                raise IsADirectory(f"inode {node.ino} is a directory")
            if not node.is_reg:
                raise InvalidArgument(f"inode {node.ino} is not a regular file")
            if size < 0:
                raise InvalidArgument("negative size")
            if size > MAX_FILE_SIZE:
                raise FileTooLarge(f"size {size} exceeds {MAX_FILE_SIZE}")
        now = c["now_ns"]
        trim: list[dict[str, Any]] = []
        if c.get("mode") is not None:
            node.mode = stat.S_IFMT(node.mode) | (int(c["mode"]) & PERM_MASK)
            # chmod rewrites the access ACL's owner, mask (or group) and other entries.
            access = _stored_acl(node, acl.XATTR_ACCESS)
            if access and node.xattrs is not None:
                node.xattrs[acl.XATTR_ACCESS] = acl.encode(acl.chmod(access, node.mode))
        if c.get("uid") is not None:
            node.uid = int(c["uid"])
        if c.get("gid") is not None:
            node.gid = int(c["gid"])
        if size is not None:
            trim = self._truncate(node, size)
            # truncate(2) updates mtime and ctime even when the size does not change.
            node.mtime_ns = now
        atime, mtime = self._time_arg(c, "atime", now), self._time_arg(c, "mtime", now)
        if atime is not None:
            node.atime_ns = atime
        if mtime is not None:
            node.mtime_ns = mtime
        if not c.get("access"):  # a read's access-time update leaves the change time
            node.ctime_ns = now
        return {"attr": node.attr(), "trim": trim}

    @staticmethod
    def _time_arg(c: dict[str, Any], key: str, now: int) -> int | None:
        """``{key}_now``: the command's now; else ``{key}_ns``, a time (in commands without
        ``times: "exact"``, logged before -1 could be a time, -1 means now)."""
        if c.get(f"{key}_now"):
            return now
        value = c.get(f"{key}_ns")
        if value is None:
            return None
        if value == TIME_NOW and c.get("times") != "exact":
            return now
        return int(value)

    def _truncate(self, node: Inode, size: int) -> list[dict[str, Any]]:
        old = node.size
        node.size = size
        if size >= old or not node.chunks:
            return []
        # Chunks starting at or beyond the new size hold no file data any more.
        first_gone = -(-size // CHUNK_SIZE)
        for index in sorted(i for i in node.chunks if i >= first_gone):
            cid = node.chunks.pop(index)
            del self.chunks[cid]
            self._freed.append(cid)
            self._committed(node.ino, cid)
        if not node.chunks:
            node.chunks = None
        partial = size % CHUNK_SIZE
        last = size // CHUNK_SIZE
        if partial and node.chunks and last in node.chunks:
            return [{**self._chunk_desc(node.chunks[last]), "trim_length": partial}]
        return []

    def _op_setxattr(self, c: dict[str, Any]) -> None:
        """``{ino, name, value, flags, [cred]}`` (XATTR_CREATE=1, XATTR_REPLACE=2).

        The POSIX ACL names are checked and kept in step with the mode (``_set_acl``).
        """
        node = self._get(c["ino"])
        name: bytes = c["name"]
        value: bytes = c["value"]
        flags = int(c.get("flags", 0))
        if flags & ~(XATTR_CREATE | XATTR_REPLACE) or flags == XATTR_CREATE | XATTR_REPLACE:
            raise InvalidArgument(f"invalid xattr flags {flags}")
        if not name or len(name) > XATTR_NAME_MAX:
            raise RangeError(f"xattr name length {len(name)} is out of range")
        if b"\0" in name:
            raise InvalidArgument("xattr name contains NUL")
        if len(value) > XATTR_SIZE_MAX:
            raise RangeError(f"xattr value of {len(value)} bytes exceeds {XATTR_SIZE_MAX}")
        if name in acl.ACL_NAMES:
            self._set_acl(node, name, value, c.get("cred"))
            node.ctime_ns = c["now_ns"]
            return
        present = node.xattrs is not None and name in node.xattrs
        if flags & XATTR_CREATE and present:
            raise Exists(f"attribute {name!r} exists")
        if flags & XATTR_REPLACE and not present:
            raise NoAttribute(f"no attribute {name!r}")
        if node.xattrs is None:
            node.xattrs = {}
        node.xattrs[name] = value
        node.ctime_ns = c["now_ns"]

    def _set_acl(self, node: Inode, name: bytes, value: bytes, cred: dict[str, Any] | None) -> None:
        """Store (or, for the empty or a mode-equivalent access ACL, drop) an ACL.

        Linux's order of errors (``set_posix_acl``): a malformed value EINVAL, a default ACL
        on a non-directory EACCES, a caller who is neither the owner nor root EPERM, an
        invalid ACL EINVAL.  XATTR_CREATE/REPLACE are ignored, as the kernel ignores them.
        Setting an access ACL sets the mode's permission bits (the kernel leaves that to
        FUSE servers); commands without ``cred`` (RPC callers that send none) skip the owner
        check, the kernel has made it (``default_permissions``).
        """
        entries = acl.decode(value)
        if name == acl.XATTR_DEFAULT and not node.is_dir:
            raise PermissionDenied(f"inode {node.ino} is not a directory: no default ACL")
        _check_owner(node, cred)
        if entries:
            acl.validate(entries)
        xattrs = node.xattrs if node.xattrs is not None else {}
        if not entries:
            xattrs.pop(name, None)
        elif name == acl.XATTR_DEFAULT:
            xattrs[name] = acl.encode(entries)
        else:
            bits, equivalent = acl.equiv_mode(entries)
            node.mode = node.mode & ~0o777 | bits
            if equivalent:
                xattrs.pop(name, None)
            else:
                xattrs[name] = acl.encode(entries)
        node.xattrs = xattrs or None

    def _op_removexattr(self, c: dict[str, Any]) -> None:
        """``{ino, name, [cred]}`` (removing an ACL: owner or root, when ``cred`` is given)."""
        node = self._get(c["ino"])
        if not node.xattrs or c["name"] not in node.xattrs:
            raise NoAttribute(f"no attribute {c['name']!r}")
        if c["name"] in acl.ACL_NAMES:
            _check_owner(node, c.get("cred"))
        del node.xattrs[c["name"]]
        if not node.xattrs:
            node.xattrs = None
        node.ctime_ns = c["now_ns"]

    def _op_setgoal(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, goal, cred}``: the replication goal of a regular file or directory.

        Only the owner or root may change it (like chmod: EPERM otherwise).  New children
        of a directory inherit its goal when they are created; existing chunks keep their
        replicas (only chunks allocated from now on are placed on ``goal`` servers).
        """
        node = self._get(c["ino"])
        goal = int(c["goal"])
        if not (node.is_reg or node.is_dir):
            raise InvalidArgument(f"inode {node.ino} is neither a regular file nor a directory")
        if not MIN_GOAL <= goal <= MAX_GOAL:
            raise InvalidArgument(f"goal {goal} is not between {MIN_GOAL} and {MAX_GOAL}")
        uid = int(c["cred"]["uid"])
        if uid not in (0, node.uid):
            raise NotPermitted(f"uid {uid} does not own inode {node.ino}")
        node.goal = goal
        node.ctime_ns = c["now_ns"]
        return node.attr()

    def _op_alloc_chunk(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, index, [servers]}``: the chunk at ``index``, created (version 1) if absent.

        ``servers`` (chosen by the leader before proposing) is not part of the state: replica
        locations are soft state; the committer's apply hook hands them to the registry.
        The result carries ``created``.
        """
        node = self._regular(c["ino"])
        index = int(c["index"])
        if index < 0:
            raise InvalidArgument("negative chunk index")
        if index * CHUNK_SIZE >= MAX_FILE_SIZE:
            raise FileTooLarge(f"chunk index {index} is beyond the largest file size")
        if node.chunks is not None and index in node.chunks:
            return {**self._chunk_desc(node.chunks[index]), "created": False}
        cid = ChunkId(self.next_chunk_id)
        self.next_chunk_id += 1
        if node.chunks is None:
            node.chunks = {}
        node.chunks[index] = cid
        self.chunks[cid] = (node.ino, index, ChunkVersion(1))
        self.uncommitted.setdefault(node.ino, set()).add(cid)
        return {**self._chunk_desc(cid), "created": True}

    def _op_close_session(self, c: dict[str, Any]) -> None:
        """A session ends cleanly (unmount): its locks and open files go with it."""
        self.sessions.close(c)
        self.locks.release_session(int(c["id"]))
        self._drop_session_holds(int(c["id"]))

    def _op_expire_sessions(self, c: dict[str, Any]) -> list[int]:
        """Silent sessions end: their locks and open files are released (a dead client's)."""
        gone = self.sessions.expire(c)
        for sid in gone:
            self.locks.release_session(sid)
            self._drop_session_holds(sid)
        return gone

    def _op_open(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino}`` in a session: the session holds the file open (a regular file stays,
        even without a name, until it releases it); returns the attributes."""
        node = self._get(c["ino"])
        if node.is_dir:
            raise IsADirectory(f"inode {node.ino} is a directory")
        if node.is_reg and "session" in c:
            self._hold(node.ino, int(c["session"]))
        return node.attr()

    def _op_release(self, c: dict[str, Any]) -> None:
        """``{inos}`` in a session: the session closed its last descriptor of these files;
        an unlinked one nobody else holds is freed."""
        if "session" not in c:
            return
        sid = int(c["session"])
        for ino in c["inos"]:
            self._unhold(InodeId(int(ino)), sid)

    def _op_lock_set(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, sid, owner, kind, type, start, end, pid}``: take, change or drop a lock
        without waiting; ``LockConflict`` (nothing changes) when another owner holds one.
        ``released``: some lock got weaker (waiters on the inode may proceed)."""
        node = self._get(c["ino"])
        released = self.locks.set(
            node.ino,
            (int(c["sid"]), int(c["owner"])),
            str(c["kind"]),
            int(c["type"]),
            int(c["start"]),
            int(c["end"]),
            int(c.get("pid", 0)),
        )
        return {"released": released}

    def _op_lock_release(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, sid, owner, kind}``: every lock of that owner on the inode goes (a close)."""
        released = self.locks.release_owner(
            int(c["ino"]), (int(c["sid"]), int(c["owner"])), str(c["kind"])
        )
        return {"released": released}

    def _op_set_version(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{chunk_id, version, [servers]}``: the chunk's replicas ``servers`` now hold it at
        ``version`` (a write lease began, or a replica set was repaired); every other replica is
        stale from now on.  Versions only grow: an older or equal one is refused.
        ``servers`` is soft state for the registry (apply hook), like ``alloc_chunk``'s."""
        cid = ChunkId(int(c["chunk_id"]))
        info = self.chunks.get(cid)
        if info is None:
            raise NotFound(f"chunk {cid} does not exist")
        version = int(c["version"])
        if version <= info[2]:
            raise InvalidArgument(f"chunk {cid}: version {version} is not above {info[2]}")
        self.chunks[cid] = (info[0], info[1], ChunkVersion(version))
        return self._chunk_desc(cid)

    def _op_commit_write(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, size, mtime_ns}``: data up to ``size`` is on the chunkservers."""
        node = self._regular(c["ino"])
        size = int(c["size"])
        if size < 0:
            raise InvalidArgument("negative size")
        if size > MAX_FILE_SIZE:
            raise FileTooLarge(f"size {size} exceeds {MAX_FILE_SIZE}")
        now = c["now_ns"]
        node.size = max(node.size, size)
        # The writer stored its data before committing: its chunks may hold acknowledged
        # bytes from now on (another writer's chunks too, which only errs on the safe side).
        self.uncommitted.pop(node.ino, None)
        mtime = c.get("mtime_ns", TIME_NOW)
        node.mtime_ns = now if mtime is None or mtime == TIME_NOW else int(mtime)
        node.ctime_ns = now
        return node.attr()

    def _op_append(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, length}``: reserve ``length`` bytes at the end of the file for an O_APPEND
        write (the size grows now; the writer stores the bytes there): appends of different
        clients never overlap.  Returns ``offset`` and the attributes."""
        node = self._regular(c["ino"])
        length = int(c["length"])
        if length < 0:
            raise InvalidArgument("negative length")
        offset = node.size
        if offset + length > MAX_FILE_SIZE:
            raise FileTooLarge(f"size {offset + length} exceeds {MAX_FILE_SIZE}")
        node.size = offset + length
        self._touch(node, c["now_ns"])
        return {"offset": offset, "attr": node.attr()}

    def _op_punch_hole(self, c: dict[str, Any]) -> dict[str, Any]:
        """``{ino, first, count}``: chunks ``first <= index < first + count`` leave the file
        (``fallocate(FALLOC_FL_PUNCH_HOLE)`` over whole chunks: they read as zeros from now
        on) and are freed like a truncate's.  The size stays; mtime and ctime become
        ``now_ns`` (the client zeroes partly covered chunks itself, through writes)."""
        node = self._regular(c["ino"])
        first, count = int(c["first"]), int(c["count"])
        if first < 0 or count < 0:
            raise InvalidArgument("negative chunk range")
        if node.chunks:
            for index in sorted(i for i in node.chunks if first <= i < first + count):
                cid = node.chunks.pop(index)
                del self.chunks[cid]
                self._freed.append(cid)
                self._committed(node.ino, cid)
            if not node.chunks:
                node.chunks = None
        now = c["now_ns"]
        node.mtime_ns = now
        node.ctime_ns = now
        return node.attr()
