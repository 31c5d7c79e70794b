"""RpcServer and RpcClient over real loopback TLS sockets."""

from __future__ import annotations

import logging
import random
import socket
import struct
from typing import Any

import msgpack
import pytest
import trio

from dfs.errors import (
    ConnectionLost,
    DeadlineExceeded,
    InternalError,
    NotFound,
    Unauthorized,
    Unavailable,
)
from dfs.rpc.client import RpcClient, RpcClientPool
from dfs.rpc.server import Dispatcher, Params
from dfs.security.identity import Peer, Role, TlsFiles
from dfs.security.tls import client_ssl_context
from tests.helpers.rpc import running_server

pytestmark = pytest.mark.unit

Certs = dict[Role, TlsFiles]


def make_dispatcher() -> Dispatcher:
    d = Dispatcher()

    @d.method("echo", roles=[Role.CLIENT, Role.CHUNKSERVER])
    async def echo(peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        delay = p.opt_int("delay_ms", 0) or 0
        await trio.sleep(delay / 1000)
        return {"value": p.any("value"), "caller": peer.name, "role": peer.role.value}

    @d.method("chunk.only", roles=[Role.CHUNKSERVER])
    async def chunk_only(peer: Peer, params: dict[str, Any]) -> Any:
        return "ok"

    @d.method("missing", roles=[Role.CLIENT])
    async def missing(peer: Peer, params: dict[str, Any]) -> Any:
        raise NotFound("nothing here", ino=9)

    @d.method("bug", roles=[Role.CLIENT])
    async def bug(peer: Peer, params: dict[str, Any]) -> Any:
        raise RuntimeError("handler bug")

    @d.method("hang", roles=[Role.CLIENT])
    async def hang(peer: Peer, params: dict[str, Any]) -> Any:
        await trio.sleep_forever()

    @d.method("unencodable", roles=[Role.CLIENT])
    async def unencodable(peer: Peer, params: dict[str, Any]) -> Any:
        return object()

    return d


def client(certs: Certs, address: str, role: Role = Role.CLIENT, **kw: Any) -> RpcClient:
    kw.setdefault("expect_roles", [Role.CHUNKSERVER])
    return RpcClient(address, certs[role], name=f"{role.value}-1", **kw)


async def test_calls_results_and_remote_errors(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr),
        client(certs, addr) as c,
    ):
        assert await c.call("echo", {"value": b"\x00" * 10}) == {
            "value": b"\x00" * 10,
            "caller": "client-1",
            "role": "client",
        }
        assert c.server == Peer("chunkserver-1", Role.CHUNKSERVER, addr)
        with pytest.raises(NotFound, match="nothing here") as err:
            await c.call("missing", {})
        assert err.value.details == {"ino": 9}
        with caplog.at_level(logging.ERROR, "dfs.rpc"), pytest.raises(InternalError):
            await c.call("bug", {})
        assert any("handler bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
        with pytest.raises(InternalError, match="cannot encode"):
            await c.call("unencodable", {})
        # The connection survived all of that.
        assert (await c.call("echo", {"value": 1}))["value"] == 1
        assert c.statistics().connects == 1
        stats = server.statistics()
        assert stats.requests == 5 and stats.errors == 3 and stats.protocol_errors == 0


async def test_roles(certs: Certs) -> None:
    async with running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (_, addr):
        async with client(certs, addr, Role.CLIENT) as c:
            with pytest.raises(Unauthorized, match=r"may not call 'chunk\.only'"):
                await c.call("chunk.only", {})
        async with client(certs, addr, Role.ADMIN) as c:
            assert await c.call("chunk.only", {}) == "ok"
            assert (await c.call("echo", {"value": 0}))["role"] == "admin"
        async with client(certs, addr, Role.CHUNKSERVER) as c:
            assert await c.call("chunk.only", {}) == "ok"
        # The client refuses a server whose certificate has the wrong role.
        async with client(certs, addr, expect_roles=[Role.METASERVER]) as c:
            with pytest.raises(Unauthorized, match="has role 'chunkserver'"):
                await c.call("echo", {"value": 0}, timeout=5)


async def test_foreign_ca_and_plaintext_are_refused(
    certs: Certs, foreign_cert: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dfs.rpc")
    async with running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr):
        # A client certificate from another CA.
        async with RpcClient(addr, foreign_cert, name="intruder", expect_roles=None) as c:
            with pytest.raises(Unavailable, match="unreachable"):
                await c.call("echo", {"value": 1}, timeout=0.5)
        # A server certificate from another CA (the client refuses it).
        async with (
            running_server(make_dispatcher(), foreign_cert) as (_, foreign_addr),
            client(certs, foreign_addr, expect_roles=None) as c,
        ):
            with pytest.raises(Unavailable, match="certificate verify failed"):
                await c.call("echo", {"value": 1}, timeout=0.5)
        # Plaintext.
        host, port = addr.split(":")
        plain = await trio.open_tcp_stream(host, int(port))
        with trio.fail_after(5):
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            with pytest.raises(trio.BrokenResourceError):
                while await plain.receive_some(4096):
                    pass
                raise trio.BrokenResourceError  # clean EOF is a refusal too
        await plain.aclose()
        assert server.statistics().tls_failures >= 2
        assert any("TLS handshake" in r.getMessage() for r in caplog.records)
        async with client(certs, addr) as c:
            assert (await c.call("echo", {"value": 2}))["value"] == 2
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def raw_tls(certs: Certs, addr: str) -> trio.SSLStream[trio.SocketStream]:
    host, port = addr.split(":")
    tcp = await trio.open_tcp_stream(host, int(port))
    ctx = await trio.to_thread.run_sync(client_ssl_context, certs[Role.CLIENT])
    stream = trio.SSLStream(tcp, ctx, server_hostname=None)
    await stream.do_handshake()
    return stream


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
    return data


def frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


HELLO = frame({"proto": "dfs-rpc", "version": 1, "name": "raw"})


async def test_garbage_over_tls_and_plaintext_then_good_client(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dfs.rpc")
    rng = random.Random(1234)
    async with running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr):
        for i in range(12):
            garbage = rng.randbytes(rng.randrange(1, 3000))
            if i % 3 == 0:  # plaintext garbage
                host, port = addr.split(":")
                plain = await trio.open_tcp_stream(host, int(port))
                await plain.send_all(garbage)
                await read_until_closed(plain)
                await plain.aclose()
                continue
            stream = await raw_tls(certs, addr)
            # Garbage right away, or after a valid handshake (then it must be a framing error).
            await stream.send_all(garbage if i % 3 == 1 else HELLO + garbage)
            with trio.move_on_after(0.2):
                await stream.send_all(b"\xff" * 8)  # a length way above MAX_FRAME
            await read_until_closed(stream)
            await trio.aclose_forcefully(stream)
        async with client(certs, addr) as c:
            assert (await c.call("echo", {"value": "still up"}))["value"] == "still up"
        assert server.statistics().protocol_errors >= 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("protocol error from client-1" in w for w in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_version_mismatch_over_the_wire(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr):
        stream = await raw_tls(certs, addr)
        await stream.send_all(frame({"proto": "dfs-rpc", "version": 99, "name": "future"}))
        reply = await read_until_closed(stream)
        await trio.aclose_forcefully(stream)
        # The server announced its own version before refusing ours.
        assert msgpack.unpackb(reply[4:])["version"] == 1
        assert server.statistics().protocol_errors == 1
    assert any("version mismatch" in r.getMessage() for r in caplog.records)


async def test_many_concurrent_calls_complete_out_of_order(certs: Certs) -> None:
    done: list[int] = []
    async with (
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr),
        client(certs, addr) as c,
    ):

        async def one(i: int) -> None:
            result = await c.call("echo", {"value": i, "delay_ms": (40 - i) * 5})
            assert result["value"] == i
            done.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        assert sorted(done) == list(range(40))
        assert done[:5] != [0, 1, 2, 3, 4]  # the slow early calls finished last
        assert done.index(39) < done.index(0)
        assert c.statistics().connects == 1
        assert server.statistics().connections_total == 1


async def test_large_payloads_both_ways(certs: Certs) -> None:
    blob = random.Random(5).randbytes(4 << 20)
    async with (
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (_, addr),
        client(certs, addr) as c,
        trio.open_nursery() as nursery,
    ):
        for _ in range(4):

            async def big() -> None:
                assert (await c.call("echo", {"value": blob}))["value"] == blob

            nursery.start_soon(big)


async def test_deadline_and_cancellation_do_not_break_the_connection(certs: Certs) -> None:
    async with (
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr),
        client(certs, addr) as c,
    ):
        with pytest.raises(DeadlineExceeded, match=r"no answer within 0\.2 s"):
            await c.call("hang", {}, timeout=0.2)
        # Cancel callers at random points while other calls run.
        async with trio.open_nursery() as nursery:
            for i in range(30):

                async def cancelled(i: int) -> None:
                    with trio.move_on_after(i / 1000):
                        await c.call("echo", {"value": b"x" * 200_000, "delay_ms": 1})

                nursery.start_soon(cancelled, i)

                async def fine(i: int) -> None:
                    assert (await c.call("echo", {"value": i}))["value"] == i

                nursery.start_soon(fine, i)
        assert (await c.call("echo", {"value": "after"}))["value"] == "after"
        assert c.statistics().connects == 1
        # No cancelled caller ever put half a frame on the wire.
        assert server.statistics().protocol_errors == 0
        assert server.statistics().connections_total == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_unreachable_server_is_unavailable(certs: Certs) -> None:
    async with client(certs, f"127.0.0.1:{free_port()}") as c:
        start = trio.current_time()
        with pytest.raises(Unavailable, match="cannot connect") as err:
            await c.call("echo", {"value": 1}, timeout=0.4)
        assert 0.35 < trio.current_time() - start < 2
        assert err.value.details["address"] == c.address
        assert c.statistics().connect_failures >= 2  # it retried with backoff


