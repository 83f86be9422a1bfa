"""An engine's Prometheus metrics: counters, gauges and histograms, rendered as text
exposition format 0.0.4. Updated only from the front's event loop, so no locks; nothing
here ever holds a request's content or a key."""

from __future__ import annotations

import bisect
from typing import Callable

# seconds: time to first token, and the time between two tokens of one stream
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TOKEN_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)


def escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{k}="{escape(v)}"' for k, v in pairs)


class Histogram:
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

    def lines(self, name: str, base: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{{base},le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{base},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{base}}} {self.sum:.6f}")
        out.append(f"{name}_count{{{base}}} {self.count}")
        return out


class Registry:
    """Metrics of one engine, each labelled engine=NAME (plus its own labels)."""

    def __init__(self, engine: str):
        self.base = (("engine", engine),)
        self.help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self.values: dict[str, dict[tuple, object]] = {}
        self.callbacks: list[Callable[[], None]] = []

    def declare(self, name: str, kind: str, text: str) -> None:
        self.help[name] = (kind, text)
        self.values.setdefault(name, {})

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.values[name]
        series[key] = series.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values[name][tuple(sorted(labels.items()))] = value

    def histogram(self, name: str, buckets: tuple[float, ...], **labels: str) -> Histogram:
        key = tuple(sorted(labels.items()))
        series = self.values[name]
        found = series.get(key)
        if found is None:
            found = series[key] = Histogram(buckets)
        return found

    def get(self, name: str, **labels: str) -> object | None:
        return self.values[name].get(tuple(sorted(labels.items())))

    def render(self) -> str:
        for refresh in self.callbacks:
            refresh()
        lines = []
        for name, (kind, text) in self.help.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for key, value in sorted(self.values[name].items()):
                labels = _labels(self.base + key)
                if isinstance(value, Histogram):
                    lines += value.lines(name, labels)
                else:
                    lines.append(f"{name}{{{labels}}} {value:g}")
        return "\n".join(lines) + "\n"
