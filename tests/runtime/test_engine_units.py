"""Pieces of the engine's front that need no model: frames between processes, stop strings
and where workers go. (Imported straight from workbench.runtime: standard library only.)"""

import argparse
import asyncio
import json
import logging
import os
import pickle
import random
import subprocess
import sys
import types

import pytest

from workbench.runtime import apikeys, contract
from workbench.runtime.engine import (
    api,
    commandline,
    config,
    protocol,
    responses,
    server,
    settings,
    tasks,
    textproc,
    workers,
)
from workbench.runtime.engine.failures import EngineFailure, Failure
from workbench.runtime.engine.metrics import Registry


def test_frames_survive_any_split_of_the_stream() -> None:
    messages = [("tokens", 3, [("r1", [1, 2], None), ("r2", [], "stop")]), ("ready", {"x": 1})]
    messages += [("failed", "r3", "model_error", "é" * 1000)]
    messages += [("results", [("r4", (b"\0" * 4096, 1024))])]
    data = b"".join(protocol.encode(m) for m in messages)
    rng = random.Random(0)
    for _ in range(50):
        decoder, got, i = protocol.Decoder(), [], 0
        while i < len(data):
            step = rng.randint(1, 300)
            got += decoder.feed(data[i : i + step])
            i += step
        assert got == messages and not decoder.buffer


def test_a_frame_claiming_a_gigabyte_is_refused() -> None:
    with pytest.raises(ValueError, match="engine frame of"):
        protocol.Decoder().feed(protocol.HEADER.pack(protocol.MAX_FRAME + 1) + b"x")
    assert protocol.Decoder().feed(protocol.encode(("x",))[:-1]) == []
    assert pickle.loads(protocol.encode(("x", 1))[4:]) == ("x", 1)


@pytest.mark.parametrize(
    ("pieces", "stops", "out", "stopped"),
    [
        (["Hello wor", "ld! END more"], ["END"], "Hello world! ", True),
        (["abc", "de", "f"], ["xyz"], "abcdef", False),  # held back, then flushed
        (["a<", "|e", "nd|>b"], ["<|end|>", "b"], "a", True),
        (["one ", "two"], [], "one two", False),
        (["xE", "N", "Dy"], ["END", "Dy"], "x", True),  # the earliest stop wins
    ],
)
def test_stop_strings_cut_streamed_text(pieces, stops, out, stopped) -> None:
    cutter = textproc.StopStrings(stops)
    text, hit = "", False
    for piece in pieces:
        part, hit = cutter.feed(piece)
        text += part
        if hit:
            break
    if not hit:
        text += cutter.flush()
    assert (text, hit) == (out, stopped)


def test_text_that_could_start_a_stop_is_held_back_only_that_long() -> None:
    cutter = textproc.StopStrings(["STOP"])
    assert cutter.feed("abcST") == ("abc", False)  # "ST" could be the start of "STOP"
    assert cutter.feed("xyz") == ("STxyz", False)
    assert cutter.feed("ST") == ("", False)
    assert cutter.feed("OP and on") == ("", True)


