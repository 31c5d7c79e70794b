"""The pure lock table (``dfs.metaserver.locks``): POSIX byte-range and flock semantics,
releases, snapshots, and a model-based test against a per-byte brute-force model."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dfs.errors import DfsError, InvalidArgument
from dfs.metaserver.locks import (
    F_RDLCK,
    F_UNLCK,
    F_WRLCK,
    FLOCK,
    OFFSET_MAX,
    POSIX,
    LockConflict,
    LockInfo,
    LockTable,
    Owner,
    conflict_of,
)

pytestmark = pytest.mark.unit

A: Owner = (1, 10)
B: Owner = (1, 11)
C: Owner = (2, 10)
INO = 7


def spans(t: LockTable, ino: int = INO, kind: str = POSIX) -> list[tuple[Owner, int, int, int]]:
    """The inode's locks as ``(owner, type, start, end)``, in listing order."""
    return [(lk.owner, lk.type, lk.start, lk.end) for lk in t.locks(ino) if lk.kind == kind]


def refused(t: LockTable, *args: Any, **kw: Any) -> LockConflict:
    """``t.set(*args)`` must raise LockConflict and change nothing."""
    before = t.encode()
    with pytest.raises(LockConflict) as info:
        t.set(*args, **kw)
    assert t.encode() == before
    assert t.check() == []
    return info.value


@pytest.fixture
def t() -> LockTable:
    return LockTable()


# ---------------------------------------------------------------- POSIX: one owner
def test_unlock_middle_of_write_lock_splits_it(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 0, 99, pid=5)
    assert t.set(INO, A, POSIX, F_UNLCK, 40, 59) is True
    assert spans(t) == [(A, F_WRLCK, 0, 39), (A, F_WRLCK, 60, 99)]
    assert {lk.pid for lk in t.locks()} == {5}  # the pieces keep their pid
    assert t.check() == []


def test_lock_in_middle_of_other_type_splits_in_three(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, OFFSET_MAX)
    t.set(INO, A, POSIX, F_WRLCK, 10, 19)
    assert spans(t) == [(A, F_RDLCK, 0, 9), (A, F_WRLCK, 10, 19), (A, F_RDLCK, 20, OFFSET_MAX)]


def test_adjacent_and_overlapping_same_type_locks_merge(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 9, pid=1)
    t.set(INO, A, POSIX, F_RDLCK, 20, 29, pid=1)
    t.set(INO, A, POSIX, F_RDLCK, 10, 19, pid=2)  # touches both: one lock
    assert spans(t) == [(A, F_RDLCK, 0, 29)]
    assert t.locks()[0].pid == 2  # a merged lock carries the latest request's pid
    t.set(INO, A, POSIX, F_RDLCK, 25, 40)
    assert spans(t) == [(A, F_RDLCK, 0, 40)]


def test_different_types_touching_do_not_merge(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 9)
    t.set(INO, A, POSIX, F_WRLCK, 10, 19)
    assert spans(t) == [(A, F_RDLCK, 0, 9), (A, F_WRLCK, 10, 19)]


def test_read_to_write_upgrade_in_place_when_alone(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 99)
    assert t.set(INO, A, POSIX, F_WRLCK, 0, 99) is False  # an upgrade releases nothing
    assert spans(t) == [(A, F_WRLCK, 0, 99)]


def test_upgrade_refused_when_another_owner_reads_overlapping(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 99)
    t.set(INO, B, POSIX, F_RDLCK, 50, 60, pid=42)
    err = refused(t, INO, A, POSIX, F_WRLCK, 0, 99)
    assert conflict_of(err) == LockInfo(INO, B, POSIX, F_RDLCK, 50, 60, 42)
    assert err.details["pid"] == 42
    # Upgrading the part B does not touch is fine.
    t.set(INO, A, POSIX, F_WRLCK, 0, 49)
    assert spans(t) == [(A, F_WRLCK, 0, 49), (A, F_RDLCK, 50, 99), (B, F_RDLCK, 50, 60)]


