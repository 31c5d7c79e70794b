"""Helpers the measurement tools share: drive a ``dfs local`` cluster through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

DFS = [sys.executable, "-m", "dfs"]


def dfs(*args: str, timeout: float = 120) -> str:
    """``dfs ARGS``; its stdout, or exit with its stderr when it fails."""
    proc = subprocess.run(
        [*DFS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"dfs {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def status(state: Path) -> dict[str, Any]:
    """``dfs status --json`` of the cluster in ``state`` ({} when it cannot answer)."""
    out = subprocess.run(
        [*DFS, "status", "--config", str(state / "admin.toml"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    try:
        result: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        return {}
    return result


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
