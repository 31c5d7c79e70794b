"""dfs: a distributed POSIX file system (Raft metadata, replicated chunks, FUSE client)."""

__version__ = "0.1.0"
