"""Serve one Gradio app file inside a project env: health, metrics, JSON logs, clean shutdown.

Runs as a *script* with the env's interpreter (inside an env `import workbench` resolves to a
stub package), so it imports only the stdlib plus what the env has (gradio, fastapi, uvicorn):

    ENV_PYTHON workbench/app_runner.py --app gradio_apps/chat.py --name chat \
        [--host 127.0.0.1] [--port 7860] [--root PROJECT] [--state-dir DIR]

Credentials come only from the environment, WORKBENCH_APP_AUTH="user:pass" (never argv, so
they never show in `ps`); the runner removes the variable from its environment once read.

Startup order (the port answers within a fraction of a second, long before the model loads):
  1. set GRADIO_ANALYTICS_ENABLED=False and a private GRADIO_TEMP_DIR (STATE_DIR/tmp, 0700);
  2. bind the socket and start uvicorn with a small FastAPI app: /healthz answers
     503 {"status": "starting"}, every other path 503, /metrics reports workbench_up 0;
  3. a loader thread imports the app file (gradio, torch, model weights), finds its
     gr.Blocks, instruments its endpoints for the metrics and runs its optional `warmup()`;
  4. on the event loop: gr.mount_gradio_app(app, demo, path="/") and the Gradio startup
     events that its lifespan hook would have run (the server is already up, so the hook
     mount_gradio_app installs never fires): queue workers, limiter, cache cleanup;
  5. /healthz turns 200 {"status": "ok", ...}.
If the import fails the runner prints one line naming the error (plus the traceback's last
lines) on stderr and exits with status 2.

Standby (`--standby`, used by the supervisor for a warm spare): after step 1 the runner
imports what the app file imports at top level (gradio, torch, transformers...: seconds of
work, without running the app), then waits for one line on stdin before it binds the port.
A restart after a crash then costs the model load, not the import floor.

SIGTERM/SIGINT call the app's optional `shutdown()` (the chat app stops its generations),
then uvicorn shuts down with timeout_graceful_shutdown=3, so the process is gone within
~3 s even mid-stream.

Apps read the shared statistics registry (workbench/appstats.py, loaded by path) as
`from workbench_appstats import stats`; the runner counts requests, errors and queue depth
itself, apps add time to first token and tokens.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import datetime as _dt
import functools
import importlib
import importlib.util
import inspect
import json
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

T_START = time.monotonic()
HERE = Path(__file__).resolve().parent
# Run as a script, this folder would be sys.path[0]: its modules (kernels.py, spec.py...)
# would shadow packages of the same name for the app (transformers probes `kernels`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
EXIT_APP_FAILED = 2

log = logging.getLogger("workbench.app")


# ------------------------------------------------------------------------------ logging
class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, app, logger, msg (+ access fields, exc)."""

    app = "app"

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        out = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "app": self.app,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(level: str = "INFO") -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "workbench": {"handlers": ["stdout"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": "WARNING"},
    }


# ------------------------------------------------------------------------------ helpers
def _fail(name: str, message: str, tb_tail: str = "") -> None:
    line = f"workbench app {name}: {message}".replace("\n", " ")
    sys.stderr.write(line + "\n")
    if tb_tail:
        sys.stderr.write(tb_tail.rstrip() + "\n")
    sys.stderr.flush()


def _traceback_tail(exc: BaseException, lines: int = 8) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join("  " + t for t in text[-lines:])


def _load_appstats():
    """Load workbench/appstats.py by path and publish it as sys.modules['workbench_appstats']."""
    spec = importlib.util.spec_from_file_location("workbench_appstats", HERE / "appstats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["workbench_appstats"] = module
    spec.loader.exec_module(module)
    return module


def _parse_auth(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ValueError('WORKBENCH_APP_AUTH must look like "user:password"')
    return user, password


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP; without it every first SSE chunk waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _preimport(app_file: Path) -> list[str]:
    """Import the modules the app file imports at top level (not the app's own modules).

    Failures are ignored here: the real import of the app reports them.
    """
    local = {p.stem for p in app_file.parent.iterdir()}
    wanted: list[tuple[str, list[str]]] = [("uvicorn", []), ("gradio", [])]
    for node in ast.parse(app_file.read_bytes()).body:
        # `try: import x / except ImportError` blocks count too
        for n in node.body if isinstance(node, ast.Try) else [node]:
            if isinstance(n, ast.Import):
                wanted += [(alias.name, []) for alias in n.names]
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                wanted.append((n.module, [alias.name for alias in n.names]))
    done = []
    for module_name, names in wanted:
        if module_name.split(".")[0] in local:
            continue
        try:
            module = importlib.import_module(module_name)
            for name in names:  # lazy packages (transformers) load submodules on access
                getattr(module, name, None)
        except Exception:  # noqa: BLE001, S112 - reported by the app's own import
            continue
        done.append(module_name)
    return done


def _split_host(value: str) -> tuple[str, str | None]:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:7860
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1 :]
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() else (value, None)


def _instrument(fn, stats):
    """Wrap an event function so requests/errors are counted; keeps its kind and signature."""
    if getattr(fn, "_workbench_instrumented", False):
        return fn

    def _error(e: BaseException) -> None:
        if isinstance(e, Exception):
            stats.request_error()

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            stats.request_started()
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except BaseException as e:
                _error(e)
                raise
            finally:
                stats.request_finished()

    elif inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            stats.request_started()
            try:
                yield from fn(*args, **kwargs)
            except BaseException as e:
                _error(e)
                raise
            finally:
                stats.request_finished()

    elif inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            stats.request_started()
            try:
                return await fn(*args, **kwargs)
            except BaseException as e:
                _error(e)
                raise
            finally:
                stats.request_finished()

    else:

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            stats.request_started()
            try:
                return fn(*args, **kwargs)
            except BaseException as e:
                _error(e)
                raise
            finally:
                stats.request_finished()

    wrapper._workbench_instrumented = True
    return wrapper


# ------------------------------------------------------------------------------ runner
class Runner:
    def __init__(self, args: argparse.Namespace, auth: tuple[str, str] | None, appstats) -> None:
        self.args = args
        self.name = args.name
        self.auth = auth
        self.appstats = appstats
        self.stats = appstats.stats
        self.status = "starting"
        self.error: str | None = None
        self.exit_code = 0
        self.module = None
        self.blocks = None
        self.ready_s: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None
        self.gradio_stack: contextlib.AsyncExitStack | None = None
        loopback = args.host in LOOPBACK_NAMES
        extra = os.environ.get("WORKBENCH_ALLOWED_HOSTS", "").lower().split(",")
        allowed = {"127.0.0.1", "localhost", "[::1]"} | {h.strip() for h in extra if h.strip()}
        self.allowed_hosts = allowed if loopback else None
        self.port = args.port

    # -- ASGI app -------------------------------------------------------------------------
    def build_app(self):
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse, PlainTextResponse

        @contextlib.asynccontextmanager
        async def lifespan(app):
            self.loop = asyncio.get_running_loop()
            threading.Thread(target=self.load, name="workbench-loader", daemon=True).start()
            try:
                yield
            finally:
                if self.gradio_stack is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.gradio_stack.aclose(), 2)

        app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz", include_in_schema=False)
        def healthz():
            body = {
                "status": self.status,
                "app": self.name,
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - T_START, 3),
            }
            if self.status == "ok":
                body["ready_s"] = self.ready_s
                body["in_flight"] = self.stats.snapshot()["in_flight"]
                return JSONResponse(body)
            if self.error:
                body["error"] = self.error
            return JSONResponse(body, status_code=503)

        @app.get("/metrics", include_in_schema=False)
        def metrics():
            self._update_queue_depth()
            text = self.stats.render_prometheus(self.name, up=self.status == "ok")
            return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

        self.fastapi_app = app
        return self._guard(app)

    def _update_queue_depth(self) -> None:
        queue = getattr(self.blocks, "_queue", None)
        per_id = getattr(queue, "event_queue_per_concurrency_id", None)
        if per_id is None:
            return
        with contextlib.suppress(Exception):  # gradio internals moved: keep the last value
            self.stats.set_queue_depth(sum(len(q.queue) for q in list(per_id.values())))

    def _guard(self, app):
        """Host-header check (DNS rebinding), 503 while starting, and a JSON access log."""
        runner = self
        access = logging.getLogger("workbench.access")

        async def send_plain(send, status: int, body: bytes, ctype=b"text/plain") -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})

        async def guarded(scope, receive, send):
            if scope["type"] not in ("http", "websocket"):
                return await app(scope, receive, send)
            if runner.allowed_hosts is not None:
                host_header = ""
                for key, value in scope.get("headers", ()):
                    if key == b"host":
                        host_header = value.decode("latin-1")
                        break
                host, port = _split_host(host_header)
                if host not in runner.allowed_hosts or (
                    port is not None and port != str(runner.port)
                ):
                    access.warning(
                        "rejected request with foreign Host header",
                        extra={"fields": {"host": host_header[:200], "path": scope.get("path")}},
                    )
                    if scope["type"] == "websocket":
                        await send({"type": "websocket.close", "code": 1008})
                        return
                    return await send_plain(send, 400, b"Invalid host header")
            path = scope.get("path", "")
            if (
                scope["type"] == "http"
                and runner.status != "ok"
                and path
                not in (
                    "/healthz",
                    "/metrics",
                )
            ):
                body = json.dumps({"status": runner.status, "app": runner.name}).encode()
                return await send_plain(send, 503, body, b"application/json")
            if scope["type"] != "http":
                return await app(scope, receive, send)
            t0 = time.perf_counter()
            status = [0]

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                client = scope.get("client") or ("", 0)
                level = logging.DEBUG if path in ("/healthz", "/metrics") else logging.INFO
                if access.isEnabledFor(level):
                    access.log(
                        level,
                        f"{scope['method']} {path} {status[0]}",
                        extra={
                            "fields": {
                                "client": f"{client[0]}:{client[1]}",
                                "method": scope["method"],
                                "path": path,
                                "status": status[0],
                                "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
                            }
                        },
                    )

        return guarded

    # -- loading --------------------------------------------------------------------------
    def load(self) -> None:
        """Loader thread: import the app, warm it up, then mount it on the event loop."""
        app_path = Path(self.args.app).resolve()
        try:
            t0 = time.monotonic()
            spec = importlib.util.spec_from_file_location(f"workbench_app_{self.name}", app_path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            self.module = module
            blocks = self._find_blocks(module)
            for block_fn in blocks.fns.values():
                if block_fn.fn is not None and getattr(block_fn, "api_visibility", "") != "private":
                    block_fn.fn = _instrument(block_fn.fn, self.stats)
            t1 = time.monotonic()
            warm = getattr(module, "warmup", None)
            if callable(warm):
                warm()
            t2 = time.monotonic()
            log.info(
                "app imported",
                extra={"fields": {"import_s": round(t1 - t0, 3), "warmup_s": round(t2 - t1, 3)}},
            )
            future = asyncio.run_coroutine_threadsafe(self._mount(blocks), self.loop)
            future.result(timeout=120)
        except BaseException as e:  # noqa: BLE001 - every failure ends the process the same way
            self._load_failed(app_path, e)
            return
        self.ready_s = round(time.monotonic() - T_START, 3)
        self.status = "ok"
        log.info("app ready", extra={"fields": {"ready_s": self.ready_s, "port": self.port}})

    def _find_blocks(self, module):
        import gradio as gr

        demo = getattr(module, "demo", None)
        if isinstance(demo, gr.Blocks):
            return demo
        found = {id(v): v for v in vars(module).values() if isinstance(v, gr.Blocks)}
        if len(found) == 1:
            return next(iter(found.values()))
        raise LookupError(
            f"{self.args.app} defines {len(found) or 'no'} gr.Blocks objects; "
            "name the one to serve `demo`"
        )

    async def _mount(self, blocks) -> None:
        import gradio as gr

        kwargs = {"auth": self.auth} if self.auth else {}
        if self.auth:
            kwargs["auth_message"] = f"workbench app {self.name}"
        gr.mount_gradio_app(
            self.fastapi_app,
            blocks,
            path="/",
            server_name=self.args.host,
            server_port=self.port,
            footer_links=["api", "settings"],
            ssr_mode=False,
            **kwargs,
        )
        gradio_app = self.fastapi_app.router.routes[-1].app
        # The server already started, so the lifespan hook mount_gradio_app installed will
        # never run: do what it does (Gradio lifespan, then queue/limiter startup) here.
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(gradio_app.router.lifespan_context(gradio_app))
        self.gradio_stack = stack
        blocks.run_startup_events()
        await blocks.run_extra_startup_events()
        self.blocks = blocks

    def _load_failed(self, app_path: Path, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError) and exc.args and isinstance(exc.args[-1], str):
            message = f"{exc.args[-1]} ({type(exc).__name__} while importing {app_path.name})"
        else:
            message = f"failed to import {app_path}: {type(exc).__name__}: {exc}"
        self.error = message
        self.status = "failed"
        _fail(self.name, message, _traceback_tail(exc))
        self.exit_code = EXIT_APP_FAILED
        if self.server is not None:
            self.server.should_exit = True

    def on_signal(self) -> None:
        hook = getattr(self.module, "shutdown", None)
        if callable(hook):
            try:
                hook()
            except Exception:
                log.exception("app shutdown() failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", required=True, help="the Gradio app file")
    parser.add_argument("--name", required=True, help="app name (logs, metrics, module name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    parser.add_argument("--root", default=None, help="project root (default: cwd)")
    parser.add_argument("--state-dir", default=None, help="default ROOT/.workbench/apps/NAME")
    parser.add_argument("--log-level", default=os.environ.get("WORKBENCH_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--standby",
        action="store_true",
        help="preload the app's imports, then wait for a line on stdin before serving",
    )
    args = parser.parse_args(argv)

    JsonFormatter.app = args.name
    root = Path(args.root or os.getcwd()).resolve()
    state = Path(args.state_dir or root / ".workbench" / "apps" / args.name).resolve()
    app_file = Path(args.app)
    if not app_file.is_absolute():
        app_file = (root / app_file) if (root / app_file).exists() else app_file.resolve()
    args.app = str(app_file)
    if not app_file.is_file():
        _fail(args.name, f"app file not found: {app_file}")
        return EXIT_APP_FAILED

    try:
        auth = _parse_auth(os.environ.pop("WORKBENCH_APP_AUTH", None))
    except ValueError as e:
        _fail(args.name, str(e))
        return EXIT_APP_FAILED

    # Before gradio is imported: no analytics, a private temp dir, no share links.
    tmp = state / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    os.chmod(tmp, 0o700)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(tmp)
    os.environ["GRADIO_SHARE"] = "False"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WORKBENCH_PROJECT", str(root))
    os.environ["WORKBENCH_APP_NAME"] = args.name
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    sys.path.insert(0, str(app_file.parent))

    logging.config.dictConfig(log_config(args.log_level.upper()))
    if args.standby:
        t0 = time.monotonic()
        modules = _preimport(app_file)
        log.info(
            "standby",
            extra={
                "fields": {
                    "preloaded": modules,
                    "s": round(time.monotonic() - t0, 3),
                    "pid": os.getpid(),
                }
            },
        )
        if not sys.stdin.readline():  # EOF: the supervisor stopped without needing us
            return 0
        global T_START
        T_START = time.monotonic()
    appstats = _load_appstats()

    try:
        sock = _bind(args.host, args.port)
    except OSError as e:
        _fail(args.name, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
        return EXIT_APP_FAILED
    args.port = sock.getsockname()[1]

    import uvicorn

    runner = Runner(args, auth, appstats)
    if runner.allowed_hosts is None and not auth:
        log.warning(f"listening on {args.host} without auth: anyone who can reach it can use it")

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn's own handler records the signal and re-raises it after shutdown (the
            # process then dies of SIGTERM, status -15); a graceful stop exits 0 instead.
            runner.on_signal()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    config = uvicorn.Config(
        runner.build_app(),
        log_config=log_config(args.log_level.upper()),
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
        lifespan="on",
        ws="none",
    )
    server = Server(config)
    runner.server = server
    log.info(
        "listening",
        extra={
            "fields": {
                "url": f"http://{args.host}:{args.port}/",
                "port": args.port,
                "app_file": str(app_file),
                "auth": bool(auth),
                "pid": os.getpid(),
            }
        },
    )
    server.run(sockets=[sock])
    code = runner.exit_code
    log.info("stopped", extra={"fields": {"exit_code": code}})
    # Worker threads (a generation that ignores its stop event) must not hold the exit.
    timer = threading.Timer(2.0, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    return code


if __name__ == "__main__":
    sys.exit(main())
