"""The ``dfs`` command.

Every user mistake ends as one line on stderr and a non-zero exit code (2 for usage and
configuration errors, 1 for a failed operation); a traceback means a bug in dfs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dfs import __version__
from dfs.errors import ConfigError, DfsError
from dfs.fuse.mount import MountError

log = logging.getLogger("dfs")

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An operation failed in a way the user should read about (exit code 1)."""


def _config_path(args: argparse.Namespace) -> Path:
    path = getattr(args, "config", None) or os.environ.get("DFS_CONFIG")
    if not path:
        raise ConfigError("no config file: pass --config FILE or set DFS_CONFIG")
    return Path(path)


def setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r}")
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------- command handlers
def cmd_ca_init(args: argparse.Namespace) -> int:
    from dfs.security.ca import init_ca

    init_ca(Path(args.dir), cluster_name=args.name)
    print(f"cluster CA created in {args.dir}")
    return 0


def cmd_ca_issue(args: argparse.Namespace) -> int:
    from dfs.security.ca import issue_certificate
    from dfs.security.identity import Role

    ca_dir = args.ca or os.environ.get("DFS_CA")
    if not ca_dir:
        raise ConfigError("no CA directory: pass --ca DIR or set DFS_CA")
    out = Path(args.out) if args.out else Path(ca_dir)
    hosts = tuple(args.host) if args.host else ("127.0.0.1", "localhost")
    files = issue_certificate(Path(ca_dir), Role(args.role), args.name, out, hosts=hosts)
    print(f"{args.role} certificate for {args.name!r}: {files.cert} (key {files.key})")
    return 0


def cmd_metaserver(args: argparse.Namespace) -> int:
    from dfs.cli.daemons import run_daemon
    from dfs.config import load_config
    from dfs.metaserver.server import run_metaserver

    cfg = load_config(_config_path(args))
    if cfg.metaserver is None:
        raise ConfigError(f"{cfg.path}: no [metaserver] table")
    run_daemon(run_metaserver, cfg)
    return 0


def cmd_chunkserver(args: argparse.Namespace) -> int:
    if getattr(args, "cs_command", None):
        from dfs.cli import admin

        return admin.cmd_chunkserver_mode(args, _config_path(args))
    from dfs.chunkserver.server import run_chunkserver
    from dfs.cli.daemons import run_daemon
    from dfs.config import load_config

    cfg = load_config(_config_path(args))
    if cfg.chunkserver is None:
        raise ConfigError(f"{cfg.path}: no [chunkserver] table")
    run_daemon(run_chunkserver, cfg)
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from dfs.client.mount import mount_main
    from dfs.config import load_config

    cfg = load_config(_config_path(args))
    mountpoint = Path(args.mountpoint)
    if not mountpoint.is_dir():
        raise ConfigError(f"mount point {mountpoint} is not a directory")
    mount_main(cfg, mountpoint)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from dfs.fuse.mount import unmount

    unmount(str(Path(args.mountpoint).resolve()), lazy=args.lazy)
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    from dfs.cli import local

    handler: Command = {
        "up": local.cmd_up,
        "down": local.cmd_down,
        "status": local.cmd_status,
    }[args.local_command]
    return handler(args)


