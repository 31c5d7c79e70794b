"""Params (typed access to request params) and Dispatcher (method table and roles)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from dfs.errors import (
    BadRequest,
    InternalError,
    NotFound,
    Unauthorized,
    UnknownMethod,
)
from dfs.rpc.server import Dispatcher, Params
from dfs.security.identity import Peer, Role

pytestmark = pytest.mark.unit

CLIENT = Peer("client-1", Role.CLIENT, "127.0.0.1:1")
CHUNKSERVER = Peer("cs-1", Role.CHUNKSERVER, "127.0.0.1:2")
ADMIN = Peer("admin-1", Role.ADMIN, "127.0.0.1:3")


def test_params_typed_getters() -> None:
    p = Params(
        {"ino": 5, "name": b"n", "s": "x", "flag": True, "l": [1, 2], "d": {"uid": 0}, "f": 2}
    )
    assert p.int("ino", min=1, max=5) == 5
    assert p.bytes("name", max_len=1) == b"n"
    assert p.str("s") == "x"
    assert p.bool("flag") is True
    assert p.list("l") == [1, 2]
    assert p.int_list("l") == [1, 2]
    assert p.dict("d") == {"uid": 0}
    assert p.sub("d").int("uid") == 0
    assert p.float("f") == 2.0
    assert p.opt_int("missing") is None
    assert p.opt_int("missing", 7) == 7
    assert p.opt_bytes("missing", b"") == b""
    assert p.opt_str("s") == "x"
    assert p.opt_bool("missing") is False
    assert p.opt_list("missing") is None
    assert p.opt_dict("d") == {"uid": 0}
    assert "ino" in p and "missing" not in p


def test_params_nil_counts_as_missing_for_optionals() -> None:
    p = Params({"size": None})
    assert p.opt_int("size", 3) == 3
    assert "size" not in p
    with pytest.raises(BadRequest, match="'size' must not be nil"):
        p.int("size")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.int("missing"), "missing param 'missing'"),
        (lambda p: p.int("flag"), "param 'flag': expected int, got bool"),
        (lambda p: p.int("name"), "param 'name': expected int, got bytes"),
        (lambda p: p.int("ino", min=6), "param 'ino': 5 is below the minimum 6"),
        (lambda p: p.int("ino", max=4), "param 'ino': 5 is above the maximum 4"),
        (lambda p: p.bytes("s"), "param 's': expected bytes, got str"),
        (lambda p: p.bytes("name", max_len=0), "param 'name': 1 bytes exceeds the limit 0"),
        (lambda p: p.str("name"), "param 'name': expected str, got bytes"),
        (lambda p: p.bool("ino"), "param 'ino': expected bool, got int"),
        (lambda p: p.list("d"), "param 'd': expected list, got dict"),
        (lambda p: p.int_list("mixed"), r"param 'mixed'\[1\]: expected int, got str"),
        (lambda p: p.dict("l"), "param 'l': expected map, got list"),
        (lambda p: p.sub("d").int("gid"), "missing param 'd.gid'"),
        (lambda p: p.opt_int("s"), "param 's': expected int, got str"),
    ],
)
def test_params_errors_are_bad_request_naming_the_param(call: Any, message: str) -> None:
    p = Params(
        {
            "ino": 5,
            "name": b"n",
            "s": "x",
            "flag": True,
            "d": {"uid": 0},
            "l": [],
            "mixed": [1, "a"],
        }
    )
    with pytest.raises(BadRequest, match=message):
        call(p)


def test_params_of_non_map() -> None:
    with pytest.raises(BadRequest, match="params must be a map, got list"):
        Params([1])


def make_dispatcher() -> Dispatcher:
    d = Dispatcher()

    @d.method("chunk.only", roles=[Role.CHUNKSERVER])
    async def chunk_only(peer: Peer, params: dict[str, Any]) -> Any:
        return peer.name

    async def echo(peer: Peer, params: dict[str, Any]) -> Any:
        return Params(params).int("x")

    d.register("echo", echo, roles=[Role.CLIENT, Role.CHUNKSERVER])

    @d.method("fail.dfs", roles=[Role.CLIENT])
    async def fail_dfs(peer: Peer, params: dict[str, Any]) -> Any:
        raise NotFound("no such thing", ino=3)

    @d.method("fail.key", roles=[Role.CLIENT])
    async def fail_key(peer: Peer, params: dict[str, Any]) -> Any:
        return params["absent"]

    @d.method("fail.bug", roles=[Role.CLIENT])
    async def fail_bug(peer: Peer, params: dict[str, Any]) -> Any:
        raise ZeroDivisionError("oops")

    return d


async def test_dispatch_roles() -> None:
    d = make_dispatcher()
    assert await d.dispatch(CHUNKSERVER, "chunk.only", {}) == "cs-1"
    assert await d.dispatch(ADMIN, "chunk.only", {}) == "admin-1"  # admin may call everything
    with pytest.raises(Unauthorized, match=r"role 'client' may not call 'chunk\.only'"):
        await d.dispatch(CLIENT, "chunk.only", {})
    assert await d.dispatch(CLIENT, "echo", {"x": 4}) == 4
    assert d.methods()["echo"] == frozenset({Role.CLIENT, Role.CHUNKSERVER})


async def test_dispatch_errors(caplog: pytest.LogCaptureFixture) -> None:
    d = make_dispatcher()
    with pytest.raises(UnknownMethod):
        await d.dispatch(ADMIN, "nope", {})
    with pytest.raises(BadRequest, match="must be a map"):
        await d.dispatch(CLIENT, "echo", [1])
    with pytest.raises(BadRequest, match="missing param 'x'"):
        await d.dispatch(CLIENT, "echo", {})
    with pytest.raises(NotFound) as found:
        await d.dispatch(CLIENT, "fail.dfs", {})
    assert found.value.details == {"ino": 3}
    with pytest.raises(BadRequest, match="KeyError"):
        await d.dispatch(CLIENT, "fail.key", {})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.ERROR), pytest.raises(InternalError, match="ZeroDivisionError"):
        await d.dispatch(CLIENT, "fail.bug", {})
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "fail.bug" in record.getMessage()


def test_register_twice_and_include() -> None:
    d = make_dispatcher()

    async def dup(peer: Peer, params: dict[str, Any]) -> Any:
        return None

    with pytest.raises(ValueError, match="already registered"):
        d.register("echo", dup, roles=[])
    other = Dispatcher()

    @other.method("more", roles=[Role.ADMIN])
    async def more(peer: Peer, params: dict[str, Any]) -> Any:
        return 1

    d.include(other)
    assert "more" in d and "echo" in d
