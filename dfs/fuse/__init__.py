"""The kernel FUSE protocol, spoken directly over /dev/fuse on trio (no libfuse).

This package knows nothing about dfs: it parses kernel requests into typed values, calls an
``Operations`` subclass and encodes the replies.  Entry points:

* ``Operations`` (subclass it), ``FuseError`` (raise it with an errno);
* ``serve(ops, mountpoint, FuseConfig(...))`` to mount and run until unmounted;
* ``FuseSession`` and ``dfs.fuse.mount.mount`` / ``unmount`` for finer control (the module
  ``dfs.fuse.mount`` is not shadowed by a function of the same name).
"""

from dfs.fuse.errors import FuseError, MalformedRequest
from dfs.fuse.handshake import FuseConfig
from dfs.fuse.model import (
    Attr,
    ConnectionInfo,
    DirEntry,
    Entry,
    FileLock,
    OpenReply,
    RequestContext,
    SetattrChanges,
    Statfs,
)
from dfs.fuse.mount import MountError, is_mounted, serve
from dfs.fuse.operations import Operations
from dfs.fuse.replies import DirBuffer, DirPlusBuffer
from dfs.fuse.session import FuseSession, SessionError, SessionStatistics

__all__ = [
    "Attr",
    "ConnectionInfo",
    "DirBuffer",
    "DirEntry",
    "DirPlusBuffer",
    "Entry",
    "FileLock",
    "FuseConfig",
    "FuseError",
    "FuseSession",
    "MalformedRequest",
    "MountError",
    "OpenReply",
    "Operations",
    "RequestContext",
    "SessionError",
    "SessionStatistics",
    "SetattrChanges",
    "Statfs",
    "is_mounted",
    "serve",
]
