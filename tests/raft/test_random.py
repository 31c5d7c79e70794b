"""Randomized simulation: many seeds of partitions, crashes, drops, duplicates, delays,
snapshots, transfers and reads; the invariants are checked during and after each run, and
every acknowledged proposal must survive.  A failure names its seed: rerun it alone with
``chaos_run(seed)``."""

from __future__ import annotations

import pytest

from tests.raft.chaos import chaos_run

pytestmark = pytest.mark.sim

SEEDS = 200


@pytest.mark.parametrize("batch", range(10))
def test_random_schedules_keep_raft_invariants(batch: int) -> None:
    for seed in range(batch * SEEDS // 10, (batch + 1) * SEEDS // 10):
        try:
            c = chaos_run(seed, steps=300, nodes=5 if seed % 2 else 3)
        except Exception as exc:  # any failure, also one raised inside the core
            raise AssertionError(f"chaos run failed [seed={seed}]: {exc!r}") from exc
        assert c.leader() is not None, f"seed={seed}"
