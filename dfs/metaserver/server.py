"""The metaserver daemon: data directory, recovery, Raft node, RPC server, liveness task.

Every metaserver is a member of a Raft group (``[metaserver] members``; by default a group of
one: this node alone).  The RPC server starts before the group has a leader (Raft messages
arrive through it); the leader proposes the ``init`` command of a new cluster, and every
member adopts the cluster id the init command carries.

Data directory layout::

    <data_dir>/lock          held (flock) while a metaserver runs on this directory
    <data_dir>/cluster_id    the cluster id, written once the namespace is initialised
    <data_dir>/raft_members  the member ids of the Raft group this directory was created for
    <data_dir>/log/          Raft log segments and the hard state (dfs.metaserver.raftlog)
    <data_dir>/snapshots/    snapshots (dfs.metaserver.snapshot)
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import time
import uuid
from pathlib import Path

import trio

from dfs.config import Config, parse_address
from dfs.errors import ConfigError, FsError, NotLeader, Unavailable
from dfs.metaserver.durable import atomic_write
from dfs.metaserver.peers import RaftGroupConfig
from dfs.metaserver.raftnode import RaftNode
from dfs.metaserver.registry import Registry
from dfs.metaserver.service import MetaService
from dfs.rpc.server import RpcServer

logger = logging.getLogger(__name__)


def _lock_data_dir(data_dir: Path) -> int:
    """Create ``data_dir`` and take its lock; the fd stays open while the daemon runs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{data_dir} is in use by another metaserver") from None
    return fd


def _read_cluster_id(data_dir: Path) -> str | None:
    try:
        return (data_dir / "cluster_id").read_text().strip() or None
    except FileNotFoundError:
        return None


def _check_members(data_dir: Path, ids: list[str], existing: bool) -> None:
    """Refuse to open ``data_dir`` in a Raft group other than the one it was created for.

    Membership is only ever given by the config, so a changed ``members`` list (or an old
    single-node directory, ``existing`` without a record, put into a bigger group) would make
    this node vote with a log and a configuration the other members never agreed on."""
    path = data_dir / "raft_members"
    want = ",".join(sorted(ids))
    try:
        have: str | None = path.read_text().strip()
    except FileNotFoundError:
        have = None
    if have is None:
        if existing and len(ids) > 1:
            raise ConfigError(
                f"{data_dir} holds a single-node metaserver's data; it cannot join a new "
                f"{len(ids)}-member Raft group (start the group with new data directories)"
            )
        atomic_write(path, want.encode() + b"\n")
    elif have != want:
        raise ConfigError(
            f"{data_dir} belongs to the Raft group [{have}], not [{want}]: changing "
            "[metaserver] members of an existing group is not supported"
        )


def _write_cluster_id(data_dir: Path, cluster_id: str) -> None:
    atomic_write(data_dir / "cluster_id", cluster_id.encode() + b"\n")


async def _wait_leader_caught_up(node: RaftNode) -> None:
    """Wait until this node leads and has applied every entry committed before."""
    while True:
        if node.is_leader():
            try:
                await node.read_barrier()
                return
            except (NotLeader, Unavailable):
                pass
        await trio.sleep(0.01)


async def _initialise(node: RaftNode, data_dir: Path, default_goal: int, known: str | None) -> str:
    """Wait until the namespace is initialised (the leader proposes ``init`` for a new
    cluster); record its cluster id in ``data_dir``; return it."""
    ns = node.namespace
    candidate = known or uuid.uuid4().hex
    while not ns.initialised:
        if node.is_leader():
            try:
                await node.propose(
                    {
                        "op": "init",
                        "now_ns": time.time_ns(),
                        "goal": default_goal,
                        "cluster_id": candidate,
                    }
                )
                logger.info("initialised a new namespace (default goal %d)", default_goal)
            except FsError:
                pass  # another leader's init was applied first
            except (NotLeader, Unavailable) as exc:
                logger.info("init not committed yet (%s); retrying", exc)
        if not ns.initialised:
            await trio.sleep(0.05)
    if known is not None and ns.cluster_id != known:
        raise ConfigError(
            f"{data_dir}: cluster id file says {known} but the group's metadata belongs to "
            f"cluster {ns.cluster_id}"
        )
    if known is None:
        await trio.to_thread.run_sync(_write_cluster_id, data_dir, ns.cluster_id)
        logger.info("cluster id %s", ns.cluster_id)
    return str(ns.cluster_id)


