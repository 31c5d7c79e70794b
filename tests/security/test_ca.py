"""The cluster CA, role certificates and TLS contexts."""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dfs.errors import ConfigError, Unauthorized
from dfs.security.ca import cluster_id, init_ca, issue_certificate, read_certificate_role
from dfs.security.identity import Role, TlsFiles
from dfs.security.tls import client_ssl_context, peer_from_ssl, server_ssl_context
from tests.helpers.certs import make_cluster_certs

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_ca(tmp_path: Path) -> None:
    ca_dir = tmp_path / "new" / "ca"
    init_ca(ca_dir, "prod")
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "ca.key") == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.crt", "ca.key"]
    cert = load(ca_dir / "ca.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "prod dfs CA"
    assert len(cluster_id(ca_dir / "ca.crt")) == 16
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 3649 <= days <= 3651
    cert.verify_directly_issued_by(cert)


def test_init_ca_twice_is_an_error(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    before = (tmp_path / "ca" / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        init_ca(tmp_path / "ca")
    assert (tmp_path / "ca" / "ca.key").read_bytes() == before


def test_two_cas_have_different_cluster_ids(tmp_path: Path) -> None:
    init_ca(tmp_path / "a")
    init_ca(tmp_path / "b")
    assert cluster_id(tmp_path / "a" / "ca.crt") != cluster_id(tmp_path / "b" / "ca.crt")


def test_issue_certificate(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    files = issue_certificate(
        tmp_path / "ca", Role.CHUNKSERVER, "cs-7", tmp_path / "out", hosts=["10.0.0.7", "cs7.lan"]
    )
    assert files == TlsFiles(
        tmp_path / "out" / "ca.crt", tmp_path / "out" / "cs-7.crt", tmp_path / "out" / "cs-7.key"
    )
    assert mode(files.key) == 0o600
    assert files.ca_cert.read_bytes() == (tmp_path / "ca" / "ca.crt").read_bytes()
    assert read_certificate_role(files.cert) == ("cs-7", Role.CHUNKSERVER)
    cert = load(files.cert)
    cert.verify_directly_issued_by(load(files.ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
        "dfs:chunkserver"
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert san.get_values_for_type(x509.DNSName) == ["cs7.lan"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("name", ["", "ca", "../evil", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    init_ca(tmp_path / "ca")
    with pytest.raises(ConfigError, match="bad certificate name"):
        issue_certificate(tmp_path / "ca", Role.CLIENT, name, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_ca_and_bad_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no CA in"):
        issue_certificate(tmp_path / "none", Role.CLIENT, "c", tmp_path / "out")
    init_ca(tmp_path / "ca")
    with pytest.raises(ConfigError, match="bad host name"):
        issue_certificate(tmp_path / "ca", Role.CLIENT, "c", tmp_path / "out", hosts=["a b"])


def test_read_certificate_role_of_a_non_dfs_cert(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    with pytest.raises(ConfigError, match="not a dfs role certificate"):
        read_certificate_role(tmp_path / "ca" / "ca.crt")
    with pytest.raises(ConfigError, match="cannot read"):
        read_certificate_role(tmp_path / "nothing.crt")


def test_contexts(tmp_path: Path) -> None:
    certs = make_cluster_certs(tmp_path)
    files = certs[Role.METASERVER]
    server, client = server_ssl_context(files), client_ssl_context(files)
    for ctx in (server, client):
        assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode is ssl.CERT_REQUIRED
        # Only the cluster CA is trusted, never the system store.
        assert [c["subject"] for c in ctx.get_ca_certs()] == [
            c["subject"] for c in server.get_ca_certs()
        ]
        assert len(ctx.get_ca_certs()) == 1
    assert client.check_hostname is False
    assert server_ssl_context(files) is server  # cached
    assert client_ssl_context(files) is client
    # A re-issued certificate is picked up.
    issue_certificate(tmp_path / "ca", Role.METASERVER, "metaserver-1", files.cert.parent)
    os.utime(files.cert, ns=(1, files.cert.stat().st_mtime_ns + 10**9))
    assert server_ssl_context(files) is not server
    with pytest.raises(ConfigError, match="cannot read TLS file"):
        server_ssl_context(TlsFiles(tmp_path / "x", tmp_path / "y", tmp_path / "z"))


class FakeSsl:
    def __init__(self, cert: dict[str, Any] | None) -> None:
        self.cert = cert

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.cert


def subject(cn: str, ou: str) -> dict[str, Any]:
    return {"subject": ((("commonName", cn),), (("organizationalUnitName", ou),))}


def test_peer_from_ssl() -> None:
    peer = peer_from_ssl(FakeSsl(subject("m1", "dfs:metaserver")), "10.0.0.1:9420")
    assert (peer.name, peer.role, peer.address) == ("m1", Role.METASERVER, "10.0.0.1:9420")
    for bad in (subject("m1", "dfs:root"), subject("m1", "metaserver"), subject("", "dfs:admin")):
        with pytest.raises(Unauthorized, match="no dfs role"):
            peer_from_ssl(FakeSsl(bad), "x")
    with pytest.raises(Unauthorized, match="no certificate"):
        peer_from_ssl(FakeSsl(None), "x")
