"""What commands return, rendered once: for people, or as JSON with --json.

With --json a command prints one object on stdout:
    {"schema": 1, "command": "env list", "exit_code": 0, "data": ...}
and a failure prints
    {"schema": 1, "command": "env list", "exit_code": 2, "error": {"message": "..."}}
(the one-line error also goes to stderr). Programs that read another workbench's output
(`tunnel` reads a remote `ps --json`, a sweep's task on a Ray node reads `run --json`) use
data_of(), which also takes the bare list or object that workbench printed before the
schema existed.
"""

import json
import sys
from collections.abc import Callable

from workbench.errors import WorkbenchError

SCHEMA = 1


class Result:
    """A handler's outcome: data for --json, show() to print it for people, the exit code.

    A plain class: every command's start imports this module, and importing dataclasses
    (with inspect under it) is a good share of a no-op command's time."""

    def __init__(
        self, data: object = None, show: Callable[[], None] | None = None, code: int = 0
    ) -> None:
        self.data, self.show, self.code = data, show, code


def envelope(result: Result, command: str) -> dict:
    return {"schema": SCHEMA, "command": command, "exit_code": result.code, "data": result.data}


def error_envelope(error: WorkbenchError, command: str) -> dict:
    envelope = {"schema": SCHEMA, "command": command, "exit_code": error.exit_code}
    return {**envelope, "error": {"message": error.message}}


def emit(result: Result, command: str, as_json: bool) -> None:
    if as_json:
        _print(envelope(result, command))
    elif result.show is not None:
        result.show()


def fail(error: WorkbenchError, command: str, as_json: bool) -> None:
    from workbench.console import error as print_error

    print_error(error.message)
    if as_json:
        _print(error_envelope(error, command))


def _print(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def data_of(text: str, source: str = "workbench") -> object:
    """The data in a command's --json output; a WorkbenchError for an error envelope or
    for output that is not JSON (source names who printed it)."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise WorkbenchError(f"{source} answered no JSON", 1) from None
    if not isinstance(payload, dict) or "schema" not in payload:
        return payload  # a workbench from before the envelope
    if "error" in payload:
        message = (payload.get("error") or {}).get("message") or "failed"
        raise WorkbenchError(f"{source}: {message}", payload.get("exit_code") or 1)
    return payload.get("data")
