"""A one-line progress bar on a terminal (stderr), silent otherwise.

    bar = Progress("fsck", total=n)
    bar.update(done, note="12.3 MiB/s")
    bar.close()        # ends the line; nothing was written if stderr is not a terminal

Redrawn at most 10 times a second, so callers may update as often as they like.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, *, total: int | None = None, note: str = "") -> None:
        if total is not None:
            self.total = max(total, 0)
        if not self._live:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        width = shutil.get_terminal_size((80, 20)).columns
        counts = f" {done}/{self.total}" if self.total else f" {done}"
        tail = f"{counts} {note}".rstrip()
        room = max(10, width - len(self.label) - len(tail) - 4)
        filled = room if not self.total else min(room, room * done // self.total)
        bar = "#" * filled + "-" * (room - filled)
        self._stream.write(f"\r{self.label} [{bar}]{tail}"[: width - 1])
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
