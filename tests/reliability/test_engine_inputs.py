"""Hostile requests to an engine's OpenAI API and to a predict engine's /v2 and /predict
routes: every answer is 200 or a JSON error in 4xx (never a 500, a traceback or a hang), and
the engine stays healthy.

A module fixture serves a tiny random GPT-2 (tests/support/projects.BUILD_GPT) from the repo's
textgen env with `python -m workbench.runtime.engine`; hypothesis draws request bodies:
any JSON for each field the API reads, lone surrogates, huge numbers, wrong types. Another
serves the digits handler (a random CNN of serving/digits.py) from the vision env, fed tensors
of wrong shapes, datatypes and values (NaN, out of range, 10,000 inputs).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support import digits, report
from tests.support.paths import REPO, VISION
from tests.support.processes import free_port, start_interruptible
from tests.support.projects import build_tiny_gpt

pytestmark = pytest.mark.usefixtures("demo_envs")

TEXTGEN = REPO / ".workbench" / "envs" / "textgen" / "bin" / "python"
ANSWERS: dict[str, int] = {}

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine-inputs")
    build_tiny_gpt(tmp / "gpt")
    port = free_port()
    with open(tmp / "engine.log", "w") as log:
        proc = start_interruptible(
            [str(TEXTGEN), "-m", "workbench.runtime.engine", "--name", "gpt"]
            + ["--model", str(tmp / "gpt"), "--port", str(port), "--max-tokens", "32"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"},
        )
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc)
    try:
        yield url, tmp / "engine.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        report.record("engine_inputs", **ANSWERS)


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    """Until the engine answers /healthz 200 (warmed up), it exits, or 180 s pass."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def _check(engine, path: str, body: object) -> None:
    url, _log = engine
    started = time.monotonic()
    content = json.dumps(body).encode()  # ASCII: lone surrogates travel as \ud800 escapes
    headers = {"Content-Type": "application/json"}
    reply = httpx.post(url + path, content=content, headers=headers, timeout=60)
    assert time.monotonic() - started < 60
    ANSWERS[str(reply.status_code)] = ANSWERS.get(str(reply.status_code), 0) + 1
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, reply.text[:300]
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert error["message"] and len(error["message"]) < 1000, error


@settings(max_examples=80)
@given(
    prompt=st.one_of(st.text(max_size=400), st.lists(st.integers(-5, 10**6), max_size=8), anything),
    max_tokens=st.one_of(st.integers(-(10**12), 10**12), anything),
    temperature=st.one_of(st.floats(-5, 5), anything),
    top_p=st.one_of(st.floats(-1, 2), anything),
    top_k=st.one_of(st.integers(-1000, 10**9), anything),
    stop=st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6), anything),
    seed=st.one_of(st.integers(-(2**70), 2**70), anything),
    stream=st.one_of(st.booleans(), anything),
)
@example("\ud800 lone surrogate", 4, 0.8, 1.0, 5, None, None, False)
@example("x", 10**12, "nan", None, None, None, None, True)
@example([0, 1, 10**9], 4, 0.0, 0.5, -1, ["a"] * 5, 2**80, True)
def test_hostile_completion_bodies(
    engine, prompt, max_tokens, temperature, top_p, top_k, stop, seed, stream
) -> None:
    body = {"model": "gpt", "prompt": prompt, "max_tokens": max_tokens}
    body.update(temperature=temperature, top_p=top_p, top_k=top_k, stop=stop, seed=seed)
    body["stream"] = stream
    _check(engine, "/v1/completions", body)


@settings(max_examples=40)
@given(
    messages=st.one_of(
        anything,
        st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system", "assistant", "robot"]),
                    "content": anything,
                }
            ),
            max_size=3,
        ),
    )
)
def test_hostile_chat_bodies(engine, messages) -> None:
    _check(engine, "/v1/chat/completions", {"model": "gpt", "messages": messages, "max_tokens": 4})


