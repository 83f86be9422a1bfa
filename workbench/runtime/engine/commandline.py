"""An engine's command line and its process: parse, configure, start the cores, serve.

    ENV_PYTHON -m workbench.runtime.engine --name tinygpt --model models/tiny-gpt \
        [--host 127.0.0.1] [--port 8000] [--workers 1] [--max-requests 0] [--max-rss-mb 0] ...

(`--help` lists every option; `workbench.serving.launch.engine` builds this line from
workbench.toml.) The settings come from workbench.runtime.engine.settings, the checks of
the model, keys and devices from workbench.runtime.engine.config, the HTTP side from
workbench.runtime.engine.server.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
import time
from pathlib import Path
from typing import Callable

from workbench.runtime import EXIT_USAGE, contract, httpserver, logs
from workbench.runtime.engine import textproc, tracing
from workbench.runtime.engine.config import configure
from workbench.runtime.engine.metrics import Registry
from workbench.runtime.engine.server import Engine
from workbench.runtime.engine.settings import HANDLER, SETTINGS, Setting, Value, family
from workbench.runtime.engine.workers import Pool

log = logging.getLogger("workbench.engine")


def parser() -> argparse.ArgumentParser:
    """The engine's command line: where it listens and what it serves, then every setting of
    workbench.runtime.engine.settings (each checked as the manifest checks it)."""
    p = argparse.ArgumentParser(
        prog="python -m workbench.runtime.engine",
        description="Serve one model from its env with an OpenAI-compatible HTTP API.",
    )
    p.add_argument("--name", required=True, help="the engine's name: the `model` clients ask for")
    p.add_argument("--model", required=True, help="model folder, pkg:PACKAGE/sub/folder or hf:ID")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    for setting in SETTINGS:
        p.add_argument(
            setting.flag,
            type=_checked(setting),
            default=setting.default,
            metavar="|".join(setting.choices) or setting.kind.__name__.upper(),
            help=f"{setting.help} (default {setting.render(setting.default)})",
        )
    keys = contract.API_KEYS.name
    p.add_argument("--api-keys-file", help=f"keys, one a line, mode 0600 (or {keys})")
    p.add_argument("--root", default=None, help="project root: relative model paths start here")
    level = contract.LOG_LEVEL
    p.add_argument("--log-level", default=level.unparsed(), type=contract.log_level)
    p.add_argument(
        "--standby",
        action="store_true",
        help="load the model, then wait for a line on stdin before serving (a warm spare)",
    )
    return p


def _checked(setting: Setting) -> Callable[[str], Value]:
    def parse(text: str) -> Value:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return parse


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


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parser().parse_args(argv)
    level = args.log_level.upper()
    logging.config.dictConfig(logs.config(args.name, level))
    try:
        settings, keys = configure(args)
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

    if family(engine.args.task) != HANDLER:  # a predict engine's cores read the inputs
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
