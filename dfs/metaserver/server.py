"""The metaserver daemon: data directory, recovery, committer, RPC server, liveness task.

Data directory layout::

    <data_dir>/lock          held (flock) while a metaserver runs on this directory
    <data_dir>/cluster_id    generated once at first start, never changed
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
from dfs.errors import ConfigError
from dfs.metaserver.commit import Committer
from dfs.metaserver.durable import atomic_write
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


def _cluster_id(data_dir: Path) -> str:
    path = data_dir / "cluster_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    cid = uuid.uuid4().hex
    atomic_write(path, cid.encode() + b"\n")
    logger.info("new cluster id %s", cid)
    return cid


async def _watch_chunkservers(registry: Registry) -> None:
    period = max(registry.timeout / 4, 0.05)
    while True:
        await trio.sleep(period)
        registry.check_liveness(trio.current_time())


async def run_metaserver(
    config: Config, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a metaserver until cancelled; ``task_status.started("host:port")`` once serving."""
    mc = config.metaserver
    if mc is None:
        raise ConfigError("the config has no [metaserver] table")
    host, port = parse_address(mc.listen)
    lock_fd = await trio.to_thread.run_sync(_lock_data_dir, mc.data_dir)
    try:
        cluster_id = await trio.to_thread.run_sync(_cluster_id, mc.data_dir)
        committer = await trio.to_thread.run_sync(
            functools.partial(
                Committer.recover,
                mc.data_dir,
                node_id=mc.id,
                snapshot_every=mc.snapshot_every,
            )
        )
        ns = committer.namespace
        if ns.initialised and ns.cluster_id != cluster_id:
            raise ConfigError(
                f"{mc.data_dir}: cluster id file says {cluster_id} but the metadata belongs "
                f"to cluster {ns.cluster_id}"
            )
        registry = Registry(ns, timeout=mc.chunkserver_timeout)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            if not ns.initialised:
                await committer.propose(
                    {
                        "op": "init",
                        "now_ns": time.time_ns(),
                        "goal": mc.default_goal,
                        "cluster_id": cluster_id,
                    }
                )
                logger.info("initialised a new namespace (default goal %d)", mc.default_goal)
            # The service needs the bound address for admin.status; the dispatcher is read
            # per request, so creating the service before the port is known is fine.
            service = MetaService(
                committer, registry, node_id=mc.id, address=mc.listen, cluster_id=cluster_id
            )
            rpc = RpcServer(service.dispatcher, config.tls, name=mc.id)
            bound_port = await nursery.start(rpc.serve, host, port)
            service.address = f"{host}:{bound_port}"
            nursery.start_soon(_watch_chunkservers, registry)
            logger.info("metaserver %s serving on %s", mc.id, service.address)
            task_status.started(service.address)
    finally:
        os.close(lock_fd)
