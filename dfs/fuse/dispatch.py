"""Route a parsed request to ``Operations`` and encode the reply.

``Dispatcher.dispatch(req)`` is the reply obligation in one place: for every request that needs
an answer it returns exactly one complete reply message, whatever the handler did:

* a result                      -> the encoded reply;
* ``FuseError(e)``              -> error reply ``-e``;
* any other ``Exception``       -> logged once with its traceback, error reply ``EIO``;
* a result of the wrong shape   -> same as an exception (a handler bug), ``EIO``.

Requests that are never answered (FORGET, BATCH_FORGET, NOTIFY_REPLY) return ``None``.
``trio.Cancelled`` (and other ``BaseException``) propagate: the session turns an interrupt into
``EINTR`` and drops replies when it is shutting down.  INTERRUPT itself is handled by the
session, which owns the in-flight requests.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

from dfs.fuse import abi, replies
from dfs.fuse import requests as rq
from dfs.fuse.errors import FuseError
from dfs.fuse.handshake import FuseConfig, negotiate
from dfs.fuse.model import Attr, ConnectionInfo, Entry, FileLock, OpenReply, RequestContext, Statfs
from dfs.fuse.operations import Operations, overrides

log = logging.getLogger(__name__)

#: Opcodes the kernel never expects an answer to.
NO_REPLY_OPCODES = frozenset(
    {abi.Opcode.FORGET, abi.Opcode.BATCH_FORGET, abi.Opcode.INTERRUPT, abi.Opcode.NOTIFY_REPLY}
)


class HandlerBug(Exception):
    """A handler returned something that cannot be encoded (wrong type, too long, ...)."""


def needs_reply(opcode: int) -> bool:
    return opcode not in NO_REPLY_OPCODES


def _check(value: object, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind):
        raise HandlerBug(f"{what} returned {type(value).__name__}, expected {kind}")


def _ctx(req: rq.Request) -> RequestContext:
    return RequestContext(uid=req.uid, gid=req.gid, pid=req.pid, unique=req.unique)


def _entry(unique: int, value: object, what: str) -> bytes:
    _check(value, Entry, what)
    assert isinstance(value, Entry)
    return replies.entry_reply(unique, value)


def _attr(unique: int, value: object, what: str) -> bytes:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], Attr)
        and isinstance(value[1], int | float)
    ):
        raise HandlerBug(f"{what} must return (Attr, timeout), got {value!r}")
    return replies.attr_reply(unique, value[0], float(value[1]))


def _xattr_reply(unique: int, value: bytes, size: int) -> bytes:
    """The getxattr/listxattr size protocol: size 0 asks for the length only; a value longer
    than the caller's buffer is ERANGE."""
    if size == 0:
        return replies.getxattr_size_reply(unique, len(value))
    if len(value) > size:
        return replies.error_reply(unique, errno.ERANGE)
    return replies.reply(unique, value)


