"""The routes a predict engine's clients speak (workbench.runtime.engine.predict_routes),
against real engines in the vision env: the digits demo's handler (a random CNN of
serving/digits.py, with an API key) and tiny text and image classification pipelines.

The official `tritonclient.http` client, unchanged (binary tensors, its default, and JSON),
and plain httpx on /v2 and /predict get what the same model answers in-process; 32 clients at
once each get their own answers; keys guard every route but the health probes; bad tensors
get one-line 400s (413 when too large) that name the input, and the engine stays healthy.
"""

import base64
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import digits
from tests.support.paths import VISION
from tests.support.processes import free_port, start_interruptible
from tests.support.tiny_models import assert_close, build

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("demo_envs")]

KEY = "predict-routes-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def auth() -> dict:
    """The key's header in a dict of its own: tritonclient adds its headers to the one given."""
    return dict(AUTH)


START_TIMEOUT = 240


class Served:
    def __init__(self, name: str, proc: subprocess.Popen, port: int, log: Path):
        self.name, self.proc, self.port, self.log = name, proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(name: str, root: Path, model: Path, *options: str, env=None) -> Served:
    port = free_port()
    log = root / f"{name}.log"
    with open(log, "w") as out:
        proc = start_interruptible(
            [str(VISION), "-m", "workbench.runtime.engine", "--name", name, "--model", str(model)]
            + ["--port", str(port), *options],
            env={k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"} | (env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    return Served(name, proc, port, log)


def wait_healthy(engines: list[Served]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for engine in engines:
        while True:
            assert engine.proc.poll() is None, engine.log.read_text()[-3000:]
            assert time.monotonic() < deadline, engine.log.read_text()[-3000:]
            try:
                if httpx.get(engine.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-routes")
    digits.digits_project(root)
    tiny_root = root / "tiny"
    tiny_root.mkdir()
    engines = {
        "digits": start(
            "digits",
            root,
            root / "models" / "digits",
            "--handler",
            "serving/digits.py:Model",
            "--max-wait-ms",
            "20",
            env={"WORKBENCH_API_KEYS": KEY},
        )
    }
    try:
        tiny = build(["text-classification", "image-classification"], tiny_root)
        for name, task in (("texts", "text-classification"), ("images", "image-classification")):
            engines[name] = start(name, root, tiny[task].folder, "--task", task)
        reference = digits.in_process(root / "models" / "digits", root)
        wait_healthy(list(engines.values()))
        yield {"engines": engines, "digits": reference, "tiny": tiny}
    finally:
        for engine in engines.values():
            engine.stop()


@pytest.fixture(scope="module")
def digits_engine(served) -> Served:
    return served["engines"]["digits"]


def triton_client(engine: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{engine.port}")


def images_tensor(images: list, binary: bool) -> triton.InferInput:
    array = np.array(images, dtype=np.float32)
    tensor = triton.InferInput("image", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def answers_of(result) -> list[dict]:
    labels = result.as_numpy("label").ravel().tolist()
    scores = result.as_numpy("scores").tolist()
    return [{"label": a, "scores": s} for a, s in zip(labels, scores, strict=True)]


def test_tritonclient_reads_the_digits_engine_unchanged(served, digits_engine) -> None:
    client = triton_client(digits_engine)
    reference = served["digits"]
    images, want = reference["images"][:5], reference["answers"][:5]
    assert client.is_server_live() and client.is_server_ready(headers=auth())
    assert client.is_model_ready("digits", headers=auth())
    assert client.get_model_metadata("digits", headers=auth()) == {
        "name": "digits",
        "versions": ["1"],
        "platform": "workbench_handler",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
    assert "binary_tensor_data" in client.get_server_metadata(headers=auth())["extensions"]
    for binary in (True, False):  # binary tensors both ways (the client's default), then JSON
        tensor = images_tensor(images, binary)
        outputs = (
            None
            if binary
            else [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "scores")]
        )
        result = client.infer("digits", [tensor], outputs=outputs, headers=auth())
        assert result.as_numpy("label").shape == (5, 1)
        assert result.as_numpy("scores").dtype == np.float32
        assert digits.same_answers(answers_of(result), want)
    only = client.infer(
        "digits",
        [images_tensor(images, True)],
        model_version="1",
        outputs=[triton.InferRequestedOutput("label")],
        request_compression_algorithm="gzip",
        headers=auth(),
    )
    assert only.as_numpy("scores") is None
    assert only.as_numpy("label").ravel().tolist() == [a["label"] for a in want]


def test_plain_httpx_on_v2_and_predict_gets_the_in_process_answers(served, digits_engine):
    reference = served["digits"]
    images, want = reference["images"][:3], reference["answers"][:3]
    with httpx.Client(base_url=digits_engine.url, headers=auth(), timeout=60) as client:
        tensor = {"name": "image", "datatype": "FP32", "shape": [3, 8, 8], "data": images}
        reply = client.post("/v2/models/digits/infer", json={"id": "r-7", "inputs": [tensor]})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["id"] == "r-7" and body["model_name"] == "digits"
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["label"]["shape"] == [3, 1] and outputs["scores"]["shape"] == [3, 10]
        scores = np.array(outputs["scores"]["data"]).reshape(3, 10).tolist()
        got = [
            {"label": a, "scores": s} for a, s in zip(outputs["label"]["data"], scores, strict=True)
        ]
        assert digits.same_answers(got, want)
        one = client.post("/predict", json={"inputs": images[0]})
        assert one.status_code == 200 and digits.same_answers([one.json()], want[:1])
        many = client.post("/predict", json={"instances": images})
        assert digits.same_answers(many.json()["predictions"], want)
        metadata = client.get("/v2/models/digits").json()
        assert client.get("/v2/models/digits/versions/1").json() == metadata
        for path, words in (
            ("/v2/models/digits/versions/2", "model digits has one version, 1"),
            ("/v2/models/other/ready", "no model other here (this engine serves digits)"),
            ("/v2/repository/index", "no route /v2/repository/index"),
        ):
            reply = client.get(path)
            assert reply.status_code == 404 and reply.json() == {"error": words}, reply.text
        assert client.get("/v2/models/digits/infer").status_code == 405


def test_32_clients_at_once_each_get_their_own_answers(served, digits_engine) -> None:
    """Half on tritonclient, half on /predict, four rounds each: every answer is its own
    image's (checked per request), and batches formed."""
    reference = served["digits"]
    images, want = reference["images"], reference["answers"]
    failures: list[str] = []
    start_line = threading.Barrier(32)

    def client(n: int) -> None:
        start_line.wait()
        for round_ in range(4):
            i = (n * 4 + round_) % len(images)
            if n % 2:
                result = triton_client(digits_engine).infer(
                    "digits", [images_tensor([images[i]], True)], headers=auth()
                )
                got = answers_of(result)
            else:
                reply = httpx.post(
                    digits_engine.url + "/predict",
                    json={"inputs": images[i]},
                    headers=auth(),
                    timeout=60,
                )
                got = [reply.json()]
            if not digits.same_answers(got, want[i : i + 1]):
                failures.append(f"client {n} image {i}: {got} != {want[i]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    metrics = httpx.get(digits_engine.url + "/metrics").text

    def total(name: str) -> float:
        lines = [line for line in metrics.splitlines() if line.split("{")[0].split()[0] == name]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    batches = total("workbench_engine_batch_size_count")
    inputs = total("workbench_engine_batch_size_sum")
    assert inputs / batches > 1.5, (inputs, batches)


def test_keys_guard_every_route_but_the_health_probes(digits_engine) -> None:
    url = digits_engine.url
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(url + path).status_code == 200
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [0.0] * 64}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for method, path, body in (
            ("GET", "/v2", None),
            ("GET", "/v2/models/digits", None),
            ("GET", "/v2/models/digits/ready", None),
            ("POST", "/v2/models/digits/infer", {"inputs": [tensor]}),
        ):
            reply = httpx.request(method, url + path, json=body, headers=headers)
            assert reply.status_code == 401, (path, reply.text)
            assert "API key" in reply.json()["error"]
        reply = httpx.post(url + "/predict", json={"inputs": [[0] * 8] * 8}, headers=headers)
        assert reply.status_code == 401 and "API key" in reply.json()["error"]["message"]
    with pytest.raises(InferenceServerException, match="API key"):
        triton_client(digits_engine).get_model_metadata("digits")


BAD_TENSORS = [
    # (body, status, words the one-line error must hold)
    (
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 7, 8], "data": [0] * 56}]},
        400,
        ['input "image"', "shape [1, 7, 8], expected [-1, 8, 8]"],
    ),
    (
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [0] * 60}]},
        400,
        ['input "image"', "60 elements for shape [1, 8, 8]"],
    ),
    (
        {"inputs": [{"name": "image", "datatype": "INT64", "shape": [1, 8, 8], "data": [0] * 64}]},
        400,
        ['input "image"', "datatype INT64, expected FP32"],
    ),
    (
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": ["a"] * 64}]},
        400,
        ['input "image"', '"a" in an FP32 tensor'],
    ),
    (
        {"inputs": [{"name": "img", "datatype": "FP32", "shape": [1, 8, 8], "data": [0] * 64}]},
        400,
        ['input "img": not an input', "image FP32 [-1, 8, 8]"],
    ),
    (
        {
            "inputs": [
                {"name": f"t{i}", "datatype": "FP32", "shape": [1], "data": [0]}
                for i in range(10_000)
            ]
        },
        400,
        ["10000 tensors (at most 1024)"],
    ),
    (
        {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [10_000, 1, 1], "data": [0] * 10_000}
            ]
        },
        400,
        ["shape [10000, 1, 1], expected [-1, 8, 8]"],
    ),
]


