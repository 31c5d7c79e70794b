"""Suite-wide pytest hooks."""

from __future__ import annotations

import pytest

#: Tests that run after every other one: a failure anywhere else should show before the chaos
#: test's two minutes are spent, and in the first full run with it (2026-11-23) the tests
#: that ran after it took about twice as long as they do alone (the cause is not known yet:
#: its cluster's processes, mounts and tmpfs were gone).
LAST = ("tests/e2e/test_chaos.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.startswith(LAST))  # stable: the rest keep order