async def _watch_chunkservers(registry: Registry) -> None:
    period = max(registry.timeout / 4, 0.05)
    while True:
        await trio.sleep(period)
        registry.check_liveness(trio.current_time())


async def _run_http(
    config: Config,
    service: MetaService,
    rpc: RpcServer,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``/metrics`` and the dashboard (``[http] listen``)."""
    from dfs.observability import collectors
    from dfs.observability.dashboard import Dashboard
    from dfs.observability.endpoint import run_http
    from dfs.observability.metrics import MetricsRegistry

    metrics = MetricsRegistry()
    metrics.add(collectors.info_collector("metaserver", service.node_id))
    metrics.add(collectors.rpc_collector(service.dispatcher, rpc))
    metrics.add(collectors.metaserver_collector(service))
    routes = Dashboard(service).routes()
    await run_http(
        config.http, config.tls, service.node_id, metrics, routes, task_status=task_status
    )


async def run_metaserver(
    config: Config, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a metaserver until cancelled; ``task_status.started("host:port")`` once serving."""
    mc = config.metaserver
    if mc is None:
        raise ConfigError("the config has no [metaserver] table")
    host, port = parse_address(mc.listen)
    pairs = mc.member_pairs()
    # A lone node needs nobody's vote: a short election timeout makes it leader at once.
    alone = len(pairs) == 1 and not mc.join
    timing = {"election_tick": 2} if alone else {"election_tick": 10}
    group = RaftGroupConfig.from_pairs(
        pairs, tick_interval=mc.raft_tick, snapshot_every=mc.snapshot_every, **timing
    )
    lock_fd = await trio.to_thread.run_sync(_lock_data_dir, mc.data_dir)
    try:
        known_id = await trio.to_thread.run_sync(_read_cluster_id, mc.data_dir)
        await trio.to_thread.run_sync(
            _check_members, mc.data_dir, [i for i, _ in pairs], known_id is not None
        )
        node = await trio.to_thread.run_sync(
            functools.partial(
                RaftNode.recover,
                mc.data_dir,
                node_id=mc.id,
                group=group,
                tls=config.tls,
                read_mode=mc.raft_read_mode,
                join=mc.join,
            )
        )
        ns = node.namespace
        if ns.initialised and known_id is not None and ns.cluster_id != known_id:
            raise ConfigError(
                f"{mc.data_dir}: cluster id file says {known_id} but the metadata belongs "
                f"to cluster {ns.cluster_id}"
            )
        registry = Registry(
            ns,
            timeout=mc.chunkserver_timeout,
            grace=mc.replication_grace,
            orphan_delay=mc.orphan_delay,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            # The service needs the bound address for admin.status; the dispatcher is read
            # per request, so creating the service before the port is known is fine.
            service = MetaService(
                node,
                registry,
                node_id=mc.id,
                address=mc.listen,
                cluster_id=known_id or (ns.cluster_id if ns.initialised else ""),
                tls=config.tls,
                session_timeout=mc.session_timeout,
                write_lease=mc.write_lease,
                replication_rate=mc.replication_rate * 2**20,
                replication_jobs=mc.replication_jobs,
            )
            node.register(service.dispatcher)
            rpc = RpcServer(service.dispatcher, config.tls, name=mc.id)
            bound_port = await nursery.start(rpc.serve, host, port)
            service.address = f"{host}:{bound_port}"
            nursery.start_soon(_watch_chunkservers, registry)
            nursery.start_soon(service.expire_sessions)
            if config.http.listen:
                await nursery.start(_run_http, config, service, rpc)
            await nursery.start(service.keeper.run)
            logger.info(
                "metaserver %s serving on %s (Raft group: %s)",
                mc.id,
                service.address,
                ", ".join(f"{i}={a}" for i, a in pairs),
            )
            if alone:
                # A group of one behaves as the single node always did: ready once started,
                # i.e. leading, with its whole log applied and the namespace initialised.
                await _wait_leader_caught_up(node)
                service.cluster_id = await _initialise(node, mc.data_dir, mc.default_goal, known_id)
                task_status.started(service.address)
            else:
                task_status.started(service.address)
                service.cluster_id = await _initialise(node, mc.data_dir, mc.default_goal, known_id)
    finally:
        os.close(lock_fd)
