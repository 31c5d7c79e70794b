"""``lock.*`` RPCs: flock(2) and fcntl(2) locks held in the replicated lock table.

The table itself (``dfs.metaserver.locks.LockTable``, part of the namespace state machine)
holds granted locks only, so they survive a leader failover.  Waiting is the leader's soft
state, here:

* ``lock.set`` proposes ``lock_set``; on a conflict with ``wait`` the request parks on its
  inode's wake-up event (no polling) and proposes again when a lock of that inode is released
  (an unlock, a close, an expired session, the inode freed).  A request waits at most
  ``WAIT_SLICE`` seconds per call and then answers ``still_waiting``; the client simply asks
  again (a long poll that keeps every RPC bounded and survives a leader change: a new
  leader's waiters are the requests sent to it).
* POSIX requests that would wait on an owner that (transitively) waits on them get
  ``deadlock`` (EDEADLK), as Linux does; flock requests are never checked (nor are they on
  Linux).
* ``lock.cancel`` (the waiting process was interrupted): the waiter stops and nothing stays
  queued.  If the lock was granted just before, the answer says so (``granted``), and the client
  reports success instead of EINTR, so a lock is never held by a process that was told it
  failed.

Lock owners are ``(session, owner)``: the client's metadata session and the kernel's lock
owner, so owners on different machines never collide; a session that expires loses its locks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from dfs.errors import Deadlock, Interrupted, LockConflict, StillWaiting
from dfs.metaserver.locks import F_UNLCK, KINDS, LockTable, Owner
from dfs.rpc.params import Params
from dfs.security.identity import Peer

logger = logging.getLogger(__name__)

#: Seconds one ``lock.set`` call waits before answering ``still_waiting``.
WAIT_SLICE = 20.0
#: Outcomes of finished waiters kept for a late ``lock.cancel``.
RECENT_MAX = 4096

_U64 = (1 << 64) - 1
_OFFSET_MAX = (1 << 63) - 1

#: Commands that may release locks on many inodes at once.
_RELEASES_MANY = frozenset({"close_session", "expire_sessions", "unlink", "rmdir", "rename"})

Propose = Callable[..., Awaitable[Any]]
WaiterKey = tuple[int, int, int, str]  # session, owner, ino, kind


@dataclass
class _Waiter:
    ino: int
    kind: str
    type: int
    start: int
    end: int
    #: Held while proposing, so a cancel never slips between a grant and its bookkeeping.
    busy: trio.Lock = field(default_factory=trio.Lock)
    cancelled: bool = False
    granted: bool = False


@dataclass(frozen=True)
class LockRequest:
    ino: int
    owner: Owner
    kind: str
    type: int
    start: int
    end: int
    pid: int

    @classmethod
    def parse(cls, p: Params) -> LockRequest:
        kind = p.str("kind", max_len=8)
        if kind not in KINDS:
            from dfs.errors import BadRequest

            raise BadRequest(f"param 'kind': {kind!r} is not one of {', '.join(KINDS)}")
        return cls(
            ino=p.int("ino", min=1),
            owner=(p.int("session", min=1, max=_U64), p.int("owner", min=0, max=_U64)),
            kind=kind,
            type=p.int("type", min=0, max=2),
            start=p.int("start", min=0, max=_OFFSET_MAX),
            end=p.int("end", min=0, max=_OFFSET_MAX),
            pid=p.opt_int("pid", 0, min=0, max=(1 << 32) - 1) or 0,
        )

    def key(self) -> WaiterKey:
        return (self.owner[0], self.owner[1], self.ino, self.kind)


class LockService:
    """The leader's lock waiting room; see the module docstring."""

    def __init__(
        self,
        table: Callable[[], LockTable],
        *,
        propose: Propose,
        read_barrier: Callable[[], Awaitable[None]],
        wait_slice: float = WAIT_SLICE,
    ) -> None:
        self._table = table
        self._propose = propose
        self._read = read_barrier
        self.wait_slice = wait_slice
        self._events: dict[int, trio.Event] = {}
        self._waiters: dict[WaiterKey, _Waiter] = {}
        self._recent: dict[WaiterKey, bool] = {}

    # ------------------------------------------------------------------ wake-ups
    def wake(self, ino: int) -> None:
        """Locks of ``ino`` were released: every waiter there tries again."""
        ev = self._events.pop(ino, None)
        if ev is not None:
            ev.set()

    def on_applied(self, command: dict[str, Any], result: Any) -> None:
        """Apply hook: wake the waiters a command may have unblocked."""
        op = command.get("op")
        if op in ("lock_set", "lock_release"):
            if isinstance(result, dict) and result.get("released"):
                self.wake(int(command["ino"]))
        elif op in _RELEASES_MANY and self._events:
            # Sessions ended (their locks went) or inodes were freed: everyone retries.
            for ino in list(self._events):
                self.wake(ino)

    # ------------------------------------------------------------------ RPCs
    async def get(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``lock.get``: the first lock conflicting with the request (F_GETLK), or None."""
        await self._read()
        r = LockRequest.parse(Params(params))
        info = self._table().test(r.ino, r.owner, r.kind, r.type, r.start, r.end)
        if info is None:
            return None
        return {"type": info.type, "start": info.start, "end": info.end, "pid": info.pid}

    async def set(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``lock.set``: take, change or drop a lock; ``wait`` parks on a conflict."""
        p = Params(params)
        r = LockRequest.parse(p)
        wait = p.opt_bool("wait", False) and r.type != F_UNLCK
        key = r.key()
        self._recent.pop(key, None)
        if not wait:
            await self._apply(r)
            return None
        waiter = _Waiter(r.ino, r.kind, r.type, r.start, r.end)
        old = self._waiters.get(key)
        if old is not None:  # a retried call (the client's RPC timed out): take its place
            old.cancelled = True
            self.wake(r.ino)
        self._waiters[key] = waiter
        try:
            with trio.move_on_after(self.wait_slice):
                while True:
                    async with waiter.busy:
                        if waiter.cancelled:
                            raise Interrupted("the lock request was cancelled")
                        try:
                            await self._apply(r)
                        except LockConflict:
                            pass
                        else:
                            waiter.granted = True
                            self._remember(key, True)
                            return None
                        if r.kind == "posix" and self._would_deadlock(r):
                            raise Deadlock(f"waiting for this lock on inode {r.ino} would deadlock")
                        # Registered before releasing ``busy``: a release applied from now on
                        # sets this event.
                        ev = self._events.setdefault(r.ino, trio.Event())
                    await ev.wait()
            raise StillWaiting("the lock is still held by another owner; ask again", retry=True)
        finally:
            if self._waiters.get(key) is waiter:
                del self._waiters[key]

    async def cancel(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``lock.cancel``: stop a waiting request; ``granted`` if it got the lock first."""
        p = Params(params)
        key: WaiterKey = (
            p.int("session", min=1, max=_U64),
            p.int("owner", min=0, max=_U64),
            p.int("ino", min=1),
            p.str("kind", max_len=8),
        )
        waiter = self._waiters.get(key)
        if waiter is None:
            return {"granted": self._recent.pop(key, False)}
        async with waiter.busy:
            waiter.cancelled = True
            granted = waiter.granted
        self.wake(waiter.ino)
        return {"granted": granted}

    async def release(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``lock.release``: drop every lock of an owner on an inode (a close)."""
        p = Params(params)
        kind = p.str("kind", max_len=8)
        await self._propose(
            "lock_release",
            ino=p.int("ino", min=1),
            sid=p.int("session", min=1, max=_U64),
            owner=p.int("owner", min=0, max=_U64),
            kind=kind if kind in KINDS else "posix",
        )

    async def listing(self, peer: Peer, params: dict[str, Any]) -> Any:
        """``admin.locks``: every lock (of one inode with ``ino``) and every waiter."""
        await self._read()
        p = Params(params)
        ino = p.opt_int("ino", None, min=1) if "ino" in p else None
        held = [
            {
                "ino": i.ino,
                "session": i.owner[0],
                "owner": i.owner[1],
                "kind": i.kind,
                "type": i.type,
                "start": i.start,
                "end": i.end,
                "pid": i.pid,
            }
            for i in self._table().locks(ino)
        ]
        waiting = [
            {
                "ino": w.ino,
                "session": k[0],
                "owner": k[1],
                "kind": w.kind,
                "type": w.type,
                "start": w.start,
                "end": w.end,
            }
            for k, w in sorted(self._waiters.items())
            if ino is None or w.ino == ino
        ]
        return {"held": held, "waiting": waiting}

    # ------------------------------------------------------------------ internals
    async def _apply(self, r: LockRequest) -> None:
        await self._propose(
            "lock_set",
            ino=r.ino,
            sid=r.owner[0],
            owner=r.owner[1],
            kind=r.kind,
            type=r.type,
            start=r.start,
            end=r.end,
            pid=r.pid,
        )

    def _remember(self, key: WaiterKey, granted: bool) -> None:
        self._recent[key] = granted
        while len(self._recent) > RECENT_MAX:
            del self._recent[next(iter(self._recent))]

    def _would_deadlock(self, r: LockRequest) -> bool:
        """Whether ``r.owner`` waiting for ``r`` closes a cycle of waiting POSIX owners."""
        table = self._table()
        waiting: dict[Owner, _Waiter] = {
            (k[0], k[1]): w
            for k, w in self._waiters.items()
            if w.kind == "posix" and not w.cancelled
        }
        seen: set[Owner] = set()
        todo = list(table.holders_blocking(r.ino, r.owner, r.kind, r.type, r.start, r.end))
        while todo:
            holder = todo.pop()
            if holder == r.owner:
                return True
            if holder in seen:
                continue
            seen.add(holder)
            w = waiting.get(holder)
            if w is not None:
                todo.extend(table.holders_blocking(w.ino, holder, w.kind, w.type, w.start, w.end))
        return False
