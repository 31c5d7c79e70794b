"""The dashboard's warnings: most severe first, and a follower does not pretend to know the
chunkservers."""

from __future__ import annotations

from typing import Any

import pytest

from dfs.observability.dashboard import health_warnings

pytestmark = pytest.mark.unit


def status(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "role": "leader",
        "leader": "m1",
        "leader_address": "127.0.0.1:9420",
        "initialised": True,
        "metaservers": [{"id": "m1", "role": "leader"}, {"id": "m2", "role": "follower"}],
        "chunkservers": [
            {"id": "cs1", "state": "alive", "used": 10, "capacity": 100},
            {"id": "cs2", "state": "alive", "used": 10, "capacity": 100},
        ],
        "counts": {"missing": 0, "under_goal": 0, "bad_replicas": 0},
    }
    base.update(over)
    return base


def test_a_healthy_leader_has_no_warnings() -> None:
    assert health_warnings(status()) == []


def test_warnings_come_most_severe_first() -> None:
    s = status(
        metaservers=[{"id": "m1", "role": "leader"}, {"id": "m3", "role": "unreachable"}],
        chunkservers=[
            {"id": "cs1", "state": "alive", "used": 95, "capacity": 100},
            {"id": "cs2", "state": "dead", "last_heartbeat_age": 12.0},
            {"id": "cs3", "state": "gone", "last_heartbeat_age": 300.0},
        ],
        counts={"missing": 2, "under_goal": 5, "bad_replicas": 1},
    )
    got = health_warnings(s)
    severities = [w["severity"] for w in got]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    texts = " | ".join(w["text"] for w in got)
    assert got[0]["severity"] == "critical"
    for part in (
        "2 chunk(s) have no live replica",
        "5 chunk(s) are under their replication goal",
        "1 corrupt replica",
        "metaserver m3",
        "chunkserver cs2 is dead (last heartbeat 12 s ago)",
        "chunkserver cs3 is gone",
        "chunkserver cs1 is 95 % full",
    ):
        assert part in texts


def test_a_follower_names_the_leader_and_a_lost_group_is_critical() -> None:
    follower = health_warnings(status(role="follower", chunkservers=[], counts={}))
    assert [w["severity"] for w in follower] == ["info"]
    assert "the leader is m1 at 127.0.0.1:9420" in follower[0]["text"]
    lost = health_warnings(status(role="candidate", leader=None, chunkservers=[], counts={}))
    assert lost[0] == {
        "severity": "critical",
        "text": "no Raft leader known (this member is a candidate)",
    }


def test_a_leader_without_chunkservers_is_critical() -> None:
    assert health_warnings(status(chunkservers=[]))[0]["text"] == "no chunkserver has registered"
