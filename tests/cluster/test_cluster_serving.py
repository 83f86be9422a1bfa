"""An engine on Ray Serve, the parts that need no cluster: how a replica merges its peers'
metrics, places its engine (CPU when Ray's GPUs do not exist), builds its environment and
says why an engine stopped; and the commands without Ray installed (the real deployment,
on a real two-node cluster, is tests/reliability/test_cluster_serve.py)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.support.cluster import NO_RAY, gone_deployment
from workbench.cluster.replica import (
    engine_environ,
    merge_metrics,
    placement,
    replica_series,
    why_stopped,
)

ENGINE_METRICS = """# HELP workbench_up 1 once every worker is warm, 0 before.
# TYPE workbench_up gauge
workbench_up{{engine="tiny"}} 1
# HELP workbench_engine_ttft_seconds Time to first token.
# TYPE workbench_engine_ttft_seconds histogram
workbench_engine_ttft_seconds_bucket{{engine="tiny",le="0.1"}} {n}
workbench_engine_ttft_seconds_bucket{{engine="tiny",le="+Inf"}} {n}
workbench_engine_ttft_seconds_sum{{engine="tiny"}} 0.5
workbench_engine_ttft_seconds_count{{engine="tiny"}} {n}
# HELP workbench_engine_queue Requests waiting.
# TYPE workbench_engine_queue gauge
workbench_engine_queue 0
"""


def test_metrics_of_replicas_merge_into_one_exposition_labelled_by_replica() -> None:
    text = merge_metrics(
        [
            ({"replica": "a"}, ENGINE_METRICS.format(n=3)),
            ({"replica": 'b"x'}, ENGINE_METRICS.format(n=5)),
        ]
    )
    lines = text.splitlines()
    assert lines.count("# TYPE workbench_engine_ttft_seconds histogram") == 1
    assert lines.count("# HELP workbench_up 1 once every worker is warm, 0 before.") == 1
    assert 'workbench_up{replica="a",engine="tiny"} 1' in lines
    assert 'workbench_engine_ttft_seconds_count{replica="b\\"x",engine="tiny"} 5' in lines
    assert 'workbench_engine_queue{replica="a"} 0' in lines  # a series without labels
    # a family's samples follow its TYPE line, both replicas' together, as Prometheus needs
    start = lines.index("# TYPE workbench_engine_ttft_seconds histogram")
    block = lines[start + 1 : start + 9]
    assert all(line.startswith("workbench_engine_ttft_seconds_") for line in block), block
    assert not any(line.startswith("workbench_engine_ttft") for line in lines[start + 9 :])
    info = replica_series(
        {"replica": "a", "node": "127.0.0.1/abc", "gpus": ["1"], "device": "cpu", "engine_pid": 7}
    )
    assert 'workbench_replica_info{replica="a",node="127.0.0.1/abc",gpus="1",device="cpu"' in info


def test_a_replica_on_gpus_that_do_not_exist_runs_its_engine_on_the_cpu() -> None:
    assert placement([], node_has_gpus=True) == (True, None)
    assert placement(["0"], node_has_gpus=True) == (False, None)
    cpu, note = placement(["1"], node_has_gpus=False)
    assert cpu and "GPU(s) 1" in note and "runs on the CPU" in note


def test_the_engine_environment_drops_the_ray_workers_python_and_takes_rays_gpus() -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/ray/venv", "VIRTUAL_ENV": "/ray", "HOME": "/h"}
    env = engine_environ(base, {"WORKBENCH_ENV": "textgen"}, ["3"])
    assert env["CUDA_VISIBLE_DEVICES"] == env["WORKBENCH_GPUS_ASSIGNED"] == "3"
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env
    assert env["PATH"] == "/bin" and env["WORKBENCH_ENV"] == "textgen"
    node = {**base, "CUDA_VISIBLE_DEVICES": "0,1"}  # a node's leased GPUs
    assert engine_environ(node, {}, [])["CUDA_VISIBLE_DEVICES"] == ""


def test_why_an_engine_stopped_is_its_last_error_line() -> None:
    lines = [
        '{"level": "info", "msg": "starting"}',
        '{"level": "error", "msg": "model folder /x not found (no config.json there)"}',
        "Traceback (most recent call last):",
    ]
    assert why_stopped(lines) == "model folder /x not found (no config.json there)"
    assert why_stopped(["plain", "last words", ""]) == "last words"
    assert why_stopped([]) == "(no output)"


def test_up_on_a_cluster_says_what_to_install_without_ray(tmp_path: Path) -> None:
    """Without Ray, `up ENGINE --cluster` is one line naming the extra; --replicas without a
    cluster is a usage error."""
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "tiny.yml").write_text("dependencies:\n  - python=3.11\n")
    (tmp_path / "workbench.toml").write_text(
        '[project]\nname = "p"\n[engines.gpt]\nenv = "tiny"\nmodel = "models/gpt"\nport = 8999\n'
    )

    def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", NO_RAY, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
        )

    proc = cli("up", "gpt", "--cluster", "127.0.0.1:6379", "--replicas", "2")
    assert proc.returncode == 2, proc.stderr
    assert "a Ray cluster needs Ray, which is not installed here: pip install" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("up", "gpt", "--replicas", "2", env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "--replicas and --gpus-per-replica need --cluster (or RAY_ADDRESS)" in proc.stderr


def test_a_deployment_whose_cluster_is_gone_is_listed_down_without_ray(tmp_path: Path) -> None:
    """`ps` reads a deployment's record without Ray: listed, its health from Serve's URL
    (down here), exit 1 as for any service not healthy."""
    gone_deployment(tmp_path)
    ps = subprocess.run(
        [sys.executable, "-c", NO_RAY, "ps", "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ps.returncode == 1, ps.stderr
    (row,) = json.loads(ps.stdout)["data"]
    assert (row["name"], row["health"], row["replicas"]) == ("gpt", "down", 2)
    assert row["url"].endswith("/gpt/v1")
