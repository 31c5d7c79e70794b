"""Admin commands that talk to the metaserver with an admin certificate."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from dfs.client.remote import RpcMetaClient
from dfs.config import Config, load_config
from dfs.errors import ConfigError, DfsError, one_dfs_error
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
    so a retry after a failover is applied once.  A failure is the one ``DfsError`` it was,
    never a group of them (the CLI prints it as one line)."""
    try:
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
    except BaseExceptionGroup as group:
        raise one_dfs_error(group) from None


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
    if status.get("replication", {}).get("paused"):
        warnings.append("replication is paused (dfs admin replication resume)")
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
            f"{'' if c.get('mode', 'normal') == 'normal' else '  ' + _mode_line(c)}"
        )
    print("counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
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
    """``dfs fsck [PATH] [--verify] [--repair [--zero-fill]] [--json]``: exit 0 when clean,
    1 when problems were found (or are left after a repair), 2 when the check could not run."""
    params: dict[str, Any] = {"orphan_age": args.orphan_age, "verify": args.verify}
    if args.zero_fill and not args.repair:
        print("dfs fsck: --zero-fill only goes with --repair", file=sys.stderr)
        return 2
    try:
        cfg = load_config(config_path)
        if args.path:
            params["ino"] = os.stat(args.path).st_ino
        if args.repair:
            params.update(repair=True, zero_fill=args.zero_fill)
        timeout = 24 * 3600.0 if args.verify else 600.0
        label = "verifying every replica" if args.verify else "checking"
        report = _with_spinner(label, admin_call, cfg, "admin.fsck", params, timeout)
        if args.repair:
            final = _wait_repaired(cfg, report, args)
    except (DfsError, OSError) as exc:
        what = f"{args.path}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        print(f"dfs fsck: could not check: {what}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report, "after": final} if args.repair else report, indent=2))
    else:
        _print_fsck(report)
        if args.repair:
            _print_repairs(report["repairs"])
            print("after the repairs:")
            _print_fsck(final)
    return 0 if (final if args.repair else report)["clean"] else 1


def _with_spinner(label: str, fn: Any, *args: Any) -> Any:
    """``trio.run(fn, *args)`` with the time spent shown on a terminal."""
    from dfs.cli.progress import Progress

    bar = Progress(label, total=0)

    async def main() -> Any:
        async with trio.open_nursery() as nursery:

            async def tick() -> None:
                t0 = trio.current_time()
                while True:
                    bar.update(0, note=f"{trio.current_time() - t0:.0f} s")
                    await trio.sleep(0.2)

            nursery.start_soon(tick)
            try:
                return await fn(*args)
            finally:
                nursery.cancel_scope.cancel()

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        raise one_dfs_error(group) from None
    finally:
        bar.close()


#: How long ``dfs fsck --repair`` waits for the repairs it started (copies, deletions).
REPAIR_WAIT = 3600.0
#: ... and how long it waits without any progress before it says what is left.
REPAIR_STALL = 60.0


def _open_problems(report: dict[str, Any]) -> int:
    return len(report["namespace"]) + sum(int(v) for v in report["counts"].values())


