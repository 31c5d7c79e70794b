"""A real local cluster (three metaservers in a Raft group, three chunkservers, a kernel FUSE
mount) used with shell tools.

These tests start the ``dfs`` command as subprocesses, exactly as a user would, and check the
mount against a local directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster, run_dfs, wait_for

pytestmark = pytest.mark.mount


def sh(cmd: str, cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run(
        cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{cmd!r} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every regular file, the target of every symlink, and every directory."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        out[rel_dir + "/"] = "dir"
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.join(rel_dir, name)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                out[rel] = h.hexdigest()
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("dfs")) as c:
        yield c


@pytest.fixture(scope="module")
def source_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real source tree with thousands of files: the Python standard library's own sources."""
    stdlib = Path(os.__file__).parent
    out = tmp_path_factory.mktemp("tarball") / "stdlib.tar.gz"
    count = 0
    with tarfile.open(out, "w:gz") as tf:
        for sub in (
            "email",
            "json",
            "asyncio",
            "unittest",
            "idlelib",
            "lib2to3",
            "xml",
            "distutils",
            "tkinter",
            "encodings",
            "multiprocessing",
            "concurrent",
        ):
            if (stdlib / sub).exists():
                tf.add(stdlib / sub, arcname=f"stdlib/{sub}")
                count += sum(1 for _ in (stdlib / sub).rglob("*"))
    assert count > 2000, f"only {count} files in the test tarball"
    return out


