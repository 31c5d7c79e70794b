"""Durable snapshots of the state machine: ``snapshot-<index>.snap`` files in one directory.

A snapshot file is ``seal(b"DFSN", msgpack {index, term, state})`` (see ``durable.seal``: magic,
length, xxh3-64 checksum).  ``state`` is ``Namespace.snapshot_state()``.  Writing goes to a
temporary file which is fsynced, renamed into place, and the directory fsynced, so a crash
leaves either the old newest snapshot or the new one, never a half-written one.  After a new
snapshot is durable the older ones are deleted.

A newest snapshot that fails its checksum is an error, not a reason to fall back to an older
one: the log before it may already be compacted away, so an older snapshot could silently
lose acknowledged operations.

Blocking: call from a worker thread in trio code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgpack

from dfs.metaserver.durable import CorruptFile, atomic_write, seal, unseal

logger = logging.getLogger(__name__)

_MAGIC = b"DFSN"
_PREFIX = "snapshot-"
_SUFFIX = ".snap"


@dataclass(frozen=True)
class Snapshot:
    index: int
    term: int
    state: bytes


class SnapshotStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _files(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.directory.iterdir():
            if p.name.startswith(_PREFIX) and p.name.endswith(_SUFFIX):
                digits = p.name[len(_PREFIX) : -len(_SUFFIX)]
                if digits.isdigit():
                    found.append((int(digits), p))
        return sorted(found)

    def save(self, snap: Snapshot) -> Path:
        """Write ``snap`` durably, then delete older snapshots."""
        payload = msgpack.packb(
            {"index": snap.index, "term": snap.term, "state": snap.state}, use_bin_type=True
        )
        path = self.directory / f"{_PREFIX}{snap.index:020d}{_SUFFIX}"
        atomic_write(path, seal(_MAGIC, payload))
        for index, old in self._files():
            if index < snap.index:
                old.unlink()
        logger.info("snapshot at index %d (term %d, %d bytes)", snap.index, snap.term, len(payload))
        return path

    def load_newest(self) -> Snapshot | None:
        """The newest snapshot, or None when there is none; CorruptFile if it is damaged."""
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()  # left by a crash before the rename: never became a snapshot
        files = self._files()
        if not files:
            return None
        _index, path = files[-1]
        payload = unseal(_MAGIC, path.read_bytes(), path)
        try:
            data = msgpack.unpackb(payload, raw=False)
            snap = Snapshot(int(data["index"]), int(data["term"]), bytes(data["state"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptFile(f"{path}: malformed snapshot: {exc!r}") from exc
        if snap.index != _index:
            raise CorruptFile(f"{path}: holds index {snap.index}")
        return snap
