"""The predict engine's peers for bench/predict.py: each a server of the same handler
(serving/digits.py:Model, loaded by its own setup, so every server runs the real loading
code), started from a throwaway venv of its own.

A peer's venv is built with uv from the machine's package indexes (pip.conf, read as the
project reads it) and kept under .workbench/bench/peers/NAME, rebuilt only when its
requirements change; torch is pinned to the project's build so every server runs the same
kernels. Each server binds 127.0.0.1 on the port it is given, uses one torch thread, and
answers POST /predict with one input's output (BentoML, whose batchable API takes a list:
a list of one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".workbench" / "bench" / "peers"
TORCH = "torch==2.13.0"

# What every peer script starts with: the handler, loaded from the project as the engine
# loads it (model folder in model_path, then setup on the CPU).
PRELUDE = r"""
import os, sys
sys.path.insert(0, os.environ["BENCH_REPO"])
import torch
torch.set_num_threads(1)
from serving.digits import Model as Handler

def load_handler():
    handler = Handler()
    handler.model_path = os.environ["BENCH_MODEL"]
    handler.setup("cpu")
    return handler

PORT = int(os.environ["BENCH_PORT"])
MAX_BATCH = int(os.environ["BENCH_MAX_BATCH"])
WAIT_S = float(os.environ["BENCH_WAIT_MS"]) / 1000
"""

FASTAPI = r"""
import uvicorn
from fastapi import FastAPI

handler = load_handler()
app = FastAPI()

@app.get("/health")
def health():
    return {"ok": True}

@app.post("/predict")
def predict(body: dict):
    return handler.predict([handler.preprocess(body["inputs"])])[0]

uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
"""

LITSERVE = r"""
import inspect
import litserve as ls

class DigitsAPI(ls.LitAPI):
    def setup(self, device):
        self.handler = load_handler()

    def decode_request(self, request):
        return self.handler.preprocess(request["inputs"])

    def batch(self, inputs):
        return list(inputs)

    def predict(self, batch):
        return self.handler.predict(list(batch))

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output

# LitServe spawns its workers, which import this script again: serve from __main__ only.
if __name__ == "__main__":
    batching = {"max_batch_size": MAX_BATCH, "batch_timeout": WAIT_S}
    # LitServe moved the batching options from the server to the API.
    if "max_batch_size" in inspect.signature(ls.LitAPI.__init__).parameters:
        api, options = DigitsAPI(**batching), {}
    else:
        api, options = DigitsAPI(), batching
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, **options)
    server.run(host="127.0.0.1", port=PORT, generate_client_file=False)
"""

BENTOML = r"""
import bentoml

@bentoml.service(workers=1)
class Digits:
    def __init__(self):
        self.handler = load_handler()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=60000)
    def predict(self, inputs: list) -> list:
        return self.handler.predict([self.handler.preprocess(x) for x in inputs])
"""

RAY_SERVE = r"""
import time
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

@serve.deployment(max_ongoing_requests=256)
class Digits:
    def __init__(self):
        self.handler = load_handler()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S)
    async def run(self, items):
        return self.handler.predict(items)

    async def __call__(self, request: Request):
        if request.method == "GET":
            return JSONResponse({"ok": True})
        body = await request.json()
        return JSONResponse(await self.run(self.handler.preprocess(body["inputs"])))

# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (set by the bench) keeps every Ray server on loopback;
# the replica runs in a Ray worker, which inherits the path to the handler from here.
os.environ["PYTHONPATH"] = os.environ["BENCH_REPO"]
ray.init(include_dashboard=False, num_cpus=2, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": PORT})
serve.run(Digits.bind(), route_prefix="/predict", name="digits")
print("serving", flush=True)
while True:
    time.sleep(3600)
"""


@dataclass(frozen=True)
class Peer:
    """A server of the digits handler: what it needs, how it starts, how it is asked."""

    name: str
    label: str
    requirements: tuple[str, ...]
    script: str
    health: str  # GET path that answers 200 once the model is loaded
    bentoml: bool = False

    @property
    def venv(self) -> Path:
        return CACHE / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def body(self, image: list) -> dict:
        """The request for one input, in this server's own shape."""
        return {"inputs": [image]} if self.bentoml else {"inputs": image}

    def answer(self, reply: object) -> dict:
        """The one output of a reply."""
        return reply[0] if self.bentoml else reply

    def command(self, workdir: Path) -> list[str]:
        """The server's command line, "{port}" standing for its port; its script is written
        to workdir first (the server runs there)."""
        source = PRELUDE + self.script
        if self.bentoml:  # BentoML serves a service by import path, with its own CLI
            (workdir / "service.py").write_text(source)
            serve = [str(self.venv / "bin" / "bentoml"), "serve", "service:Digits"]
            return [*serve, "--host", "127.0.0.1", "--port", "{port}"]
        path = workdir / f"{self.name}_server.py"
        path.write_text(source)
        return [str(self.python), str(path)]


PEERS = (
    Peer("fastapi", "FastAPI + uvicorn, no batching", ("fastapi", "uvicorn"), FASTAPI, "/health"),
    Peer("litserve", "LitServe", ("litserve",), LITSERVE, "/health"),
    Peer("bentoml", "BentoML", ("bentoml",), BENTOML, "/readyz", bentoml=True),
    Peer("rayserve", "Ray Serve", ("ray[serve]",), RAY_SERVE, "/predict"),
)


def uv_index_args() -> list[str]:
    """The machine's package indexes as uv options (uv ignores pip.conf)."""
    sys.path.insert(0, str(REPO))
    from workbench.envs import pipconfig

    return pipconfig.read().uv_args()


def ensure_venv(peer: Peer) -> float:
    """Build peer's venv unless the cached one has the same requirements; seconds spent.
    Without a network, uv installs what its cache holds (--offline)."""
    wanted = sorted((*peer.requirements, TORCH, "numpy"))
    options = ["--compile-bytecode"]  # imports of an uncompiled venv take twice as long
    stamp = peer.venv / ".bench-requirements.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == [*options, *wanted]:
        return 0.0
    t0 = time.perf_counter()
    uv = [sys.executable, "-m", "uv"]
    quiet = {"capture_output": True, "text": True}
    made = subprocess.run(
        [*uv, "venv", "--clear", "--python", sys.executable, str(peer.venv)], **quiet
    )
    if made.returncode != 0:
        raise SystemExit(f"bench: uv venv {peer.venv} failed: {made.stderr.strip()[-400:]}")
    install = [*uv, "pip", "install", "--python", str(peer.python), *options, *uv_index_args()]
    for offline in ([], ["--offline"]):
        installed = subprocess.run([*install, *offline, *wanted], **quiet)
        if installed.returncode == 0:
            break
    if installed.returncode != 0:
        raise SystemExit(
            f"bench: installing {' '.join(wanted)} for {peer.label} failed: "
            f"{installed.stderr.strip()[-600:]}"
        )
    stamp.write_text(json.dumps([*options, *wanted]))
    return time.perf_counter() - t0


if __name__ == "__main__":
    for peer in PEERS:
        print(f"{peer.name}: {ensure_venv(peer):.1f} s", flush=True)
