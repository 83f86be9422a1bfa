"""Hostile requests to an engine's OpenAI API: every answer is 200 or a JSON error in 4xx
(never a 500, a traceback or a hang), and the engine stays healthy.

A module fixture serves a tiny random GPT-2 (tests/test_apps.BUILD_GPT) from the repo's
textgen env with `python -m workbench.runtime.engine`; hypothesis draws request bodies:
any JSON for each field the API reads, lone surrogates, huge numbers, wrong types.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest
import report
from conftest import REPO, free_port
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_apps import build_tiny_gpt

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
        proc = subprocess.Popen(
            [str(TEXTGEN), "-m", "workbench.runtime.engine", "--name", "gpt"]
            + ["--model", str(tmp / "gpt"), "--port", str(port), "--max-tokens", "32"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    try:
        yield url, tmp / "engine.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        report.record("engine_inputs", **ANSWERS)


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
