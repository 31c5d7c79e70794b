"""Sans-I/O codec of the dfs RPC protocol (see docs/protocol.md).

``RpcConnection`` turns received bytes into typed events and events into bytes; it never
touches a socket, a clock or a task, so the trio code around it only moves bytes and tests can
feed it byte by byte.

Usage (one object per connection and side)::

    conn = RpcConnection(Side.CLIENT)
    stream.send_all(conn.send_handshake("client-1"))
    conn.receive_data(await stream.receive_some())   # b"" means EOF
    while (event := conn.next_event()) is not NEED_DATA:
        ...

Errors are split by whose fault they are:

* ``ProtocolError`` (``dfs.errors``): the peer sent garbage (oversized or truncated frame, bad
  msgpack, wrong message shape, version mismatch).  The connection must be closed; every later
  ``next_event`` raises the same error again.
* ``LocalProtocolError``: this side misused the codec (sent a request before the handshake, fed
  data after EOF, built a frame larger than ``MAX_FRAME``).  A bug or an oversized result, never
  the peer's doing.

A server side receives only requests; a client side receives only responses and notifications.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from dfs.errors import ProtocolError

PROTO_NAME: Final = "dfs-rpc"
PROTO_VERSION: Final = 1

#: Largest frame body: a 16 MiB data payload plus room for the envelope.
MAX_FRAME: Final = 16 * 1024 * 1024 + 64 * 1024

_HEADER = struct.Struct(">I")
_HEADER_SIZE: Final = _HEADER.size

# Container limits for decoding; frame size already bounds everything, these only stop a
# small frame from expanding into millions of Python objects.
_MAX_CONTAINER_LEN: Final = 1 << 20

_REQUEST, _RESPONSE, _NOTIFICATION = 0, 1, 2
_MAX_MSGID: Final = (1 << 64) - 1


class LocalProtocolError(RuntimeError):
    """This side used the codec wrongly (a bug, or a result too large to frame)."""


class Side(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event`` when a complete frame is not buffered yet.
NEED_DATA: Final = _Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class Handshake:
    name: str
    version: int


@dataclass(frozen=True, slots=True)
class Request:
    msgid: int
    method: str
    #: Should be a map; the dispatcher (not the codec) rejects anything else with BadRequest,
    #: so a caller learns about its mistake instead of losing its connection.
    params: Any


@dataclass(frozen=True, slots=True)
class Response:
    msgid: int
    error: dict[str, Any] | None
    result: Any


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the stream cleanly (at a frame boundary)."""


Event = Handshake | Request | Response | Notification | ConnectionClosed


