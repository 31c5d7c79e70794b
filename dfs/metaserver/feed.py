"""The leader's change feed: what clients must drop from their caches.

Every applied command that changes what a client may have cached (an inode's attributes or
data, a directory entry) becomes one or more events in a bounded ring on the leader.  Clients
long-poll it (``fs.watch``) and turn the events into FUSE notifications (``dfs.client``'s
``Coherence``), so ``stat``, ``ls`` and reads on one client reflect another client's completed
change within the feed's delay (milliseconds), not after the kernel's cache timeout.

Events are ``[kind, ino, name]`` tuples:

* ``"d"``: the inode's data (and attributes) changed (a write was committed, a truncate);
* ``"a"``: only its attributes changed (mode, owner, times, xattrs, link count);
* ``"e"``: the entry ``name`` of directory ``ino`` was added, removed or replaced (the
  directory's own attributes changed too).

An event carries the session whose command caused it: that client's own kernel already knows,
so it is not told.  The feed is soft state of one leader term (``epoch``): a watcher that
comes from another epoch, or fell further behind than the ring holds, is told to ``reset``
(drop everything it caches).  Pure: no I/O or clock; the service wakes waiters.
"""

from __future__ import annotations

from collections import deque
from typing import Any

#: Events kept; a watcher further behind must reset.
RING_SIZE = 65536

Event = tuple[str, int, bytes]


def events_of(command: dict[str, Any], result: Any) -> list[Event]:
    """The cache events of an applied command and its result."""
    op = command.get("op")
    if op in ("commit_write", "append"):
        return [("d", int(command["ino"]), b"")]
    if op == "setattr":
        kind = "d" if command.get("size") is not None else "a"
        return [(kind, int(command["ino"]), b"")]
    if op in ("setxattr", "removexattr", "setgoal"):
        return [("a", int(command["ino"]), b"")]
    if op in ("mknod", "mkdir", "symlink"):
        return [("e", int(command["parent"]), bytes(command["name"]))]
    if op == "link":
        return [
            ("e", int(command["parent"]), bytes(command["name"])),
            ("a", int(command["ino"]), b""),
        ]
    if op in ("unlink", "rmdir"):
        out: list[Event] = [("e", int(command["parent"]), bytes(command["name"]))]
        if isinstance(result, dict) and result.get("ino"):
            out.append(("a", int(result["ino"]), b""))
        return out
    if op == "rename":
        out = [
            ("e", int(command["parent"]), bytes(command["name"])),
            ("e", int(command["newparent"]), bytes(command["newname"])),
        ]
        if isinstance(result, dict):
            for key in ("ino", "replaced"):
                if result.get(key):
                    out.append(("a", int(result[key]), b""))
        return out
    if op == "punch_hole":
        return [("d", int(command["ino"]), b"")]
    return []


class ChangeFeed:
    """A ring of numbered events of one leader epoch."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.epoch = ""
        #: Number of the newest event (events are numbered from 1 in each epoch).
        self.seq = 0
        self._ring: deque[tuple[int, int | None, Event]] = deque(maxlen=size)

    def start_epoch(self, epoch: str) -> None:
        """A new leader term: earlier events are unknown to this feed."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.seq = 0
            self._ring.clear()

    def record(self, session: int | None, events: list[Event]) -> None:
        for ev in events:
            self.seq += 1
            self._ring.append((self.seq, session, ev))

    def since(self, epoch: str, after: int, session: int | None) -> dict[str, Any] | None:
        """The answer to a watcher that saw events up to ``after`` of ``epoch``: a reset, the
        events it has not seen (not its own), or None when there is nothing new yet."""
        if epoch != self.epoch or after > self.seq:
            return {"epoch": self.epoch, "seq": self.seq, "reset": True, "events": []}
        if after == self.seq:
            return None
        oldest = self._ring[0][0] if self._ring else self.seq + 1
        if after + 1 < oldest:
            return {"epoch": self.epoch, "seq": self.seq, "reset": True, "events": []}
        # The ring is numbered contiguously: index straight to the first unseen event.
        start = after + 1 - oldest
        events = [
            [kind, ino, name]
            for i in range(start, len(self._ring))
            for _seq, origin, (kind, ino, name) in (self._ring[i],)
            if origin is None or origin != session
        ]
        return {"epoch": self.epoch, "seq": self.seq, "reset": False, "events": events}
