"""The metaserver dashboard in headless Chromium against a real local cluster: the page's
script fetched ``/api/status`` and shows the chunkservers and the cluster's health, warnings
first when a chunkserver dies, and a follower names the leader.  Screenshots go to the test's
tmp dir (``DFS_DASHBOARD_SCREENSHOT=path`` also copies the degraded one there, as in
``docs/dashboard.png``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.localcluster import local_cluster, wait_for

pytestmark = pytest.mark.mount

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Virtual time Chromium gives the page before it dumps the DOM or takes the screenshot, so
#: the first fetch of /api/status has been answered and rendered.
BUDGET_MS = 5000


def chromium(tmp: Path, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium once (own profile, own process group, killed whatever happens)."""
    assert CHROMIUM is not None
    profile = tmp / "chromium-profile"
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={BUDGET_MS}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out


def api_status(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}/api/status", timeout=10) as resp:
        result: dict[str, Any] = json.load(resp)
    return result


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "--set", "metaserver.chunkserver_timeout=2") as c:
        http = c.http_addresses()
        leader = api_status(http["m1"])["leader"]
        follower = next(m for m in ("m1", "m2", "m3") if m != leader)
        url = f"http://{http[leader]}/"
        (c.mnt / "docs").mkdir()
        (c.mnt / "docs" / "report.bin").write_bytes(os.urandom(200_000))

        # A flock held through the mount while the page loads shows in the locks table.
        with open(c.mnt / "docs" / "report.bin", "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            wait_for(lambda: api_status(http[leader])["locks"], 10, "the lock to be listed")
            dom = chromium(tmp_path, "--dump-dom", url)
        assert 'id="updated">never<' not in dom  # the script ran and rendered
        assert "<td>flock</td><td>write</td>" in dom
        assert '<td class="path">/docs/report.bin</td>' in dom
        for cs in ("cs1", "cs2", "cs3"):
            assert f"<td>{cs}</td>" in dom
        assert ">leader<" in dom and ">follower<" in dom
        warnings = api_status(http[leader])["warnings"]
        if not warnings:
            assert 'id="health" class="ok">HEALTHY<' in dom
            assert "No problems found." in dom
        else:  # only a machine whose disk is nearly full may add something
            assert all(w["text"].endswith("% full") for w in warnings), warnings
            assert all(w["text"] in dom for w in warnings)
        assert "every chunk is at its goal" in dom
        shot = tmp_path / "dashboard.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1300", url)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000

        # A follower shows its own Raft view and sends the reader to the leader.
        follower_dom = chromium(tmp_path, "--dump-dom", f"http://{http[follower]}/")
        assert f"the leader is {leader}" in follower_dom
        assert "known to the leader only" in follower_dom
        assert "have no live replica" not in follower_dom

        # A dead chunkserver: the page turns DEGRADED, the warning comes first, and the
        # file's chunk is listed by path if it had a replica there.
        os.kill(c.pid("cs3"), signal.SIGKILL)
        wait_for(
            lambda: any(s["state"] != "alive" for s in api_status(http[leader])["chunkservers"]),
            30,
            "the leader to notice cs3 died",
        )
        status = api_status(http[leader])
        dom = chromium(tmp_path, "--dump-dom", url)
        assert 'id="health" class="warning">DEGRADED<' in dom
        assert "chunkserver cs3 is dead" in dom
        assert status["warnings"][0]["severity"] in ("critical", "warning")
        if status["counts"]["under_goal"]:
            assert "/docs/report.bin" in dom
        chromium(
            tmp_path, f"--screenshot={tmp_path / 'degraded.png'}", "--window-size=1400,1300", url
        )
        assert (tmp_path / "degraded.png").stat().st_size > 20_000
        if target := os.environ.get("DFS_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(tmp_path / "degraded.png", target)
