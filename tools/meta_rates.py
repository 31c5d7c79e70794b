#!/usr/bin/env python3
"""Sequential metadata rates through a mount: create, cold stat, mkdir, rename, unlink.

    python3 tools/meta_rates.py DIR [--count N]

Works in DIR/meta-rates-<pid> and removes nothing else; one process, one operation at a time
(the latency-bound case, as `tar` and `cp -r` see it). Needs root for the cold stat (it drops
the page cache), otherwise the stat figure is warm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable


def rate(label: str, count: int, fn: Callable[[int], object]) -> float:
    t0 = time.perf_counter()
    for i in range(count):
        fn(i)
    ops = count / (time.perf_counter() - t0)
    print(f"{label:<8} {ops:8.0f} ops/s")
    return ops


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--count", type=int, default=1000)
    args = p.parse_args()
    base = os.path.join(args.dir, f"meta-rates-{os.getpid()}")
    os.makedirs(base)
    n = args.count
    try:
        rate("create", n, lambda i: os.close(os.open(f"{base}/f{i}", os.O_CREAT | os.O_WRONLY)))
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError:
            print("(not root: the stat figure is warm)")
        rate("stat", n, lambda i: os.stat(f"{base}/f{i}"))
        rate("mkdir", n, lambda i: os.mkdir(f"{base}/d{i}"))
        rate("rename", n, lambda i: os.rename(f"{base}/f{i}", f"{base}/g{i}"))
        rate("unlink", n, lambda i: os.unlink(f"{base}/g{i}"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
