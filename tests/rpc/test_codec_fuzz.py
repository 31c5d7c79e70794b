"""Hypothesis: whatever bytes arrive, the codec yields clean events or raises ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfs.errors import ProtocolError
from dfs.rpc.codec import (
    NEED_DATA,
    ConnectionClosed,
    Handshake,
    Notification,
    Request,
    Response,
    RpcConnection,
    Side,
)

pytestmark = pytest.mark.unit

_GOOD_EVENTS = (Handshake, Request, Response, Notification, ConnectionClosed)


def drain(conn: RpcConnection, chunks: list[bytes]) -> None:
    """Feed ``chunks`` then EOF; every event must be clean until a ProtocolError."""
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            for _ in range(100_000):
                ev = conn.next_event()
                if ev is NEED_DATA:
                    break
                assert isinstance(ev, _GOOD_EVENTS)
                if isinstance(ev, ConnectionClosed):
                    return
            else:
                raise AssertionError("event loop did not end")
    except ProtocolError as exc:
        assert exc.message  # every refusal carries a reason


def valid_stream(side: Side) -> bytes:
    """A plausible byte stream as received by ``side``."""
    if side is Side.SERVER:
        peer = RpcConnection(Side.CLIENT)
        parts = [peer.send_handshake("client")]
        parts += [
            peer.send_request(i, "fs.lookup", {"parent": i, "name": b"x" * i}) for i in range(4)
        ]
    else:
        peer = RpcConnection(Side.SERVER)
        parts = [peer.send_handshake("server")]
        parts.append(peer.send_response(1, None, {"a": [1, 2.5, None, "s", b"b"]}))
        parts.append(peer.send_response(2, {"code": "x", "message": "y", "details": {}}, None))
        parts.append(peer.send_notification("inval", {"ino": 3}))
    return b"".join(parts)


sides = st.sampled_from([Side.CLIENT, Side.SERVER])
chunkings = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(side=sides, data=st.binary(max_size=2048), sizes=chunkings)
def test_random_bytes(side: Side, data: bytes, sizes: list[int]) -> None:
    drain(RpcConnection(side), split(data, sizes))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=sides,
    sizes=chunkings,
    mutations=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_valid_frames(
    side: Side, sizes: list[int], mutations: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(valid_stream(side))
    for pos, value in mutations:
        data[pos % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    drain(RpcConnection(side), split(bytes(data), sizes))


@settings(max_examples=100)
@given(side=sides, sizes=chunkings)
def test_unmutated_stream_parses_completely(side: Side, sizes: list[int]) -> None:
    conn = RpcConnection(side)
    got = []
    for chunk in [*split(valid_stream(side), sizes), b""]:
        conn.receive_data(chunk)
        while (ev := conn.next_event()) is not NEED_DATA:
            got.append(ev)
            if isinstance(ev, ConnectionClosed):
                break
    assert isinstance(got[0], Handshake)
    assert isinstance(got[-1], ConnectionClosed)
    assert len(got) == 6 if side is Side.SERVER else len(got) == 5
