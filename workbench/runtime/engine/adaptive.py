"""Adaptive batching for the tasks that answer at once (predict, embed): when inputs wait in
a worker, run them now or wait a little for batch-mates.

Like BentoML's CORK dispatcher, the worker fits the time of a batch as t(n) = a*n + b over
its recent batches. It waits only while inputs arrive faster than a batch of the present
size would serve them (one input every `gap` seconds, with gap < t(n) / n): then more
batch-mates come while this batch would run, and each that misses it pays the fixed cost b
again in a batch of its own. So a lone client never waits (its next request comes only
after its answer), while many clients fill the batch. The gap counts the time since the
last arrival, so a burst that has ended is not waited for. max_batch inputs run at once,
and no input waits more than max_wait for batch-mates.
"""

from __future__ import annotations

import collections

WINDOW = 32  # recent batches the fit uses
SMOOTHING = 0.2  # weight of the newest gap between arrivals


class Cork:
    def __init__(self, max_batch: int, max_wait_s: float):
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.samples: collections.deque[tuple[int, float]] = collections.deque(maxlen=WINDOW)
        self.a = self.b = 0.0  # seconds per input, seconds per batch
        self.gap: float | None = None  # seconds between two arrivals, smoothed
        self.last: float | None = None  # when the last input arrived

    def arrived(self, when: float, inputs: int = 1) -> None:
        """inputs arrived at `when` (time.perf_counter())."""
        if self.last is not None and inputs > 0:
            gap = max(0.0, when - self.last) / inputs
            self.gap = gap if self.gap is None else self.gap + SMOOTHING * (gap - self.gap)
        self.last = when

    def ran(self, inputs: int, seconds: float) -> None:
        """A batch of inputs took seconds: refit t(n) = a*n + b."""
        self.samples.append((inputs, seconds))
        self.a, self.b = _fit(self.samples)

    def cost(self, inputs: int) -> float:
        """The expected seconds of a batch of inputs."""
        return self.a * inputs + self.b

    def wait(self, inputs: int, oldest: float, now: float) -> float:
        """Seconds to wait for batch-mates before running the inputs that wait now, the
        oldest since `oldest` (0: run them now)."""
        if inputs >= self.max_batch or self.gap is None or self.last is None:
            return 0.0
        per_input = self.cost(inputs) / max(inputs, 1)
        if self.gap >= per_input:
            return 0.0
        until = min(oldest + self.max_wait_s, self.last + per_input)
        return max(0.0, until - now)


def _fit(samples) -> tuple[float, float]:
    """Least squares a, b of seconds = a * inputs + b, both kept >= 0."""
    count = len(samples)
    mean_n = sum(n for n, _ in samples) / count
    mean_t = sum(t for _, t in samples) / count
    spread = sum((n - mean_n) ** 2 for n, _ in samples)
    if spread == 0:  # one batch size seen: its whole time counts as fixed cost
        return 0.0, mean_t
    a = sum((n - mean_n) * (t - mean_t) for n, t in samples) / spread
    b = mean_t - a * mean_n
    if a < 0:
        return 0.0, mean_t
    if b < 0:
        return sum(t for _, t in samples) / sum(n for n, _ in samples), 0.0
    return a, b
