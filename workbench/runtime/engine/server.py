"""An engine's front: the OpenAI-compatible HTTP API of one model, served from its env.

    ENV_PYTHON -m workbench.runtime.engine --name tinygpt --model models/tiny-gpt \
        [--host 127.0.0.1] [--port 8000] [--workers 1] [--max-requests 0] [--max-rss-mb 0] ...

(`--help` lists every option; `workbench.serving.engines.command` builds this line from
workbench.toml.) Routes: POST /v1/completions, /v1/chat/completions (`stream: true` as
server-sent events in OpenAI's chunk format) or /v1/embeddings, GET /v1/models, /healthz
(200 once every worker has loaded and warmed up the model) and /metrics (Prometheus).

This process never runs the model. It starts the engine-core processes first (their imports
of torch and transformers overlap with its own start), tokenizes prompts, routes requests to
the cores over socketpairs (workbench.runtime.engine.workers), turns the token ids that come
back into text and streams it. So generation never waits for this process's GIL, and the
HTTP side never waits for a generation step.

API keys: when WORKBENCH_API_KEYS (comma-separated; removed from the environment once read,
so no core inherits it) or --api-keys-file (one key a line, mode 0600) gives keys, every /v1/
request needs `Authorization: Bearer KEY` (else 401). Keys never reach argv, logs or metrics.
Limits: request bodies (413), prompt tokens and max_tokens (400), the queue (429 with
Retry-After), and a per-request timeout. OpenTelemetry spans when OTEL_EXPORTER_OTLP_ENDPOINT
is set (workbench.runtime.engine.tracing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import importlib.util
import json
import logging
import logging.config
import os
import stat
import sys
import time
import uuid
from pathlib import Path

from workbench.runtime import EXIT_USAGE, LOOPBACK_HOSTS, httpserver, logs
from workbench.runtime.engine import api, textproc, tracing
from workbench.runtime.engine.metrics import Registry
from workbench.runtime.engine.workers import Pool, QueueFull, Settings, Stream

log = logging.getLogger("workbench.engine")

KEYS_VARIABLE = "WORKBENCH_API_KEYS"
PACKAGE_PREFIX = "pkg:"  # a model folder inside an installed package: pkg:NAME/sub/folder
HUB_PREFIX = "hf:"  # a Hugging Face hub id, from the local cache (or downloaded when online)
JSON = b"application/json"


class Engine:
    """The ASGI application: routes, keys, limits, streaming."""

    def __init__(
        self,
        args: argparse.Namespace,
        pool: Pool,
        keys: list[str],
        metrics: Registry,
        started: float,
    ):
        self.args, self.pool, self.keys, self.metrics = args, pool, keys, metrics
        self.name = args.name
        self.tokenizer = None
        self.limits: api.Limits | None = None
        self.tracer = None
        self.started = started  # time.monotonic() when this process (or its promotion) began
        self.created = int(time.time())
        self.ready_s: float | None = None
        self.server = None
        metrics.declare("workbench_engine_info", "gauge", "The engine, its env and its lock.")
        metrics.declare("workbench_up", "gauge", "1 once every worker is warm, 0 before.")
        metrics.declare(
            "workbench_engine_requests_total", "counter", "HTTP requests by route and status."
        )
        metrics.declare(
            "workbench_engine_prompt_tokens_total", "counter", "Prompt tokens accepted."
        )
        metrics.set("workbench_engine_prompt_tokens_total", 0)
        metrics.callbacks.append(self._refresh)

    # -- state ----------------------------------------------------------------------------
    @property
    def status(self) -> str:
        if self.pool.failed:
            return "failed"
        return "ok" if self.pool.ready and self.tokenizer is not None else "starting"

    def on_pool_change(self) -> None:
        if self.pool.failed and self.server is not None:
            logs.fail(self.name, self.pool.failed, kind="engine")
            self.server.should_exit = True
        elif self.pool.ready and self.ready_s is None:
            self.ready_s = round(time.monotonic() - self.started, 3)
            self.limits = api.Limits(
                self.args.max_tokens,
                self.args.max_prompt_tokens,
                self.pool.info.get("context"),
                self.name,
            )
            log.info(
                "engine ready", extra={"fields": {"ready_s": self.ready_s, "port": self.args.port}}
            )

    def health(self) -> dict:
        body = {
            "status": self.status,
            "engine": self.name,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "workers": [
                {"pid": w.pid, "state": w.state, "running": len(w.running), "served": w.served}
                for w in self.pool.workers
            ],
        }
        if self.status == "ok":
            body["ready_s"] = self.ready_s
            body["queue"] = len(self.pool.queue)
        if self.pool.failed:
            body["error"] = self.pool.failed
        return body

    def _refresh(self) -> None:
        self.metrics.set("workbench_up", 1 if self.status == "ok" else 0)
        self.metrics.values["workbench_engine_info"].clear()
        self.metrics.set("workbench_engine_info", 1, **environment_info(self.args))

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        status = 500
        started = False
        reply = send

        async def send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await reply(message)

        try:
            if path == "/healthz":
                status = 200 if self.status == "ok" else 503
                return await _json_response(send, status, self.health())
            if path == "/metrics":
                status = 200
                body = self.metrics.render().encode()
                return await _respond(send, 200, body, b"text/plain; version=0.0.4")
            self._authorize(scope)
            if path == "/v1/models" and method == "GET":
                status = 200
                body = api.models(self.name, self.created, self.args.model)
                return await _json_response(send, 200, body)
            routes = {
                "/v1/completions": ("generate", False),
                "/v1/chat/completions": ("generate", True),
                "/v1/embeddings": ("embed", None),
            }
            if path not in routes:
                raise api.ApiError(404, f"no route {path}", kind="not_found_error")
            task, chat = routes[path]
            if method != "POST":
                raise api.ApiError(405, f"{path} takes POST")
            if task != self.args.task:
                raise api.ApiError(
                    404, f"{path} is not served here: this engine's task is {self.args.task}"
                )
            body = await self._body(scope, receive)
            if task == "generate":
                status = await self._generate(scope, receive, send, body, chat)
            else:
                status = await self._embed(scope, receive, send, body)
        except api.ApiError as exc:
            status = exc.status
            headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await _respond(send, exc.status, exc.body(), JSON, headers)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered as JSON when we can
            log.exception(f"{method} {path} failed")
            if not started:
                error = api.ApiError(
                    500, f"internal error: {type(exc).__name__}", kind="server_error"
                )
                await _respond(send, 500, error.body(), JSON)
        finally:
            if path.startswith("/v1/"):
                self.metrics.inc("workbench_engine_requests_total", route=path, status=str(status))

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.pool.attach()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.close()
                if self.tracer is not None:
                    await asyncio.get_running_loop().run_in_executor(None, self.tracer.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorize(self, scope: dict) -> None:
        if not self.keys:
            return
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        valid = (
            scheme.lower() == "bearer"
            and token
            and any(hmac.compare_digest(token.encode(), key.encode()) for key in self.keys)
        )
        if not valid:
            self.metrics.inc("workbench_engine_rejected_total", reason="unauthorized")
            raise api.ApiError(
                401,
                "missing or invalid API key: send Authorization: Bearer KEY",
                kind="invalid_request_error",
                code="invalid_api_key",
            )

    async def _body(self, scope: dict, receive) -> object:
        limit = self.args.max_body_kb * 1024
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._too_large(limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise api.ApiError(400, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise api.ApiError(400, "the request body is not valid JSON") from None

    def _too_large(self, limit: int) -> api.ApiError:
        self.metrics.inc("workbench_engine_rejected_total", reason="too_large")
        return api.ApiError(413, f"request body larger than {limit // 1024} KiB")

    def _submit(self, stream: Stream) -> None:
        try:
            self.pool.submit(stream)
        except QueueFull:
            raise api.ApiError(
                429,
                f"the engine is busy: {self.args.max_queue} requests are waiting; retry shortly",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"retry-after": "1"},
            ) from None

    async def _generate(self, scope, receive, send, body, chat: bool) -> int:
        request = api.parse_generation(body, chat, self.limits, self.tokenizer)
        self.metrics.inc("workbench_engine_prompt_tokens_total", len(request.ids))
        stream = Stream(request.id, "generate", request.ids, request.params, self.args.timeout)
        self._submit(stream)
        watcher = asyncio.ensure_future(self._watch(receive, stream))
        status = 200
        try:
            if request.stream:
                await self._stream(send, stream, request)
            else:
                status = await self._whole(send, stream, request)
        finally:
            watcher.cancel()
            self.pool.cancel(stream)
            self._trace(scope, stream, status)
        return status

    async def _watch(self, receive, stream: Stream) -> None:
        """Cancel the request when the client disconnects."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.pool.cancel(stream)
                stream.event.set()
                return

    async def _stream(self, send, stream: Stream, request: api.Request) -> None:
        chunks = api.Chunks(request, self.name)
        text = self.tokenizer.stream()
        stops = textproc.StopStrings(request.stop)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", request.id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if request.chat:
            await _chunk(send, chunks.role())
        loop = asyncio.get_running_loop()
        sent = 0.0  # when the last chunk with text went out
        while True:
            if not stream.ids and not stream.done and not stream.cancelled:
                await stream.event.wait()
            delay = sent + self.pool.stream_interval() - loop.time()
            if sent and delay > 0 and not stream.done:
                await asyncio.sleep(delay)  # many streams: fewer, fuller chunks
            if stream.cancelled and not stream.done:
                return  # the client left
            ids = stream.take()
            out, stopped = stops.feed(text.feed(ids)) if ids else ("", False)
            finish = None
            if stopped:
                self.pool.cancel(stream)
                finish = "stop"
            elif stream.finish is not None:
                tail, stopped = stops.feed(text.finish())
                out += tail if stopped else tail + stops.flush()
                finish = "stop" if stopped else stream.finish
            if stream.error is not None and finish is None:
                if out:
                    await _chunk(send, chunks.text(out))
                await _chunk(send, chunks.error(stream.error) + chunks.DONE, more=False)
                return
            if finish is not None:
                data = chunks.text(out, finish)
                if request.include_usage:
                    data += chunks.usage(len(request.ids), stream.tokens)
                await _chunk(send, data + chunks.DONE, more=False)
                return
            if out:
                await _chunk(send, chunks.text(out))
                sent = loop.time()

    async def _whole(self, send, stream: Stream, request: api.Request) -> int:
        while not stream.done and not stream.cancelled:
            await stream.event.wait()
            stream.event.clear()
        if stream.cancelled and not stream.done:
            return 499
        if stream.error is not None:
            status = 504 if "timed out" in stream.error else 500
            error = api.ApiError(status, stream.error, kind="server_error")
            await _respond(send, status, error.body(), JSON)
            return status
        text = self.tokenizer.decode(stream.take())
        finish = stream.finish
        cut = [i for i in (text.find(s) for s in request.stop) if i >= 0]
        if cut:
            text, finish = text[: min(cut)], "stop"
        body = api.completion(request, self.name, text, finish, stream.tokens)
        await _json_response(send, 200, body)
        return 200

    async def _embed(self, scope, receive, send, body) -> int:
        inputs = api.parse_embeddings(body, self.limits, self.tokenizer)
        tokens = sum(len(ids) for ids in inputs)
        self.metrics.inc("workbench_engine_prompt_tokens_total", tokens)
        stream = Stream("emb-" + uuid.uuid4().hex, "embed", inputs, {}, self.args.timeout)
        self._submit(stream)
        watcher = asyncio.ensure_future(self._watch(receive, stream))
        status = 200
        try:
            while not stream.done and not stream.cancelled:
                await stream.event.wait()
                stream.event.clear()
            if stream.error is not None:
                status = 504 if "timed out" in stream.error else 500
                error = api.ApiError(status, stream.error, kind="server_error")
                await _respond(send, status, error.body(), JSON)
            elif stream.result is not None:
                data, dim = stream.result
                fmt = body.get("encoding_format")
                await _json_response(send, 200, api.embeddings(self.name, data, dim, tokens, fmt))
        finally:
            watcher.cancel()
            self.pool.cancel(stream)
            self._trace(scope, stream, status)
        return status

    def _trace(self, scope: dict, stream: Stream, status: int) -> None:
        if self.tracer is None:
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in (b"traceparent", b"tracestate")
        }
        try:
            self.tracer.record(stream, scope["path"], headers, status)
        except Exception:  # noqa: BLE001 - tracing must never fail a request
            log.exception("recording a trace failed")


