"""Certificates for tests: a cluster CA with one certificate per role, and a foreign CA.

Plain functions so any test folder can wrap them in fixtures::

    from tests.helpers.certs import make_cluster_certs
    certs = make_cluster_certs(tmp_path)          # {Role.CLIENT: TlsFiles(...), ...}
"""

from __future__ import annotations

from pathlib import Path

from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Role, TlsFiles


def make_cluster_certs(tmp_path: Path, cluster_name: str = "test") -> dict[Role, TlsFiles]:
    """A CA in ``tmp_path/ca`` and one certificate per role (named ``<role>-1``)."""
    ca_dir = tmp_path / "ca"
    if not (ca_dir / "ca.crt").exists():
        init_ca(ca_dir, cluster_name)
    return {
        role: issue_certificate(ca_dir, role, f"{role.value}-1", tmp_path / "certs" / role.value)
        for role in Role
    }


def make_foreign_cert(tmp_path: Path, role: Role = Role.CLIENT) -> TlsFiles:
    """A certificate of ``role`` signed by an unrelated CA (must be refused by the cluster)."""
    ca_dir = tmp_path / "foreign-ca"
    if not (ca_dir / "ca.crt").exists():
        init_ca(ca_dir, "foreign")
    return issue_certificate(ca_dir, role, f"foreign-{role.value}", tmp_path / "foreign-certs")
