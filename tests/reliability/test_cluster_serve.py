"""An engine as a Ray Serve deployment on a real two-node cluster on this machine
(`workbench cluster up --nodes 2 --gpus-per-node 2`: GPUs Ray schedules that do not exist
here, all on 127.0.0.1): `workbench up tinygpt --cluster ADDRESS --replicas 2
--gpus-per-replica 1`, called with the official `openai` client and through the Gradio chat
front, then `workbench down tinygpt`.

The project is a throwaway one (the textgen env built from the repo's lock, the repo's
gradio_apps/chat.py, a tiny random GPT-2) whose manifest pins the env to GPU 7: Ray's
assignment must win. API keys are set, so the engines check them and the front sends one.
Then, on the same cluster, the digits predict engine (a handler, the vision env) with two
replicas, called with httpx and tritonclient.http through Serve's proxy.

Needs the [ray] extra (`make test-reliability` installs it). About two minutes: the cluster,
the env (from the warm uv cache), two replicas, the chat front.
"""

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import digits
from tests.support.cli import json_data, workbench
from tests.support.cluster import gone_deployment
from tests.support.engines import assert_streams_greedy, greedy_texts
from tests.support.processes import (
    free_port,
    is_loopback_ip,
    listening_sockets,
    living,
    process_tree,
)
from tests.support.projects import textgen_project

pytest.importorskip("ray", reason="the [ray] extra is not installed (make test-reliability)")
pytest.importorskip("ray.serve", reason="the [ray] extra is not installed (make test-reliability)")

pytestmark = pytest.mark.usefixtures("demo_envs")

KEY = "sk-serve-" + os.urandom(8).hex()
PROMPTS = ["The try statement", "def f(x):", "Class definitions"]
TOKENS = 24

# A Serve application of someone else's on the same cluster: `down tinygpt` must leave it.
OTHER_APP = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
if sys.argv[2] == "deploy":
    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
    class Other:
        def __call__(self, request):
            return "other"
    serve.run(Other.bind(), name="other", route_prefix="/other")
elif sys.argv[2] == "delete":
    serve.delete("other")
