"""The one helper that runs external commands."""

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from workbench.errors import CHECK_FAILED, WorkbenchError

log = logging.getLogger("workbench")

TAIL_LINES = 8


def last_lines(text: str, n: int = TAIL_LINES) -> str:
    """The last n non-empty lines of text, joined with ' | ' to stay on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def run(
    cmd: Sequence[str | Path],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    exit_code: int = CHECK_FAILED,
) -> subprocess.CompletedProcess[str]:
    """Run cmd, capture its output, and raise WorkbenchError naming `what` on failure."""
    argv = [str(c) for c in cmd]
    log.debug("$ %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            input=input,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as exc:
        raise WorkbenchError(f"{what} failed: {argv[0]} not found", exit_code) from exc
    if proc.returncode != 0:
        tail = last_lines(proc.stderr) or last_lines(proc.stdout) or "(no output)"
        raise WorkbenchError(f"{what} failed (exit {proc.returncode}): {tail}", exit_code)
    return proc