@pytest.mark.parametrize(
    ("visible", "requested", "expected"),
    [
        ("", "auto", [None]),
        ("0,1", "auto", ["0", "1"]),
        (" 3 ", "auto", ["3"]),
        ("-1", "auto", [None]),
        ("0,1", "cpu", [None]),
        ("2", "cuda", ["2"]),
    ],
)
def test_workers_spread_over_the_visible_gpus(monkeypatch, visible, requested, expected) -> None:
    """No GPU here: CUDA_VISIBLE_DEVICES alone decides (the front never imports torch)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert config.devices(requested) == expected


def test_cuda_without_a_visible_gpu_is_an_error(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match="names no GPU"):
        config.devices("cuda")


def test_keys_come_from_the_environment_and_a_private_file(monkeypatch, tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# one a line\nsk-file\n\n")
    keys.chmod(0o600)
    monkeypatch.setenv(contract.API_KEYS.name, "sk-a, sk-b")
    assert apikeys.read(keys) == ["sk-a", "sk-b", "sk-file"]  # the tool's read keeps it
    assert apikeys.read(keys, remove=True) == ["sk-a", "sk-b", "sk-file"]  # the engine's
    assert contract.API_KEYS.name not in os.environ  # what the cores inherit holds no key
    keys.chmod(0o640)
    with pytest.raises(ValueError, match=r"open to other users \(mode 0640\)"):
        apikeys.read(keys)


def test_the_tool_side_command_line_is_what_the_engine_parses() -> None:
    """workbench.serving.engines.arguments (also what an image's launcher runs) against the
    engine's own parser: every setting of [engines.NAME] arrives."""
    from workbench.project import EngineEntry
    from workbench.serving import engines

    values = dict(
        task="generate", handler="", workers=2, threads=3, max_batch=16, max_wait_ms=5.0,
        max_queue=8, max_requests=500, max_rss_mb=900, max_tokens=256, max_prompt_tokens=1024,
        max_body_kb=64, timeout=12.5,
    )  # fmt: skip
    assert set(values) == {s.name for s in settings.SETTINGS}  # one of each, none left out
    entry = EngineEntry("gpt", "textgen", "models/gpt", 8100, settings.EngineSettings(**values))
    argv = engines.arguments(entry, "/models/gpt", "{host}", "{port}")
    assert argv[:2] == ["-m", "workbench.runtime.engine"]
    parsed = commandline.parser().parse_args([a.replace("{port}", "9000") for a in argv[2:]])
    assert (parsed.name, parsed.model, parsed.host, parsed.port) == (
        "gpt", "/models/gpt", "{host}", 9000
    )  # fmt: skip
    assert {name: getattr(parsed, name) for name in values} == values


def _contract_cases(valid: bool) -> list[tuple[str, str, str]]:
    """(setting, TOML literal, the same value on the engine's command line)."""
    cases = []
    for s in settings.SETTINGS:
        if s.choices:
            good = [(f'"{c}"', c) for c in s.choices]
            bad = [('"chat"', "chat"), ('"AUTO"', "AUTO"), ('""', ""), ("1", "1")]
        elif s.kind is int:
            low = int(s.low)
            good = [(str(low), str(low)), (str(s.default), str(s.default)), ("1_000", "1_000")]
            bad = [(str(low - 1), str(low - 1)), ("1.5", "1.5"), ("1e3", "1e3"), ("nan", "nan")]
            bad += [("inf", "inf"), ("true", "true"), ('"many"', "many"), ("-7", "-7")]
        elif s.kind is str:  # the handler: its file is checked apart (a project's file)
            good = [('""', "")]
            bad = [('"digits.py"', "digits.py"), ('"m:Model"', "m:Model"), ("1", "1")]
            bad += [('"serving/m.py:"', "serving/m.py:"), ('"m.py:1x"', "m.py:1x")]
        else:
            low = f"{s.low:g}"
            good = [(low, low), ("12.5", "12.5"), ("300", "300"), ("1e3", "1e3")]
            bad = [("-1.0", "-1.0"), ("nan", "nan"), ("inf", "inf"), ("-inf", "-inf")]
            bad += [("true", "true"), ('"soon"', "soon")]
            if s.low:
                half = f"{s.low / 2:g}"
                bad += [("0", "0"), (half, half)]
        cases += [(s.name, literal, text) for literal, text in (good if valid else bad)]
    return cases


def _manifest_engine(root, name: str, literal: str):
    from workbench import project as projects

    (root / "workbench.toml").write_text(
        f"[envs.a]\nspec = 'a.yml'\n[engines.e]\nenv = 'a'\nmodel = 'm'\n{name} = {literal}\n"
    )
    return projects.load(root).engine("e").settings


def _parse(name: str, text: str):
    flag = "--" + name.replace("_", "-")
    return commandline.parser().parse_args(["--name", "e", "--model", "m", f"{flag}={text}"])


@pytest.mark.parametrize(("name", "literal", "text"), _contract_cases(valid=False))
def test_the_manifest_and_the_engine_refuse_the_same_values(
    tmp_path, capsys, name, literal, text
) -> None:
    """One declaration (runtime/engine/settings.py): a value workbench.toml refuses, the
    engine's command line refuses too, with the same words (so no engine fails after `up`)."""
    from workbench.errors import WorkbenchError

    (tmp_path / "a.yml").write_text("dependencies: [python=3.11]\n")
    expected = next(s for s in settings.SETTINGS if s.name == name).expected
    with pytest.raises(WorkbenchError) as err:
        _manifest_engine(tmp_path, name, literal)
    assert f"workbench.toml:6: [engines.e] {name} = " in err.value.message
    assert err.value.message.endswith(expected)
    with pytest.raises(SystemExit) as exit_:
        _parse(name, text)
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize(("name", "literal", "text"), _contract_cases(valid=True))
def test_the_manifest_and_the_engine_accept_the_same_values(tmp_path, name, literal, text):
    (tmp_path / "a.yml").write_text("dependencies: [python=3.11]\n")
    from_manifest = getattr(_manifest_engine(tmp_path, name, literal), name)
    from_argv = getattr(_parse(name, text), name)
    assert from_manifest == from_argv and type(from_manifest) is type(from_argv)


def test_the_engine_process_refuses_an_empty_queue() -> None:
    """`max_queue = 0` would refuse every request that cannot start at once: both ends say so
    before anything starts (the manifest at load, the engine at its command line)."""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.runtime.engine", "--name", "e", "--model", "m"]
        + ["--max-queue", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "argument --max-queue: '0': expected a whole number >= 1" in proc.stderr


# -- failures: a typed code from the cores (or the pool) to the HTTP status ------------------
@pytest.mark.parametrize(
    ("failure", "status", "kind", "code"),
    [
        (Failure.BAD_INPUT, 400, "invalid_request_error", "bad_input"),
        (Failure.QUEUE_FULL, 429, "rate_limit_error", "rate_limit_exceeded"),
        (Failure.TIMEOUT, 504, "server_error", "timeout"),
        (Failure.MODEL_ERROR, 500, "server_error", "model_error"),
        (Failure.WORKER_DIED, 503, "server_error", "worker_died"),
        (Failure.SHUTTING_DOWN, 503, "server_error", "shutting_down"),
    ],
)
def test_each_failure_answers_with_its_status_type_and_code(failure, status, kind, code) -> None:
    error = api.ApiError.of(EngineFailure(failure, "what happened"))
    assert (error.status, error.kind, error.code) == (status, kind, code)
    body = json.loads(error.body())["error"]
    assert (body["message"], body["type"], body["code"]) == ("what happened", kind, code)
    assert error.headers == ({"retry-after": "1"} if status == 429 else {})


def test_every_failure_is_mapped() -> None:
    assert all(400 <= f.status < 600 and f.kind and f.code for f in Failure)


def _pool(**settings) -> workers.Pool:
    """A pool with no processes: requests wait in its queue (no worker is serving)."""
    return workers.Pool(workers.Settings(**settings), Registry("test"), logging.getLogger("t"))


def _stream(rid: str = "r1", timeout_s: float = 60.0) -> workers.Stream:
    return workers.Stream(rid, "generate", [1, 2, 3], {}, 3, timeout_s)


def test_a_full_queue_refuses_at_once_with_queue_full() -> None:
    async def scenario() -> None:
        pool = _pool(max_queue=1)
        pool.submit(_stream("r1"))
        with pytest.raises(EngineFailure) as refused:
            pool.submit(_stream("r2"))
        assert refused.value.failure is Failure.QUEUE_FULL
        assert "1 requests are waiting" in refused.value.message
        assert 'reason="queue_full"' in pool.metrics.render()

    asyncio.run(scenario())


def test_a_core_failure_crosses_the_socket_as_its_code() -> None:
    """What a core sends (a code and a message) becomes the request's typed failure; the
    message's wording plays no part."""

    async def scenario() -> None:
        pool = _pool()
        stream = _stream("r1")
        worker = types.SimpleNamespace(running={"r1": stream}, state="serving")
        frame = protocol.encode(("failed", "r1", Failure.MODEL_ERROR.value, "timed out (sic)"))
        (message,) = protocol.Decoder().feed(frame)
        pool.on_message(worker, message)
        await asyncio.wait_for(stream.settle(), 1)
        assert stream.failure.failure is Failure.MODEL_ERROR
        assert api.ApiError.of(stream.failure).status == 500  # not 504: no message is read

    asyncio.run(scenario())


def test_a_request_past_its_deadline_fails_with_timeout_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        pool = _pool(timeout=0.5)
        stream = _stream("r1", timeout_s=0.5)
        pool.submit(stream)
        pool._timeout(stream)  # what housekeeping does past the deadline
        await asyncio.wait_for(stream.settle(), 1)
        assert stream.failure.failure is Failure.TIMEOUT
        assert stream.failure.message == "timed out after 0.5 s" and not pool.queue

    asyncio.run(scenario())


def test_closing_fails_what_waits_with_shutting_down() -> None:
    async def scenario() -> None:
        pool = _pool()
        stream = _stream("r1")
        pool.submit(stream)
        await pool.close(grace=0)
        assert stream.failure.failure is Failure.SHUTTING_DOWN
        assert stream.failure.failure.status == 503

    asyncio.run(scenario())


def test_a_streamed_failure_ends_with_an_error_event() -> None:
    event = api.Chunks.error(EngineFailure(Failure.WORKER_DIED, "the worker exited"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    error = json.loads(event[len(b"data: ") :])["error"]
    assert (error["type"], error["code"]) == ("server_error", "worker_died")


# -- one request path: any task plugs in with a parse and an answer -------------------------
class Echo:
    """A task of this test: its cores would send the payload back as the result."""

    task = "echo"

    def parse(self, engine, body: object) -> tasks.Job:
        return tasks.Job("echo-1", [body], {}, 0, None)

    async def answer(self, engine, send, stream, job: tasks.Job) -> None:
        await responses.json_response(send, 200, {"echo": stream.result})


def _engine(**settings) -> server.Engine:
    args = argparse.Namespace(name="t", model="m", task="echo", timeout=60.0, workers=1)
    return server.Engine(args, _pool(**settings), [], Registry("t"), 0.0)


async def _call(engine: server.Engine, outcome, leave: bool = False) -> tuple[int, list]:
    """run_task with Echo; outcome(stream) plays the cores' part once the request waits."""
    sent: list[dict] = []
    left = asyncio.Event()

    async def receive() -> dict:
        if leave:
            return {"type": "http.disconnect"}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def core() -> None:
        while not engine.pool.queue:
            await asyncio.sleep(0)
        outcome(engine.pool.queue[0])

    helper = asyncio.ensure_future(core())
    try:
        status = await engine.run_task({"headers": []}, receive, send, Echo(), "hi")
    finally:
        helper.cancel()
        left.set()
    return status, sent


def test_a_task_answers_through_the_shared_path() -> None:
    def answered(stream) -> None:
        stream.result, stream.finish = ["hi"], "stop"
        stream.event.set()

    status, sent = asyncio.run(_call(_engine(), answered))
    assert status == 200 and json.loads(sent[1]["body"]) == {"echo": ["hi"]}


def test_a_task_failure_is_answered_from_its_code() -> None:
    def failed(stream) -> None:
        stream.fail(Failure.WORKER_DIED, "the engine worker running this request exited")

    with pytest.raises(api.ApiError) as error:
        asyncio.run(_call(_engine(), failed))
    assert (error.value.status, error.value.code) == (503, "worker_died")


def test_a_client_that_leaves_cancels_its_request() -> None:
    engine = _engine()
    status, sent = asyncio.run(_call(engine, lambda stream: None, leave=True))
    assert status == 499 and not sent and not engine.pool.queue


def test_a_full_queue_is_a_429_with_retry_after_for_any_task() -> None:
    engine = _engine(max_queue=1)
    engine.pool.submit(_stream("waiting"))
    with pytest.raises(api.ApiError) as error:
        asyncio.run(_call(engine, lambda stream: None))
    assert (error.value.status, error.value.headers) == (429, {"retry-after": "1"})


def test_the_pool_gets_every_setting_of_the_command_line(tmp_path, monkeypatch) -> None:
    """workers.Settings derives from the same declaration: what the command line says is
    what the pool runs with (workers resolved: 0 means one per device)."""
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(contract.API_KEYS.name, raising=False)
    args = commandline.parser().parse_args(
        ["--name", "e", "--model", str(tmp_path), "--max-queue", "3", "--timeout", "2.5"]
    )
    pool_settings, keys = config.configure(args)
    assert (pool_settings.task, pool_settings.workers, pool_settings.devices) == (
        "generate", 1, [None]
    )  # fmt: skip
    assert (pool_settings.max_queue, pool_settings.timeout, keys) == (3, 2.5, [])
    for setting in settings.SETTINGS:
        assert getattr(pool_settings, setting.name) == getattr(args, setting.name), setting.name


def test_a_handler_is_a_file_of_the_project_and_no_task_beside_it(tmp_path) -> None:
    """The manifest checks the handler's file before anything starts; the engine resolves it
    from the project root (config.handler) with the same refusals."""
    from workbench.errors import WorkbenchError

    (tmp_path / "a.yml").write_text("dependencies: [python=3.11]\n")
    with pytest.raises(WorkbenchError, match=r"handler = 'serving/m.py:M': serving/m.py does not"):
        _manifest_engine(tmp_path, "handler", '"serving/m.py:M"')
    with pytest.raises(ValueError, match="serving/m.py not found"):
        config.handler("serving/m.py:M", "auto", tmp_path)
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "m.py").write_text("class M: ...\n")
    assert _manifest_engine(tmp_path, "handler", '"serving/m.py:M"').handler == "serving/m.py:M"
    assert config.handler("serving/m.py:M", "auto", tmp_path) == f"{tmp_path}/serving/m.py:M"
    with pytest.raises(WorkbenchError, match="has no task; remove one of them"):
        _manifest_engine(tmp_path, "handler", '"serving/m.py:M"\ntask = "embed"')
    with pytest.raises(ValueError, match="set one"):
        config.handler("serving/m.py:M", "embed", tmp_path)
