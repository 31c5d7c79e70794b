"""Errors of the FUSE protocol layer.

``FuseError`` is what an ``Operations`` handler raises to answer a request with an errno;
``MalformedRequest`` means the kernel's bytes could not be parsed (the request is answered
``EIO`` when its header was readable, and dropped otherwise).
"""

from __future__ import annotations

import errno as _errno
import os


class FuseError(Exception):
    """Answer the current request with ``-errno``.

    Raised by ``Operations`` handlers; the dispatcher turns it into an error reply.  The errno
    must be a positive number; 0 is rejected because a zero error is a success reply.
    """

    def __init__(self, errno: int, message: str = "") -> None:
        if errno <= 0:
            raise ValueError(f"FuseError needs a positive errno, got {errno}")
        self.errno = errno
        name = _errno.errorcode.get(errno, str(errno))
        super().__init__(f"{name}: {message}" if message else f"{name} ({os.strerror(errno)})")


class MalformedRequest(Exception):
    """The bytes read from /dev/fuse are not a valid request of the declared opcode.

    ``unique`` is the request's id when the header could be read (so the request can still be
    answered with an error), else ``None``.
    """

    def __init__(self, reason: str, *, unique: int | None = None, opcode: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.unique = unique
        self.opcode = opcode
