"""Unit tests of the pure core: wire format, import boundary, the Ready/advance contract."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import msgpack
import pytest

import dfs.raft
from dfs.raft import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    MessageDecodeError,
    NotLeader,
    RaftCore,
    ReadMode,
    Role,
    SnapshotMeta,
    message_from_dict,
)
from dfs.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    SnapshotResponse,
    TimeoutNow,
    VoteResponse,
)
from dfs.raft.readonly import ReadOnly
from dfs.types import LogIndex, NodeId, Term

pytestmark = pytest.mark.unit

A, B = NodeId("a"), NodeId("b")
T = Term(3)

SAMPLES: list[Message] = [
    RequestVote(frm=A, to=B, term=T, pre_vote=True, last_log_index=LogIndex(5), last_log_term=T),
    VoteResponse(frm=A, to=B, term=T, granted=True),
    AppendEntries(
        frm=A,
        to=B,
        term=T,
        prev_index=LogIndex(4),
        prev_term=Term(2),
        entries=(
            Entry(T, LogIndex(5), EntryKind.NORMAL, {"op": "mkdir", "name": "x"}),
            Entry(T, LogIndex(6), EntryKind.NOOP, b""),
            Entry(T, LogIndex(7), EntryKind.CONF, {"op": "add_voter", "node": "c"}),
        ),
        commit=LogIndex(4),
    ),
    AppendResponse(
        frm=A, to=B, term=T, index=LogIndex(9), success=False, conflict_index=LogIndex(3)
    ),
    Heartbeat(frm=A, to=B, term=T, commit=LogIndex(2), context=7),
    HeartbeatResponse(frm=A, to=B, term=T, context=None),
    InstallSnapshot(
        frm=A,
        to=B,
        term=T,
        meta=SnapshotMeta(LogIndex(9), Term(2), ConfState(frozenset({A, B}), frozenset())),
        offset=64,
        data=b"\x00" * 10,
        done=True,
    ),
    SnapshotResponse(frm=A, to=B, term=T, index=LogIndex(9), next_offset=74),
    TimeoutNow(frm=A, to=B, term=T),
    ReadIndexRequest(frm=A, to=B, term=T, context=b"r1"),
    ReadIndexResponse(frm=A, to=B, term=T, index=LogIndex(8), context=b"r1"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_msgpack(msg: Message) -> None:
    wire = msgpack.packb(msg.to_dict(), use_bin_type=True)
    assert message_from_dict(msgpack.unpackb(wire, raw=False)) == msg


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        {"type": "nope"},
        {"type": "heartbeat", "frm": "a", "to": "b"},
        {"type": "heartbeat", "frm": "a", "to": "b", "term": "x", "commit": 1},
        {
            "type": "append",
            "frm": "a",
            "to": "b",
            "term": 1,
            "prev_index": 0,
            "prev_term": 0,
            "commit": 0,
            "entries": [{"term": 1}],
        },
        {
            "type": "append",
            "frm": "a",
            "to": "b",
            "term": 1,
            "prev_index": 0,
            "prev_term": 0,
            "commit": 0,
            "entries": [{"term": 1, "index": 1, "kind": "bad", "data": b""}],
        },
    ],
)
def test_garbage_is_a_decode_error(garbage: object) -> None:
    with pytest.raises(MessageDecodeError):
        message_from_dict(garbage)


ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "logging",
    "random",
    "typing",
    "dfs.types",
}


def test_core_import_boundary() -> None:
    """The core is pure: no trio, sockets, clocks, files or OS access, only these modules."""
    pkg = Path(dfs.raft.__file__).parent
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name in ALLOWED_IMPORTS or name.startswith("dfs.raft"), (
                    f"{path.name} imports {name}"
                )


def single(**kw: object) -> RaftCore:
    return RaftCore(
        Config(id=A, **kw),  # type: ignore[arg-type]
        random.Random(1),
        conf_state=ConfState(frozenset({A})),
    )


def test_single_node_ready_advance_cycle() -> None:
    core = single()
    for _ in range(30):
        core.tick()
        if core.role is Role.LEADER:
            break
    assert core.role is Role.LEADER
    rd = core.ready()
    # Term and self-vote must be persisted along with the leader's first (noop) entry.
    assert rd.hard_state is not None and rd.hard_state.term == 1 and rd.hard_state.vote == A
    assert [e.kind for e in rd.entries] == [EntryKind.NOOP]
    assert rd.committed_entries == ()  # not durable yet: not counted towards the quorum
    core.advance(rd)
    rd = core.ready()
    assert [e.index for e in rd.committed_entries] == [1]
    core.advance(rd)
    term, index = core.propose(b"x")
    assert (term, index) == (1, 2)
    rd = core.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    core.advance(rd)
    rd = core.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert rd.hard_state is not None and rd.hard_state.commit == 2
    core.advance(rd)
    assert not core.has_ready()


def test_no_calls_between_ready_and_advance() -> None:
    core = single()
    core.tick()
    core.ready()
    with pytest.raises(RuntimeError):
        core.tick()


def test_vote_is_in_the_same_ready_as_its_grant() -> None:
    """A vote must be durable before the grant is sent: both come in one Ready."""
    core = RaftCore(Config(id=B), random.Random(1), conf_state=ConfState(frozenset({A, B})))
    core.step(
        RequestVote(frm=A, to=B, term=Term(1), last_log_index=LogIndex(0), last_log_term=Term(0))
    )
    rd = core.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == A
    assert [type(m) for m in rd.messages] == [VoteResponse]
    assert isinstance(rd.messages[0], VoteResponse) and rd.messages[0].granted


def test_follower_refuses_proposals() -> None:
    core = RaftCore(Config(id=B), random.Random(1), conf_state=ConfState(frozenset({A, B})))
    with pytest.raises(NotLeader):
        core.propose(b"x")


def test_config_validate() -> None:
    with pytest.raises(ValueError):
        Config(id=A, election_tick=1, heartbeat_tick=1).validate()


def test_config_validate_read_modes() -> None:
    Config(id=A, read_mode=ReadMode.READ_INDEX, check_quorum=False).validate()
    with pytest.raises(ValueError, match="check_quorum"):
        Config(id=A, check_quorum=False).validate()  # the lease rests on CheckQuorum
    with pytest.raises(ValueError):
        Config(id=A, lease_margin_ticks=0).validate()
    with pytest.raises(ValueError):
        Config(id=A, read_mode="psychic").validate()  # type: ignore[arg-type]
    assert Config(id=A).lease_ticks == 8


def test_heartbeat_rounds_confirm_reads_and_date_the_lease() -> None:
    ro = ReadOnly()
    voters = frozenset({A, B, NodeId("c")})
    ro.start_round(tick=5, horizon=10)  # round 1
    ro.add(LogIndex(7), b"r", A)  # needs round 2: sent after it was registered
    ro.ack(B, 1)
    assert ro.release(voters, A, 2) == []
    assert ro.lease_start(voters, A, 2, now=6) == 5  # B heard round 1, sent at tick 5
    ro.start_round(tick=6, horizon=10)  # round 2
    ro.start_round(tick=6, horizon=10)  # round 3, same tick
    ro.ack(B, 9)  # a round never sent: ignored
    ro.ack(NodeId("c"), 3)
    assert [r.context for r in ro.release(voters, A, 2)] == [b"r"]
    assert ro.lease_start(voters, A, 2, now=7) == 6  # the leader itself, and c since tick 6
    assert ro.lease_start(voters, A, 3, now=7) == 5  # all three only since tick 5
    ro.start_round(tick=30, horizon=10)  # rounds of ticks 5 and 6 are forgotten
    ro.ack(B, 3)
    assert ro.ack_ticks[B] == 5  # not re-dated from a forgotten round
