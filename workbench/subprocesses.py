"""The one helper that runs external commands: every command is logged under -v, gets no
terminal input (a prompt can never hang a build), and a failure, a missing program or a
timeout becomes one WorkbenchError that names what was being done."""

import contextlib
import ctypes
import logging
import os
import shlex
import signal
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


def _argv(cmd: Sequence[str | Path]) -> list[str]:
    argv = [str(c) for c in cmd]
    log.debug("$ %s", shlex.join(argv))
    return argv


def _environ(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


def run(
    cmd: Sequence[str | Path],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    capture: bool = True,
    exit_code: int = CHECK_FAILED,
) -> subprocess.CompletedProcess[str]:
    """Run cmd to its end, capturing its output unless capture is False (then it goes to
    the terminal); env adds to this process's environment.

    Raises WorkbenchError naming `what` when the program is missing, outlives timeout
    seconds, or (with check) exits non-zero: then with the last lines it printed.
    """
    argv = _argv(cmd)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=_environ(env),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=capture,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise WorkbenchError(f"{what} failed: {argv[0]} not found", exit_code) from exc
    except subprocess.TimeoutExpired:
        raise WorkbenchError(f"{what} timed out after {timeout:g} s", exit_code) from None
    if check and proc.returncode != 0:
        tail = last_lines(proc.stderr or "") or last_lines(proc.stdout or "") or "(no output)"
        raise WorkbenchError(f"{what} failed (exit {proc.returncode}): {tail}", exit_code)
    return proc


def spawn(
    cmd: Sequence[str | Path],
    *,
    what: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    **popen: object,
) -> subprocess.Popen:
    """Start cmd without waiting for it (servers, supervisors, ssh); env adds to this
    process's environment. A missing program is a WorkbenchError naming `what`."""
    argv = _argv(cmd)
    try:
        return subprocess.Popen(argv, cwd=cwd, env=_environ(env), stdin=stdin, **popen)
    except FileNotFoundError as exc:
        raise WorkbenchError(f"{what} failed: {argv[0]} not found") from exc


def die_with_parent() -> None:
    """For preexec_fn: the child gets SIGTERM when the process that started it dies
    (Linux PR_SET_PDEATHSIG), so workers never outlive whoever drives them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def interruptible_child() -> None:
    """For preexec_fn of a child that is stopped with SIGINT: die_with_parent, and SIGINT at
    its default, since a child keeps an ignored signal ignored across exec (a process started
    under nohup or as a background job has SIGINT ignored)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
