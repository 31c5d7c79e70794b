"""``dfs bench``: runs on any directory, cleans up after itself, prints the table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfs.cli import bench
from dfs.cli.main import main

pytestmark = pytest.mark.unit


def test_bench_on_a_local_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "PHASE_CAP", 5.0)
    target = tmp_path / "t"
    target.mkdir()
    out = tmp_path / "r.json"
    assert (
        main(["bench", str(target), "--quick", "--skip", "seq,parallel", "--json", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "| create empty files | ops/s |" in printed
    figures = json.loads(out.read_text())["target"]
    assert figures["create_ops"] > 0 and figures["small_files_extract_s"] > 0
    assert "seq_write_MBps" not in figures
    assert list(target.iterdir()) == []  # its work directory is gone


def test_bench_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path / "nope")]) == 1
    assert main(["bench", str(tmp_path), "--skip", "warp"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("dfs: error:") for line in err)
