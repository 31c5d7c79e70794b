"""Cache coherence across clients: the metaserver's change feed applied to this mount.

The kernel caches attributes and names (for ``attr_timeout``/``entry_timeout``) and file
pages (until the next open).  ``Coherence.run`` long-polls the leader's change feed
(``fs.watch``, ``dfs.metaserver.feed``) and, for every change another client made to an inode
or directory the kernel knows, tells the kernel to drop it (``FUSE_NOTIFY_INVAL_INODE`` /
``FUSE_NOTIFY_INVAL_ENTRY``) and the VFS to drop its cached chunk map and size.  A reset (a
new leader, or this client fell behind the feed) drops the attributes and pages of every
inode the kernel knows; names cached before a reset may then be served for up to
``entry_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from dfs.errors import DfsError
from dfs.types import InodeId

log = logging.getLogger(__name__)

#: Pause after a failed watch before the next (the leader may be changing).
RETRY_DELAY = 0.5


class Feed(Protocol):
    async def watch(self, epoch: str, after: int) -> dict[str, Any]: ...


class Notifier(Protocol):
    async def notify_inval_inode(self, ino: int, offset: int = 0, length: int = 0) -> bool: ...
    async def notify_inval_entry(self, parent: int, name: bytes) -> bool: ...


class Coherence:
    """Drops what another client changed from this mount's caches."""

    def __init__(
        self,
        feed: Feed,
        notifier: Notifier,
        known: dict[int, int],
        forget_data: Callable[[InodeId], Awaitable[None]],
    ) -> None:
        """``known``: the kernel's inodes (the FUSE adapter's lookup counts);
        ``forget_data``: the VFS's cached chunk map and size of an inode are stale."""
        self.feed = feed
        self.notifier = notifier
        self.known = known
        self.forget_data = forget_data
        self.epoch = ""
        self.after = 0
        #: Counters for tests and ``statistics``.
        self.events = 0
        self.notified = 0
        self.resets = 0

    async def run(self) -> None:
        while True:
            try:
                answer = await self.feed.watch(self.epoch, self.after)
            except DfsError as exc:
                log.debug("change feed unavailable: %s", exc)
                await trio.sleep(RETRY_DELAY)
                continue
            await self.apply(answer)

    async def apply(self, answer: dict[str, Any]) -> None:
        # A reset: a new leader or missed events, nothing cached can be trusted (the first
        # answer of a mount is a reset of an empty cache).
        if answer.get("reset") and self.epoch:
            await self._reset()
        self.epoch = str(answer["epoch"])
        self.after = int(answer["seq"])
        for kind, ino, name in answer.get("events", ()):
            self.events += 1
            await self._event(str(kind), int(ino), bytes(name))

    async def _event(self, kind: str, ino: int, name: bytes) -> None:
        if ino not in self.known:
            return
        self.notified += 1
        if kind == "e":
            # Drops the (possibly negative) name and the directory's attributes.
            await self.notifier.notify_inval_entry(ino, name)
        elif kind == "d":
            await self.forget_data(InodeId(ino))
            await self.notifier.notify_inval_inode(ino, 0, 0)
        else:
            await self.notifier.notify_inval_inode(ino, -1, 0)

    async def _reset(self) -> None:
        self.resets += 1
        for ino in list(self.known):
            await self.forget_data(InodeId(ino))
            await self.notifier.notify_inval_inode(ino, 0, 0)