def test_bad_tensors_get_one_line_errors_and_the_engine_stays_healthy(served, digits_engine):
    url = digits_engine.url
    nan_image = [[float("nan")] * 8] * 8
    cases = [
        (url + "/v2/models/digits/infer", body, status, words)
        for body, status, words in BAD_TENSORS
    ]
    cases += [
        (
            url + "/v2/models/digits/infer",
            {
                "inputs": [
                    {"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [nan_image]}
                ]
            },
            400,
            ["input 0", "image: values must lie in 0..16, got nan"],
        ),
        (url + "/predict", {"inputs": nan_image}, 400, ["values must lie in 0..16, got nan"]),
        (url + "/predict", {"instances": [0] * 10_000}, 400, ["10000 inputs in one request"]),
        (url + "/predict", {"inputs": "7" * 1_100_000}, 413, ["larger than 1024 KiB"]),
        (url + "/predict", {"inputs": 1, "parameters": {"top_k": 2}}, 400, ["parameters"]),
    ]
    for target, body, status, words in cases:
        content = json.dumps(body).encode()  # NaN travels as JSON's NaN extension
        reply = httpx.post(target, content=content, headers=auth(), timeout=60)
        assert reply.status_code == status, (words, reply.text[:300])
        error = reply.json()["error"]
        message = error if isinstance(error, str) else error["message"]
        assert "\n" not in message and len(message) < 300, message
        for word in words:
            assert word in message, (word, message)
    images = served["engines"]["images"]
    png = base64.b64encode(Path(served["tiny"]["image-classification"].inputs[0]).read_bytes())
    for inputs, words in (
        ("not base64 at all!", ["inputs: malformed base64"]),
        ("https://example.com/cat.png", ["URLs are refused", "never fetches"]),
        ("data:image/png," + png.decode(), ["data:TYPE;base64,DATA"]),
        (base64.b64encode(b"not an image").decode(), ["input 0: not an image file"]),
        ({"image": png.decode()}, ["inputs: {", "expected base64 of an image file"]),
    ):
        reply = httpx.post(images.url + "/predict", json={"inputs": inputs}, timeout=60)
        assert reply.status_code == 400, reply.text
        message = reply.json()["error"]["message"]
        assert all(word in message for word in words), message
    for engine in (digits_engine, images):
        assert httpx.get(engine.url + "/healthz").status_code == 200
    one = httpx.post(
        url + "/predict", json={"inputs": served["digits"]["images"][0]}, headers=auth(), timeout=60
    )
    assert one.status_code == 200 and one.json()["label"] == served["digits"]["answers"][0]["label"]


def test_pipelines_answer_on_predict_and_v2_as_in_process(served) -> None:
    tiny = served["tiny"]
    texts = served["engines"]["texts"]
    model = tiny["text-classification"]
    reply = httpx.post(
        texts.url + "/predict",
        json={"inputs": model.inputs, "parameters": model.params},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert_close(reply.json(), model.expected)
    one = httpx.post(
        texts.url + "/predict",
        json={"inputs": model.inputs[0], "parameters": model.params},
        timeout=60,
    )
    assert_close(one.json(), model.expected[0])
    client = triton_client(texts)
    assert client.get_model_metadata("texts")["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]}
    ]
    for binary in (True, False):
        tensor = triton.InferInput("text", [len(model.inputs)], "BYTES")
        tensor.set_data_from_numpy(np.array(model.inputs, dtype=np.object_), binary_data=binary)
        result = client.infer("texts", [tensor], parameters=model.params)
        labels = [[x.decode() for x in row] for row in result.as_numpy("label").tolist()]
        assert labels == [[d["label"] for d in answer] for answer in model.expected]
        assert_close(
            result.as_numpy("score").tolist(),
            [[d["score"] for d in answer] for answer in model.expected],
        )

    images = served["engines"]["images"]
    model = tiny["image-classification"]
    files = [Path(p).read_bytes() for p in model.inputs]
    encoded = [base64.b64encode(f).decode() for f in files]
    reply = httpx.post(images.url + "/predict", json={"inputs": encoded}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert_close(reply.json(), model.expected)
    url = "data:image/png;base64," + encoded[1]
    reply = httpx.post(images.url + "/predict", json={"instances": [url]}, timeout=60)
    assert_close(reply.json()["predictions"], model.expected[1:])
    tensor = triton.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))  # the files, as binary data
    result = triton_client(images).infer("images", [tensor])
    labels = [[x.decode() for x in row] for row in result.as_numpy("label").tolist()]
    assert labels == [[d["label"] for d in answer] for answer in model.expected]
