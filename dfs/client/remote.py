"""MetaClient and ChunkClient over dfs RPC (docs/protocol.md)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from dfs.client.interfaces import (
    ChunkRef,
    Cred,
    InodeAttr,
    ServerRef,
    SetAttr,
    StatFs,
)
from dfs.errors import (
    ChunkCorrupt,
    ChunkNotFound,
    ConnectionLost,
    DeadlineExceeded,
    DfsError,
    IOFailure,
    NotLeader,
    SessionExpired,
    StaleChunkVersion,
    StillWaiting,
    Unavailable,
)
from dfs.rpc.client import RpcClientPool
from dfs.types import InodeId

log = logging.getLogger(__name__)

#: Errors after which a read may try the next replica.
#: Per-attempt limit of a waiting ``lock.set`` (the leader answers ``still_waiting`` after its
#: 20 s slice).
LOCK_ATTEMPT_TIMEOUT = 30.0

_REPLICA_ERRORS = (
    ChunkCorrupt,
    ChunkNotFound,
    StaleChunkVersion,
    Unavailable,
    ConnectionLost,
    DeadlineExceeded,
)


#: First per-attempt deadline of a repeatable metadata call when there are several members.
ATTEMPT_TIMEOUT = 2.0


#: Limit of one ``fs.watch`` attempt (the leader answers within 20 s).
WATCH_ATTEMPT_TIMEOUT = 30.0


def _gone(res: Any, key: str) -> InodeId | None:
    """The inode named by ``res[key]`` when the answer says it lost its last name."""
    if isinstance(res, dict) and res.get("gone") and isinstance(res.get(key), int):
        return InodeId(res[key])
    return None


@dataclass
class _Session:
    """A metadata session as this client holds it (see ``dfs.metaserver.sessions``)."""

    id: int
    next_seq: int = 1
    #: Sequence numbers sent and not yet answered (or given up on).
    outstanding: set[int] = field(default_factory=set)


class RpcMetaClient:
    """Talks to the metadata Raft group, following its leader, with exactly-once mutations.

    Every call goes to the member believed to lead.  ``NotLeader`` moves to
    ``details["leader"]`` (or the next address while an election runs) and retries: the
    command was not committed.  A call that could not be sent (``Unavailable`` from the
    client side) is retried on the next address.  Reads are also retried after a lost
    connection or a missing answer.

    Mutations run in a session (opened on first use, renewed by ``keep_session_alive``):
    each carries ``(session, seq, acked)`` and the group applies it at most once, so a
    mutation whose answer was lost (the leader died, the connection broke) is simply sent
    again and gets the first outcome: a retried ``mkdir`` does not fail with EEXIST.  If the
    session expired before a retry, the outcome cannot be known and the call fails with
    ``IOFailure`` (EIO); a mutation refused because the session expired before it was ever
    applied is resent once in a new session.  Everything happens within ``op_timeout``;
    then the last error is raised (EIO at the FUSE boundary).
    """

    def __init__(
        self,
        pool: RpcClientPool,
        addresses: Sequence[str],
        *,
        op_timeout: float,
        session_kind: str = "mount",
        session_label: str = "",
    ) -> None:
        if not addresses:
            raise ValueError("RpcMetaClient needs at least one metaserver address")
        self._pool = pool
        self._addresses = list(dict.fromkeys(addresses))
        self._current = self._addresses[0]
        self._timeout = op_timeout
        self._session_kind = session_kind
        self._session_label = session_label
        self._session: _Session | None = None
        #: Called when a replacement session opened (the old one expired), before any other
        #: mutation uses it, to take again what the old one held (``Vfs``: open files).
        self.on_new_session: Callable[[], Awaitable[None]] | None = None
        self._renewing: trio.lowlevel.Task | None = None
        self._session_lock = trio.Lock()
        #: The group's session timeout (from ``session.open``); keepalives go at a third.
        self.session_timeout = 10.0
        self.sessions_opened = 0

    @property
    def current(self) -> str:
        """The address calls go to first (the leader as far as this client knows)."""
        return self._current

    @property
    def session_id(self) -> int | None:
        return None if self._session is None else self._session.id

    def _next(self, leader: Any = None) -> None:
        if isinstance(leader, str) and leader and leader != self._current:
            self._current = leader
            return
        try:
            i = self._addresses.index(self._current)
        except ValueError:
            i = -1
        self._current = self._addresses[(i + 1) % len(self._addresses)]

    async def _read(self, method: str, params: dict[str, Any]) -> Any:
        return await self.request(method, params, idempotent=True)

    # ------------------------------------------------------------------ sessions
    async def open_session(self) -> int:
        """Open this client's session now if it has none (otherwise on first mutation)."""
        return (await self._ensure_session(trio.current_time() + self._timeout)).id

    async def _ensure_session(self, deadline: float) -> _Session:
        if self._renewing is not None and self._renewing is trio.lowlevel.current_task():
            assert self._session is not None
            return self._session  # on_new_session's own calls, inside the lock below
        async with self._session_lock:
            if self._session is None:
                res = await self.request(
                    "session.open",
                    {"kind": self._session_kind, "label": self._session_label},
                    idempotent=True,  # a duplicate session is harmless: it expires unused
                    deadline=deadline,
                )
                self._session = _Session(id=int(res["session"]))
                self.session_timeout = float(res.get("timeout", self.session_timeout))
                self.sessions_opened += 1
                log.debug("metadata session %d opened", self._session.id)
                if self.sessions_opened > 1 and self.on_new_session is not None:
                    # Before any other mutation runs in it: what the ended session held.
                    self._renewing = trio.lowlevel.current_task()
                    try:
                        await self.on_new_session()
                    finally:
                        self._renewing = None
            return self._session

    def _drop_session(self, sess: _Session) -> None:
        if self._session is sess:
            log.warning("metadata session %d expired; a new one will be opened", sess.id)
            self._session = None

    async def keep_session_alive(self) -> None:
        """Renew the session at a third of its timeout, forever (run it in a nursery)."""
        while True:
            await trio.sleep(self.session_timeout / 3)
            sess = self._session
            if sess is None:
                continue
            deadline = trio.current_time() + self.session_timeout / 3
            try:
                await self.request(
                    "session.keepalive", {"session": sess.id}, idempotent=True, deadline=deadline
                )
            except SessionExpired:
                self._drop_session(sess)
            except DfsError as exc:
                log.debug("session keepalive failed: %s", exc)

    async def close_session(self, *, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """End the session (clean unmount); best effort, bounded by ``timeout``."""
        sess, self._session = self._session, None
        if sess is None:
            return
        try:
            await self.request(
                "session.close",
                {"session": sess.id},
                idempotent=True,
                deadline=trio.current_time() + timeout,
            )
        except DfsError as exc:
            log.info("could not close metadata session %d: %s", sess.id, exc)

    async def mutate(self, method: str, params: dict[str, Any]) -> Any:
        """Call a metaserver mutation in this client's session: applied exactly once."""
        return await self._call(method, params)

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """A mutation, applied exactly once (see the class docstring)."""
        deadline = trio.current_time() + self._timeout
        for attempt in range(2):
            sess = await self._ensure_session(deadline)
            seq = sess.next_seq
            sess.next_seq += 1
            sess.outstanding.add(seq)
            sent = {**params, "session": sess.id, "seq": seq, "acked": min(sess.outstanding)}
            try:
                return await self.request(method, sent, idempotent=True, deadline=deadline)
            except SessionExpired:
                # Raised only when no earlier send of this request may have been applied
                # (``request`` turns it into IOFailure otherwise): safe to send again.
                self._drop_session(sess)
                if attempt:
                    raise
            finally:
                sess.outstanding.discard(seq)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ transport
    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        deadline: float | None = None,
        attempt_timeout: float | None = None,
    ) -> Any:
        """Call ``method`` on the leader (see the class docstring).  ``attempt_timeout``: the
        first attempt's own limit for calls that legitimately take long (lock waits)."""
        if deadline is None:
            deadline = trio.current_time() + self._timeout
        # With several members, do not wait out one member's reconnect backoff: another one
        # may lead.  With one, wait for it as before.
        fail_fast = len(self._addresses) > 1
        delay = 0.02
        failures = 0
        #: An earlier send may have been applied (its answer was lost).
        uncertain = False
        # A call that may be repeated does not give one member the whole deadline: a leader
        # cut off by the network never answers (no reset), while another member leads
        # within an election timeout.  The per-attempt wait doubles after each silent
        # attempt, so a slow but healthy leader is still waited for.
        attempt_cap = ATTEMPT_TIMEOUT if (idempotent and fail_fast) else float("inf")
        if attempt_timeout is not None:
            attempt_cap = attempt_timeout
        while True:
            address = self._current
            remaining = deadline - trio.current_time()
            try:
                return await self._pool.call(
                    address,
                    method,
                    params,
                    timeout=max(0.01, min(remaining, attempt_cap)),
                    fail_fast=fail_fast,
                )
            except NotLeader as exc:
                self._next(exc.details.get("leader"))
                error: DfsError = exc
            except SessionExpired as exc:
                if uncertain:
                    raise IOFailure(
                        f"{method}: the metadata session expired while the request was "
                        "retried; whether it took effect is unknown"
                    ) from exc
                raise
            except Unavailable as exc:
                # Client side (carries the address): never sent.  Server side: the node is
                # not running or the namespace not initialised (marked retryable), or the
                # outcome of a command is unknown (only a read or a sessioned mutation may
                # be retried then).
                if not (idempotent or "address" in exc.details or exc.details.get("retry")):
                    raise
                if "address" not in exc.details and not exc.details.get("retry"):
                    uncertain = True
                self._next()
                error = exc
            except (ConnectionLost, DeadlineExceeded) as exc:
                if not idempotent:
                    raise
                uncertain = True
                if isinstance(exc, DeadlineExceeded):
                    attempt_cap *= 2
                self._next()
                error = exc
            failures += 1
            if failures % len(self._addresses) == 0:
                # Every member failed once (an election is running, or all are down): pause.
                if trio.current_time() + delay >= deadline:
                    raise error
                await trio.sleep(delay)
                # Short: an election takes well under a second, and a refused connect is cheap.
                delay = min(delay * 2, 0.1)
            elif trio.current_time() >= deadline:
                raise error
            log.debug("%s on %s failed (%s); trying %s", method, address, error, self._current)

    async def lookup(self, parent: InodeId, name: bytes) -> InodeAttr:
        return InodeAttr.from_wire(await self._read("fs.lookup", {"parent": parent, "name": name}))

    async def getattr(self, ino: InodeId) -> InodeAttr:
        return InodeAttr.from_wire(await self._read("fs.getattr", {"ino": ino}))

    async def setattr(
        self, ino: InodeId, changes: SetAttr, cred: Cred
    ) -> tuple[InodeAttr, list[ChunkRef]]:
        params: dict[str, Any] = {"ino": ino, "cred": cred.to_wire()}
        for key in ("mode", "uid", "gid", "size", "atime_ns", "mtime_ns"):
            value = getattr(changes, key)
            if value is not None:
                params[key] = value
        for key in ("atime_now", "mtime_now", "atime_access"):
            if getattr(changes, key):
                params[key] = True
        res = await self._call("fs.setattr", params)
        trims = [ChunkRef.from_wire(c) for c in res.get("trim", ())]
        return InodeAttr.from_wire(res["attr"]), trims

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
        params: dict[str, Any] = {
            "parent": parent,
            "name": name,
            "mode": mode,
            "rdev": rdev,
            "cred": cred.to_wire(),
            "umask": umask,
        }
        if hold:
            params["hold"] = True
        return InodeAttr.from_wire(await self._call("fs.mknod", params))

    async def open(self, ino: InodeId) -> InodeAttr:
        return InodeAttr.from_wire(await self._call("fs.open", {"ino": ino}))

    async def watch(self, epoch: str, after: int) -> dict[str, Any]:
        """One long poll of the leader's change feed (``fs.watch``): events after ``after``
        of ``epoch`` (not this client's own), or ``reset``."""
        params: dict[str, Any] = {"epoch": epoch, "after": after}
        if self._session is not None:
            params["session"] = self._session.id
        result: dict[str, Any] = await self.request(
            "fs.watch", params, idempotent=True, attempt_timeout=WATCH_ATTEMPT_TIMEOUT
        )
        return result

    async def release(self, inos: list[InodeId]) -> None:
        await self._call("fs.release", {"inos": [int(i) for i in inos]})

    async def mkdir(
        self, parent: InodeId, name: bytes, mode: int, cred: Cred, *, umask: int = 0
    ) -> InodeAttr:
        params = {"parent": parent, "name": name, "mode": mode, "cred": cred.to_wire()}
        res = await self._call("fs.mkdir", {**params, "umask": umask})
        return InodeAttr.from_wire(res)

    async def symlink(self, parent: InodeId, name: bytes, target: bytes, cred: Cred) -> InodeAttr:
        res = await self._call(
            "fs.symlink",
            {"parent": parent, "name": name, "target": target, "cred": cred.to_wire()},
        )
        return InodeAttr.from_wire(res)

    async def link(self, ino: InodeId, parent: InodeId, name: bytes) -> InodeAttr:
        res = await self._call("fs.link", {"ino": ino, "parent": parent, "name": name})
        return InodeAttr.from_wire(res)

    async def unlink(self, parent: InodeId, name: bytes) -> InodeId | None:
        res = await self._call("fs.unlink", {"parent": parent, "name": name})
        return _gone(res, "ino")

    async def rmdir(self, parent: InodeId, name: bytes) -> None:
        await self._call("fs.rmdir", {"parent": parent, "name": name})

    async def rename(
        self, parent: InodeId, name: bytes, newparent: InodeId, newname: bytes, flags: int
    ) -> InodeId | None:
        res = await self._call(
            "fs.rename",
            {
                "parent": parent,
                "name": name,
                "newparent": newparent,
                "newname": newname,
                "flags": flags,
            },
        )
        return _gone(res, "replaced")

    async def readlink(self, ino: InodeId) -> bytes:
        res = await self._read("fs.readlink", {"ino": ino})
        return bytes(res)

    async def readdir(self, ino: InodeId) -> list[tuple[bytes, InodeAttr]]:
        res = await self._read("fs.readdir", {"ino": ino})
        return [(bytes(name), InodeAttr.from_wire(attr)) for name, attr in res]

    async def statfs(self) -> StatFs:
        res = await self._read("fs.statfs", {})
        return StatFs(
            total_bytes=int(res["total_bytes"]),
            free_bytes=int(res["free_bytes"]),
            files=int(res["files"]),
        )

    async def setxattr(
        self, ino: InodeId, name: bytes, value: bytes, flags: int, cred: Cred | None = None
    ) -> None:
        params: dict[str, Any] = {"ino": ino, "name": name, "value": value, "flags": flags}
        if cred is not None:
            params["cred"] = cred.to_wire()
        await self._call("fs.setxattr", params)

    async def getxattr(self, ino: InodeId, name: bytes) -> bytes:
        return bytes(await self._read("fs.getxattr", {"ino": ino, "name": name}))

    async def listxattr(self, ino: InodeId) -> list[bytes]:
        return [bytes(n) for n in await self._read("fs.listxattr", {"ino": ino})]

    async def removexattr(self, ino: InodeId, name: bytes, cred: Cred | None = None) -> None:
        params: dict[str, Any] = {"ino": ino, "name": name}
        if cred is not None:
            params["cred"] = cred.to_wire()
        await self._call("fs.removexattr", params)

    async def setgoal(self, ino: InodeId, goal: int, cred: Cred) -> InodeAttr:
        res = await self._call("fs.setgoal", {"ino": ino, "goal": goal, "cred": cred.to_wire()})
        return InodeAttr.from_wire(res)

    async def file_chunks(self, ino: InodeId, first: int, count: int) -> list[ChunkRef]:
        res = await self._read("file.chunks", {"ino": ino, "first": first, "count": count})
        return [ChunkRef.from_wire(c) for c in res]

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
        params: dict[str, Any] = {"ino": ino, "index": index}
        if chunk_id is not None:
            params["chunk_id"] = chunk_id
        if version is not None:
            params["version"] = version
            if failed is not None:
                params["failed"] = failed
            if code is not None:
                params["code"] = code
        return ChunkRef.from_wire(await self._call("file.alloc_chunk", params))

    async def commit_write(
        self, ino: InodeId, size: int, mtime_ns: int, *, release: list[int] | None = None
    ) -> InodeAttr:
        params: dict[str, Any] = {"ino": ino, "size": size, "mtime_ns": mtime_ns}
        if release:
            params["release"] = release
        return InodeAttr.from_wire(await self._call("file.commit_write", params))

    async def append(self, ino: InodeId, length: int) -> int:
        res = await self._call("file.append", {"ino": ino, "length": length})
        return int(res["offset"])

    async def punch_hole(self, ino: InodeId, first: int, count: int) -> InodeAttr:
        res = await self._call("file.punch_hole", {"ino": ino, "first": first, "count": count})
        return InodeAttr.from_wire(res)

    async def release_leases(self, ino: InodeId, chunk_ids: list[int]) -> None:
        # Leader soft state, not a namespace command: repeating it is harmless.
        sess = self.session_id
        params: dict[str, Any] = {"ino": ino, "chunks": chunk_ids}
        if sess is not None:
            params["session"] = sess
        await self.request("file.release_leases", params, idempotent=True)

    # ------------------------------------------------------------------ locks
    async def _lock_params(self, ino: InodeId, owner: int, kind: str) -> dict[str, Any]:
        session = await self.open_session()
        return {"ino": ino, "session": session, "owner": owner, "kind": kind}

    async def lock_get(
        self, ino: InodeId, owner: int, kind: str, type_: int, start: int, end: int
    ) -> dict[str, int] | None:
        params = await self._lock_params(ino, owner, kind)
        res = await self._read("lock.get", {**params, "type": type_, "start": start, "end": end})
        return None if res is None else {k: int(res[k]) for k in ("type", "start", "end", "pid")}

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
    ) -> None:
        """Take, change or drop a lock; with ``wait`` until it is granted (long polls of the
        leader, each bounded; cancel the caller to stop, then call ``lock_cancel``)."""
        params = await self._lock_params(ino, owner, kind)
        params |= {"type": type_, "start": start, "end": end, "pid": pid, "wait": wait}
        while True:
            try:
                await self.request(
                    "lock.set",
                    params,
                    idempotent=True,  # setting the same lock twice changes nothing
                    attempt_timeout=LOCK_ATTEMPT_TIMEOUT if wait else None,
                    deadline=trio.current_time() + max(self._timeout, 2 * LOCK_ATTEMPT_TIMEOUT)
                    if wait
                    else None,
                )
                return
            except StillWaiting:
                continue

    async def lock_cancel(self, ino: InodeId, owner: int, kind: str) -> bool:
        """Stop a waiting ``lock_set``; True if it had been granted anyway."""
        params = await self._lock_params(ino, owner, kind)
        res = await self.request("lock.cancel", params, idempotent=True)
        return bool(res and res.get("granted"))

    async def lock_release(self, ino: InodeId, owner: int, kind: str) -> None:
        """Drop every lock of ``owner`` on the inode (a close)."""
        params = await self._lock_params(ino, owner, kind)
        await self.request("lock.release", params, idempotent=True)

    async def report_bad(self, server: ServerRef, chunk: ChunkRef, reason: str) -> None:
        # Soft state on the leader, not a namespace command: repeating it is harmless.
        await self.request(
            "cs.report_bad",
            {
                "id": server.id,
                "chunk_id": chunk.chunk_id,
                "version": chunk.version,
                "reason": reason,
            },
            idempotent=True,
        )


