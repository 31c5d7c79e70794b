"""Raft group configuration and the outbound half of the Raft transport.

``RaftGroupConfig`` lists the members (node id, address) and the timing of one Raft group.

``PeerSender`` owns one peer's outbound queue and the one task that drains it: the driver only
calls ``push`` (never blocks), the task sends everything queued as one ``raft.message`` call
per round trip (batching), and a failed call just drops its batch: Raft retransmits on its
own (heartbeats, append retries), so a slow or dead peer costs the driver nothing.  The
queue is bounded; when it is full the oldest messages are dropped, which Raft also tolerates.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from dfs.config import parse_address
from dfs.errors import ConfigError, DfsError
from dfs.raft import Message
from dfs.rpc.client import RpcClientPool
from dfs.types import NodeId

logger = logging.getLogger(__name__)

#: The RPC method carrying a batch of Raft messages between metaservers.
RAFT_METHOD = "raft.message"


@dataclass(frozen=True, slots=True)
class RaftMember:
    id: NodeId
    address: str


@dataclass(frozen=True)
class RaftGroupConfig:
    """Members and timing of a Raft group (every member uses the same one)."""

    #: Every initial voter with the address its metaserver RPC server listens on.
    members: tuple[RaftMember, ...]
    #: Seconds per logical tick of the core.
    tick_interval: float = 0.1
    #: Ticks without hearing from a leader before a follower campaigns (randomised up to 2x).
    election_tick: int = 10
    heartbeat_tick: int = 1
    #: Take a snapshot and compact the log after this many applied entries.
    snapshot_every: int = 100_000
    #: Per-call deadline of a ``raft.message`` batch.
    send_timeout: float = 2.0
    #: Messages queued per peer before the oldest are dropped.
    max_queued_messages: int = 4096
    #: Approximate payload cap of one ``raft.message`` call (keeps frames well below 16 MiB).
    max_batch_bytes: int = 4 << 20
    #: Extra known addresses (learners added later with ``propose_conf_change``).
    extra_addresses: tuple[RaftMember, ...] = field(default=())

    def validate(self) -> None:
        if not self.members:
            raise ConfigError("a Raft group needs at least one member")
        ids = [m.id for m in self.members + self.extra_addresses]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate Raft member ids in {ids}")
        for m in self.members + self.extra_addresses:
            if not m.id:
                raise ConfigError("Raft member ids must not be empty")
            parse_address(m.address)
        if self.tick_interval <= 0:
            raise ConfigError("tick_interval must be > 0")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ConfigError("need 1 <= heartbeat_tick < election_tick")
        if self.snapshot_every < 1:
            raise ConfigError("snapshot_every must be >= 1")
        if self.send_timeout <= 0 or self.max_queued_messages < 1 or self.max_batch_bytes < 1:
            raise ConfigError("send_timeout, max_queued_messages, max_batch_bytes must be > 0")

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]], **options: Any) -> RaftGroupConfig:
        """``[(node id, address), ...]`` -> a validated config."""
        cfg = cls(tuple(RaftMember(NodeId(i), a) for i, a in pairs), **options)
        cfg.validate()
        return cfg

    def addresses(self) -> dict[NodeId, str]:
        return {m.id: m.address for m in self.members + self.extra_addresses}


@dataclass
class SenderStatistics:
    queued: int = 0
    calls: int = 0
    sent: int = 0
    dropped: int = 0
    failures: int = 0


def _approx_size(d: dict[str, Any]) -> int:
    size = 64
    for e in d.get("entries", ()):
        data = e.get("data", b"")
        size += 32 + (len(data) if isinstance(data, bytes) else len(repr(data)))
    data = d.get("data")
    if isinstance(data, bytes):
        size += len(data)
    return size


class PeerSender:
    """Outbound queue and sender task for one peer (see the module docstring)."""

    def __init__(
        self,
        me: NodeId,
        peer: NodeId,
        address: str,
        pool: RpcClientPool,
        *,
        timeout: float,
        max_queued: int,
        max_batch_bytes: int,
    ) -> None:
        self.me = me
        self.peer = peer
        self.address = address
        self._pool = pool
        self._timeout = timeout
        self._max_batch_bytes = max_batch_bytes
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queued)
        self._wake = trio.Event()
        self.stats = SenderStatistics()
        self._failing = False

    def push(self, m: Message) -> None:
        """Queue ``m`` (never blocks; drops the oldest message when the queue is full)."""
        if len(self._queue) == self._queue.maxlen:
            self.stats.dropped += 1
        self._queue.append(m.to_dict())
        self.stats.queued += 1
        self._wake.set()

    def _take_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 0
        while self._queue:
            d = self._queue[0]
            n = _approx_size(d)
            if batch and size + n > self._max_batch_bytes:
                break
            batch.append(self._queue.popleft())
            size += n
        return batch

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._queue:
                batch = self._take_batch()
                self.stats.calls += 1
                try:
                    # fail_fast: while the peer is unreachable (reconnect backoff) drop at
                    # once rather than queue up stale heartbeats.
                    await self._pool.call(
                        self.address,
                        RAFT_METHOD,
                        {"from": self.me, "messages": batch},
                        timeout=self._timeout,
                        fail_fast=True,
                    )
                except (DfsError, ConfigError) as exc:
                    self.stats.failures += 1
                    self.stats.dropped += len(batch)
                    if not self._failing:
                        logger.info("raft: sending to %s failed: %s", self.peer, exc)
                        self._failing = True
                    continue
                if self._failing:
                    logger.info("raft: %s reachable again", self.peer)
                    self._failing = False
                self.stats.sent += len(batch)
