"""What each daemon exposes on ``/metrics``: collectors reading its counters at scrape time.

Names follow the Prometheus conventions: ``dfs_`` prefix, base units in the name
(``_bytes``, ``_seconds``), ``_total`` on counters.  The list is in ARCHITECTURE.md
("Observability").
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from dfs.fuse import abi
from dfs.observability.metrics import Family, OpStats, counter, gauge, labelled
from dfs.rpc.dispatch import Dispatcher

if TYPE_CHECKING:
    from dfs.chunkserver.server import Chunkserver
    from dfs.client.fuse_adapter import DfsOperations
    from dfs.client.vfs import Vfs
    from dfs.fuse.session import FuseSession
    from dfs.metaserver.service import MetaService
    from dfs.rpc.server import RpcServer

RAFT_ROLES = ("follower", "pre_candidate", "candidate", "leader")


def info_collector(daemon: str, node_id: str) -> Any:
    import dfs

    version = getattr(dfs, "__version__", "0")

    async def collect() -> Iterable[Family]:
        return [
            labelled(
                "dfs_build_info",
                "Always 1: the daemon kind, its id and the dfs version",
                "gauge",
                ("daemon", "id", "version"),
                {(daemon, node_id, str(version)): 1},
            )
        ]

    return collect


def rpc_collector(dispatcher: Dispatcher, server: RpcServer) -> Any:
    """RPC requests by method and outcome, their latency, and the server's connections."""

    async def collect() -> Iterable[Family]:
        st = server.statistics()
        return [
            *dispatcher.stats.families("dfs_rpc_server", "RPC requests"),
            gauge("dfs_rpc_server_connections", "Open RPC connections", st.connections_open),
            counter(
                "dfs_rpc_server_connections_total",
                "RPC connections accepted",
                st.connections_total,
            ),
            counter(
                "dfs_rpc_server_tls_failures_total",
                "Connections refused at the TLS handshake (plaintext, foreign CA, no role)",
                st.tls_failures,
            ),
            counter(
                "dfs_rpc_server_protocol_errors_total",
                "Connections closed for a protocol error",
                st.protocol_errors,
            ),
        ]

    return collect


def metaserver_collector(service: MetaService) -> Any:
    """Raft state, namespace size, sessions, locks; on the leader, chunk health and replica
    upkeep (only the leader knows the chunkservers and their replicas)."""

    async def collect() -> Iterable[Family]:
        node = service.node
        st = node.statistics()
        ns = service.ns
        out = [
            labelled(
                "dfs_raft_role",
                "1 for this member's current Raft role, 0 for the others",
                "gauge",
                ("role",),
                {(r,): int(st.role == r) for r in RAFT_ROLES},
            ),
            gauge("dfs_raft_is_leader", "1 if this member is the Raft leader", st.role == "leader"),
            gauge("dfs_raft_term", "Current Raft term", st.term),
            gauge("dfs_raft_commit_index", "Highest log index known committed", st.commit_index),
            gauge("dfs_raft_applied_index", "Highest log index applied", st.applied_index),
            gauge("dfs_raft_last_index", "Last index of this member's log", st.last_index),
            gauge("dfs_raft_snapshot_index", "Index of the newest snapshot", st.snapshot_index),
            counter("dfs_raft_proposals_total", "Commands proposed here", st.proposals),
            counter("dfs_raft_fsyncs_total", "Log fsyncs", st.fsyncs),
            counter("dfs_raft_messages_sent_total", "Raft messages sent", st.messages_sent),
            counter(
                "dfs_raft_messages_received_total", "Raft messages received", st.messages_received
            ),
            counter("dfs_raft_snapshots_taken_total", "Snapshots taken", st.snapshots_taken),
            counter("dfs_raft_read_barriers_total", "Read barriers passed", st.read_barriers),
            counter("dfs_raft_lease_reads_total", "Read barriers passed by lease", st.lease_reads),
            gauge(
                "dfs_sessions", "Open client and chunkserver sessions", len(ns.sessions.sessions)
            ),
        ]
        counts = ns.counts()
        out += [
            gauge("dfs_inodes", "Inodes in the namespace", counts["inodes"]),
            gauge("dfs_files", "Regular files in the namespace", counts["files"]),
            gauge("dfs_chunks", "Chunks referenced by files", counts["chunks"]),
        ]
        lock_counts = ns.locks.counts()
        out.append(
            labelled(
                "dfs_locks",
                "Byte-range (posix) and flock locks held",
                "gauge",
                ("kind",),
                {(k,): v for k, v in lock_counts.items() if k in ("posix", "flock")},
            )
        )
        if st.role == "leader":
            out += leader_families(service)
        return out

    return collect


def leader_families(service: MetaService) -> list[Family]:
    registry = service.registry
    now = trio.current_time()
    under, missing = registry.health(now)
    capacity, free, _live = registry.totals(now)
    states: dict[tuple[str, ...], float] = {(s,): 0 for s in ("alive", "dead", "gone")}
    for s in registry.status(now):
        states[(str(s["state"]),)] = states.get((str(s["state"]),), 0) + 1
    keeper = service.keeper
    return [
        gauge("dfs_chunks_under_goal", "Chunks with fewer live replicas than their goal", under),
        gauge("dfs_chunks_missing", "Chunks without any live valid replica", missing),
        gauge(
            "dfs_replicas_corrupt",
            "Replicas known corrupt (not yet deleted)",
            sum(len(h) for h in registry.bad.values()),
        ),
        gauge(
            "dfs_replicas_stale",
            "Replicas at an old version (not yet deleted)",
            sum(len(h) for h in registry.stale.values()),
        ),
        labelled("dfs_chunkservers", "Known chunkservers by state", "gauge", ("state",), states),
        gauge("dfs_cluster_capacity_bytes", "Capacity of the live chunkservers", capacity),
        gauge("dfs_cluster_free_bytes", "Free space on the live chunkservers", free),
        gauge(
            "dfs_replication_suspects",
            "Chunks queued for a check of their replicas (the replication queue)",
            len(registry.suspects),
        ),
        gauge("dfs_replication_copies_in_flight", "Replica copies running", keeper.copying()),
        gauge("dfs_write_leases", "Chunks under a write lease", len(registry.leases)),
        counter("dfs_replication_copies_total", "Replica copies done", keeper.stats["copies"]),
        counter(
            "dfs_replication_copy_failures_total",
            "Replica copies that failed",
            keeper.stats["copy_failures"],
        ),
        counter(
            "dfs_replication_deletes_total",
            "Surplus, stale or corrupt replicas deleted",
            keeper.stats["deletes"],
        ),
        counter(
            "dfs_unheld_chunks_dropped_total",
            "Chunks of failed first writes (never committed, held by no server) dropped",
            keeper.stats["unheld_dropped"],
        ),
    ]


