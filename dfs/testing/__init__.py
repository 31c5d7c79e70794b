"""Test tooling that ships with the package so that tests, chaos runs and tools share it.

* ``dfs.testing.lincheck``: record histories of concurrent namespace operations and check
  that they are linearizable against a sequential model of the namespace.

Nothing in ``dfs`` proper imports this package.
"""
