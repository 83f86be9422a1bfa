"""Prometheus text exposition (format 0.0.4), written one way for every registry: an app
runner's stats, an engine's metrics and the replicas' merged /metrics of a Ray deployment.
Label values are escaped as the format asks, histograms are cumulative, and apps and engines
share one set of time-to-first-token buckets so their dashboards compare.

Runs inside model envs: stdlib only.
"""

from __future__ import annotations

import bisect
from typing import Iterable

# seconds from a request to its first token
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def escape(value: object) -> str:
    """A label value as the format quotes it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(pairs: Iterable[tuple[str, object]]) -> str:
    """The inside of a sample's braces: name="value",..."""
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


def number(value: float) -> str:
    """A sample value: whole numbers without a fraction and with every digit (a counter past
    a million stays exact), other floats as Python's shortest round-tripping form."""
    if isinstance(value, int):
        return str(int(value))
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def family(name: str, kind: str, text: str, series: Iterable[tuple[str, object]]) -> list[str]:
    """A metric family: its HELP and TYPE lines (kind: counter, gauge, histogram), then each
    series, given as (labels(...), a number or a Histogram)."""
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    for label_text, value in series:
        if isinstance(value, Histogram):
            lines += value.lines(name, label_text)
        else:
            lines.append(sample(name, label_text, value))
    return lines


def sample(name: str, label_text: str, value: float) -> str:
    return f"{name}{{{label_text}}} {number(value)}"


class Histogram:
    """Observations counted into buckets (an observation lands in the first bucket whose
    bound is at least its value); rendered cumulative, as the format asks."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += times
        self.sum += value * times
        self.count += times

    def lines(self, name: str, label_text: str) -> list[str]:
        prefix = label_text + "," if label_text else ""
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{{prefix}le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{prefix}le="+Inf"}} {self.count}')
        out.append(sample(f"{name}_sum", label_text, self.sum))
        out.append(sample(f"{name}_count", label_text, self.count))
        return out
