"""ReadIndex (Raft §8, dissertation §6.4): linearizable reads without writing to the log.

The leader records its commit index for each request, then proves it is still leader with a
heartbeat round tagged with a sequence number.  A response tagged ``s`` was sent after the
follower saw heartbeat ``s``, which the leader sent after registering every request with a
sequence number ``<= s``; so once a quorum of voters acknowledged a tag ``>= s``, request
``s`` (and every earlier one) may be served at its recorded index.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from dfs.types import LogIndex, NodeId


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read may be served once the application applied up to ``index``."""

    index: LogIndex
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadRequest:
    seq: int
    index: LogIndex
    context: bytes
    #: Who asked: the leader itself, or a follower that forwarded the request.
    requester: NodeId


class ReadOnly:
    def __init__(self) -> None:
        self.seq = 0
        self.queue: deque[ReadRequest] = deque()
        self.acks: dict[NodeId, int] = {}

    def add(self, index: LogIndex, context: bytes, requester: NodeId) -> int:
        self.seq += 1
        self.queue.append(ReadRequest(self.seq, index, context, requester))
        return self.seq

    def ack(self, frm: NodeId, seq: int) -> None:
        if seq > self.acks.get(frm, 0):
            self.acks[frm] = seq

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
