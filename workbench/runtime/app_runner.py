"""Serve one Gradio app file inside a project env: health, metrics, JSON logs, clean shutdown.

Started by the supervisor (or `workbench serve`) with the env's own interpreter:

    ENV_PYTHON -m workbench.runtime.app_runner --app gradio_apps/chat.py --name chat \
        [--host 127.0.0.1] [--port 7860] [--root PROJECT] [--state-dir DIR] [--standby]

Credentials come only from the environment, WORKBENCH_APP_AUTH="user:pass" (never argv, so
they never show in `ps`); the runner removes the variable from its environment once read.

Startup order (the port answers within a fraction of a second, long before the model loads):
  1. GRADIO_ANALYTICS_ENABLED=False, share off, a private GRADIO_TEMP_DIR (STATE_DIR/tmp, 0700);
  2. bind the socket and start uvicorn: /healthz answers 503 {"status": "starting"}, every
     other path 503 (workbench.runtime.hostguard), /metrics reports workbench_up 0;
  3. a loader thread imports the app file (gradio, torch, model weights), finds its
     gr.Blocks, counts its endpoints' requests for the metrics and runs its optional
     `warmup()`, then mounts the Blocks on the running server (workbench.runtime.appload);
  4. /healthz turns 200 {"status": "ok", ...}.
If the import fails the runner prints one line naming the error (plus the traceback's last
lines) on stderr and exits with status 2.

Standby (--standby, the supervisor's warm spare): after step 1 the runner imports what the
app file imports at top level, then waits for one line on stdin before it binds the port, so
a restart after a crash costs the model load, not the import floor.

SIGTERM/SIGINT call the app's optional `shutdown()`, then uvicorn stops with
timeout_graceful_shutdown=3: the process is gone within ~3 s even mid-stream.

Apps add their own statistics (time to first token, tokens) with
`from workbench.runtime.stats import stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.config
import os
import socket
import sys
import threading
import time
from pathlib import Path

from workbench.runtime import EXIT_USAGE, appload, contract, httpserver, logs
from workbench.runtime.hostguard import HostGuard, allowed_hosts
from workbench.runtime.instrument import instrument
from workbench.runtime.stats import Stats, stats

log = logging.getLogger("workbench.app")


class Runner:
    """One app server: starting, then ok (or failed), as /healthz and /metrics tell."""

    def __init__(self, args: argparse.Namespace, auth: tuple[str, str] | None, started: float):
        self.args, self.auth, self.started = args, auth, started
        self.name: str = args.name
        self.stats: Stats = stats
        self.status = "starting"
        self.error: str | None = None
        self.exit_code = 0
        self.module = None
        self.blocks = None
        self.ready_s: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None
        self.fastapi_app = None
        self.gradio_stack: contextlib.AsyncExitStack | None = None

    def health(self) -> dict:
        body = {
            "status": self.status,
            "app": self.name,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
        if self.status == "ok":
            body["ready_s"] = self.ready_s
            body["in_flight"] = self.stats.snapshot()["in_flight"]
        elif self.error:
            body["error"] = self.error
        return body

    def build_app(self) -> HostGuard:
        """FastAPI with /healthz and /metrics (Gradio is mounted once loaded), guarded."""
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
            return JSONResponse(self.health(), status_code=200 if self.status == "ok" else 503)

        @app.get("/metrics", include_in_schema=False)
        def metrics():
            self._update_queue_depth()
            text = self.stats.render_prometheus(self.name, up=self.status == "ok")
            return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

        self.fastapi_app = app
        return HostGuard(
            app,
            port=self.args.port,
            hosts=allowed_hosts(self.args.host),
            ready=lambda: self.status == "ok",
            status=lambda: {"status": self.status, "app": self.name},
            proxied=True,  # Lab's /workbench/proxy/NAME/ (X-Forwarded-Prefix)
        )

    def _update_queue_depth(self) -> None:
        queue = getattr(self.blocks, "_queue", None)
        per_id = getattr(queue, "event_queue_per_concurrency_id", None)
        if per_id is None:
            return
        with contextlib.suppress(Exception):  # gradio internals moved: keep the last value
            self.stats.set_queue_depth(sum(len(q.queue) for q in list(per_id.values())))

    def load(self) -> None:
        """Loader thread: import the app, warm it up, then mount it on the event loop."""
        app_file = Path(self.args.app).resolve()
        try:
            t0 = time.monotonic()
            self.module = appload.import_app(app_file, self.name)
            blocks = appload.find_blocks(self.module, app_file)
            for block_fn in blocks.fns.values():
                if block_fn.fn is not None and getattr(block_fn, "api_visibility", "") != "private":
                    block_fn.fn = instrument(block_fn.fn, self.stats)
            t1 = time.monotonic()
            warm = getattr(self.module, "warmup", None)
            if callable(warm):
                warm()
            t2 = time.monotonic()
            timing = {"import_s": round(t1 - t0, 3), "warmup_s": round(t2 - t1, 3)}
            log.info("app imported", extra={"fields": timing})
            mounted = appload.mount(
                self.fastapi_app,
                blocks,
                host=self.args.host,
                port=self.args.port,
                name=self.name,
                auth=self.auth,
            )
            self.gradio_stack = asyncio.run_coroutine_threadsafe(mounted, self.loop).result(120)
            self.blocks = blocks
        except BaseException as exc:  # noqa: BLE001 - every failure ends the process the same way
            self._load_failed(app_file, exc)
            return
        self.ready_s = round(time.monotonic() - self.started, 3)
        self.status = "ok"
        log.info("app ready", extra={"fields": {"ready_s": self.ready_s, "port": self.args.port}})

    def _load_failed(self, app_file: Path, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError) and exc.args and isinstance(exc.args[-1], str):
            message = f"{exc.args[-1]} ({type(exc).__name__} while importing {app_file.name})"
        else:
            message = f"failed to import {app_file}: {type(exc).__name__}: {exc}"
        self.error, self.status, self.exit_code = message, "failed", EXIT_USAGE
        logs.fail(self.name, message, exc)
        if self.server is not None:
            self.server.should_exit = True

    def on_signal(self) -> None:
        hook = getattr(self.module, "shutdown", None)
        if callable(hook):
            try:
                hook()
            except Exception:
                log.exception("app shutdown() failed")


def _private_environment(name: str, root: Path, state: Path, app_file: Path) -> None:
    """Before gradio is imported: no analytics, no share links, a private temp dir, offline
    hub, and the project and the app's folder importable."""
    tmp = state / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    os.chmod(tmp, 0o700)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(tmp)
    os.environ["GRADIO_SHARE"] = "False"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault(contract.PROJECT.name, str(root))
    os.environ[contract.APP_NAME.name] = name
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    sys.path.insert(0, str(app_file.parent))


