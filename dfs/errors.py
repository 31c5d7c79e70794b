"""Typed errors of dfs.

Every layer raises these; they travel over RPC by their ``code`` and become an errno only at
the FUSE boundary (``dfs.client.fuse_adapter``).  Nothing below the FUSE adapter deals in errno
numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DfsError(Exception):
    """Base of every error that may cross an RPC boundary.

    ``code`` names the error on the wire; ``message`` is for humans; ``details`` carries
    machine-readable extras (for example the leader's address with ``NotLeader``).
    """

    code: ClassVar[str] = "internal"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    @staticmethod
    def from_wire(obj: Any) -> DfsError:
        """Rebuild an error received from a peer; unknown codes become ``RemoteError``."""
        if not isinstance(obj, dict):
            return ProtocolError(f"malformed error object: {obj!r}")
        code = obj.get("code")
        message = obj.get("message", "")
        details = obj.get("details") or {}
        if not isinstance(message, str) or not isinstance(details, dict):
            return ProtocolError("malformed error object")
        cls = _REGISTRY.get(code) if isinstance(code, str) else None
        if cls is None:
            return RemoteError(f"{code}: {message}", remote_code=code)
        err = cls.__new__(cls)
        DfsError.__init__(err, message, **details)
        return err


_REGISTRY: dict[str, type[DfsError]] = {}


def _register(cls: type[DfsError]) -> type[DfsError]:
    _REGISTRY[cls.code] = cls
    return cls


# ---- file-system errors (each maps to one errno at the FUSE boundary) ----
class FsError(DfsError):
    """A POSIX-level failure of a namespace or data operation."""


@_register
class NotFound(FsError):
    code = "not_found"  # ENOENT


@_register
class Exists(FsError):
    code = "exists"  # EEXIST


@_register
class NotADirectory(FsError):
    code = "not_a_directory"  # ENOTDIR


@_register
class IsADirectory(FsError):
    code = "is_a_directory"  # EISDIR


@_register
class DirectoryNotEmpty(FsError):
    code = "directory_not_empty"  # ENOTEMPTY


@_register
class PermissionDenied(FsError):
    code = "permission_denied"  # EACCES


@_register
class NotPermitted(FsError):
    code = "not_permitted"  # EPERM


@_register
class InvalidArgument(FsError):
    code = "invalid_argument"  # EINVAL


@_register
class NameTooLong(FsError):
    code = "name_too_long"  # ENAMETOOLONG


@_register
class NoSpace(FsError):
    code = "no_space"  # ENOSPC


@_register
class NoAttribute(FsError):
    code = "no_attribute"  # ENODATA (xattr)


@_register
class TooManyLinks(FsError):
    code = "too_many_links"  # EMLINK


@_register
class FileTooLarge(FsError):
    code = "file_too_large"  # EFBIG


@_register
class NotSupported(FsError):
    code = "not_supported"  # EOPNOTSUPP


@_register
class RangeError(FsError):
    code = "range"  # ERANGE (xattr value larger than the caller's buffer)


@_register
class CrossDevice(FsError):
    code = "cross_device"  # EXDEV


@_register
class Busy(FsError):
    code = "busy"  # EBUSY


@_register
class StaleHandle(FsError):
    """The inode a cached name or handle points to no longer exists (another client removed
    it): ESTALE, which makes the kernel look the path up again."""

    code = "stale_handle"


@_register
class LockConflict(FsError):
    """Another owner holds a conflicting lock (F_SETLK, flock LOCK_NB): EAGAIN.
    ``details`` may describe the conflicting lock (``start``, ``end``, ``type``, ``pid``)."""

    code = "lock_conflict"


@_register
class Deadlock(FsError):
    """Waiting for this fcntl lock would deadlock (EDEADLK)."""

    code = "deadlock"


@_register
class Interrupted(FsError):
    """A waiting lock request was cancelled by its owner (EINTR)."""

    code = "interrupted"


@_register
class StillWaiting(FsError):
    """A blocking lock request has waited one long-poll slice without getting the lock; the
    client asks again (it never reaches a program)."""

    code = "still_waiting"


@_register
class IOFailure(FsError):
    code = "io"  # EIO: data unavailable (no healthy replica), timeouts


@_register
class DataLost(FsError):
    """Bytes a writer stored but had not committed are gone: their chunk was lost with every
    replica and dropped from its file (``dfs.metaserver.chunks``, ``drop_unheld``).  EIO at
    the FUSE boundary; not an IOFailure, so nobody waits for it to pass."""

    code = "data_lost"


@_register
class SessionExpired(FsError):
    """The client's metadata session is gone (expired or closed); its unanswered commands
    can no longer be deduplicated.  EIO if it reaches the FUSE boundary."""

    code = "session_expired"


@_register
class StaleRequest(FsError):
    """A sessioned command numbered below what the client already acknowledged."""

    code = "stale_request"


# ---- data-path errors ----
@_register
class ChunkCorrupt(DfsError):
    """A stored block failed its checksum; the reader must try another replica."""

    code = "chunk_corrupt"


@_register
class ChunkNotFound(DfsError):
    code = "chunk_not_found"


@_register
class StaleChunkVersion(DfsError):
    """The replica's version differs from the one the caller expects."""

    code = "stale_chunk_version"


# ---- cluster / RPC errors ----
@_register
class NotLeader(DfsError):
    """This metaserver is not the Raft leader; ``details['leader']`` may name it."""

    code = "not_leader"


@_register
class Unauthorized(DfsError):
    """The peer's certificate role does not allow this method."""

    code = "unauthorized"


@_register
class UnknownMethod(DfsError):
    code = "unknown_method"


@_register
class BadRequest(DfsError):
    """The request's parameters do not have the expected shape."""

    code = "bad_request"


@_register
class Unavailable(DfsError):
    """No server could be reached within the deadline."""

    code = "unavailable"


@_register
class DeadlineExceeded(DfsError):
    code = "deadline_exceeded"


@_register
class ProtocolError(DfsError):
    """The peer sent bytes that are not a valid frame or message."""

    code = "protocol"


@_register
class ConnectionLost(DfsError):
    code = "connection_lost"


@_register
class RemoteError(DfsError):
    """An error code this side does not know (a newer peer), or an internal server fault."""

    code = "remote"


@_register
class InternalError(DfsError):
    code = "internal"


class ConfigError(Exception):
    """A configuration or command-line mistake: reported as one line, exit code 2."""


def one_dfs_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first ``DfsError`` of an exception group holding nothing else (what callers,
    retries and the CLI handle), or the group itself when it holds anything else."""
    errors, rest = group.split(DfsError)
    if errors is None or rest is not None:
        return group
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
