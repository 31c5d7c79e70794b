"""RPC handlers of the metaserver (docs/protocol.md, "Metaserver methods").

Mutations become commands stamped with ``now_ns`` (wall clock: file timestamps are data, not
timing logic) and go through ``Committer.propose``; they are answered once applied.  Reads are
served from the applied state, which already holds every acknowledged mutation.  Soft state
(chunkservers, replica locations) lives in the ``Registry``; trio's clock drives liveness.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from dfs.errors import BadRequest, Unauthorized
from dfs.metaserver.commit import Committer
from dfs.metaserver.registry import Registry
from dfs.rpc.dispatch import Dispatcher, Handler
from dfs.rpc.params import Params
from dfs.security.identity import Peer, Role
from dfs.types import ChunkId, InodeId

logger = logging.getLogger(__name__)

_U32 = (1 << 32) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_U64 = (1 << 64) - 1

CLIENT = (Role.CLIENT,)
CHUNKSERVER = (Role.CHUNKSERVER,)
ADMIN = (Role.ADMIN,)


def _cred(p: Params) -> dict[str, int]:
    c = p.sub("cred")
    return {"uid": c.int("uid", min=0, max=_U32), "gid": c.int("gid", min=0, max=_U32)}


class MetaService:
    """Every metaserver RPC; ``dispatcher`` holds them with their roles."""

    def __init__(
        self,
        committer: Committer,
        registry: Registry,
        *,
        node_id: str,
        address: str,
        cluster_id: str,
    ) -> None:
        self.committer = committer
        self.ns = committer.namespace
        self.registry = registry
        self.node_id = node_id
        self.address = address
        self.cluster_id = cluster_id
        committer.add_listener(self.on_applied)
        self.dispatcher = Dispatcher()
        table: list[tuple[str, Handler, tuple[Role, ...]]] = [
            ("fs.lookup", self.lookup, CLIENT),
            ("fs.getattr", self.getattr, CLIENT),
            ("fs.setattr", self.setattr, CLIENT),
            ("fs.mknod", self.mknod, CLIENT),
            ("fs.mkdir", self.mkdir, CLIENT),
            ("fs.symlink", self.symlink, CLIENT),
            ("fs.link", self.link, CLIENT),
            ("fs.unlink", self.unlink, CLIENT),
            ("fs.rmdir", self.rmdir, CLIENT),
            ("fs.rename", self.rename, CLIENT),
            ("fs.readlink", self.readlink, CLIENT),
            ("fs.readdir", self.readdir, CLIENT),
            ("fs.statfs", self.statfs, CLIENT),
            ("fs.setxattr", self.setxattr, CLIENT),
            ("fs.getxattr", self.getxattr, CLIENT),
            ("fs.listxattr", self.listxattr, CLIENT),
            ("fs.removexattr", self.removexattr, CLIENT),
            ("file.chunks", self.file_chunks, CLIENT),
            ("file.alloc_chunk", self.alloc_chunk, CLIENT),
            ("file.commit_write", self.commit_write, CLIENT),
            ("cs.register", self.cs_register, CHUNKSERVER),
            ("cs.heartbeat", self.cs_heartbeat, CHUNKSERVER),
            ("cs.report_bad", self.cs_report_bad, (Role.CHUNKSERVER, Role.CLIENT)),
            ("admin.status", self.admin_status, ADMIN),
        ]
        for name, handler, roles in table:
            self.dispatcher.register(name, handler, roles)

    # ------------------------------------------------------------------ plumbing
    async def _propose(self, op: str, **args: Any) -> Any:
        return await self.committer.propose({"op": op, "now_ns": time.time_ns(), **args})

    def on_applied(self, command: dict[str, Any], result: Any, freed: list[ChunkId]) -> None:
        """Committer hook: keep the soft state in step with the log, in log order."""
        if freed:
            self.registry.forget_chunks(freed)
        if command["op"] == "alloc_chunk" and result["created"]:
            self.registry.add_replicas(result["chunk_id"], command.get("servers", ()))

    def _with_servers(self, chunk: dict[str, Any]) -> dict[str, Any]:
        servers = self.registry.live_servers(chunk["chunk_id"], trio.current_time())
        return {**chunk, "servers": servers}

    # ------------------------------------------------------------------ fs.* reads
    async def lookup(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return self.ns.lookup(p.int("parent", min=1), p.bytes("name"))

    async def getattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        return self.ns.getattr(Params(params).int("ino", min=1))

    async def readlink(self, peer: Peer, params: dict[str, Any]) -> Any:
        return self.ns.readlink(Params(params).int("ino", min=1))

    async def readdir(self, peer: Peer, params: dict[str, Any]) -> Any:
        return self.ns.readdir(Params(params).int("ino", min=1))

    async def getxattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return self.ns.getxattr(p.int("ino", min=1), p.bytes("name"))

    async def listxattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        return self.ns.listxattr(Params(params).int("ino", min=1))

    async def statfs(self, peer: Peer, params: dict[str, Any]) -> Any:
        total, free, live = self.registry.totals(trio.current_time())
        return {
            "total_bytes": total,
            "free_bytes": free,
            "files": len(self.ns.inodes),
            "chunkservers": live,
        }

    # ------------------------------------------------------------------ fs.* mutations
    async def setattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        _cred(p)  # required by the protocol; permission checks are the kernel's
        result = await self._propose(
            "setattr",
            ino=p.int("ino", min=1),
            mode=p.opt_int("mode", min=0, max=0o7777 | 0o170000),
            uid=p.opt_int("uid", min=0, max=_U32),
            gid=p.opt_int("gid", min=0, max=_U32),
            size=p.opt_int("size", min=0, max=_I64_MAX),
            atime_ns=p.opt_int("atime_ns", min=_I64_MIN, max=_I64_MAX),
            mtime_ns=p.opt_int("mtime_ns", min=_I64_MIN, max=_I64_MAX),
        )
        return {"attr": result["attr"], "trim": [self._with_servers(c) for c in result["trim"]]}

    async def mknod(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "mknod",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            mode=p.int("mode", min=0, max=0o177777),
            rdev=p.opt_int("rdev", 0, min=0, max=_U64),
            cred=_cred(p),
        )

    async def mkdir(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "mkdir",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            mode=p.int("mode", min=0, max=0o177777),
            cred=_cred(p),
        )

    async def symlink(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "symlink",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            target=p.bytes("target"),
            cred=_cred(p),
        )

    async def link(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "link", ino=p.int("ino", min=1), parent=p.int("parent", min=1), name=p.bytes("name")
        )

    async def unlink(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose("unlink", parent=p.int("parent", min=1), name=p.bytes("name"))

    async def rmdir(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose("rmdir", parent=p.int("parent", min=1), name=p.bytes("name"))

    async def rename(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "rename",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            newparent=p.int("newparent", min=1),
            newname=p.bytes("newname"),
            flags=p.opt_int("flags", 0, min=0, max=_U32),
        )

    async def setxattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "setxattr",
            ino=p.int("ino", min=1),
            name=p.bytes("name"),
            value=p.bytes("value"),
            flags=p.opt_int("flags", 0, min=0, max=_U32),
        )

    async def removexattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose("removexattr", ino=p.int("ino", min=1), name=p.bytes("name"))

    # ------------------------------------------------------------------ file.*
    async def file_chunks(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunks = self.ns.file_chunks(
            p.int("ino", min=1), p.int("first", min=0), p.int("count", min=0, max=_U32)
        )
        return [self._with_servers(c) for c in chunks]

    async def alloc_chunk(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        ino, index = p.int("ino", min=1), p.int("index", min=0)
        existing = self.ns.file_chunks(ino, index, 1)  # also checks ino is a regular file
        if existing:
            return self._with_servers(existing[0])
        goal = self.ns.inodes[InodeId(ino)].goal
        # Placement is the leader's choice, made before proposing; the servers travel in the
        # command so the apply hook records them in log order.
        servers = self.registry.place(goal, trio.current_time())
        result = await self._propose(
            "alloc_chunk", ino=ino, index=index, servers=[s.id for s in servers]
        )
        chunk = {k: result[k] for k in ("index", "chunk_id", "version")}
        return self._with_servers(chunk)

    async def commit_write(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose(
            "commit_write",
            ino=p.int("ino", min=1),
            size=p.int("size", min=0, max=_I64_MAX),
            mtime_ns=p.opt_int("mtime_ns", -1, min=_I64_MIN, max=_I64_MAX),
        )

    # ------------------------------------------------------------------ cs.*
    @staticmethod
    def _server_id(peer: Peer, p: Params) -> str:
        """The chunkserver id of a request; a chunkserver may speak only for itself (the id
        must be its certificate's name), so one cannot pose as another.  Admin may name any."""
        server_id = p.str("id", max_len=256)
        if peer.role is Role.CHUNKSERVER and server_id != peer.name:
            raise Unauthorized(
                f"certificate {peer.name!r} may not act as chunkserver {server_id!r}"
            )
        return server_id

    async def cs_register(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        server_id = self._server_id(peer, p)
        chunks: list[tuple[int, int]] = []
        for i, item in enumerate(p.list("chunks")):
            if (
                not isinstance(item, list | tuple)
                or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
            ):
                raise BadRequest(f"param 'chunks'[{i}] must be [chunk_id, version]")
            chunks.append((item[0], item[1]))
        self.registry.register(
            server_id=server_id,
            address=p.str("address", max_len=512),
            zone=p.str("zone", max_len=256),
            capacity=p.int("capacity", min=0),
            free=p.int("free", min=0),
            chunks=chunks,
            now=trio.current_time(),
        )
        return {"cluster_id": self.cluster_id}

    async def cs_heartbeat(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        delete = self.registry.heartbeat(
            server_id=self._server_id(peer, p),
            capacity=p.int("capacity", min=0),
            free=p.int("free", min=0),
            now=trio.current_time(),
        )
        return {"delete": delete}

    async def cs_report_bad(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        self.registry.report_bad(
            server_id=p.str("id", max_len=256),
            chunk_id=p.int("chunk_id", min=1),
            version=p.int("version", min=0),
            reason=f"{p.opt_str('reason', '', max_len=1024)} (reported by {peer.name})",
        )

    # ------------------------------------------------------------------ admin.*
    async def admin_status(self, peer: Peer, params: dict[str, Any]) -> Any:
        now = trio.current_time()
        stats = self.committer.statistics()
        under, missing = self.registry.health(now)
        return {
            "metaservers": [
                {
                    "id": self.node_id,
                    "address": self.address,
                    "role": "leader",
                    "term": stats.term,
                    "commit_index": stats.commit_index,
                    "applied_index": stats.applied_index,
                }
            ],
            "chunkservers": self.registry.status(now),
            "counts": {
                **self.ns.counts(),
                "under_goal": under,
                "missing": missing,
                "bad_replicas": sum(len(h) for h in self.registry.bad.values()),
            },
        }
