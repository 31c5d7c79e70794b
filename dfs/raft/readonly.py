"""A leader's heartbeat rounds: ReadIndex confirmations and the read lease.

Every heartbeat broadcast of a leader is a *round*, numbered 1, 2, ... within its term; the
followers echo the number in their responses.

* ReadIndex (Raft §8, dissertation §6.4): a read registered while round ``r`` was the newest
  one sent waits for round ``r + 1`` (sent after it was registered).  Once a quorum of voters
  acknowledged a round ``>= r + 1`` the leader was still leader after the read arrived, so the
  read may be served at the commit index recorded for it; every earlier read is confirmed too.
* Lease (dissertation §6.4.1): for each voter, the tick at which the leader sent the newest
  round that voter acknowledged.  ``lease_start`` is the send tick of the quorum's oldest such
  acknowledgement: every voter in that quorum reset its election timer at or after it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from dfs.types import LogIndex, NodeId

#: A send tick older than anything (a voter that never acknowledged a round).
_NEVER = -(1 << 62)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read may be served once the application applied up to ``index``."""

    index: LogIndex
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadRequest:
    #: The round whose acknowledgement by a quorum confirms this read.
    seq: int
    index: LogIndex
    context: bytes
    #: Who asked: the leader itself, or a follower that forwarded the request.
    requester: NodeId


class ReadOnly:
    def __init__(self) -> None:
        #: The newest round sent (0: none yet).
        self.round = 0
        self.queue: deque[ReadRequest] = deque()
        #: The newest round each voter acknowledged.
        self.acks: dict[NodeId, int] = {}
        #: The tick at which the round in ``acks`` was sent.
        self.ack_ticks: dict[NodeId, int] = {}
        #: ``(first round sent at a tick, that tick)``, oldest first; only recent ticks.
        self._round_ticks: deque[tuple[int, int]] = deque()

    def add(self, index: LogIndex, context: bytes, requester: NodeId) -> None:
        """Register a read at ``index``; the next round confirms it."""
        self.queue.append(ReadRequest(self.round + 1, index, context, requester))

    def start_round(self, tick: int, horizon: int) -> int:
        """Number a heartbeat broadcast sent now, at ``tick``.  Send ticks older than
        ``tick - horizon`` are forgotten (an acknowledgement that old cannot hold a lease)."""
        self.round += 1
        if not self._round_ticks or self._round_ticks[-1][1] != tick:
            self._round_ticks.append((self.round, tick))
            while self._round_ticks[0][1] < tick - horizon:
                self._round_ticks.popleft()
        return self.round

    def ack(self, frm: NodeId, rnd: int) -> None:
        if rnd <= self.acks.get(frm, 0) or rnd > self.round:
            return  # stale, duplicated, or a round we never sent
        self.acks[frm] = rnd
        for first, tick in reversed(self._round_ticks):
            if first <= rnd:
                self.ack_ticks[frm] = tick
                return

    def release(self, voters: frozenset[NodeId], me: NodeId, quorum: int) -> list[ReadRequest]:
        """Pop every request a quorum of ``voters`` has confirmed, oldest first."""
        out: list[ReadRequest] = []
        for _ in range(len(self.queue)):
            req = self.queue[0]
            confirmed = sum(1 for v in voters if v == me or self.acks.get(v, 0) >= req.seq)
            if confirmed < quorum:
                break
            out.append(self.queue.popleft())
        return out

    def lease_start(self, voters: frozenset[NodeId], me: NodeId, quorum: int, now: int) -> int:
        """The latest tick ``t`` such that a quorum of ``voters`` heard from us at or after
        ``t`` (we count as hearing ourselves ``now``)."""
        ticks = sorted(
            (now if v == me else self.ack_ticks.get(v, _NEVER) for v in voters), reverse=True
        )
        return ticks[quorum - 1] if 0 < quorum <= len(ticks) else _NEVER