def test_downgrade_in_place_reports_release(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 0, OFFSET_MAX)
    assert t.set(INO, A, POSIX, F_RDLCK, 100, 199) is True
    assert spans(t) == [
        (A, F_WRLCK, 0, 99),
        (A, F_RDLCK, 100, 199),
        (A, F_WRLCK, 200, OFFSET_MAX),
    ]
    t.set(INO, B, POSIX, F_RDLCK, 150, 160)  # now possible


def test_unlock_of_unlocked_range_is_fine(t: LockTable) -> None:
    assert t.set(INO, A, POSIX, F_UNLCK, 0, OFFSET_MAX) is False
    t.set(INO, B, POSIX, F_WRLCK, 0, 9)
    assert t.set(INO, A, POSIX, F_UNLCK, 0, 9) is False  # B's lock is not A's to remove
    assert spans(t) == [(B, F_WRLCK, 0, 9)]


def test_unlock_everything_leaves_no_entry(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 5, 10)
    t.set(INO, A, POSIX, F_UNLCK, 0, OFFSET_MAX)
    assert t.locks() == []
    assert t.counts() == {"posix": 0, "flock": 0, "inodes": 0}
    assert t == LockTable()


def test_same_owner_never_conflicts(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 0, 9)
    t.set(INO, A, POSIX, F_WRLCK, 5, 15)
    t.set(INO, A, POSIX, F_RDLCK, 3, 4)
    assert t.test(INO, A, POSIX, F_WRLCK, 0, OFFSET_MAX) is None
    assert spans(t) == [(A, F_WRLCK, 0, 2), (A, F_RDLCK, 3, 4), (A, F_WRLCK, 5, 15)]


def test_readers_share_and_writers_exclude(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 9)
    t.set(INO, B, POSIX, F_RDLCK, 5, 14)
    refused(t, INO, C, POSIX, F_WRLCK, 9, 9)
    t.set(INO, C, POSIX, F_WRLCK, 15, OFFSET_MAX)
    refused(t, INO, A, POSIX, F_RDLCK, OFFSET_MAX, OFFSET_MAX)
    # Other inodes are independent.
    t.set(INO + 1, C, POSIX, F_WRLCK, 0, OFFSET_MAX)


def test_same_session_different_lock_owners_conflict(t: LockTable) -> None:
    t.set(INO, (1, 10), POSIX, F_WRLCK, 0, 0)
    refused(t, INO, (1, 11), POSIX, F_RDLCK, 0, 0)


# ---------------------------------------------------------------- test() and blockers
def test_test_reports_lowest_start_then_owner(t: LockTable) -> None:
    t.set(INO, C, POSIX, F_RDLCK, 10, 19, pid=3)
    t.set(INO, B, POSIX, F_RDLCK, 10, 29, pid=2)
    t.set(INO, A, POSIX, F_RDLCK, 5, 50, pid=1)
    probe: Owner = (3, 1)
    assert t.test(INO, probe, POSIX, F_RDLCK, 0, OFFSET_MAX) is None
    assert t.test(INO, probe, POSIX, F_WRLCK, 0, OFFSET_MAX) == LockInfo(
        INO, A, POSIX, F_RDLCK, 5, 50, 1
    )
    # From A's side, B (same start as C, lower owner) comes first.
    assert t.test(INO, A, POSIX, F_WRLCK, 0, 100) == LockInfo(INO, B, POSIX, F_RDLCK, 10, 29, 2)
    assert t.test(INO, A, POSIX, F_WRLCK, 20, 100) == LockInfo(INO, B, POSIX, F_RDLCK, 10, 29, 2)
    assert t.test(INO, A, POSIX, F_WRLCK, 30, 100) is None
    assert t.test(INO, A, POSIX, F_WRLCK, 0, 9) is None
    assert t.test(INO + 1, A, POSIX, F_WRLCK) is None


def test_test_skips_a_non_conflicting_earlier_lock(t: LockTable) -> None:
    t.set(INO, B, POSIX, F_RDLCK, 0, 100)
    t.set(INO, C, POSIX, F_WRLCK, 200, 300)
    got = t.test(INO, A, POSIX, F_RDLCK, 50, 250)
    assert got is not None and got.owner == C


