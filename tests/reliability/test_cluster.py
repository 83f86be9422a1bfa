"""A real two-node Ray cluster on this machine (`workbench cluster up --nodes 2`: a head
and a second raylet, each with two GPUs Ray schedules but that do not exist here, all on
127.0.0.1), sweeps whose runs are Ray tasks, and a node lost in the middle of one.

Needs the [ray] extra (`make test-reliability` installs it). One cluster for the module:
about a minute to start on the reference machine, a minute or two per sweep.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.support.cli import json_data, workbench, write_env
from tests.support.processes import is_loopback_ip, listening_sockets, living, process_tree

pytest.importorskip("ray", reason="the [ray] extra is not installed (make test-reliability)")

NOTEBOOK = """
import os, time
from workbench import record
began = time.time()
time.sleep(seconds)
record("device", int(os.environ["CUDA_VISIBLE_DEVICES"]))
record("began", began)
record("ended", time.time())
record("score", x * 2)
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A committed project whose env pins GPU 7 (Ray's assignment must win over it), and a
    two-node cluster for it; stopped by PID at the end."""
    root = tmp_path_factory.mktemp("clusterproj")
    write_env(root, "tiny", "dependencies:\n  - python=3.11\n")
    (root / "workbench.toml").write_text(
        '[project]\nname = "clusterproj"\n[envs.tiny]\ngpus = [7]\n'
    )
    (root / ".gitignore").write_text(".workbench/\nruns/\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wb-tiny", "display_name": "tiny", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1\nseconds = 1.0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(NOTEBOOK)]
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "probe.ipynb")
    proc = workbench("env", "lock", "tiny", cwd=root)
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "project")
    env = {"WORKBENCH_CLUSTER_CACHE": str(tmp_path_factory.mktemp("node-cache"))}
    began = time.monotonic()
    up = workbench(
        "cluster", "up", "--nodes", "2", "--gpus-per-node", "2", "--cpus-per-node", "4",
        "--object-store-mb", "300", "--json", cwd=root, env=env,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        data = json_data(up.stdout)
        data["wall_s"] = time.monotonic() - began
        yield root, data, env
    finally:
        down = workbench("cluster", "down", "--json", cwd=root)
        assert down.returncode == 0, down.stderr
        pids = [n["pid"] for n in json_data(down.stdout)]  # joined nodes too
        left = living(process_tree(*pids))
        assert not left, f"cluster processes left after down: {left}"


def test_every_socket_of_the_cluster_listens_on_loopback(cluster) -> None:
    root, data, _ = cluster
    assert [n["role"] for n in data["nodes"]] == ["head", "worker"]
    assert [n["state"] for n in data["cluster_nodes"]] == ["ALIVE", "ALIVE"]
    assert all(n["resources"]["GPU"] == 2 for n in data["cluster_nodes"])
    tree = process_tree(*[n["pid"] for n in data["nodes"]])
    sockets = listening_sockets(tree)
    assert len(sockets) >= 10, sockets  # GCS, raylets, dashboard, agents, workers
    exposed = [s for s in sockets if not is_loopback_ip(s.address)]
    assert not exposed, exposed
    print(
        f"cluster up: {data['wall_s']:.1f} s, {data['processes']} processes, "
        f"{data['memory_mb']} MB PSS"
    )
    line = workbench("tunnel", "--print", cwd=root).stdout
    port = data["dashboard"].rsplit(":", 1)[1].strip("/")
    assert f"127.0.0.1:{port}:127.0.0.1:{port}" in line


def _overlapping(a: dict, b: dict) -> bool:
    return (
        a["metrics"]["began"] < b["metrics"]["ended"]
        and b["metrics"]["began"] < a["metrics"]["ended"]
    )


def test_sweep_of_six_runs_lands_six_records_on_distinct_gpus(cluster) -> None:
    """Six runs as Ray tasks with one GPU each: six records in the driver's runs/, with
    node and GPU ids; runs that overlap on a node have distinct GPUs; each kernel saw
    Ray's GPU, not the GPU 7 the manifest pins."""
    root, data, env = cluster
    began = time.monotonic()
    proc = workbench(
        "sweep", "notebooks/probe.ipynb", "-p", "x", "1,2,3,4,5,6", "-p", "seconds", "4",
        "--gpus-per-run", "1", "--cluster", data["address"], "--json", cwd=root, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = json_data(proc.stdout)["runs"]
    print(f"cluster sweep of 6 runs: {time.monotonic() - began:.1f} s")
    assert [r["status"] for r in runs] == ["ok"] * 6
    assert sorted(r["metrics"]["score"] for r in runs) == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    for run in runs:
        record = json.loads((root / "runs" / run["id"] / "record.json").read_text())
        assert record["sweep"] and record["node"].startswith("127.0.0.1/")
        assert record["gpus"] == [str(int(run["metrics"]["device"]))]
        assert run["metrics"]["device"] in (0.0, 1.0), "the manifest's pin beat Ray"
        assert (root / record["output"]).is_file()
    assert len({r["node"] for r in runs}) == 2, "both nodes ran some"
    for a in runs:
        for b in runs:
            if a is not b and a["node"] == b["node"] and _overlapping(a, b):
                assert a["gpus"] != b["gpus"], (a, b)


def _raylet_of(node_pid: int) -> int:
    for pid in process_tree(node_pid):
        try:
            if b"/raylet" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                return pid
        except OSError:
            continue
    raise AssertionError("no raylet under the worker node")


def _running_under(node_pid: int) -> int:
    count = 0
    for pid in process_tree(node_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        count += b"workbench" in argv and b"run" in argv
    return count


def test_lost_node_runs_are_retried_and_every_run_completes(cluster) -> None:
    """The second node's raylet is SIGKILLed while it runs notebooks: every run still
    completes (on the head), and the records of those that were lost say where."""
    root, data, env = cluster
    worker = next(n for n in data["nodes"] if n["role"] == "worker")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "workbench", "sweep", "notebooks/probe.ipynb",
         "-p", "x", "1,2,3,4,5,6", "-p", "seconds", "15", "--gpus-per-run", "1",
         "--cluster", data["address"], "--json"],
        cwd=root,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while _running_under(worker["pid"]) < 1 and time.monotonic() < deadline:
            assert sweep.poll() is None, sweep.stderr.read()
            time.sleep(0.5)
        assert _running_under(worker["pid"]) >= 1, "no run reached the second node"
        os.kill(_raylet_of(worker["pid"]), signal.SIGKILL)
        out, err = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, f"{out}\n{err[-3000:]}"  # its runs, and what Ray said
    runs = json_data(out)["runs"]
    assert [r["status"] for r in runs] == ["ok"] * 6
    retried = [r for r in runs if r["attempts"]]
    assert retried, "no run was lost with the node"
    for run in retried:
        record = json.loads((root / "runs" / run["id"] / "record.json").read_text())
        assert record["attempts"] == run["attempts"] and run["attempts"][0]["error"]
    # A run lost before it reported where it started has no node in its attempt; those
    # that had started name the lost node, which is not where they completed.
    known = [r for r in retried if r["attempts"][0]["node"]]
    assert known, retried
    for run in known:
        assert run["attempts"][0]["node"][:12] != run["node"].split("/")[1]


def test_join_adds_a_node_back(cluster) -> None:
    """After the loss, `cluster join` adds a node to the same head: two nodes alive again,
    the new one on loopback too, and `cluster down` (at the end) stops it with the rest."""
    root, data, env = cluster
    joined = workbench(
        "cluster", "join", data["address"], "--gpus", "2", "--cpus", "4", "--json",
        cwd=root, env=env,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    node = json_data(joined.stdout)
    status = json_data(workbench("cluster", "status", "--json", cwd=root).stdout)
    states = sorted(n["state"] for n in status["cluster_nodes"])
    assert states == ["ALIVE", "ALIVE", "DEAD"], states
    sockets = listening_sockets(process_tree(node["pid"]))
    assert sockets and all(is_loopback_ip(s.address) for s in sockets), sockets