print(sorted(serve.status().applications))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serveproj") / "proj"
    root.mkdir()
    (root / "workbench.toml").write_text(
        '[project]\nname = "serveproj"\n[envs.textgen]\ngpus = [7]\n'
        f'[engines.tinygpt]\nenv = "textgen"\nmodel = "models/tiny-gpt"\nport = {free_port()}\n'
        f'[apps.chat]\nenv = "textgen"\nfile = "gradio_apps/chat.py"\nport = {free_port()}\n'
        'engine = "tinygpt"\n'
    )
    textgen_project(root)
    began = time.monotonic()
    up = workbench(
        "cluster", "up", "--nodes", "2", "--gpus-per-node", "2", "--cpus-per-node", "4",
        "--object-store-mb", "300", "--json", cwd=root,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    cluster = json_data(up.stdout)
    cluster["wall_s"] = time.monotonic() - began
    try:
        yield {"root": root, "cluster": cluster, "address": cluster["address"], "env": {}}
    finally:
        down = workbench("down", cwd=root)
        stopped = workbench("cluster", "down", "--json", cwd=root)
        assert down.returncode == 0, down.stderr
        assert stopped.returncode == 0, stopped.stderr
        left = living(process_tree(*[n["pid"] for n in json_data(stopped.stdout)]))
        assert not left, f"cluster processes left after down: {left}"


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


@pytest.fixture(scope="module")
def deployed(served: dict) -> dict:
    """`up tinygpt --cluster … --replicas 2 --gpus-per-replica 1`, timed, with its ps row
    and its replicas (each with the engine's pid and port, its node and GPUs)."""
    root = served["root"]
    began = time.monotonic()
    up = workbench(
        "up", "tinygpt", "--cluster", served["address"], "--replicas", "2",
        "--gpus-per-replica", "1", "--json", cwd=root, env={"WORKBENCH_API_KEYS": KEY},
    )  # fmt: skip
    wall = time.monotonic() - began
    assert up.returncode == 0, up.stderr
    (row,) = [s for s in json_data(up.stdout) if s["name"] == "tinygpt"]
    base = row["url"].rsplit("/v1", 1)[0]
    replicas = _get(base + "/replicas").json()
    print(f"serve: 2 replicas healthy {wall:.1f} s after `workbench up` (cluster up "
          f"{served['cluster']['wall_s']:.1f} s)")  # fmt: skip
    return {"row": row, "base": base, "replicas": replicas, "up": up, "wall_s": wall}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_two_replicas_each_on_a_gpu_of_its_own_listed_by_ps(served: dict, deployed: dict) -> None:
    """Two replicas, healthy, each with one of Ray's GPUs (not the GPU 7 of the manifest)
    in its engine's CUDA_VISIBLE_DEVICES, on distinct (node, GPU) pairs; `ps` lists the
    engine as running on the cluster and `tunnel --print` forwards Serve's port."""
    row, replicas = deployed["row"], deployed["replicas"]
    assert row["kind"] == "engine" and row["health"] == "healthy"
    assert row["cluster"] == served["address"] and row["replicas"] == 2
    assert row["url"] == f"http://127.0.0.1:{row['port']}/tinygpt/v1"
    assert len(replicas) == 2 and all(r["healthy"] for r in replicas), replicas
    placed = {(r["node"], tuple(r["gpus"])) for r in replicas}
    assert len(placed) == 2, replicas
    for replica in replicas:
        assert len(replica["gpus"]) == 1 and replica["gpus"][0] in ("0", "1"), replica
        assert replica["device"] == "cpu" and "node without GPUs" in replica["note"]
        seen = _environ(replica["engine_pid"])  # what the engine itself was given
        assert seen["CUDA_VISIBLE_DEVICES"] == seen["WORKBENCH_GPUS_ASSIGNED"] == replica["gpus"][0]
    ps = json_data(workbench("ps", "--json", cwd=served["root"]).stdout)
    assert [(s["name"], s["health"], s["replicas"]) for s in ps] == [("tinygpt", "healthy", 2)]
    line = workbench("tunnel", "--print", cwd=served["root"]).stdout
    assert f"127.0.0.1:{row['port']}:127.0.0.1:{row['port']}" in line


def _replica_requests(base: str) -> dict[str, float]:
    """Completions each replica's engine served (from the merged /metrics)."""
    counts: dict[str, float] = {}
    for line in _get(base + "/metrics").text.splitlines():
        if line.startswith("workbench_engine_requests_total{") and "/v1/completions" in line:
            replica = line.split('replica="', 1)[1].split('"', 1)[0]
            counts[replica] = counts.get(replica, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def _ttft(url: str, prompt: str) -> float:
    """Seconds to the first streamed text of a greedy completion."""
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    began = time.perf_counter()
    stream = client.completions.create(
        model="tinygpt", prompt=prompt, max_tokens=8, temperature=0, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - began
            break
    for _ in stream:
        pass
    return first


def test_openai_client_streams_greedy_text_through_serve_spread_over_replicas(
    served: dict, deployed: dict
) -> None:
    """The official client, pointed at Serve's endpoint: streamed text equals greedy
    `generate`; no key is a 401; eight concurrent requests land on both replicas; time to
    first token through Serve beside the same engine called directly."""
    url = deployed["row"]["url"]
    expected = greedy_texts(served["root"] / "models" / "tiny-gpt", PROMPTS, TOKENS)
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    assert_streams_greedy(client, "tinygpt", PROMPTS, expected, TOKENS)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0).models.list()

    before = _replica_requests(deployed["base"])

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)

        async def one(prompt: str) -> str:
            stream = await aclient.completions.create(
                model="tinygpt", prompt=prompt, max_tokens=TOKENS, temperature=0, stream=True
            )
            return "".join([c.choices[0].text async for c in stream])

        texts = await asyncio.gather(*(one(p) for p in PROMPTS * 3))
        await aclient.close()
        return texts

    assert asyncio.run(together()) == expected * 3
    after = _replica_requests(deployed["base"])
    served_now = {r: after[r] - before.get(r, 0) for r in after}
    assert len(served_now) == 2 and all(n > 0 for n in served_now.values()), served_now

    direct = f"http://127.0.0.1:{deployed['replicas'][0]['port']}/v1"
    serve_ttft, direct_ttft = [], []
    for _ in range(5):
        for prompt in PROMPTS:
            serve_ttft.append(_ttft(url, prompt))
            direct_ttft.append(_ttft(direct, prompt))
    print(
        f"serve: TTFT median {statistics.median(serve_ttft) * 1000:.1f} ms through Serve, "
        f"{statistics.median(direct_ttft) * 1000:.1f} ms to the engine directly; "
        f"requests per replica {sorted(served_now.values())}"
    )


def test_the_chat_front_streams_from_the_serve_endpoint(served: dict, deployed: dict) -> None:
    """`workbench up chat` after the engine went to the cluster: the front is told Serve's
    URL (and a key), and gradio_client streams text the replicas generated."""
    from gradio_client import Client

    root = served["root"]
    before = sum(_replica_requests(deployed["base"]).values())
    up = workbench("up", "chat", "--json", cwd=root, env={"WORKBENCH_API_KEYS": KEY})
    assert up.returncode == 0, up.stderr
    chat = next(s for s in json_data(up.stdout) if s["name"] == "chat")
    assert _environ(chat["pid"])["WORKBENCH_ENGINE_URL"] == deployed["row"]["url"]
    job = Client(chat["url"], verbose=False).submit(
        "The import statement", 40, 0.8, 40, api_name="/generate"
    )
    updates = list(job)
    assert len(updates) >= 1 and updates[-1].strip(), updates
    # the front's warm-up request and this one went through Serve to the replicas
    assert sum(_replica_requests(deployed["base"]).values()) >= before + 2


def test_every_listening_socket_is_on_loopback_and_no_key_leaks(
    served: dict, deployed: dict
) -> None:
    """Every socket the cluster's processes hold (GCS, raylets, Serve's controller, proxy
    and replicas with their gRPC servers, the probes, the engines) listens on 127.0.0.1;
    the API key is in no process's command line, in no log of the project, nowhere in
    Ray's folder (session logs included)."""
    tree = process_tree(*[n["pid"] for n in served["cluster"]["nodes"]])
    engines = {r["engine_pid"] for r in deployed["replicas"]}
    assert engines <= tree, "the engines run outside the cluster's process tree"
    sockets = listening_sockets(tree)
    ports = {s.port for s in sockets}
    assert deployed["row"]["port"] in ports and {r["port"] for r in deployed["replicas"]} <= ports
    exposed = [s for s in sockets if not is_loopback_ip(s.address)]
    assert not exposed, exposed
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            assert KEY.encode() not in cmdline.read_bytes(), cmdline
    state = json_data(workbench("cluster", "status", "--json", cwd=served["root"]).stdout)
    assert state["address"] == served["address"]
    ray_temp = Path(_ray_temp_dir(served["root"]))
    for folder in (served["root"] / ".workbench" / "logs", ray_temp):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 50 << 20:
                with contextlib.suppress(OSError):
                    assert KEY.encode() not in path.read_bytes(), path


def test_a_replica_whose_engine_dies_is_replaced(served: dict, deployed: dict) -> None:
    """SIGKILL one replica's engine: Serve's health check (the engine's /healthz) fails,
    Serve replaces the replica, and two healthy replicas answer again, one with a new
    engine; requests keep being answered meanwhile by the other."""
    killed = deployed["replicas"][0]["engine_pid"]
    began = time.monotonic()
    os.kill(killed, signal.SIGKILL)
    url = deployed["row"]["url"]
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=3)
    deadline = time.monotonic() + 120
    while True:
        replicas = _get(deployed["base"] + "/replicas").json()
        pids = {r["engine_pid"] for r in replicas if r.get("healthy")}
        if len(pids) == 2 and killed not in pids:
            break
        assert time.monotonic() < deadline, f"not replaced in 120 s: {replicas}"
        client.completions.create(model="tinygpt", prompt="x", max_tokens=2)
        time.sleep(1)
    print(f"serve: a killed engine's replica replaced in {time.monotonic() - began:.1f} s")
    deployed["replicas"] = replicas  # the later tests see the engines now running
    done = client.completions.create(model="tinygpt", prompt="def f(x):", max_tokens=4)
    assert done.choices[0].text


