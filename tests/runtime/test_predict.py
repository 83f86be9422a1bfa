"""The predict engine's cores (workbench.runtime.engine.predict, adaptive, core): every pipeline
task with a tiny model built here answers as the same pipeline does in-process, a handler of
the project serves its own model, a bad input fails only its own request, inputs of different
shapes run apart, and batches adapt: a lone client waits for no batch-mates, many fill them.

The pools are the real ones (zygote and forked cores in the vision env), fed Jobs as the
front's one request path feeds them; one pool per model, all started together.
"""

import asyncio
import base64
import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.paths import TESTS, VISION
from tests.support.pools import START_TIMEOUT, PoolRunner
from tests.support.processes import free_port, start_interruptible
from tests.support.tiny_models import PIPELINE_TASKS, assert_close, build
from workbench.runtime import models
from workbench.runtime.engine.failures import EngineFailure, Failure
from workbench.runtime.engine.predict import Media

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("demo_envs")]

HANDLER = TESTS / "data" / "handlers" / "affine.py"


def handler_model(root: Path, scale: float = 2.0) -> tuple[Path, str]:
    """A model folder for the affine handler, and the handler as the engine takes it."""
    (root / "affine").mkdir(parents=True)
    (root / "affine" / "config.json").write_text(f'{{"scale": {scale}}}')
    shutil.copy(HANDLER, root / "affine.py")
    return root / "affine", f"{root / 'affine.py'}:Model"


