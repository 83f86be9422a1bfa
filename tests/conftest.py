"""Shared helpers: run the real CLI in a subprocess, make throwaway projects, drive kernels."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent


# Fuzz tests (tests/reliability/) keep no example database (nothing written into the
# checkout) and no per-example deadline (a real CLI call takes tens of milliseconds).
settings.register_profile(
    "workbench",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("workbench")


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


def write_env(root: Path, name: str, body: str) -> Path:
    path = root / "envs" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture(scope="session")
def demo_envs() -> None:
    """The project's own envs (textgen, embed), built from their locks into the repo's
    gitignored .workbench/ (a no-op when they are current), with their kernels visible."""
    os.environ["JUPYTER_PATH"] = str(REPO / ".workbench" / "jupyter")
    proc = workbench("env", "create", "--all", "--locked", cwd=REPO)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workbench project in a temp dir; user-wide Jupyter dirs point into it too."""
    root = tmp_path / "proj"
    (root / "envs").mkdir(parents=True)
    (root / "workbench.toml").write_text('[project]\nname = "testproj"\n')
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(root / ".workbench" / "jupyter"))
    return root


def run_in_kernel(kernel_name: str, code: str, timeout: float = 120) -> str:
    """Start the named kernel with jupyter_client (as Jupyter does), run code, return stdout."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=timeout)
    chunks: list[str] = []

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            chunks.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            chunks.append("ERROR " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])

    try:
        kc.execute_interactive(code, timeout=timeout, output_hook=collect)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(chunks)
