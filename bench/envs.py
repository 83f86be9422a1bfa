"""Env build speed, side by side in one run, on the textgen spec (torch, transformers, gradio).

Prints:
  first build    `workbench env create` in a fresh project (warm uv cache, no bytecode to reuse)
  warm rebuild   `workbench env create --force` (what a rebuild after a spec edit costs)
  no-op          `workbench env create` with nothing changed (best of 5)
  pip baseline   `python -m venv` + `pip install` of the same requirements (pip.conf honoured)
and the ratios against the goals (rebuild <= 0.05x pip, no-op <= 0.3 s).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = "textgen"


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> int:
    wb = [sys.executable, "-m", "workbench"]
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        project = Path(tmp) / "proj"
        project.mkdir()
        shutil.copy(REPO / "workbench.toml", project)
        shutil.copytree(REPO / "envs", project / "envs")

        first = timed([*wb, "env", "create", ENV], project)
        rebuild = timed([*wb, "env", "create", ENV, "--force"], project)
        noop = min(timed([*wb, "env", "create", ENV], project) for _ in range(5))

        plan = json.loads(
            subprocess.run(
                [*wb, "env", "plan", ENV, "--json"],
                cwd=project,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["data"]
        venv = Path(tmp) / "pip-venv"
        pip = timed([sys.executable, "-m", "venv", str(venv)], project)
        pip += timed([str(venv / "bin" / "pip"), "install", "--quiet", *plan["packages"]], project)

    rows = [
        ("first build (fresh project, warm uv cache)", first, first / pip),
        ("warm rebuild (workbench env create --force)", rebuild, rebuild / pip),
        ("no-op (unchanged spec, best of 5)", noop, None),
        ("pip baseline (python -m venv + pip install)", pip, 1.0),
    ]
    print(f"env '{ENV}': {len(plan['packages'])} requirements, Python {plan['python']}")
    for label, seconds, ratio in rows:
        shown = f"{ratio:6.3f}x pip" if ratio is not None else " " * 10
        print(f"  {label:46s} {seconds:7.2f} s  {shown}")
    print(
        f"goal: warm rebuild <= 0.05x pip -> {rebuild / pip:.3f}x "
        f"({'met' if rebuild / pip <= 0.05 else 'NOT met'})"
    )
    print(f"goal: no-op <= 0.3 s -> {noop:.2f} s ({'met' if noop <= 0.3 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
