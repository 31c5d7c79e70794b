"""Method table of an RPC server: names, handlers and the roles allowed to call them.

A service builds one ``Dispatcher`` and registers its handlers::

    dispatcher = Dispatcher()

    @dispatcher.method("fs.getattr", roles=[Role.CLIENT])
    async def getattr_(peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        return await meta.getattr(InodeId(p.int("ino")))

or ``dispatcher.register("fs.getattr", self.getattr_, roles=[Role.CLIENT])`` for bound methods.

Contract of ``Dispatcher.dispatch`` (what the peer sees on the wire):

* a method that is not registered -> ``UnknownMethod``;
* a caller whose role is not in the method's roles -> ``Unauthorized`` (``admin`` may call
  every method);
* params that are not a map -> ``BadRequest``;
* a handler raising a ``DfsError`` -> that error;
* ``KeyError``/``TypeError``/``ValueError`` escaping a handler -> ``BadRequest`` (a handler that
  indexes its params directly gets a sensible error instead of an internal one; prefer
  ``Params``, which raises ``BadRequest`` with the parameter's name);
* any other exception -> logged with its traceback, ``InternalError``.

Handlers must not swallow ``trio.Cancelled``; cancellation propagates unchanged.

Every dispatched request is counted in ``Dispatcher.stats`` (``dfs.observability.metrics.
OpStats``): by method and outcome (``ok`` or the error code), with its latency on trio's clock.
A request cancelled mid-way (its connection went) is not counted.  Unregistered method names
are counted as ``(unknown)``, so a peer cannot grow the table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from dfs.errors import BadRequest, DfsError, InternalError, Unauthorized, UnknownMethod
from dfs.observability.metrics import OpStats
from dfs.security.identity import Peer, Role

log = logging.getLogger(__name__)

#: An RPC handler: the authenticated caller and the request's params map -> the result
#: (anything msgpack can encode).
Handler = Callable[[Peer, dict[str, Any]], Awaitable[Any]]

H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class Method:
    """One registered method."""

    name: str
    handler: Handler
    roles: frozenset[Role]

    def allows(self, role: Role) -> bool:
        return role is Role.ADMIN or role in self.roles


class Dispatcher:
    """Maps method names to handlers and enforces the role of the caller."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        #: Requests by method and outcome, and their latency (for ``/metrics``).
        self.stats = OpStats()

    def register(self, name: str, handler: Handler, roles: Collection[Role]) -> None:
        """Add ``name``; registering a name twice is a programming error (``ValueError``)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"bad method name {name!r}")
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        role_set = frozenset(Role(r) for r in roles)
        self._methods[name] = Method(name, handler, role_set)

    def method(self, name: str, *, roles: Collection[Role]) -> Callable[[H], H]:
        """Decorator form of ``register``; returns the handler unchanged."""

        def decorate(handler: H) -> H:
            self.register(name, handler, roles)
            return handler

        return decorate

    def include(self, other: Dispatcher) -> None:
        """Add every method of ``other`` (a daemon serving several services on one port)."""
        for m in other._methods.values():
            self.register(m.name, m.handler, m.roles)

    def methods(self) -> dict[str, frozenset[Role]]:
        """Registered method names and their roles (for status pages and tests)."""
        return {name: m.roles for name, m in self._methods.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    async def dispatch(self, peer: Peer, method: str, params: Any) -> Any:
        """Run one request and return its result, or raise the ``DfsError`` to send back."""
        start = trio.current_time()
        name = method if method in self._methods else "(unknown)"
        try:
            result = await self._dispatch(peer, method, params)
        except DfsError as exc:
            self.stats.observe(name, exc.code, trio.current_time() - start)
            raise
        self.stats.observe(name, "ok", trio.current_time() - start)
        return result

    async def _dispatch(self, peer: Peer, method: str, params: Any) -> Any:
        entry = self._methods.get(method)
        if entry is None:
            raise UnknownMethod(f"unknown method {method!r}")
        if not entry.allows(peer.role):
            raise Unauthorized(f"role {peer.role.value!r} may not call {method!r}")
        if not isinstance(params, dict):
            raise BadRequest(f"params of {method!r} must be a map")
        try:
            return await entry.handler(peer, params)
        except DfsError:
            raise
        except trio.Cancelled:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            # Logged at DEBUG only: a malformed request is the peer's fault, not ours.
            log.debug("bad params for %s from %s", method, peer.name, exc_info=True)
            raise BadRequest(f"bad params for {method!r}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            log.exception("internal error in %s called by %s", method, peer.name)
            raise InternalError(f"internal error in {method!r}: {type(exc).__name__}") from exc
