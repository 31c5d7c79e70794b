"""RPC handlers of the metaserver (docs/protocol.md, "Metaserver methods").

Mutations become commands stamped with ``now_ns`` (wall clock: file timestamps are data, not
timing logic) and go through ``RaftNode.propose``; they are answered once committed and applied.
Reads first pass ``RaftNode.read_barrier`` (ReadIndex: this node still leads and has applied
everything committed before the read), so they are linearizable; a follower answers every
client and chunkserver call with ``NotLeader`` (``details["leader"]``).  Soft state
(chunkservers, replica locations) lives in the ``Registry`` of every member (apply listeners
run on each); chunkservers register with the leader only.  Trio's clock drives liveness.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from dfs.errors import (
    BadRequest,
    DataLost,
    DfsError,
    InvalidArgument,
    IOFailure,
    NotFound,
    NotLeader,
    RangeError,
    SessionExpired,
    Unauthorized,
    Unavailable,
)
from dfs.metaserver.balance import Balancer, check_threshold
from dfs.metaserver.chunks import ChunkKeeper
from dfs.metaserver.feed import ChangeFeed, events_of
from dfs.metaserver.fsck import fsck, names_of, path_of
from dfs.metaserver.lockservice import LockService
from dfs.metaserver.namespace import CS_MODES, MAX_GOAL, MIN_GOAL
from dfs.metaserver.raftnode import RaftNode
from dfs.metaserver.registry import ChunkserverInfo, Registry
from dfs.raft import ConfChange, ConfChangeOp
from dfs.rpc.client import RpcClientPool
from dfs.rpc.dispatch import Dispatcher, Handler
from dfs.rpc.params import Params
from dfs.security.identity import Peer, Role, TlsFiles
from dfs.types import CHUNK_SIZE, ROOT_INODE, ChunkId, InodeId, NodeId

logger = logging.getLogger(__name__)

_U32 = (1 << 32) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_U64 = (1 << 64) - 1

#: Seconds a new leader waits for known chunkservers to register before it serves replica
#: locations or places chunks.
WARMUP = 5.0

CLIENT = (Role.CLIENT,)
CHUNKSERVER = (Role.CHUNKSERVER,)
ADMIN = (Role.ADMIN,)
ANYONE = (Role.CLIENT, Role.CHUNKSERVER, Role.ADMIN)


def _cred(p: Params) -> dict[str, int]:
    c = p.sub("cred")
    return {"uid": c.int("uid", min=0, max=_U32), "gid": c.int("gid", min=0, max=_U32)}


#: Longest a ``fs.watch`` waits for events before answering "nothing new".
WATCH_WAIT = 20.0


class MetaService:
    """Every metaserver RPC; ``dispatcher`` holds them with their roles."""

    def __init__(
        self,
        node: RaftNode,
        registry: Registry,
        *,
        node_id: str,
        address: str,
        cluster_id: str,
        tls: TlsFiles | None = None,
        session_timeout: float = 10.0,
        write_lease: float = 30.0,
        replication_rate: float = 100 * 2**20,
        replication_jobs: int = 4,
    ) -> None:
        self.node = node
        self.ns = node.namespace
        self.registry = registry
        self.node_id = node_id
        self.address = address
        self.cluster_id = cluster_id
        #: Used by admin.status to ask the other members for their own view.
        self._tls = tls
        #: Seconds without a request or keepalive after which the leader expires a session.
        self.session_timeout = session_timeout
        #: Session id -> trio time this node last heard from its holder (soft: a new leader
        #: counts every session as heard from when it took office).
        self._session_seen: dict[int, float] = {}
        #: Write leases and replica upkeep (its ``run`` is started by the server).
        self.keeper = ChunkKeeper(
            registry,
            node_id=node_id,
            tls=tls,
            propose=self._propose,
            is_leader=node.is_leader,
            term=lambda: int(node.core.term),
            leader_since=node.leader_since,
            lease=write_lease,
            rate=replication_rate,
            jobs=replication_jobs,
        )
        #: ``dfs rebalance`` jobs (run in the keeper's nursery, on the leader).
        self.balancer = Balancer(self.keeper)
        #: fcntl/flock waiting room (the locks themselves are in the namespace).
        self.locks = LockService(
            lambda: self.ns.locks, propose=self._propose, read_barrier=self._read
        )
        #: What clients must drop from their caches (``fs.watch``); leader soft state.
        self.feed = ChangeFeed()
        self._feed_changed = trio.Event()
        node.add_listener(self.on_applied)
        self.dispatcher = Dispatcher()
        table: list[tuple[str, Handler, tuple[Role, ...]]] = [
            ("fs.lookup", self.lookup, CLIENT),
            ("fs.getattr", self.getattr, CLIENT),
            ("fs.setattr", self.setattr, CLIENT),
            ("fs.mknod", self.mknod, CLIENT),
            ("fs.open", self.open, CLIENT),
            ("fs.watch", self.watch, CLIENT),
            ("fs.release", self.release, CLIENT),
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
            ("fs.setgoal", self.setgoal, CLIENT),
            ("file.chunks", self.file_chunks, CLIENT),
            ("file.alloc_chunk", self.alloc_chunk, CLIENT),
            ("file.commit_write", self.commit_write, CLIENT),
            ("file.punch_hole", self.punch_hole, CLIENT),
            ("file.append", self.append, CLIENT),
            ("file.release_leases", self.release_leases, CLIENT),
            ("lock.get", self.locks.get, CLIENT),
            ("lock.set", self.locks.set, CLIENT),
            ("lock.cancel", self.locks.cancel, CLIENT),
            ("lock.release", self.locks.release, CLIENT),
            ("admin.locks", self.locks.listing, ADMIN),
            ("session.open", self.session_open, ANYONE),
            ("session.keepalive", self.session_keepalive, ANYONE),
            ("session.close", self.session_close, ANYONE),
            ("admin.sessions", self.admin_sessions, ADMIN),
            ("admin.fsck", self.admin_fsck, ADMIN),
            ("admin.cs_mode", self.admin_cs_mode, ADMIN),
            ("admin.replication", self.admin_replication, ADMIN),
            ("admin.info", self.admin_info, ADMIN),
            ("admin.df", self.admin_df, ADMIN),
            ("admin.rebalance", self.admin_rebalance, ADMIN),
            ("admin.rebalance_status", self.admin_rebalance_status, ADMIN),
            ("admin.rebalance_stop", self.admin_rebalance_stop, ADMIN),
            ("admin.session_evict", self.admin_session_evict, ADMIN),
            ("cs.register", self.cs_register, CHUNKSERVER),
            ("cs.heartbeat", self.cs_heartbeat, CHUNKSERVER),
            ("cs.report_bad", self.cs_report_bad, (Role.CHUNKSERVER, Role.CLIENT)),
            ("admin.status", self.admin_status, ADMIN),
            ("admin.meta_add", self.admin_meta_add, ADMIN),
            ("admin.meta_remove", self.admin_meta_remove, ADMIN),
            ("admin.raft_status", self.admin_raft_status, (Role.METASERVER,)),
        ]
        for name, handler, roles in table:
            self.dispatcher.register(name, handler, roles)

    # ------------------------------------------------------------------ plumbing
    async def _propose(self, op: str, **args: Any) -> Any:
        self._check_initialised()
        return await self.node.propose({"op": op, "now_ns": time.time_ns(), **args})

    async def _propose_in(self, peer: Peer, p: Params, op: str, **args: Any) -> Any:
        """Propose a client's command, inside its session when the request names one
        (``session``, ``seq``, ``acked``: applied exactly once, see ``sessions``)."""
        if "session" not in p:
            return await self._propose(op, **args)
        sid = p.int("session", min=1, max=_U64)
        seq = p.int("seq", min=1, max=_U64)
        acked = p.int("acked", min=0, max=seq)
        self._touch_session(peer, sid)
        return await self._propose(op, session=sid, seq=seq, acked=acked, **args)

    def _touch_session(self, peer: Peer, sid: int) -> None:
        """Check that ``peer`` owns session ``sid`` (if this node knows it) and note that
        its holder is alive.  An unknown id is left to the state machine, which decides in
        log order (``SessionExpired``)."""
        s = self.ns.sessions.sessions.get(sid)
        if s is not None and s.owner != peer.name:
            raise Unauthorized(f"session {sid} belongs to {s.owner!r}, not {peer.name!r}")
        self._session_seen[sid] = trio.current_time()

    def _check_initialised(self) -> None:
        if not self.ns.initialised:
            raise Unavailable("the namespace is not initialised yet", retry=True)

    async def _read(self) -> None:
        """Before serving a read: linearizable (ReadIndex), NotLeader on a follower."""
        await self.node.read_barrier()
        self._check_initialised()

    async def _wait_registry_warm(self) -> None:
        """A new leader's registry starts empty: chunkservers re-register within about one
        heartbeat of an election.  Until they do (at most ``WARMUP`` after the election),
        replica locations and placement would be wrong, so wait for every chunkserver this
        node knows of: announced in the log by an earlier leader (``cs.register`` proposes a
        ``noop`` naming it) or holding chunks allocated while this node was a follower."""
        since = self.node.leader_since()
        if since is None:
            return
        deadline = since + min(WARMUP, self.registry.timeout)
        while True:
            now = trio.current_time()
            if now >= deadline or not self.registry.missing_known(now, since):
                return
            await trio.sleep(0.05)

    def _require_leader(self) -> None:
        """Chunkservers talk to the leader only (its registry places new chunks)."""
        if not self.node.is_leader():
            addr = self.node.leader_address()
            raise NotLeader(
                f"{self.node_id} is not the metadata leader" + (f"; try {addr}" if addr else ""),
                leader=addr,
            )

    def on_applied(self, command: dict[str, Any], result: Any, freed: list[ChunkId]) -> None:
        """Committer hook: keep the soft state in step with the log, in log order."""
        if freed:
            self.registry.forget_chunks(freed, delete=self.node.is_leader())
        if command["op"] == "noop" and isinstance(command.get("registered"), str):
            self.registry.expected.add(command["registered"])
        op = command["op"]
        self.locks.on_applied(command, result)
        if self.node.is_leader():
            events = events_of(command, result)
            if events:
                self._feed_epoch()
                session = command.get("session")
                self.feed.record(int(session) if session is not None else None, events)
                self._feed_changed.set()
                self._feed_changed = trio.Event()
        if op == "alloc_chunk" and result["created"]:
            cid = result["chunk_id"]
            self.registry.add_replicas(cid, command.get("servers", ()))
            self.registry.leases[cid] = trio.current_time() + self.keeper.lease
        elif op == "set_cs_mode":
            if command["mode"] == "removed":
                self.registry.forget_server(str(command["id"]))
            else:
                self.registry.mode_changed(str(command["id"]))
        elif op == "setgoal":
            node = self.ns.inodes.get(command["ino"])
            if node is not None and node.chunks:
                # The replicator copies or trims the file's chunks to the new goal.
                self.registry.suspects.update(node.chunks.values())
        elif op == "set_version":
            cid = result["chunk_id"]
            self.registry.set_version(
                cid, int(command.get("from_version", 0)), command.get("servers", ())
            )
            self.registry.leases[cid] = trio.current_time() + self.keeper.lease

    def _with_servers(self, chunk: dict[str, Any]) -> dict[str, Any]:
        servers = self.registry.live_servers(chunk["chunk_id"], trio.current_time())
        return {**chunk, "servers": servers}

    # ------------------------------------------------------------------ fs.* reads
    async def lookup(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        p = Params(params)
        return self.ns.lookup(p.int("parent", min=1), p.bytes("name"))

    async def getattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        return self.ns.getattr(Params(params).int("ino", min=1))

    async def readlink(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        return self.ns.readlink(Params(params).int("ino", min=1))

    async def readdir(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        return self.ns.readdir(Params(params).int("ino", min=1))

    async def getxattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        p = Params(params)
        return self.ns.getxattr(p.int("ino", min=1), p.bytes("name"))

    async def listxattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        return self.ns.listxattr(Params(params).int("ino", min=1))

    async def statfs(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
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
        result = await self._propose_in(
            peer,
            p,
            "setattr",
            ino=p.int("ino", min=1),
            mode=p.opt_int("mode", min=0, max=0o7777 | 0o170000),
            uid=p.opt_int("uid", min=0, max=_U32),
            gid=p.opt_int("gid", min=0, max=_U32),
            size=p.opt_int("size", min=0, max=_I64_MAX),
            atime_ns=p.opt_int("atime_ns", min=_I64_MIN, max=_I64_MAX),
            mtime_ns=p.opt_int("mtime_ns", min=_I64_MIN, max=_I64_MAX),
            atime_now=p.opt_bool("atime_now"),
            mtime_now=p.opt_bool("mtime_now"),
            access=p.opt_bool("atime_access"),
            times="exact",
        )
        if result["trim"]:
            await self._wait_registry_warm()
        return {"attr": result["attr"], "trim": [self._with_servers(c) for c in result["trim"]]}

    async def mknod(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "mknod",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            mode=p.int("mode", min=0, max=0o177777),
            rdev=p.opt_int("rdev", 0, min=0, max=_U64),
            cred=_cred(p),
            umask=p.opt_int("umask", 0, min=0, max=0o7777),
            hold=p.opt_bool("hold"),
        )

    async def open(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``ino``: the caller's session holds the file open (it outlives its last name until
        ``fs.release``); returns fresh attributes."""
        p = Params(params)
        return await self._propose_in(peer, p, "open", ino=p.int("ino", min=1))

    def _feed_epoch(self) -> None:
        self.feed.start_epoch(f"{self.node_id}/{int(self.node.core.term)}")

    async def watch(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Long poll of the change feed (``dfs.metaserver.feed``): ``epoch`` and ``after``
        (the last event the caller saw), ``session`` (its own changes are left out).  Answers
        at once with new events or a reset, else after at most ``WATCH_WAIT`` seconds."""
        self._require_leader()
        p = Params(params)
        epoch = p.opt_str("epoch", "", max_len=256) or ""
        after = p.opt_int("after", 0, min=0, max=_U64) or 0
        sid = p.opt_int("session", 0, min=0, max=_U64) or None
        if sid is not None:
            self._touch_session(peer, sid)
        self._feed_epoch()
        deadline = trio.current_time() + WATCH_WAIT
        while True:
            answer = self.feed.since(epoch, after, sid)
            if answer is not None:
                if answer["reset"] or answer["events"]:
                    return answer
                after = answer["seq"]  # only the caller's own changes: keep waiting
            if trio.current_time() >= deadline:
                return {"epoch": epoch, "seq": after, "reset": False, "events": []}
            with trio.move_on_after(min(1.0, deadline - trio.current_time())):
                await self._feed_changed.wait()
            # A deposed leader's feed stops: send the watcher to the new one.
            self._require_leader()
            self._feed_epoch()

    async def release(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``inos``: the caller's session closed its last descriptor of these files."""
        p = Params(params)
        inos = p.int_list("inos")
        if len(inos) > 1 << 16:
            raise BadRequest("param 'inos': too many inodes")
        await self._propose_in(peer, p, "release", inos=inos)

    async def mkdir(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "mkdir",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            mode=p.int("mode", min=0, max=0o177777),
            cred=_cred(p),
            umask=p.opt_int("umask", 0, min=0, max=0o7777),
        )

    async def symlink(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "symlink",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            target=p.bytes("target"),
            cred=_cred(p),
        )

    async def link(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "link",
            ino=p.int("ino", min=1),
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
        )

    async def unlink(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``{ino, gone}``: ``gone`` when that was the inode's last name."""
        p = Params(params)
        return await self._propose_in(
            peer, p, "unlink", parent=p.int("parent", min=1), name=p.bytes("name")
        )

    async def rmdir(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        await self._propose_in(
            peer, p, "rmdir", parent=p.int("parent", min=1), name=p.bytes("name")
        )

    async def rename(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``{ino, replaced, gone}`` (``gone``: ``replaced`` lost its last name), or None when
        nothing changed."""
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "rename",
            parent=p.int("parent", min=1),
            name=p.bytes("name"),
            newparent=p.int("newparent", min=1),
            newname=p.bytes("newname"),
            flags=p.opt_int("flags", 0, min=0, max=_U32),
        )

    async def setxattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "setxattr",
            ino=p.int("ino", min=1),
            name=p.bytes("name"),
            value=p.bytes("value"),
            flags=p.opt_int("flags", 0, min=0, max=_U32),
            cred=_cred(p) if "cred" in p else None,
        )

    async def removexattr(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "removexattr",
            ino=p.int("ino", min=1),
            name=p.bytes("name"),
            cred=_cred(p) if "cred" in p else None,
        )

    async def setgoal(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Set the replication goal of a file or directory (owner or root; the namespace
        checks).  A goal above the number of chunkservers this node knows of could never be
        met, so it is refused here (``RangeError``) before it reaches the log."""
        p = Params(params)
        ino = p.int("ino", min=1)
        goal = p.int("goal", min=_I64_MIN, max=_I64_MAX)
        cred = _cred(p)
        if not MIN_GOAL <= goal <= MAX_GOAL:
            raise InvalidArgument(f"goal {goal} is not between {MIN_GOAL} and {MAX_GOAL}")
        await self._read()
        known = len(self.known_chunkservers())
        if goal > known:
            raise RangeError(f"goal {goal} is more than the {known} chunkservers of the cluster")
        return await self._propose_in(peer, p, "setgoal", ino=ino, goal=goal, cred=cred)

    def known_chunkservers(self) -> set[str]:
        """Chunkservers registered with this node or announced in the log (alive or not)."""
        return set(self.registry.servers) | self.registry.expected

    # ------------------------------------------------------------------ file.*
    async def file_chunks(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        p = Params(params)
        await self._wait_registry_warm()
        ino, first = p.int("ino", min=1), p.int("first", min=0)
        count = p.int("count", min=0, max=_U32)
        chunks = self.ns.file_chunks(ino, first, count)
        pending = [c["chunk_id"] for c in chunks if self.keeper.granting(c["chunk_id"])]
        if pending:
            await self.keeper.wait_grants(pending)
            chunks = self.ns.file_chunks(ino, first, count)
        return [self._with_servers(c) for c in chunks]

    async def alloc_chunk(self, peer: Peer, params: dict[str, Any]) -> Any:
        """The chunk at ``index`` ready for writing: allocated when absent, else under a write
        lease (``dfs.metaserver.chunks``).  ``failed`` (a server id), ``version`` and ``code``
        report a replica that failed a write at that version: it is dropped and the version
        bumped on the others.  ``chunk_id``: the writer has unsynced data in that chunk; if
        the leader dropped it (``ChunkKeeper.drop_unheld``), ``DataLost``.  The answer
        carries ``lease`` (seconds it lasts)."""
        await self._read()
        await self._wait_registry_warm()
        p = Params(params)
        ino, index = p.int("ino", min=1), p.int("index", min=0)
        if "chunk_id" in p:
            had = ChunkId(p.int("chunk_id", min=1, max=_U64))
            if had in self.ns.dropped:
                raise DataLost(
                    f"chunk {had} (index {index} of inode {ino}) was lost with every replica "
                    "before a write to it was committed"
                )
        existing = self.ns.file_chunks(ino, index, 1)  # also checks ino is a regular file
        if existing:
            cid = existing[0]["chunk_id"]
            await self.keeper.write_lease(
                cid,
                failed=p.opt_str("failed", None, max_len=256) if "failed" in p else None,
                failed_version=p.opt_int("version", -1, min=-1, max=_U64),
                failed_code=p.opt_str("code", "", max_len=64) if "code" in p else None,
                holder=self._lease_holder(peer, p),
            )
            current = self.ns.file_chunks(ino, index, 1)
            if not current or current[0]["chunk_id"] != cid:
                raise IOFailure(f"chunk {cid} of inode {ino} went away while being leased")
            return {**self._with_servers(current[0]), "lease": self.keeper.lease}
        goal = self.ns.inodes[InodeId(ino)].goal
        # Placement is the leader's choice, made before proposing; the servers travel in the
        # command so the apply hook records them in log order.
        servers = self.registry.place(goal, trio.current_time())
        result = await self._propose_in(
            peer, p, "alloc_chunk", ino=ino, index=index, servers=[s.id for s in servers]
        )
        chunk = {k: result[k] for k in ("index", "chunk_id", "version")}
        if result["created"]:
            self.keeper.placed(ChunkId(result["chunk_id"]), self._lease_holder(peer, p))
        return {**self._with_servers(chunk), "lease": self.keeper.lease}

    async def commit_write(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Commit the size and mtime of written data; ``release`` (chunk ids) gives up the
        caller's write leases on them (its last handle of the file is closing)."""
        p = Params(params)
        release = [ChunkId(c) for c in p.int_list("release")] if "release" in p else []
        result = await self._propose_in(
            peer,
            p,
            "commit_write",
            ino=p.int("ino", min=1),
            size=p.int("size", min=0, max=_I64_MAX),
            mtime_ns=p.opt_int("mtime_ns", -1, min=_I64_MIN, max=_I64_MAX),
        )
        if release:
            self.keeper.release(release, self._lease_holder(peer, p))
        return result

    async def append(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``ino, length``: reserve ``length`` bytes at the end of the file for an O_APPEND
        write; returns ``{"offset", "attr"}``."""
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "append",
            ino=p.int("ino", min=1),
            length=p.int("length", min=0, max=1 << 32),
        )

    async def punch_hole(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``ino, first, count``: drop the file's chunks ``first <= index < first + count``
        (a punched hole covering them whole); they are deleted on the chunkservers like a
        truncate's.  Returns the attributes (size unchanged, new mtime)."""
        p = Params(params)
        return await self._propose_in(
            peer,
            p,
            "punch_hole",
            ino=p.int("ino", min=1),
            first=p.int("first", min=0, max=_I64_MAX),
            count=p.int("count", min=0, max=_I64_MAX),
        )

    async def release_leases(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``ino, chunks``: the caller gives up its write leases on these chunks (leader soft
        state, nothing is logged)."""
        self._require_leader()
        p = Params(params)
        chunks = p.int_list("chunks")
        if len(chunks) > 1 << 20:
            raise BadRequest("param 'chunks': too many chunk ids")
        self.keeper.release([ChunkId(c) for c in chunks], self._lease_holder(peer, p))

    @staticmethod
    def _lease_holder(peer: Peer, p: Params) -> object:
        """Who holds a write lease: the client's session (one per mount), else its name."""
        if "session" in p:
            return ("session", p.int("session", min=1, max=_U64))
        return ("peer", peer.name)

    # ------------------------------------------------------------------ session.*
    async def session_open(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        result = await self._propose(
            "open_session",
            owner=peer.name,
            kind=p.opt_str("kind", peer.role.value, max_len=64),
            label=p.opt_str("label", "", max_len=1024),
        )
        self._session_seen[int(result["session"])] = trio.current_time()
        return {"session": result["session"], "timeout": self.session_timeout}

    async def session_keepalive(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Renew a session's lease; ``SessionExpired`` once the group has ended it."""
        await self._read()
        sid = Params(params).int("session", min=1, max=_U64)
        if sid not in self.ns.sessions.sessions:
            raise SessionExpired(f"session {sid} does not exist (expired or closed)")
        self._touch_session(peer, sid)
        return {"timeout": self.session_timeout}

    async def session_close(self, peer: Peer, params: dict[str, Any]) -> Any:
        sid = Params(params).int("session", min=1, max=_U64)
        self._touch_session(peer, sid)
        await self._propose("close_session", id=sid)
        self._session_seen.pop(sid, None)

    async def admin_sessions(self, peer: Peer, params: dict[str, Any]) -> Any:
        await self._read()
        now = trio.current_time()
        out = []
        for s in self.ns.sessions.sessions.values():
            d = s.describe()
            seen = self._session_seen.get(s.id)
            d["idle_seconds"] = None if seen is None else round(now - seen, 3)
            out.append(d)
        return out

    async def admin_session_evict(self, peer: Peer, params: dict[str, Any]) -> Any:
        """End a session now (as if it expired); returns whether it existed."""
        p = Params(params)
        sid = p.int("id", min=1, max=_U64)
        gone = await self._propose_in(peer, p, "expire_sessions", ids=[sid])
        self._session_seen.pop(sid, None)
        return bool(gone)

    def expirable_sessions(self, now: float) -> list[int]:
        """Sessions this leader has not heard from for ``session_timeout``; a session this
        node has never heard from counts from when it became leader."""
        since = self.node.leader_since()
        if since is None:
            return []
        limit = now - self.session_timeout
        return [
            sid
            for sid in self.ns.sessions.sessions
            if max(self._session_seen.get(sid, since), since) < limit
        ]

    async def expire_sessions(self) -> None:
        """Leader's task: propose ``expire_sessions`` for the silent ones (forever)."""
        # Often enough that a dead client's locks go within session_timeout + 0.5 s.
        period = min(max(self.session_timeout / 4, 0.05), 0.5)
        while True:
            await trio.sleep(period)
            if not self.node.is_leader() or not self.ns.initialised:
                continue
            ids = self.expirable_sessions(trio.current_time())
            if not ids:
                continue
            try:
                gone = await self._propose("expire_sessions", ids=ids)
            except DfsError as exc:
                logger.info("could not expire sessions %s: %s", ids, exc)
                continue
            for sid in ids:
                self._session_seen.pop(sid, None)
            if gone:
                logger.info("expired silent sessions %s", gone)

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
        self._require_leader()
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
        # Announce the chunkserver in the log, so that every member knows whom to wait for
        # once it becomes leader (``_wait_registry_warm``).
        await self._propose("noop", registered=server_id)
        return {"cluster_id": self.ns.cluster_id}

    async def cs_heartbeat(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Liveness and space of a chunkserver; also renews its session (``session``):
        ``session_expired`` in the reply tells it to open a new one."""
        self._require_leader()
        p = Params(params)
        delete = self.registry.heartbeat(
            server_id=self._server_id(peer, p),
            capacity=p.int("capacity", min=0),
            free=p.int("free", min=0),
            now=trio.current_time(),
            load=p.opt_int("load", 0, min=0, max=_U32) or 0,
            since=self.node.leader_since(),
        )
        reply: dict[str, Any] = {"delete": delete}
        if "session" in p:
            sid = p.int("session", min=1, max=_U64)
            if sid in self.ns.sessions.sessions:
                self._touch_session(peer, sid)
            else:
                reply["session_expired"] = True
        return reply

    async def cs_report_bad(self, peer: Peer, params: dict[str, Any]) -> Any:
        self._require_leader()
        p = Params(params)
        self.registry.report_bad(
            server_id=p.str("id", max_len=256),
            chunk_id=p.int("chunk_id", min=1),
            version=p.int("version", min=0),
            reason=f"{p.opt_str('reason', '', max_len=1024)} (reported by {peer.name})",
        )

    # ------------------------------------------------------------------ admin.*
    def _raft_view(self) -> dict[str, Any]:
        st = self.node.statistics()
        return {
            "id": self.node_id,
            "address": self.address,
            "role": st.role,
            "term": st.term,
            "leader": st.leader,
            "leader_address": st.leader_address,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "snapshot_index": st.snapshot_index,
            "last_index": st.last_index,
        }

    async def admin_raft_status(self, peer: Peer, params: dict[str, Any]) -> Any:
        """This member's own Raft view (asked by the other members for admin.status)."""
        return self._raft_view()

    async def _members_view(self) -> list[dict[str, Any]]:
        """Every member's own view, asked in parallel (1 s each); what this node knows of a
        member that does not answer."""
        me = self._raft_view()
        conf = self.node.core.status().conf_state
        # A joining node has no configuration yet: show the members its config names.
        members = conf.voters | conf.learners or {m.id for m in self.node.group.members}
        others = [
            (m, self.node.member_address(m) or "?") for m in sorted(members) if m != self.node_id
        ]
        if not others or self._tls is None:
            return [me]
        views: dict[str, dict[str, Any]] = {}

        async def ask(pool: RpcClientPool, member_id: str, address: str) -> None:
            try:
                view = await pool.call(
                    address, "admin.raft_status", {}, timeout=1.0, fail_fast=True
                )
                if isinstance(view, dict):
                    views[member_id] = view
                    return
            except DfsError:
                pass
            views[member_id] = {"id": member_id, "address": address, "role": "unreachable"}

        async with (
            RpcClientPool(
                self._tls, name=f"{self.node_id}-status", expect_roles={Role.METASERVER}
            ) as pool,
            trio.open_nursery() as nursery,
        ):
            for member_id, address in others:
                nursery.start_soon(ask, pool, member_id, address)
        return [me, *(views[i] for i, _ in others)]

    # ------------------------------------------------------------------ admin.meta_*
    def _members(self) -> dict[str, Any]:
        conf = self.node.core.status().conf_state
        return {"voters": sorted(conf.voters), "learners": sorted(conf.learners)}

    async def admin_meta_add(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Add metaserver ``id`` at ``address`` to the Raft group, one server at a time
        (dissertation §4.2.1): record its address in the log, take a snapshot (so it
        catches up by InstallSnapshot, not by replaying the whole log), add it as a learner,
        wait until it has the log up to the commit index, then make it a voter."""
        p = Params(params)
        member = p.str("id", max_len=64)
        address = p.str("address", max_len=512)
        catch_up = p.int("timeout", min=1, max=86400) if "timeout" in p else 300
        self._require_leader()
        if not member or member == self.node_id:
            raise BadRequest(f"cannot add member {member!r}")
        conf = self.node.core.status().conf_state
        if member in conf.voters:
            return self._members()  # a repeated add (the client retried): already done
        await self._propose("set_member", id=member, address=address)
        await self.node.take_snapshot()
        if member not in conf.learners:
            await self.node.propose_conf_change(
                ConfChange(ConfChangeOp.ADD_LEARNER, NodeId(member))
            )
        logger.info(
            "metaserver %s at %s added as a learner; waiting for it to catch up", member, address
        )
        deadline = trio.current_time() + catch_up
        while True:
            self._require_leader()
            st = self.node.core.status()
            pr = st.progress.get(NodeId(member))
            if pr is not None and pr.match >= st.commit:
                break
            if trio.current_time() >= deadline:
                raise Unavailable(
                    f"{member} at {address} did not catch up within {catch_up} s "
                    f"(it has index {pr.match if pr else 0} of {st.commit}); it stays a "
                    "learner: check that it runs with join = true, then add it again"
                )
            await trio.sleep(0.05)
        await self.node.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, NodeId(member)))
        logger.info("metaserver %s is a voting member", member)
        return self._members()

    async def admin_meta_remove(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Remove metaserver ``id`` from the Raft group.  The leader does not remove itself:
        it hands leadership to another voter and answers NotLeader, so the caller retries on
        the new leader."""
        member = Params(params).str("id", max_len=64)
        self._require_leader()
        conf = self.node.core.status().conf_state
        if member not in conf.voters | conf.learners:
            return self._members()  # unknown, or a repeated remove: nothing to do
        if len(conf.voters) == 1 and member in conf.voters:
            raise BadRequest(f"{member} is the only voting member; add another one first")
        if member == self.node_id:
            st = self.node.core.status()
            others = [v for v in conf.voters if v != member]
            best = max(others, key=lambda v: int(st.progress[v].match) if v in st.progress else -1)
            await self.node.transfer_leadership(best)
            # The core's role has no event to wait on; poll it (bounded).
            for _ in range(250):
                if not self.node.is_leader():
                    break
                await trio.sleep(0.02)
            raise NotLeader(
                f"{self.node_id} handed leadership to {best} before removing itself",
                leader=self.node.leader_address(),
            )
        await self.node.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, NodeId(member)))
        await self._propose("drop_member", id=member)
        logger.info("metaserver %s removed from the group", member)
        return self._members()

    async def admin_fsck(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``dfs fsck``: the leader's report (``dfs.metaserver.fsck``) of the subtree at ``ino``
        (default: everything); orphan chunks seen for at least ``orphan_age`` seconds.

        ``verify``: every live chunkserver first reads all its replicas and checks every
        block's checksum (corrupt ones are reported, then replaced by the replicator).
        ``repair`` (whole file system only): start the repairs (see ``_fsck_repair``) and
        list them in ``repairs``; the report is the state before them.  ``zero_fill`` also
        replaces chunks with no replica left by zeros."""
        self._require_leader()
        await self._read()
        await self._wait_registry_warm()
        p = Params(params)
        top = p.opt_int("ino", int(ROOT_INODE), min=1, max=_U64) or int(ROOT_INODE)
        age = p.opt_int("orphan_age", 3600, min=0, max=_U32) or 0
        repair = p.opt_bool("repair", False)
        if top not in self.ns.inodes:
            raise NotFound(f"inode {top} does not exist")
        if repair and top != ROOT_INODE:
            raise BadRequest("--repair works on the whole file system only (no PATH)")
        if repair and self.keeper.paused:
            raise BadRequest(
                "replication is paused: resume it first (dfs admin replication resume)"
            )
        verified = await self._verify_replicas() if p.opt_bool("verify", False) else None
        report = fsck(
            self.ns, self.registry, trio.current_time(), top=InodeId(top), orphan_cutoff=age
        )
        if verified is not None:
            report["verified"] = verified
        if repair:
            report["repairs"] = await self._fsck_repair(
                report, orphan_age=age, zero_fill=p.opt_bool("zero_fill", False)
            )
        return report

    async def _verify_replicas(self) -> dict[str, Any]:
        """``chunk.verify_all`` on every live chunkserver at once; the corrupt replicas they
        find are marked bad here (the chunkserver's own report may still be on its way)."""
        now = trio.current_time()
        servers = [s for s in self.registry.servers.values() if self.registry.is_alive(s.id, now)]
        results: dict[str, Any] = {}
        pool = self.keeper.require_pool()

        async def one(server: ChunkserverInfo) -> None:
            try:
                r = await pool.call(server.address, "chunk.verify_all", {}, timeout=24 * 3600.0)
            except DfsError as exc:
                results[server.id] = {"error": str(exc)}
                return
            for cid, version in r["corrupt"]:
                self.registry.report_bad(
                    server_id=server.id, chunk_id=cid, version=version, reason="fsck --verify"
                )
            results[server.id] = {
                "chunks": r["chunks"],
                "bytes": r["bytes"],
                "seconds": r["seconds"],
                "corrupt": len(r["corrupt"]),
            }

        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(one, server)
        return results

    async def _fsck_repair(
        self, report: dict[str, Any], *, orphan_age: int, zero_fill: bool
    ) -> dict[str, Any]:
        """Start what ``dfs fsck --repair`` fixes: copies of chunks under their goal (now,
        without waiting for the grace period), deletion of stale, corrupt and surplus
        replicas (by the replicator, once each chunk is at its goal) and of orphans older
        than ``orphan_age``, the namespace's invariants (``fsck_fix``).  A chunk with no
        replica left is only reported, unless ``zero_fill``."""
        reg = self.registry
        now = trio.current_time()
        out: dict[str, Any] = {}
        if report["namespace"]:
            out["namespace"] = await self._propose("fsck_fix")
        short: list[ChunkId] = []
        lost: list[tuple[InodeId, int, ChunkId]] = []
        tidy: list[ChunkId] = []
        for cid, (ino, index, _v) in self.ns.chunks.items():
            goal = self.ns.inodes[ino].goal
            live = reg.valid_servers(cid, now)
            if not live:
                lost.append((ino, index, cid))
            elif len(live) < goal:
                short.append(cid)
            elif len(live) > goal or cid in reg.stale or cid in reg.bad:
                tidy.append(cid)
        reg.urgent.update(short)
        reg.suspects.update(short)
        reg.suspects.update(tidy)
        out["copies_started"] = len(short)
        out["cleanups_started"] = len(tidy)
        out["orphans_deleted"] = reg.delete_orphans(orphan_age, now)
        if zero_fill:
            dropped = 0
            for ino, index, cid in sorted(lost):
                r = await self._propose("drop_lost_chunk", ino=ino, index=index, chunk_id=cid)
                dropped += bool(r["dropped"])
            out["zero_filled"] = dropped
        else:
            out["lost_left"] = len(lost)
        return out

    async def admin_replication(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``dfs admin replication pause|resume|status``: stop or restart the replicator's
        copies and deletions (e.g. while a rack is being worked on); a replicated flag, so
        it outlives a change of leader."""
        p = Params(params)
        action = p.str("action", max_len=16)
        if action not in ("pause", "resume", "status"):
            raise BadRequest(f"unknown replication action {action!r}")
        self._require_leader()
        if action != "status":
            value = int(action == "pause")
            await self._propose_in(peer, p, "set_flag", name="replication_paused", value=value)
            logger.warning("replication %s by an admin", "paused" if value else "resumed")
        return {"paused": self.keeper.paused}

    async def admin_info(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``dfs info PATH``: an inode's attributes, path, goal and every chunk's replicas
        (valid, stale, corrupt; alive or not) with versions and addresses."""
        self._require_leader()
        await self._read()
        p = Params(params)
        ino = InodeId(p.int("ino", min=1, max=_U64))
        node = self.ns.inodes.get(ino)
        if node is None:
            raise NotFound(f"inode {ino} does not exist")
        now = trio.current_time()
        reg = self.registry
        leaving = reg.leaving()
        chunks = []
        for index, cid in sorted((node.chunks or {}).items()):
            _i, _x, version = self.ns.chunks[cid]
            replicas: list[dict[str, Any]] = []
            for sid in sorted(reg.locations.get(cid, ())):
                replicas.append({"server": sid, "state": "valid", "version": version})
            for sid, v in sorted(reg.stale.get(cid, {}).items()):
                replicas.append({"server": sid, "state": "stale", "version": v})
            for sid, v in sorted(reg.ahead.get(cid, {}).items()):
                replicas.append({"server": sid, "state": "ahead", "version": v})
            for sid in sorted(reg.bad.get(cid, ())):
                replicas.append({"server": sid, "state": "corrupt", "version": version})
            for r in replicas:
                sid = str(r["server"])
                info = reg.servers.get(sid)
                r["address"] = info.address if info else "?"
                r["alive"] = reg.is_alive(sid, now)
                if sid in leaving:
                    r["leaving"] = True
            live = sum(1 for r in replicas if r["state"] == "valid" and r["alive"])
            chunks.append(
                {
                    "index": index,
                    "chunk_id": cid,
                    "version": version,
                    "length": max(0, min(CHUNK_SIZE, node.size - index * CHUNK_SIZE)),
                    "live": live,
                    "under_lease": self.keeper.lease_active(cid, now),
                    "replicas": replicas,
                }
            )
        names = names_of(self.ns)
        return {
            "ino": ino,
            "path": path_of(self.ns, names, ino),
            "attr": node.attr(),
            "goal": node.goal,
            "chunks": chunks,
        }

    async def admin_df(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``dfs df``: space over the chunkservers and what the files take."""
        self._require_leader()
        now = trio.current_time()
        capacity, free, live = self.registry.totals(now)
        logical = sum(n.size for n in self.ns.inodes.values() if n.is_reg)
        held = sum(
            max(0, min(CHUNK_SIZE, self.ns.inodes[i].size - x * CHUNK_SIZE))
            * len(self.registry.locations.get(c, ()))
            for c, (i, x, _v) in self.ns.chunks.items()
        )
        return {
            "capacity": capacity,
            "free": free,
            "used": capacity - free,
            "chunkservers_alive": live,
            "chunkservers_known": len(self.registry.servers),
            "logical_bytes": logical,
            "replica_bytes": held,
            **self.ns.counts(),
        }

    async def admin_cs_mode(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``dfs chunkserver decommission|maintenance|recommission ID``: set chunkserver
        ``id``'s mode (``decommission``, ``maintenance`` for at most ``seconds``, or
        ``normal``); returns its status line after the change."""
        p = Params(params)
        server = p.str("id", max_len=128)
        mode = p.str("mode", max_len=16)
        seconds = p.opt_int("seconds", 0, min=0, max=_U32) or 0
        if mode not in CS_MODES:
            raise BadRequest(f"unknown chunkserver mode {mode!r}")
        self._require_leader()
        await self._wait_registry_warm()
        known = self.registry.servers.keys() | self.ns.cs_modes.keys() | self.ns.chunkservers
        if server not in known:
            raise NotFound(f"no chunkserver {server!r} is known to this cluster")
        if mode == "removed":
            now = trio.current_time()
            if self.registry.is_alive(server, now):
                raise BadRequest(f"chunkserver {server} is running: stop it before removing it")
            left = self.registry.remaining(server, now)
            if left:
                raise BadRequest(
                    f"chunkserver {server} still holds {left} chunk(s) not at their goal "
                    "elsewhere: decommission it and wait until it is drained"
                )
        until = time.time_ns() + seconds * 1_000_000_000 if mode == "maintenance" and seconds else 0
        if mode == "decommission" and self.ns.cs_modes.get(server, ("", 0))[0] != "decommission":
            # Draining must leave every chunk at its goal: that needs room elsewhere.
            now = trio.current_time()
            others = [
                s
                for sid, s in self.registry.servers.items()
                if sid != server
                and self.registry.is_alive(sid, now)
                and self.registry.mode(sid) == "normal"
            ]
            goals = [self.ns.inodes[ROOT_INODE].goal]
            goals += [n.goal for n in self.ns.inodes.values() if n.chunks]
            if len(others) < max(goals):
                raise BadRequest(
                    f"cannot decommission {server}: {len(others)} other chunkserver(s) in "
                    f"service, and a goal of {max(goals)} needs {max(goals)}"
                )
        await self._propose_in(peer, p, "set_cs_mode", id=server, mode=mode, until_ns=until)
        now = trio.current_time()
        info = self.registry.servers.get(server)
        if info is None:
            return {"id": server, "mode": self.registry.mode(server), "state": "unknown"}
        return self.registry.server_status(info, now)

    async def admin_rebalance(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Start a rebalance job (``dfs.metaserver.balance``) or, with ``dry_run``, report
        what it would move.  Refused while chunks are under their goal unless ``force``."""
        p = Params(params)
        threshold = check_threshold(p.float("threshold") if "threshold" in p else 10.0)
        max_moves = p.opt_int("max_moves", 0, min=0, max=_U32) or 0
        bandwidth = float(p.opt_int("bandwidth", 0, min=0, max=_U64) or 0)
        self._require_leader()
        await self._read()
        await self._wait_registry_warm()
        now = trio.current_time()
        under, missing = self.registry.health(now)
        if (under or missing) and not p.opt_bool("force", False):
            raise BadRequest(
                f"{under} chunk(s) under their goal and {missing} with no replica: let the "
                "replicator finish first (dfs status), or pass --force"
            )
        if p.opt_bool("dry_run", False):
            return self.balancer.plan_only(threshold, max_moves)
        job = self.balancer.start(
            self.keeper.require_nursery(),
            threshold=threshold,
            max_moves=max_moves,
            bandwidth=bandwidth,
        )
        return job.report(self.registry, now)

    async def admin_rebalance_status(self, peer: Peer, params: dict[str, Any]) -> Any:
        """The current (or last) rebalance job's progress; asking keeps a job alive."""
        self._require_leader()
        job = self.balancer.poll()
        if job is None:
            raise NotFound("no rebalance has run on this leader")
        return job.report(self.registry, trio.current_time())

    async def admin_rebalance_stop(self, peer: Peer, params: dict[str, Any]) -> Any:
        """Stop the running rebalance (moves in flight are abandoned consistently)."""
        self._require_leader()
        job = self.balancer.stop()
        if job is None:
            raise NotFound("no rebalance has run on this leader")
        return job.report(self.registry, trio.current_time())

    async def admin_status(self, peer: Peer, params: dict[str, Any]) -> Any:
        """The cluster as this member sees it; every member answers (``role`` says which is
        the leader: only the leader knows the chunkservers), unless ``require_leader``."""
        if Params(params).opt_bool("require_leader", False):
            self._require_leader()
        now = trio.current_time()
        under, missing = self.registry.health(now)
        st = self.node.statistics()
        return {
            "node": self.node_id,
            "role": st.role,
            "leader": st.leader,
            "leader_address": st.leader_address,
            "initialised": self.ns.initialised,
            "metaservers": await self._members_view(),
            "members": self._members(),
            "chunkservers": self.registry.status(now),
            "counts": {
                **self.ns.counts(),
                "under_goal": under,
                "missing": missing,
                "bad_replicas": sum(len(h) for h in self.registry.bad.values()),
                "stale_replicas": sum(len(h) for h in self.registry.stale.values()),
                "sessions": len(self.ns.sessions.sessions),
                "locks": len(self.ns.locks.locks()),
            },
            "replication": {
                **self.keeper.stats,
                "suspects": len(self.registry.suspects),
                "copying": self.keeper.copying(),
                "write_leases": len(self.registry.leases),
                "paused": self.keeper.paused,
            },
        }