def test_holders_blocking(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 9)
    t.set(INO, A, POSIX, F_RDLCK, 20, 29)  # two locks, one owner
    t.set(INO, B, POSIX, F_RDLCK, 5, 25)
    t.set(INO, C, POSIX, F_WRLCK, 100, 200)
    probe: Owner = (9, 9)
    assert t.holders_blocking(INO, probe, POSIX, F_WRLCK, 0, OFFSET_MAX) == [A, B, C]
    assert t.holders_blocking(INO, probe, POSIX, F_RDLCK, 0, OFFSET_MAX) == [C]
    assert t.holders_blocking(INO, A, POSIX, F_WRLCK, 0, 50) == [B]
    assert t.holders_blocking(INO, probe, POSIX, F_WRLCK, 30, 99) == []
    assert t.holders_blocking(INO, probe, FLOCK, F_WRLCK) == []


def test_queries_reject_unlock_type(t: LockTable) -> None:
    with pytest.raises(InvalidArgument):
        t.test(INO, A, POSIX, F_UNLCK, 0, 1)
    with pytest.raises(InvalidArgument):
        t.holders_blocking(INO, A, POSIX, F_UNLCK, 0, 1)


@pytest.mark.parametrize(
    "args",
    [
        (INO, A, POSIX, F_RDLCK, 5, 4),
        (INO, A, POSIX, F_RDLCK, -1, 4),
        (INO, A, POSIX, F_RDLCK, 0, OFFSET_MAX + 1),
        (INO, A, POSIX, 3, 0, 1),
        (INO, A, POSIX, True, 0, 1),
        (INO, A, "ofd", F_RDLCK, 0, 1),
        (0, A, POSIX, F_RDLCK, 0, 1),
        (INO, (1,), POSIX, F_RDLCK, 0, 1),
        (INO, (1, -1), POSIX, F_RDLCK, 0, 1),
        (INO, ("1", 2), POSIX, F_RDLCK, 0, 1),
    ],
)
def test_invalid_arguments(t: LockTable, args: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidArgument):
        t.set(*args)
    assert t.encode() == []


def test_invalid_pid(t: LockTable) -> None:
    with pytest.raises(InvalidArgument):
        t.set(INO, A, POSIX, F_RDLCK, 0, 1, pid=-1)
    with pytest.raises(InvalidArgument):
        t.set(INO, A, POSIX, F_RDLCK, 0, 1, pid=2**32)


def test_owner_may_arrive_as_a_list(t: LockTable) -> None:
    t.set(INO, [1, 10], POSIX, F_WRLCK, 0, 0)  # type: ignore[arg-type]  # from msgpack
    assert t.locks()[0].owner == A
    refused(t, INO, B, POSIX, F_WRLCK, 0, 0)


# ---------------------------------------------------------------- flock
def test_flock_shared_and_exclusive(t: LockTable) -> None:
    t.set(INO, A, FLOCK, F_RDLCK, pid=1)
    t.set(INO, B, FLOCK, F_RDLCK, pid=2)
    err = refused(t, INO, C, FLOCK, F_WRLCK)
    assert conflict_of(err) == LockInfo(INO, A, FLOCK, F_RDLCK, 0, OFFSET_MAX, 1)
    assert t.holders_blocking(INO, C, FLOCK, F_WRLCK) == [A, B]
    assert spans(t, kind=FLOCK) == [(A, F_RDLCK, 0, OFFSET_MAX), (B, F_RDLCK, 0, OFFSET_MAX)]


