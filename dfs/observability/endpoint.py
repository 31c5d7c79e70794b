"""A daemon's HTTP listener: ``/metrics`` plus the routes it adds (the metaserver's dashboard).

Started by each daemon when its config has ``[http] listen``; see ``dfs.observability.http``
for the transport rules (plain HTTP on loopback only, HTTPS with client certificates
elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

import trio

from dfs.config import HttpConfig, parse_address
from dfs.observability.http import HttpRequest, HttpServer, Response, Route, is_loopback
from dfs.observability.metrics import CONTENT_TYPE, Family, MetricsRegistry, counter
from dfs.security.identity import Peer, TlsFiles


def http_server(
    cfg: HttpConfig,
    tls: TlsFiles,
    name: str,
    metrics: MetricsRegistry,
    routes: dict[str, Route] | None = None,
) -> tuple[HttpServer, str, int]:
    """The server for ``cfg.listen`` (TLS unless loopback), its host and port."""
    host, port = parse_address(cfg.listen)

    async def scrape(request: HttpRequest, peer: Peer | None) -> Response:
        return Response(HTTPStatus.OK, (await metrics.render()).encode(), CONTENT_TYPE)

    server = HttpServer(
        {"/metrics": Route(scrape), **(routes or {})},
        name,
        None if is_loopback(host) else tls,
    )

    async def own() -> Iterable[Family]:
        return [
            counter("dfs_http_requests_total", "HTTP requests answered", server.requests),
            counter(
                "dfs_http_errors_total", "HTTP requests answered with 4xx or 5xx", server.errors
            ),
        ]

    metrics.add(own)
    return server, host, port


async def run_http(
    cfg: HttpConfig,
    tls: TlsFiles,
    name: str,
    metrics: MetricsRegistry,
    routes: dict[str, Route] | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(bound_port)``."""
    server, host, port = http_server(cfg, tls, name, metrics, routes)
    await server.serve(host, port, task_status=task_status)
