"""Client sessions of the metadata state machine: exactly-once commands.

Raft alone gives at-least-once: a client whose leader dies after committing its command but
before answering retries on the new leader, and the command would run twice (a retried
``mkdir`` failing with EEXIST, a retried ``rename`` moving twice).  Following the Raft
dissertation (§6.3), every client opens a *session*; each of its commands carries
``(session, seq)``, and the state machine remembers the outcome (result or error) of every
sequence number the client may still retry.  A retry of an applied command gets the
remembered outcome and changes nothing.

A client may have several commands in flight (the FUSE kernel sends concurrent requests), so
one remembered result per session is not enough: each command also carries ``acked``, the
lowest sequence number the client still waits for; every outcome below it has been received
and is forgotten, and a command numbered below it is refused (``StaleRequest``).  The memory
per session is bounded by the client's concurrency.

Pure and deterministic, like the namespace that owns it (it is part of the snapshot).
Sessions end by ``close_session`` (a clean unmount) or by ``expire_sessions``, which the
leader proposes for sessions it has not heard from within the session timeout (measured on
the leader's monotonic clock, so expiry is decided once and replicated, never by each
replica's own clock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dfs.errors import DfsError, FsError, InvalidArgument, SessionExpired, StaleRequest

#: Upper bound of remembered outcomes per session; a client that never acknowledges is
#: broken, and refusing its commands beats growing without bound.
MAX_OUTSTANDING = 4096


@dataclass(slots=True)
class Session:
    id: int
    #: The certificate name of the peer that opened it: only that peer may use it.
    owner: str
    #: What kind of program holds it ("mount", "chunkserver", "admin"), and a label (host,
    #: mount point) for ``dfs sessions``; informational.
    kind: str
    label: str
    created_ns: int
    #: now_ns of the last command applied in this session.
    last_ns: int
    #: Every outcome numbered below this was received by the client and is forgotten.
    acked: int = 0
    #: seq -> (True, result) or (False, error as DfsError.to_wire()).
    outcomes: dict[int, tuple[bool, Any]] = field(default_factory=dict)

    def to_record(self) -> list[Any]:
        return [
            self.id,
            self.owner,
            self.kind,
            self.label,
            self.created_ns,
            self.last_ns,
            self.acked,
            [[seq, ok, value] for seq, (ok, value) in sorted(self.outcomes.items())],
        ]

    @classmethod
    def from_record(cls, r: list[Any]) -> Session:
        sid, owner, kind, label, created, last, acked, outcomes = r
        return cls(
            id=int(sid),
            owner=str(owner),
            kind=str(kind),
            label=str(label),
            created_ns=int(created),
            last_ns=int(last),
            acked=int(acked),
            outcomes={int(seq): (bool(ok), value) for seq, ok, value in outcomes},
        )

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "kind": self.kind,
            "label": self.label,
            "created_ns": self.created_ns,
            "last_ns": self.last_ns,
            "outstanding": len(self.outcomes),
        }


class SessionTable:
    """Sessions and their remembered outcomes; mutated only through the state machine."""

    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}
        self.next_id = 1

    # ------------------------------------------------------------------ commands
    def open(self, c: dict[str, Any]) -> dict[str, Any]:
        """``open_session``: keys ``owner``, ``kind``, ``label``, ``now_ns``."""
        sid = self.next_id
        self.next_id += 1
        now = int(c["now_ns"])
        self.sessions[sid] = Session(
            id=sid,
            owner=str(c["owner"]),
            kind=str(c.get("kind", "")),
            label=str(c.get("label", "")),
            created_ns=now,
            last_ns=now,
        )
        return {"session": sid}

    def close(self, c: dict[str, Any]) -> None:
        """``close_session``: key ``id``; closing an unknown session is not an error (a
        retried close, or one that raced with expiry)."""
        self.sessions.pop(int(c["id"]), None)

    def expire(self, c: dict[str, Any]) -> list[int]:
        """``expire_sessions``: key ``ids``; returns the ids that existed."""
        gone = [sid for sid in c["ids"] if self.sessions.pop(int(sid), None) is not None]
        return [int(s) for s in gone]

    def run(self, c: dict[str, Any], execute: Callable[[dict[str, Any]], Any]) -> Any:
        """Apply the sessioned command ``c`` (keys ``session``, ``seq``, ``acked``) exactly
        once: ``execute(c)`` the first time, its remembered outcome on a retry."""
        sid, seq, acked = int(c["session"]), int(c["seq"]), int(c.get("acked", 0))
        s = self.sessions.get(sid)
        if s is None:
            raise SessionExpired(f"session {sid} does not exist (expired or closed)")
        if seq < s.acked:
            raise StaleRequest(
                f"session {sid}: request {seq} was already answered (client acked {s.acked})"
            )
        remembered = s.outcomes.get(seq)
        if remembered is not None:
            ok, value = remembered
            if ok:
                return value
            raise DfsError.from_wire(value)
        if acked > s.acked:
            for old in [q for q in s.outcomes if q < acked]:
                del s.outcomes[old]
            s.acked = min(acked, seq)
        if len(s.outcomes) >= MAX_OUTSTANDING:
            raise InvalidArgument(
                f"session {sid} has {len(s.outcomes)} unacknowledged requests; the client "
                "must acknowledge answers"
            )
        s.last_ns = max(s.last_ns, int(c.get("now_ns", 0)))
        try:
            result = execute(c)
        except FsError as exc:
            s.outcomes[seq] = (False, exc.to_wire())
            raise
        s.outcomes[seq] = (True, result)
        return result

    # ------------------------------------------------------------------ snapshot
    def to_record(self) -> dict[str, Any]:
        return {
            "next_id": self.next_id,
            "sessions": [self.sessions[s].to_record() for s in sorted(self.sessions)],
        }

    @classmethod
    def from_record(cls, r: dict[str, Any] | None) -> SessionTable:
        t = cls()
        if r is None:
            return t
        t.next_id = int(r["next_id"])
        for rec in r["sessions"]:
            s = Session.from_record(rec)
            t.sessions[s.id] = s
        if t.sessions and max(t.sessions) >= t.next_id:
            raise ValueError("session id at or above next_id")
        return t
