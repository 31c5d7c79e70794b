"""Identifier types shared by every layer.

NewType keeps an inode number from being passed where a chunk id is expected; at run time
they are plain ints (or str for node ids) and cost nothing.
"""

from __future__ import annotations

from typing import NewType

InodeId = NewType("InodeId", int)
ChunkId = NewType("ChunkId", int)
ChunkVersion = NewType("ChunkVersion", int)
NodeId = NewType("NodeId", str)
SessionId = NewType("SessionId", int)
Term = NewType("Term", int)
LogIndex = NewType("LogIndex", int)

ROOT_INODE = InodeId(1)

#: Chunks are 64 MiB; every chunk is checksummed per 64 KiB block.
CHUNK_SIZE = 64 * 1024 * 1024
BLOCK_SIZE = 64 * 1024
BLOCKS_PER_CHUNK = CHUNK_SIZE // BLOCK_SIZE
