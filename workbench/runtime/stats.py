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

# Histogram buckets for time to first token, seconds.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# tokens/s is averaged over generations that finished within this window.
RATE_WINDOW_S = 60.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Stats:
    """A registry of counters, one gauge and a TTFT histogram; every method is thread-safe."""

    def __init__(self, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.started_at = clock()
        self.requests_total = 0
        self.requests_finished = 0
        self.errors_total = 0
        self.in_flight = 0
        self.queue_depth = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)
        self.tokens_total = 0
        self.generation_seconds = 0.0
        self._recent: deque[tuple[float, int, float]] = deque()  # (finished_at, tokens, secs)

    # -- requests -------------------------------------------------------------------------
    def request_started(self) -> None:
        with self._lock:
            self.requests_total += 1
            self.in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self.requests_finished += 1
            self.in_flight = max(0, self.in_flight - 1)

    def request_error(self) -> None:
        """Count an error; call in addition to (not instead of) request_finished."""
        with self._lock:
            self.errors_total += 1

    # -- queue ----------------------------------------------------------------------------
    def queue_inc(self, n: int = 1) -> None:
        with self._lock:
            self.queue_depth += n

    def queue_dec(self, n: int = 1) -> None:
        with self._lock:
            self.queue_depth = max(0, self.queue_depth - n)

    def set_queue_depth(self, n: int) -> None:
        with self._lock:
            self.queue_depth = max(0, int(n))

    # -- generation -----------------------------------------------------------------------
    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft_sum += seconds
            self.ttft_count += 1
            for i, bound in enumerate(TTFT_BUCKETS):
                if seconds <= bound:
                    self.ttft_buckets[i] += 1

    def tokens(self, n: int, seconds: float) -> None:
        """Record one finished (or stopped) generation: n new tokens in `seconds` of wall time."""
        now = self._clock()
        with self._lock:
            self.tokens_total += int(n)
            self.generation_seconds += max(0.0, seconds)
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
                "ttft_count": self.ttft_count,
                "ttft_sum": self.ttft_sum,
                "tokens_total": self.tokens_total,
                "uptime_s": self._clock() - self.started_at,
            }

    # -- exposition -----------------------------------------------------------------------
    def render_prometheus(self, app_name: str, up: bool = True) -> str:
        """Prometheus text exposition (version 0.0.4) of every metric, labelled app=NAME."""
        rate = self.recent_tokens_per_second()
        lab = f'app="{_escape(app_name)}"'
        with self._lock:
            lines = [
                "# HELP workbench_up 1 once the app is loaded and serving, 0 while it starts.",
                "# TYPE workbench_up gauge",
                f"workbench_up{{{lab}}} {1 if up else 0}",
                "# HELP workbench_requests_total Requests (events) started.",
                "# TYPE workbench_requests_total counter",
                f"workbench_requests_total{{{lab}}} {self.requests_total}",
                "# HELP workbench_errors_total Requests that ended in an error.",
                "# TYPE workbench_errors_total counter",
                f"workbench_errors_total{{{lab}}} {self.errors_total}",
                "# HELP workbench_in_flight Requests running now.",
                "# TYPE workbench_in_flight gauge",
                f"workbench_in_flight{{{lab}}} {self.in_flight}",
                "# HELP workbench_queue_depth Requests waiting in the queue.",
                "# TYPE workbench_queue_depth gauge",
                f"workbench_queue_depth{{{lab}}} {self.queue_depth}",
                "# HELP workbench_time_to_first_token_seconds Time from request to first token.",
                "# TYPE workbench_time_to_first_token_seconds histogram",
            ]
            for bound, count in zip(TTFT_BUCKETS, self.ttft_buckets, strict=True):
                lines.append(
                    f'workbench_time_to_first_token_seconds_bucket{{{lab},le="{bound}"}} {count}'
                )
            lines += [
                f'workbench_time_to_first_token_seconds_bucket{{{lab},le="+Inf"}} '
                f"{self.ttft_count}",
                f"workbench_time_to_first_token_seconds_sum{{{lab}}} {self.ttft_sum:.6f}",
                f"workbench_time_to_first_token_seconds_count{{{lab}}} {self.ttft_count}",
                "# HELP workbench_tokens_total Tokens generated.",
                "# TYPE workbench_tokens_total counter",
                f"workbench_tokens_total{{{lab}}} {self.tokens_total}",
                "# HELP workbench_tokens_per_second Generation throughput over the last minute.",
                "# TYPE workbench_tokens_per_second gauge",
                f"workbench_tokens_per_second{{{lab}}} {rate:.3f}",
                "# HELP workbench_uptime_seconds Seconds since the runner started.",
                "# TYPE workbench_uptime_seconds gauge",
                f"workbench_uptime_seconds{{{lab}}} {self._clock() - self.started_at:.3f}",
            ]
        return "\n".join(lines) + "\n"


stats = Stats()