async def _chunk(send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _respond(send, status: int, body: bytes, content_type: bytes, headers=()) -> None:
    head = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _json_response(send, status: int, body: dict) -> None:
    await _respond(send, status, json.dumps(body).encode(), JSON)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


# -- configuration --------------------------------------------------------------------------
def resolve_model(raw: str, root: Path) -> Path:
    """The model folder: a path (relative to the project root), pkg:PACKAGE/sub/folder (inside
    an installed package, found without importing it) or hf:ORG/NAME (a hub snapshot)."""
    if raw.startswith(HUB_PREFIX):
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(raw[len(HUB_PREFIX) :]))
    elif raw.startswith(PACKAGE_PREFIX):
        package, _, sub = raw[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"model {raw}: package {package!r} is not installed in this env")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        folder = Path(raw).expanduser()
        if not folder.is_absolute():
            folder = root / folder
    if not (folder / "config.json").is_file():
        raise ValueError(f"model folder {folder} not found (no config.json there)")
    return folder.resolve()


def detect_task(folder: Path) -> str:
    """generate for causal language models, embed for encoders."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "generate"
    architectures = config.get("architectures") or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return "generate" if causal or config.get("is_decoder") else "embed"


def read_keys(path: str | None) -> list[str]:
    """Keys from WORKBENCH_API_KEYS (then removed from the environment) and the keys file."""
    raw = os.environ.pop(KEYS_VARIABLE, "") or ""
    keys = [k for k in raw.replace(",", " ").split() if k]
    if path:
        file = Path(path)
        mode = file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                f"API keys file {file} is open to other users (mode {stat.S_IMODE(mode):04o}); "
                f"chmod 600 {file}"
            )
        lines = file.read_text(encoding="utf-8").splitlines()
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return keys


def devices(requested: str) -> list[str | None]:
    """One entry per device the workers spread over: GPUs named by CUDA_VISIBLE_DEVICES
    (device auto or cuda), else the CPU (None)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    gpus = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if requested == "cpu" or not gpus:
        if requested == "cuda":
            raise ValueError("--device cuda but CUDA_VISIBLE_DEVICES names no GPU")
        return [None]
    return gpus


