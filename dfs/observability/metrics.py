"""Metrics in the Prometheus text format (version 0.0.4), without a client library.

Two kinds of numbers:

* **live** ones kept on a hot path: ``Histogram`` (latencies) and ``OpStats`` (calls by name
  and outcome plus a latency histogram per name; the RPC dispatcher keeps one, the FUSE
  session feeds one).  Updating one is a dict lookup, a ``bisect`` and two additions;
* **collected** ones read at scrape time from the daemon's own ``statistics()``, its Raft node,
  registry or store: a collector returns ``Family`` objects.

A ``MetricsRegistry`` is per daemon (tests run several daemons in one process, so there is no
global registry) and renders every family of its collectors with ``render()``.

Why no ``prometheus_client``: its default registry is process-global, its metric objects
take a threading lock per update, and we need only the text exposition of values that the
daemons already count; this module is about 200 lines and has no dependency.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

#: Latency buckets in seconds: 0.5 ms to 10 s, about 2.5 times apart.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a decimal point, infinities as ``+Inf``/``-Inf``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


@dataclass
class Family:
    """One metric family: name, help, type, label names and samples by label values."""

    name: str
    help: str
    kind: Kind
    labelnames: Labels = ()
    #: counter/gauge: label values -> value.
    values: dict[Labels, float] = field(default_factory=dict)
    #: histogram: label values -> its histogram data.
    histograms: dict[Labels, HistogramData] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad metric name {self.name!r}")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")
        for label in self.labelnames:
            if not _LABEL.match(label) or label == "le":
                raise ValueError(f"bad label name {label!r}")

    def set(self, value: float, *labels: str) -> Family:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
        self.values[tuple(labels)] = value
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        if self.kind == "histogram":
            for labels, h in sorted(self.histograms.items()):
                cumulative = 0
                for bound, n in zip(h.bounds, h.counts, strict=False):
                    cumulative += n
                    le = f'le="{format_value(float(bound))}"'
                    lines.append(
                        f"{self.name}_bucket{_label_text(self.labelnames, labels, le)} {cumulative}"
                    )
                inf = _label_text(self.labelnames, labels, 'le="+Inf"')
                lines.append(f"{self.name}_bucket{inf} {h.count}")
                lt = _label_text(self.labelnames, labels)
                lines.append(f"{self.name}_sum{lt} {format_value(h.sum)}")
                lines.append(f"{self.name}_count{lt} {h.count}")
        else:
            for labels, value in sorted(self.values.items()):
                lines.append(
                    f"{self.name}{_label_text(self.labelnames, labels)} {format_value(value)}"
                )
        return "\n".join(lines) + "\n"


def counter(name: str, help: str, value: float | None = None) -> Family:
    """A counter family; with ``value``, its one unlabelled sample."""
    f = Family(name, help, "counter")
    return f if value is None else f.set(value)


def gauge(name: str, help: str, value: float | None = None) -> Family:
    """A gauge family; with ``value``, its one unlabelled sample."""
    f = Family(name, help, "gauge")
    return f if value is None else f.set(value)


def labelled(
    name: str, help: str, kind: Kind, labelnames: Labels, values: Mapping[Labels, float]
) -> Family:
    """A family of ``kind`` with one sample per entry of ``values``."""
    f = Family(name, help, kind, labelnames)
    for labels, value in values.items():
        f.set(value, *labels)
    return f


@dataclass
class HistogramData:
    """Bucket counts (not cumulative; the last slot counts values above every bound)."""

    bounds: tuple[float, ...]
    counts: list[int]
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> HistogramData:
        return HistogramData(self.bounds, list(self.counts), self.sum, self.count)


class Histogram:
    """A live histogram keyed by label values (e.g. one per RPC method)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be sorted and distinct")
        self.bounds = bounds
        self._data: dict[Labels, HistogramData] = {}

    def observe(self, labels: Labels, value: float) -> None:
        h = self._data.get(labels)
        if h is None:
            h = self._data[labels] = HistogramData(self.bounds, [0] * (len(self.bounds) + 1))
        h.observe(value)

    def snapshot(self) -> dict[Labels, HistogramData]:
        return {k: v.copy() for k, v in self._data.items()}

    def family(self, name: str, help: str, labelnames: Labels) -> Family:
        f = Family(name, help, "histogram", labelnames)
        f.histograms = self.snapshot()
        return f


class OpStats:
    """Calls by ``(name, outcome)`` and latency by name: the shape of an RPC dispatcher's or
    a FUSE session's operations.  ``outcome`` is ``"ok"`` or an error code."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}
        self.latency = Histogram()

    def observe(self, name: str, outcome: str, seconds: float) -> None:
        key = (name, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        self.latency.observe((name,), seconds)

    def families(self, prefix: str, what: str, label: str = "method") -> list[Family]:
        """``<prefix>_requests_total{label,outcome}`` and
        ``<prefix>_request_duration_seconds{label}``."""
        return [
            labelled(
                f"{prefix}_requests_total",
                f"{what} handled, by {label} and outcome (ok or the error code)",
                "counter",
                (label, "outcome"),
                {k: float(v) for k, v in self.calls.items()},
            ),
            self.latency.family(
                f"{prefix}_request_duration_seconds",
                f"Seconds to handle one of the {what}, by {label}",
                (label,),
            ),
        ]


#: A collector returns families (possibly computing them in a worker thread).
Collector = Callable[[], Awaitable[Iterable[Family]]]


class MetricsRegistry:
    """The families one daemon exposes; ``render`` asks every collector at scrape time."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def add(self, collector: Collector) -> None:
        self._collectors.append(collector)

    async def collect(self) -> list[Family]:
        out: list[Family] = []
        for collector in self._collectors:
            out.extend(await collector())
        return out

    async def render(self) -> str:
        families = await self.collect()
        seen: set[str] = set()
        parts = []
        for f in families:
            if f.name in seen:
                raise ValueError(f"metric {f.name!r} is collected twice")
            seen.add(f.name)
            parts.append(f.render())
        return "".join(parts)
