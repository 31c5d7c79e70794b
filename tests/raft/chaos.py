"""One randomized run of the simulated cluster: partitions, crashes (also in the middle of a
slow disk write, after the leader's early sends), drops, duplicates, delays, snapshots,
transfers, lease and ReadIndex reads, clocks drifting within the lease's bound, all drawn from
one seed."""

from __future__ import annotations

import contextlib

from dfs.raft import NotLeader
from tests.raft.sim import Cluster


def chaos_run(seed: int, *, steps: int = 300, nodes: int = 5) -> Cluster:
    c = Cluster(
        nodes,
        seed=seed,
        snapshot_every=16,
        snapshot_keep=4,
        snapshot_chunk_bytes=64,
        snapshot_window_chunks=2,
        max_entries_per_msg=8,
        max_inflight=4,
    )
    rng = c.rng
    ids = list(c.ids)
    reads = 0
    for node in c.nodes.values():
        node.disk_delay = rng.choice([0, 0, 1, 2, 3])
    # Tick rates within the bound the lease assumes (core.py: 12.5 % for the defaults).
    c.tick_rates = {i: 1 + rng.uniform(0, 0.125) for i in ids}
    for k in range(steps):
        r = rng.random()
        if r < 0.4:
            c.propose_at_leader(f"{seed}-{k}".encode())
        elif r < 0.43:
            c.net.isolate(rng.choice(ids))
        elif r < 0.46:
            a, b = rng.sample(ids, 2)
            c.net.cut(a, b)
        elif r < 0.50:
            c.net.recover()
        elif r < 0.515:
            c.crash(rng.choice(ids))
        elif r < 0.55:
            c.restart(rng.choice(ids))
        elif r < 0.56:
            c.net.drop(rng.choice([0.05, 0.2, 0.4]))
        elif r < 0.57:
            c.net.duplicate(rng.choice([0.05, 0.2]))
        elif r < 0.58:
            c.net.delay(rng.choice([1, 2, 4]))
        elif r < 0.59:
            lead = c.leader()
            if lead is not None and lead.writing is None:
                with contextlib.suppress(NotLeader):
                    lead.c.transfer_leadership(rng.choice(ids))
                c._process(lead)
        elif r < 0.62:
            reads += 1
            c.read(rng.choice(ids), f"r{reads}".encode())
        c.step_time()
        if k % 50 == 49:
            c.check_invariants()
    c.check_invariants()
    c.heal_and_converge()
    c.check_invariants()
    c.check_acked()
    return c
