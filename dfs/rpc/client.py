"""The RPC client: one multiplexed mutual-TLS connection per server address.

``RpcClient`` connects lazily and multiplexes any number of concurrent ``call``s over one
connection (responses may arrive in any order).  Contract of ``call``:

* the connection is (re)established on demand with exponential backoff and jitter (0.05 s
  doubling to 2 s, shared by all calls of this client) until the call's deadline;
* a connection failure *before* the request was handed to the stream is retried
  transparently; *after* that, the outcome is unknown and ``ConnectionLost`` is raised (whether
  to retry is the caller's decision: only idempotent or session-protected calls may);
* no connection within the deadline -> ``Unavailable`` with the last failure reason; a
  deadline that passes while waiting for the answer -> ``DeadlineExceeded``;
* a server whose certificate role is not in ``expect_roles`` -> ``Unauthorized`` (not retried:
  it is a configuration mistake);
* an error answered by the server is raised as rebuilt by ``DfsError.from_wire``;
* cancelling a caller never disturbs the connection or the other calls on it.

``RpcClientPool`` keeps one ``RpcClient`` per address for callers that talk to many servers
(the chunk data path).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import trio

from dfs.config import parse_address
from dfs.errors import (
    ConnectionLost,
    DeadlineExceeded,
    DfsError,
    ProtocolError,
    Unauthorized,
    Unavailable,
)
from dfs.rpc.codec import (
    NEED_DATA,
    ConnectionClosed,
    Handshake,
    Notification,
    Response,
    RpcConnection,
    Side,
)
from dfs.rpc.tls_stream import TlsStream
from dfs.rpc.transport import (
    RECEIVE_SIZE,
    STREAM_ERRORS,
    FrameWriter,
    close_stream,
    describe,
    receive_into,
)
from dfs.security.identity import Peer, Role, TlsFiles
from dfs.security.tls import client_ssl_context, peer_from_ssl

log = logging.getLogger(__name__)

BACKOFF_INITIAL: Final = 0.05
BACKOFF_MAX: Final = 2.0

#: ``on_notification(method, params)``; called in the connection's reader task, so it must not
#: block (hand work to a channel with ``send_nowait`` or a nursery).
NotificationCallback = Callable[[str, Any], None]


class _ConnectFailed(Exception):
    """A connection attempt failed for a reason worth retrying."""


class _Pending:
    __slots__ = ("done", "lost", "response", "sent")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.sent = False
        self.lost = False
        self.response: Response | None = None


class _Connection:
    """One established connection; dies once, never revives."""

    def __init__(
        self,
        stream: TlsStream,
        codec: RpcConnection,
        peer: Peer,
    ) -> None:
        self.stream = stream
        self.codec = codec
        self.peer = peer
        self.writer = FrameWriter(stream)
        self.pending: dict[int, _Pending] = {}
        self.alive = True
        self.reason = "closed"
        self.cancel_scope = trio.CancelScope()

    def die(self, reason: str) -> None:
        """Mark dead and wake every waiting call (runs without awaiting: no call slips in)."""
        if not self.alive:
            return
        self.alive = False
        self.reason = reason
        self.writer.close()
        for pending in self.pending.values():
            pending.lost = True
            pending.done.set()
        self.pending.clear()
        self.cancel_scope.cancel()


@dataclass
class RpcClientStatistics:
    calls: int = 0
    #: Calls that ended with any exception (remote error, deadline, connection lost, ...).
    failures: int = 0
    connects: int = 0
    connect_failures: int = 0
    connected: bool = False
    in_flight: int = 0


class RpcClient:
    """Client of one server address; use as ``async with RpcClient(...) as client``."""

    def __init__(
        self,
        address: str,
        tls: TlsFiles,
        *,
        name: str,
        expect_roles: Collection[Role] | None,
        connect_timeout: float = 5.0,
        on_notification: NotificationCallback | None = None,
    ) -> None:
        self.address = address
        self._host, self._port = parse_address(address)
        self._tls = tls
        self.name = name
        self._expect_roles = frozenset(expect_roles) if expect_roles is not None else None
        self._connect_timeout = connect_timeout
        self._on_notification = on_notification
        self._msgids = itertools.count(1)
        self._conn: _Connection | None = None
        self._connect_lock = trio.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = "not connected yet"
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None
        self._closed = False
        self._stats = RpcClientStatistics()

    # ---- lifetime ----
    async def __aenter__(self) -> Self:
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._nursery_manager = manager
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.close()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        result: bool | None = await self._nursery_manager.__aexit__(exc_type, exc, tb)
        return result

    def _attach(self, nursery: trio.Nursery) -> None:
        """Run connection tasks in ``nursery`` (used by ``RpcClientPool``)."""
        self._nursery = nursery

    def close(self) -> None:
        """Drop the connection; later calls fail with ``Unavailable``."""
        self._closed = True
        if self._conn is not None:
            self._conn.die("client closed")
            self._conn = None

    @property
    def server(self) -> Peer | None:
        """The authenticated server of the current connection, if connected."""
        conn = self._conn
        return conn.peer if conn is not None and conn.alive else None

    def statistics(self) -> RpcClientStatistics:
        stats = RpcClientStatistics(**vars(self._stats))
        stats.connected = self.server is not None
        return stats

    # ---- calls ----
    async def call(
        self,
        method: str,
        params: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a per-call deadline is this API's contract
        fail_fast: bool = False,
    ) -> Any:
        """Call ``method`` and return its result; see the module docstring for the errors.

        ``fail_fast``: when the server cannot be reached (or is in its reconnect backoff),
        raise ``Unavailable`` at once instead of retrying until the deadline; for callers that
        have somewhere else to go, such as a reader with other replicas.
        """
        self._stats.calls += 1
        self._stats.in_flight += 1
        try:
            return await self._call(method, params, timeout, fail_fast)
        except BaseException:
            self._stats.failures += 1
            raise
        finally:
            self._stats.in_flight -= 1

    async def _call(
        self,
        method: str,
        params: Any,
        timeout: float,  # noqa: ASYNC109
        fail_fast: bool,
    ) -> Any:
        if self._nursery is None:
            raise RuntimeError("RpcClient must be used as 'async with RpcClient(...)'")
        waiting_for_answer = False
        with trio.move_on_after(timeout):
            while True:
                waiting_for_answer = False
                conn = await self._connection(fail_fast)
                waiting_for_answer = True
                msgid = next(self._msgids)
                frame = conn.codec.send_request(msgid, method, params)
                pending = _Pending()
                conn.pending[msgid] = pending
                try:
                    try:
                        await conn.writer.send(frame, pending)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        # The writer stopped before taking the frame: not sent, retry.  Mark
                        # the connection dead now (the send raised without yielding, and the
                        # connection task may not have run yet) so we cannot spin on it.
                        conn.die("writer stopped")
                        continue
                    await pending.done.wait()
                finally:
                    conn.pending.pop(msgid, None)
                response = pending.response
                if response is not None:
                    if response.error is not None:
                        raise DfsError.from_wire(response.error)
                    return response.result
                if pending.sent:
                    raise ConnectionLost(
                        f"connection to {self.address} lost during {method}: {conn.reason}"
                    )
        if waiting_for_answer:
            raise DeadlineExceeded(f"{method} on {self.address}: no answer within {timeout:g} s")
        raise Unavailable(
            f"{self.address} unreachable for {timeout:g} s: {self._last_error}",
            address=self.address,
        )

    async def _connection(self, fail_fast: bool = False) -> _Connection:
        """The live connection, connecting (with backoff) if needed; cancelled at the deadline."""
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        async with self._connect_lock:
            while True:
                if self._closed:
                    raise Unavailable(f"client for {self.address} is closed")
                conn = self._conn
                if conn is not None and conn.alive:
                    return conn
                if fail_fast and self._next_attempt > trio.current_time():
                    raise Unavailable(
                        f"{self.address} unreachable: {self._last_error}", address=self.address
                    )
                await trio.sleep_until(self._next_attempt)
                try:
                    conn = await self._connect()
                except _ConnectFailed as exc:
                    self._stats.connect_failures += 1
                    self._last_error = str(exc)
                    self._backoff = min(BACKOFF_MAX, max(BACKOFF_INITIAL, self._backoff * 2))
                    delay = self._backoff * random.uniform(0.5, 1.0)
                    self._next_attempt = trio.current_time() + delay
                    log.debug(
                        "connect to %s failed (%s); retry in %.3f s", self.address, exc, delay
                    )
                    if fail_fast:
                        raise Unavailable(
                            f"{self.address} unreachable: {exc}", address=self.address
                        ) from None
                    continue
                self._backoff = 0.0
                self._stats.connects += 1
                self._conn = conn
                assert self._nursery is not None
                self._nursery.start_soon(self._run_connection, conn)
                return conn

    async def _connect(self) -> _Connection:
        """One connection attempt: TCP, TLS, role check, protocol handshake."""
        with trio.move_on_after(self._connect_timeout) as scope:
            try:
                ctx = await trio.to_thread.run_sync(client_ssl_context, self._tls)
                tcp = await trio.open_tcp_stream(self._host, self._port)
            except OSError as exc:
                raise _ConnectFailed(f"cannot connect: {exc.strerror or exc}") from None
            stream = TlsStream(tcp, ctx, server_hostname=None)
            try:
                return await self._handshake(stream)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        assert scope.cancelled_caught
        raise _ConnectFailed(f"connect timed out after {self._connect_timeout:g} s")

    async def _handshake(self, stream: TlsStream) -> _Connection:
        try:
            await stream.do_handshake()
            peer = peer_from_ssl(stream, self.address)
            if self._expect_roles is not None and peer.role not in self._expect_roles:
                raise Unauthorized(
                    f"server {self.address} ({peer.name}) has role {peer.role.value!r}, expected "
                    f"{sorted(r.value for r in self._expect_roles)}"
                )
            codec = RpcConnection(Side.CLIENT)
            await stream.send_all(codec.send_handshake(self.name))
            while True:
                event = codec.next_event()
                if isinstance(event, Handshake):
                    return _Connection(stream, codec, peer)
                if isinstance(event, ConnectionClosed):
                    # TLS 1.3: a server that rejects our certificate says so only now.
                    raise _ConnectFailed("server closed the connection during the handshake")
                codec.receive_data(await stream.receive_some(RECEIVE_SIZE))
        except STREAM_ERRORS as exc:
            raise _ConnectFailed(f"handshake failed: {describe(exc)}") from None
        except ProtocolError as exc:
            raise _ConnectFailed(f"handshake failed: {exc.message}") from None

    async def _run_connection(self, conn: _Connection) -> None:
        reason = "closed"
        with conn.cancel_scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, conn)
                    reason = await self._read_loop(conn)
                    nursery.cancel_scope.cancel()
            finally:
                conn.die(reason if conn.alive else conn.reason)
                if self._conn is conn:
                    self._conn = None
                await close_stream(conn.stream)

    @staticmethod
    async def _write_loop(conn: _Connection) -> None:
        try:
            await conn.writer.run()
        except STREAM_ERRORS as exc:
            conn.die(f"send failed: {describe(exc)}")

    async def _read_loop(self, conn: _Connection) -> str:
        """Deliver responses until the connection ends; return why it ended."""
        codec = conn.codec
        try:
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    await receive_into(conn.stream, codec)
                elif isinstance(event, Response):
                    pending = conn.pending.pop(event.msgid, None)
                    if pending is not None:  # else: its caller gave up (deadline, cancel)
                        pending.response = event
                        pending.done.set()
                elif isinstance(event, Notification):
                    self._notify(event)
                elif isinstance(event, ConnectionClosed):
                    return "closed by the server"
                else:
                    raise ProtocolError(f"unexpected {type(event).__name__}")
        except ProtocolError as exc:
            log.warning("protocol error from %s (%s): %s", conn.peer.name, self.address, exc)
            return f"protocol error: {exc.message}"
        except STREAM_ERRORS as exc:
            return describe(exc)

    def _notify(self, event: Notification) -> None:
        if self._on_notification is None:
            return
        try:
            self._on_notification(event.method, event.params)
        except Exception:
            log.exception("notification handler failed for %s", event.method)


@dataclass
class RpcClientPoolStatistics:
    clients: int = 0
    connected: int = 0
    calls: int = 0
    failures: int = 0


class RpcClientPool:
    """One ``RpcClient`` per address, created on first use; use as ``async with``."""

    def __init__(
        self,
        tls: TlsFiles,
        *,
        name: str,
        expect_roles: Collection[Role] | None,
        connect_timeout: float = 5.0,
        on_notification: NotificationCallback | None = None,
    ) -> None:
        self._tls = tls
        self.name = name
        self._expect_roles = expect_roles
        self._connect_timeout = connect_timeout
        self._on_notification = on_notification
        self._clients: dict[str, RpcClient] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None

    async def __aenter__(self) -> Self:
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._nursery_manager = manager
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        for client in self._clients.values():
            client.close()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        result: bool | None = await self._nursery_manager.__aexit__(exc_type, exc, tb)
        return result

    def client(self, address: str) -> RpcClient:
        """The client for ``address`` (created on first use; raises ConfigError if malformed)."""
        client = self._clients.get(address)
        if client is None:
            if self._nursery is None:
                raise RuntimeError("RpcClientPool must be used as 'async with RpcClientPool(...)'")
            client = RpcClient(
                address,
                self._tls,
                name=self.name,
                expect_roles=self._expect_roles,
                connect_timeout=self._connect_timeout,
                on_notification=self._on_notification,
            )
            client._attach(self._nursery)
            self._clients[address] = client
        return client

    async def call(
        self,
        address: str,
        method: str,
        params: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - same contract as RpcClient.call
        fail_fast: bool = False,
    ) -> Any:
        """``RpcClient.call`` on the client for ``address``."""
        return await self.client(address).call(method, params, timeout=timeout, fail_fast=fail_fast)

    def discard(self, address: str) -> None:
        """Close and forget the client of ``address`` (a server that left the cluster)."""
        client = self._clients.pop(address, None)
        if client is not None:
            client.close()

    def statistics(self) -> RpcClientPoolStatistics:
        stats = RpcClientPoolStatistics(clients=len(self._clients))
        for client in self._clients.values():
            s = client.statistics()
            stats.connected += s.connected
            stats.calls += s.calls
            stats.failures += s.failures
        return stats
