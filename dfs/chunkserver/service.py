"""The chunkserver's RPC methods (``chunk.*``, see docs/protocol.md) on top of a ChunkStore.

Replicated updates (``chunk.write``, ``chunk.truncate``, ``chunk.sync``) are applied locally
*and* forwarded to the rest of the chain at the same time; the answer comes only once both are
done.  A failure names the replica that failed in ``details["failed"]`` (its server id) and
``details["failed_address"]``, so the client can tell which replica to drop:

* the local store failed -> this server;
* the next server answered an error that already names a failed replica (further down the
  chain) -> that replica, passed through unchanged;
* otherwise (the next server is unreachable, lost, or timed out) -> the next server.

Forwarding deadlines shrink along the chain (``forward_timeout + hop_margin * remaining``) so a
hung replica at the end of the chain times out at its upstream neighbour first and is the one
named, not a healthy server in the middle.

Reads verify checksums; a corrupt block is reported to the metaserver in the background
(fire-and-forget, bounded by its own timeout) and answered with ChunkCorrupt so the client
tries another replica.  Disk work runs in worker threads under one CapacityLimiter.

Metaserver-driven maintenance: ``chunk.set_version`` (a write lease bumps the version of every
replica; a bump never committed is undone), ``chunk.info`` (version, length and a digest of the
stored checksums, to compare replicas without reading data) and ``chunk.replicate`` (pull a
copy from another chunkserver with ``chunk.read``).  A pulled copy is written at the reserved
version 0, synced, and only then moved to its real version, so an interrupted copy never
passes for a valid replica (the store's startup scan deletes it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import trio

from dfs.chunkserver.store import COPY_VERSION, ChunkStore
from dfs.errors import BadRequest, Busy, ChunkCorrupt, DfsError, ProtocolError
from dfs.rpc.client import RpcClientPool
from dfs.rpc.dispatch import Dispatcher
from dfs.rpc.params import Params
from dfs.security.identity import Peer, Role
from dfs.types import CHUNK_SIZE, ChunkId, ChunkVersion

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest ``chunk.read`` answer: the data must fit into one RPC frame (16 MiB + 64 KiB).
MAX_READ: Final = 16 * 1024 * 1024
#: Reads up to this size are first tried on the event loop (``ChunkStore.read_nowait``).
INLINE_READ_MAX: Final = 128 * 1024
#: Most pieces in one ``chunk.write_extents`` (bounds the work of one request).
MAX_EXTENTS: Final = 4096
#: A chain longer than the largest replication goal is a malformed request.
MAX_CHAIN: Final = 16
_MAX_U64: Final = 2**64 - 1
#: Largest piece ``chunk.replicate`` asks the source for per ``chunk.read``.
REPLICATE_PIECE: Final = 4 * 1024 * 1024

#: ``report_bad(chunk_id, version, reason)``: tell the metaserver a replica is damaged.
ReportBad = Callable[[ChunkId, ChunkVersion, str], Awaitable[None]]


@dataclass(frozen=True)
class ChainServer:
    """One downstream replica of a write chain (``server`` in docs/protocol.md)."""

    id: str
    address: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "address": self.address}


@dataclass
class ChunkServiceStatistics:
    reads: int = 0
    bytes_read: int = 0
    writes: int = 0
    bytes_written: int = 0
    truncates: int = 0
    syncs: int = 0
    deletes: int = 0
    #: Reads answered with ChunkCorrupt, and the bad blocks they found.
    corrupt_reads: int = 0
    corrupt_blocks: int = 0
    #: Replicated updates that failed because a downstream replica failed.
    forward_failures: int = 0
    bad_reports_sent: int = 0
    bad_reports_failed: int = 0
    #: ``chunk.set_version`` calls answered (idempotent retries included).
    set_versions: int = 0
    #: Copies pulled by ``chunk.replicate`` (completed / failed) and the bytes pulled.
    replications: int = 0
    replication_failures: int = 0
    bytes_replicated: int = 0


def parse_chain(p: Params) -> list[ChainServer]:
    """The ``chain`` param (missing or nil = empty), each item ``{"id", "address"}``."""
    items = p.opt_list("chain", []) or []
    if len(items) > MAX_CHAIN:
        raise BadRequest(f"param 'chain': {len(items)} servers exceeds the limit {MAX_CHAIN}")
    chain: list[ChainServer] = []
    for i, item in enumerate(items):
        sp = Params(item, prefix=f"chain[{i}].")
        chain.append(ChainServer(id=sp.str("id", max_len=256), address=sp.str("address")))
    return chain


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint ``[lo, hi)`` ranges covering ``ranges`` (empty ones count as 1 byte,
    so an empty write still orders against writes at its offset)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted((lo, max(hi, lo + 1)) for lo, hi in ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    """Whether two sorted, disjoint range lists share a byte (a linear walk)."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] <= b[j][0]:
            i += 1
        elif b[j][1] <= a[i][0]:
            j += 1
        else:
            return True
    return False


