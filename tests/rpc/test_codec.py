"""Unit tests of the sans-I/O codec: framing, handshake, message shapes, misuse."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest

from dfs.errors import ProtocolError
from dfs.rpc.codec import (
    MAX_FRAME,
    NEED_DATA,
    ConnectionClosed,
    Handshake,
    LocalProtocolError,
    Notification,
    Request,
    Response,
    RpcConnection,
    Side,
)

pytestmark = pytest.mark.unit


def frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


HELLO = frame({"proto": "dfs-rpc", "version": 1, "name": "peer"})


def pair() -> tuple[RpcConnection, RpcConnection]:
    """A client and a server that have exchanged handshakes."""
    client, server = RpcConnection(Side.CLIENT), RpcConnection(Side.SERVER)
    server.receive_data(client.send_handshake("c1"))
    client.receive_data(server.send_handshake("s1"))
    assert server.next_event() == Handshake("c1", 1)
    assert client.next_event() == Handshake("s1", 1)
    assert server.peer_name == "c1"
    return client, server


def events(conn: RpcConnection) -> list[Any]:
    out: list[Any] = []
    for _ in range(10_000):
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if isinstance(ev, ConnectionClosed):
            return out
    raise AssertionError("too many events")


def test_round_trip_all_message_kinds() -> None:
    client, server = pair()
    server.receive_data(client.send_request(7, "fs.lookup", {"parent": 1, "name": b"a\x00b"}))
    assert events(server) == [Request(7, "fs.lookup", {"parent": 1, "name": b"a\x00b"})]
    client.receive_data(server.send_response(7, None, {"ino": 5, "s": "x", "l": [1, 2]}))
    client.receive_data(
        server.send_response(8, {"code": "not_found", "message": "m", "details": {}}, 1)
    )
    client.receive_data(server.send_notification("inval", {3: b""}))
    assert events(client) == [
        Response(7, None, {"ino": 5, "s": "x", "l": [1, 2]}),
        # The result is dropped when an error is sent.
        Response(8, {"code": "not_found", "message": "m", "details": {}}, None),
        Notification("inval", {3: b""}),
    ]


def test_byte_by_byte_feeding_yields_same_events() -> None:
    client, server = pair()
    data = b"".join(client.send_request(i, "m", {"d": bytes(range(i))}) for i in range(20))
    got = []
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        got.extend(events(server))
    assert got == [Request(i, "m", {"d": bytes(range(i))}) for i in range(20)]
    assert server.buffered == 0


def test_large_payload_round_trip_and_bin_types() -> None:
    client, server = pair()
    blob = bytes(range(256)) * 4096 * 16  # 16 MiB: the largest chunk write
    wire = client.send_request(1, "chunk.write", {"data": blob})
    for i in range(0, len(wire), 1 << 20):
        server.receive_data(wire[i : i + (1 << 20)])
    (req,) = events(server)
    assert isinstance(req, Request)
    assert type(req.params["data"]) is bytes and req.params["data"] == blob


def test_frame_at_and_above_max() -> None:
    _, server = pair()
    server.receive_data(struct.pack(">I", MAX_FRAME))
    assert server.next_event() is NEED_DATA  # allowed, just incomplete
    _, server = pair()
    server.receive_data(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match=f"frame too large: {MAX_FRAME + 1} bytes"):
        server.next_event()
    # The error is sticky: the connection is dead.
    with pytest.raises(ProtocolError, match="frame too large"):
        server.next_event()


def test_sending_a_too_large_frame_is_local_misuse() -> None:
    client, _ = pair()
    with pytest.raises(LocalProtocolError, match="frame too large"):
        client.send_request(1, "m", {"d": bytes(MAX_FRAME)})
    # The packer is reset: the next message is intact.
    client.send_request(2, "m", {})


def test_empty_frame_is_refused() -> None:
    _, server = pair()
    server.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="empty frame"):
        server.next_event()


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_truncated_frame_at_eof(cut: int) -> None:
    client, server = pair()
    wire = client.send_request(1, "method", {"x": b"0123456789"})
    server.receive_data(wire[:cut])
    server.receive_data(b"")
    with pytest.raises(ProtocolError, match="truncated frame"):
        server.next_event()


def test_clean_eof_is_connection_closed() -> None:
    client, server = pair()
    server.receive_data(client.send_request(1, "m", {}))
    server.receive_data(b"")
    assert events(server) == [Request(1, "m", {}), ConnectionClosed()]
    assert server.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


def test_version_mismatch() -> None:
    server = RpcConnection(Side.SERVER)
    server.receive_data(frame({"proto": "dfs-rpc", "version": 2, "name": "x"}))
    with pytest.raises(ProtocolError, match="version mismatch: peer speaks 2, we speak 1"):
        server.next_event()


@pytest.mark.parametrize(
    "obj",
    [
        [0, 1, "m", {}],  # a request before the handshake
        {"proto": "http", "version": 1, "name": "x"},
        {"proto": "dfs-rpc", "version": True, "name": "x"},
        {"proto": "dfs-rpc", "version": 1, "name": ""},
        {"proto": "dfs-rpc", "version": 1},
    ],
)
def test_bad_handshakes(obj: Any) -> None:
    server = RpcConnection(Side.SERVER)
    server.receive_data(frame(obj))
    with pytest.raises(ProtocolError):
        server.next_event()


def test_bad_msgpack() -> None:
    _, server = pair()
    server.receive_data(struct.pack(">I", 1) + b"\xc1")  # 0xc1 is never used in msgpack
    with pytest.raises(ProtocolError, match="bad msgpack"):
        server.next_event()
    _, server = pair()
    body = msgpack.packb([0, 1, "m", {}]) + b"\x00"  # trailing garbage inside the frame
    server.receive_data(struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolError, match="bad msgpack"):
        server.next_event()


@pytest.mark.parametrize(
    ("side", "obj"),
    [
        (Side.SERVER, [1, 1, None, 2]),  # a response sent to a server
        (Side.SERVER, [0, -1, "m", {}]),
        (Side.SERVER, [0, 1, b"m", {}]),
        (Side.SERVER, [0, 1, "m"]),
        (Side.SERVER, [True, 1, "m", {}]),
        (Side.SERVER, {"a": 1}),
        (Side.SERVER, 5),
        (Side.SERVER, []),
        (Side.CLIENT, [0, 1, "m", {}]),  # a request sent to a client
        (Side.CLIENT, [1, 1, "oops", None]),
        (Side.CLIENT, [1, "1", None, None]),
        (Side.CLIENT, [2, 5, {}]),
        (Side.CLIENT, [3, 1, None, None]),
    ],
)
def test_wrong_message_shapes(side: Side, obj: Any) -> None:
    conn = RpcConnection(side)
    conn.send_handshake("me")
    conn.receive_data(HELLO + frame(obj))
    assert isinstance(conn.next_event(), Handshake)
    with pytest.raises(ProtocolError, match="not a request/response"):
        conn.next_event()


def test_non_map_params_are_passed_to_the_dispatcher() -> None:
    # The dispatcher answers BadRequest instead of the codec closing the connection.
    client, server = pair()
    server.receive_data(client.send_request(3, "m", [1, 2]))
    assert events(server) == [Request(3, "m", [1, 2])]


def test_local_misuse() -> None:
    client = RpcConnection(Side.CLIENT)
    with pytest.raises(LocalProtocolError, match="handshake must come first"):
        client.send_request(1, "m", {})
    client.send_handshake("c")
    with pytest.raises(LocalProtocolError, match="already sent"):
        client.send_handshake("c")
    with pytest.raises(LocalProtocolError, match="only a server"):
        client.send_response(1, None, None)
    with pytest.raises(LocalProtocolError, match="bad msgid"):
        client.send_request(-1, "m", {})
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        client.send_request(1, "m", {"x": object()})
    server = RpcConnection(Side.SERVER)
    server.send_handshake("s")
    with pytest.raises(LocalProtocolError, match="only a client"):
        server.send_request(1, "m", {})
    # ProtocolError (peer's fault) and LocalProtocolError (ours) are unrelated types.
    assert not issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(ProtocolError, LocalProtocolError)
