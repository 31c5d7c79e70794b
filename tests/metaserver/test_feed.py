"""The leader's change feed (``dfs.metaserver.feed``): which commands make which cache events,
and what a watcher is answered (its own changes left out, resets on a new epoch or when it
fell behind the ring)."""

from __future__ import annotations

from typing import Any

import pytest

from dfs.metaserver.feed import ChangeFeed, events_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("command", "result", "events"),
    [
        ({"op": "commit_write", "ino": 5}, {}, [("d", 5, b"")]),
        ({"op": "setattr", "ino": 5, "size": 0}, {}, [("d", 5, b"")]),
        ({"op": "setattr", "ino": 5, "mode": 0o600}, {}, [("a", 5, b"")]),
        ({"op": "setxattr", "ino": 5}, None, [("a", 5, b"")]),
        ({"op": "mknod", "parent": 1, "name": b"f"}, {}, [("e", 1, b"f")]),
        ({"op": "link", "ino": 5, "parent": 1, "name": b"l"}, {}, [("e", 1, b"l"), ("a", 5, b"")]),
        ({"op": "unlink", "parent": 1, "name": b"f"}, {"ino": 5}, [("e", 1, b"f"), ("a", 5, b"")]),
        (
            {"op": "rename", "parent": 1, "name": b"a", "newparent": 2, "newname": b"b"},
            {"ino": 5, "replaced": 6},
            [("e", 1, b"a"), ("e", 2, b"b"), ("a", 5, b""), ("a", 6, b"")],
        ),
        ({"op": "punch_hole", "ino": 5}, {}, [("d", 5, b"")]),
        ({"op": "alloc_chunk", "ino": 5, "index": 0}, {}, []),
        ({"op": "lock_set", "ino": 5}, {}, []),
    ],
)
def test_events_of_commands(
    command: dict[str, Any], result: object, events: list[tuple[str, int, bytes]]
) -> None:
    assert events_of(command, result) == events


def test_watcher_gets_what_it_has_not_seen_but_not_its_own_changes() -> None:
    feed = ChangeFeed()
    feed.start_epoch("m1/3")
    assert feed.since("m1/3", 0, 7) is None  # nothing yet: the caller waits
    feed.record(7, [("d", 5, b"")])
    feed.record(8, [("e", 1, b"x")])
    feed.record(None, [("a", 9, b"")])
    answer = feed.since("m1/3", 0, 7)
    assert answer == {
        "epoch": "m1/3",
        "seq": 3,
        "reset": False,
        "events": [["e", 1, b"x"], ["a", 9, b""]],
    }
    later = feed.since("m1/3", 2, 8)
    assert later is not None and later["events"] == [["a", 9, b""]]
    assert feed.since("m1/3", 3, 8) is None


def test_new_epoch_or_falling_behind_the_ring_means_reset() -> None:
    feed = ChangeFeed(size=4)
    feed.start_epoch("m1/3")
    for i in range(10):
        feed.record(None, [("a", i, b"")])

    def answer(epoch: str, after: int) -> dict[str, Any]:
        got = feed.since(epoch, after, None)
        assert got is not None
        return got

    # Events 1..10 were numbered; the ring keeps 7..10.
    assert answer("m1/3", 6)["events"] == [["a", i, b""] for i in range(6, 10)]
    behind = answer("m1/3", 5)
    assert behind["reset"] and behind["seq"] == 10 and behind["events"] == []
    assert answer("m1/2", 10)["reset"]  # another leader term
    assert answer("m1/3", 11)["reset"]  # a number this feed never gave
    feed.start_epoch("m1/4")
    assert feed.seq == 0 and answer("m1/3", 10)["reset"]
    assert feed.since("m1/4", 0, None) is None
