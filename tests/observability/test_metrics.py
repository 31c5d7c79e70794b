"""The Prometheus text exposition and the live counters (histograms, RPC dispatcher stats)."""

from __future__ import annotations

import math
import re

import pytest
import trio
import trio.testing

from dfs.errors import NotFound
from dfs.observability.metrics import (
    Family,
    Histogram,
    MetricsRegistry,
    OpStats,
    counter,
    format_value,
    gauge,
    labelled,
)
from dfs.rpc.dispatch import Dispatcher
from dfs.security.identity import Peer, Role

pytestmark = pytest.mark.unit

# One sample line of the text format: name, optional labels, value.
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="([^"\\]|\\.)*",?)*\})? \S+$')


def check_exposition(text: str) -> None:
    """Every line is a HELP, a TYPE or a well-formed sample; every family is typed once."""
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in typed, f"{name} typed twice"
            typed.add(name)
            continue
        assert SAMPLE.match(line), f"bad sample line {line!r}"
    assert text.endswith("\n")


def test_values_are_formatted_as_prometheus_expects() -> None:
    assert format_value(3) == "3"
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(True) == "1"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"


def test_gauge_counter_and_labels_render() -> None:
    text = (
        gauge("dfs_x_bytes", "Some bytes", 5).render()
        + counter("dfs_y_total", "Some events", 2).render()
        + labelled(
            "dfs_z", "Z by kind", "gauge", ("kind",), {("a",): 1, ('we"ird\\\n',): 2}
        ).render()
    )
    check_exposition(text)
    assert "# TYPE dfs_x_bytes gauge\ndfs_x_bytes 5\n" in text
    assert "# TYPE dfs_y_total counter\ndfs_y_total 2\n" in text
    assert 'dfs_z{kind="a"} 1' in text
    assert 'dfs_z{kind="we\\"ird\\\\\\n"} 2' in text


def test_bad_names_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="_total"):
        counter("dfs_events", "no _total")
    with pytest.raises(ValueError, match="bad metric name"):
        gauge("dfs-x", "dash")
    with pytest.raises(ValueError, match="bad label name"):
        Family("dfs_x", "h", "gauge", ("le",))
    with pytest.raises(ValueError, match="expected labels"):
        Family("dfs_x", "h", "gauge", ("a",)).set(1)


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0, 3.0):
        h.observe(("m",), v)
    text = h.family("dfs_op_seconds", "Op time", ("method",)).render()
    check_exposition(text)
    assert 'dfs_op_seconds_bucket{method="m",le="0.1"} 2' in text  # le is inclusive
    assert 'dfs_op_seconds_bucket{method="m",le="1"} 3' in text
    assert 'dfs_op_seconds_bucket{method="m",le="+Inf"} 5' in text
    assert 'dfs_op_seconds_sum{method="m"} 5.65' in text
    assert 'dfs_op_seconds_count{method="m"} 5' in text


async def test_registry_renders_every_collector_and_refuses_duplicates() -> None:
    registry = MetricsRegistry()
    stats = OpStats()
    stats.observe("fs.mkdir", "ok", 0.002)
    stats.observe("fs.mkdir", "exists", 0.001)

    async def one() -> list[Family]:
        return [gauge("dfs_a", "A", 1)]

    async def two() -> list[Family]:
        return stats.families("dfs_rpc_server", "RPC requests")

    registry.add(one)
    registry.add(two)
    text = await registry.render()
    check_exposition(text)
    assert 'dfs_rpc_server_requests_total{method="fs.mkdir",outcome="ok"} 1' in text
    assert 'dfs_rpc_server_requests_total{method="fs.mkdir",outcome="exists"} 1' in text
    assert 'dfs_rpc_server_request_duration_seconds_count{method="fs.mkdir"} 2' in text
    registry.add(one)
    with pytest.raises(ValueError, match="twice"):
        await registry.render()


async def test_dispatcher_counts_outcomes_and_latency(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    d = Dispatcher()

    async def slow(peer: Peer, params: dict[str, object]) -> int:
        await trio.sleep(0.3)
        return 1

    async def missing(peer: Peer, params: dict[str, object]) -> None:
        raise NotFound("no")

    d.register("t.slow", slow, roles=[Role.CLIENT])
    d.register("t.missing", missing, roles=[Role.CLIENT])
    peer = Peer("c", Role.CLIENT)
    assert await d.dispatch(peer, "t.slow", {}) == 1
    for _ in range(2):
        with pytest.raises(NotFound):
            await d.dispatch(peer, "t.missing", {})
    for name in ("nope.a", "nope.b"):  # unknown names share one label value
        with pytest.raises(Exception, match="unknown method"):
            await d.dispatch(peer, name, {})
    assert d.stats.calls == {
        ("t.slow", "ok"): 1,
        ("t.missing", "not_found"): 2,
        ("(unknown)", "unknown_method"): 2,
    }
    slow_hist = d.stats.latency.snapshot()[("t.slow",)]
    assert slow_hist.count == 1
    assert slow_hist.sum == pytest.approx(0.3)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock()
