"""The cluster certificate authority and role certificates.

A dfs cluster trusts exactly one CA, created once by ``init_ca``.  Every process holds a
certificate issued by it whose subject names the process (CN) and its role
(``OU=dfs:<role>``); mutual TLS with that CA authenticates both ends of every connection and the
role authorises the methods a peer may call (docs/protocol.md, "Authorisation").

These functions are synchronous (they are called by the CLI and test setup, not on a data path)
and write every private key with mode 0600, via a temporary file renamed into place so a crash
never leaves a half-written key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dfs.errors import ConfigError
from dfs.security.identity import ROLE_OU_PREFIX, Role, TlsFiles

CA_CERT_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"
CA_VALIDITY_DAYS = 3650
#: Certificates are backdated a little so peers with slightly late clocks accept them.
_BACKDATE = dt.timedelta(minutes=5)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CLUSTER_PREFIX = "dfs cluster "


def _now() -> dt.datetime:
    # Wall-clock time is right here: certificate validity is a calendar notion.
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` from the first byte on."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(ca_dir: Path, cluster_name: str = "dfs") -> None:
    """Create ``ca_dir/ca.crt`` and ``ca_dir/ca.key`` for a new cluster.

    The subject is ``CN=<cluster_name> dfs CA, O=dfs cluster <random id>``; the id tells
    clusters apart (``cluster_id``).  Raises ``ConfigError`` if a CA already exists there: a new
    CA would silently lock every existing node out.
    """
    ca_dir = Path(ca_dir)
    cert_path, key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    if cert_path.exists() or key_path.exists():
        raise ConfigError(f"a CA already exists in {ca_dir}; refusing to overwrite it")
    if not cluster_name or len(cluster_name) > 48:
        raise ConfigError(f"bad cluster name {cluster_name!r}: 1 to 48 characters")
    try:
        ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create CA directory {ca_dir}: {exc.strerror}") from None

    key = ec.generate_private_key(ec.SECP256R1())
    cluster_id = secrets.token_hex(8)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name} dfs CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _CLUSTER_PREFIX + cluster_id),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        # Key first: a directory holding only a key is not mistaken for a usable CA.
        _write_private(key_path, _key_pem(key), 0o600)
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the CA into {ca_dir}: {exc.strerror}") from None


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"no CA in {ca_dir} (run the CA init command first)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CA in {ca_dir}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path} is not an EC private key")
    return cert, key


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})", host):
        raise ConfigError(f"bad host name {host!r} for a certificate")
    return x509.DNSName(host)


def issue_certificate(
    ca_dir: Path,
    role: Role,
    name: str,
    out_dir: Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 825,
) -> TlsFiles:
    """Issue a certificate for process ``name`` with ``role``; return the files written.

    Writes ``out_dir/<name>.crt``, ``out_dir/<name>.key`` (0600) and a copy of the CA
    certificate as ``out_dir/ca.crt``.  An existing certificate of the same name is replaced.
    The validity ends no later than the CA's own.  Raises ``ConfigError`` when the CA is
    missing or ``name`` is not a safe file name.
    """
    role = Role(role)
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)
    if not _SAFE_NAME.fullmatch(name) or name == "ca":
        raise ConfigError(
            f"bad certificate name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(not starting with a punctuation mark, and not 'ca')"
        )
    if days <= 0:
        raise ConfigError(f"bad validity {days} days: must be > 0")
    ca_cert, ca_key = _load_ca(ca_dir)
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out_dir}: {exc.strerror}") from None

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU_PREFIX + role.value),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san_entry(h) for h in hosts]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())

    files = TlsFiles(
        ca_cert=out_dir / CA_CERT_NAME, cert=out_dir / f"{name}.crt", key=out_dir / f"{name}.key"
    )
    try:
        _write_private(files.key, _key_pem(key), 0o600)
        _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        if (ca_dir / CA_CERT_NAME).resolve() != files.ca_cert.resolve():
            shutil.copyfile(ca_dir / CA_CERT_NAME, files.ca_cert)
    except OSError as exc:
        raise ConfigError(
            f"cannot write certificate files into {out_dir}: {exc.strerror}"
        ) from None
    return files


def _subject_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def role_from_ou(ou: str | None) -> Role | None:
    """The dfs role named by a subject OU (``dfs:client``), or ``None``."""
    if ou is None or not ou.startswith(ROLE_OU_PREFIX):
        return None
    try:
        return Role(ou.removeprefix(ROLE_OU_PREFIX))
    except ValueError:
        return None


def read_certificate_role(path: Path) -> tuple[str, Role]:
    """Return ``(common name, role)`` of the PEM certificate at ``path`` (for status/debug).

    Raises ``ConfigError`` if the file cannot be read or carries no dfs role.
    """
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc}") from None
    name = _subject_attr(cert.subject, NameOID.COMMON_NAME)
    role = role_from_ou(_subject_attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME))
    if name is None or role is None:
        raise ConfigError(f"{path} is not a dfs role certificate (no CN or no OU=dfs:<role>)")
    return name, role


def cluster_id(ca_cert: Path) -> str:
    """The random cluster id stored in the CA certificate's subject (``O=dfs cluster <id>``)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CA certificate {ca_cert}: {exc}") from None
    org = _subject_attr(cert.subject, NameOID.ORGANIZATION_NAME)
    if org is None or not org.startswith(_CLUSTER_PREFIX):
        raise ConfigError(f"{ca_cert} is not a dfs CA certificate")
    return org.removeprefix(_CLUSTER_PREFIX)
