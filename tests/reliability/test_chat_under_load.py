"""The chat app under load, crashes and hostile prompts, served the way a researcher serves it.

A module fixture makes a throwaway project (the textgen env built from the repo's lock, the
repo's gradio_apps/chat.py, a tiny random GPT-2 served by an engine the app fronts) and runs
`workbench up`: the supervisors, the app's warm spare, the app runner, the engine and its
continuous batching, all real. Clients speak Gradio's queue
protocol as its browser client does (bench/sse_clients.py: 32 of them in one asyncio
thread, so the server keeps the CPU), plus raw HTTP for what no client sends.

WORKBENCH_SOAK_S sets the soak length (default 60 s, as the issue asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support import report
from tests.support.cli import json_data, workbench
from tests.support.paths import REPO
from tests.support.processes import free_port
from tests.support.projects import textgen_project

sys.path.insert(0, str(REPO / "bench"))
import sse_clients  # noqa: E402 - bench/ is not a package

pytestmark = pytest.mark.usefixtures("demo_envs")

SOAK_S = float(os.environ.get("WORKBENCH_SOAK_S", "60"))
SOAK_CLIENTS = 32
PROMPT = "The try statement"


@dataclass
class Served:
    root: Path
    ports: dict[str, int]

    def url(self, app: str = "chat") -> str:
        return f"http://127.0.0.1:{self.ports[app]}/"

    def ps(self) -> dict[str, dict]:
        proc = workbench("ps", "--json", cwd=self.root)
        return {s["name"]: s for s in json_data(proc.stdout)}

    def healthy(self, app: str = "chat") -> bool:
        try:
            return httpx.get(self.url(app) + "healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("reliability") / "proj"
    root.mkdir()
    ports = {"chat": free_port(), "busy": free_port()}
    apps = "".join(
        f'\n[apps.{name}]\nenv = "textgen"\nfile = "gradio_apps/chat.py"\nport = {port}\n'
        'engine = "tinygpt"\n'
        for name, port in ports.items()
    )
    engine = (
        f'\n[engines.tinygpt]\nenv = "textgen"\nmodel = "models/tiny-gpt"\nport = {free_port()}\n'
    )
    (root / "workbench.toml").write_text(
        f'[project]\nname = "reliability"\n\n[envs.textgen]\n{engine}{apps}'
    )
    textgen_project(root)
    try:
        up = workbench("up", "chat", cwd=root)
        assert up.returncode == 0, up.stderr
        # one request per batch and a queue of 2: the app that has to say "busy"
        busy = workbench("up", "busy", cwd=root, env={"WORKBENCH_MAX_BATCH": "1"})
        assert busy.returncode == 0, busy.stderr
        yield Served(root, ports)
    finally:
        workbench("down", cwd=root)


@dataclass
class Load:
    """Streaming clients (asyncio, Gradio's browser protocol) that repeat requests in a
    thread of their own until stopped; they count what happened."""

    url: str
    clients: int
    max_new_tokens: int = 48
    stop: threading.Event = field(default_factory=threading.Event)
    completed: int = 0
    busy: int = 0
    busy_message: str = ""
    failures: list[str] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        thread.start()
        return thread

    async def _main(self) -> None:
        fn = sse_clients.fn_index(self.url, "generate")
        limits = httpx.Limits(max_connections=2 * self.clients + 4)
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=limits) as http:
            await asyncio.gather(*(self._client(http, fn) for _ in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, fn: int) -> None:
        session = uuid.uuid4().hex[:12]  # one browser tab: its requests share a session
        data = [PROMPT, self.max_new_tokens, 0.8, 50]
        while not self.stop.is_set():
            try:
                result = await sse_clients.stream(http, fn, data, session)
            except sse_clients.Busy as e:
                self.busy += 1
                self.busy_message = str(e)
                await asyncio.sleep(0.2)
                continue
            except Exception as e:  # noqa: BLE001 - every other failure is counted
                self.failures.append(f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.2)
                continue
            self.completed += 1
            if result["text"]:
                self.ttfts.append(result["ttft"])


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def test_soak_32_streaming_clients(served: Served) -> None:
    """32 clients stream for SOAK_S through the chat app and its engine: no request fails,
    and neither the app's memory nor the engine front's grows in the second half.

    The first half is warm-up. The app is a thin Gradio front now (~185 MB, torch stays in
    the engine) that Gradio grows by ~3 KB a request over its first ~10,000 requests, as it
    grew the app before engines (measured: 532 -> 548 MB over 5,000 requests), before it
    levels off (221 -> 226 MB over the next 18,000): a larger share of a smaller process."""
    services = served.ps()
    pid, engine_pid = services["chat"]["pid"], services["tinygpt"]["pid"]
    load = Load(served.url(), SOAK_CLIENTS)
    tokens_before = sse_clients.tokens_total(served.url())
    t0 = time.monotonic()
    thread = load.start()
    time.sleep(max(15.0, SOAK_S / 2))
    rss_start, engine_start = rss_kb(pid), rss_kb(engine_pid)
    completed_start = load.completed
    rss_peak = rss_start
    while time.monotonic() - t0 < SOAK_S:
        time.sleep(2)
        rss_peak = max(rss_peak, rss_kb(pid))
    rss_end, engine_end = rss_kb(pid), rss_kb(engine_pid)
    load.stop.set()
    thread.join(timeout=120)
    wall = time.monotonic() - t0
    tokens = sse_clients.tokens_total(served.url()) - tokens_before
    growth, engine_growth = rss_end / rss_start - 1, engine_end / engine_start - 1
    report.record(
        "soak",
        clients=SOAK_CLIENTS,
        seconds=round(wall, 1),
        completed=load.completed,
        failed=len(load.failures),
        busy=load.busy,
        tok_per_s=round(tokens / wall, 1),
        ttft_p50_ms=round(statistics.median(load.ttfts) * 1000),
        ttft_p99_ms=round(sse_clients.percentile(load.ttfts, 99) * 1000),
        rss_start_mb=round(rss_start / 1024, 1),
        rss_end_mb=round(rss_end / 1024, 1),
        rss_peak_mb=round(rss_peak / 1024, 1),
        rss_growth_pct=round(growth * 100, 2),
        kb_per_request=round((rss_end - rss_start) / max(1, load.completed - completed_start), 2),
        engine_front_mb=round(engine_end / 1024, 1),
        engine_front_growth_pct=round(engine_growth * 100, 2),
    )
    assert not load.failures, load.failures[:5]
    assert load.completed >= SOAK_CLIENTS
    assert served.ps()["chat"]["pid"] == pid, "the app restarted during the soak"
    assert growth < 0.10, f"RSS grew {growth:.1%}: {rss_start} -> {rss_end} kB"
    assert engine_growth < 0.10, f"engine front grew {engine_growth:.1%}"


def test_full_queue_answers_busy_and_serves_the_rest(served: Served) -> None:
    """An app that batches 1 and queues 2, hit by 10 clients at once: the overflow gets
    Gradio's "Queue is full! Please try again." and every accepted request completes."""
    load = Load(served.url("busy"), 10, max_new_tokens=200)
    thread = load.start()
    deadline = time.monotonic() + 60
    while load.busy == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    load.stop.set()
    thread.join(timeout=120)
    report.record("busy", clients=10, completed=load.completed, busy=load.busy)
    assert load.busy > 0 and "Queue is full" in load.busy_message, load.busy_message
    assert not load.failures, load.failures[:5]
    assert load.completed > 0


def wait_for_spare(served: Served, name: str = "chat", timeout: float = 90) -> dict:
    """A service's entry in `ps --json` once its warm spare is ready (an app's has imported
    what the app imports, an engine's has loaded the model)."""
    log = served.root / ".workbench" / "logs" / f"{name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service = served.ps()[name]
        for line in log.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "standby" and entry.get("pid") == service.get("standby_pid"):
                return service
        time.sleep(0.5)
    raise AssertionError(f"no warm spare within {timeout} s: {served.ps()[name]}")


@dataclass
class Killed:
    before: dict  # the service's ps row at the kill
    after: dict  # and 3 s after it was healthy again
    back_s: float
    load: Load
    done_before: int  # requests completed when it was healthy again


def sigkill_under_load(served: Served, name: str, healthz: str) -> Killed:
    """SIGKILL service name (once its warm spare is up) while 4 clients stream through the
    chat app; the seconds until healthz answers 200 again, then 3 s more of load; recorded
    in the report as NAME_sigkill."""
    before = wait_for_spare(served, name)
    load = Load(served.url(), 4)
    thread = load.start()
    time.sleep(3)
    os.kill(before["pid"], signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(healthz, timeout=1).status_code == 200:
                break
        time.sleep(0.05)
    back_s = time.monotonic() - killed
    done_before = load.completed
    time.sleep(3)
    load.stop.set()
    thread.join(timeout=120)
    after = served.ps()[name]
    report.record(
        f"{before['kind']}_sigkill",
        back_healthy_s=round(back_s, 2),
        restarts=after["restarts"] - before["restarts"],
        requests_cut=len(load.failures),
        completed_after=load.completed - done_before,
    )
    return Killed(before, after, back_s, load, done_before)


def test_app_sigkilled_under_load_is_back_within_5s(served: Served) -> None:
    """SIGKILL the app while 4 clients stream: the supervisor promotes the warm spare,
    /healthz answers 200 again within 5 s, ps counts the restart, clients carry on."""
    k = sigkill_under_load(served, "chat", served.url() + "healthz")
    assert k.back_s <= 5, f"healthy again only after {k.back_s:.1f} s"
    assert k.after["restarts"] == k.before["restarts"] + 1
    assert k.after["pid"] == k.before["standby_pid"] and k.after["health"] == "healthy"
    assert k.load.completed > k.done_before, "no request completed after the restart"
    # only the streams that were running at the kill may fail, each with a clear error
    assert len(k.load.failures) <= 4, k.load.failures


def test_engine_sigkilled_under_load_is_back_within_5s(served: Served) -> None:
    """SIGKILL the engine's front (its zygote and cores go with it) while 4 clients stream
    through the chat app: the supervisor promotes the engine's warm spare (a front whose
    zygote has loaded the model), /healthz answers 200 again within 5 s, and the app's
    requests succeed again."""
    port = served.ps()["tinygpt"]["port"]
    k = sigkill_under_load(served, "tinygpt", f"http://127.0.0.1:{port}/healthz")
    assert k.back_s <= 5, f"healthy again only after {k.back_s:.1f} s"
    assert k.after["restarts"] == k.before["restarts"] + 1
    assert k.after["pid"] == k.before["standby_pid"]
    assert k.load.completed > k.done_before, "no request completed after the restart"
    assert len(k.load.failures) <= 4, k.load.failures


# -- hostile prompts ----------------------------------------------------------------------
FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k")
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.lists(st.integers(), max_size=3),
)


ANSWERS: dict[str, int] = {}  # what the hostile prompts got back, by kind


def call(base: str, data: list, timeout: float = 60) -> tuple[str, object]:
    """One request over Gradio's REST API: ("complete", text) or ("error", message)."""
    with httpx.Client(base_url=base, timeout=timeout) as http:
        posted = http.post(  # json.dumps escapes lone surrogates, httpx's encoder fails on them
            "/gradio_api/call/generate",
            content=json.dumps({"data": data}),
            headers={"content-type": "application/json"},
        )
        if posted.status_code != 200:
            return "rejected", posted.status_code
        event_id = posted.json()["event_id"]
        event = None
        with http.stream("GET", f"/gradio_api/call/generate/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    return event, json.loads(line[5:])
    raise AssertionError(f"stream ended without complete/error for {data!r:.200}")


@settings(max_examples=60)
@given(
    prompt=st.one_of(st.text(max_size=3000), anything),
    max_new_tokens=st.one_of(st.integers(-(10**12), 10**12), anything),
    temperature=st.one_of(st.floats(-5, 5), anything),
    top_k=st.one_of(st.integers(-1000, 1000), anything),
)
@example(prompt="", max_new_tokens=8, temperature=0.8, top_k=50)
@example(prompt="x" * 1_000_000, max_new_tokens=8, temperature=0.8, top_k=50)
@example(prompt="\ud800 lone surrogate", max_new_tokens=8, temperature=0.8, top_k=50)
@example(prompt="\x00\x1b[2J", max_new_tokens=8, temperature=0.8, top_k=50)
@example(prompt=PROMPT, max_new_tokens=-1, temperature=0.8, top_k=50)
@example(prompt=PROMPT, max_new_tokens=10**12, temperature=0.8, top_k=50)
@example(prompt=PROMPT, max_new_tokens="12", temperature="nan", top_k=None)
def test_hostile_prompts_get_a_bounded_answer(served, prompt, max_new_tokens, temperature, top_k):
    """Any JSON values for the four inputs: either generated text or a short validation
    message (never a hidden server exception or a traceback), within 60 s."""
    started = time.monotonic()
    kind, value = call(served.url(), [prompt, max_new_tokens, temperature, top_k])
    ANSWERS[kind] = ANSWERS.get(kind, 0) + 1
    assert time.monotonic() - started < 60
    if kind == "complete":
        assert isinstance(value, list) and isinstance(value[0], str), value
    elif kind == "error":
        message = value.get("error") if isinstance(value, dict) else value
        assert isinstance(message, str) and message.strip(), f"an unexplained error: {value}"
        # the app's own checks answer in one line; Gradio's input preprocessing (a string
        # for a slider) explains in a short paragraph naming the component
        assert len(message) < 1000 and "Traceback" not in message, message
    else:
        assert 400 <= value < 500, value


@settings(max_examples=20)
@given(
    prompt=st.text(min_size=1, max_size=150).filter(str.strip),
    max_new_tokens=st.integers(1, 64),
    temperature=st.floats(0.05, 2.0),
    top_k=st.integers(1, 200),
)
def test_any_text_within_the_limits_streams_a_continuation(
    served, prompt, max_new_tokens, temperature, top_k
):
    """Random text (any script, emoji, control characters) with valid settings is served."""
    kind, value = call(served.url(), [prompt, max_new_tokens, temperature, top_k])
    ANSWERS[kind] = ANSWERS.get(kind, 0) + 1
    assert kind == "complete" and isinstance(value[0], str), value


def test_invalid_utf8_and_broken_json_are_rejected(served: Served) -> None:
    """Bytes that are not UTF-8 or not JSON get a 4xx; the app stays healthy."""
    bodies = [
        b'{"data": ["\xff\xfe\xfd", 8, 0.8, 50]}',
        b'{"data": ["abc", 8, 0.8, 50',
        b"\x00" * 1024,
        b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ]
    for body in bodies:
        reply = httpx.post(
            served.url() + "gradio_api/call/generate",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert 400 <= reply.status_code < 500, (body[:40], reply.status_code)
    assert served.healthy()
    report.record("hostile_inputs", **ANSWERS, invalid_bodies_rejected=len(bodies))
