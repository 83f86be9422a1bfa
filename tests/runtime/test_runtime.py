"""workbench.runtime runs inside env interpreters: it imports with `python -I` in a bare
venv that has nothing but the standard library (and old env Pythons read it), and it pulls
in no tool-side module."""

import subprocess
import sys
from pathlib import Path

import pytest

import workbench
from workbench import project as projects
from workbench.envs import builds

RUNTIME = Path(workbench.__file__).parent / "runtime"
MODULES = sorted(
    ".".join(("workbench.runtime", *p.relative_to(RUNTIME).with_suffix("").parts))
    for p in RUNTIME.rglob("*.py")
    if p.stem not in ("__init__", "__main__")
)
TOOL_SIDE = [
    "workbench.envs",
    "workbench.notebooks",
    "workbench.serving",
    "workbench.cli",
    "workbench.errors",
    "yaml",
    "rich",
    "packaging",
    "papermill",
    "rattler",
]
PROBE = f"""
import importlib, json, sys
for name in {MODULES!r}:
    importlib.import_module(name)
from workbench import record
record("probe", 1.5)
leaked = [m for m in sys.modules if any(m == t or m.startswith(t + ".") for t in {TOOL_SIDE!r})]
print(json.dumps(leaked))
"""


def _pythons() -> list[Path]:
    """This interpreter and the oldest env Python the runtime supports, where installed."""
    old = sorted(Path.home().glob(".pyenv/versions/3.8.*/bin/python3.8"))
    return [Path(sys.executable), *old[:1]]


@pytest.mark.parametrize("python", _pythons(), ids=lambda p: p.name)
def test_runtime_imports_in_a_bare_venv(tmp_path: Path, python: Path) -> None:
    venv = tmp_path / "bare"
    subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    project = projects.Project(root=tmp_path / "proj", name="proj")
    builds.link_runtime(project, venv)
    proc = subprocess.run(
        [venv / "bin" / "python", "-I", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metric, leaked = proc.stdout.splitlines()
    assert metric == "metric probe = 1.5" and leaked == "[]"


def test_every_runtime_module_is_probed() -> None:
    assert "workbench.runtime.app_runner" in MODULES and len(MODULES) >= 8
    assert "workbench.runtime.engine.batching" in MODULES
