"""The small HTTP server: request parsing (sans-I/O) and the trio server over loopback,
plain and with TLS client certificates."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dfs.config import HttpConfig
from dfs.observability.endpoint import http_server
from dfs.observability.http import (
    MAX_HEAD,
    HttpError,
    HttpRequest,
    HttpServer,
    RequestReader,
    Response,
    Route,
    parse_head,
)
from dfs.observability.metrics import MetricsRegistry, gauge
from dfs.security.identity import Peer, Role, TlsFiles
from dfs.security.tls import client_ssl_context
from tests.helpers.certs import make_cluster_certs, make_foreign_cert

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- parsing
def test_a_plain_get_parses() -> None:
    r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost:9\r\nAccept: */*")
    assert (r.method, r.path, r.query, r.version) == ("GET", "/metrics", "x=1", "HTTP/1.1")
    assert r.host == "localhost:9"
    assert r.headers["accept"] == "*/*"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GARBAGE", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1", HTTPStatus.BAD_REQUEST),  # no Host
        (b"GET  / HTTP/1.1\r\nHost: x", HTTPStatus.BAD_REQUEST),
        (b"GET http://x/ HTTP/1.1\r\nHost: x", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/2.0\r\nHost: x", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET / FTP/1.0\r\nHost: x", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost x", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", HTTPStatus.BAD_REQUEST),
        (b"GET /\xff HTTP/1.1\r\nHost: x", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nHost: x", HTTPStatus.METHOD_NOT_ALLOWED),
        (b"DELETE /api/status HTTP/1.1\r\nHost: x", HTTPStatus.METHOD_NOT_ALLOWED),
    ],
)
def test_malformed_or_unsupported_requests_are_refused(head: bytes, status: HTTPStatus) -> None:
    with pytest.raises(HttpError) as err:
        parse_head(head)
    assert err.value.status == status


def test_reader_waits_for_the_whole_head_and_limits_it() -> None:
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.0\r\n") is None
    request = reader.feed(b"\r\n")
    assert request is not None and request.path == "/"
    with pytest.raises(HttpError) as err:
        RequestReader().feed(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
    assert err.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    with pytest.raises(HttpError):
        RequestReader().feed(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    truncated = RequestReader()
    truncated.feed(b"GET / HT")
    with pytest.raises(HttpError):
        truncated.eof()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_anything_but_http_errors(data: bytes) -> None:
    with contextlib.suppress(HttpError):
        RequestReader().feed(data + b"\r\n\r\n")


# ---------------------------------------------------------------- the server
async def _hello(request: HttpRequest, peer: Peer | None) -> Response:
    who = peer.role.value if peer else "loopback"
    return Response(HTTPStatus.OK, f"hello {who}\n".encode())


async def _broken(request: HttpRequest, peer: Peer | None) -> Response:
    raise RuntimeError("bug")


ROUTES = {
    "/hello": Route(_hello),
    "/admin": Route(_hello, admin=True),
    "/broken": Route(_broken),
}


@asynccontextmanager
async def serving(tls: TlsFiles | None) -> AsyncIterator[int]:
    server = HttpServer(ROUTES, "test", tls)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield port
        nursery.cancel_scope.cancel()


async def exchange(port: int, raw: bytes, tls: TlsFiles | None = None) -> bytes:
    """Send ``raw``, return everything until the server closes (bounded: 10 s)."""
    with trio.fail_after(10):
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls is not None:
            ctx = await trio.to_thread.run_sync(client_ssl_context, tls)
            ssl_stream = trio.SSLStream(stream, ctx, server_hostname=None)
            await ssl_stream.do_handshake()
            stream = ssl_stream
        async with stream:
            await stream.send_all(raw)
            if not raw and isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            out = b""
            for _ in range(10_000):
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                out += chunk
            return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


GET = b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n"


async def test_plain_loopback_answers_and_refuses_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(None) as port:
        ok = await exchange(port, GET % b"/hello")
        assert status_of(ok) == 200 and ok.endswith(b"hello loopback\n")
        assert b"Connection: close" in ok and b"Content-Length: 15" in ok
        assert status_of(await exchange(port, GET % b"/nope")) == 404
        assert status_of(await exchange(port, b"GARBAGE\r\n\r\n")) == 400
        assert status_of(await exchange(port, b"\x16\x03\x01\x00\xff" + b"\0" * 300)) == 400
        assert status_of(await exchange(port, b"POST /hello HTTP/1.1\r\nHost: x\r\n\r\n")) == 405
        huge = b"GET / HTTP/1.1\r\nX: " + b"a" * (2 * MAX_HEAD)
        assert status_of(await exchange(port, huge)) == 431
        # A page elsewhere that resolves its own name to 127.0.0.1 (DNS rebinding).
        evil = b"GET /hello HTTP/1.1\r\nHost: evil.example:80\r\n\r\n"
        assert status_of(await exchange(port, evil)) == 421
        ipv4 = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:99\r\n\r\n"
        assert status_of(await exchange(port, ipv4)) == 200
        head = await exchange(port, b"HEAD /hello HTTP/1.1\r\nHost: [::1]:1\r\n\r\n")
        assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")
        # The connection closes without a request: nothing breaks.
        assert await exchange(port, b"") == b""
        with caplog.at_level(logging.ERROR):
            assert status_of(await exchange(port, GET % b"/broken")) == 500
        assert "HTTP handler for /broken failed" in caplog.text
        # Still serving after all of that.
        assert status_of(await exchange(port, GET % b"/hello")) == 200


async def test_plain_http_is_refused_on_other_addresses() -> None:
    server = HttpServer(ROUTES, "test", None)
    with pytest.raises(ValueError, match="loopback"):
        await server.serve("0.0.0.0", 0)


async def test_tls_requires_a_cluster_certificate_and_admin_for_admin_routes(
    tmp_path: Path,
) -> None:
    certs = make_cluster_certs(tmp_path)
    async with serving(certs[Role.METASERVER]) as port:
        # No TLS at all: the handshake fails, nothing is served, the server goes on.
        assert b"hello" not in await exchange(port, GET % b"/hello")
        ok = await exchange(port, GET % b"/hello", certs[Role.CLIENT])
        assert status_of(ok) == 200 and ok.endswith(b"hello client\n")
        # Over TLS the Host header is not restricted (the peer is authenticated).
        remote = b"GET /hello HTTP/1.1\r\nHost: dfs.example:9480\r\n\r\n"
        assert status_of(await exchange(port, remote, certs[Role.CLIENT])) == 200
        assert status_of(await exchange(port, GET % b"/admin", certs[Role.CLIENT])) == 403
        admin = await exchange(port, GET % b"/admin", certs[Role.ADMIN])
        assert status_of(admin) == 200 and admin.endswith(b"hello admin\n")
        # A certificate of another CA is refused at the handshake.
        with pytest.raises(trio.BrokenResourceError):
            await exchange(port, GET % b"/hello", make_foreign_cert(tmp_path))
        assert status_of(await exchange(port, GET % b"/hello", certs[Role.ADMIN])) == 200


async def test_the_metrics_endpoint_serves_the_registry(tmp_path: Path) -> None:
    certs = make_cluster_certs(tmp_path)
    registry = MetricsRegistry()

    async def one() -> list[object]:
        return [gauge("dfs_answer", "The answer", 42)]

    registry.add(one)  # type: ignore[arg-type]
    server, host, port = http_server(
        HttpConfig(listen="127.0.0.1:0"), certs[Role.METASERVER], "t", registry
    )
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, host, port)
        text = await exchange(bound, GET % b"/metrics")
        assert status_of(text) == 200
        assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in text
        assert b"\ndfs_answer 42\n" in text
        again = await exchange(bound, GET % b"/metrics")
        assert b"\ndfs_http_requests_total 1\n" in again
        nursery.cancel_scope.cancel()


def test_the_http_table_of_a_config_file(tmp_path: Path) -> None:
    from dfs.config import load_config, write_config
    from dfs.errors import ConfigError

    certs = make_cluster_certs(tmp_path)
    files = certs[Role.CHUNKSERVER]
    base: dict[str, dict[str, Any]] = {
        "cluster": {"metaservers": ["127.0.0.1:9420"]},
        "tls": {"ca": files.ca_cert, "cert": files.cert, "key": files.key},
        "chunkserver": {"id": "cs1", "listen": "127.0.0.1:0", "data_dir": str(tmp_path / "d")},
    }
    path = tmp_path / "cs.toml"
    write_config(path, base)
    assert load_config(path).http.listen == ""  # off by default
    write_config(path, {**base, "http": {"listen": "127.0.0.1:9480"}})
    assert load_config(path).http == HttpConfig(listen="127.0.0.1:9480")
    write_config(path, {**base, "http": {"listen": "nonsense"}})
    with pytest.raises(ConfigError, match="bad address"):
        load_config(path)
    write_config(path, {**base, "http": {"port": 1}})
    with pytest.raises(ConfigError, match=r"\[http\] unknown key"):
        load_config(path)
