"""A small read-only HTTP/1.1 server on trio for ``/metrics`` and the dashboard.

Sans-I/O core: ``RequestReader`` takes bytes and yields one ``HttpRequest`` (or raises
``HttpError`` with the status to answer); ``response`` encodes an answer.  The trio part only
moves bytes.  One request per connection (``Connection: close``): scrapes and dashboard
refreshes are seconds apart, so keep-alive would save nothing worth its states.

Transport (the project's rule: nothing listens in plaintext except on loopback):

* on a loopback address, plain HTTP; the ``Host`` header must then name a loopback host
  (``localhost``, ``127.x``, ``[::1]``), so a web page cannot reach the listener through DNS
  rebinding;
* on any other address, TLS 1.3 with the daemon's own certificate, and the client must
  present a certificate of the cluster CA (``server_ssl_context``).  Routes marked
  ``admin`` (the dashboard) then also require the ``admin`` role; ``/metrics`` accepts any
  dfs role (give Prometheus a certificate of its own: ``dfs ca issue``).

Only GET and HEAD exist (405 otherwise); a malformed request gets 400, an unknown path 404, a
head over 8 KiB 431, a silent client is dropped after 10 s; a failing handler answers 500 and
is logged; at most 64 connections are served at once (503 beyond).  Nothing here can stop the
daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

import trio

from dfs.errors import Unauthorized
from dfs.rpc.tls_stream import TlsStream
from dfs.rpc.transport import STREAM_ERRORS, close_stream, describe
from dfs.security.identity import Peer, Role, TlsFiles
from dfs.security.tls import peer_from_ssl, server_ssl_context

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
REQUEST_TIMEOUT: Final = 10.0
MAX_CONNECTIONS: Final = 64
_METHODS: Final = ("GET", "HEAD")
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


#: Bytes a request head may hold (printable ASCII, tab, CR, LF); anything else is not HTTP
#: (a TLS ClientHello sent to the plain port, say) and is answered at once.
_HEAD_BYTES: Final = bytes([9, 10, 13, *range(32, 127)])


class HttpError(Exception):
    """The request cannot be served; answer ``status``."""

    def __init__(self, status: HTTPStatus, detail: str = "") -> None:
        super().__init__(detail or status.phrase)
        self.status = status
        self.detail = detail or status.phrase


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


def parse_head(head: bytes) -> HttpRequest:
    """Parse a request head (request line and headers, without the final blank line)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "non-ASCII bytes in the request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not method or not set(method) <= _TOKEN_CHARS:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed method")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if version.startswith("HTTP/"):
            raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    if not target.startswith("/") or any(c <= " " or c == "\x7f" for c in target):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the target must be an absolute path")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN_CHARS:
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.lower()
        if key == "host" and key in headers:
            raise HttpError(HTTPStatus.BAD_REQUEST, "several Host headers")
        headers[key] = value.strip(" \t")
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(HTTPStatus.BAD_REQUEST, "HTTP/1.1 needs a Host header")
    if method not in _METHODS:
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed: read-only")
    return HttpRequest(method, unquote(path), query, version, headers)


