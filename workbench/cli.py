"""The `workbench` command: parses arguments and dispatches; the work is elsewhere."""

import argparse
import logging
import signal
import sys
from pathlib import Path

from workbench import __version__
from workbench import project as projects
from workbench.commands import env, kernels, run, serve, test
from workbench.errors import WorkbenchError

DESCRIPTION = """Research-to-serving workbench: every envs/NAME.yml becomes an isolated env,
a lock and a Jupyter kernel (wb-NAME).

Common flows:
  workbench env plan textgen          what would be installed, without building
  workbench env create --all          build every env and register its kernel
  workbench env lock --all            write exact, hashed locks to commit
  workbench env check --all           exit 1 if an env drifted from its lock
  workbench kernels                   the project's kernels and the JUPYTER_PATH to see them
  workbench run NB -p steps 2000      run a notebook in its env kernel, record it in runs/
  workbench runs compare A B          compare recorded runs (parameters, metrics)
  workbench test -n 2                 smoke-run every notebook as a test
  workbench up && workbench ps        start the Gradio apps in the background, check them
  workbench tunnel --print            the ssh -L line that reaches lab and apps

Exit codes: 0 success, 1 a check or build failed, 2 usage or bad input."""


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--project",
        type=Path,
        metavar="PATH",
        help="project root (default: nearest folder with workbench.toml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    top = argparse.ArgumentParser(
        prog="workbench",
        description=DESCRIPTION,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    env.add_parser(sub, common)
    kernels.add_parser(sub, common)
    run.add_parser(sub, common)
    test.add_parser(sub, common)
    serve.add_parser(sub, common)
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
    try:
        return args.handler(args, _project(args))
    except WorkbenchError as exc:
        from workbench.console import error

        error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _project(args: argparse.Namespace) -> projects.Project | None:
    if args.handler is serve.cmd_tunnel and args.destination and not args.print_only:
        return None  # on the laptop: --project names the folder on the server
    try:
        root = projects.find_root(args.project or Path.cwd())
    except WorkbenchError:
        if args.handler in (env.cmd_plan, serve.cmd_tunnel):
            return None  # these also work outside a project (a spec file; the laptop)
        raise
    return projects.load(root)
