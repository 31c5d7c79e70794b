"""tools/fsx.py: random I/O on one file checked against a model, on the mount and (to prove
the tool itself) on a local file."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.mount

FSX = Path(__file__).resolve().parents[2] / "tools" / "fsx.py"


def fsx(path: Path, seed: int, ops: int, max_size: int = 256 * 1024) -> str:
    args = ["--seed", str(seed), "--ops", str(ops), "--max-size", str(max_size), str(path)]
    proc = subprocess.run(
        [sys.executable, str(FSX), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"fsx seed {seed} on {path}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fsx_on_dfs(mnt_dir: Path, seed: int) -> None:
    out = fsx(mnt_dir / "fsx.data", seed, 2000)
    assert f"ok seed {seed}: 2000 ops" in out


def test_fsx_across_chunk_boundary(mnt_dir: Path) -> None:
    """A file that grows past 64 MiB: chunk 0 and chunk 1, sparse in between."""
    out = fsx(mnt_dir / "fsx.big", 7, 300, max_size=65 * 1024 * 1024)
    assert "ok seed 7" in out


def test_fsx_on_local_file(local_dir: Path) -> None:
    out = fsx(local_dir / "fsx.data", 1, 2000)
    assert "ok seed 1: 2000 ops" in out
    assert "not supported" not in out  # the local file system has fallocate


def _load_fsx() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fsx_tool", FSX)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fsx_reports_a_lost_write(
    local_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that silently drops one write is caught, with its offset and the log."""
    tool = _load_fsx()
    real_pwrite = os.pwrite
    calls = 0

    def lossy_pwrite(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 5:
            return len(data)  # claims success, writes nothing
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(tool, "os", _OsWithPwrite(lossy_pwrite))
    code = tool.main(["--seed", "3", "--ops", "500", str(local_dir / "f")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL seed 3" in out
    assert "first difference at offset" in out or "length differs" in out or "size:" in out
    assert "last " in out and " write " in out


class _OsWithPwrite:
    """The ``os`` module with another ``pwrite``."""

    def __init__(self, pwrite: object) -> None:
        self.pwrite = pwrite

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)