def environment_info(args: argparse.Namespace) -> dict[str, str]:
    """env, lock hash, Python and package count, for the info metric: from the env's build
    record (workbench-env.json in sys.prefix), overridden by WORKBENCH_ENV/WORKBENCH_LOCK_HASH
    (an image sets those)."""
    record = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((Path(sys.prefix) / "workbench-env.json").read_text())
    packages = record.get("packages")
    if packages is None:
        packages = _count_packages()
    return {
        "env": os.environ.get("WORKBENCH_ENV") or record.get("env") or "",
        "lock": os.environ.get("WORKBENCH_LOCK_HASH") or record.get("lock_hash") or "",
        "python": ".".join(map(str, sys.version_info[:3])),
        "packages": str(packages),
        "model": args.model,
        "task": args.task,
        "workers": str(args.workers),
    }


_PACKAGES: list[int] = []


def _count_packages() -> int:
    if not _PACKAGES:
        from importlib import metadata

        _PACKAGES.append(len({d.metadata["Name"] for d in metadata.distributions()}))
    return _PACKAGES[0]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m workbench.runtime.engine", description=__doc__.split("\n")[0]
    )
    p.add_argument("--name", required=True, help="the engine's name: the `model` clients ask for")
    p.add_argument("--model", required=True, help="model folder, or pkg:PACKAGE/sub/folder")
    p.add_argument("--task", choices=("auto", "generate", "embed"), default="auto")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    p.add_argument("--workers", type=int, default=0, help="engine cores (default: 1, or 1 per GPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--max-batch", type=int, default=32, help="requests a worker runs together")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait (then 429)")
    p.add_argument("--max-requests", type=int, default=0, help="recycle a worker after N requests")
    p.add_argument("--max-rss-mb", type=float, default=0, help="recycle a worker past this RSS")
    p.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens accepted")
    p.add_argument("--max-prompt-tokens", type=int, default=4096, help="longest prompt accepted")
    p.add_argument("--max-body-kb", type=int, default=1024, help="largest request body")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take")
    p.add_argument("--api-keys-file", help=f"keys, one a line, mode 0600 (or {KEYS_VARIABLE})")
    p.add_argument("--root", default=None, help="project root: relative model paths start here")
    p.add_argument("--log-level", default=os.environ.get("WORKBENCH_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--standby",
        action="store_true",
        help="load the model, then wait for a line on stdin before serving (a warm spare)",
    )
    args = p.parse_args(argv)
    for name in ("workers", "threads", "max_batch", "max_queue", "max_tokens", "max_body_kb"):
        if getattr(args, name) < (0 if name == "workers" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def _wait_as_spare(pool: Pool, name: str) -> bool:
    """The supervisor's warm spare: wait until the zygote has loaded the model, then for one
    line on stdin before binding the port; False on EOF (it stopped without needing us) or
    when the model cannot load."""
    from workbench.runtime.engine import protocol

    zygote = pool.zygote
    decoder, message = protocol.Decoder(), None
    while message is None:
        data = zygote.sock.recv(1 << 16)
        if not data:
            break
        for message in decoder.feed(data):  # noqa: B007 - the zygote says one thing here
            pass
    if message is None or message[0] != "zygote":
        logs.fail(name, message[1] if message else "the zygote exited", kind="engine")
        return False
    zygote.info = message[1]
    log.info("standby", extra={"fields": {"pid": os.getpid(), "zygote": zygote.proc.pid}})
    if sys.stdin.readline():
        return True
    zygote.proc.kill()
    zygote.proc.wait()
    return False


def _configure(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """Everything that can be wrong with the command line, checked before a core starts."""
    root = Path(args.root or os.getcwd()).resolve()
    folder = resolve_model(args.model, root)
    args.model = str(folder)
    if args.task == "auto":
        args.task = detect_task(folder)
    keys = read_keys(args.api_keys_file)
    if args.host not in LOOPBACK_HOSTS and not keys:
        raise ValueError(
            f"--host {args.host} would expose the engine without API keys; set "
            f"{KEYS_VARIABLE} or --api-keys-file, or reach it over `workbench tunnel`"
        )
    spread = devices(args.device)
    args.workers = args.workers or len(spread)
    settings = Settings(
        name=args.name,
        model=args.model,
        task=args.task,
        workers=args.workers,
        devices=spread,
        threads=args.threads,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_requests=args.max_requests,
        max_rss_mb=args.max_rss_mb,
        timeout_s=args.timeout,
        log_level=args.log_level.upper(),
    )
    return settings, keys


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = _arguments(argv)
    level = args.log_level.upper()
    logging.config.dictConfig(logs.config(args.name, level))
    try:
        settings, keys = _configure(args)
    except Exception as exc:  # noqa: BLE001 - a bad model, keys file or hub id: one line
        logs.fail(args.name, str(exc) or type(exc).__name__, kind="engine")
        return EXIT_USAGE
    metrics = Registry(args.name)
    pool = Pool(settings, metrics, log)
    pool.start_zygote()  # it imports torch and loads the model while this process starts
    if args.standby:
        if not _wait_as_spare(pool, args.name):
            return 0
        started = time.monotonic()
    pool.start_workers()
    try:
        sock = httpserver.bind(args.host, args.port)
    except OSError as exc:
        logs.fail(
            args.name,
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            kind="engine",
        )
        pool.zygote.proc.kill()
        return EXIT_USAGE
    args.port = sock.getsockname()[1]
    engine = Engine(args, pool, keys, metrics, started)
    pool.on_change = engine.on_pool_change
    fields = {"url": f"http://{args.host}:{args.port}/v1", "model": args.model, "task": args.task}
    fields.update(workers=args.workers, keys=len(keys), pid=os.getpid())
    log.info("listening", extra={"fields": fields})
    return _serve(engine, sock, level)


def _serve(engine: Engine, sock, level: str) -> int:
    from workbench.runtime.hostguard import HostGuard, allowed_hosts

    engine.tokenizer = textproc.Tokenizer(Path(engine.args.model))
    engine.tracer = tracing.from_environment(engine.name, log)

    app = HostGuard(
        engine,
        port=engine.args.port,
        hosts=allowed_hosts(engine.args.host),
        ready=lambda: engine.status == "ok",
        status=lambda: {"status": engine.status, "engine": engine.name},
    )
    engine.server = httpserver.server(app, engine.name, level)
    engine.server.run(sockets=[sock])
    code = engine.pool.failed_code if engine.pool.failed else 0
    log.info("stopped", extra={"fields": {"exit_code": code}})
    httpserver.exit_soon(code)
    return code
