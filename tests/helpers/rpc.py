"""Run an ``RpcServer`` on a loopback port for the duration of a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from dfs.rpc.server import Dispatcher, RpcServer
from dfs.security.identity import TlsFiles


@asynccontextmanager
async def running_server(
    dispatcher: Dispatcher, tls: TlsFiles, *, port: int = 0, name: str = "test-server"
) -> AsyncIterator[tuple[RpcServer, str]]:
    """Yield ``(server, "127.0.0.1:<port>")``; the server stops when the block exits."""
    server = RpcServer(dispatcher, tls, name)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, "127.0.0.1", port)
        yield server, f"127.0.0.1:{bound}"
        nursery.cancel_scope.cancel()
