"""Raft data types: log entries, membership, snapshots, hard state, and the wire messages.

Every message is a frozen dataclass with ``to_dict()`` / ``message_from_dict()`` converting to
and from plain dicts of ints, strs, bytes, bools, lists and dicts (what msgpack carries).
``message_from_dict`` raises ``MessageDecodeError`` on anything malformed: that is "the peer
sent garbage", which the transport handles by dropping the message (or the connection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from dfs.types import LogIndex, NodeId, Term

#: What the application puts in a log entry (the metaserver uses dicts).
Command = bytes | dict[str, Any]


class MessageDecodeError(ValueError):
    """A dict that does not describe a valid message (the peer sent garbage)."""


class EntryKind(StrEnum):
    NORMAL = "normal"
    #: The empty entry a new leader appends to commit something of its own term (Raft §8).
    NOOP = "noop"
    #: A membership change; ``data`` is ``ConfChange.to_dict()``.
    CONF = "conf"


@dataclass(frozen=True, slots=True)
class Entry:
    term: Term
    index: LogIndex
    kind: EntryKind = EntryKind.NORMAL
    data: Command = b""

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "index": self.index, "kind": self.kind.value, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        data = d["data"]
        if not isinstance(data, bytes | dict):
            raise MessageDecodeError(f"entry data must be bytes or a dict, not {type(data)}")
        return cls(Term(_int(d["term"])), LogIndex(_int(d["index"])), EntryKind(d["kind"]), data)


def entry_size(entry: Entry) -> int:
    """Approximate encoded size, used only to cap batches (exactness does not matter)."""
    data = entry.data
    return 16 + (len(data) if isinstance(data, bytes) else len(repr(data)))


class ConfChangeOp(StrEnum):
    ADD_VOTER = "add_voter"
    ADD_LEARNER = "add_learner"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One server at a time (Raft §6 / dissertation §4.1): add a voter, add a learner (a
    non-voting member that catches up first), promote a learner (``ADD_VOTER`` on a learner),
    or remove a member."""

    op: ConfChangeOp
    node: NodeId

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op.value, "node": self.node}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfChange:
        return cls(ConfChangeOp(d["op"]), NodeId(_str(d["node"])))


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership: voters decide elections and commits; learners only receive the log."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def apply(self, change: ConfChange) -> ConfState:
        voters, learners = set(self.voters), set(self.learners)
        voters.discard(change.node)
        learners.discard(change.node)
        if change.op is ConfChangeOp.ADD_VOTER:
            voters.add(change.node)
        elif change.op is ConfChangeOp.ADD_LEARNER:
            learners.add(change.node)
        return ConfState(frozenset(voters), frozenset(learners))

    def to_dict(self) -> dict[str, Any]:
        return {"voters": sorted(self.voters), "learners": sorted(self.learners)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfState:
        return cls(
            frozenset(NodeId(_str(v)) for v in d["voters"]),
            frozenset(NodeId(_str(v)) for v in d["learners"]),
        )


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The last entry a snapshot covers, and the membership as of that entry."""

    index: LogIndex = LogIndex(0)  # noqa: RUF009 - NewType call is free
    term: Term = Term(0)  # noqa: RUF009
    conf_state: ConfState = field(default_factory=ConfState)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "term": self.term, "conf_state": self.conf_state.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotMeta:
        return cls(
            LogIndex(_int(d["index"])), Term(_int(d["term"])), ConfState.from_dict(d["conf_state"])
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable besides the log: current term, vote in it, commit index.

    Persisting ``commit`` is optional for safety (a restarted node relearns it) but lets a
    restarted node re-apply its committed entries without waiting for a leader."""

    term: Term = Term(0)  # noqa: RUF009
    vote: NodeId | None = None
    commit: LogIndex = LogIndex(0)  # noqa: RUF009


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    KIND: ClassVar[str] = ""
    frm: NodeId
    to: NodeId
    term: Term

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.KIND}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if name == "entries":
                value = [e.to_dict() for e in value]
            elif name == "meta":
                value = value.to_dict()
            d[name] = value
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote(Message):
    """§5.2 RequestVote; with ``pre_vote`` the PreVote round (term is the one the candidate
    would use, and nobody changes state).  ``transfer`` marks an election started by
    TimeoutNow, which voters grant even while they still hear from a leader."""

    KIND: ClassVar[str] = "vote"
    pre_vote: bool = False
    transfer: bool = False
    last_log_index: LogIndex
    last_log_term: Term


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponse(Message):
    KIND: ClassVar[str] = "vote_resp"
    pre_vote: bool = False
    granted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries(Message):
    KIND: ClassVar[str] = "append"
    prev_index: LogIndex
    prev_term: Term
    entries: tuple[Entry, ...] = ()
    commit: LogIndex


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponse(Message):
    """On success ``index`` is the last index known to match the leader's log.  On rejection
    ``index`` is the rejected ``prev_index`` and ``conflict_index``/``conflict_term`` are the
    fast-backtracking hints: the follower's log is shorter (``conflict_term`` None,
    ``conflict_index`` = its last index + 1), or holds ``conflict_term`` at ``prev_index``
    starting at ``conflict_index``."""

    KIND: ClassVar[str] = "append_resp"
    index: LogIndex
    success: bool
    conflict_index: LogIndex = LogIndex(0)  # noqa: RUF009
    conflict_term: Term | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    """``commit`` is min(leader commit, follower's match); ``context`` a ReadIndex round."""

    KIND: ClassVar[str] = "heartbeat"
    commit: LogIndex
    context: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse(Message):
    KIND: ClassVar[str] = "heartbeat_resp"
    context: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot(Message):
    """One chunk ``data`` at ``offset`` of the snapshot described by ``meta``."""

    KIND: ClassVar[str] = "snapshot"
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotResponse(Message):
    """Flow control for a chunked snapshot: the follower holds bytes ``[0, next_offset)``.
    The end of a transfer is acknowledged with an ``AppendResponse`` instead."""

    KIND: ClassVar[str] = "snapshot_resp"
    index: LogIndex
    next_offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(Message):
    """Leadership transfer: start an election now, skipping PreVote."""

    KIND: ClassVar[str] = "timeout_now"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexRequest(Message):
    """A follower forwarding a ReadIndex request to its leader."""

    KIND: ClassVar[str] = "read_index"
    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse(Message):
    KIND: ClassVar[str] = "read_index_resp"
    index: LogIndex
    context: bytes


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        RequestVote,
        VoteResponse,
        AppendEntries,
        AppendResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        SnapshotResponse,
        TimeoutNow,
        ReadIndexRequest,
        ReadIndexResponse,
    )
}

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "frm": str,
    "to": str,
    "term": int,
    "pre_vote": bool,
    "transfer": bool,
    "granted": bool,
    "success": bool,
    "done": bool,
    "last_log_index": int,
    "last_log_term": int,
    "prev_index": int,
    "prev_term": int,
    "commit": int,
    "index": int,
    "conflict_index": int,
    "conflict_term": (int, type(None)),
    "context": (int, bytes, type(None)),
    "offset": int,
    "next_offset": int,
    "data": bytes,
}


