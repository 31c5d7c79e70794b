"""POSIX byte-range locks and BSD ``flock`` locks: a pure lock table.

Part of the metadata state machine: every metaserver applies the same lock commands in the
same order, so this module is pure and deterministic (no I/O, no clock, no randomness, no
iteration over str-keyed sets).  It answers only the non-blocking questions (``F_SETLK``,
``F_GETLK``, ``flock(LOCK_NB)``); waiting (``F_SETLKW``), wake-ups and deadlock detection
belong to the leader, which uses ``holders_blocking`` to build its wait-for graph and the
return values of ``set``/``release_*`` to know when to retry its waiters.

Owners
------
An owner is ``(session, lock_owner)``: the client mount's metadata session and the kernel's
``lock_owner`` (for POSIX locks it identifies the process's files struct, for ``flock`` the
open file description).  The session keeps owners of different machines apart.

Two kinds
---------
* ``"posix"`` (``fcntl``): byte ranges ``[start, end]``, both inclusive, ``end ==
  OFFSET_MAX`` meaning "to the end of the file" (as in FUSE's ``fuse_file_lock``).  Locks of
  one owner never conflict with each other: a new lock replaces the owner's coverage of its
  range (splitting what sticks out), so upgrades and downgrades happen in place, and
  ``F_UNLCK`` removes the owner's coverage of the range.  Locks of different owners conflict
  where they overlap and either is a write lock.
* ``"flock"``: whole-file (stored as ``[0, OFFSET_MAX]``), at most one per owner and inode;
  ``F_RDLCK`` is shared, ``F_WRLCK`` exclusive.  A conversion replaces the owner's lock, and
  is refused (leaving the old lock in place) if another owner conflicts.  Linux drops the old
  lock before trying the conversion; keeping it is the atomic choice a replicated state
  machine wants, and a program cannot tell the difference except by racing.

The two kinds never conflict with each other (as on Linux).

Invariants (``LockTable.check`` verifies exactly these; ``decode`` enforces them)
--------------------------------------------------------------------------------
L1. No inode keeps an empty entry; every lock sits under its own inode and kind.
L2. Every lock has type ``F_RDLCK`` or ``F_WRLCK`` and ``0 <= start <= end <= OFFSET_MAX``.
L3. An inode's locks are sorted by ``(start, owner, end)``.
L4. A ``flock`` lock covers the whole file; an owner has at most one per inode.
L5. The ``posix`` locks of one owner on one inode never overlap, and two of the same type
    never touch (``a.end + 1 == b.start``): the representation is canonical (merged).
L6. Overlapping locks of different owners are both read locks.

Snapshot encoding (``encode``): a list of records ``[ino, kind, session, lock_owner, type,
start, end, pid]`` sorted by ``(ino, kind, start, session, lock_owner, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from dfs.errors import InvalidArgument, LockConflict

__all__ = [
    "FLOCK",
    "F_RDLCK",
    "F_UNLCK",
    "F_WRLCK",
    "KINDS",
    "OFFSET_MAX",
    "POSIX",
    "LockConflict",
    "LockInfo",
    "LockTable",
    "Owner",
    "conflict_of",
]

#: Lock types, with Linux's ``fcntl`` values (what FUSE passes in ``fuse_file_lock.type``).
F_RDLCK: Final = 0
F_WRLCK: Final = 1
F_UNLCK: Final = 2
#: The largest offset; a range ending here extends to the end of the file, however long.
OFFSET_MAX: Final = 2**63 - 1
POSIX: Final = "posix"
FLOCK: Final = "flock"
KINDS: Final = (POSIX, FLOCK)

_U64: Final = 2**64
_U32: Final = 2**32
_TYPE_NAMES: Final = {F_RDLCK: "read", F_WRLCK: "write", F_UNLCK: "unlock"}

#: ``(session id, kernel lock_owner)``.
Owner = tuple[int, int]


@dataclass(frozen=True, slots=True)
class LockInfo:
    """One held lock; also the answer of ``F_GETLK`` (``LockTable.test``)."""

    ino: int
    owner: Owner
    kind: str
    type: int
    start: int
    end: int
    #: The pid of the process that set it, as the client reported it (for ``F_GETLK``).
    pid: int

    @property
    def session(self) -> int:
        return self.owner[0]

    def overlaps(self, start: int, end: int) -> bool:
        return self.start <= end and start <= self.end

    def to_record(self) -> list[Any]:
        return [
            self.ino,
            self.kind,
            self.owner[0],
            self.owner[1],
            self.type,
            self.start,
            self.end,
            self.pid,
        ]

    @classmethod
    def from_record(cls, r: Any) -> LockInfo:
        """Rebuild a lock from ``to_record``'s list; ``ValueError`` unless well formed."""
        if not isinstance(r, list | tuple) or len(r) != 8:
            raise ValueError(f"lock record is not a list of 8 fields: {r!r}")
        ino, kind, session, lock_owner, typ, start, end, pid = r
        if kind not in KINDS:
            raise ValueError(f"unknown lock kind {kind!r}")
        for name, value in (
            ("ino", ino),
            ("session", session),
            ("lock_owner", lock_owner),
            ("type", typ),
            ("start", start),
            ("end", end),
            ("pid", pid),
        ):
            if not _is_int(value):
                raise ValueError(f"lock record field {name} is not an int: {value!r}")
        lock = cls(int(ino), (int(session), int(lock_owner)), str(kind), typ, start, end, pid)
        problem = _lock_problem(lock)
        if problem:
            raise ValueError(problem)
        return lock

    def describe(self) -> dict[str, Any]:
        """A msgpack-friendly description (``dfs locks``, ``LockConflict`` details)."""
        return {
            "ino": self.ino,
            "kind": self.kind,
            "owner": [self.owner[0], self.owner[1]],
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "pid": self.pid,
        }