def _wait_as_spare(app_file: Path) -> bool:
    """Preload the app's imports, then wait for the supervisor's word; False on EOF (it
    stopped without needing this spare)."""
    t0 = time.monotonic()
    modules = appload.preimport(app_file)
    fields = {"preloaded": modules, "s": round(time.monotonic() - t0, 3), "pid": os.getpid()}
    log.info("standby", extra={"fields": fields})
    return bool(sys.stdin.readline())


def _serve(runner: Runner, sock: socket.socket, level: str) -> int:
    """Run the app's server on sock until a signal (or a failed load) stops it; the exit
    status."""
    runner.server = httpserver.server(runner.build_app(), runner.name, level, runner.on_signal)
    runner.server.run(sockets=[sock])
    log.info("stopped", extra={"fields": {"exit_code": runner.exit_code}})
    httpserver.exit_soon(runner.exit_code)
    return runner.exit_code


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", required=True, help="the Gradio app file")
    parser.add_argument("--name", required=True, help="app name (logs, metrics, module name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    parser.add_argument("--root", default=None, help="project root (default: cwd)")
    parser.add_argument("--state-dir", default=None, help="default ROOT/.workbench/services/NAME")
    level = contract.LOG_LEVEL
    parser.add_argument("--log-level", default=level.unparsed(), type=contract.log_level)
    parser.add_argument(
        "--standby",
        action="store_true",
        help="preload the app's imports, then wait for a line on stdin before serving",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = _arguments(argv)
    root = Path(args.root or os.getcwd()).resolve()
    state = Path(args.state_dir or root / ".workbench" / "services" / args.name).resolve()
    app_file = Path(args.app)
    if not app_file.is_absolute():
        app_file = (root / app_file) if (root / app_file).exists() else app_file.resolve()
    args.app = str(app_file)
    if not app_file.is_file():
        logs.fail(args.name, f"app file not found: {app_file}")
        return EXIT_USAGE
    try:
        login = contract.APP_AUTH.pop()  # USER:PASSWORD, checked
    except ValueError as exc:
        logs.fail(args.name, str(exc))
        return EXIT_USAGE

    _private_environment(args.name, root, state, app_file)
    level = args.log_level.upper()
    logging.config.dictConfig(logs.config(args.name, level))
    if args.standby:
        if not _wait_as_spare(app_file):
            return 0
        started = time.monotonic()
    try:
        sock = httpserver.bind(args.host, args.port)
    except OSError as exc:
        logs.fail(args.name, f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_USAGE
    args.port = sock.getsockname()[1]
    auth = tuple(login.split(":", 1)) if login else None
    runner = Runner(args, auth, started)
    if allowed_hosts(args.host) is None and not auth:
        log.warning(f"listening on {args.host} without auth: anyone who can reach it can use it")
    fields = {
        "url": f"http://{args.host}:{args.port}/",
        "port": args.port,
        "app_file": str(app_file),
        "auth": bool(auth),
        "pid": os.getpid(),
    }
    log.info("listening", extra={"fields": fields})
    return _serve(runner, sock, level)


if __name__ == "__main__":
    sys.exit(main())