def _is_uint(value: object, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


class RpcConnection:
    """Protocol state of one side of one connection.  Not thread-safe; cheap to create."""

    def __init__(self, side: Side) -> None:
        self.side = side
        # Received bytes as a queue of pieces, joined only when a frame spans several: growing
        # one bytearray instead re-copies everything buffered whenever it reallocates, which
        # with 1 MiB frames arriving in pieces cost several copies of every byte.
        self._parts: deque[memoryview] = deque()
        self._have = 0
        self._eof = False
        self._error: ProtocolError | None = None
        self._handshake_sent = False
        self._handshake_received = False
        # Not autoreset: ``_frame`` reads the packed bytes from the buffer, then resets it (also
        # on errors).
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        #: The peer's name from its handshake (``None`` until received).
        self.peer_name: str | None = None

    # ---- receiving ----
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes read from the stream; ``b""`` signals EOF."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after EOF")
            return
        if not data:
            self._eof = True
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer
        self._parts.append(memoryview(data))
        self._have += len(data)

    @property
    def their_handshake_received(self) -> bool:
        return self._handshake_received

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return self._have

    def next_event(self) -> Event | _Sentinel:
        """Return the next complete event, ``NEED_DATA``, or raise ``ProtocolError``."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _take(self, n: int) -> memoryview:
        """Remove and return the next ``n`` buffered bytes (``n <= self._have``); a slice of
        the first piece when it holds them all, else one joined copy."""
        parts = self._parts
        first = parts[0]
        self._have -= n
        if len(first) > n:
            parts[0] = first[n:]
            return first[:n]
        if len(first) == n:
            return parts.popleft()
        pieces = []
        left = n
        while left:
            part = parts[0]
            if len(part) <= left:
                pieces.append(parts.popleft())
                left -= len(part)
            else:
                pieces.append(part[:left])
                parts[0] = part[left:]
                left = 0
        return memoryview(b"".join(pieces))

    def _next_event(self) -> Event | _Sentinel:
        have = self._have
        if have >= _HEADER_SIZE:
            if len(self._parts[0]) < _HEADER_SIZE:
                self._parts.appendleft(self._take(_HEADER_SIZE))
                self._have += _HEADER_SIZE
            (size,) = _HEADER.unpack_from(self._parts[0])
            if size == 0:
                raise ProtocolError("empty frame")
            if size > MAX_FRAME:
                raise ProtocolError(f"frame too large: {size} bytes")
            end = _HEADER_SIZE + size
            if have >= end:
                frame = self._take(end)
                try:
                    obj = self._unpack(frame)
                finally:
                    frame.release()
                return self._to_event(obj)
        if self._eof:
            if have:
                raise ProtocolError(f"truncated frame: EOF after {have} bytes of a frame")
            return ConnectionClosed()
        return NEED_DATA

    @staticmethod
    def _unpack(frame: memoryview) -> Any:
        view = frame[_HEADER_SIZE:]
        try:
            return msgpack.unpackb(
                view,
                raw=False,
                strict_map_key=False,
                use_list=True,
                max_bin_len=MAX_FRAME,
                max_str_len=MAX_FRAME,
                max_array_len=_MAX_CONTAINER_LEN,
                max_map_len=_MAX_CONTAINER_LEN,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types (ValueError, FormatError, ...)
            raise ProtocolError(f"bad msgpack: {type(exc).__name__}: {exc}") from None
        finally:
            view.release()

    def _to_event(self, obj: Any) -> Event:
        if not self._handshake_received:
            return self._to_handshake(obj)
        if not isinstance(obj, list) or not obj:
            raise ProtocolError(f"not a request/response: {type(obj).__name__}")
        kind = obj[0]
        if self.side is Side.SERVER:
            if kind == _REQUEST and len(obj) == 4 and type(kind) is int:
                _, msgid, method, params = obj
                if _is_uint(msgid, _MAX_MSGID) and isinstance(method, str):
                    return Request(msgid, method, params)
            raise ProtocolError("not a request/response: malformed request")
        if kind == _RESPONSE and len(obj) == 4 and type(kind) is int:
            _, msgid, error, result = obj
            if _is_uint(msgid, _MAX_MSGID) and (error is None or isinstance(error, dict)):
                return Response(msgid, error, result)
            raise ProtocolError("not a request/response: malformed response")
        if kind == _NOTIFICATION and len(obj) == 3 and type(kind) is int:
            _, method, params = obj
            if isinstance(method, str):
                return Notification(method, params)
        raise ProtocolError("not a request/response: malformed response or notification")

    def _to_handshake(self, obj: Any) -> Handshake:
        if not isinstance(obj, dict) or obj.get("proto") != PROTO_NAME:
            raise ProtocolError("not a dfs-rpc handshake")
        version = obj.get("version")
        name = obj.get("name")
        if version != PROTO_VERSION or type(version) is not int:
            raise ProtocolError(f"version mismatch: peer speaks {version!r}, we speak 1")
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ProtocolError("handshake without a valid name")
        self._handshake_received = True
        self.peer_name = name
        return Handshake(name, version)

    # ---- sending ----
    def _frame(self, obj: Any) -> bytes:
        packer = self._packer
        try:
            try:
                packer.pack(obj)
            except (TypeError, ValueError, OverflowError) as exc:
                raise LocalProtocolError(f"cannot encode message: {exc}") from exc
            # The frame is built straight from the packer's buffer: one copy of a (possibly
            # 1 MiB) body instead of two (pack's bytes, then header + body).
            body = packer.getbuffer()
            try:
                if len(body) > MAX_FRAME:
                    raise LocalProtocolError(f"frame too large: {len(body)} bytes")
                return b"".join((_HEADER.pack(len(body)), body))
            finally:
                body.release()
        finally:
            packer.reset()

    def send_handshake(self, name: str) -> bytes:
        if self._handshake_sent:
            raise LocalProtocolError("handshake already sent")
        self._handshake_sent = True
        return self._frame({"proto": PROTO_NAME, "version": PROTO_VERSION, "name": name})

    def _check_ready(self) -> None:
        if not self._handshake_sent:
            raise LocalProtocolError("send_handshake must come first")

    def send_request(self, msgid: int, method: str, params: Any) -> bytes:
        self._check_ready()
        if self.side is not Side.CLIENT:
            raise LocalProtocolError("only a client sends requests")
        if not _is_uint(msgid, _MAX_MSGID):
            raise LocalProtocolError(f"bad msgid {msgid!r}")
        return self._frame([_REQUEST, msgid, method, params])

    def send_response(self, msgid: int, error: dict[str, Any] | None, result: Any) -> bytes:
        self._check_ready()
        if self.side is not Side.SERVER:
            raise LocalProtocolError("only a server sends responses")
        return self._frame([_RESPONSE, msgid, error, result if error is None else None])

    def send_notification(self, method: str, params: Any) -> bytes:
        self._check_ready()
        if self.side is not Side.SERVER:
            raise LocalProtocolError("only a server sends notifications")
        return self._frame([_NOTIFICATION, method, params])
