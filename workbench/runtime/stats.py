"""Thread-safe serving statistics of an app, rendered in Prometheus text format.

The app runner counts requests, errors and queue depth; apps add time to first token and
tokens with::

    from workbench.runtime.stats import stats

which every env can import (also when the app runs standalone, where nobody reads them).
Counters are process-wide (one app per runner process).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from workbench.runtime import prometheus

# tokens/s is averaged over generations that finished within this window.
RATE_WINDOW_S = 60.0
# What render_prometheus writes, in order: name, type, help.
METRICS = (
    ("workbench_up", "gauge", "1 once the app is loaded and serving, 0 while it starts."),
    ("workbench_requests_total", "counter", "Requests (events) started."),
    ("workbench_errors_total", "counter", "Requests that ended in an error."),
    ("workbench_in_flight", "gauge", "Requests running now."),
    ("workbench_queue_depth", "gauge", "Requests waiting in the queue."),
    ("workbench_time_to_first_token_seconds", "histogram", "Time from request to first token."),
    ("workbench_tokens_total", "counter", "Tokens generated."),
    ("workbench_tokens_per_second", "gauge", "Generation throughput over the last minute."),
    ("workbench_uptime_seconds", "gauge", "Seconds since the runner started."),
)


class Stats:
    """A registry of counters, one gauge and a TTFT histogram; every method is thread-safe."""

    def __init__(self, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.started_at = clock()
        self.requests_total = 0
        self.errors_total = 0
        self.in_flight = 0
        self.queue_depth = 0
        self.ttft = prometheus.Histogram(prometheus.TTFT_BUCKETS)
        self.tokens_total = 0
        self._recent: deque[tuple[float, int, float]] = deque()  # (finished_at, tokens, secs)

    # -- requests -------------------------------------------------------------------------
    def request_started(self) -> None:
        with self._lock:
            self.requests_total += 1
            self.in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)

    def request_error(self) -> None:
        """Count an error; call in addition to (not instead of) request_finished."""
        with self._lock:
            self.errors_total += 1

    # -- queue ----------------------------------------------------------------------------
    def set_queue_depth(self, n: int) -> None:
        with self._lock:
            self.queue_depth = max(0, int(n))

    # -- generation -----------------------------------------------------------------------
    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def tokens(self, n: int, seconds: float) -> None:
        """Record one finished (or stopped) generation: n new tokens in `seconds` of wall time."""
        now = self._clock()
        with self._lock:
            self.tokens_total += int(n)
            self._recent.append((now, int(n), max(0.0, seconds)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def recent_tokens_per_second(self) -> float:
        """Tokens per generation-second over generations finished in the last minute."""
        with self._lock:
            self._trim(self._clock())
            toks = sum(r[1] for r in self._recent)
            secs = sum(r[2] for r in self._recent)
        return toks / secs if secs > 0 else 0.0

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "errors_total": self.errors_total,
                "in_flight": self.in_flight,
                "queue_depth": self.queue_depth,
                "ttft_count": self.ttft.count,
                "ttft_sum": self.ttft.sum,
                "tokens_total": self.tokens_total,
                "uptime_s": self._clock() - self.started_at,
            }

    # -- exposition -----------------------------------------------------------------------
    def render_prometheus(self, app_name: str, up: bool = True) -> str:
        """Prometheus text exposition (version 0.0.4) of every metric, labelled app=NAME."""
        rate = self.recent_tokens_per_second()
        label_text = prometheus.labels([("app", app_name)])
        with self._lock:
            values = {
                "workbench_up": 1 if up else 0,
                "workbench_requests_total": self.requests_total,
                "workbench_errors_total": self.errors_total,
                "workbench_in_flight": self.in_flight,
                "workbench_queue_depth": self.queue_depth,
                "workbench_time_to_first_token_seconds": self.ttft,
                "workbench_tokens_total": self.tokens_total,
                "workbench_tokens_per_second": rate,
                "workbench_uptime_seconds": self._clock() - self.started_at,
            }
            lines = []
            for name, kind, text in METRICS:
                lines += prometheus.family(name, kind, text, [(label_text, values[name])])
        return "\n".join(lines) + "\n"


stats = Stats()