def _wait_repaired(cfg: Config, first: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Poll the leader until the repairs are done (clean), or nothing moved for
    ``REPAIR_STALL`` seconds (what is left cannot be repaired: lost chunks)."""
    from dfs.cli.progress import Progress

    params = {"orphan_age": args.orphan_age}
    total = _open_problems(first)
    bar = Progress("repairing", total=max(total, 1))
    best, best_at = total, time.monotonic()
    deadline = time.monotonic() + REPAIR_WAIT
    try:
        while True:
            report: dict[str, Any] = trio.run(admin_call, cfg, "admin.fsck", params, 600.0)
            left = _open_problems(report)
            bar.update(max(0, total - left), note=f"{left} left")
            now = time.monotonic()
            if left < best:
                best, best_at = left, now
            if report["clean"] or now - best_at > REPAIR_STALL or now > deadline:
                return report
            lost_only = left == report["counts"]["missing"] and not report["namespace"]
            if lost_only and now - best_at > 5:
                return report  # only lost chunks are left: no copy can bring them back
            time.sleep(1.0)
    finally:
        bar.close()


def _print_repairs(repairs: dict[str, Any]) -> None:
    print("repairs:")
    for line in repairs.get("namespace", []):
        print(f"  namespace: {line}")
    print(f"  copies started for {repairs['copies_started']} chunks under their goal")
    print(f"  {repairs['cleanups_started']} chunks to clear of stale, corrupt or surplus replicas")
    print(f"  {repairs['orphans_deleted']} orphan replicas deleted")
    if "zero_filled" in repairs:
        print(f"  {repairs['zero_filled']} lost chunks replaced by zeros")
    elif repairs.get("lost_left"):
        print(
            f"  {repairs['lost_left']} chunks have no replica left: their files are only "
            "reported (--zero-fill replaces those chunks by zeros)"
        )


_FSCK_LABELS = {
    "missing": "chunks with no valid replica (file unreadable there)",
    "under_goal": "chunks under their goal",
    "over_goal": "chunks over their goal",
    "stale_replicas": "stale replicas (missed writes)",
    "corrupt_replicas": "corrupt replicas",
    "orphan_chunks": "orphan chunks (no file references them)",
}


def _print_fsck(report: dict[str, Any]) -> None:
    for server, v in sorted(report.get("verified", {}).items()):
        if "error" in v:
            print(f"  verify {server}: could not verify: {v['error']}")
        else:
            print(
                f"  verified {server}: {v['chunks']} chunks, {_human(v['bytes'])} in "
                f"{v['seconds']:.1f} s, {v['corrupt']} corrupt"
            )
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


def _mode_line(c: dict[str, Any]) -> str:
    mode = str(c.get("mode", "normal"))
    if mode == "decommissioning":
        mode += f" ({c.get('remaining', '?')} chunks to go)"
    elif mode == "decommissioned":
        mode = "DECOMMISSIONED (safe to remove)"
    elif mode == "maintenance" and c.get("maintenance_until_ns"):
        left = c["maintenance_until_ns"] / 1e9 - time.time()
        mode += f" ({max(0, left):.0f} s left)"
    return mode


def _print_chunkservers(servers: list[dict[str, Any]]) -> None:
    print(f"{'id':<10} {'state':<6} {'mode':<34} {'used':>10} {'capacity':>10} {'chunks':>7}")
    for c in servers:
        print(
            f"{c['id']:<10} {c.get('state', '?'):<6} {_mode_line(c):<34} "
            f"{_human(c.get('used', 0)):>10} {_human(c.get('capacity', 0)):>10} "
            f"{c.get('chunks', 0):>7}"
        )


def cmd_chunkserver_mode(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs chunkserver decommission|maintenance|recommission ID`` and ``list``."""
    cfg = load_config(config_path)
    if args.cs_command == "list":
        servers = fetch_status(cfg)["chunkservers"]
        if args.json:
            print(json.dumps(servers, indent=2))
        else:
            _print_chunkservers(servers)
        return 0
    mode = {"decommission": "decommission", "maintenance": "maintenance", "remove": "removed"}.get(
        args.cs_command, "normal"
    )
    params: dict[str, Any] = {"id": args.id, "mode": mode}
    if mode == "maintenance":
        params["seconds"] = args.seconds
    line = trio.run(admin_call, cfg, "admin.cs_mode", params, 30.0)
    if mode == "decommission" and getattr(args, "wait", False):
        line = _wait_drained(cfg, args.id)
    if args.json:
        print(json.dumps(line, indent=2))
        return 0
    what = {
        "decommission": "is being decommissioned: its chunks are copied elsewhere",
        "maintenance": f"is in maintenance for up to {getattr(args, 'seconds', 0)} s",
        "normal": "is back in normal service",
        "removed": "is removed from the cluster",
    }[mode]
    if mode == "removed":
        print(f"chunkserver {args.id} {what}")
        return 0
    print(f"chunkserver {args.id} {what}")
    _print_chunkservers([line])
    return 0


#: Longest ``dfs chunkserver decommission --wait`` waits (a day).
DRAIN_WAIT = 86_400.0


def _wait_drained(cfg: Config, server_id: str) -> dict[str, Any]:
    """Poll the leader until ``server_id`` is drained; a progress bar on a terminal."""
    from dfs.cli.progress import Progress

    bar: Progress | None = None
    deadline = time.monotonic() + DRAIN_WAIT
    try:
        while True:
            servers = {c["id"]: c for c in fetch_status(cfg)["chunkservers"]}
            line: dict[str, Any] | None = servers.get(server_id)
            if line is None:
                raise ConfigError(f"chunkserver {server_id} is no longer known")
            left = int(line.get("remaining", 0))
            if bar is None:
                bar = Progress(f"draining {server_id}", total=max(left, 1))
            bar.update(bar.total - left if left <= bar.total else 0, note=f"{left} to go")
            if line.get("mode") == "decommissioned" or time.monotonic() > deadline:
                return line
            time.sleep(1.0)
    finally:
        if bar is not None:
            bar.close()


def cmd_rebalance(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs rebalance``: start a rebalance on the leader and follow it to the end; Ctrl-C
    stops it (moves in flight are abandoned consistently)."""
    from dfs.cli.progress import Progress

    cfg = load_config(config_path)
    if args.stop:
        report = trio.run(admin_call, cfg, "admin.rebalance_stop", {}, 30.0)
        _print_rebalance(report, args.json)
        return 0
    params: dict[str, Any] = {
        "threshold": float(args.threshold),
        "max_moves": args.max_moves,
        "bandwidth": int(args.bandwidth * 2**20),
        "dry_run": args.dry_run,
        "force": args.force,
    }
    report = trio.run(admin_call, cfg, "admin.rebalance", params, 60.0)
    if args.dry_run or report["state"] != "running":
        _print_rebalance(report, args.json)
        return 0
    bar = Progress("rebalance", total=max(1, int(report["total_bytes"])))
    try:
        while report["state"] == "running":
            time.sleep(0.5)
            report = trio.run(admin_call, cfg, "admin.rebalance_status", {}, 30.0)
            rate = report["rate"] / 2**20
            bar.update(
                min(report["bytes"], bar.total),
                note=f"{report['moves']} moves, {rate:.1f} MiB/s",
            )
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[0] is None:
            raise
        bar.close()
        print("stopping the rebalance...", file=sys.stderr)
        report = trio.run(admin_call, cfg, "admin.rebalance_stop", {}, 30.0)
        _print_rebalance(report, args.json)
        return 130
    bar.close()
    _print_rebalance(report, args.json)
    return 0 if report["state"] in ("balanced", "done") else 1


def _print_rebalance(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    mean = report["mean"]
    if report["state"] == "dry-run":
        print(
            f"dry run: {report['moves']} moves of {_human(report['bytes'])} would bring every "
            f"chunkserver within {report['threshold']:g} points of the mean ({mean:.1f} %)"
        )
        after = report["after"]
    else:
        print(
            f"rebalance {report['state']}: {report['reason']}; {report['moves']} moves, "
            f"{_human(report['bytes'])} in {report['elapsed']:.1f} s "
            f"({report['rate'] / 2**20:.1f} MiB/s), {report['failures']} failed"
        )
        after = report["utilization"]
    print(f"{'chunkserver':<12} {'before':>8} {'now':>8}   (mean {mean:.1f} %)")
    for sid in sorted(set(report["before"]) | set(after)):
        b = report["before"].get(sid)
        a = after.get(sid)
        print(
            f"{sid:<12} {'-' if b is None else f'{b:.1f} %':>8} "
            f"{'-' if a is None else f'{a:.1f} %':>8}"
        )


def cmd_info(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs info PATH``: inode, goal, and each chunk's replicas with versions and places."""
    from dfs.cli.main import CliError

    cfg = load_config(config_path)
    try:
        ino = os.lstat(args.path).st_ino
    except OSError as exc:
        raise CliError(f"{args.path}: {exc.strerror}") from None
    info = trio.run(admin_call, cfg, "admin.info", {"ino": ino}, 30.0)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    attr = info["attr"]
    print(f"{info['path']}: inode {info['ino']}, mode {attr['mode']:o}, size {attr['size']}")
    print(f"  goal {info['goal']}, {len(info['chunks'])} chunks")
    for c in info["chunks"]:
        lease = ", being written" if c["under_lease"] else ""
        print(
            f"  chunk {c['index']}: id {c['chunk_id']:#x} version {c['version']:#x}, "
            f"{_human(c['length'])}, {c['live']} live of goal {info['goal']}{lease}"
        )
        for r in c["replicas"]:
            notes = [r["state"], "alive" if r["alive"] else "DOWN"]
            if r.get("leaving"):
                notes.append("decommissioning")
            print(f"      {r['server']:<10} {r['address']:<22} {', '.join(notes)}")
    return 0


def cmd_df(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs df``: cluster space and what the files take."""
    cfg = load_config(config_path)
    df = trio.run(admin_call, cfg, "admin.df", {}, 30.0)
    if args.json:
        print(json.dumps(df, indent=2))
        return 0
    cap = df["capacity"]
    pct = 100 * df["used"] / cap if cap else 0.0
    print(f"{'capacity':>12} {'used':>12} {'free':>12} {'use%':>5}  chunkservers")
    print(
        f"{_human(cap):>12} {_human(df['used']):>12} {_human(df['free']):>12} {pct:>4.0f}%"
        f"  {df['chunkservers_alive']}/{df['chunkservers_known']} alive"
    )
    print(
        f"files {df['files']}, directories {df['directories']}, chunks {df['chunks']}; "
        f"file data {_human(df['logical_bytes'])}, with replicas {_human(df['replica_bytes'])}"
    )
    return 0


def cmd_replication(args: argparse.Namespace, config_path: Path) -> int:
    """``dfs admin replication pause|resume|status``."""
    cfg = load_config(config_path)
    r = trio.run(admin_call, cfg, "admin.replication", {"action": args.action}, 30.0)
    if args.json:
        print(json.dumps(r))
    else:
        print("replication is " + ("PAUSED" if r["paused"] else "running"))
    return 0
