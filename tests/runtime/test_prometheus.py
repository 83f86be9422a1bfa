"""One Prometheus text writer (workbench.runtime.prometheus) for the app runner's stats, the
engine's registry and the replicas' merged /metrics: same escaping, same TTFT buckets."""

from workbench.cluster.replica import replica_series
from workbench.runtime import prometheus
from workbench.runtime.engine.metrics import Registry
from workbench.runtime.stats import Stats


def test_label_values_escape_backslash_quote_and_newline() -> None:
    assert prometheus.escape('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert prometheus.labels([("app", 'say "hi"\n'), ("n", 3)]) == 'app="say \\"hi\\"\\n",n="3"'


def test_values_keep_every_digit_of_a_counter() -> None:
    assert prometheus.number(12345678) == "12345678"
    assert prometheus.number(12345678.0) == "12345678"
    assert prometheus.number(0.25) == "0.25"
    assert prometheus.number(True) == "1"


def test_histogram_is_cumulative_with_inf_sum_and_count() -> None:
    hist = prometheus.Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        hist.observe(value)
    assert prometheus.family("t", "histogram", "T.", [('a="x"', hist)]) == [
        "# HELP t T.",
        "# TYPE t histogram",
        't_bucket{a="x",le="0.1"} 2',
        't_bucket{a="x",le="1"} 3',
        't_bucket{a="x",le="+Inf"} 4',
        't_sum{a="x"} 7.65',
        't_count{a="x"} 4',
    ]


def _buckets(text: str, metric: str) -> list[str]:
    return [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith(f"{metric}_bucket")
    ]


def test_apps_and_engines_share_one_ttft_bucket_set_and_escaping() -> None:
    stats = Stats()
    stats.first_token(0.04)
    app_text = stats.render_prometheus('chat "v2"\n')
    assert 'workbench_up{app="chat \\"v2\\"\\n"} 1' in app_text
    assert 'workbench_time_to_first_token_seconds_bucket{app="chat \\"v2\\"\\n",le="0.05"} 1' in (
        app_text
    )

    registry = Registry('tiny"\\')
    registry.declare("workbench_engine_time_to_first_token_seconds", "histogram", "TTFT.")
    registry.histogram(
        "workbench_engine_time_to_first_token_seconds", prometheus.TTFT_BUCKETS
    ).observe(0.04)
    engine_text = registry.render()
    assert 'engine="tiny\\"\\\\"' in engine_text
    assert _buckets(app_text, "workbench_time_to_first_token_seconds") == _buckets(
        engine_text, "workbench_engine_time_to_first_token_seconds"
    )

    info = replica_series(
        {"replica": 'r"1', "node": "n", "gpus": [], "device": "cpu", "engine_pid": 7}
    )
    assert 'workbench_replica_info{replica="r\\"1",node="n",gpus="",device="cpu"' in info