async def test_reconnect_after_server_restart(certs: Certs) -> None:
    port = free_port()
    dispatcher = make_dispatcher()
    async with client(certs, f"127.0.0.1:{port}") as c:
        async with running_server(dispatcher, certs[Role.CHUNKSERVER], port=port):
            assert (await c.call("echo", {"value": 1}))["value"] == 1
        with pytest.raises(Unavailable):
            await c.call("echo", {"value": 2}, timeout=0.3)
        async with running_server(dispatcher, certs[Role.CHUNKSERVER], port=port):
            assert (await c.call("echo", {"value": 3}, timeout=10))["value"] == 3
        assert c.statistics().connects == 2


async def test_call_waits_for_a_server_that_comes_up_within_the_deadline(certs: Certs) -> None:
    port = free_port()
    async with client(certs, f"127.0.0.1:{port}") as c, trio.open_nursery() as nursery:
        results: list[Any] = []

        async def call() -> None:
            results.append(await c.call("echo", {"value": "late"}, timeout=10))

        nursery.start_soon(call)
        await trio.sleep(0.3)
        async with running_server(make_dispatcher(), certs[Role.CHUNKSERVER], port=port):
            with trio.fail_after(5):
                while not results:
                    await trio.sleep(0.01)
        assert results[0]["value"] == "late"