def test_flock_conversion(t: LockTable) -> None:
    t.set(INO, A, FLOCK, F_RDLCK)
    assert t.set(INO, A, FLOCK, F_WRLCK) is False  # alone: upgrade
    assert spans(t, kind=FLOCK) == [(A, F_WRLCK, 0, OFFSET_MAX)]
    refused(t, INO, B, FLOCK, F_RDLCK)
    assert t.set(INO, A, FLOCK, F_RDLCK) is True  # downgrade lets readers in
    t.set(INO, B, FLOCK, F_RDLCK)
    refused(t, INO, A, FLOCK, F_WRLCK)  # the refused upgrade keeps A's shared lock
    assert spans(t, kind=FLOCK) == [(A, F_RDLCK, 0, OFFSET_MAX), (B, F_RDLCK, 0, OFFSET_MAX)]
    assert t.set(INO, A, FLOCK, F_UNLCK) is True
    assert t.set(INO, A, FLOCK, F_UNLCK) is False
    assert spans(t, kind=FLOCK) == [(B, F_RDLCK, 0, OFFSET_MAX)]


def test_flock_ignores_the_range(t: LockTable) -> None:
    t.set(INO, A, FLOCK, F_WRLCK, 10, 20)
    assert spans(t, kind=FLOCK) == [(A, F_WRLCK, 0, OFFSET_MAX)]
    assert t.test(INO, B, FLOCK, F_RDLCK, 100, 200) is not None


def test_flock_and_posix_do_not_interact(t: LockTable) -> None:
    t.set(INO, A, FLOCK, F_WRLCK)
    t.set(INO, B, POSIX, F_WRLCK, 0, OFFSET_MAX)
    assert t.test(INO, B, FLOCK, F_WRLCK) is not None
    assert t.test(INO, A, POSIX, F_WRLCK) is not None
    t.set(INO, B, FLOCK, F_UNLCK)  # does not touch B's posix lock
    t.set(INO, A, POSIX, F_UNLCK, 0, OFFSET_MAX)  # nor A's flock
    assert t.counts() == {"posix": 1, "flock": 1, "inodes": 1}
    assert t.release_owner(INO, A) is False  # posix by default: A holds none
    assert t.release_owner(INO, A, FLOCK) is True
    assert [lk.kind for lk in t.locks()] == [POSIX]


# ---------------------------------------------------------------- releases
def test_release_owner(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 0, 9)
    t.set(INO, A, POSIX, F_RDLCK, 20, 29)
    t.set(INO, B, POSIX, F_RDLCK, 20, 29)
    t.set(INO + 1, A, POSIX, F_WRLCK, 0, 9)
    assert t.release_owner(INO, A) is True
    assert t.release_owner(INO, A) is False
    assert spans(t) == [(B, F_RDLCK, 20, 29)]
    assert spans(t, INO + 1) == [(A, F_WRLCK, 0, 9)]
    assert t.release_owner(INO, B) is True
    assert t.release_owner(99, B) is False
    assert t.counts() == {"posix": 1, "flock": 0, "inodes": 1}


def test_release_session(t: LockTable) -> None:
    t.set(9, A, POSIX, F_RDLCK, 0, 9)
    t.set(3, B, FLOCK, F_WRLCK)
    t.set(5, C, POSIX, F_RDLCK, 0, 9)
    t.set(9, C, POSIX, F_RDLCK, 0, 9)
    t.set(4, C, FLOCK, F_RDLCK)
    assert t.release_session(1) == [3, 9]
    assert [(lk.ino, lk.owner) for lk in t.locks()] == [(4, C), (5, C), (9, C)]
    assert t.release_session(1) == []
    assert t.release_session(2) == [4, 5, 9]
    assert t.locks() == []
    assert t == LockTable()


def test_inode_gone(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_RDLCK, 0, 9)
    t.set(INO, B, FLOCK, F_RDLCK)
    t.set(INO + 1, A, POSIX, F_RDLCK, 0, 9)
    assert t.inode_gone(INO) is True
    assert t.inode_gone(INO) is False
    assert [lk.ino for lk in t.locks()] == [INO + 1]