class RpcChunkClient:
    """Reads from one replica at a time (failing over), writes through the replica chain."""

    def __init__(
        self,
        pool: RpcClientPool,
        meta: RpcMetaClient,
        *,
        op_timeout: float,
        nursery: trio.Nursery,
    ) -> None:
        self._pool = pool
        self._meta = meta
        self._timeout = op_timeout
        self._nursery = nursery
        self._rng = random.Random()

    def _order(self, servers: tuple[ServerRef, ...]) -> list[ServerRef]:
        # Spread reads over replicas; a failing one is simply skipped.
        order = list(servers)
        self._rng.shuffle(order)
        return order

    async def read(self, chunk: ChunkRef, offset: int, length: int) -> bytes:
        if not chunk.servers:
            raise IOFailure(f"chunk {chunk.chunk_id:x} has no available replica")
        errors: list[str] = []
        for server in self._order(chunk.servers):
            try:
                data = await self._pool.call(
                    server.address,
                    "chunk.read",
                    {
                        "chunk_id": chunk.chunk_id,
                        "version": chunk.version,
                        "offset": offset,
                        "length": length,
                    },
                    timeout=self._timeout,
                    # Another replica may serve it: do not wait for this one to come back.
                    fail_fast=True,
                )
                return bytes(data)
            except _REPLICA_ERRORS as exc:
                errors.append(f"{server.id}: {exc.code}")
                # A stale version means our view is old (the metaserver bumped it); only
                # damage is worth reporting.
                if isinstance(exc, ChunkCorrupt | ChunkNotFound):
                    self._nursery.start_soon(self._report_bad, server, chunk, exc.code)
                log.warning(
                    "read of chunk %x from %s failed (%s); trying another replica",
                    chunk.chunk_id,
                    server.id,
                    exc.code,
                )
        raise IOFailure(
            f"chunk {chunk.chunk_id:x}: no replica could serve it ({'; '.join(errors)})"
        )

    async def _report_bad(self, server: ServerRef, chunk: ChunkRef, reason: str) -> None:
        with trio.move_on_after(10):
            try:
                await self._meta.report_bad(server, chunk, reason)
            except DfsError as exc:
                log.info("could not report bad replica of chunk %x: %s", chunk.chunk_id, exc)

    async def _chain_call(self, chunk: ChunkRef, method: str, params: dict[str, Any]) -> None:
        """Call ``method`` on the head of the chunk's replica chain, which forwards it down."""
        if not chunk.servers:
            raise IOFailure(f"chunk {chunk.chunk_id:x} has no server to write to")
        head, *rest = chunk.servers
        try:
            await self._pool.call(
                head.address,
                method,
                {"chunk_id": chunk.chunk_id, "chain": [s.to_wire() for s in rest], **params},
                timeout=self._timeout,
                # An unreachable replica is dropped by a new lease: do not wait for it.
                fail_fast=True,
            )
        except DfsError as exc:
            # The head answers naming the replica that failed; no answer blames the head.
            if "failed" not in exc.details:
                exc.details["failed"] = head.id
            raise

    async def write(
        self, chunk: ChunkRef, offset: int, data: bytes | memoryview, sync: bool
    ) -> None:
        await self._chain_call(
            chunk,
            "chunk.write",
            {"version": chunk.version, "offset": offset, "data": data, "sync": sync},
        )

    async def write_extents(
        self, chunk: ChunkRef, extents: list[tuple[int, bytes | memoryview]], sync: bool
    ) -> None:
        await self._chain_call(
            chunk,
            "chunk.write_extents",
            {
                "version": chunk.version,
                "extents": [[offset, data] for offset, data in extents],
                "sync": sync,
            },
        )

    async def truncate(self, chunk: ChunkRef, length: int) -> None:
        await self._chain_call(
            chunk, "chunk.truncate", {"version": chunk.version, "length": length, "sync": True}
        )

    async def sync(self, chunk: ChunkRef) -> None:
        await self._chain_call(chunk, "chunk.sync", {})