def test_tar_extract_matches_local(cluster: Cluster, source_tarball: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    remote = cluster.mnt / "tar"
    remote.mkdir()
    sh(f"tar -xzf {source_tarball}", cwd=local)
    sh(f"tar -xzf {source_tarball}", cwd=remote)
    sh(f"diff -r --no-dereference {local} {remote}", cwd=tmp_path)
    assert tree_digest(local) == tree_digest(remote)
    # Same modes, owners and mtimes as the local extraction (tar restores them).
    for rel in ("stdlib/json/__init__.py", "stdlib/email", "stdlib/email/mime/text.py"):
        a, b = os.lstat(local / rel), os.lstat(remote / rel)
        assert (a.st_mode, a.st_mtime_ns, a.st_uid, a.st_gid) == (
            b.st_mode,
            b.st_mtime_ns,
            b.st_uid,
            b.st_gid,
        ), rel


def test_shell_tools_behave_as_on_local_disk(cluster: Cluster, tmp_path: Path) -> None:
    base = cluster.mnt / "tools"
    base.mkdir()
    (base / "a.txt").write_bytes(b"hello\n" * 1000)
    sh("cp -a a.txt b.txt && mv b.txt c.txt && ln c.txt d.txt && ln -s c.txt e.lnk", cwd=base)
    assert os.stat(base / "c.txt").st_nlink == 2
    assert os.readlink(base / "e.lnk") == "c.txt"
    assert (base / "e.lnk").read_bytes() == b"hello\n" * 1000
    sh("chmod 640 c.txt && touch -d '2001-02-03 04:05:06' c.txt", cwd=base)
    st = os.stat(base / "d.txt")
    assert st.st_mode & 0o777 == 0o640
    assert int(st.st_mtime) == int(
        subprocess.check_output(["date", "-d", "2001-02-03 04:05:06", "+%s"])
    )
    sh("mkdir -p x/y/z && cp -a a.txt x/y/z/ && cp -a x x2", cwd=base)
    found = sh("find . -name a.txt | sort", cwd=base).split()
    assert found == ["./a.txt", "./x/y/z/a.txt", "./x2/y/z/a.txt"]
    du = int(sh("du -sk .", cwd=base).split()[0])
    assert du >= 6 * 3  # three 6000-byte files at least
    sh("rm -rf x2 && rmdir x/y/z 2>/dev/null || true", cwd=base)
    assert not (base / "x2").exists()
    # xattrs
    os.setxattr(base / "a.txt", "user.color", b"blue")
    assert os.getxattr(base / "a.txt", "user.color") == b"blue"
    assert "user.color" in os.listxattr(base / "a.txt")
    os.removexattr(base / "a.txt", "user.color")
    assert "user.color" not in os.listxattr(base / "a.txt")


def test_git_commit_works(cluster: Cluster) -> None:
    repo = cluster.mnt / "repo"
    repo.mkdir()
    (repo / "README").write_text("dfs\n")
    (repo / "src").mkdir()
    for i in range(50):
        (repo / "src" / f"f{i}.py").write_text(f"x = {i}\n" * (i + 1))
    env = "git -c user.name=t -c user.email=t@example.invalid"
    sh(f"git init -q && {env} add -A && {env} commit -q -m first", cwd=repo)
    (repo / "README").write_text("dfs, again\n")
    sh(f"{env} commit -q -am second && git fsck --strict 2>&1", cwd=repo)
    log = sh("git log --oneline", cwd=repo).splitlines()
    assert len(log) == 2
    assert sh("git status --porcelain", cwd=repo) == ""


def test_new_files_belong_to_calling_user(cluster: Cluster) -> None:
    d = cluster.mnt / "owners"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    # Relative names from a working directory inside the mount: the test's temp path is not
    # traversable by other users.
    code = "import os; open('mine', 'w').write('x'); os.mkdir('dir')"
    subprocess.run(
        ["setpriv", "--reuid=4321", "--regid=4322", "--clear-groups", sys.executable, "-c", code],
        check=True,
        timeout=60,
        cwd=d,
    )
    for name in ("mine", "dir"):
        st = os.stat(d / name)
        assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_large_file_round_trip_and_truncate(cluster: Cluster) -> None:
    path = cluster.mnt / "big.bin"
    data = os.urandom(3 << 20) * 30  # 90 MiB: spans two chunks
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert path.stat().st_size == len(data)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    with open(path, "r+b") as f:
        f.seek(70 << 20)
        f.write(b"Z" * 100)
        f.truncate(65 << 20)
    got = path.read_bytes()
    assert len(got) == 65 << 20
    assert got == data[: 65 << 20]
    with open(path, "r+b") as f:
        f.truncate(66 << 20)  # the re-extended range reads as zeros
    assert path.read_bytes()[65 << 20 :] == bytes(1 << 20)
    path.unlink()


def test_plaintext_and_foreign_certificates_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    from tests.helpers.certs import make_foreign_cert

    ports = [p["address"] for p in cluster.status()["processes"] if p["role"] != "mount"]
    assert len(ports) == 6  # m1..m3, cs1..cs3
    foreign = make_foreign_cert(tmp_path)
    for address in ports:
        host, _, port = address.rpartition(":")
        # Plaintext: the server must close the connection without answering a frame.
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"\x00\x00\x00\x10" + b"{" * 16)
            s.settimeout(10)
            try:
                reply = s.recv(100)
            except (ConnectionResetError, TimeoutError):
                reply = b""
            assert not reply.startswith(b"\x00"), f"{address} answered plaintext"
        # A certificate from another CA: the TLS handshake fails.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(str(cluster.state / "ca" / "ca.crt"))
        ctx.load_cert_chain(str(foreign.cert), str(foreign.key))
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError)),
            ctx.wrap_socket(raw) as tls,
        ):
            # TLS 1.3: the client certificate is checked after the client's Finished; the
            # refusal shows on the first read.
            tls.settimeout(10)
            tls.sendall(b"\x00\x00\x00\x01\x80")
            if not tls.recv(1):
                raise ConnectionResetError("closed")
    # The cluster still works afterwards.
    (cluster.mnt / "after-refusals").write_text("ok")
    assert (cluster.mnt / "after-refusals").read_text() == "ok"


def test_kill_chunkserver_files_still_read(cluster: Cluster) -> None:
    d = cluster.mnt / "survive"
    d.mkdir()
    files = {f"f{i}": os.urandom(1 << 20) + os.urandom(i * 1000) for i in range(10)}
    for name, data in files.items():
        (d / name).write_bytes(data)
    victim = "cs2"
    os.kill(cluster.pid(victim), signal.SIGKILL)
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        for name, data in files.items():
            assert (d / name).read_bytes() == data, name
    finally:
        # A second `up` starts whatever is not running.
        out = cluster.up().stdout
        assert victim in out
    wait_for(
        lambda: all(
            p["health"] in ("alive", "leader", "follower", "mounted")
            for p in cluster.status()["processes"]
        ),
        30,
        "the restarted chunkserver to be alive",
    )


