"""The ``setgoal`` namespace command: replication goal of files and directories."""

from __future__ import annotations

import pytest

from dfs.errors import InvalidArgument, NotFound, NotPermitted
from dfs.metaserver.namespace import MAX_GOAL
from tests.metaserver.nsutil import ROOT, USER, Driver

pytestmark = pytest.mark.unit

OTHER = {"uid": 1001, "gid": 1000}
ROOTCRED = {"uid": 0, "gid": 0}


@pytest.fixture
def d() -> Driver:
    return Driver(goal=2)


def test_setgoal_on_file_and_directory(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    f = d.create(a, b"f")
    attr = d.do("setgoal", ino=f, goal=3, cred=USER)
    assert attr["goal"] == 3 and attr["ctime_ns"] == d.now
    assert d.attr(f)["goal"] == 3
    d.do("setgoal", ino=a, goal=MAX_GOAL, cred=USER)
    assert d.attr(a)["goal"] == MAX_GOAL
    # Not recursive: the file keeps its own goal, the root keeps the default.
    assert d.attr(f)["goal"] == 3
    assert d.attr(ROOT)["goal"] == 2


def test_new_children_inherit_a_changed_goal(d: Driver) -> None:
    a = d.mkdir(ROOT, b"a")
    old = d.create(a, b"old")
    d.do("setgoal", ino=a, goal=3, cred=USER)
    f = d.create(a, b"f")
    sub = d.mkdir(a, b"sub")
    g = d.create(sub, b"g")
    assert d.attr(f)["goal"] == d.attr(sub)["goal"] == d.attr(g)["goal"] == 3
    assert d.attr(old)["goal"] == 2  # existing children keep theirs


def test_goal_survives_a_snapshot(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    d.do("setgoal", ino=f, goal=5, cred=ROOTCRED)
    blob = d.ns.snapshot_state()
    d2 = Driver()
    d2.ns.restore(blob)
    assert d2.attr(f)["goal"] == 5


@pytest.mark.parametrize("goal", [0, -1, MAX_GOAL + 1, 1000])
def test_invalid_goal_is_refused(d: Driver, goal: int) -> None:
    f = d.create(ROOT, b"f")
    with pytest.raises(InvalidArgument):
        d.do("setgoal", ino=f, goal=goal, cred=USER)
    assert d.attr(f)["goal"] == 2


def test_symlink_and_special_files_have_no_goal(d: Driver) -> None:
    s = int(d.do("symlink", parent=ROOT, name=b"s", target=b"x", cred=USER)["ino"])
    with pytest.raises(InvalidArgument):
        d.do("setgoal", ino=s, goal=3, cred=USER)
    fifo = int(d.do("mknod", parent=ROOT, name=b"p", mode=0o10644, rdev=0, cred=USER)["ino"])
    with pytest.raises(InvalidArgument):
        d.do("setgoal", ino=fifo, goal=3, cred=USER)
    with pytest.raises(NotFound):
        d.do("setgoal", ino=999, goal=3, cred=USER)


def test_only_owner_or_root_may_set_the_goal(d: Driver) -> None:
    f = d.create(ROOT, b"f")  # owned by USER
    with pytest.raises(NotPermitted):
        d.do("setgoal", ino=f, goal=3, cred=OTHER)
    d.do("setgoal", ino=f, goal=3, cred=ROOTCRED)
    assert d.attr(f)["goal"] == 3


def test_setgoal_in_a_session_runs_once(d: Driver) -> None:
    f = d.create(ROOT, b"f")
    sid = d.do("open_session", owner="c1", kind="mount", label="")["session"]
    cmd = {"ino": f, "goal": 3, "cred": USER, "session": sid, "seq": 1, "acked": 0}
    first = d.do("setgoal", **cmd)
    again = d.do("setgoal", **cmd)  # a retry gets the remembered outcome
    assert first == again