class Dispatcher:
    """Holds the negotiated connection state and calls the handlers.

    Not I/O: the session reads, parses, calls ``dispatch`` and writes what it returns.
    """

    def __init__(self, ops: Operations, config: FuseConfig) -> None:
        self.ops = ops
        self.config = config
        self.conn: ConnectionInfo | None = None
        self._destroyed = False
        self._handlers: dict[int, Callable[[rq.Request], Awaitable[bytes | None]]] = {
            abi.Opcode.INIT: self._init,
            abi.Opcode.DESTROY: self._destroy,
            abi.Opcode.LOOKUP: self._lookup,
            abi.Opcode.FORGET: self._forget,
            abi.Opcode.BATCH_FORGET: self._forget,
            abi.Opcode.GETATTR: self._getattr,
            abi.Opcode.SETATTR: self._setattr,
            abi.Opcode.READLINK: self._readlink,
            abi.Opcode.SYMLINK: self._symlink,
            abi.Opcode.MKNOD: self._mknod,
            abi.Opcode.MKDIR: self._mkdir,
            abi.Opcode.UNLINK: self._unlink,
            abi.Opcode.RMDIR: self._rmdir,
            abi.Opcode.RENAME: self._rename,
            abi.Opcode.RENAME2: self._rename,
            abi.Opcode.LINK: self._link,
            abi.Opcode.OPEN: self._open,
            abi.Opcode.OPENDIR: self._open,
            abi.Opcode.READ: self._read,
            abi.Opcode.WRITE: self._write,
            abi.Opcode.STATFS: self._statfs,
            abi.Opcode.RELEASE: self._release,
            abi.Opcode.RELEASEDIR: self._release,
            abi.Opcode.FSYNC: self._fsync,
            abi.Opcode.FSYNCDIR: self._fsync,
            abi.Opcode.SETXATTR: self._setxattr,
            abi.Opcode.GETXATTR: self._getxattr,
            abi.Opcode.LISTXATTR: self._listxattr,
            abi.Opcode.REMOVEXATTR: self._removexattr,
            abi.Opcode.FLUSH: self._flush,
            abi.Opcode.READDIR: self._readdir,
            abi.Opcode.READDIRPLUS: self._readdirplus,
            abi.Opcode.GETLK: self._getlk,
            abi.Opcode.SETLK: self._setlk,
            abi.Opcode.SETLKW: self._setlk,
            abi.Opcode.ACCESS: self._access,
            abi.Opcode.CREATE: self._create,
            abi.Opcode.BMAP: self._bmap,
            abi.Opcode.FALLOCATE: self._fallocate,
            abi.Opcode.LSEEK: self._lseek,
            abi.Opcode.COPY_FILE_RANGE: self._copy_file_range,
            abi.Opcode.NOTIFY_REPLY: self._ignore,
        }

    @property
    def setxattr_ext(self) -> bool:
        return self.conn is not None and bool(self.conn.flags & abi.FUSE_SETXATTR_EXT)

    async def dispatch(self, req: rq.Request) -> bytes | None:
        """Answer ``req``; see the module docstring for the guarantees."""
        try:
            if self.conn is None and req.opcode != abi.Opcode.INIT:
                raise FuseError(errno.EIO, "request before INIT")
            handler = self._handlers.get(req.opcode)
            if handler is None:
                raise FuseError(errno.ENOSYS)
            return await handler(req)
        except FuseError as exc:
            return self._error(req, exc.errno)
        except Exception:
            reply = self._error(req, errno.EIO)
            log.exception(
                "FUSE handler for %s (unique %d, node %d) failed; %s",
                abi.opcode_name(req.opcode),
                req.unique,
                req.nodeid,
                "answering EIO" if reply is not None else "no reply is due",
            )
            return reply

    @staticmethod
    def _error(req: rq.Request, err: int) -> bytes | None:
        return replies.error_reply(req.unique, err) if needs_reply(req.opcode) else None

    # ---- lifecycle ----
    async def _init(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Init)
        if self.conn is not None:
            raise FuseError(errno.EPROTO, "second INIT")
        outcome = negotiate(
            req,
            self.config,
            posix_locks=overrides(self.ops, "getlk") and overrides(self.ops, "setlk"),
            flock_locks=overrides(self.ops, "setlk"),
        )
        if outcome.conn is not None:
            await self.ops.init(outcome.conn)
            self.conn = outcome.conn
            log.info(
                "FUSE connection initialised: protocol 7.%d, flags %#x, max_write %d",
                outcome.conn.proto_minor,
                outcome.conn.flags,
                outcome.conn.max_write,
            )
        elif req.major > abi.KERNEL_VERSION:
            log.error("FUSE kernel protocol %d.%d is newer than ours (7.38)", req.major, req.minor)
        else:
            log.error("FUSE INIT refused: kernel protocol %d.%d too old", req.major, req.minor)
        return outcome.reply

    async def run_destroy(self) -> None:
        """Call ``Operations.destroy`` exactly once (DESTROY request or end of session)."""
        if self._destroyed or self.conn is None:
            return
        self._destroyed = True
        try:
            await self.ops.destroy()
        except Exception:
            log.exception("Operations.destroy failed")

    async def _destroy(self, req: rq.Request) -> bytes:
        await self.run_destroy()
        return replies.reply(req.unique)

    async def _ignore(self, req: rq.Request) -> None:
        return None

    # ---- names ----
    async def _lookup(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Lookup)
        entry = await self.ops.lookup(_ctx(req), req.nodeid, req.name)
        return _entry(req.unique, entry, "lookup")

    async def _forget(self, req: rq.Request) -> None:
        if isinstance(req, rq.Forget):
            items = [(req.nodeid, req.nlookup)]
        else:
            assert isinstance(req, rq.BatchForget)
            items = list(req.items)
        await self.ops.forget(items)

    async def _getattr(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Getattr)
        result = await self.ops.getattr(_ctx(req), req.nodeid, req.fh)
        return _attr(req.unique, result, "getattr")

    async def _setattr(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Setattr)
        result = await self.ops.setattr(_ctx(req), req.nodeid, req.changes)
        return _attr(req.unique, result, "setattr")

    async def _readlink(self, req: rq.Request) -> bytes:
        target = await self.ops.readlink(_ctx(req), req.nodeid)
        _check(target, bytes, "readlink")
        return replies.reply(req.unique, target)

    async def _symlink(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Symlink)
        entry = await self.ops.symlink(_ctx(req), req.nodeid, req.name, req.target)
        return _entry(req.unique, entry, "symlink")

    async def _mknod(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Mknod)
        entry = await self.ops.mknod(_ctx(req), req.nodeid, req.name, req.mode, req.rdev, req.umask)
        return _entry(req.unique, entry, "mknod")

    async def _mkdir(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Mkdir)
        entry = await self.ops.mkdir(_ctx(req), req.nodeid, req.name, req.mode, req.umask)
        return _entry(req.unique, entry, "mkdir")

    async def _unlink(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Unlink)
        await self.ops.unlink(_ctx(req), req.nodeid, req.name)
        return replies.reply(req.unique)

    async def _rmdir(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Rmdir)
        await self.ops.rmdir(_ctx(req), req.nodeid, req.name)
        return replies.reply(req.unique)

    async def _rename(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Rename)
        await self.ops.rename(_ctx(req), req.nodeid, req.name, req.newdir, req.newname, req.flags)
        return replies.reply(req.unique)

    async def _link(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Link)
        entry = await self.ops.link(_ctx(req), req.oldnodeid, req.nodeid, req.newname)
        return _entry(req.unique, entry, "link")

    # ---- files ----
    async def _open(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Open)
        if req.opcode == abi.Opcode.OPENDIR:
            opened = await self.ops.opendir(_ctx(req), req.nodeid, req.flags)
        else:
            opened = await self.ops.open(_ctx(req), req.nodeid, req.flags)
        _check(opened, OpenReply, abi.opcode_name(req.opcode).lower())
        return replies.open_reply(req.unique, opened)

    async def _read(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Read)
        data = await self.ops.read(_ctx(req), req.nodeid, req.fh, req.offset, req.size)
        _check(data, (bytes, bytearray, memoryview), "read")
        if len(data) > req.size:
            raise HandlerBug(f"read returned {len(data)} bytes for a {req.size}-byte request")
        return replies.reply(req.unique, bytes(data))

    async def _write(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Write)
        n = await self.ops.write(
            _ctx(req), req.nodeid, req.fh, req.offset, req.data, req.write_flags
        )
        _check(n, int, "write")
        if not 0 <= n <= len(req.data):
            raise HandlerBug(f"write returned {n} for {len(req.data)} bytes")
        return replies.write_reply(req.unique, n)

    async def _statfs(self, req: rq.Request) -> bytes:
        st = await self.ops.statfs(_ctx(req), req.nodeid)
        _check(st, Statfs, "statfs")
        return replies.statfs_reply(req.unique, st)

    async def _release(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Release)
        if req.opcode == abi.Opcode.RELEASEDIR:
            await self.ops.releasedir(_ctx(req), req.nodeid, req.fh)
        else:
            flock = bool(req.release_flags & abi.FUSE_RELEASE_FLOCK_UNLOCK)
            await self.ops.release(
                _ctx(req),
                req.nodeid,
                req.fh,
                req.flags,
                req.lock_owner if flock else None,
                bool(req.release_flags & abi.FUSE_RELEASE_FLUSH),
            )
        return replies.reply(req.unique)

    async def _fsync(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Fsync)
        datasync = bool(req.fsync_flags & abi.FUSE_FSYNC_FDATASYNC)
        if req.opcode == abi.Opcode.FSYNCDIR:
            await self.ops.fsyncdir(_ctx(req), req.nodeid, req.fh, datasync)
        else:
            await self.ops.fsync(_ctx(req), req.nodeid, req.fh, datasync)
        return replies.reply(req.unique)

    async def _flush(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Flush)
        await self.ops.flush(_ctx(req), req.nodeid, req.fh, req.lock_owner)
        return replies.reply(req.unique)

    async def _create(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Create)
        result = await self.ops.create(
            _ctx(req), req.nodeid, req.name, req.mode, req.flags, req.umask
        )
        if not (
            isinstance(result, tuple)
            and len(result) == 2
            and isinstance(result[0], Entry)
            and isinstance(result[1], OpenReply)
        ):
            raise HandlerBug(f"create must return (Entry, OpenReply), got {result!r}")
        return replies.create_reply(req.unique, result[0], result[1])

    async def _fallocate(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Fallocate)
        await self.ops.fallocate(_ctx(req), req.nodeid, req.fh, req.offset, req.length, req.mode)
        return replies.reply(req.unique)

    async def _lseek(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Lseek)
        offset = await self.ops.lseek(_ctx(req), req.nodeid, req.fh, req.offset, req.whence)
        _check(offset, int, "lseek")
        return replies.lseek_reply(req.unique, offset)

    async def _copy_file_range(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.CopyFileRange)
        n = await self.ops.copy_file_range(
            _ctx(req),
            req.nodeid,
            req.fh_in,
            req.off_in,
            req.nodeid_out,
            req.fh_out,
            req.off_out,
            req.length,
            req.flags,
        )
        _check(n, int, "copy_file_range")
        if not 0 <= n <= min(req.length, 0xFFFF_FFFF):
            raise HandlerBug(f"copy_file_range returned {n} for length {req.length}")
        return replies.write_reply(req.unique, n)

    async def _bmap(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Bmap)
        block = await self.ops.bmap(_ctx(req), req.nodeid, req.blocksize, req.block)
        _check(block, int, "bmap")
        return replies.bmap_reply(req.unique, block)

    # ---- xattrs ----
    async def _setxattr(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Setxattr)
        await self.ops.setxattr(_ctx(req), req.nodeid, req.name, req.value, req.flags)
        return replies.reply(req.unique)

    async def _getxattr(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Getxattr)
        value = await self.ops.getxattr(_ctx(req), req.nodeid, req.name)
        _check(value, bytes, "getxattr")
        return _xattr_reply(req.unique, value, req.size)

    async def _listxattr(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Listxattr)
        names = await self.ops.listxattr(_ctx(req), req.nodeid)
        _check(names, (list, tuple), "listxattr")
        for name in names:
            if not isinstance(name, bytes) or not name or b"\0" in name:
                raise HandlerBug(f"listxattr returned an invalid name {name!r}")
        return _xattr_reply(req.unique, b"".join(n + b"\0" for n in names), req.size)

    async def _removexattr(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Removexattr)
        await self.ops.removexattr(_ctx(req), req.nodeid, req.name)
        return replies.reply(req.unique)

    # ---- directories ----
    async def _readdir(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Read)
        buf = replies.DirBuffer(req.size)
        await self.ops.readdir(_ctx(req), req.nodeid, req.fh, req.offset, buf)
        return replies.reply(req.unique, buf.getvalue())

    async def _readdirplus(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Read)
        buf = replies.DirPlusBuffer(req.size)
        await self.ops.readdirplus(_ctx(req), req.nodeid, req.fh, req.offset, buf)
        return replies.reply(req.unique, buf.getvalue())

    # ---- permissions and locks ----
    async def _access(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Access)
        await self.ops.access(_ctx(req), req.nodeid, req.mask)
        return replies.reply(req.unique)

    async def _getlk(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Lk)
        lock = await self.ops.getlk(_ctx(req), req.nodeid, req.fh, req.owner, req.lock)
        _check(lock, FileLock, "getlk")
        return replies.lk_reply(req.unique, lock)

    async def _setlk(self, req: rq.Request) -> bytes:
        assert isinstance(req, rq.Lk)
        await self.ops.setlk(
            _ctx(req), req.nodeid, req.fh, req.owner, req.lock, req.sleep, req.is_flock
        )
        return replies.reply(req.unique)