def _ray_temp_dir(root: Path) -> str:
    from workbench import project as projects
    from workbench.cluster import nodes

    return nodes.read_state(projects.load(root)).temp_dir


def test_down_deletes_the_deployment_and_its_engines_and_nothing_else(
    served: dict, deployed: dict
) -> None:
    """Another Serve application runs beside it; `down tinygpt` deletes tinygpt's (its
    engines, zygotes and cores exit), leaves the other one and the cluster running."""
    address, root = served["address"], served["root"]
    other = subprocess.run(
        [sys.executable, "-c", OTHER_APP, address, "deploy"], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert "'other'" in other.stdout and "'tinygpt'" in other.stdout
    engines = process_tree(*[r["engine_pid"] for r in deployed["replicas"]])
    assert len(engines) >= 2 * 3, engines  # per engine: the front, its zygote, a core
    workbench("down", "chat", cwd=root)
    down = workbench("down", "tinygpt", "--json", cwd=root)
    assert down.returncode == 0, down.stderr
    assert json_data(down.stdout) == {"tinygpt": True}
    deadline = time.monotonic() + 60
    while [p for p in engines if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in engines if Path(f"/proc/{p}").exists()], "engine processes left"
    assert json_data(workbench("ps", "--json", cwd=root).stdout) == []
    listed = subprocess.run(
        [sys.executable, "-c", OTHER_APP, address, "status"], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert listed.stdout.strip().splitlines()[-1] == "['other']", listed.stdout
    subprocess.run([sys.executable, "-c", OTHER_APP, address, "delete"], timeout=300)


DIGITS_ENGINE = """
[engines.digits]
env = "vision"
model = "models/digits"
handler = "serving/digits.py:Model"
port = {port}
"""


@pytest.fixture(scope="module")
def digits_deployed(served: dict) -> dict:
    """The digits predict engine (a handler, relative to the project) added to the same
    project and deployed on the same cluster: `up digits --cluster … --replicas 2`, with
    the in-process handler's answers to compare with."""
    root = served["root"]
    manifest = (root / "workbench.toml").read_text()
    digits.digits_project(root, model=True)  # the handler, the vision env's files, a CNN
    (root / "workbench.toml").write_text(manifest + DIGITS_ENGINE.format(port=free_port()))
    built = workbench("env", "create", "vision", "--locked", cwd=root)
    assert built.returncode == 0, built.stderr
    reference = digits.in_process(root / "models" / "digits", root=root)
    began = time.monotonic()
    up = workbench(
        "up", "digits", "--cluster", served["address"], "--replicas", "2", "--json",
        cwd=root, env={"WORKBENCH_API_KEYS": KEY},
    )  # fmt: skip
    wall = time.monotonic() - began
    assert up.returncode == 0, up.stderr
    (row,) = [s for s in json_data(up.stdout) if s["name"] == "digits"]
    print(f"serve: digits, 2 replicas healthy {wall:.1f} s after `workbench up`")
    return {"row": row, "base": row["url"].rsplit("/v1", 1)[0], "reference": reference}


def _replica_predictions(base: str) -> dict[str, float]:
    """/predict and /v2 inference requests each replica's engine answered."""
    counts: dict[str, float] = {}
    for line in _get(base + "/metrics").text.splitlines():
        if line.startswith("workbench_engine_requests_total{") and (
            'route="/predict"' in line or "/infer" in line
        ):
            replica = line.split('replica="', 1)[1].split('"', 1)[0]
            counts[replica] = counts.get(replica, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_a_handler_engine_answers_through_serve_as_in_process_then_down(
    served: dict, digits_deployed: dict
) -> None:
    """The digits handler on two replicas: /predict (plain httpx) and /v2/models/digits/infer
    (tritonclient.http on Serve's /digits base path) answer what the handler answers
    in-process; no key is a 401; concurrent requests reach both replicas; `ps` lists it;
    `down digits` deletes it."""
    import numpy as np
    import tritonclient.http as triton

    base, row = digits_deployed["base"], digits_deployed["row"]
    reference = digits_deployed["reference"]
    images, want = reference["images"][:8], reference["answers"][:8]
    replicas = _get(base + "/replicas").json()
    assert len(replicas) == 2 and all(r["healthy"] for r in replicas), replicas
    ps = json_data(workbench("ps", "--json", cwd=served["root"]).stdout)
    assert [(s["name"], s["health"], s["replicas"]) for s in ps] == [("digits", "healthy", 2)]

    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        one = client.post("/predict", json={"inputs": images[0]})
        assert one.status_code == 200, one.text
        assert digits.same_answers([one.json()], want[:1])
        many = client.post("/predict", json={"instances": images})
        assert digits.same_answers(many.json()["predictions"], want)
        refused = httpx.post(base + "/predict", json={"inputs": images[0]}, timeout=60)
        assert refused.status_code == 401, refused.text

    host_port = base.split("://", 1)[1]  # 127.0.0.1:PORT/digits: the client's base path
    triton_client = triton.InferenceServerClient(host_port)
    assert triton_client.is_model_ready("digits", headers=dict(auth))
    tensor = triton.InferInput("image", [len(images), 8, 8], "FP32")
    tensor.set_data_from_numpy(np.array(images, dtype=np.float32), binary_data=True)
    result = triton_client.infer("digits", [tensor], headers=dict(auth))
    labels = result.as_numpy("label").ravel().tolist()
    got = [
        {"label": a, "scores": s}
        for a, s in zip(labels, result.as_numpy("scores").tolist(), strict=True)
    ]
    assert digits.same_answers(got, want)

    before = _replica_predictions(base)

    async def together() -> list[dict]:
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as aclient:
            replies = await asyncio.gather(
                *(aclient.post("/predict", json={"inputs": image}) for image in images * 4)
            )
        return [r.json() for r in replies]

    assert digits.same_answers(asyncio.run(together()), want * 4)
    after = _replica_predictions(base)
    served_now = {r: after[r] - before.get(r, 0) for r in after}
    assert len(served_now) == 2 and all(n > 0 for n in served_now.values()), served_now

    engines = process_tree(*[r["engine_pid"] for r in replicas])
    down = workbench("down", "digits", "--json", cwd=served["root"])
    assert down.returncode == 0, down.stderr
    assert json_data(down.stdout) == {"digits": True}
    deadline = time.monotonic() + 60
    while [p for p in engines if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in engines if Path(f"/proc/{p}").exists()], "engine processes left"
    assert json_data(workbench("ps", "--json", cwd=served["root"]).stdout) == []
    assert row["url"] == f"http://127.0.0.1:{row['port']}/digits/v1"


def test_down_of_a_deployment_whose_cluster_is_gone_forgets_it_at_once(tmp_path: Path) -> None:
    """`down` of an engine whose cluster no longer answers says so at once (Ray itself
    would retry for minutes) and forgets it. No cluster needed: the record points at a
    port where none answers."""
    gone_deployment(tmp_path)
    began = time.monotonic()
    down = workbench("down", "gpt", "--json", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert json_data(down.stdout) == {"gpt": False}
    assert time.monotonic() - began < 30
    assert json_data(workbench("ps", "--json", cwd=tmp_path).stdout) == []
