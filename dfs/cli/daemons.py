"""Run a daemon's trio service in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dfs.config import Config
from dfs.observability.taskdump import dump_on_signals

log = logging.getLogger(__name__)

Service = Callable[..., Awaitable[Any]]


async def _serve_until_signal(service: Service, cfg: Config) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            # kill -USR1 / -USR2: where every task waits / what holds the memory, in the log.
            await nursery.start(dump_on_signals)
            address = await nursery.start(service, cfg)
            log.info("serving on %s (config %s)", address, cfg.path)
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def run_daemon(service: Service, cfg: Config) -> None:
    """Run ``service(cfg, task_status=...)`` until a termination signal; then tear down."""
    trio.run(_serve_until_signal, service, cfg)
