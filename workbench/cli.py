"""The `workbench` command: parses arguments, dispatches, renders the result.

The parser comes from workbench.grammar and imports no command implementation; the one
command that runs is imported after parsing, so `--version`, `--help` and quick commands
start in about the time the interpreter takes.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

from workbench.errors import INTERRUPTED, WorkbenchError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from workbench.project import Project
    from workbench.results import Result

# Handlers that run without a project, or where there may be none (a spec file; GPUs).
NO_PROJECT = {"init:cmd_init"}
PROJECT_OPTIONAL = {"env:cmd_plan", "serve:cmd_tunnel", "gpus:cmd_gpus"}


def parser() -> argparse.ArgumentParser:
    from workbench import grammar

    return grammar.parser()


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    # jsonschema (under nbformat and papermill) loads rfc3987_syntax whenever it is
    # installed, as it is beside jupyterlab, and that module compiles a grammar, slowly, on
    # every start. It only checks IRI formats, which notebooks never use, and jsonschema
    # treats it as optional: workbench runs without it.
    sys.modules.setdefault("rfc3987_syntax", None)
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        from workbench import __version__  # answered before the parser is built

        print(f"workbench {__version__}")
        return 0
    args = parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a half-made build is removed on the way out.
    signal.signal(signal.SIGTERM, _interrupted)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stderr)
    command = " ".join(filter(None, (args.command, getattr(args, "verb", None))))
    as_json = getattr(args, "json", False)
    if args.replaced_by:
        print(
            f"deprecated: use `workbench {args.replaced_by}` (this form goes in the next release)",
            file=sys.stderr,
        )
    from workbench import results

    try:
        result = dispatch(args)
    except WorkbenchError as exc:
        results.fail(exc, command, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        return INTERRUPTED
    results.emit(result, command, as_json)
    return result.code


def dispatch(args: argparse.Namespace) -> Result:
    """Run the handler that parsed args name; what main and the Lab extension's routes call."""
    from workbench import grammar

    grammar.resolve(args)
    _check_selection(args)
    if args.handler == "env:cmd_create":
        from workbench.envs import stamps

        unchanged = stamps.unchanged(args)  # a no-op create, answered before the envs stack loads
        if unchanged is not None:
            return unchanged
    return _handler(args.handler)(args, _project(args))


def _handler(name: str) -> Callable[[argparse.Namespace, Project | None], Result]:
    """The cmd_* function that "module:function" names, its module imported now."""
    import importlib

    module, function = name.split(":")
    return getattr(importlib.import_module(f"workbench.commands.{module}"), function)


def _check_selection(args: argparse.Namespace) -> None:
    named = getattr(args, args.selection) if getattr(args, "all", False) else None
    if named:
        raise WorkbenchError(f"give names or --all, not both (named: {' '.join(named)})")


def _project(args: argparse.Namespace) -> Project | None:
    if args.handler in NO_PROJECT:
        return None  # init makes the project
    if args.handler == "serve:cmd_tunnel" and args.destination and not args.print_only:
        return None  # on the laptop: --project names the folder on the server
    from pathlib import Path

    from workbench import project as projects

    try:
        root = projects.find_root(args.project or Path.cwd())
    except WorkbenchError:
        if args.handler in PROJECT_OPTIONAL:
            return None  # these also work outside a project (a spec file; the laptop; GPUs)
        raise
    return projects.load(root)
