#!/usr/bin/env python3
"""An fsx-style exerciser: a seeded random sequence of I/O operations on one file, each result
checked against an in-memory copy of what the file must hold.

    .venv/bin/python tools/fsx.py [--seed N] [--ops N] [--max-size BYTES] PATH

Operations: read, write (sometimes past the end, leaving a hole), truncate up and down,
fallocate (mode 0, and PUNCH_HOLE|KEEP_SIZE), read and write through a shared mmap (msync'd),
close and reopen, fsync.  After every operation the file's size is compared with the model's;
after every read the bytes are.  A mode of fallocate the file system answers EOPNOTSUPP for is
noted once and left out from then on.  On a mismatch the tail of the operation log and the
first differing offset are printed and the exit status is 1; the same seed replays the same
sequence.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import mmap
import os
import random
import sys
from collections import deque
from collections.abc import Callable

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
LOG_TAIL = 30

_libc = ctypes.CDLL(None, use_errno=True)


class Mismatch(Exception):
    """The file disagrees with the model."""


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """``fallocate(2)`` itself: ``os.posix_fallocate`` would emulate a missing one by writing."""
    rc = _libc.fallocate(
        ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_int64(offset), ctypes.c_int64(length)
    )
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Fsx:
    def __init__(self, path: str, seed: int, max_size: int, out: Callable[[str], None]) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.max_size = max_size
        self.max_len = max(1, min(max_size, 64 * 1024))
        self.out = out
        self.model = bytearray()
        self.log: deque[str] = deque(maxlen=LOG_TAIL)
        self.counts: dict[str, int] = {}
        self.unsupported: set[str] = set()
        self.step = 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    # -- helpers ---------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.log.append(f"{self.step:6d} {text}")

    def data(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def span(self, limit: int) -> tuple[int, int]:
        """An offset below ``limit`` and a length that ends at most at ``max_size``."""
        off = self.rng.randrange(max(1, limit))
        length = self.rng.randint(1, max(1, min(self.max_len, self.max_size - off)))
        return off, length

    def compare(self, off: int, got: bytes, want: bytes | bytearray, what: str) -> None:
        if got == want:
            return
        for i in range(min(len(got), len(want))):
            if got[i] != want[i]:
                at = off + i
                detail = f"first difference at offset {at:#x} ({at}): "
                detail += f"file {got[i : i + 16].hex()} model {bytes(want[i : i + 16]).hex()}"
                break
        else:
            detail = f"length differs: file {len(got)} bytes, model {len(want)} bytes"
        raise Mismatch(f"{what}: {detail}")

    def check_size(self) -> None:
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            raise Mismatch(f"size: file {size:#x} ({size}), model {len(self.model):#x}")

    def set_size(self, size: int) -> None:
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))

    # -- operations ------------------------------------------------------------------------

    def op_read(self) -> None:
        size = len(self.model)
        if size == 0:
            self.note("read (empty file): expect EOF")
            self.compare(0, os.pread(self.fd, 100, 0), b"", "read")
            return
        off, length = self.span(size)
        self.note(f"read  {off:#x} +{length:#x}")
        got = os.pread(self.fd, length, off)
        self.compare(off, got, self.model[off : off + length], "read")

    def op_write(self) -> None:
        off, length = self.span(self.max_size)
        self.note(f"write {off:#x} +{length:#x} (size {len(self.model):#x})")
        data = self.data(length)
        written = os.pwrite(self.fd, data, off)
        if written != length:
            raise Mismatch(f"write: short write of {written} of {length} bytes")
        if off + length > len(self.model):
            self.set_size(off + length)
        self.model[off : off + length] = data

    def op_truncate(self) -> None:
        grow = self.rng.random() < 0.5
        size = len(self.model)
        new = self.rng.randint(size, self.max_size) if grow else self.rng.randint(0, size)
        self.note(f"truncate {size:#x} -> {new:#x}")
        os.ftruncate(self.fd, new)
        self.set_size(new)

    def op_fallocate(self) -> None:
        off, length = self.span(self.max_size)
        self.note(f"fallocate {off:#x} +{length:#x}")
        try:
            fallocate(self.fd, 0, off, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            self.skip("fallocate", e)
            return
        if off + length > len(self.model):
            self.set_size(off + length)

    def op_punch_hole(self) -> None:
        if not self.model:
            self.note("punch_hole (empty file): nothing to do")
            return
        off, length = self.span(len(self.model))
        self.note(f"punch_hole {off:#x} +{length:#x} (size {len(self.model):#x})")
        try:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            self.skip("punch_hole", e)
            return
        end = min(off + length, len(self.model))
        self.model[off:end] = bytes(end - off)

    def skip(self, what: str, e: OSError) -> None:
        self.unsupported.add(what)
        self.counts[what] = self.counts.get(what, 0) - 1  # not done after all
        self.out(f"note: {what} not supported here ({errno.errorcode[e.errno or 0]}), skipped")

    def op_mapread(self) -> None:
        size = len(self.model)
        if size == 0:
            return self.op_read()
        off, length = self.span(size)
        length = min(length, size - off)
        self.note(f"mapread {off:#x} +{length:#x}")
        with mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            got = m[off : off + length]
        self.compare(off, got, self.model[off : off + length], "mapread")
        return None

    def op_mapwrite(self) -> None:
        off, length = self.span(self.max_size)
        end = off + length
        self.note(f"mapwrite {off:#x} +{length:#x} (size {len(self.model):#x})")
        if end > len(self.model):  # a mapping cannot grow the file: extend it first
            os.ftruncate(self.fd, end)
            self.set_size(end)
        data = self.data(length)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        with mmap.mmap(self.fd, len(self.model), mmap.MAP_SHARED, prot) as m:
            m[off:end] = data
            m.flush()  # msync(MS_SYNC)
        self.model[off:end] = data

    def op_reopen(self) -> None:
        self.note("close/reopen")
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)

    def op_fsync(self) -> None:
        self.note("fsync")
        os.fsync(self.fd)

    OPS: tuple[tuple[str, int], ...] = (
        ("read", 20),
        ("write", 20),
        ("truncate", 8),
        ("fallocate", 5),
        ("punch_hole", 5),
        ("mapread", 10),
        ("mapwrite", 10),
        ("reopen", 3),
        ("fsync", 3),
    )

    def run(self, ops: int) -> None:
        for self.step in range(1, ops + 1):
            # the same seed draws the same sequence wherever every operation is supported
            names = [n for n, _ in self.OPS if n not in self.unsupported]
            weights = [w for n, w in self.OPS if n not in self.unsupported]
            name = self.rng.choices(names, weights)[0]
            getattr(self, f"op_{name}")()
            self.counts[name] = self.counts.get(name, 0) + 1
            self.check_size()
        self.step += 1
        self.note(f"final read of {len(self.model):#x} bytes")
        os.lseek(self.fd, 0, os.SEEK_SET)
        got = bytearray()
        while chunk := os.read(self.fd, 1 << 20):
            got += chunk
        self.compare(0, bytes(got), self.model, "final read")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=10_000)
    ap.add_argument("--max-size", type=int, default=256 * 1024, help="largest file size")
    ap.add_argument("path")
    args = ap.parse_args(argv)
    if args.max_size < 1:
        ap.error("--max-size must be positive")
    fsx = Fsx(args.path, args.seed, args.max_size, print)
    try:
        fsx.run(args.ops)
    except (Mismatch, OSError) as e:
        print(f"FAIL seed {args.seed} at op {fsx.step}: {e}")
        print(f"last {len(fsx.log)} operations:")
        for line in fsx.log:
            print("  " + line)
        return 1
    finally:
        fsx.close()
    done = ", ".join(f"{n} {c}" for n, c in sorted(fsx.counts.items()))
    print(f"ok seed {args.seed}: {args.ops} ops ({done}), final size {len(fsx.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