def test_locks_listing_is_sorted(t: LockTable) -> None:
    t.set(9, B, POSIX, F_RDLCK, 5, 9)
    t.set(9, A, POSIX, F_RDLCK, 5, 9)
    t.set(9, A, POSIX, F_RDLCK, 0, 1)
    t.set(2, C, POSIX, F_WRLCK, 0, 1)
    t.set(9, C, FLOCK, F_RDLCK)
    got = [(lk.ino, lk.kind, lk.start, lk.owner) for lk in t.locks()]
    assert got == [
        (2, POSIX, 0, C),
        (9, FLOCK, 0, C),
        (9, POSIX, 0, A),
        (9, POSIX, 5, A),
        (9, POSIX, 5, B),
    ]
    assert [lk.ino for lk in t.locks(2)] == [2]
    assert t.locks(3) == []


# ---------------------------------------------------------------- errors and snapshots
def test_lock_conflict_crosses_the_wire(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 3, 4, pid=77)
    err = refused(t, INO, B, POSIX, F_RDLCK, 0, 10)
    wire = msgpack.unpackb(msgpack.packb(err.to_wire()))
    back = DfsError.from_wire(wire)
    assert isinstance(back, LockConflict)
    assert conflict_of(back) == LockInfo(INO, A, POSIX, F_WRLCK, 3, 4, 77)
    assert conflict_of(LockConflict("no details")) is None
    assert conflict_of(LockConflict("bad", owner=[1, 2], ino=1, kind="x")) is None


def test_snapshot_round_trip(t: LockTable) -> None:
    t.set(INO, A, POSIX, F_WRLCK, 0, 9, pid=1)
    t.set(INO, A, POSIX, F_RDLCK, 10, OFFSET_MAX, pid=1)
    t.set(INO, B, POSIX, F_RDLCK, 100, 200, pid=2)
    t.set(INO, B, FLOCK, F_WRLCK, pid=2)
    t.set(3, C, FLOCK, F_RDLCK, pid=3)
    blob = msgpack.unpackb(msgpack.packb(t.encode()))
    u = LockTable.decode(blob)
    assert u == t
    assert u.encode() == t.encode()
    assert u.locks() == t.locks()
    # Order of records does not matter.
    assert LockTable.decode(list(reversed(blob))) == t
    assert LockTable.decode([]) == LockTable()
    # The decoded table behaves the same.
    refused(u, INO, C, POSIX, F_WRLCK, 150, 150)


def _rec(
    ino: int = INO,
    kind: str = POSIX,
    owner: Owner = A,
    typ: int = F_RDLCK,
    start: int = 0,
    end: int = 9,
    pid: int = 0,
) -> list[Any]:
    return [ino, kind, owner[0], owner[1], typ, start, end, pid]


@pytest.mark.parametrize(
    "blob",
    [
        None,
        {"a": 1},
        "locks",
        [None],
        [[1, 2, 3]],
        [_rec()[:-1]],
        [[*_rec(), 0]],
        [_rec(kind="ofd")],
        [_rec(typ=F_UNLCK)],
        [_rec(typ=True)],
        [_rec(start=5, end=4)],
        [_rec(start=-1)],
        [_rec(end=OFFSET_MAX + 1)],
        [_rec(ino=0)],
        [_rec(pid=-1)],
        [_rec(owner=(-1, 0))],
        [["7", *_rec()[1:]]],
        [_rec(kind=FLOCK, start=0, end=9)],
        # flock: two of one owner
        [_rec(kind=FLOCK, end=OFFSET_MAX), _rec(kind=FLOCK, end=OFFSET_MAX)],
        # posix: one owner, overlapping
        [_rec(start=0, end=9), _rec(start=5, end=15, typ=F_WRLCK)],
        # posix: one owner, unmerged (touching, same type)
        [_rec(start=0, end=9), _rec(start=10, end=15)],
        # posix: duplicate
        [_rec(), _rec()],
        # conflicting owners
        [_rec(typ=F_WRLCK), _rec(owner=B, start=9, end=9)],
        [_rec(kind=FLOCK, end=OFFSET_MAX), _rec(kind=FLOCK, owner=B, typ=F_WRLCK, end=OFFSET_MAX)],
    ],
)
def test_decode_rejects_malformed(blob: Any) -> None:
    with pytest.raises(ValueError):
        LockTable.decode(blob)