async def test_connection_lost_after_the_request_was_sent(certs: Certs) -> None:
    port = free_port()
    lost: list[ConnectionLost] = []
    async with client(certs, f"127.0.0.1:{port}") as c, trio.open_nursery() as nursery:

        async def call() -> None:
            try:
                await c.call("hang", {}, timeout=10)
            except ConnectionLost as exc:
                lost.append(exc)

        async with running_server(make_dispatcher(), certs[Role.CHUNKSERVER], port=port):
            nursery.start_soon(call)
            with trio.fail_after(5):
                while c.statistics().in_flight == 0 or c.server is None:
                    await trio.sleep(0.01)
            await trio.sleep(0.1)  # the request reaches the server and hangs there
        # The server stopped with the call in flight: its outcome is unknown.
        with trio.fail_after(5):
            while not lost:
                await trio.sleep(0.01)
    assert "lost during hang" in lost[0].message


async def test_notifications_reach_the_client(certs: Certs) -> None:
    got: list[tuple[str, Any]] = []
    async with (
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER]) as (server, addr),
        client(certs, addr, on_notification=lambda m, p: got.append((m, p))) as c,
    ):
        await c.call("echo", {"value": 0})
        (conn,) = server.connections("client-1")
        assert conn.peer.role is Role.CLIENT
        await conn.notify("inval", {"ino": 4})
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.01)
        assert got == [("inval", {"ino": 4})]
    assert server.connections() == []


async def test_pool(certs: Certs) -> None:
    async with (
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER], name="a") as (_, a),
        running_server(make_dispatcher(), certs[Role.CHUNKSERVER], name="b") as (_, b),
        RpcClientPool(certs[Role.CLIENT], name="client-1", expect_roles=[Role.CHUNKSERVER]) as pool,
    ):
        for _ in range(3):
            for addr in (a, b):
                assert (await pool.call(addr, "echo", {"value": addr}))["value"] == addr
        assert pool.client(a) is pool.client(a)
        stats = pool.statistics()
        assert (stats.clients, stats.connected, stats.calls, stats.failures) == (2, 2, 6, 0)
        pool.discard(a)
        assert pool.statistics().clients == 1
