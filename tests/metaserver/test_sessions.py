"""Exactly-once commands (``dfs.metaserver.sessions``) in the pure namespace state machine:
a command retried in its session is applied once and answered with its first outcome."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from dfs.errors import Exists, InvalidArgument, NotFound, SessionExpired, StaleRequest
from dfs.metaserver.namespace import Namespace
from dfs.metaserver.sessions import MAX_OUTSTANDING
from tests.metaserver.nsutil import ROOT, USER, Driver


@pytest.fixture
def d() -> Driver:
    return Driver()


def _open(d: Driver, owner: str = "client-a") -> int:
    return int(d.do("open_session", owner=owner, kind="mount", label="host:/mnt")["session"])


def _in(sid: int, seq: int, acked: int | None = None) -> dict[str, Any]:
    return {"session": sid, "seq": seq, "acked": seq if acked is None else acked}


def test_sessions_get_distinct_ids(d: Driver) -> None:
    assert _open(d) != _open(d)


def test_retried_mkdir_gets_first_result_not_eexist(d: Driver) -> None:
    sid = _open(d)
    args = {"parent": ROOT, "name": b"dir", "mode": 0o755, "cred": USER, **_in(sid, 1)}
    first = d.do("mkdir", **args)
    again = d.do("mkdir", **args)  # the answer was lost; the client sends it again
    assert again == first
    assert d.ns.n_dirs == 2  # the root and one "dir"
    # A new request (next seq) for the same name is a real second mkdir: EEXIST.
    with pytest.raises(Exists):
        d.do("mkdir", **{**args, **_in(sid, 2)})


def test_retried_create_makes_one_file(d: Driver) -> None:
    sid = _open(d)
    args = {
        "parent": ROOT,
        "name": b"f",
        "mode": stat.S_IFREG | 0o644,
        "rdev": 0,
        "cred": USER,
        **_in(sid, 1),
    }
    first = d.do("mknod", **args)
    assert d.do("mknod", **args) == first
    assert d.ns.n_files == 1
    assert d.ns.next_ino == first["ino"] + 1


def test_retried_rename_moves_once(d: Driver) -> None:
    sid = _open(d)
    d.create(ROOT, b"a")
    b = d.create(ROOT, b"b")
    # rename a -> b replaces b; a retry must not then fail with ENOENT (or move again).
    args = {"parent": ROOT, "name": b"a", "newparent": ROOT, "newname": b"b", **_in(sid, 1)}
    d.do("rename", **args)
    d.do("rename", **args)
    names = [bytes(n) for n, _ in d.ns.readdir(ROOT)]
    assert names == [b"b"]
    assert d.ns.lookup(ROOT, b"b")["ino"] != b


def test_failed_command_is_answered_with_the_same_error(d: Driver) -> None:
    sid = _open(d)
    args = {"parent": ROOT, "name": b"missing", **_in(sid, 1)}
    with pytest.raises(NotFound) as first:
        d.do("unlink", **args)
    # Someone creates the name meanwhile; the retry still gets the first outcome.
    d.create(ROOT, b"missing")
    with pytest.raises(NotFound) as again:
        d.do("unlink", **args)
    assert again.value.message == first.value.message
    d.ns.lookup(ROOT, b"missing")


def test_acknowledged_outcomes_are_forgotten_and_refused(d: Driver) -> None:
    sid = _open(d)
    for seq in (1, 2, 3):
        d.do("mkdir", parent=ROOT, name=b"d%d" % seq, mode=0o755, cred=USER, **_in(sid, seq, 1))
    assert sorted(d.ns.sessions.sessions[sid].outcomes) == [1, 2, 3]
    # Request 4 says every answer below 3 arrived: outcomes 1 and 2 are dropped.
    d.do("mkdir", parent=ROOT, name=b"d4", mode=0o755, cred=USER, **_in(sid, 4, 3))
    assert sorted(d.ns.sessions.sessions[sid].outcomes) == [3, 4]
    with pytest.raises(StaleRequest):
        d.do("mkdir", parent=ROOT, name=b"d1", mode=0o755, cred=USER, **_in(sid, 1, 1))


def test_concurrent_requests_each_remembered(d: Driver) -> None:
    """Requests 1..3 in flight at once (acked stays 1): each retry gets its own outcome."""
    sid = _open(d)
    results = {
        seq: d.do(
            "mkdir", parent=ROOT, name=b"c%d" % seq, mode=0o755, cred=USER, **_in(sid, seq, 1)
        )
        for seq in (1, 2, 3)
    }
    for seq in (3, 1, 2):
        again = d.do(
            "mkdir", parent=ROOT, name=b"c%d" % seq, mode=0o755, cred=USER, **_in(sid, seq, 1)
        )
        assert again == results[seq]


def test_unknown_or_closed_session_refused(d: Driver) -> None:
    with pytest.raises(SessionExpired):
        d.do("mkdir", parent=ROOT, name=b"x", mode=0o755, cred=USER, **_in(99, 1))
    sid = _open(d)
    d.do("close_session", id=sid)
    d.do("close_session", id=sid)  # a retried close is harmless
    with pytest.raises(SessionExpired):
        d.do("mkdir", parent=ROOT, name=b"x", mode=0o755, cred=USER, **_in(sid, 1))


def test_expire_removes_only_named_sessions(d: Driver) -> None:
    a, b = _open(d), _open(d)
    assert d.do("expire_sessions", ids=[a, 12345]) == [a]
    assert list(d.ns.sessions.sessions) == [b]


def test_unacknowledged_outcomes_are_bounded(d: Driver) -> None:
    sid = _open(d)
    s = d.ns.sessions.sessions[sid]
    s.outcomes = {seq: (True, None) for seq in range(1, MAX_OUTSTANDING + 1)}
    with pytest.raises(InvalidArgument):
        d.do("setxattr", ino=ROOT, name=b"user.x", value=b"1", **_in(sid, MAX_OUTSTANDING + 1, 1))


def test_sessions_survive_snapshot_restore(d: Driver) -> None:
    sid = _open(d)
    args = {"parent": ROOT, "name": b"dir", "mode": 0o755, "cred": USER, **_in(sid, 1)}
    first = d.do("mkdir", **args)
    with pytest.raises(NotFound):
        d.do("rmdir", parent=ROOT, name=b"nope", **_in(sid, 2, 1))
    restored = Namespace()
    restored.restore(d.ns.snapshot_state())
    assert restored.snapshot_state() == d.ns.snapshot_state()
    # The restored replica answers the retries exactly as the original would.
    assert restored.apply({"op": "mkdir", "now_ns": d.tick(), **args}) == first
    with pytest.raises(NotFound):
        restored.apply(
            {"op": "rmdir", "now_ns": d.tick(), "parent": ROOT, "name": b"nope", **_in(sid, 2, 1)}
        )
    # And a new session id never reuses an old one.
    assert restored.apply({"op": "open_session", "now_ns": d.tick(), "owner": "o"})["session"] > sid


def test_format_1_snapshot_still_restores(d: Driver) -> None:
    import msgpack

    d.mkdir(ROOT, b"old")
    data = msgpack.unpackb(d.ns.snapshot_state(), raw=False, strict_map_key=False)
    data["format"] = 1
    del data["sessions"]
    ns = Namespace()
    ns.restore(msgpack.packb(data, use_bin_type=True))
    ns.lookup(ROOT, b"old")
    assert ns.sessions.sessions == {}