def conflict_of(err: LockConflict) -> LockInfo | None:
    """The conflicting lock that ``err`` carries in its details, or None when it carries none
    (or a malformed one: the details may come from a peer)."""
    d = err.details
    owner = d.get("owner")
    if not isinstance(owner, list | tuple) or len(owner) != 2:
        return None
    rec = [d.get(k) for k in ("ino", "kind")] + list(owner)
    rec += [d.get(k) for k in ("type", "start", "end", "pid")]
    try:
        return LockInfo.from_record(rec)
    except ValueError:
        return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _lock_problem(lk: LockInfo) -> str:
    """Why ``lk`` is not a valid held lock (L2, L4's range, field ranges), or ""."""
    if lk.ino < 1 or lk.ino >= _U64:
        return f"lock on invalid inode {lk.ino}"
    if not (0 <= lk.owner[0] < _U64 and 0 <= lk.owner[1] < _U64):
        return f"lock with invalid owner {lk.owner}"
    if lk.type not in (F_RDLCK, F_WRLCK):
        return f"lock of invalid type {lk.type}"
    if not 0 <= lk.start <= lk.end <= OFFSET_MAX:
        return f"lock with invalid range [{lk.start}, {lk.end}]"
    if not 0 <= lk.pid < _U32:
        return f"lock with invalid pid {lk.pid}"
    if lk.kind == FLOCK and (lk.start, lk.end) != (0, OFFSET_MAX):
        return f"flock lock not on the whole file: [{lk.start}, {lk.end}]"
    return ""


def _conflicting(a: int, b: int) -> bool:
    return F_WRLCK in (a, b)


def _order(lk: LockInfo) -> tuple[int, Owner, int]:
    return (lk.start, lk.owner, lk.end)


def _listing_order(lk: LockInfo) -> tuple[int, str, int, Owner, int]:
    return (lk.ino, lk.kind, lk.start, lk.owner, lk.end)


# ---------------------------------------------------------------- argument checks
def _check_ino(ino: int) -> int:
    if not _is_int(ino) or not 1 <= ino < _U64:
        raise InvalidArgument(f"invalid inode number {ino!r}")
    return ino


def _check_owner(owner: Any) -> Owner:
    """Accept a tuple or (from msgpack) a list of two ints."""
    if (
        not isinstance(owner, tuple | list)
        or len(owner) != 2
        or not all(_is_int(x) and 0 <= x < _U64 for x in owner)
    ):
        raise InvalidArgument(f"invalid lock owner {owner!r}")
    return (owner[0], owner[1])


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidArgument(f"unknown lock kind {kind!r}")
    return kind


