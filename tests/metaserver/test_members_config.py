"""``[metaserver] members``: parsing and validation of the Raft group in the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfs.config import load_config, write_config
from dfs.errors import ConfigError
from dfs.security.identity import Role
from tests.helpers.certs import make_cluster_certs


def _write(tmp_path: Path, meta: dict[str, object]) -> Path:
    tls = make_cluster_certs(tmp_path)[Role.METASERVER]
    path = tmp_path / "m.toml"
    write_config(
        path,
        {
            "metaserver": {"id": "m1", "listen": "127.0.0.1:9420", "data_dir": "d", **meta},
            "cluster": {"metaservers": ["127.0.0.1:9420"]},
            "tls": {"ca": str(tls.ca_cert), "cert": str(tls.cert), "key": str(tls.key)},
        },
    )
    return path


def test_members_default_to_this_node_alone(tmp_path: Path) -> None:
    mc = load_config(_write(tmp_path, {})).metaserver
    assert mc is not None
    assert mc.member_pairs() == [("m1", "127.0.0.1:9420")]


def test_members_are_parsed(tmp_path: Path) -> None:
    members = ["m1=127.0.0.1:9420", "m2=127.0.0.1:9421", "m3=[::1]:9422"]
    mc = load_config(_write(tmp_path, {"members": members})).metaserver
    assert mc is not None
    assert mc.member_pairs() == [
        ("m1", "127.0.0.1:9420"),
        ("m2", "127.0.0.1:9421"),
        ("m3", "[::1]:9422"),
    ]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["m2=127.0.0.1:9421", "m3=127.0.0.1:9422"], "must include this node's id"),
        (["m1=127.0.0.1:9420", "m1=127.0.0.1:9421"], "duplicate ids"),
        (["m1=127.0.0.1:9420", "m2=127.0.0.1"], "bad address"),
        (["m1=127.0.0.1:9420", "127.0.0.1:9421"], "expected ID=HOST:PORT"),
        (["m1=127.0.0.1:9420", "=127.0.0.1:9421"], "expected ID=HOST:PORT"),
        ("m1=127.0.0.1:9420", "must be a list"),
        ([1, 2], "must be a list"),
    ],
)
def test_bad_members_are_refused(tmp_path: Path, members: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, {"members": members}))
