"""A ``ChunkKeeper`` that is leader from the start, over a test registry, and one pass of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from dfs.metaserver.chunks import ChunkKeeper, Propose
from dfs.metaserver.registry import Registry


def leader_keeper(
    reg: Registry, propose: Propose, *, term: Callable[[], int] = lambda: 3, pool: Any = None
) -> ChunkKeeper:
    """Leader since time 0 of ``term``; ``pool`` (fake chunkservers) answers its RPCs."""
    keeper = ChunkKeeper(
        reg,
        node_id="m1",
        tls=None,
        propose=propose,
        is_leader=lambda: True,
        term=term,
        leader_since=lambda: 0.0,
    )
    if pool is not None:
        keeper._pool = pool
    return keeper


async def one_pass(keeper: ChunkKeeper) -> None:
    """One replica-upkeep pass, with every task it starts finished."""
    async with trio.open_nursery() as nursery:
        await keeper.one_pass(nursery, trio.CapacityLimiter(4))
