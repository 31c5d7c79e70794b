"""Mutual-TLS contexts for dfs connections and the peer identity they establish.

Both ends of every connection present a certificate issued by the cluster CA; each trusts
only that CA (never the system store) and requires the other's certificate.  Only TLS 1.3 is
offered.  Contexts are cached per ``TlsFiles`` (and the files' modification times, so a
re-issued certificate is picked up) because building one parses PEM files and costs
milliseconds; loading happens on first use, so async callers should build the context in a
worker thread (``trio.to_thread.run_sync(server_ssl_context, files)``).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, Protocol

from dfs.errors import ConfigError, Unauthorized
from dfs.security.ca import role_from_ou
from dfs.security.identity import Peer, TlsFiles

_cache: dict[tuple[bool, TlsFiles, tuple[int, ...]], ssl.SSLContext] = {}
_cache_lock = threading.Lock()


class HasPeerCert(Protocol):
    """``ssl.SSLObject``, ``ssl.SSLSocket`` and ``trio.SSLStream`` all provide this."""

    def getpeercert(self, binary_form: bool = False) -> Any: ...


def _stamp(files: TlsFiles) -> tuple[int, ...]:
    try:
        return tuple(p.stat().st_mtime_ns for p in (files.ca_cert, files.cert, files.key))
    except OSError as exc:
        raise ConfigError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None


def _build(server_side: bool, files: TlsFiles) -> ssl.SSLContext:
    purpose = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if not server_side:
        # Peers are authenticated by the cluster CA and authorised by the role in their
        # certificate, not by host name: addresses in a cluster change (DHCP, containers,
        # NAT, a node answering on several interfaces), the role is what we authorise.
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        # load_verify_locations on a fresh context: only the cluster CA is trusted.
        ctx.load_verify_locations(cafile=str(files.ca_cert))
        ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files ({files.cert}, {files.key}): {exc}") from None
    return ctx


def _cached(server_side: bool, files: TlsFiles) -> ssl.SSLContext:
    key = (server_side, files, _stamp(files))
    with _cache_lock:
        ctx = _cache.get(key)
    if ctx is None:
        ctx = _build(server_side, files)
        with _cache_lock:
            # Drop contexts of older versions of the same files.
            for old in [k for k in _cache if k[0] == server_side and k[1] == files]:
                del _cache[old]
            ctx = _cache.setdefault(key, ctx)
    return ctx


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate from the cluster CA."""
    return _cached(True, files)


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.3 client context that presents our certificate and trusts only the cluster CA.

    ``check_hostname`` is off on purpose: a dfs peer is identified by the CA that signed its
    certificate and the role written in it (checked by ``peer_from_ssl``), not by the address
    we dialled; addresses in a cluster change, the role in the certificate is what we authorise.
    """
    return _cached(False, files)


def _subject_field(cert: dict[str, Any], field: str) -> str | None:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == field:
                return str(value)
    return None


def peer_from_ssl(ssl_object: HasPeerCert, address: str) -> Peer:
    """The authenticated peer of a completed TLS handshake.

    Raises ``Unauthorized`` if the peer presented no certificate or its OU is not a dfs role.
    """
    cert = ssl_object.getpeercert()
    if not cert:
        raise Unauthorized(f"peer {address} presented no certificate")
    name = _subject_field(cert, "commonName")
    ou = _subject_field(cert, "organizationalUnitName")
    role = role_from_ou(ou)
    if not name or role is None:
        raise Unauthorized(f"peer {address} ({name!r}) has no dfs role (OU={ou!r})")
    return Peer(name=name, role=role, address=address)
