"""Configuration: frozen dataclasses loaded from TOML, validated before anything starts.

One file per process.  Example (``metaserver.toml``)::

    [metaserver]
    id = "m1"
    listen = "127.0.0.1:9420"
    data_dir = "/var/lib/dfs/meta"
    # The Raft group (optional; default: this node alone at its listen address).  Every
    # member lists the same group; a member's certificate is named after its id.
    members = ["m1=127.0.0.1:9420", "m2=127.0.0.1:9421", "m3=127.0.0.1:9422"]

    [cluster]
    metaservers = ["127.0.0.1:9420"]

    [tls]
    ca = "/etc/dfs/ca.crt"
    cert = "/etc/dfs/m1.crt"
    key = "/etc/dfs/m1.key"

A chunkserver file has a ``[chunkserver]`` table, a client or admin file a ``[client]`` table
(which may be empty); every file has ``[cluster]`` and ``[tls]``.  Any daemon (metaserver,
chunkserver, mount) may have an ``[http]`` table for its metrics (and, on a metaserver, the
dashboard)::

    [http]
    listen = "127.0.0.1:9480"   # loopback: plain HTTP; any other address: HTTPS + client cert

Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from dfs.errors import ConfigError
from dfs.security.identity import TlsFiles

DEFAULT_META_PORT = 9420
DEFAULT_CHUNK_PORT = 9430


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed); raise ConfigError on anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ClusterConfig:
    metaservers: tuple[str, ...]

    def validate(self) -> None:
        if not self.metaservers:
            raise ConfigError("[cluster] metaservers must list at least one address")
        for addr in self.metaservers:
            parse_address(addr)


@dataclass(frozen=True)
class MetaserverConfig:
    id: str
    listen: str
    data_dir: Path
    #: Take a snapshot and compact the log after this many applied entries.
    snapshot_every: int = 100_000
    #: Default replication goal of the root directory (new files inherit their parent's goal).
    default_goal: int = 2
    #: Seconds without a heartbeat before a chunkserver is considered gone.
    chunkserver_timeout: float = 10.0
    #: Raft group members as ``"id=host:port"``; empty means this node alone at ``listen``.
    #: Only a NEW data directory may join a multi-member group.
    members: tuple[str, ...] = ()
    #: Seconds per Raft tick (a follower campaigns after 10 to 20 ticks without a leader).
    raft_tick: float = 0.05
    #: Seconds a client session lives without a request or keepalive before the leader
    #: expires it (clients renew at a third of it).  A command retried after its session
    #: expired can no longer be deduplicated and fails with EIO.
    session_timeout: float = 8.0
    #: A new, empty member for an existing group: it starts with no vote and waits until the
    #: leader adds it (``dfs admin meta add ADDR``) and sends it a snapshot.  ``members``
    #: then lists the group's members with addresses, this node included.
    join: bool = False
    #: How the leader confirms it still leads before a read: "lease" (no messages while a
    #: quorum answered a recent heartbeat; assumes tick rates within 12.5 %, see
    #: dfs.raft.core) or "read_index" (a heartbeat round per batch of reads).  The same on
    #: every member.
    raft_read_mode: str = "lease"
    #: Seconds a chunkserver may be gone (no heartbeat) before its replicas are copied
    #: elsewhere; a short restart or reboot inside it costs no copying.  Corrupt replicas
    #: are repaired at once.
    replication_grace: float = 120.0
    #: MiB per second of replica copying in the whole cluster (re-replication and repair).
    replication_rate: float = 100.0
    #: Replica copies the leader runs at the same time.
    replication_jobs: int = 4
    #: Seconds a chunk that no file references must have been seen on a chunkserver before it
    #: is deleted there (chunks freed by unlink or truncate are deleted at once).
    orphan_delay: float = 3600.0
    #: Seconds a write lease on a chunk lasts after its last renewal; while it lasts, writers
    #: reuse the chunk's version, and the chunk is not copied.
    write_lease: float = 30.0

    def validate(self) -> None:
        if not self.id:
            raise ConfigError("[metaserver] id must not be empty")
        parse_address(self.listen)
        pairs = self.member_pairs()
        ids = [i for i, _ in pairs]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"[metaserver] members: duplicate ids in {ids}")
        if self.id not in ids:
            raise ConfigError(f"[metaserver] members must include this node's id {self.id!r}")
        if not 0 < self.raft_tick <= 5:
            raise ConfigError("[metaserver] raft_tick must be > 0 and <= 5")
        if self.snapshot_every < 1:
            raise ConfigError("[metaserver] snapshot_every must be >= 1")
        if self.raft_read_mode not in ("lease", "read_index"):
            raise ConfigError("[metaserver] raft_read_mode must be 'lease' or 'read_index'")
        if not 1 <= self.session_timeout <= 86400:
            raise ConfigError("[metaserver] session_timeout must be between 1 and 86400 s")
        if not 1 <= self.default_goal <= 16:
            raise ConfigError("[metaserver] default_goal must be between 1 and 16")
        if self.chunkserver_timeout <= 0:
            raise ConfigError("[metaserver] chunkserver_timeout must be > 0")
        for name in ("replication_grace", "replication_rate", "orphan_delay", "write_lease"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"[metaserver] {name} must be a number >= 0")
        if self.replication_rate <= 0 or self.write_lease < 1:
            raise ConfigError("[metaserver] replication_rate must be > 0 and write_lease >= 1")
        if not 1 <= self.replication_jobs <= 64:
            raise ConfigError("[metaserver] replication_jobs must be between 1 and 64")

    def member_pairs(self) -> list[tuple[str, str]]:
        """``[(id, address), ...]`` of the Raft group; ConfigError on a malformed entry."""
        if not self.members:
            return [(self.id, self.listen)]
        pairs = []
        for item in self.members:
            node_id, sep, address = str(item).partition("=")
            if not sep or not node_id.strip():
                raise ConfigError(
                    f"[metaserver] members: bad entry {item!r}: expected ID=HOST:PORT"
                )
            parse_address(address.strip())
            pairs.append((node_id.strip(), address.strip()))
        return pairs


@dataclass(frozen=True)
class ChunkserverConfig:
    id: str
    listen: str
    data_dir: Path
    zone: str = "default"
    #: Bytes this chunkserver may use; 0 means the free space of its file system.
    capacity_bytes: int = 0
    heartbeat_interval: float = 1.0
    #: Address other processes use to reach this one (defaults to ``listen``).
    advertise: str = ""
    #: MiB per second the background scrubber re-reads and verifies chunks at; 0 disables
    #: scrubbing.  16 MiB/s is a small share of one disk, and still covers 1 TiB in ~18 h.
    scrub_rate: float = 16.0
    #: Seconds the scrubber pauses after each full pass over the chunks.  A large store is
    #: scrubbed continuously at ``scrub_rate`` anyway; this only stops a small one from being
    #: re-read over and over.
    scrub_interval: float = 3600.0

    def validate(self) -> None:
        if not self.id:
            raise ConfigError("[chunkserver] id must not be empty")
        for name in ("scrub_rate", "scrub_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[chunkserver] {name} must be a number")
        if not 0 <= self.scrub_rate <= 100_000:
            raise ConfigError("[chunkserver] scrub_rate must be between 0 (off) and 100000 MiB/s")
        if not 0 < self.scrub_interval <= 30 * 86400:
            raise ConfigError("[chunkserver] scrub_interval must be > 0 and <= 30 days")
        parse_address(self.listen)
        if self.advertise:
            parse_address(self.advertise)
        if self.capacity_bytes < 0:
            raise ConfigError("[chunkserver] capacity_bytes must be >= 0")
        if self.heartbeat_interval <= 0:
            raise ConfigError("[chunkserver] heartbeat_interval must be > 0")

    @property
    def public_address(self) -> str:
        return self.advertise or self.listen


@dataclass(frozen=True)
class ClientConfig:
    #: Seconds an operation may wait for the cluster before it fails with EIO.
    op_timeout: float = 60.0
    #: Kernel attribute / entry cache timeouts in seconds.
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    #: Bytes of dirty data a file handle buffers before it writes to the chunkservers.
    write_buffer: int = 8 * 1024 * 1024
    allow_other: bool = True
    #: fdatasync every replica on each close(2), not only on fsync(2).  Off by default: a
    #: close returns once every replica holds the data (it survives the loss of goal - 1
    #: chunkservers), as MooseFS and HDFS do; fsync(2) always reaches the disks.
    fsync_on_close: bool = False
    #: POSIX ACLs (``setfacl``/``getfacl``), enforced by the kernel, and default ACLs that
    #: new files inherit; off: the kernel checks the mode bits only, applying the umask.
    posix_acl: bool = True

    def validate(self) -> None:
        if self.op_timeout <= 0:
            raise ConfigError("[client] op_timeout must be > 0")
        if self.attr_timeout < 0 or self.entry_timeout < 0:
            raise ConfigError("[client] cache timeouts must be >= 0")
        if not 64 * 1024 <= self.write_buffer <= 256 * 1024 * 1024:
            raise ConfigError("[client] write_buffer must be between 64 KiB and 256 MiB")


@dataclass(frozen=True)
class HttpConfig:
    """The optional HTTP listener of a daemon (``dfs.observability``): ``/metrics`` on every
    daemon, the dashboard on metaservers.  Off when ``listen`` is empty.  On a loopback
    address it speaks plain HTTP; on any other it speaks HTTPS with the daemon's certificate
    and requires a client certificate of the cluster CA (nothing listens in plaintext except
    on loopback)."""

    listen: str = ""

    def validate(self) -> None:
        if self.listen:
            parse_address(self.listen)


@dataclass(frozen=True)
class Config:
    """Everything one process reads from its config file."""

    path: Path | None
    cluster: ClusterConfig
    tls: TlsFiles
    metaserver: MetaserverConfig | None = None
    chunkserver: ChunkserverConfig | None = None
    client: ClientConfig = field(default_factory=ClientConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def validate(self) -> None:
        self.cluster.validate()
        for part in (self.metaserver, self.chunkserver, self.client, self.http):
            if part is not None:
                part.validate()
        for p in (self.tls.ca_cert, self.tls.cert, self.tls.key):
            if not p.is_file():
                raise ConfigError(f"[tls] file not found: {p}")


def _table(raw: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _build(cls: type[Any], table: dict[str, Any], name: str, base: Path) -> Any:
    known = set(cls.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[{name}] unknown key(s): {', '.join(sorted(unknown))}")
    kwargs = dict(table)
    if "members" in kwargs:
        members = kwargs["members"]
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f'[{name}] members must be a list of "ID=HOST:PORT" strings')
        kwargs["members"] = tuple(members)
    if "data_dir" in kwargs:
        kwargs["data_dir"] = (base / str(kwargs["data_dir"])).resolve()
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{name}] {exc}") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; every problem is a ConfigError with one clear line."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: {exc.strerror}") from None
    base = p.resolve().parent
    cluster = _table(raw, "cluster")
    tls = _table(raw, "tls")
    if cluster is None or tls is None:
        raise ConfigError(f"{p}: needs [cluster] and [tls] tables")
    addrs = cluster.get("metaservers")
    if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise ConfigError(f"{p}: [cluster] metaservers must be a list of HOST:PORT strings")
    try:
        tls_files = TlsFiles(
            ca_cert=(base / str(tls["ca"])).resolve(),
            cert=(base / str(tls["cert"])).resolve(),
            key=(base / str(tls["key"])).resolve(),
        )
    except KeyError as exc:
        raise ConfigError(f"{p}: [tls] needs {exc.args[0]!r}") from None
    meta = _table(raw, "metaserver")
    chunk = _table(raw, "chunkserver")
    client = _table(raw, "client")
    http = _table(raw, "http")
    cfg = Config(
        path=p,
        cluster=ClusterConfig(metaservers=tuple(addrs)),
        tls=tls_files,
        metaserver=_build(MetaserverConfig, meta, "metaserver", base) if meta is not None else None,
        chunkserver=(
            _build(ChunkserverConfig, chunk, "chunkserver", base) if chunk is not None else None
        ),
        client=_build(ClientConfig, client, "client", base)
        if client is not None
        else ClientConfig(),
        http=_build(HttpConfig, http, "http", base) if http is not None else HttpConfig(),
    )
    cfg.validate()
    return cfg


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> None:
    """Write a config file (used by ``dfs local up``); paths are written as given."""

    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    data = {name: {k: plain(v) for k, v in t.items()} for name, t in tables.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tomli_w.dumps(data))
    os.replace(tmp, path)
