"""An engine's front: the OpenAI-compatible HTTP API of one model, served from its env (an
ASGI application; workbench.runtime.engine.commandline starts it). Routes: POST
/v1/completions, /v1/chat/completions (`stream: true` as server-sent events in OpenAI's chunk
format) or /v1/embeddings, or a predict engine's /predict and Open Inference Protocol /v2
routes (workbench.runtime.engine.predict_routes), GET /v1/models, /healthz (200 once every
worker has loaded and warmed up the model) and /metrics (Prometheus).

This process never runs the model. It starts the engine-core processes first (their imports
of torch and transformers overlap with its own start), tokenizes prompts, routes requests to
the cores over socketpairs (workbench.runtime.engine.workers), turns the token ids that come
back into text and streams it. So generation never waits for this process's GIL, and the
HTTP side never waits for a generation step. Each task's routes are in
workbench.runtime.engine.tasks; every request takes one path here (run_task), and a request
the engine cannot answer carries a typed failure (workbench.runtime.engine.failures).

API keys (workbench.runtime.apikeys): when given, every /v1/, /predict and /v2 request
(but /v2/health/*) needs `Authorization: Bearer KEY` (else 401). Limits: request bodies
(413), prompt tokens and max_tokens (400), the queue (429 with Retry-After), and a
per-request timeout. OpenTelemetry spans when OTEL_EXPORTER_OTLP_ENDPOINT is set
(workbench.runtime.engine.tracing).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import logging.config
import os
import time

from workbench.runtime import logs
from workbench.runtime.engine import api
from workbench.runtime.engine.config import environment_info
from workbench.runtime.engine.failures import EngineFailure
from workbench.runtime.engine.metrics import Registry
from workbench.runtime.engine.predict_routes import PREDICT_ENDPOINTS, serve_protocol
from workbench.runtime.engine.responses import JSON, header, json_response, respond
from workbench.runtime.engine.settings import HANDLER, family
from workbench.runtime.engine.tasks import ENDPOINTS
from workbench.runtime.engine.workers import Pool, Stream

log = logging.getLogger("workbench.engine")
ROUTES = {**ENDPOINTS, **PREDICT_ENDPOINTS}  # POST routes, each a task's endpoint


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
        front_ready = self.tokenizer is not None or family(self.args.task) == HANDLER
        return "ok" if self.pool.ready and front_ready else "starting"

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
                return await json_response(send, status, self.health())
            if path == "/metrics":
                status = 200
                body = self.metrics.render().encode()
                return await respond(send, 200, body, b"text/plain; version=0.0.4")
            if path == "/v2" or path.startswith("/v2/"):
                return await serve_protocol(self, scope, receive, send)
            self.authorize(scope)
            if path == "/v1/models" and method == "GET":
                status = 200
                body = api.models(self.name, self.created, self.args.model)
                return await json_response(send, 200, body)
            endpoint = ROUTES.get(path)
            if endpoint is None:
                raise api.ApiError(404, f"no route {path}", kind="not_found_error")
            if method != "POST":
                raise api.ApiError(405, f"{path} takes POST")
            if endpoint.task != family(self.args.task):
                raise api.ApiError(
                    404, f"{path} is not served here: this engine's task is {self.args.task}"
                )
            body = await self._body(scope, receive)
            status = await self.run_task(scope, receive, send, endpoint, body)
        except api.ApiError as exc:
            status = exc.status
            headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await respond(send, exc.status, exc.body(), JSON, headers)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered as JSON when we can
            log.exception(f"{method} {path} failed")
            if not started:
                error = api.ApiError(
                    500, f"internal error: {type(exc).__name__}", kind="server_error"
                )
                await respond(send, 500, error.body(), JSON)
        finally:
            if path.startswith("/v1/") or path in ROUTES:
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

    def authorize(self, scope: dict) -> None:
        """401 unless the request carries one of the keys (when the engine has keys)."""
        if not self.keys:
            return
        scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
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
        raw = await self.read_body(scope, receive)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise api.ApiError(400, "the request body is not valid JSON") from None

    async def read_body(self, scope: dict, receive) -> bytes:
        """The request body, up to max_body_kb (else 413)."""
        limit = self.args.max_body_kb * 1024
        declared = header(scope, b"content-length")
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
        return b"".join(chunks)

    def _too_large(self, limit: int) -> api.ApiError:
        self.metrics.inc("workbench_engine_rejected_total", reason="too_large")
        return api.ApiError(413, f"request body larger than {limit // 1024} KiB")

    async def run_task(self, scope, receive, send, endpoint, body: object) -> int:
        """Every task's request path (tasks.py): parse, submit, cancel when the client leaves,
        answer (a failure from its typed code), trace. The HTTP status it answered."""
        job = endpoint.parse(self, body)
        self.metrics.inc("workbench_engine_prompt_tokens_total", job.prompt_tokens)
        stream = Stream(
            job.rid, endpoint.task, job.payload, job.params, job.prompt_tokens, self.args.timeout
        )
        try:
            self.pool.submit(stream)
        except EngineFailure as failed:
            raise api.ApiError.of(failed) from None
        watcher = asyncio.ensure_future(self._watch(receive, stream))
        status = 500
        try:
            if job.streamed:
                status = 200
                await endpoint.stream(self, send, stream, job)
            else:
                await stream.settle()
                if stream.failure is not None:
                    error = api.ApiError.of(stream.failure)
                    status = error.status
                    raise error
                if stream.cancelled and not stream.done:
                    status = 499  # the client went away: nothing to answer
                else:
                    await endpoint.answer(self, send, stream, job)
                    status = 200
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