def chunkserver_collector(cs: Chunkserver) -> Any:
    """Bytes read and written, chunks stored, disk use, scrubbing, heartbeats."""

    async def collect() -> Iterable[Family]:
        st = cs.statistics()
        sv, sc = st.service, st.scrub
        out = [
            counter("dfs_chunkserver_reads_total", "Chunk reads served", sv.reads),
            counter("dfs_chunkserver_read_bytes_total", "Bytes of chunk data read", sv.bytes_read),
            counter("dfs_chunkserver_writes_total", "Chunk writes applied", sv.writes),
            counter(
                "dfs_chunkserver_written_bytes_total",
                "Bytes of chunk data written",
                sv.bytes_written,
            ),
            counter("dfs_chunkserver_syncs_total", "Chunk fdatasyncs", sv.syncs),
            counter("dfs_chunkserver_deletes_total", "Chunks deleted", sv.deletes),
            counter(
                "dfs_chunkserver_corrupt_reads_total",
                "Reads that found a corrupt block",
                sv.corrupt_reads,
            ),
            counter(
                "dfs_chunkserver_forward_failures_total",
                "Chained writes failed downstream",
                sv.forward_failures,
            ),
            counter("dfs_chunkserver_replications_total", "Replica copies pulled", sv.replications),
            counter(
                "dfs_chunkserver_replicated_bytes_total",
                "Bytes pulled by replica copies",
                sv.bytes_replicated,
            ),
            counter("dfs_scrub_bytes_total", "Bytes verified by the scrubber", sc.scrubbed_bytes),
            counter(
                "dfs_scrub_chunks_total", "Chunks verified by the scrubber", sc.scrubbed_chunks
            ),
            counter("dfs_scrub_passes_total", "Full scrub passes completed", sc.scrub_passes),
            counter(
                "dfs_scrub_corrupt_found_total",
                "Corrupt replicas found by the scrubber",
                sc.corrupt_found,
            ),
            counter("dfs_chunkserver_heartbeats_total", "Heartbeats answered", st.heartbeats),
            counter(
                "dfs_chunkserver_heartbeat_failures_total",
                "Heartbeats that failed",
                st.heartbeat_failures,
            ),
            gauge("dfs_chunkserver_registered", "1 once registered", cs.registered.is_set()),
        ]
        store = cs.store
        if store is not None:
            chunks, used, capacity, free = await trio.to_thread.run_sync(_store_numbers, store)
            out += [
                gauge("dfs_chunkserver_chunks", "Chunks stored", chunks),
                gauge("dfs_chunkserver_used_bytes", "Bytes of chunk data stored", used),
                gauge("dfs_chunkserver_capacity_bytes", "Bytes this chunkserver may use", capacity),
                gauge("dfs_chunkserver_free_bytes", "Bytes still free for chunks", free),
            ]
        return out

    return collect


def _store_numbers(store: Any) -> tuple[int, int, int, int]:
    return len(store.list_chunks()), store.used_bytes(), store.capacity(), store.free_bytes()


class FuseObserver:
    """Feeds a ``FuseSession``'s ``on_request_done`` into an ``OpStats`` by operation name."""

    def __init__(self) -> None:
        self.stats = OpStats()
        self._names: dict[int, str] = {}
        self._errors: dict[int, str] = {0: "ok"}

    def __call__(self, opcode: int, error: int, seconds: float) -> None:
        name = self._names.get(opcode)
        if name is None:
            name = self._names[opcode] = abi.opcode_name(opcode).lower()
        outcome = self._errors.get(error)
        if outcome is None:
            outcome = self._errors[error] = errno_mod.errorcode.get(-error, str(-error))
        self.stats.observe(name, outcome, seconds)


def client_collector(
    session: FuseSession, observer: FuseObserver, ops: DfsOperations, vfs: Vfs
) -> Any:
    """FUSE requests by operation and outcome with latency, bytes read and written."""

    async def collect() -> Iterable[Family]:
        st = session.statistics()
        v = vfs.statistics()
        return [
            *observer.stats.families("dfs_fuse", "FUSE requests", label="op"),
            gauge("dfs_fuse_requests_in_flight", "FUSE requests being handled", st.in_flight),
            counter("dfs_fuse_interrupts_total", "FUSE requests interrupted", st.interrupts),
            counter("dfs_client_read_bytes_total", "Bytes returned to readers", ops.bytes_read),
            counter(
                "dfs_client_written_bytes_total", "Bytes accepted from writers", ops.bytes_written
            ),
            gauge("dfs_client_open_files", "Files open", v["open_files"]),
            gauge("dfs_client_dirty_bytes", "Written bytes not yet sent", v["dirty_bytes"]),
        ]

    return collect
