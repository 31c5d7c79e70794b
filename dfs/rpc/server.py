"""The RPC server: mutual-TLS listener, per-connection protocol loop, request dispatch.

``RpcServer(dispatcher, tls, name).serve(host, port, task_status=...)`` runs until cancelled.
Per connection:

* TLS handshake (under ``HANDSHAKE_TIMEOUT``); a plaintext client, a certificate from another
  CA or one without a dfs role is refused with one INFO line and the server goes on;
* protocol handshake (both sides send theirs first; version mismatch -> refused);
* a read loop feeds the sans-I/O codec; every request runs in its own task (at most
  ``MAX_IN_FLIGHT`` per connection: beyond that the loop stops reading, so a flooding peer is
  slowed down, not buffered); responses go through the connection's ``FrameWriter``;
* a protocol error closes that connection only, with one WARNING line (reason and peer).

Live connections are registered by peer name so a service can push notifications
(``RpcServer.connections(name)`` then ``ServerConnection.notify``).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Final

import trio

from dfs.errors import DfsError, InternalError, ProtocolError, Unauthorized
from dfs.rpc.codec import (
    NEED_DATA,
    ConnectionClosed,
    Handshake,
    LocalProtocolError,
    Request,
    RpcConnection,
    Side,
)
from dfs.rpc.dispatch import Dispatcher, Handler, Method
from dfs.rpc.params import Params
from dfs.rpc.tls_stream import TlsStream
from dfs.rpc.transport import (
    RECEIVE_SIZE,
    STREAM_ERRORS,
    FrameWriter,
    close_stream,
    describe,
    receive_into,
)
from dfs.security.identity import Peer, TlsFiles
from dfs.security.tls import peer_from_ssl, server_ssl_context

__all__ = [
    "Dispatcher",
    "Handler",
    "Method",
    "Params",
    "RpcServer",
    "RpcServerStatistics",
    "ServerConnection",
]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
MAX_IN_FLIGHT: Final = 256


@dataclass
class RpcServerStatistics:
    connections_total: int = 0
    connections_open: int = 0
    tls_failures: int = 0
    requests: int = 0
    #: Responses that carried an error (any DfsError, including unauthorized/bad_request).
    errors: int = 0
    protocol_errors: int = 0


class ServerConnection:
    """One authenticated client connection, as seen by the server."""

    def __init__(self, peer: Peer, codec: RpcConnection, writer: FrameWriter) -> None:
        self.peer = peer
        self._codec = codec
        self._writer = writer

    async def notify(self, method: str, params: Any) -> None:
        """Push a notification to this peer (waits while the connection's writer is busy).

        Raises ``trio.BrokenResourceError`` or ``trio.ClosedResourceError`` if the connection
        has gone (callers usually ignore that: the peer reconnects and resynchronises).
        """
        await self._writer.send(self._codec.send_notification(method, params))

    def __repr__(self) -> str:
        return f"<ServerConnection {self.peer.name} ({self.peer.role.value}) {self.peer.address}>"


def _address_of(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return "?"
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class RpcServer:
    """Serves one ``Dispatcher`` over mutual TLS; see the module docstring."""

    def __init__(self, dispatcher: Dispatcher, tls: TlsFiles, name: str) -> None:
        self.dispatcher = dispatcher
        self.name = name
        self._tls = tls
        self._stats = RpcServerStatistics()
        self._connections: dict[str, set[ServerConnection]] = {}

    def statistics(self) -> RpcServerStatistics:
        """A snapshot of the counters."""
        return RpcServerStatistics(**vars(self._stats))

    def connections(self, peer_name: str | None = None) -> list[ServerConnection]:
        """Live connections, all or those of one peer name."""
        if peer_name is not None:
            return list(self._connections.get(peer_name, ()))
        return [c for conns in self._connections.values() for c in conns]

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 = any free port, reported via ``task_status.started``)."""
        ctx = await trio.to_thread.run_sync(server_ssl_context, self._tls)
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            bound = listeners[0].socket.getsockname()[1]
            log.info("%s: RPC server listening on %s:%d", self.name, host, bound)
            task_status.started(bound)

            async def handle(stream: trio.SocketStream) -> None:
                await self._handle(stream, ctx)

            await trio.serve_listeners(handle, listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    # ---- one connection ----
    async def _handle(self, tcp: trio.abc.Stream, ctx: ssl.SSLContext) -> None:
        address = _address_of(tcp)
        self._stats.connections_total += 1
        stream = TlsStream(tcp, ctx, server_side=True)
        try:
            conn = await self._open(stream, address)
            if conn is not None:
                await self._run(stream, conn)
        finally:
            await close_stream(stream)

    async def _open(self, stream: TlsStream, address: str) -> _Conn | None:
        """TLS and protocol handshakes; ``None`` (after one log line) if the peer is refused."""
        codec = RpcConnection(Side.SERVER)
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            try:
                await stream.do_handshake()
                peer = peer_from_ssl(stream, address)
            except STREAM_ERRORS as exc:
                self._stats.tls_failures += 1
                log.info("%s: TLS handshake with %s failed: %s", self.name, address, describe(exc))
                return None
            except Unauthorized as exc:
                self._stats.tls_failures += 1
                log.info("%s: refused %s: %s", self.name, address, exc.message)
                return None
            try:
                await stream.send_all(codec.send_handshake(self.name))
                while True:
                    event = codec.next_event()
                    if isinstance(event, Handshake):
                        return _Conn(peer, codec)
                    if isinstance(event, ConnectionClosed):
                        log.info("%s: %s closed before its handshake", self.name, address)
                        return None
                    codec.receive_data(await stream.receive_some(RECEIVE_SIZE))
            except STREAM_ERRORS as exc:
                log.info("%s: connection from %s failed: %s", self.name, address, describe(exc))
                return None
            except ProtocolError as exc:
                self._stats.protocol_errors += 1
                log.warning(
                    "%s: protocol error from %s (%s): %s", self.name, peer.name, address, exc
                )
                return None
        log.info("%s: handshake with %s timed out", self.name, address)
        return None

    async def _run(self, stream: TlsStream, conn: _Conn) -> None:
        peer = conn.peer
        writer = FrameWriter(stream)
        sconn = ServerConnection(peer, conn.codec, writer)
        self._connections.setdefault(peer.name, set()).add(sconn)
        self._stats.connections_open += 1
        log.debug("%s: connection from %s (%s) %s", self.name, peer.name, peer.role, peer.address)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, writer, nursery.cancel_scope)
                await self._read_loop(stream, conn, writer, nursery)
                nursery.cancel_scope.cancel()
        finally:
            writer.close()
            self._stats.connections_open -= 1
            peers = self._connections.get(peer.name)
            if peers is not None:
                peers.discard(sconn)
                if not peers:
                    del self._connections[peer.name]

    async def _write_loop(self, writer: FrameWriter, scope: trio.CancelScope) -> None:
        # A send failure ends the connection; the read loop sees the same failure and logs it.
        with contextlib.suppress(*STREAM_ERRORS):
            await writer.run()
        scope.cancel()

    async def _read_loop(
        self,
        stream: TlsStream,
        conn: _Conn,
        writer: FrameWriter,
        nursery: trio.Nursery,
    ) -> None:
        peer, codec = conn.peer, conn.codec
        limiter = trio.Semaphore(MAX_IN_FLIGHT)
        try:
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    await receive_into(stream, codec)
                    continue
                if isinstance(event, Request):
                    # A free slot is taken without a pass through the scheduler.
                    try:
                        limiter.acquire_nowait()
                    except trio.WouldBlock:
                        await limiter.acquire()
                    self._stats.requests += 1
                    nursery.start_soon(self._serve_request, peer, codec, writer, event, limiter)
                    continue
                if isinstance(event, ConnectionClosed):
                    log.debug("%s: %s closed the connection", self.name, peer.name)
                    return
                # A second handshake: the codec only yields it first, so this is unreachable
                # unless the codec changes; treat it as the peer's fault.
                raise ProtocolError(f"unexpected {type(event).__name__}")
        except ProtocolError as exc:
            self._stats.protocol_errors += 1
            log.warning(
                "%s: protocol error from %s (%s): %s", self.name, peer.name, peer.address, exc
            )
        except STREAM_ERRORS as exc:
            # A peer that just closes its socket without a TLS close_notify (short-lived
            # clients such as admin.status fan-out) is routine, not news.
            eof = isinstance(exc.__cause__ or exc, ssl.SSLEOFError)
            log.log(
                logging.DEBUG if eof else logging.INFO,
                "%s: connection from %s lost: %s",
                self.name,
                peer.name,
                describe(exc),
            )

    async def _serve_request(
        self,
        peer: Peer,
        codec: RpcConnection,
        writer: FrameWriter,
        request: Request,
        limiter: trio.Semaphore,
    ) -> None:
        try:
            try:
                result = await self.dispatcher.dispatch(peer, request.method, request.params)
                error = None
            except DfsError as exc:
                self._stats.errors += 1
                result, error = None, exc.to_wire()
            try:
                frame = codec.send_response(request.msgid, error, result)
            except LocalProtocolError as exc:
                # The handler returned something we cannot send (unencodable, too large).
                log.error("%s: cannot send the result of %s: %s", self.name, request.method, exc)
                self._stats.errors += 1
                failure = InternalError(f"cannot encode the result of {request.method!r}: {exc}")
                frame = codec.send_response(request.msgid, failure.to_wire(), None)
            # Connection gone: nobody is waiting for this response any more.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await writer.send(frame)
        finally:
            limiter.release()


@dataclass(frozen=True, slots=True)
class _Conn:
    peer: Peer
    codec: RpcConnection
