"""Run the real CLI in a subprocess as a user would, and read what it prints."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def workbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m workbench ARGS` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def json_data(stdout: str) -> object:
    """The data of a command's --json output, checking the envelope every command prints."""
    payload = json.loads(stdout)
    assert payload["schema"] == 1 and "data" in payload and "command" in payload, payload
    return payload["data"]


def write_env(root: Path, name: str, body: str) -> Path:
    path = root / "envs" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    return path
