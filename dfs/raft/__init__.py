"""A pure, deterministic Raft core (no I/O, no clocks): see ``dfs.raft.core``."""

from dfs.raft.core import (
    Config,
    NotLeader,
    PeerStatus,
    ProposalDropped,
    RaftCore,
    Ready,
    Role,
    SoftState,
    Status,
)
from dfs.raft.messages import (
    Command,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageDecodeError,
    Snapshot,
    SnapshotMeta,
    message_from_dict,
)
from dfs.raft.readonly import ReadState

__all__ = [
    "Command",
    "ConfChange",
    "ConfChangeOp",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MessageDecodeError",
    "NotLeader",
    "PeerStatus",
    "ProposalDropped",
    "RaftCore",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "message_from_dict",
]