def test_flipped_byte_is_detected_and_reported(cluster: Cluster) -> None:
    path = cluster.mnt / "flip.bin"
    data = os.urandom(2 << 20)
    path.write_bytes(data)
    # Flip one byte in one replica's chunk file.
    chunk_files = [
        p
        for d in cluster.chunk_dirs()
        for p in (d / "chunks").rglob("*")
        if p.is_file() and p.stat().st_size == len(data)
    ]
    assert len(chunk_files) >= 2, chunk_files
    victim = chunk_files[0]
    with open(victim, "r+b") as f:
        f.seek(123_457)
        b = f.read(1)
        f.seek(123_457)
        f.write(bytes([b[0] ^ 0xFF]))
    # Read it many times from a cold cache: whichever replica is chosen, the bytes are right.
    for _ in range(6):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        assert path.read_bytes() == data
    # The bad replica is reported (the metaserver counts it against its chunkserver) and then
    # replaced by a fresh copy, so watch for either.
    victim_cs = victim.relative_to(cluster.state / "data").parts[0]

    def reported() -> bool:
        st = cluster.admin_status()
        rows = {c["id"]: c for c in st["chunkservers"]}
        return bool(rows[victim_cs]["bad_replicas"] >= 1 or st["replication"]["copies"] >= 1)

    wait_for(reported, 15, "the corrupt replica to be reported")

    def repaired() -> bool:
        counts = cluster.admin_status()["counts"]
        copies = []
        for d in cluster.chunk_dirs():
            for p in (d / "chunks").rglob(victim.name):
                try:
                    copies.append(p.read_bytes())
                except FileNotFoundError:
                    continue  # the bad replica (or a surplus one) deleted meanwhile
        whole = [c for c in copies if len(c) == len(data)]
        return bool(
            counts["bad_replicas"] == 0
            and counts["under_goal"] == 0
            and len(whole) >= 2
            and all(c == data for c in whole)
        )

    wait_for(repaired, 30, "the corrupt replica to be repaired")


def test_down_up_keeps_tree_and_bytes(cluster: Cluster, source_tarball: Path) -> None:
    target = cluster.mnt / "persist"
    target.mkdir()
    sh(f"tar -xzf {source_tarball} stdlib/json stdlib/email", cwd=target)
    (target / "big").write_bytes(os.urandom(5 << 20))
    before = tree_digest(cluster.mnt)
    cluster.down()
    assert not any(p["pid"] for p in cluster.status()["processes"])
    cluster.up()
    assert tree_digest(cluster.mnt) == before