def _check_type(typ: int, *, unlock: bool) -> int:
    allowed = (F_RDLCK, F_WRLCK, F_UNLCK) if unlock else (F_RDLCK, F_WRLCK)
    if not _is_int(typ) or typ not in allowed:
        raise InvalidArgument(f"invalid lock type {typ!r}")
    return typ


def _check_range(start: int, end: int) -> None:
    if not (_is_int(start) and _is_int(end) and 0 <= start <= end <= OFFSET_MAX):
        raise InvalidArgument(f"invalid lock range [{start!r}, {end!r}]")


def _check_pid(pid: int) -> None:
    if not _is_int(pid) or not 0 <= pid < _U32:
        raise InvalidArgument(f"invalid pid {pid!r}")


class LockTable:
    """The locks of every inode; mutated only through the state machine.

    Per kind, ``inode -> locks`` sorted by ``(start, owner, end)`` (L3); an inode without
    locks has no entry (L1).  Every operation costs time linear in the inode's lock count,
    except ``release_session``, which scans every lock (sessions end rarely).
    """

    def __init__(self) -> None:
        self._tables: dict[str, dict[int, list[LockInfo]]] = {POSIX: {}, FLOCK: {}}

    # ------------------------------------------------------------------ commands
    def set(
        self,
        ino: int,
        owner: Owner,
        kind: str,
        type: int,
        start: int = 0,
        end: int = OFFSET_MAX,
        pid: int = 0,
    ) -> bool:
        """Set (``F_RDLCK``/``F_WRLCK``) or remove (``F_UNLCK``) ``owner``'s lock on
        ``[start, end]`` of ``ino`` without waiting (``F_SETLK``; ``flock`` ignores the range).

        Raises ``LockConflict`` (whose details describe the lock that ``test`` would report)
        if another owner's lock conflicts, and then changes nothing.  Removing a lock that
        does not exist is not an error.  Returns True if the owner's coverage became weaker
        somewhere (an unlock or a write-to-read downgrade of something it held): waiters on
        this inode may now proceed.
        """
        ino, owner, kind = _check_ino(ino), _check_owner(owner), _check_kind(kind)
        _check_type(type, unlock=True)
        _check_range(start, end)
        _check_pid(pid)
        if kind == FLOCK:
            start, end = 0, OFFSET_MAX
        table = self._tables[kind]
        current = table.get(ino, [])
        if type != F_UNLCK:
            blocker = _first_conflict(current, owner, type, start, end)
            if blocker is not None:
                raise _conflict_error(blocker)
        if kind == FLOCK:
            updated, released = _flock_set(current, ino, owner, type, pid)
        else:
            updated, released = _posix_set(current, ino, owner, type, start, end, pid)
        if updated:
            table[ino] = updated
        else:
            table.pop(ino, None)
        return released

    def release_owner(self, ino: int, owner: Owner, kind: str = POSIX) -> bool:
        """Drop every ``kind`` lock of ``owner`` on ``ino`` (a process closing the file drops
        its POSIX locks; the last close of an open file description drops its flock).
        Returns True if there was any (waiters on ``ino`` may proceed)."""
        ino, owner, kind = _check_ino(ino), _check_owner(owner), _check_kind(kind)
        table = self._tables[kind]
        current = table.get(ino)
        if current is None:
            return False
        kept = [lk for lk in current if lk.owner != owner]
        if len(kept) == len(current):
            return False
        if kept:
            table[ino] = kept
        else:
            del table[ino]
        return True

    def release_session(self, session: int) -> list[int]:
        """Drop every lock, of both kinds, of every owner in ``session`` (the session was
        closed or expired).  Returns the inodes that lost locks, sorted."""
        if not _is_int(session):
            raise InvalidArgument(f"invalid session {session!r}")
        affected: set[int] = set()
        for table in self._tables.values():
            for ino in sorted(table):
                current = table[ino]
                kept = [lk for lk in current if lk.owner[0] != session]
                if len(kept) == len(current):
                    continue
                affected.add(ino)
                if kept:
                    table[ino] = kept
                else:
                    del table[ino]
        return sorted(affected)

    def inode_gone(self, ino: int) -> bool:
        """Drop every lock on ``ino`` (the inode was freed).  Returns True if there was any."""
        ino = _check_ino(ino)
        found = False
        for table in self._tables.values():
            found = table.pop(ino, None) is not None or found
        return found

    # ------------------------------------------------------------------ queries
    def test(
        self,
        ino: int,
        owner: Owner,
        kind: str,
        type: int,
        start: int = 0,
        end: int = OFFSET_MAX,
    ) -> LockInfo | None:
        """``F_GETLK``: the first lock (lowest start, then owner) that would refuse
        ``owner``'s ``type`` lock on ``[start, end]``, or None (reply ``F_UNLCK``)."""
        ino, owner, kind = _check_ino(ino), _check_owner(owner), _check_kind(kind)
        _check_type(type, unlock=False)
        _check_range(start, end)
        if kind == FLOCK:
            start, end = 0, OFFSET_MAX
        return _first_conflict(self._tables[kind].get(ino, []), owner, type, start, end)

    def holders_blocking(
        self,
        ino: int,
        owner: Owner,
        kind: str,
        type: int,
        start: int = 0,
        end: int = OFFSET_MAX,
    ) -> list[Owner]:
        """The distinct owners (sorted) whose locks refuse ``owner``'s request: the edges
        of the leader's wait-for graph from a waiting ``owner``."""
        ino, owner, kind = _check_ino(ino), _check_owner(owner), _check_kind(kind)
        _check_type(type, unlock=False)
        _check_range(start, end)
        if kind == FLOCK:
            start, end = 0, OFFSET_MAX
        found = {
            lk.owner for lk in _conflicts(self._tables[kind].get(ino, []), owner, type, start, end)
        }
        return sorted(found)

    def locks(self, ino: int | None = None) -> list[LockInfo]:
        """Every lock (or those of ``ino``), sorted by ``(ino, kind, start, owner, end)``."""
        out: list[LockInfo] = []
        for table in self._tables.values():
            if ino is None:
                for held in table.values():
                    out.extend(held)
            else:
                out.extend(table.get(ino, []))
        out.sort(key=_listing_order)
        return out

    def counts(self) -> dict[str, int]:
        """Numbers of posix locks, flock locks and inodes with any lock."""
        inos = set(self._tables[POSIX]) | set(self._tables[FLOCK])
        return {
            "posix": sum(len(v) for v in self._tables[POSIX].values()),
            "flock": sum(len(v) for v in self._tables[FLOCK].values()),
            "inodes": len(inos),
        }

    def check(self) -> list[str]:
        """Violations of the invariants L1..L6 (empty when the table is sound)."""
        problems: list[str] = []
        for kind, table in self._tables.items():
            for ino in sorted(table):
                problems.extend(_check_inode(kind, ino, table[ino]))
        return problems

    # ------------------------------------------------------------------ snapshot
    def encode(self) -> list[list[Any]]:
        return [lk.to_record() for lk in self.locks()]

    @classmethod
    def decode(cls, blob: Any) -> LockTable:
        """Rebuild a table from ``encode``'s list; ``ValueError`` if malformed or if it
        breaks an invariant (for example two conflicting locks)."""
        if not isinstance(blob, list | tuple):
            raise ValueError(f"lock table is not a list: {type(blob).__name__}")
        t = cls()
        for rec in blob:
            lk = LockInfo.from_record(rec)
            t._tables[lk.kind].setdefault(lk.ino, []).append(lk)
        for table in t._tables.values():
            for held in table.values():
                held.sort(key=_order)
        problems = t.check()
        if problems:
            raise ValueError(f"invalid lock table: {problems[0]}")
        return t

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LockTable):
            return NotImplemented
        return self.encode() == other.encode()

    # Mutable, so unhashable (the usual idiom; mypy wants it spelled out).
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LockTable({self.counts()})"


