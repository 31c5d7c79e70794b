"""Admin commands that talk to the metaserver with an admin certificate."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from dfs.client.remote import RpcMetaClient
from dfs.config import Config, load_config
from dfs.errors import ConfigError, DfsError
from dfs.rpc.client import RpcClient, RpcClientPool
from dfs.security.identity import Role


async def admin_call(
    cfg: Config,
    method: str,
    params: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 - a per-call RPC deadline, passed down
    *,
    idempotent: bool = True,
    exactly_once: bool = False,
) -> Any:
    """Call ``method`` on the metadata leader, found among ``cfg.cluster.metaservers``.
    ``exactly_once``: a mutation sent in a session of this command (opened and closed here),
    so a retry after a failover is applied once."""
    async with RpcClientPool(cfg.tls, name="dfs-admin", expect_roles={Role.METASERVER}) as pool:
        meta = RpcMetaClient(
            pool, cfg.cluster.metaservers, op_timeout=timeout, session_kind="admin"
        )
        if not exactly_once:
            return await meta.request(method, params, idempotent=idempotent)
        try:
            return await meta.mutate(method, params)
        finally:
            await meta.close_session()


async def member_status(cfg: Config, address: str, timeout: float) -> Any:  # noqa: ASYNC109
    """``admin.status`` of the one metaserver at ``address`` (leader or not)."""
    async with RpcClient(address, cfg.tls, name="dfs-admin", expect_roles={Role.METASERVER}) as rpc:
        return await rpc.call("admin.status", {}, timeout=timeout, fail_fast=True)


def fetch_status(cfg: Config, timeout: float = 10.0) -> dict[str, Any]:
    """The leader's ``admin.status`` (it alone knows the chunkservers)."""
    result = trio.run(admin_call, cfg, "admin.status", {"require_leader": True}, timeout)
    if not isinstance(result, dict):
        raise ConfigError("metaserver sent a malformed status")
    return result


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def cmd_status(args: argparse.Namespace, config_path: Path) -> int:
    cfg = load_config(config_path)
    status = fetch_status(cfg)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    counts = status.get("counts", {})
    warnings = []
    dead = [c["id"] for c in status.get("chunkservers", []) if c.get("state") != "alive"]
    if dead:
        warnings.append(f"chunkservers not alive: {', '.join(dead)}")
    if counts.get("missing"):
        warnings.append(f"{counts['missing']} chunks have no live replica")
    if counts.get("under_goal"):
        warnings.append(f"{counts['under_goal']} chunks are below their replication goal")
    if counts.get("bad_replicas"):
        warnings.append(f"{counts['bad_replicas']} corrupt replicas (being replaced)")
    for w in warnings:
        print(f"WARNING: {w}")
    print("metaservers:")
    for m in status.get("metaservers", []):
        print(
            f"  {m.get('id')}  {m.get('address')}  {m.get('role')}  term {m.get('term')}"
            f"  commit {m.get('commit_index')}  applied {m.get('applied_index')}"
        )
    print("chunkservers:")
    for c in status.get("chunkservers", []):
        print(
            f"  {c.get('id')}  {c.get('address')}  zone {c.get('zone')}  {c.get('state')}"
            f"  used {_human(c.get('used', 0))} of {_human(c.get('capacity', 0))}"
            f"  chunks {c.get('chunks')}  load {c.get('load', 0)}"
            f"  heartbeat {c.get('last_heartbeat_age', 0):.1f}s ago"
        )
    print("namespace: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    rep = status.get("replication")
    if rep:
        print("replication: " + ", ".join(f"{k} {v}" for k, v in rep.items()))
    return 1 if warnings else 0


def cmd_sessions(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs sessions [--json]`` lists sessions; ``dfs sessions evict ID`` ends one."""
    from dfs.cli.main import CliError

    cfg = load_config(config_path)
    if args.sessions_command == "evict":
        gone = trio.run(
            functools.partial(
                admin_call, cfg, "admin.session_evict", {"id": args.id}, 10.0, exactly_once=True
            )
        )
        if not gone:
            raise CliError(f"no session {args.id}")
        print(f"session {args.id} evicted")
        return 0
    sessions = trio.run(admin_call, cfg, "admin.sessions", {}, 10.0)
    if args.json:
        print(json.dumps(sessions, indent=2))
        return 0
    if not sessions:
        print("no sessions")
        return 0
    print(f"{'id':>6}  {'kind':<11} {'owner':<16} {'idle':>7}  {'pending':>7}  label")
    for s in sorted(sessions, key=lambda s: s["id"]):
        idle = "-" if s.get("idle_seconds") is None else f"{s['idle_seconds']:.1f}s"
        print(
            f"{s['id']:>6}  {s['kind']:<11} {s['owner']:<16} {idle:>7}  "
            f"{s['outstanding']:>7}  {s['label']}"
        )
    return 0


_LOCK_TYPES = {0: "read", 1: "write"}
_OFFSET_MAX = (1 << 63) - 1


def cmd_locks(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs locks [PATH] [--json]``: locks held and requests waiting, one line each."""
    from dfs.cli.main import CliError

    cfg = load_config(config_path)
    params: dict[str, Any] = {}
    if args.path:
        try:
            params["ino"] = os.stat(args.path).st_ino
        except OSError as exc:
            raise CliError(f"{args.path}: {exc.strerror}") from None
    result = trio.run(admin_call, cfg, "admin.locks", params, 10.0)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result["held"] and not result["waiting"]:
        print("no locks")
        return 0
    print(f"{'state':<8} {'inode':>8} {'kind':<6} {'type':<6} {'range':<24} session:owner  pid")
    for state, rows in (("held", result["held"]), ("waiting", result["waiting"])):
        for r in rows:
            end = "EOF" if r["end"] == _OFFSET_MAX else str(r["end"])
            print(
                f"{state:<8} {r['ino']:>8} {r['kind']:<6} {_LOCK_TYPES.get(r['type'], '?'):<6} "
                f"{str(r['start']) + '-' + end:<24} {r['session']}:{r['owner']:x}"
                f"  {r.get('pid', '')}"
            )
    return 0


def _print_members(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print("voters:   " + ", ".join(result["voters"]))
    print("learners: " + (", ".join(result["learners"]) or "-"))


def cmd_admin_meta(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs admin meta add ADDR | remove ID | list``."""
    cfg = load_config(config_path)
    if args.meta_command == "add":
        # The new member names itself: its certificate's id is in its own status.
        status = trio.run(member_status, cfg, args.address, 10.0)
        member = status["node"]
        result = trio.run(
            admin_call,
            cfg,
            "admin.meta_add",
            {"id": member, "address": args.address, "timeout": args.timeout},
            float(args.timeout + 30),
        )
        if not args.json:
            print(f"metaserver {member} at {args.address} is a voting member")
    elif args.meta_command == "remove":
        result = trio.run(admin_call, cfg, "admin.meta_remove", {"id": args.id}, 60.0)
        if not args.json:
            print(f"metaserver {args.id} is no longer a member")
    else:
        status = fetch_status(cfg)
        result = status["members"]
    _print_members(result, args.json)
    return 0


def cmd_fsck(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs fsck [PATH] [--json]``: exit 0 when clean, 1 when problems were found, 2 when the
    check could not run."""
    params: dict[str, Any] = {"orphan_age": args.orphan_age}
    try:
        cfg = load_config(config_path)
        if args.path:
            params["ino"] = os.stat(args.path).st_ino
        report = trio.run(admin_call, cfg, "admin.fsck", params, 120.0)
    except (DfsError, OSError) as exc:
        what = f"{args.path}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        print(f"dfs fsck: could not check: {what}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_fsck(report)
    return 0 if report["clean"] else 1


_FSCK_LABELS = {
    "missing": "chunks with no valid replica (file unreadable there)",
    "under_goal": "chunks under their goal",
    "over_goal": "chunks over their goal",
    "stale_replicas": "stale replicas (missed writes)",
    "corrupt_replicas": "corrupt replicas",
    "orphan_chunks": "orphan chunks (no file references them)",
}


def _print_fsck(report: dict[str, Any]) -> None:
    checked = report["checked"]
    cs = report["chunkservers"]
    print(
        f"checked {report['path']}: {checked['files']} files, {checked['directories']} "
        f"directories, {checked['chunks']} chunks; chunkservers {cs['alive']}/{cs['known']} alive"
    )
    for problem in report["namespace"]:
        print(f"  namespace: {problem}")
    for kind, label in _FSCK_LABELS.items():
        count = report["counts"][kind]
        if not count:
            continue
        print(f"  {count} {label}")
        for e in report[kind][:20]:
            where = e.get("path", "")
            extra = ", ".join(
                f"{k} {v}" for k, v in e.items() if k not in ("path", "chunk_id", "index")
            )
            index = f" chunk {e['index']}" if "index" in e else ""
            print(f"    {where}{index} (chunk {e['chunk_id']}){': ' + extra if extra else ''}")
        if count > 20:
            print(f"    ... {count - 20} more (--json lists up to 10,000)")
    print("clean" if report["clean"] else "problems found")
