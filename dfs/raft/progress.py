"""The leader's view of one follower's replication (etcd's Progress state machine).

* PROBE: we do not know where the follower's log matches ours; send one AppendEntries at a
  time (then pause until an answer or a heartbeat response) and walk ``next`` back using the
  follower's conflict hints.
* REPLICATE: the follower matches up to ``match``; stream entries optimistically (``next``
  jumps past what was sent) with at most ``max_inflight`` unacknowledged messages in flight
  (pipelining).  A rejection drops back to PROBE.
* SNAPSHOT: ``next`` was compacted away; a snapshot is being sent in chunks, with at most
  ``window`` bytes beyond what the follower acknowledged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from dfs.raft.messages import Snapshot
from dfs.types import LogIndex


class ProgressState(StrEnum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass
class Progress:
    next: LogIndex
    max_inflight: int
    match: LogIndex = LogIndex(0)  # noqa: RUF009 - NewType call is free
    state: ProgressState = ProgressState.PROBE
    #: PROBE: an AppendEntries is outstanding; pause until a response or heartbeat response.
    probe_sent: bool = False
    #: REPLICATE: last index of each AppendEntries in flight, oldest first.
    inflights: deque[int] = field(default_factory=deque)
    #: Heard from since the last CheckQuorum round.
    recent_active: bool = True
    is_learner: bool = False
    # SNAPSHOT state: the snapshot being sent and the chunk flow control.
    snapshot: Snapshot | None = None
    snap_sent: int = 0
    snap_acked: int = 0
    snap_done_sent: bool = False
    snap_progressed: bool = False

    @property
    def pending_snapshot(self) -> LogIndex:
        return self.snapshot.meta.index if self.snapshot is not None else LogIndex(0)

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = LogIndex(max(self.match + 1, self.pending_snapshot + 1))
        else:
            self.next = LogIndex(self.match + 1)
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = LogIndex(self.match + 1)
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot = snapshot

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflights.clear()
        self.snapshot = None
        self.snap_sent = self.snap_acked = 0
        self.snap_done_sent = False
        self.snap_progressed = False

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement that the follower matches up to ``index``."""
        updated = index > self.match
        if updated:
            self.match = LogIndex(index)
            self.probe_sent = False
        self.next = LogIndex(max(self.next, index + 1))
        return updated

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """A rejection of ``prev_index == rejected``; ``hint`` is where to retry.  Return
        False if the rejection is stale (answers a message we no longer care about)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.state = ProgressState.PROBE
            self.inflights.clear()
        elif self.state is ProgressState.PROBE:
            if self.next - 1 != rejected:
                return False
        else:
            return False
        self.next = LogIndex(max(self.match + 1, min(hint, rejected)))
        self.probe_sent = False
        return True

    def sent_entries(self, last: int | None) -> None:
        """Record an AppendEntries just sent whose last entry is ``last`` (None: empty)."""
        if self.state is ProgressState.REPLICATE:
            if last is not None:
                self.next = LogIndex(last + 1)
                self.inflights.append(last)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def free_inflights_to(self, index: int) -> None:
        bound = len(self.inflights)
        for _ in range(bound):
            if self.inflights[0] > index:
                break
            self.inflights.popleft()