def test_decode_accepts_touching_different_types_and_shared_readers() -> None:
    blob = [
        _rec(start=0, end=9),
        _rec(start=10, end=15, typ=F_WRLCK),
        _rec(owner=B, start=0, end=9),
        _rec(owner=C, start=16, end=OFFSET_MAX, typ=F_WRLCK),
    ]
    assert LockTable.decode(blob).check() == []


# ---------------------------------------------------------------- model-based test
#: The model's bytes 0..31 stand for themselves; byte 32 stands for every offset from 32 to
#: OFFSET_MAX (no generated range starts or ends inside that stretch, so it is uniform).
N = 32
OWNERS: list[Owner] = [A, B, C]
INOS = [1, 2]


def _end(e: int) -> int:
    return OFFSET_MAX if e == N else e


class Model:
    """Per byte: which owners hold which lock type.  ``posix[ino][owner][b]`` is a type or
    None; ``flock[ino][owner]`` is a type."""

    def __init__(self) -> None:
        self.posix: dict[int, dict[Owner, list[int | None]]] = {
            ino: {o: [None] * (N + 1) for o in OWNERS} for ino in INOS
        }
        self.flock: dict[int, dict[Owner, int]] = {ino: {} for ino in INOS}

    def segments(self, ino: int) -> list[tuple[Owner, int, int, int]]:
        """The canonical locks the table must hold: maximal runs of one type per owner."""
        out = []
        for o, row in self.posix[ino].items():
            b = 0
            while b <= N:
                typ = row[b]
                if typ is None:
                    b += 1
                    continue
                s = b
                while b + 1 <= N and row[b + 1] == typ:
                    b += 1
                out.append((o, typ, s, _end(b)))
                b += 1
        out.sort(key=lambda x: (x[2], x[0], x[3]))
        return out

    def conflicts(
        self, ino: int, kind: str, owner: Owner, typ: int, s: int, e: int
    ) -> list[tuple[Owner, int, int, int]]:
        """The held locks that refuse the request, in ``test``'s order."""
        if kind == FLOCK:
            return [
                (o, t, 0, OFFSET_MAX)
                for o, t in sorted(self.flock[ino].items())
                if o != owner and F_WRLCK in (t, typ)
            ]
        return [
            seg
            for seg in self.segments(ino)
            if seg[0] != owner and F_WRLCK in (seg[1], typ) and seg[2] <= _end(e) and seg[3] >= s
        ]

    def apply(self, ino: int, kind: str, owner: Owner, typ: int, s: int, e: int) -> bool:
        """Apply a non-conflicting set; True if the owner's coverage weakened somewhere."""
        if kind == FLOCK:
            old = self.flock[ino].get(owner)
            if typ == F_UNLCK:
                self.flock[ino].pop(owner, None)
            else:
                self.flock[ino][owner] = typ
            return old is not None and (typ == F_UNLCK or (old == F_WRLCK and typ == F_RDLCK))
        row = self.posix[ino][owner]
        weakened = False
        for b in range(s, e + 1):
            old_b = row[b]
            if old_b is not None and (typ == F_UNLCK or (old_b == F_WRLCK and typ == F_RDLCK)):
                weakened = True
            row[b] = None if typ == F_UNLCK else typ
        return weakened


positions = st.integers(0, N)
ranges = st.tuples(positions, positions).map(lambda p: (min(p), max(p)))


class LockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = LockTable()
        self.m = Model()

    @rule(
        ino=st.sampled_from(INOS),
        kind=st.sampled_from([POSIX, POSIX, FLOCK]),
        owner=st.sampled_from(OWNERS),
        typ=st.sampled_from([F_RDLCK, F_WRLCK, F_UNLCK]),
        rng=ranges,
        pid=st.integers(0, 3),
    )
    def set_lock(
        self, ino: int, kind: str, owner: Owner, typ: int, rng: tuple[int, int], pid: int
    ) -> None:
        s, e = rng
        expected = [] if typ == F_UNLCK else self.m.conflicts(ino, kind, owner, typ, s, e)
        if expected:
            before = self.t.encode()
            with pytest.raises(LockConflict) as info:
                self.t.set(ino, owner, kind, typ, s, _end(e), pid)
            assert self.t.encode() == before  # a refused set changes nothing
            got = conflict_of(info.value)
            assert got is not None
            assert (got.owner, got.type, got.start, got.end) == expected[0]
            return
        released = self.t.set(ino, owner, kind, typ, s, _end(e), pid)
        assert released == self.m.apply(ino, kind, owner, typ, s, e)

    @rule(
        ino=st.sampled_from(INOS),
        kind=st.sampled_from([POSIX, FLOCK]),
        owner=st.sampled_from([*OWNERS, (3, 3)]),
        typ=st.sampled_from([F_RDLCK, F_WRLCK]),
        rng=ranges,
    )
    def probe(self, ino: int, kind: str, owner: Owner, typ: int, rng: tuple[int, int]) -> None:
        s, e = rng
        expected = self.m.conflicts(ino, kind, owner, typ, s, e)
        got = self.t.test(ino, owner, kind, typ, s, _end(e))
        if expected:
            assert got is not None
            assert (got.ino, got.kind) == (ino, kind)
            assert (got.owner, got.type, got.start, got.end) == expected[0]
        else:
            assert got is None
        blockers = self.t.holders_blocking(ino, owner, kind, typ, s, _end(e))
        assert blockers == sorted({x[0] for x in expected})

    @rule(
        ino=st.sampled_from(INOS),
        owner=st.sampled_from(OWNERS),
        kind=st.sampled_from([POSIX, FLOCK]),
    )
    def release_owner(self, ino: int, owner: Owner, kind: str) -> None:
        if kind == FLOCK:
            had = self.m.flock[ino].pop(owner, None) is not None
        else:
            row = self.m.posix[ino][owner]
            had = any(x is not None for x in row)
            row[:] = [None] * (N + 1)
        assert self.t.release_owner(ino, owner, kind) == had

    @rule(session=st.sampled_from([1, 2, 3]))
    def release_session(self, session: int) -> None:
        affected = set()
        for ino in INOS:
            for o, row in self.m.posix[ino].items():
                if o[0] == session and any(x is not None for x in row):
                    affected.add(ino)
                    row[:] = [None] * (N + 1)
            for o in [o for o in self.m.flock[ino] if o[0] == session]:
                affected.add(ino)
                del self.m.flock[ino][o]
        assert self.t.release_session(session) == sorted(affected)

    @precondition(lambda self: self.t.counts()["inodes"] > 0)
    @rule(ino=st.sampled_from(INOS))
    def inode_gone(self, ino: int) -> None:
        had = bool(self.m.segments(ino) or self.m.flock[ino])
        self.m.posix[ino] = {o: [None] * (N + 1) for o in OWNERS}
        self.m.flock[ino] = {}
        assert self.t.inode_gone(ino) == had

    @rule()
    def snapshot_round_trip(self) -> None:
        blob = msgpack.unpackb(msgpack.packb(self.t.encode()))
        self.t = LockTable.decode(blob)

    @invariant()
    def matches_model(self) -> None:
        assert self.t.check() == []
        for ino in INOS:
            # Per byte: who holds what.
            view: list[dict[Owner, int]] = [{} for _ in range(N + 1)]
            for lk in self.t.locks(ino):
                if lk.kind != POSIX:
                    continue
                for b in range(min(lk.start, N), min(lk.end, N) + 1):
                    assert lk.owner not in view[b]  # one owner's locks never overlap
                    view[b][lk.owner] = lk.type
            want = [
                {o: row[b] for o, row in self.m.posix[ino].items() if row[b] is not None}
                for b in range(N + 1)
            ]
            assert view == want
            # And the exact (canonical, merged) lock list.
            assert spans(self.t, ino) == self.m.segments(ino)
            assert spans(self.t, ino, FLOCK) == [
                (o, t, 0, OFFSET_MAX) for o, t in sorted(self.m.flock[ino].items())
            ]


TestLockMachine = LockMachine.TestCase
TestLockMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