# ---------------------------------------------------------------- helpers (pure)
def _conflicts(
    held: list[LockInfo], owner: Owner, typ: int, start: int, end: int
) -> list[LockInfo]:
    """``held``'s locks of other owners that refuse a ``typ`` lock on ``[start, end]``, in
    ``held``'s order (lowest start first, then owner)."""
    out = []
    for lk in held:
        if lk.start > end:
            break  # sorted by start: nothing further overlaps
        if lk.owner != owner and lk.end >= start and _conflicting(lk.type, typ):
            out.append(lk)
    return out


def _first_conflict(
    held: list[LockInfo], owner: Owner, typ: int, start: int, end: int
) -> LockInfo | None:
    for lk in held:
        if lk.start > end:
            return None
        if lk.owner != owner and lk.end >= start and _conflicting(lk.type, typ):
            return lk
    return None


def _conflict_error(lk: LockInfo) -> LockConflict:
    return LockConflict(
        f"{lk.kind} {_TYPE_NAMES[lk.type]} lock on inode {lk.ino} [{lk.start}, {lk.end}] "
        f"held by owner {lk.owner[0]}:{lk.owner[1]} (pid {lk.pid})",
        **lk.describe(),
    )


def _posix_set(
    held: list[LockInfo], ino: int, owner: Owner, typ: int, start: int, end: int, pid: int
) -> tuple[list[LockInfo], bool]:
    """The inode's locks after ``owner`` sets ``typ`` on ``[start, end]`` (no conflict
    checks), and whether the owner's coverage became weaker somewhere."""
    others: list[LockInfo] = []
    mine: list[LockInfo] = []
    released = False
    for lk in held:
        if lk.owner != owner:
            others.append(lk)
        elif not lk.overlaps(start, end):
            mine.append(lk)
        else:
            if typ == F_UNLCK or (lk.type == F_WRLCK and typ == F_RDLCK):
                released = True
            # Keep what sticks out on either side.
            if lk.start < start:
                mine.append(replace(lk, end=start - 1))
            if lk.end > end:
                mine.append(replace(lk, start=end + 1))
    if typ != F_UNLCK:
        # Merge with the owner's same-type locks touching the range (L5: at most one on each
        # side, as the owner's locks were canonical); the merged lock takes the new pid.
        lo, hi = start, end
        rest = []
        for lk in mine:
            if lk.type == typ and (lk.end + 1 == start or lk.start == end + 1):
                lo, hi = min(lo, lk.start), max(hi, lk.end)
            else:
                rest.append(lk)
        mine = [*rest, LockInfo(ino, owner, POSIX, typ, lo, hi, pid)]
    out = others + mine
    out.sort(key=_order)
    return out, released


