"""Env build speed against the raw tools, side by side in one run.

Prints, for one env (the project's textgen by default: torch, transformers, gradio):
  first builds   `workbench env create` in a fresh project (warm uv cache): with workbench's
                 caches empty (nothing compiled before), then in a second fresh project
  warm rebuild   `workbench env create --force` (what a rebuild after a spec edit costs)
  uv sync        the raw tool on the same lock: `uv venv` + `uv pip sync` into a new venv
  no-op          `workbench env create` with nothing changed
  pip            `python -m venv` + `pip install` of the same requirements (pip.conf honoured)
and the ratios against the goals: warm rebuild <= 1.25x uv sync and <= 0.05x pip, first
build <= 0.2x pip, no-op <= 0.3 s. Builds are from the env's lock (written first when the
spec has none), as with a committed lock.

    python bench/envs.py                      # textgen, 3 repeats
    python bench/envs.py --spec small.yml     # any spec, built in a throwaway project
    python bench/envs.py --repeats 5 --no-pip
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WB = [sys.executable, "-m", "workbench"]
TEXTGEN = REPO / "envs" / "textgen.yml"
# Options that shaped the lock but are not passed when installing it (as the uv backend does).
RESOLVE_ONLY = ("--constraints", "--prerelease")


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def new_project(root: Path, spec: Path) -> tuple[Path, str]:
    """A throwaway project holding only spec (and its lock): (folder, env name)."""
    name = spec.stem
    (root / "envs").mkdir(parents=True)
    shutil.copy(spec, root / "envs" / f"{name}.yml")
    lock = spec.with_suffix(".lock")
    if lock.is_file():
        shutil.copy(lock, root / "envs" / f"{name}.lock")
    (root / "workbench.toml").write_text(f'[project]\nname = "bench"\n\n[envs.{name}]\n')
    return root, name


def install_options(options: list[str]) -> list[str]:
    kept: list[str] = []
    args = iter(options)
    for opt in args:
        if opt in RESOLVE_ONLY:
            next(args, None)
        else:
            kept.append(opt)
    return kept


def raw_uv_sync(plan: dict, lock: Path, cwd: Path, target: Path) -> float:
    """uv venv + uv pip sync of lock into target (a new venv), as the uv backend runs them."""
    from uv import find_uv_bin

    uv = find_uv_bin()
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [uv, "venv", "--quiet", "--python", plan["interpreter"], str(target)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [uv, "pip", "sync", "--quiet", "--python", str(target / "bin" / "python")]
        + ["--require-hashes", *install_options(plan["pip_options"]), str(lock)],
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def goal(label: str, value: float, limit: float, unit: str) -> str:
    verdict = "met" if value <= limit else "NOT met"
    return f"goal: {label} <= {limit:g}{unit} -> {value:.3f}{unit} ({verdict})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec", type=Path, default=TEXTGEN, help="an environment.yml (default: envs/textgen.yml)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per median (default 3)")
    parser.add_argument("--no-pip", action="store_true", help="skip the (slow) pip baseline")
    args = parser.parse_args()
    spec = args.spec.resolve()
    from uv import find_uv_bin

    uv_cache = subprocess.run(
        [find_uv_bin(), "cache", "dir"], check=True, capture_output=True, text=True
    ).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        # uv's cache as it is (warm); workbench's own caches (bytecode store, interpreter
        # probes) start empty, so the first project pays what a first-ever build pays.
        env_vars = {**os.environ, "UV_CACHE_DIR": uv_cache, "XDG_CACHE_HOME": f"{tmp}/cache"}
        env_vars.pop("WORKBENCH_CACHE_DIR", None)
        first_project, env = new_project(Path(tmp) / "first", spec)
        project, _ = new_project(Path(tmp) / "second", spec)

        def wb(*argv: str) -> list[str]:
            return [*WB, *argv]

        env_lock = Path("envs") / f"{env}.lock"
        if not (project / env_lock).is_file():
            subprocess.run(
                wb("env", "lock", env), cwd=project, env=env_vars, check=True, capture_output=True
            )
            shutil.copy(project / env_lock, first_project / env_lock)
        plan = json.loads(
            subprocess.run(
                wb("env", "plan", env, "--json"),
                cwd=project,
                env=env_vars,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["data"]

        cold = timed(wb("env", "create", env), first_project, env_vars)
        first = timed(wb("env", "create", env), project, env_vars)
        lock = project / ".workbench" / "envs" / env / "workbench-lock.txt"
        packages = sum(1 for line in lock.read_text().splitlines() if "==" in line)
        # Interleaved, so that a change in the machine's load hits both alike.
        rebuilds, raws = [], []
        for _ in range(args.repeats):
            rebuilds.append(timed(wb("env", "create", env, "--force"), project, env_vars))
            raws.append(raw_uv_sync(plan, lock, project / "envs", Path(tmp) / "raw-venv"))
        rebuild, raw = statistics.median(rebuilds), statistics.median(raws)
        noop = min(timed(wb("env", "create", env), project, env_vars) for _ in range(5))

        pip = None
        if not args.no_pip:
            venv = Path(tmp) / "pip-venv"
            pip = timed([sys.executable, "-m", "venv", str(venv)], project)
            pip += timed(
                [str(venv / "bin" / "pip"), "install", "--quiet", *plan["packages"]],
                project / "envs",
            )

    def row(label: str, seconds: float, ratios: str = "") -> None:
        print(f"  {label:58s} {seconds:7.2f} s  {ratios}")

    def vs_pip(seconds: float) -> str:
        return f"{seconds / pip:6.3f}x pip" if pip else ""

    print(
        f"env '{env}' ({spec}): {packages} locked packages, Python "
        f"{plan['python']}; medians of {args.repeats} interleaved runs, no-op best of 5"
    )
    row("first build, nothing compiled before (empty bytecode store)", cold, vs_pip(cold))
    row("first build of another project (fresh project, warm caches)", first, vs_pip(first))
    row(
        "warm rebuild (workbench env create --force)",
        rebuild,
        f"{rebuild / raw:6.3f}x uv sync  {vs_pip(rebuild)}",
    )
    row("raw uv venv + uv pip sync of the same lock", raw, " 1.000x uv sync")
    row("no-op (unchanged spec)", noop)
    if pip:
        row("pip (python -m venv + pip install)", pip, " 1.000x pip")
    print(goal("warm rebuild", rebuild / raw, 1.25, "x uv sync"))
    if pip:
        print(goal("first build (fresh project, warm caches)", first / pip, 0.2, "x pip"))
        print(goal("warm rebuild", rebuild / pip, 0.05, "x pip"))
    print(goal("no-op", noop, 0.3, " s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