def as_input(item: str) -> object:
    """A sample as the front decodes it: a string, or a file's bytes as Media."""
    if item.endswith(".png"):
        return Media("image", Path(item).read_bytes())
    if item.endswith(".wav"):
        return Media("audio", Path(item).read_bytes())
    return item


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(list(PIPELINE_TASKS), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pools(tiny):
    started = {}
    try:
        for task, model in tiny.items():
            started[task] = PoolRunner(VISION, model.folder, task, max_batch=8)
        for runner in started.values():
            runner.wait_ready()
        yield started
    finally:
        for runner in started.values():
            runner.close()


@pytest.fixture(scope="module")
def affine(tmp_path_factory):
    folder, handler = handler_model(tmp_path_factory.mktemp("handler"))
    # a long max wait: a lone client must still wait for nothing
    runner = PoolRunner(VISION, folder, "predict", handler, max_batch=32, max_wait_ms=200.0)
    try:
        runner.wait_ready()
        yield runner
    finally:
        runner.close()


@pytest.mark.parametrize("task", PIPELINE_TASKS)
def test_every_pipeline_task_answers_as_the_pipeline_in_process(tiny, pools, task) -> None:
    model = tiny[task]
    inputs = [as_input(x) for x in model.inputs]
    one_by_one = [pools[task].predict([x], model.params) for x in inputs]
    together = pools[task].predict(inputs, model.params)  # one request, one batch
    concurrent = pools[task].many([([x], model.params) for x in inputs])
    for got in (one_by_one, [[y] for y in together], concurrent):
        assert_close([answer[0] for answer in got], model.expected)
    assert pools[task].pool.info["media"] in ("text", "image", "audio")


def test_auto_detects_each_task_from_the_models_config(tiny) -> None:
    detected = {task: models.detect_task(tiny[task].folder) for task in PIPELINE_TASKS}
    # a bare encoder (feature extraction) is served as embeddings, as before
    assert detected == {**{t: t for t in PIPELINE_TASKS}, "feature-extraction": "embed"}


def test_a_bad_input_fails_only_its_own_request(tiny, pools) -> None:
    image = as_input(tiny["image-classification"].inputs[0])
    answers = pools["image-classification"].many(
        [([image], {}), ([Media("image", b"not a png")], {}), (["text"], {}), ([image], {})]
    )
    assert answers[0] == answers[3] and answers[0][0][0]["label"]
    for failed, why in ((answers[1], "not an image file"), (answers[2], "expected an image")):
        assert failed.failure is Failure.BAD_INPUT and failed.message.startswith("input 0: ")
        assert why in failed.message
    text = pools["text-classification"].many([(["fine"], {}), ([7], {}), (["ok"], {"top_k": 1})])
    assert text[1].message == "input 0: expected a string"
    assert text[0][0] and text[2][0][0]["label"]


def test_a_handler_serves_the_projects_own_model(affine) -> None:
    runner = affine
    assert runner.pool.info["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    answer = runner.predict([[1, 2], [3, 4, 5]])  # two shapes: two batches, one request
    assert [a["y"] for a in answer] == [[2.0, 4.0], [6.0, 8.0, 10.0]]
    answers = runner.many(
        [([[1, 1]], {}), ([[13, 0]], {}), (["bad"], {}), ([[2, 2]], {}), ([[1]], {"k": 1})]
    )
    assert [a[0]["y"] for a in (answers[0], answers[3])] == [[2.0, 2.0], [4.0, 4.0]]
    assert answers[1].failure is Failure.BAD_INPUT  # the model refused it in predict
    assert answers[1].message == "input 0: ValueError: 13 brings bad luck"
    assert answers[2].message == "input 0: ValueError: bad is not a vector"  # in preprocess
    assert answers[4].message == "input 0: this model takes no parameters"


def test_a_lone_client_waits_for_no_batch_mates_and_many_fill_batches(affine) -> None:
    runner = affine
    sizes = runner.metrics.get("workbench_engine_batch_size")
    before = (sizes.count, sizes.sum) if sizes else (0, 0)
    started = time.perf_counter()
    for i in range(20):
        answer = runner.predict([[i, 100]])
        assert not isinstance(answer, EngineFailure), answer.message
        assert answer[0]["y"] == [2.0 * i, 200.0]
    lone = (time.perf_counter() - started) / 20
    assert lone < 0.1, f"a lone client's request took {lone * 1000:.0f} ms (max wait 200 ms)"

    rounds, clients = 8, 32

    async def client(c: int) -> None:  # each sends its next request once answered
        for r in range(rounds):
            answer = await runner.run("predict", [[r, 100 + c]])
            assert answer[0]["y"] == [2.0 * r, 200.0 + 2 * c]  # its own answer, no cross-talk

    async def load() -> None:
        await asyncio.gather(*(client(c) for c in range(clients)))

    runner.call(load())
    sizes = runner.metrics.get("workbench_engine_batch_size")
    batches = sizes.count - before[0] - 20
    assert batches <= rounds * clients / 4, f"{batches} batches for {rounds} x {clients} inputs"


def test_the_engine_process_serves_a_pipeline_and_a_handler_over_http(tiny, tmp_path) -> None:
    """`python -m workbench.runtime.engine` as serving/engines.py starts it: the task found
    from the model's config (auto), a handler named relative to the project root, the
    answers those of the pipeline in-process, and the batch metrics on /metrics."""
    model = tiny["image-classification"]
    handler_model(tmp_path)  # the project: affine/ (the model) and affine.py (the handler)
    engines = {
        "vit": ["--model", str(model.folder), "--task", "auto"],
        "affine": ["--model", "affine", "--handler", "affine.py:Model", "--root", str(tmp_path)],
    }
    procs, urls = {}, {}
    try:
        for name, options in engines.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the engine's own log
            procs[name] = start_interruptible(
                [str(VISION), "-m", "workbench.runtime.engine", "--name", name]
                + ["--port", str(port), *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        for name, url in urls.items():
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                assert procs[name].poll() is None, (tmp_path / f"{name}.log").read_text()
                assert time.monotonic() < deadline, f"{name} did not get healthy"
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
        images = [base64.b64encode(Path(p).read_bytes()).decode() for p in model.inputs]
        answer = httpx.post(urls["vit"] + "/predict", json={"inputs": images}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert_close(answer.json(), model.expected)
        answer = httpx.post(urls["affine"] + "/predict", json={"inputs": [1, 2]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["y"] == [2.0, 4.0]
        metrics = httpx.get(urls["vit"] + "/metrics", timeout=10).text
        for family in ("queue_seconds", "batch_size", "inference_seconds"):
            assert f'workbench_engine_{family}_count{{engine="vit"}}' in metrics
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
