from __future__ import annotations

from pathlib import Path

import pytest

from dfs.security.identity import Role, TlsFiles
from tests.helpers.certs import make_cluster_certs, make_foreign_cert


@pytest.fixture
def certs(tmp_path: Path) -> dict[Role, TlsFiles]:
    return make_cluster_certs(tmp_path)


@pytest.fixture
def foreign_cert(tmp_path: Path) -> TlsFiles:
    return make_foreign_cert(tmp_path)
