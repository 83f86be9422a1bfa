"""An engine's Prometheus metrics: counters, gauges and histograms, rendered as text
exposition format 0.0.4 (workbench.runtime.prometheus). Updated only from the front's event
loop, so no locks; nothing here ever holds a request's content or a key."""

from __future__ import annotations

from typing import Callable

from workbench.runtime import prometheus
from workbench.runtime.prometheus import Histogram

# seconds between two tokens of one stream (time to first token: prometheus.TTFT_BUCKETS)
TOKEN_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)
# seconds a request waits for its batch, and a batch runs (a task that answers at once)
QUEUE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


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
            series = sorted(self.values[name].items())
            lines += prometheus.family(
                name, kind, text, [(prometheus.labels(self.base + key), v) for key, v in series]
            )
        return "\n".join(lines) + "\n"
