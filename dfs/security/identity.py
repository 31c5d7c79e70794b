"""Roles and peer identities carried in certificates."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Role(enum.StrEnum):
    """What a certificate's holder may do; written into the certificate's subject.

    ``admin`` may call every method; the others only the methods that name them.
    """

    METASERVER = "metaserver"
    CHUNKSERVER = "chunkserver"
    CLIENT = "client"
    ADMIN = "admin"


#: Subject OU prefix that marks a dfs role (``OU=dfs:chunkserver``).
ROLE_OU_PREFIX = "dfs:"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one process: the cluster CA certificate, its own certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Peer:
    """The authenticated other end of a connection."""

    name: str
    role: Role
    address: str = ""
