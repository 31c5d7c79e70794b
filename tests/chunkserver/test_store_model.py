"""Model-based test: random writes, truncates and restarts against a bytearray."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dfs.chunkserver.store import ChunkStore
from dfs.types import BLOCK_SIZE, CHUNK_SIZE

pytestmark = pytest.mark.unit

CID = 42
V = 1
#: Most operations stay within a few blocks so that block boundaries are hit often.
NEAR = 4 * BLOCK_SIZE + 1000

offsets = st.one_of(
    st.integers(0, 300),
    st.integers(0, NEAR),
    st.sampled_from([BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE]),
    st.integers(CHUNK_SIZE - 2 * BLOCK_SIZE, CHUNK_SIZE),  # far away: a large zero gap
)
sizes = st.one_of(st.integers(0, 300), st.integers(0, 2 * BLOCK_SIZE + 10))


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dfs-store-model-"))
        self.store = ChunkStore(self.dir, fd_cache_size=2)
        self.model: bytearray | None = None  # None: the chunk does not exist

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        offset=offsets,
        size=sizes,
        fill=st.integers(0, 255),
        sync=st.booleans(),
    )
    def write(self, offset: int, size: int, fill: int, sync: bool) -> None:
        size = min(size, CHUNK_SIZE - offset)
        data = bytes((fill + i) & 0xFF for i in range(size))
        length = self.store.write(CID, V, offset, data, sync)
        model = self.model if self.model is not None else bytearray()
        if offset > len(model):
            model.extend(bytes(offset - len(model)))
        model[offset : offset + size] = data
        self.model = model
        assert length == len(model)

    @rule(length=offsets)
    def truncate(self, length: int) -> None:
        self.store.truncate(CID, V, length)
        model = self.model if self.model is not None else bytearray()
        if length > len(model):
            model.extend(bytes(length - len(model)))
        else:
            del model[length:]
        self.model = model

    @precondition(lambda self: self.model is not None)
    @rule(offset=offsets, size=st.integers(0, 3 * BLOCK_SIZE))
    def read(self, offset: int, size: int) -> None:
        assert self.model is not None
        assert self.store.read(CID, V, offset, size) == self.model[offset : offset + size]

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = ChunkStore(self.dir, fd_cache_size=2)

    @rule()
    def delete(self) -> None:
        assert self.store.delete(CID) == (self.model is not None)
        self.model = None

    @invariant()
    def listed(self) -> None:
        expected = [] if self.model is None else [(CID, V, len(self.model))]
        assert self.store.list_chunks() == expected

    @invariant()
    def near_region_matches(self) -> None:
        """The busy region (and the whole chunk when it is small) reads back as the model."""
        if self.model is not None:
            assert self.store.read(CID, V, 0, NEAR + 1) == self.model[: NEAR + 1]

    @precondition(lambda self: self.model is not None)
    @rule()
    def verify(self) -> None:
        assert self.store.verify(CID) == []


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStoreModel = StoreMachine.TestCase
