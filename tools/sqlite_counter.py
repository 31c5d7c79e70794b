#!/usr/bin/env python3
"""Two SQLite processes on two mounts of one cluster increment one counter (SQLite coordinates
with fcntl locks), then check the count and ``PRAGMA integrity_check``.

    .venv/bin/python tools/sqlite_counter.py [--transactions 1000] [--json OUT]

Brings up a fresh ``dfs local up`` cluster (three metaservers, three chunkservers) mounted at
A, mounts a second client at B, runs one process per mount doing ``--transactions`` times
``BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT``, and prints the final count, the integrity check
and the time taken.  Exit 0 when the count is exact and the database is intact.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clustertools import DFS, dfs

_COUNT = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=600, isolation_level=None)
for _ in range(int(sys.argv[2])):
    con.execute("begin immediate")
    (v,) = con.execute("select n from c").fetchone()
    con.execute("update c set n = ?", (v + 1,))
    con.execute("commit")
con.close()
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transactions", type=int, default=1000, help="per process")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    if args.transactions < 1:
        print("sqlite_counter: --transactions must be at least 1", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="dfs-sqlite-", dir="/var/tmp"))
    state, a, b = work / "state", work / "a", work / "b"
    dfs("local", "up", "--dir", str(state), "--mount", str(a))
    b.mkdir()
    mount_b = subprocess.Popen(
        [*DFS, "mount", str(b), "--config", str(state / "client.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(b):
            if time.monotonic() > deadline:
                print("sqlite_counter: the second mount did not come up", file=sys.stderr)
                return 2
            time.sleep(0.1)
        con = sqlite3.connect(a / "counter.db")
        con.execute("create table c (n integer)")
        con.execute("insert into c values (0)")
        con.commit()
        con.close()
        t0 = time.monotonic()
        procs = [
            subprocess.Popen([sys.executable, "-c", _COUNT, str(m / "counter.db"), str(n)])
            for m, n in ((a, args.transactions), (b, args.transactions))
        ]
        codes = [p.wait() for p in procs]
        took = time.monotonic() - t0
        con = sqlite3.connect(b / "counter.db")
        (count,) = con.execute("select n from c").fetchone()
        (integrity,) = con.execute("pragma integrity_check").fetchone()
        con.close()
        result = {
            "transactions_per_process": args.transactions,
            "exit_codes": codes,
            "count": count,
            "expected": 2 * args.transactions,
            "integrity_check": integrity,
            "seconds": round(took, 1),
            "transactions_per_s": round(2 * args.transactions / took, 1),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        ok = codes == [0, 0] and count == 2 * args.transactions and integrity == "ok"
        return 0 if ok else 1
    finally:
        mount_b.send_signal(signal.SIGTERM)
        try:
            mount_b.wait(20)
        except subprocess.TimeoutExpired:
            mount_b.kill()
        subprocess.run(["umount", "-l", str(b)], capture_output=True, check=False)
        dfs("local", "down", "--dir", str(state))


if __name__ == "__main__":
    sys.exit(main())