def test_broken_bodies_and_the_engine_after_them(engine) -> None:
    url, log = engine
    for body in (b"\xff\xfe", b"{", b"[" * 100_000, b'{"model": "gpt", "prompt": "\xff"}'):
        reply = httpx.post(url + "/v1/completions", content=body, timeout=30)
        assert 400 <= reply.status_code < 500, (body[:20], reply.status_code)
    assert httpx.get(url + "/healthz").status_code == 200
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line["level"] in ("error", "critical")]


# --- a predict engine: the digits handler (a random CNN of serving/digits.py) -------------
PREDICT_ANSWERS: dict[str, int] = {}
numbers = st.one_of(
    st.integers(-20, 40), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)
)


@pytest.fixture(scope="module")
def predict_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-inputs")
    digits.digits_project(root)
    port = free_port()
    with open(root / "engine.log", "w") as log:
        proc = start_interruptible(
            [str(VISION), "-m", "workbench.runtime.engine", "--name", "digits"]
            + ["--model", "models/digits", "--handler", "serving/digits.py:Model"]
            + ["--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env={k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"},
        )
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc)
    try:
        yield url, root / "engine.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        report.record("predict_engine_inputs", **PREDICT_ANSWERS)


def _check_predict(engine, path: str, body: object) -> None:
    """200, or a 4xx whose error is one line: {"error": "..."} on /v2, OpenAI's elsewhere."""
    url, _log = engine
    reply = httpx.post(url + path, content=json.dumps(body).encode(), timeout=60)
    PREDICT_ANSWERS[str(reply.status_code)] = PREDICT_ANSWERS.get(str(reply.status_code), 0) + 1
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, reply.text[:300]
    if reply.status_code != 200:
        error = reply.json()["error"]
        message = error if path.startswith("/v2/") else error["message"]
        assert message and "\n" not in message and len(message) < 400, error


@settings(max_examples=60)
@given(
    shape=st.lists(st.integers(0, 9), max_size=4),
    datatype=st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "FP16"]),
    data=st.lists(numbers, max_size=200) | st.lists(st.lists(numbers, max_size=9), max_size=9),
    name=st.sampled_from(["image", "images", ""]),
    extra=st.booleans(),
)
@example([1, 8, 8], "FP32", [math.nan] * 64, "image", False)
@example([1, 8, 8], "FP32", [17] * 64, "image", False)
@example([2, 8, 8], "FP32", [1.5] * 128, "image", True)
def test_hostile_infer_tensors(predict_engine, shape, datatype, data, name, extra) -> None:
    inputs = [{"name": name, "datatype": datatype, "shape": shape, "data": data}]
    if extra:
        inputs.append({"name": "mask", "datatype": "BOOL", "shape": [1], "data": [True]})
    _check_predict(predict_engine, "/v2/models/digits/infer", {"inputs": inputs})


@settings(max_examples=40)
@given(
    body=st.fixed_dictionaries({"inputs": anything}, optional={"parameters": anything})
    | st.fixed_dictionaries({"instances": st.lists(anything, max_size=6) | anything})
    | anything
)
@example({"instances": [[[0] * 8] * 8] * 10_000})
@example({"inputs": [[math.nan] * 8] * 8})
def test_hostile_predict_bodies(predict_engine, body) -> None:
    _check_predict(predict_engine, "/predict", body)


def test_the_predict_engine_after_hostile_tensors(predict_engine) -> None:
    url, log = predict_engine
    for body in (b"\xff\xfe", b"{", b"[" * 100_000):
        for path in ("/predict", "/v2/models/digits/infer"):
            reply = httpx.post(url + path, content=body, timeout=30)
            assert 400 <= reply.status_code < 500, (path, body[:20], reply.status_code)
    assert httpx.get(url + "/v2/health/ready").status_code == 200
    image = {"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [0.0] * 64}
    reply = httpx.post(url + "/v2/models/digits/infer", json={"inputs": [image]}, timeout=30)
    assert reply.status_code == 200, reply.text
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line["level"] in ("error", "critical")]