class RequestReader:
    """Collects bytes until the request head is complete (bodies are not accepted)."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self._buffer = bytearray()
        self._max = max_head

    def feed(self, data: bytes) -> HttpRequest | None:
        """Add bytes; the request once its head is complete, else None (send more)."""
        if data.translate(None, _HEAD_BYTES):
            raise HttpError(HTTPStatus.BAD_REQUEST, "not an HTTP request head")
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > self._max:
                raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return None
        if end > self._max:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        request = parse_head(bytes(self._buffer[:end]))
        length = request.headers.get("content-length", "0")
        if request.headers.get("transfer-encoding") or length not in ("", "0"):
            raise HttpError(HTTPStatus.BAD_REQUEST, "a request body is not accepted")
        return request

    def eof(self) -> None:
        """The client closed before sending a whole head."""
        if self._buffer:
            raise HttpError(HTTPStatus.BAD_REQUEST, "incomplete request head")


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text_response(status: HTTPStatus, text: str) -> Response:
    return Response(status, (text + "\n").encode())


def encode_response(response: Response, *, head_only: bool = False) -> bytes:
    """The bytes of ``response`` (``Connection: close``; no body for HEAD)."""
    lines = [
        f"HTTP/1.1 {response.status.value} {response.status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        *(f"{k}: {v}" for k, v in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


#: A route: the request and the authenticated peer (None on plain loopback HTTP).
Handler = Callable[[HttpRequest, Peer | None], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    #: Over TLS, only the ``admin`` role may use it.
    admin: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_is_loopback(host_header: str) -> bool:
    host = host_header
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return is_loopback(host)


class HttpServer:
    """Serves ``routes`` (path -> Route); see the module docstring."""

    def __init__(self, routes: dict[str, Route], name: str, tls: TlsFiles | None) -> None:
        """``tls``: None for plain HTTP (loopback only), else the daemon's TLS files."""
        self.routes = routes
        self.name = name
        self._tls = tls
        self._limit = trio.Semaphore(MAX_CONNECTIONS)
        self.requests = 0
        self.errors = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if self._tls is None and not is_loopback(host):
            raise ValueError(f"plain HTTP only on loopback, not {host}")
        ctx = (
            None
            if self._tls is None
            else await trio.to_thread.run_sync(server_ssl_context, self._tls)
        )
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            bound = int(listeners[0].socket.getsockname()[1])
            scheme = "http" if ctx is None else "https (client certificate required)"
            log.info("%s: metrics and status over %s on %s:%d", self.name, scheme, host, bound)
            task_status.started(bound)

            async def handle(stream: trio.SocketStream) -> None:
                await self._connection(stream, ctx)

            await trio.serve_listeners(handle, listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _connection(self, tcp: trio.SocketStream, ctx: ssl.SSLContext | None) -> None:
        stream: trio.abc.Stream = tcp
        try:
            try:
                self._limit.acquire_nowait()
            except trio.WouldBlock:
                with trio.move_on_after(1), contextlib.suppress(*STREAM_ERRORS):
                    busy = text_response(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
                    await tcp.send_all(encode_response(busy))
                return
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    peer = None
                    if ctx is not None:
                        tls = TlsStream(tcp, ctx, server_side=True)
                        stream = tls
                        await tls.do_handshake()
                        peer = peer_from_ssl(tls, _address(tcp))
                    await self._exchange(stream, peer)
            finally:
                self._limit.release()
        except Unauthorized as exc:
            log.info("%s: HTTPS peer refused: %s", self.name, exc.message)
        except STREAM_ERRORS as exc:
            log.debug("%s: HTTP connection failed: %s", self.name, describe(exc))
        except Exception:
            # A bug here must cost one connection, never the daemon.
            log.exception("%s: HTTP connection failed", self.name)
        finally:
            await close_stream(stream)

    async def _exchange(self, stream: trio.abc.Stream, peer: Peer | None) -> None:
        reader = RequestReader()
        head_only = False
        try:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    reader.eof()
                    return
                request = reader.feed(bytes(data))
                if request is not None:
                    break
            head_only = request.method == "HEAD"
            response = await self._respond(request, peer)
        except HttpError as exc:
            response = text_response(exc.status, exc.detail)
        self.requests += 1
        if response.status >= 400:
            self.errors += 1
        await stream.send_all(encode_response(response, head_only=head_only))

    async def _respond(self, request: HttpRequest, peer: Peer | None) -> Response:
        if peer is None and not _host_is_loopback(request.host):
            # Plain HTTP is loopback-only; a foreign Host is a browser led here by DNS.
            raise HttpError(HTTPStatus.MISDIRECTED_REQUEST, "this listener serves localhost only")
        route = self.routes.get(request.path)
        if route is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such page: {request.path}")
        if route.admin and peer is not None and peer.role is not Role.ADMIN:
            raise HttpError(HTTPStatus.FORBIDDEN, "the dashboard needs an admin certificate")
        try:
            return await route.handler(request, peer)
        except HttpError:
            raise
        except Exception:
            log.exception("%s: HTTP handler for %s failed", self.name, request.path)
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR) from None


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return "?"
    return f"{host}:{port}"
