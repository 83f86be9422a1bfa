"""The `workbench` command: parses arguments, dispatches, renders the result."""

import argparse
import logging
import signal
import sys
from pathlib import Path

from workbench import __version__, results
from workbench import project as projects
from workbench.commands import cluster, env, gpus, image, init, kernels, run, serve, sweep, test
from workbench.errors import INTERRUPTED, WorkbenchError

DESCRIPTION = """Research-to-serving workbench: every envs/NAME.yml becomes an isolated env,
a lock and a Jupyter kernel (wb-NAME).

Common flows:
  workbench init                      take in an existing repository (its environment.yml)
  workbench env plan textgen          what would be installed, without building
  workbench env create --all          build every env and register its kernel
  workbench env lock --all            write exact, hashed locks to commit
  workbench env check --all           exit 1 if an env drifted from its lock
  workbench kernels                   the project's kernels and the JUPYTER_PATH to see them
  workbench run NB -p steps 2000      run a notebook in its env kernel, record it in runs/
  workbench runs compare A B          compare recorded runs (parameters, metrics)
  workbench sweep NB -p lr 1e-3,3e-4  a parameter grid, every point a recorded run
  workbench test -n 2                 smoke-run every notebook as a test
  workbench up && workbench ps        start the Gradio apps in the background, check them
  workbench tunnel --print            the ssh -L line that reaches lab and apps
  workbench gpus                      the server's GPUs and who holds them
  workbench cluster up --nodes 2      a Ray cluster on 127.0.0.1 for sweep --cluster
  workbench image chat --run          an OCI image of an app, started on 127.0.0.1

--project and -v go before or after the command. --json prints one object with a
"schema" version and the command's data (or its error).
Exit codes: 0 success, 1 a check or build failed, 2 usage or bad input."""


def _options(default: object) -> argparse.ArgumentParser:
    """--project and -v; given after a command they must not reset what was given before
    it, so the commands' copies default to SUPPRESS (not set at all)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--project",
        type=Path,
        metavar="PATH",
        default=default,
        help="project root (default: nearest folder with workbench.toml)",
    )
    options.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log every command run"
    )
    return options


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="workbench",
        description=DESCRIPTION,
        parents=[_options(None)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _options(argparse.SUPPRESS)
    for module in (init, env, kernels, run, sweep, test, serve, image, gpus, cluster):
        module.add_parser(sub, common)
    return top


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    # jsonschema (under nbformat and papermill) loads rfc3987_syntax whenever it is
    # installed, as it is beside jupyterlab, and that module compiles a grammar for ~2.2 s
    # on every start. It only checks IRI formats, which notebooks never use, and jsonschema
    # treats it as optional: workbench runs without it.
    sys.modules.setdefault("rfc3987_syntax", None)
    args = parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a half-made build is removed on the way out.
    signal.signal(signal.SIGTERM, _interrupted)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stderr)
    command = " ".join(filter(None, (args.command, getattr(args, "verb", None))))
    as_json = getattr(args, "json", False)
    try:
        result = args.handler(args, _project(args))
    except WorkbenchError as exc:
        results.fail(exc, command, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        return INTERRUPTED
    results.emit(result, command, as_json)
    return result.code


def _project(args: argparse.Namespace) -> projects.Project | None:
    if args.handler is init.cmd_init:
        return None  # init makes the project
    if args.handler is serve.cmd_tunnel and args.destination and not args.print_only:
        return None  # on the laptop: --project names the folder on the server
    try:
        root = projects.find_root(args.project or Path.cwd())
    except WorkbenchError:
        if args.handler in (env.cmd_plan, serve.cmd_tunnel, gpus.cmd_gpus):
            return None  # these also work outside a project (a spec file; the laptop; GPUs)
        raise
    return projects.load(root)