def test_local_status_json(cluster: Cluster) -> None:
    st = cluster.status()
    roles = sorted(p["role"] for p in st["processes"])
    assert roles == ["chunkserver"] * 3 + ["metaserver"] * 3 + ["mount"]
    assert st["healthy"] is True
    for p in st["processes"]:
        assert p["pid"] and p["address"]
    metas = [p for p in st["processes"] if p["role"] == "metaserver"]
    assert sorted(p["health"] for p in metas) == ["follower", "follower", "leader"]
    assert len({p["term"] for p in metas}) == 1
    for p in metas:
        assert p["applied_index"] == p["commit_index"] >= 2
    admin = cluster.admin_status()
    assert len(admin["chunkservers"]) == 3


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    for args in (
        ["mount", str(tmp_path / "nope"), "--config", str(tmp_path / "missing.toml")],
        ["local", "status", "--dir", str(tmp_path / "none")],
        ["ca", "issue", "--role", "client", "x", "--ca", str(tmp_path / "noca")],
        ["metaserver", "--config", str(tmp_path / "missing.toml")],
    ):
        proc = run_dfs(*args, check=False)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_down_works_with_every_server_dead_and_up_recovers(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as c:
        (c.mnt / "kept").write_bytes(b"kept across a crash of everything")
        for proc_id in ("m1", "m2", "m3", "cs1", "cs2", "cs3", "mount"):
            os.kill(c.pid(proc_id), signal.SIGKILL)
        # The mount is now dead ("transport endpoint is not connected"); up repairs it.
        c.up()
        assert (c.mnt / "kept").read_bytes() == b"kept across a crash of everything"
        for proc_id in ("m1", "m2", "m3", "cs1", "cs2", "cs3"):
            os.kill(c.pid(proc_id), signal.SIGKILL)
        # Every server dead: down must not wait for the client's operation timeout.
        proc = subprocess.run(
            [sys.executable, "-m", "dfs", "local", "down", "--dir", str(c.state)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert "stopped" in proc.stdout
        assert not any(p["pid"] for p in c.status()["processes"])


def _metaservers(cluster: Cluster) -> dict[str, dict[str, object]]:
    return {p["id"]: p for p in cluster.status()["processes"] if p["role"] == "metaserver"}


def test_kill_leader_metaserver_fails_over_and_it_rejoins(cluster: Cluster) -> None:
    d = cluster.mnt / "failover"
    d.mkdir()
    files = {f"f{i}": os.urandom(300_000 + i * 7919) for i in range(5)}
    for name, data in files.items():
        (d / name).write_bytes(data)
    (d / "sub").mkdir()
    (d / "sub" / "link").symlink_to("../f0")
    leaders = [i for i, p in _metaservers(cluster).items() if p["health"] == "leader"]
    assert len(leaders) == 1
    leader = leaders[0]
    # Nothing in flight: every write above returned.  Kill the leader outright.
    os.kill(cluster.pid(leader), signal.SIGKILL)
    start = time.monotonic()
    (d / "after").write_bytes(b"written after the leader died")
    assert (d / "after").read_bytes() == b"written after the leader died"
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, f"a new file took {elapsed:.1f} s after the leader died"
    for name, data in files.items():
        assert (d / name).read_bytes() == data
    assert os.readlink(d / "sub" / "link") == "../f0"
    assert sorted(os.listdir(d)) == sorted([*files, "after", "sub"])
    metas = _metaservers(cluster)
    assert metas[leader]["health"] == "stopped"
    assert [p["health"] for p in metas.values()].count("leader") == 1
    # ``up`` restarts the killed member; it catches up and follows the new leader.
    cluster.up()
    wait_for(
        lambda: _metaservers(cluster)[leader]["health"] == "follower",
        10,
        f"{leader} to rejoin as a follower",
    )
    wait_for(
        lambda: len({(p["term"], p["applied_index"]) for p in _metaservers(cluster).values()}) == 1,
        10,
        "every metaserver to apply the same log",
    )
    assert (d / "after").read_bytes() == b"written after the leader died"


def _leader(cluster: Cluster) -> str:
    leaders = [i for i, p in _metaservers(cluster).items() if p["health"] == "leader"]
    assert len(leaders) == 1, _metaservers(cluster)
    return leaders[0]


def _rejoined(cluster: Cluster, member: str) -> None:
    cluster.up()
    wait_for(
        lambda: _metaservers(cluster)[member]["health"] == "follower",
        15,
        f"{member} to rejoin as a follower",
    )
    wait_for(
        lambda: len({(p["term"], p["applied_index"]) for p in _metaservers(cluster).values()}) == 1,
        15,
        "every metaserver to apply the same log",
    )


def test_kill_leader_during_tar_extract(
    cluster: Cluster, source_tarball: Path, tmp_path: Path
) -> None:
    """``kill -9`` of the metadata leader while ``tar -xzf`` runs: tar finishes without an
    error and the tree equals a local extraction (mutations in flight are retried in their
    session and applied once: no EEXIST, no lost or doubled entry)."""
    local = tmp_path / "local"
    local.mkdir()
    sh(f"tar -xzf {source_tarball}", cwd=local)
    remote = cluster.mnt / "tar-failover"
    remote.mkdir()
    with subprocess.Popen(
        ["tar", "-xzf", str(source_tarball)],
        cwd=remote,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as tar:
        try:
            # Kill once tar is well under way (a few hundred entries written).
            wait_for(
                lambda: sum(1 for _ in remote.rglob("*")) >= 400 or tar.poll() is not None,
                120,
                "tar to extract 400 entries",
            )
            assert tar.poll() is None, "tar finished before the leader could be killed"
            victim = _leader(cluster)
            os.kill(cluster.pid(victim), signal.SIGKILL)
            _, err = tar.communicate(timeout=300)
        finally:
            if tar.poll() is None:
                tar.kill()
    assert tar.returncode == 0, f"tar failed after the leader was killed:\n{err}"
    assert _metaservers(cluster)[victim]["health"] == "stopped"
    sh(f"diff -r --no-dereference {local} {remote}", cwd=tmp_path)
    assert tree_digest(local) == tree_digest(remote)
    _rejoined(cluster, victim)


def test_all_metaservers_killed_and_restarted_lose_nothing(cluster: Cluster) -> None:
    """Every metaserver dies at once (the mount stays): after a restart from disk everything
    acknowledged is there, and an operation issued during the outage completes once the
    group is back (it waits up to ``op_timeout``; it does not fail)."""
    d = cluster.mnt / "total-outage"
    d.mkdir()
    for i in range(50):
        (d / f"f{i}").write_bytes(b"%d" % i)
        (d / f"dir{i}").mkdir()
    os.rename(d / "f0", d / "renamed")
    os.unlink(d / "f1")
    expected = sorted(os.listdir(d))
    for member in ("m1", "m2", "m3"):
        os.kill(cluster.pid(member), signal.SIGKILL)
    # An mkdir issued while no metaserver runs: it must wait, not fail.
    with subprocess.Popen(["mkdir", str(d / "during-outage")], stderr=subprocess.PIPE) as late:
        time.sleep(2.0)
        assert late.poll() is None, "mkdir returned while every metaserver was dead"
        cluster.up()
        assert late.wait(timeout=60) == 0, late.stderr.read() if late.stderr else ""
    assert sorted(os.listdir(d)) == sorted([*expected, "during-outage"])
    for i in range(2, 50):
        assert (d / f"f{i}").read_bytes() == b"%d" % i
    assert (d / "renamed").read_bytes() == b"0"
    metas = _metaservers(cluster)
    assert sorted(str(p["health"]) for p in metas.values()) == ["follower", "follower", "leader"]


def test_sessions_listed_and_evicted(cluster: Cluster) -> None:
    admin = ["--config", str(cluster.state / "admin.toml")]
    listed = json.loads(run_dfs("sessions", *admin, "--json").stdout)
    mounts = [s for s in listed if s["kind"] == "mount" and str(cluster.mnt) in s["label"]]
    assert len(mounts) == 1, listed
    sid = mounts[0]["id"]
    assert mounts[0]["idle_seconds"] is not None and mounts[0]["idle_seconds"] < 10

    # Every chunkserver holds one too (opened at its first heartbeat, renewed by the others).
    def servers() -> list[str]:
        listed = json.loads(run_dfs("sessions", *admin, "--json").stdout)
        return sorted(s["label"] for s in listed if s["kind"] == "chunkserver")

    wait_for(lambda: servers() == ["cs1", "cs2", "cs3"], 15, "every chunkserver's session")
    assert "mount" in run_dfs("sessions", *admin).stdout
    assert run_dfs("sessions", "evict", str(sid), *admin).stdout.strip() == (
        f"session {sid} evicted"
    )
    # The mount notices (keepalive or next mutation) and opens a new session; writes work.
    (cluster.mnt / "after-evict").write_bytes(b"x")
    assert (cluster.mnt / "after-evict").read_bytes() == b"x"
    wait_for(
        lambda: any(
            s["kind"] == "mount" and s["id"] != sid
            for s in json.loads(run_dfs("sessions", *admin, "--json").stdout)
        ),
        15,
        "the mount to open a new session",
    )
    # The admin command's own session ended with it.
    assert not [
        s for s in json.loads(run_dfs("sessions", *admin, "--json").stdout) if s["kind"] == "admin"
    ]
    proc = run_dfs("sessions", "evict", "999999", *admin, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "dfs: error: no session 999999"


def _stored_bytes(cluster: Cluster) -> int:
    return sum(p.stat().st_size for d in cluster.chunk_dirs() for p in d.rglob("*") if p.is_file())


def test_deleting_a_file_frees_its_chunks_on_the_chunkservers(cluster: Cluster) -> None:
    before = _stored_bytes(cluster)
    big = cluster.mnt / "to-delete"
    with open(big, "wb") as f:
        f.write(os.urandom(24 << 20))
        os.fsync(f.fileno())
    grown = _stored_bytes(cluster)
    assert grown - before >= 2 * (24 << 20)  # goal 2: two replicas on disk
    big.unlink()
    # The leader hands the freed chunk ids to their servers in heartbeat replies.
    wait_for(
        lambda: _stored_bytes(cluster) <= before + (1 << 20),
        20,
        "the chunkservers to delete the unlinked file's chunks",
    )
