"""The one helper that runs commands: logged with -v, no terminal input, and a missing
program, a hang or a failure is one WorkbenchError naming what was being done."""

import logging
import sys

import pytest

from workbench.errors import WorkbenchError
from workbench.subprocesses import run, spawn


def test_failure_names_what_and_the_last_lines() -> None:
    script = "import sys; print('first'); print('the real reason', file=sys.stderr); sys.exit(3)"
    with pytest.raises(WorkbenchError) as err:
        run([sys.executable, "-c", script], what="building env 'x'")
    assert err.value.message == "building env 'x' failed (exit 3): the real reason"
    assert err.value.exit_code == 1


def test_missing_program_and_timeout_are_one_line() -> None:
    with pytest.raises(WorkbenchError, match="^nbval failed: no-such-program-here not found$"):
        run(["no-such-program-here", "--x"], what="nbval")
    with pytest.raises(WorkbenchError, match="^ssh timed out after 0.5 s$"):
        run([sys.executable, "-c", "import time; time.sleep(30)"], what="ssh", timeout=0.5)
    with pytest.raises(WorkbenchError, match="^ssh failed: no-such-ssh not found$"):
        spawn(["no-such-ssh"], what="ssh")


def test_a_prompt_reads_end_of_file_instead_of_waiting() -> None:
    """stdin is /dev/null: a tool that asks "Proceed ([y]/n)?" gets EOF at once."""
    proc = run(
        [sys.executable, "-c", "print(repr(input('Proceed ([y]/n)? ')))"],
        what="a prompt",
        timeout=20,
        check=False,
    )
    assert proc.returncode == 1 and "EOFError" in proc.stderr


def test_check_false_returns_the_exit_status(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="workbench"):
        proc = run([sys.executable, "-c", "raise SystemExit(4)"], what="x", check=False)
    assert proc.returncode == 4
    assert any(r.getMessage().startswith(f"$ {sys.executable} -c") for r in caplog.records)
