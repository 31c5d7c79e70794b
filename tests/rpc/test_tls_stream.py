"""``TlsStream`` on its own: bulk receives, close_notify, and the direct send with a backlog."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from dfs.rpc.tls_stream import TlsStream
from dfs.security.identity import Role, TlsFiles
from dfs.security.tls import client_ssl_context, peer_from_ssl, server_ssl_context

pytestmark = pytest.mark.unit


@asynccontextmanager
async def tls_pair(certs: dict[Role, TlsFiles]) -> AsyncIterator[tuple[TlsStream, TlsStream]]:
    """A connected client/server pair over a local socket pair, handshake done."""
    a, b = socket.socketpair()
    client = TlsStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        client_ssl_context(certs[Role.CLIENT]),
    )
    server = TlsStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
        server_ssl_context(certs[Role.CHUNKSERVER]),
        server_side=True,
    )
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                nursery.start_soon(server.do_handshake)
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()


def backlog(stream: TlsStream) -> bool:
    # A call, not the property inline: mypy would keep an earlier assert's narrowing.
    return stream.has_backlog


async def read_exactly(stream: TlsStream, n: int) -> tuple[bytes, int]:
    """``n`` bytes and the number of receive calls it took."""
    data = b""
    calls = 0
    with trio.fail_after(10):
        while len(data) < n:
            data += await stream.receive_some(1 << 20)
            calls += 1
    return data, calls


async def test_bulk_receive_takes_many_records_per_call(certs: dict[Role, TlsFiles]) -> None:
    async with tls_pair(certs) as (client, server):
        assert peer_from_ssl(server, "pair").role is Role.CLIENT
        assert client.version() == "TLSv1.3"
        blob = random.Random(1).randbytes(3 << 20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, blob)
            got, calls = await read_exactly(server, len(blob))
        assert got == blob
        # 192 TLS records of 16 KiB; trio.SSLStream would need one call for each.
        assert calls < 100
        # Both directions at once (each side's sender never waits for its own receiver).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, blob)
            nursery.start_soon(server.send_all, blob[::-1])
            assert (await read_exactly(server, len(blob)))[0] == blob
            assert (await read_exactly(client, len(blob)))[0] == blob[::-1]
        # A clean close reads as EOF.
        await client.aclose()
        with trio.fail_after(5):
            assert await server.receive_some(100) == b""


async def test_direct_send_keeps_order_with_a_backlog(certs: dict[Role, TlsFiles]) -> None:
    async with tls_pair(certs) as (client, server):
        big = random.Random(2).randbytes(8 << 20)  # more than the socket buffers hold
        assert client.try_send_now(big)
        assert backlog(client)
        # A second direct send must wait for the backlog; send_all writes it first.
        assert not client.try_send_now(b"x")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"tail")
            got, _ = await read_exactly(server, len(big) + 4)
        assert got == big + b"tail"
        assert not backlog(client)
        # flush_backlog alone also finishes a partial direct send.
        assert client.try_send_now(big)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.flush_backlog)
            assert (await read_exactly(server, len(big)))[0] == big
