"""The chunkserver daemon: store + RPC server + registration and heartbeats to the metaserver.

``run_chunkserver(config)`` is the whole process (the CLI only loads the config and calls it).
Order of start-up: open the store (scans the data dir), start the RPC server (``listen``, port 0
allowed), then register with the metaserver and heartbeat every ``heartbeat_interval``.  The
advertised address sent to the metaserver always carries the port actually bound.

Metaserver protocol (docs/protocol.md): ``cs.register`` (retried with capped exponential backoff
and jitter until it succeeds), then ``cs.heartbeat``; chunk ids in a heartbeat reply's ``delete``
list are deleted; a heartbeat answered ``NotFound`` (the metaserver forgot us, e.g. after a
restart) triggers a new registration.  Failed calls move on to the next configured metaserver.

Once registered, a ``Scrubber`` (``dfs.chunkserver.scrub``) re-verifies every chunk in the
background at ``[chunkserver] scrub_rate`` MiB/s and reports corrupt replicas with
``cs.report_bad``.

Crash check: the store's clean-shutdown marker is taken at start and written again when ``run``
ends (once the store is closed and synced).  When it was missing, the previous run crashed (or
was killed) and any chunk may hold a torn update, so right after registering every chunk is
verified once at full speed (``Scrubber.full_pass``, scrubbing on or off), corrupt replicas are
reported, and one summary line is logged.  A run that stops before that check finished leaves
no marker, so the next start checks again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from dfs.chunkserver.scrub import MIB, FullPassResult, Scrubber, ScrubStatistics
from dfs.chunkserver.service import ChunkService, ChunkServiceStatistics
from dfs.chunkserver.store import COPY_VERSION, ChunkStore
from dfs.config import ChunkserverConfig, Config, parse_address
from dfs.errors import (
    ConfigError,
    ConnectionLost,
    DeadlineExceeded,
    DfsError,
    NotFound,
    NotLeader,
    Unavailable,
)
from dfs.rpc.client import RpcClientPool
from dfs.rpc.dispatch import Dispatcher
from dfs.rpc.params import Params
from dfs.rpc.server import RpcServer
from dfs.security.identity import Peer, Role
from dfs.types import ChunkId, ChunkVersion

logger = logging.getLogger(__name__)

REGISTER_BACKOFF_INITIAL: Final = 0.1
REGISTER_BACKOFF_MAX: Final = 5.0
#: Errors after which the next metaserver address is tried.
_FAILOVER_ERRORS = (Unavailable, ConnectionLost, DeadlineExceeded, NotLeader)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised_address(cfg: ChunkserverConfig, bound_port: int) -> str:
    """``advertise`` (or ``listen``) with port 0 replaced by the port actually bound."""
    host, port = parse_address(cfg.public_address)
    if not cfg.advertise or port == 0:
        port = bound_port
    if host in ("0.0.0.0", "::", ""):
        logger.warning(
            "chunkserver %s advertises the wildcard address %s; set [chunkserver] advertise",
            cfg.id,
            host,
        )
    return format_address(host, port)


class MetaserverLink:
    """Calls to the metaserver that fail over between the configured addresses."""

    def __init__(self, pool: RpcClientPool, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ConfigError("no metaserver address configured")
        self._pool = pool
        self._addresses = list(addresses)
        self._current = 0

    @property
    def current(self) -> str:
        return self._addresses[self._current]

    async def call(self, method: str, params: dict[str, Any], *, timeout: float) -> Any:  # noqa: ASYNC109
        """Call ``method``, trying each address once; raises the last failure."""
        last: DfsError | None = None
        tried = 0
        while tried < len(self._addresses):  # may grow: a leader added online is learned
            tried += 1
            address = self.current
            try:
                # With several metaservers, do not wait out a dead one's reconnect backoff.
                return await self._pool.call(
                    address, method, params, timeout=timeout, fail_fast=len(self._addresses) > 1
                )
            except _FAILOVER_ERRORS as exc:
                last = exc
                self._fail_over(exc)
                logger.debug("%s to %s failed: %s", method, address, exc)
        assert last is not None
        raise last

    def _fail_over(self, exc: DfsError) -> None:
        leader = exc.details.get("leader") if isinstance(exc, NotLeader) else None
        if isinstance(leader, str) and leader:
            if leader not in self._addresses:
                # A metaserver added to the group online (not in this config): follow it.
                logger.info("metadata leader %s is not in the config; following it", leader)
                self._addresses.append(leader)
            self._current = self._addresses.index(leader)
        else:
            self._current = (self._current + 1) % len(self._addresses)


@dataclass
class ChunkserverStatistics:
    service: ChunkServiceStatistics = field(default_factory=ChunkServiceStatistics)
    #: The scrubber's counters (background passes and the startup check).
    scrub: ScrubStatistics = field(default_factory=ScrubStatistics)
    #: The check after an unclean shutdown (None: not needed, not done yet, or no chunks).
    startup_check: FullPassResult | None = None
    registrations: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    #: Chunks deleted because a heartbeat reply listed them.
    deleted_by_metaserver: int = 0


class Chunkserver:
    """One chunkserver process; ``run`` serves until cancelled."""

    def __init__(
        self,
        config: Config,
        *,
        forward_timeout: float = 30.0,
        hop_margin: float = 5.0,
        meta_timeout: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``forward_timeout``: deadline of forwarding to the last replica of a chain; each hop
        further up adds ``hop_margin`` (see ``dfs.chunkserver.service``).  ``meta_timeout``:
        deadline of one call to one metaserver (default: 5 heartbeat intervals, at least 5 s)."""
        if config.chunkserver is None:
            raise ConfigError("the config file has no [chunkserver] table")
        self._config = config
        self._cfg = config.chunkserver
        self._rng = rng or random.Random()
        self._forward_timeout = forward_timeout
        self._hop_margin = hop_margin
        self._meta_timeout = meta_timeout or max(5.0, 5 * self._cfg.heartbeat_interval)
        self._service: ChunkService | None = None
        self._scrubber: Scrubber | None = None
        self._stats = ChunkserverStatistics()
        #: The advertised address (set once the RPC server is bound).
        self.address = ""
        self.cluster_id: str | None = None
        #: This chunkserver's metadata session (opened after registering, renewed by heartbeats).
        self.session_id: int | None = None
        self.registered = trio.Event()
        #: Set once the check after an unclean shutdown is done or known to be unneeded.
        self.startup_checked = trio.Event()
        #: The store's clean-shutdown marker was missing and the check has not finished yet.
        self._check_pending = False

    @property
    def id(self) -> str:
        return self._cfg.id

    @property
    def store(self) -> ChunkStore | None:
        """The open store while running (tests and status pages)."""
        return self._service.store if self._service is not None else None

    def statistics(self) -> ChunkserverStatistics:
        stats = ChunkserverStatistics(**vars(self._stats))
        if self._service is not None:
            stats.service = self._service.statistics()
        if self._scrubber is not None:
            stats.scrub = self._scrubber.statistics()
        return stats

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self._cfg
        tls = self._config.tls
        store = await trio.to_thread.run_sync(ChunkStore, cfg.data_dir, cfg.capacity_bytes)
        marker_taken = False
        try:
            clean = await trio.to_thread.run_sync(store.take_clean_marker)
            marker_taken = True
            self._check_pending = not clean
            if clean:
                self.startup_checked.set()
            async with (
                RpcClientPool(tls, name=cfg.id, expect_roles={Role.CHUNKSERVER}) as peers,
                RpcClientPool(tls, name=cfg.id, expect_roles={Role.METASERVER}) as metas,
                trio.open_nursery() as nursery,
            ):
                link = MetaserverLink(metas, self._config.cluster.metaservers)

                async def report_bad(chunk_id: ChunkId, version: ChunkVersion, reason: str) -> None:
                    params = {
                        "id": cfg.id,
                        "chunk_id": chunk_id,
                        "version": version,
                        "reason": reason,
                    }
                    await link.call("cs.report_bad", params, timeout=self._meta_timeout)

                service = ChunkService(
                    store,
                    node_id=cfg.id,
                    address="",
                    peers=peers,
                    report_bad=report_bad,
                    forward_timeout=self._forward_timeout,
                    hop_margin=self._hop_margin,
                )
                self._service = service
                dispatcher = Dispatcher()
                service.register(dispatcher)
                await nursery.start(service.run)
                host, port = parse_address(cfg.listen)
                rpc = RpcServer(dispatcher, tls, name=cfg.id)
                bound: int = await nursery.start(rpc.serve, host, port)
                self.address = advertised_address(cfg, bound)
                service.set_address(self.address)
                logger.info("chunkserver %s serving on %s", cfg.id, self.address)
                nursery.start_soon(self._heartbeat_loop, link, service)
                # Without a scrub rate the scrubber only serves the unpaced startup check.
                self._scrubber = Scrubber(
                    store,
                    report_bad,
                    rate=cfg.scrub_rate * MIB if cfg.scrub_rate > 0 else None,
                    interval=cfg.scrub_interval,
                    report_timeout=self._meta_timeout,
                    rng=self._rng,
                )
                if cfg.scrub_rate <= 0:
                    logger.info("scrubbing is off ([chunkserver] scrub_rate = 0)")
                dispatcher.register(
                    "chunk.verify_all", self._verify_all, (Role.METASERVER, Role.ADMIN)
                )
                nursery.start_soon(self._check_and_scrub, self._scrubber, cfg.scrub_rate > 0)
                if self._config.http.listen:
                    await nursery.start(self._run_http, dispatcher, rpc)
                task_status.started(format_address(host, bound))
        finally:
            store.close()
            # Every store call has returned (worker threads are never abandoned), so the
            # chunks are consistent on disk: mark them so, unless a needed check never ran.
            if marker_taken and not self._check_pending:
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(store.mark_clean_shutdown)
                    except OSError as exc:
                        logger.warning("could not write the clean-shutdown marker: %s", exc)

    async def _run_http(
        self,
        dispatcher: Dispatcher,
        rpc: RpcServer,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """``/metrics`` (``[http] listen``)."""
        from dfs.observability import collectors
        from dfs.observability.endpoint import run_http
        from dfs.observability.metrics import MetricsRegistry

        metrics = MetricsRegistry()
        metrics.add(collectors.info_collector("chunkserver", self.id))
        metrics.add(collectors.rpc_collector(dispatcher, rpc))
        metrics.add(collectors.chunkserver_collector(self))
        await run_http(
            self._config.http, self._config.tls, self.id, metrics, task_status=task_status
        )

    async def _verify_all(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``dfs fsck --verify``: read every replica now at full speed, check every block's
        checksum; corrupt replicas are reported (``cs.report_bad``) and listed."""
        scrubber = self._scrubber
        if scrubber is None:
            raise Unavailable("this chunkserver is still starting", retry=True)
        result = await scrubber.full_pass()
        return {
            "chunks": result.chunks,
            "bytes": result.bytes,
            "seconds": result.seconds,
            "corrupt": [[cid, v] for cid, v in scrubber.corrupt()],
        }

    async def _check_and_scrub(self, scrubber: Scrubber, scrub: bool) -> None:
        # Scrub only once registered: a report sent before the registration that lists our
        # chunks would be undone by it (the corrupt replica would be listed again).
        await self.registered.wait()
        checked = False
        if self._check_pending:
            checked = await self._startup_check(scrubber)
        if scrub:
            await scrubber.run(pause_first=checked)

    async def _startup_check(self, scrubber: Scrubber) -> bool:
        """Verify every chunk after an unclean shutdown; return whether any was verified."""
        assert self._service is not None
        chunks = await self._service.disk(self._service.store.list_chunks)
        if not chunks:
            logger.debug("no clean-shutdown marker, but no chunks to verify either")
            self._check_pending = False
            self.startup_checked.set()
            return False
        logger.info("unclean shutdown: verifying %d chunk(s) at full speed", len(chunks))
        result = await scrubber.full_pass()
        self._stats.startup_check = result
        self._check_pending = False
        self.startup_checked.set()
        logger.log(
            logging.WARNING if result.corrupt else logging.INFO,
            "unclean shutdown: verified %d chunks (%d bytes) in %.1f s, %d corrupt",
            result.chunks,
            result.bytes,
            result.seconds,
            result.corrupt,
        )
        return True

    # ---- metaserver ----
    async def _heartbeat_loop(self, link: MetaserverLink, service: ChunkService) -> None:
        interval = self._cfg.heartbeat_interval
        timeout = self._meta_timeout
        while True:
            await self._register(link, service, timeout)
            while True:
                await trio.sleep(interval)
                capacity, free = await service.disk(self._space, service.store)
                params: dict[str, Any] = {
                    "id": self._cfg.id,
                    "capacity": capacity,
                    "free": free,
                    "load": service.load(),
                }
                if self.session_id is None:
                    await self._open_session(link, timeout)
                if self.session_id is not None:
                    params["session"] = self.session_id
                try:
                    reply = await link.call("cs.heartbeat", params, timeout=timeout)
                except NotFound as exc:
                    # After every election, too: a new leader wants a fresh registration.
                    logger.info("registering again with %s: %s", link.current, exc)
                    break
                except DfsError as exc:
                    self._stats.heartbeat_failures += 1
                    logger.warning("heartbeat to %s failed: %s", link.current, exc)
                    continue
                self._stats.heartbeats += 1
                if isinstance(reply, dict) and reply.get("session_expired"):
                    logger.warning(
                        "metadata session %s expired; opening a new one", self.session_id
                    )
                    self.session_id = None
                await self._apply_deletes(service, reply)

    async def _open_session(self, link: MetaserverLink, timeout: float) -> None:  # noqa: ASYNC109
        """Open this chunkserver's metadata session (renewed by every heartbeat); a failure
        is retried at the next heartbeat."""
        try:
            reply = await link.call(
                "session.open", {"kind": "chunkserver", "label": self._cfg.id}, timeout=timeout
            )
        except DfsError as exc:
            logger.info("could not open a metadata session yet: %s", exc)
            return
        self.session_id = int(reply["session"])
        logger.info("metadata session %d opened", self.session_id)

    async def _register(self, link: MetaserverLink, service: ChunkService, timeout: float) -> None:  # noqa: ASYNC109
        """Register, retrying with capped exponential backoff and jitter until it succeeds."""
        delay = REGISTER_BACKOFF_INITIAL
        while True:
            params = await service.disk(self._register_params, service.store)
            try:
                reply = await link.call("cs.register", params, timeout=timeout)
            except DfsError as exc:
                pause = delay * self._rng.uniform(0.5, 1.0)  # jitter: spread a herd of restarts
                logger.warning(
                    "registering with %s failed (%s); retrying in %.2fs", link.current, exc, pause
                )
                await trio.sleep(pause)
                delay = min(delay * 2, REGISTER_BACKOFF_MAX)
                continue
            self._stats.registrations += 1
            if isinstance(reply, dict) and isinstance(reply.get("cluster_id"), str):
                self.cluster_id = reply["cluster_id"]
            logger.info(
                "registered with metaserver %s (%d chunks)", link.current, len(params["chunks"])
            )
            self.registered.set()
            return

    def _register_params(self, store: ChunkStore) -> dict[str, Any]:
        capacity, free = self._space(store)
        return {
            "id": self._cfg.id,
            "address": self.address,
            "zone": self._cfg.zone,
            "capacity": capacity,
            "free": free,
            # Copies still being pulled (version 0) are not replicas yet.
            "chunks": [
                [cid, version] for cid, version, _ in store.list_chunks() if version != COPY_VERSION
            ],
        }

    @staticmethod
    def _space(store: ChunkStore) -> tuple[int, int]:
        return store.capacity(), store.free_bytes()

    async def _apply_deletes(self, service: ChunkService, reply: Any) -> None:
        try:
            p = Params(reply)
            doomed = p.int_list("delete") if "delete" in p else []
        except DfsError as exc:
            logger.warning("ignoring malformed heartbeat reply: %s", exc)
            return
        for chunk_id in doomed:
            try:
                if await service.disk(service.store.delete, chunk_id):
                    self._stats.deleted_by_metaserver += 1
                    logger.info("deleted chunk %016x at the metaserver's request", chunk_id)
            except DfsError as exc:
                logger.warning("deleting chunk %016x failed: %s", chunk_id, exc)


async def run_chunkserver(
    config: Config, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a chunkserver until cancelled; ``task_status.started(bound_address)`` once serving."""
    await Chunkserver(config).run(task_status=task_status)
