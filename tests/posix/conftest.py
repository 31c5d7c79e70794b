"""Fixtures of the POSIX conformance suite.

Every test that takes ``d`` runs twice: on a fresh directory of the local file system (the
reference: what Linux answers) and on a fresh directory inside one dfs mount shared by the whole
session.  A case that fails only in its ``[dfs]`` form is a dfs bug; one that fails in its
``[local]`` form is a bug of the test.

The base directory is world-searchable (not pytest's 0700 ``tmp_path``) so that steps run as an
unprivileged user (``util.as_user``) can reach both directories.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster

_counter = itertools.count()


@pytest.fixture(scope="session")
def posix_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dfs-posix-"))
    os.chmod(base, 0o755)
    (base / "local").mkdir(mode=0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(posix_base: Path) -> Iterator[Cluster]:
    root = posix_base / "dfs"
    root.mkdir(mode=0o755)
    with local_cluster(root) as c:
        os.chmod(c.mnt, 0o755)
        yield c


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _fresh(parent: Path, request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:100]
    path = parent / f"{next(_counter)}-{name}"
    path.mkdir(mode=0o755)
    return path


@pytest.fixture
def mnt_dir(cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    """A fresh directory inside the dfs mount."""
    return _fresh(cluster.mnt, request)


@pytest.fixture
def local_dir(posix_base: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh directory on the local file system (the reference)."""
    return _fresh(posix_base / "local", request)


@pytest.fixture(params=["local", "dfs"])
def d(request: pytest.FixtureRequest) -> Path:
    """A fresh directory: once on the local file system, once inside the dfs mount."""
    if request.param == "dfs":
        path: Path = request.getfixturevalue("mnt_dir")
    else:
        path = request.getfixturevalue("local_dir")
    return path