def _blame(exc: DfsError, server: ChainServer) -> DfsError:
    """``exc`` with ``server`` recorded as the failed replica (same error class and code)."""
    details = dict(exc.details)
    details["failed"] = server.id
    details["failed_address"] = server.address
    blamed = type(exc).__new__(type(exc))
    DfsError.__init__(blamed, f"replica {server.id} ({server.address}): {exc.message}", **details)
    return blamed


class ChunkService:
    """Serves ``chunk.*`` for one store; ``run`` must be running for corruption reports.

    ``peers`` is a pool expecting chunkserver certificates (chain forwarding); ``report_bad``
    sends ``cs.report_bad`` to the metaserver.
    """

    def __init__(
        self,
        store: ChunkStore,
        *,
        node_id: str,
        address: str,
        peers: RpcClientPool,
        report_bad: ReportBad,
        disk_threads: int = 8,
        forward_timeout: float = 30.0,
        hop_margin: float = 5.0,
        report_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.me = ChainServer(node_id, address)
        self._peers = peers
        self._report_bad = report_bad
        self._limiter = trio.CapacityLimiter(disk_threads)
        self._forward_timeout = forward_timeout
        self._hop_margin = hop_margin
        self._report_timeout = report_timeout
        self._stats = ChunkServiceStatistics()
        self._reporting: set[tuple[int, int]] = set()
        #: Byte ranges of chunks with updates in flight from this head (see ``_ordered``).
        self._ranges: dict[int, list[tuple[list[tuple[int, int]], trio.Event]]] = {}
        #: Chunks a ``chunk.replicate`` is pulling right now.
        self._copying: set[int] = set()
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> ChunkServiceStatistics:
        return ChunkServiceStatistics(**vars(self._stats))

    def load(self) -> int:
        """Disk operations running or queued now (reported in heartbeats)."""
        st = self._limiter.statistics()
        return int(st.borrowed_tokens) + int(st.tasks_waiting)

    def set_address(self, address: str) -> None:
        """The advertised address, known only once the RPC server is bound."""
        self.me = ChainServer(self.me.id, address)

    def register(self, dispatcher: Dispatcher) -> None:
        data_roles = [Role.CLIENT, Role.CHUNKSERVER]
        dispatcher.register("chunk.write", self._write, data_roles)
        dispatcher.register("chunk.write_extents", self._write_extents, data_roles)
        dispatcher.register("chunk.read", self._read, data_roles)
        dispatcher.register("chunk.truncate", self._truncate, data_roles)
        dispatcher.register("chunk.sync", self._sync, data_roles)
        meta = [Role.METASERVER]
        dispatcher.register("chunk.delete", self._delete, meta)
        dispatcher.register("chunk.set_version", self._set_version, meta)
        dispatcher.register("chunk.info", self._info, meta)
        dispatcher.register("chunk.replicate", self._replicate_from, meta)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background tasks (corruption reports) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def disk(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store work in a worker thread (bounded; never abandoned mid-way)."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # ---- handlers ----
    async def _write(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        version = p.int("version", min=0, max=_MAX_U64)
        offset = p.int("offset", min=0, max=CHUNK_SIZE)
        data = p.bytes("data", max_len=CHUNK_SIZE)
        sync = p.opt_bool("sync", False)
        chain = parse_chain(p)
        forward = {
            "chunk_id": chunk_id,
            "version": version,
            "offset": offset,
            "data": data,
            "sync": sync,
        }

        async def local() -> int:
            return await self.disk(self.store.write, chunk_id, version, offset, data, sync)

        async with self._ordered(peer, chunk_id, [(offset, offset + len(data))]):
            length = await self._replicate("chunk.write", forward, chain, local)
        self._stats.writes += 1
        self._stats.bytes_written += len(data)
        return {"length": length}

    async def _write_extents(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        version = p.int("version", min=0, max=_MAX_U64)
        sync = p.opt_bool("sync", False)
        raw = p.list("extents")
        if len(raw) > MAX_EXTENTS:
            raise BadRequest(f"param 'extents': {len(raw)} pieces exceeds the limit {MAX_EXTENTS}")
        extents: list[tuple[int, bytes]] = []
        total = 0
        for i, item in enumerate(raw):
            if not isinstance(item, list) or len(item) != 2:
                raise BadRequest(f"param 'extents[{i}]': expected [offset, data]")
            offset, data = item
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise BadRequest(f"param 'extents[{i}]': bad offset")
            if not isinstance(data, bytes) or offset + len(data) > CHUNK_SIZE:
                raise BadRequest(f"param 'extents[{i}]': bad data")
            extents.append((offset, data))
            total += len(data)
        chain = parse_chain(p)
        forward = {
            "chunk_id": chunk_id,
            "version": version,
            "extents": raw,
            "sync": sync,
        }

        async def local() -> int:
            return await self.disk(self.store.write_extents, chunk_id, version, extents, sync)

        async with self._ordered(peer, chunk_id, [(o, o + len(d)) for o, d in extents]):
            length = await self._replicate("chunk.write_extents", forward, chain, local)
        self._stats.writes += 1
        self._stats.bytes_written += total
        return {"length": length}

    async def _truncate(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        version = p.int("version", min=0, max=_MAX_U64)
        length = p.int("length", min=0, max=CHUNK_SIZE)
        sync = p.opt_bool("sync", False)
        chain = parse_chain(p)
        forward = {"chunk_id": chunk_id, "version": version, "length": length, "sync": sync}

        async def local() -> None:
            await self.disk(self.store.truncate, chunk_id, version, length, sync)

        async with self._ordered(peer, chunk_id, [(0, CHUNK_SIZE)]):
            await self._replicate("chunk.truncate", forward, chain, local)
        self._stats.truncates += 1
        return None

    async def _sync(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        chain = parse_chain(p)

        async def local() -> None:
            await self.disk(self.store.sync, chunk_id)

        await self._replicate("chunk.sync", {"chunk_id": chunk_id}, chain, local)
        self._stats.syncs += 1
        return None

    async def _delete(self, peer: Peer, params: dict[str, Any]) -> Any:
        chunk_id = Params(params).int("chunk_id", min=0, max=_MAX_U64)
        if await self.disk(self.store.delete, chunk_id):
            self._stats.deletes += 1
            logger.info("deleted chunk %016x (asked by %s)", chunk_id, peer.name)
        return None

    async def _set_version(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        version = p.int("version", min=0, max=_MAX_U64)
        new_version = p.int("new_version", min=1, max=_MAX_U64)
        length = await self.disk(self.store.set_version, chunk_id, version, new_version)
        self._stats.set_versions += 1
        return {"length": length}

    async def _info(self, peer: Peer, params: dict[str, Any]) -> Any:
        chunk_id = Params(params).int("chunk_id", min=0, max=_MAX_U64)
        version, length, digest = await self.disk(self.store.info, chunk_id)
        return {"version": version, "length": length, "digest": digest}

    async def _replicate_from(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        version = p.int("version", min=1, max=_MAX_U64)
        sp = p.sub("source")
        source = ChainServer(id=sp.str("id", max_len=256), address=sp.str("address"))
        rate = p.float("rate") if "rate" in p else 0.0
        if not (math.isfinite(rate) and rate >= 0):
            raise BadRequest(f"param 'rate': {rate} is not a rate in bytes/s (0: unlimited)")
        if chunk_id in self._copying:
            raise Busy(f"chunk {chunk_id:016x}: already replicating", chunk_id=chunk_id)
        self._copying.add(chunk_id)
        try:
            length = await self._pull(chunk_id, version, source, rate)
        except BaseException:
            self._stats.replication_failures += 1
            raise
        finally:
            self._copying.discard(chunk_id)
        self._stats.replications += 1
        logger.info(
            "replicated chunk %016x version %d (%d bytes) from %s (asked by %s)",
            chunk_id,
            version,
            length,
            source.id,
            peer.name,
        )
        return {"length": length}

    async def _pull(self, chunk_id: int, version: int, source: ChainServer, rate: float) -> int:
        """Copy the chunk at ``version`` from ``source``; see the module docstring.

        Errors name the replica at fault (``_blame``): the source for its answers (including
        ChunkCorrupt, StaleChunkVersion and ChunkNotFound), this server for local failures.
        Whatever fails, the incomplete copy is deleted.
        """
        try:
            try:
                await self.disk(self.store.create_copy, chunk_id)
            except DfsError as exc:
                raise _blame(exc, self.me) from None
            offset = 0
            start = trio.current_time()
            while offset < CHUNK_SIZE:
                size = min(REPLICATE_PIECE, CHUNK_SIZE - offset)
                read = {"chunk_id": chunk_id, "version": version, "offset": offset, "length": size}
                try:
                    data = await self._peers.call(
                        source.address, "chunk.read", read, timeout=self._forward_timeout
                    )
                    if not isinstance(data, bytes) or len(data) > size:
                        raise ProtocolError("chunk.read answered something other than the bytes")
                except DfsError as exc:
                    raise _blame(exc, source) from None
                try:
                    await self.disk(self.store.append, chunk_id, COPY_VERSION, offset, data)
                except DfsError as exc:
                    raise _blame(exc, self.me) from None
                offset += len(data)
                self._stats.bytes_replicated += len(data)
                if len(data) < size:  # a short read: the chunk's end
                    break
                if rate:
                    await trio.sleep_until(start + offset / rate)
            try:
                await self.disk(self.store.sync, chunk_id)
                return await self.disk(self.store.set_version, chunk_id, COPY_VERSION, version)
            except DfsError as exc:
                raise _blame(exc, self.me) from None
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                try:
                    await self.disk(partial(self.store.delete, chunk_id, if_version=COPY_VERSION))
                except DfsError as cleanup:
                    logger.warning(
                        "chunk %016x: removing an incomplete copy failed: %s", chunk_id, cleanup
                    )
            if isinstance(exc, DfsError):
                logger.warning("replicating chunk %016x failed: %s", chunk_id, exc.message)
            raise

    async def _read(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        chunk_id = p.int("chunk_id", min=0, max=_MAX_U64)
        version = p.int("version", min=0, max=_MAX_U64)
        offset = p.int("offset", min=0, max=CHUNK_SIZE)
        length = p.int("length", min=0, max=MAX_READ)
        try:
            data = None
            if length <= INLINE_READ_MAX:
                # Small reads of cached data skip the worker-thread round trip, which costs
                # more than the read itself (random 4 KiB reads).
                data = self.store.read_nowait(chunk_id, version, offset, length)
            if data is None:
                data = await self.disk(self.store.read, chunk_id, version, offset, length)
        except ChunkCorrupt as exc:
            blocks = exc.details.get("blocks")
            self._stats.corrupt_reads += 1
            self._stats.corrupt_blocks += len(blocks) if isinstance(blocks, list) else 0
            self.report_bad_nowait(chunk_id, version, exc.message)
            raise
        self._stats.reads += 1
        self._stats.bytes_read += len(data)
        return data

    # ---- ordering ----
    @asynccontextmanager
    async def _ordered(
        self, peer: Peer, chunk_id: int, ranges: list[tuple[int, int]]
    ) -> AsyncIterator[None]:
        """At the head of a chain (a request not forwarded by a chunkserver): hold the byte
        ranges of the chunk an update touches until it is done on every replica.
        Overlapping updates from different writers therefore reach every replica in the same
        order (the head's), so replicas never differ; disjoint ones run in parallel (their
        order does not matter: they commute, zero-filling past the end included).
        Downstream servers apply what the head sends in the order it arrives."""
        if peer.role is Role.CHUNKSERVER:  # forwarded from the head: already ordered
            yield
            return
        mine = _merge(ranges)
        while True:
            # Fetched again after every wait: the list is dropped when it empties, and an
            # entry added to a dropped list would hold nothing back.
            held = self._ranges.setdefault(chunk_id, [])
            blocker = next((e for r, e in held if _overlap(r, mine)), None)
            if blocker is None:
                break
            await blocker.wait()
        entry = (mine, trio.Event())
        held.append(entry)
        try:
            yield
        finally:
            held.remove(entry)
            if not held:
                self._ranges.pop(chunk_id, None)
            entry[1].set()

    # ---- replication ----
    async def _replicate(
        self,
        method: str,
        params: dict[str, Any],
        chain: list[ChainServer],
        local: Callable[[], Awaitable[T]],
    ) -> T:
        """Run ``local`` and forward ``method`` to ``chain`` concurrently; see module doc."""
        result: list[T] = []
        local_error: list[DfsError] = []
        remote_error: list[DfsError] = []

        async def run_local() -> None:
            try:
                result.append(await local())
            except DfsError as exc:
                local_error.append(exc)

        async def run_remote() -> None:
            nxt, rest = chain[0], chain[1:]
            timeout = self._forward_timeout + self._hop_margin * len(rest)
            try:
                await self._peers.call(
                    nxt.address,
                    method,
                    {**params, "chain": [s.to_wire() for s in rest]},
                    timeout=timeout,
                    # An unreachable replica fails the update at once: the writer gets a
                    # new lease without it instead of waiting for it to come back.
                    fail_fast=True,
                )
            except DfsError as exc:
                remote_error.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_local)
            if chain:
                nursery.start_soon(run_remote)
        if local_error:
            raise _blame(local_error[0], self.me)
        if remote_error:
            self._stats.forward_failures += 1
            exc = remote_error[0]
            if "failed" not in exc.details:
                exc = _blame(exc, chain[0])
            logger.warning("%s: downstream replica failed: %s", method, exc.message)
            raise exc
        return result[0]

    # ---- corruption reports ----
    def report_bad_nowait(self, chunk_id: int, version: int, reason: str) -> None:
        """Schedule a ``cs.report_bad`` in the background (one in flight per replica)."""
        key = (chunk_id, version)
        if self._nursery is None:
            logger.warning("chunk %016x is corrupt but reporting is not running", chunk_id)
            return
        if key in self._reporting:
            return
        self._reporting.add(key)
        self._nursery.start_soon(self._send_report, chunk_id, version, reason)

    async def _send_report(self, chunk_id: int, version: int, reason: str) -> None:
        try:
            with trio.move_on_after(self._report_timeout) as scope:
                await self._report_bad(ChunkId(chunk_id), ChunkVersion(version), reason)
                self._stats.bad_reports_sent += 1
            if scope.cancelled_caught:
                self._stats.bad_reports_failed += 1
                logger.warning("reporting corrupt chunk %016x timed out", chunk_id)
        except DfsError as exc:
            self._stats.bad_reports_failed += 1
            logger.warning("reporting corrupt chunk %016x failed: %s", chunk_id, exc)
        finally:
            self._reporting.discard((chunk_id, version))
