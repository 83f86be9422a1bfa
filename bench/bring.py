"""Bringing an existing repository in: `workbench init` + first build + `workbench test`.

Makes a fresh repository laid out the way research repositories are (environment.yml at
the root installing the repository itself with `-e .`, notebooks in two folders, one
saved with kernel `python3`, the other in the conda env's kernel), then times, as a user
would run them:
  init            `workbench init` (finds the spec and notebooks, writes workbench.toml)
  first build     `workbench env create --all` (warm uv cache)
  test            `workbench test` (both notebooks, in the env's kernel)
and, side by side, the pip baseline for the same env: `python -m venv` + `pip install`
of the same requirements and `-e .`.
"""

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SPEC = """
name: tabular-gan
channels:
  - conda-forge
dependencies:
  - python=3.11
  - numpy
  - pandas
  - scikit-learn
  - matplotlib
  - pip
  - pip:
    - -e .
"""
PACKAGE = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "tabgan"
version = "0.1.0"
[tool.setuptools]
packages = ["tabgan"]
"""
PROBE = "import numpy, pandas, sklearn, matplotlib, tabgan\nprint(tabgan.__name__)"


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - started


def notebook(path: Path, kernel: str, display: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": PROBE,
                "outputs": [],
                "execution_count": None,
            }
        ],
        "metadata": {"kernelspec": {"name": kernel, "display_name": display, "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


def make_repo(root: Path) -> None:
    (root / "tabgan").mkdir(parents=True)
    (root / "tabgan" / "__init__.py").write_text("")
    (root / "environment.yml").write_text(textwrap.dedent(SPEC).lstrip())
    (root / "pyproject.toml").write_text(textwrap.dedent(PACKAGE).lstrip())
    notebook(root / "notebooks" / "explore.ipynb", "python3", "Python 3")
    notebook(
        root / "examples" / "demo.ipynb",
        "conda-env-tabular-gan-py",
        "Python [conda env:tabular-gan]",
    )


def main() -> int:
    wb = [sys.executable, "-m", "workbench"]
    with tempfile.TemporaryDirectory(prefix="wb-bring-") as tmp:
        repo = Path(tmp) / "tabular-gan"
        make_repo(repo)
        init = timed([*wb, "init"], repo)
        build = timed([*wb, "env", "create", "--all"], repo)
        test = timed([*wb, "test"], repo)
        plan = json.loads(
            subprocess.run(
                [*wb, "env", "plan", "tabular-gan", "--json"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )["data"]
        venv = Path(tmp) / "pip-venv"
        pip = timed([sys.executable, "-m", "venv", str(venv)], repo)
        requirements = [p for p in plan["packages"] if not p.startswith("-e ")]
        pip += timed(
            [str(venv / "bin" / "pip"), "install", "--quiet", *requirements, "-e", "."], repo
        )
    rows = [
        ("workbench init", init),
        ("first build (env create --all, warm uv cache)", build),
        ("workbench test (2 notebooks)", test),
        ("init + first build", init + build),
        ("pip baseline (python -m venv + pip install)", pip),
    ]
    print(f"fresh repository: {len(plan['packages'])} requirements, Python {plan['python']}")
    for label, seconds in rows:
        print(f"  {label:<50} {seconds:7.2f} s")
    print(f"  init + first build vs pip: {(init + build) / pip:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