def cmd_status(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_status(args, _config_path(args))


def cmd_admin_meta(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_admin_meta(args, _config_path(args))


def cmd_sessions(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_sessions(args, _config_path(args))


def cmd_fsck(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_fsck(args, _config_path(args))


def cmd_rebalance(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_rebalance(args, _config_path(args))


def cmd_info(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_info(args, _config_path(args))


def cmd_df(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_df(args, _config_path(args))


def cmd_replication(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_replication(args, _config_path(args))


def cmd_locks(args: argparse.Namespace) -> int:
    from dfs.cli import admin

    return admin.cmd_locks(args, _config_path(args))


# ---------------------------------------------------------------- argument parser
def _chunkserver_admin_parsers(d: argparse.ArgumentParser) -> None:
    """``dfs chunkserver decommission|maintenance|recommission|list``; without a subcommand
    ``dfs chunkserver`` runs the daemon."""
    cs_sub = d.add_subparsers(dest="cs_command", metavar="COMMAND")
    texts = {
        "decommission": "drain chunkserver ID: copy its chunks elsewhere, then report it "
        "DECOMMISSIONED (safe to remove)",
        "maintenance": "planned downtime of chunkserver ID: no new chunks, and its absence "
        "starts no re-replication for --for seconds",
        "recommission": "put chunkserver ID back into normal service",
        "remove": "forget stopped chunkserver ID (drained first): new leaders stop waiting for it",
        "list": "chunkservers with their state, mode and use",
    }
    for verb, text in texts.items():
        sp = cs_sub.add_parser(verb, help=text)
        if verb != "list":
            sp.add_argument("id", metavar="ID", help="chunkserver id (see `dfs chunkserver list`)")
        if verb == "maintenance":
            sp.add_argument(
                "--for",
                dest="seconds",
                type=int,
                default=3600,
                metavar="SECONDS",
                help="how long the maintenance may last before re-replication starts (3600)",
            )
        if verb == "decommission":
            sp.add_argument(
                "--wait", action="store_true", help="wait until it is drained, with progress"
            )
        sp.add_argument(
            "--config", default=argparse.SUPPRESS, help="admin TOML config file ($DFS_CONFIG)"
        )
        sp.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dfs",
        description="dfs: a distributed POSIX file system (metaserver, chunkservers, FUSE)",
    )
    p.add_argument("--version", action="version", version=f"dfs {__version__}")
    p.add_argument(
        "--log-level",
        default=os.environ.get("DFS_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default INFO, or $DFS_LOG_LEVEL)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ca = sub.add_parser("ca", help="cluster certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="SUBCOMMAND")
    ca_init = ca_sub.add_parser("init", help="create a cluster CA in DIR")
    ca_init.add_argument("dir")
    ca_init.add_argument("--name", default="dfs", help="cluster name written into the CA")
    ca_init.set_defaults(func=cmd_ca_init)
    ca_issue = ca_sub.add_parser("issue", help="issue a certificate with a role")
    ca_issue.add_argument("name", help="the holder's name (file name of the certificate)")
    ca_issue.add_argument(
        "--role", required=True, choices=["metaserver", "chunkserver", "client", "admin"]
    )
    ca_issue.add_argument("--ca", help="CA directory (default $DFS_CA)")
    ca_issue.add_argument("--out", help="where to write NAME.crt/NAME.key (default: the CA dir)")
    ca_issue.add_argument(
        "--host", action="append", help="IP or DNS name for the certificate (repeatable)"
    )
    ca_issue.set_defaults(func=cmd_ca_issue)

    for name, func, text in (
        ("metaserver", cmd_metaserver, "run a metaserver in the foreground"),
        ("chunkserver", cmd_chunkserver, "run a chunkserver in the foreground"),
    ):
        d = sub.add_parser(name, help=text)
        d.add_argument("--config", help="TOML config file (default $DFS_CONFIG)")
        d.set_defaults(func=func)
        if name == "chunkserver":
            _chunkserver_admin_parsers(d)

    m = sub.add_parser("mount", help="mount the file system (runs in the foreground)")
    m.add_argument("mountpoint")
    m.add_argument("--config", help="client TOML config file (default $DFS_CONFIG)")
    m.set_defaults(func=cmd_mount)

    u = sub.add_parser("umount", help="unmount a dfs mount point")
    u.add_argument("mountpoint")
    u.add_argument("--lazy", action="store_true", help="detach now, clean up when unused")
    u.set_defaults(func=cmd_umount)

    local = sub.add_parser("local", help="a whole cluster on this machine, for trying dfs out")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="SUBCOMMAND")
    from dfs.cli.local import DEFAULT_STATE_DIR

    up = local_sub.add_parser("up", help="start (or restart) the local cluster and mount it")
    up.add_argument("--dir", default=str(DEFAULT_STATE_DIR), help="state directory")
    up.add_argument("--mount", help="mount point (default STATE/mnt)")
    up.add_argument(
        "--chunkservers", type=int, default=3, help="number of chunkservers (new state only)"
    )
    up.add_argument(
        "--metaservers",
        type=int,
        default=3,
        choices=(1, 3, 5),
        help="metaservers in the Raft group (new state only)",
    )
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config setting for every daemon with that section, e.g. "
        "metaserver.replication_grace=30 (TOML value; new state only; repeatable)",
    )
    down = local_sub.add_parser("down", help="unmount and stop everything")
    down.add_argument("--dir", default=str(DEFAULT_STATE_DIR), help="state directory")
    st = local_sub.add_parser("status", help="list the local cluster's processes")
    st.add_argument("--dir", default=str(DEFAULT_STATE_DIR), help="state directory")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    for sp in (up, down, st):
        sp.set_defaults(func=cmd_local)

    from dfs.cli import goal

    goal.add_parsers(sub)

    from dfs.cli import bench

    bench.add_parser(sub)

    status = sub.add_parser("status", help="cluster health (needs an admin certificate)")
    status.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    adm = sub.add_parser("admin", help="change the cluster (admin certificate)")
    adm_sub = adm.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    meta = adm_sub.add_parser("meta", help="metadata Raft group membership")
    meta_sub = meta.add_subparsers(dest="meta_command", metavar="COMMAND", required=True)
    meta_add = meta_sub.add_parser(
        "add", help="add the running, empty metaserver at ADDR (started with join = true)"
    )
    meta_add.add_argument("address", metavar="ADDR", help="host:port of the new metaserver")
    meta_add.add_argument(
        "--timeout", type=int, default=300, help="seconds it may take to catch up (300)"
    )
    meta_remove = meta_sub.add_parser("remove", help="remove metaserver ID from the group")
    meta_remove.add_argument("id", metavar="ID")
    meta_list = meta_sub.add_parser("list", help="voting members and learners")
    repl = adm_sub.add_parser(
        "replication", help="pause or resume the replicator's copies and deletions"
    )
    repl.add_argument("action", choices=["pause", "resume", "status"])
    repl.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    repl.add_argument("--json", action="store_true", help="machine-readable output")
    repl.set_defaults(func=cmd_replication)
    for sp in (meta_add, meta_remove, meta_list):
        sp.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(func=cmd_admin_meta)

    sessions = sub.add_parser(
        "sessions", help="client sessions held with the metadata group (admin certificate)"
    )
    sessions.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    sessions.add_argument("--json", action="store_true", help="machine-readable output")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", metavar="COMMAND")
    evict = sessions_sub.add_parser("evict", help="end a session now (its client reconnects)")
    evict.add_argument("id", type=int, help="session id (from `dfs sessions`)")
    evict.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    evict.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    sessions.set_defaults(func=cmd_sessions, sessions_command=None)

    locks = sub.add_parser(
        "locks", help="flock and fcntl locks held and waited for (admin certificate)"
    )
    locks.add_argument("path", nargs="?", help="only the locks of this file on a dfs mount")
    locks.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    locks.add_argument("--json", action="store_true", help="machine-readable output")
    locks.set_defaults(func=cmd_locks)
    fsck = sub.add_parser(
        "fsck",
        help="check the namespace and every chunk's replicas (admin certificate); "
        "exit 0 clean, 1 problems, 2 could not run",
    )
    fsck.add_argument("path", nargs="?", help="only this file or directory on a dfs mount")
    fsck.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    fsck.add_argument("--json", action="store_true", help="machine-readable output")
    fsck.add_argument(
        "--orphan-age",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="report orphan chunks seen for at least this long (default 3600)",
    )
    fsck.add_argument(
        "--verify",
        action="store_true",
        help="first have every chunkserver read all its replicas and check every checksum",
    )
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="re-replicate, drop stale and corrupt replicas, delete orphans, fix the "
        "namespace; then wait for it and check again (whole file system only)",
    )
    fsck.add_argument(
        "--zero-fill",
        action="store_true",
        help="with --repair: replace chunks that have no replica left by zeros (data loss "
        "made explicit; without it such files are only reported)",
    )
    fsck.set_defaults(func=cmd_fsck)

    info = sub.add_parser(
        "info", help="a file's inode, goal and every chunk's replicas (admin certificate)"
    )
    info.add_argument("path", help="a file or directory on a dfs mount")
    info.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)
    df = sub.add_parser("df", help="cluster space and what the files take (admin certificate)")
    df.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    df.add_argument("--json", action="store_true", help="machine-readable output")
    df.set_defaults(func=cmd_df)

    reb = sub.add_parser(
        "rebalance",
        help="move replicas until every chunkserver's use is within --threshold points of "
        "the cluster mean (admin certificate); Ctrl-C stops it safely",
    )
    reb.add_argument("--config", help="admin TOML config file (default $DFS_CONFIG)")
    reb.add_argument(
        "--threshold", type=_percent, default=10.0, metavar="PCT", help="percentage points (10)"
    )
    reb.add_argument(
        "--max-moves", type=_non_negative, default=0, metavar="N", help="stop after N moves"
    )
    reb.add_argument(
        "--bandwidth",
        type=float,
        default=0.0,
        metavar="MiB/s",
        help="copy rate in all (default: the replication rate)",
    )
    reb.add_argument("--dry-run", action="store_true", help="only say what would move")
    reb.add_argument(
        "--force", action="store_true", help="run even while chunks are under their goal"
    )
    reb.add_argument("--stop", action="store_true", help="stop a running rebalance")
    reb.add_argument("--json", action="store_true", help="machine-readable output")
    reb.set_defaults(func=cmd_rebalance)
    return p


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100 (percentage points)")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level)
        func: Command = args.func
        return func(args)
    except ConfigError as exc:
        print(f"dfs: error: {exc}", file=sys.stderr)
        return 2
    except (CliError, DfsError, MountError) as exc:
        print(f"dfs: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"dfs: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
