"""CLI start-up, side by side with the interpreter's own start in the same run.

In a copy of the demo project with nothing running and one small env already built, prints
the median of N runs each of:
  python -c pass              the floor: the interpreter starting and exiting
  workbench --version         argument parsing only
  workbench --help            the whole parser built and printed
  workbench ps                the services table of a project where nothing runs
  workbench env create tiny   the no-op build (env built, spec unchanged)
and each against its goal. The CLI is run as `python -m workbench` with this process's
environment, so `PYTHONPATH=OTHER_TREE python bench/cli.py` measures another checkout;
its bytecode is compiled first, as `make` does after installing.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = "name: tiny\ndependencies:\n  - python={major}.{minor}\n"
DEMO_FOLDERS = ("envs", "gradio_apps", "serving", "notebooks")
GOALS = {"--version": 0.06, "--help": 0.06, "ps": 0.15, "env create tiny": 0.1}


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15, help="runs of each (default 15)")
    runs = parser.parse_args().runs
    wb = [sys.executable, "-m", "workbench"]
    with tempfile.TemporaryDirectory(prefix="wb-bench-cli-") as tmp:
        package = subprocess.run(  # the one `python -m workbench` finds, run from tmp
            [sys.executable, "-c", "import workbench; print(workbench.__path__[0])"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
        project = Path(tmp) / "proj"
        project.mkdir()
        shutil.copy(REPO / "workbench.toml", project)
        for folder in DEMO_FOLDERS:  # what the manifest names must exist
            if (REPO / folder).is_dir():
                shutil.copytree(REPO / folder, project / folder)
        version = sys.version_info
        (project / "envs" / "tiny.yml").write_text(
            TINY.format(major=version.major, minor=version.minor)
        )
        subprocess.run([*wb, "env", "create", "tiny"], cwd=project, check=True, capture_output=True)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--version": [*wb, "--version"],
            "--help": [*wb, "--help"],
            "ps": [*wb, "ps"],
            "env create tiny": [*wb, "env", "create", "tiny"],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(runs):  # interleaved, so a busy moment weighs on every command alike
            for label, cmd in commands.items():
                times[label].append(timed(cmd, project))
    floor = statistics.median(times["python -c pass"])
    print(f"workbench CLI start-up ({package}), median of {runs} runs each")
    for label, samples in times.items():
        median = statistics.median(samples)
        goal = GOALS.get(label)
        verdict = (
            ""
            if goal is None
            else f"goal <= {goal:.2f} s: {'met' if median <= goal else 'NOT met'}"
        )
        print(f"  {label:18s} {median * 1000:7.1f} ms  {median / floor:5.1f}x python   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