def message_from_dict(d: Any) -> Message:
    """Rebuild a message from ``Message.to_dict()`` output; MessageDecodeError if malformed."""
    try:
        if not isinstance(d, dict):
            raise MessageDecodeError("a message must be a dict")
        cls = MESSAGE_TYPES.get(d.get("type", ""))
        if cls is None:
            raise MessageDecodeError(f"unknown message type {d.get('type')!r}")
        kwargs: dict[str, Any] = {}
        for name in _field_names(cls):
            if name not in d:
                continue  # a default applies, or the constructor reports it missing
            value = d[name]
            if name == "entries":
                value = tuple(Entry.from_dict(e) for e in value)
            elif name == "meta":
                value = SnapshotMeta.from_dict(value)
            elif not isinstance(value, _FIELD_TYPES[name]):
                raise MessageDecodeError(f"field {name} has type {type(value).__name__}")
            kwargs[name] = value
        return cls(**kwargs)
    except MessageDecodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MessageDecodeError(f"malformed message: {exc!r}") from exc


_FIELD_NAMES: dict[type[Message], tuple[str, ...]] = {}


def _field_names(cls: type[Message]) -> tuple[str, ...]:
    """The fields of a message class (``dataclasses.fields`` is slow on the hot path)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise MessageDecodeError(f"expected an int, got {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise MessageDecodeError(f"expected a str, got {type(v).__name__}")
    return v