def _flock_set(
    held: list[LockInfo], ino: int, owner: Owner, typ: int, pid: int
) -> tuple[list[LockInfo], bool]:
    out = [lk for lk in held if lk.owner != owner]
    old = next((lk for lk in held if lk.owner == owner), None)
    released = old is not None and (typ == F_UNLCK or (old.type == F_WRLCK and typ == F_RDLCK))
    if typ != F_UNLCK:
        out.append(LockInfo(ino, owner, FLOCK, typ, 0, OFFSET_MAX, pid))
        out.sort(key=_order)
    return out, released


def _check_inode(kind: str, ino: int, held: list[LockInfo]) -> list[str]:
    where = f"inode {ino} ({kind})"
    if not held:
        return [f"{where}: empty entry"]  # L1
    problems: list[str] = []
    for lk in held:
        if lk.ino != ino or lk.kind != kind:
            problems.append(f"{where}: holds a lock of inode {lk.ino} ({lk.kind})")  # L1
        problem = _lock_problem(lk)  # L2, L4 (range)
        if problem:
            problems.append(f"{where}: {problem}")
    if [_order(lk) for lk in held] != sorted(_order(lk) for lk in held):
        problems.append(f"{where}: locks not sorted")  # L3
    if kind == FLOCK:
        owners = [lk.owner for lk in held]
        if len(set(owners)) != len(owners):
            problems.append(f"{where}: an owner holds two flock locks")  # L4
    by_start = sorted(held, key=_order)
    for i, a in enumerate(by_start):
        for b in by_start[i + 1 :]:
            if b.start > a.end + 1:
                break
            if a.owner == b.owner:
                if kind == POSIX and (a.overlaps(b.start, b.end) or a.type == b.type):
                    problems.append(f"{where}: owner {a.owner} has overlapping or unmerged locks")
            elif a.overlaps(b.start, b.end) and _conflicting(a.type, b.type):
                problems.append(f"{where}: conflicting locks of {a.owner} and {b.owner}")  # L6
    return problems
