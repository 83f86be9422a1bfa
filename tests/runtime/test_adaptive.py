"""Adaptive batching (workbench.runtime.engine.adaptive): the fit of a batch's time, and when
waiting for batch-mates pays."""

import pytest

from workbench.runtime.engine.adaptive import Cork


def test_the_fit_recovers_a_linear_batch_time() -> None:
    cork = Cork(max_batch=32, max_wait_s=0.01)
    for n in (1, 2, 4, 8, 16, 32, 3, 5):
        cork.ran(n, 0.002 + 0.0005 * n)
    assert cork.a == pytest.approx(0.0005) and cork.b == pytest.approx(0.002)
    assert cork.cost(10) == pytest.approx(0.007)


def test_one_batch_size_counts_as_fixed_cost_and_the_fit_stays_positive() -> None:
    cork = Cork(max_batch=32, max_wait_s=0.01)
    for _ in range(5):
        cork.ran(1, 0.003)
    assert (cork.a, cork.b) == (0.0, pytest.approx(0.003))
    falling = Cork(max_batch=32, max_wait_s=0.01)
    for n, t in ((1, 0.004), (8, 0.002), (16, 0.001)):
        falling.ran(n, t)
    assert falling.a == 0.0 and falling.b > 0


def test_nothing_waits_before_a_batch_was_measured() -> None:
    cork = Cork(max_batch=32, max_wait_s=0.01)
    for i in range(5):
        cork.arrived(i * 0.0001)
    assert cork.wait(5, oldest=0.0, now=0.0005) == 0.0


def test_a_lone_client_never_waits() -> None:
    """Its next request comes only after its answer: slower than a batch serves it."""
    cork = Cork(max_batch=32, max_wait_s=0.01)
    now = 0.0
    for _ in range(10):
        cork.arrived(now)
        assert cork.wait(1, oldest=now, now=now) == 0.0
        cork.ran(1, 0.002)
        now += 0.003  # the answer's way back and the next request's way in


def test_a_burst_is_waited_for_until_it_ends_or_the_batch_is_full() -> None:
    cork = Cork(max_batch=16, max_wait_s=0.01)
    for n in (1, 4, 8, 16):
        cork.ran(n, 0.004 + 0.0001 * n)  # a large fixed cost: batching pays
    now = 0.0
    for i in range(8):  # one arrival every 0.1 ms
        now = i * 0.0001
        cork.arrived(now)
    waited = cork.wait(8, oldest=0.0, now=now)
    assert 0 < waited <= 0.01
    # the same burst long over: the rate it promised did not come
    assert cork.wait(8, oldest=0.0, now=now + 0.005) == 0.0
    # a full batch never waits, nor does one past max_wait
    assert cork.wait(16, oldest=0.0, now=now) == 0.0
    cork.arrived(0.0107)
    assert cork.wait(9, oldest=0.0, now=0.0107) == 0.0


def test_a_request_of_several_inputs_counts_each() -> None:
    cork = Cork(max_batch=32, max_wait_s=0.01)
    cork.arrived(0.0)
    cork.arrived(0.004, inputs=4)
    assert cork.gap == pytest.approx(0.001)
