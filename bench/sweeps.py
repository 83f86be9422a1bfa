"""Per-run overhead of a trivial notebook, side by side in one run, and sweep timings.

In a throwaway project with a small env, the same trivial notebook (a parameters cell and
one line of code) runs:
  - with stock papermill (a kernel started and stopped per run),
  - with `workbench run` (the same, plus the run record),
  - in a warm pool slot (`workbench sweep` and the pool API): the kernel kept across runs
    and restored to a clean state after each (goal <= 0.3 s a run);
and a sweep of RUNS runs goes with --jobs 1 and --jobs 2.

    .venv/bin/python bench/sweeps.py [RUNS]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    wb = [sys.executable, "-m", "workbench"]
    with tempfile.TemporaryDirectory(prefix="wb-bench-sweep-") as tmp:
        root = Path(tmp)
        (root / "envs").mkdir()
        (root / "envs" / "small.yml").write_text("dependencies:\n  - python=3.11\n")
        (root / "workbench.toml").write_text('[project]\nname = "bench"\n')
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run([*wb, "env", "create", "small"], cwd=root, check=True, capture_output=True)
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "wb-small",
            "display_name": "small",
            "language": "python",
        }
        params = nbformat.v4.new_code_cell("x = 1")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell("y = x * 2")]
        notebook = root / "trivial.ipynb"
        nbformat.write(nb, notebook)
        os.environ["JUPYTER_PATH"] = str(root / ".workbench" / "jupyter")
        papermill = [sys.executable, "-m", "papermill", "-k", "wb-small", "--no-progress-bar"]
        stock = [
            timed([*papermill, str(notebook), str(root / "out.ipynb")], root) for _ in range(3)
        ]
        plain = [timed([*wb, "run", str(notebook)], root) for _ in range(3)]

        from workbench import project as projects
        from workbench.notebooks.pool import Pool, PoolRun

        project = projects.load(root)
        with Pool(project, [{}], "bench") as pool:
            first = pool.run(PoolRun(notebook, {"x": "0"}))
            warm = [pool.run(PoolRun(notebook, {"x": str(i)})).seconds for i in range(runs)]

        values = ",".join(str(i) for i in range(runs))
        walls = {}
        for jobs in (1, 2):
            walls[jobs] = timed(
                [*wb, "sweep", str(notebook), "-p", "x", values, "-j", str(jobs)], root
            )

    print("trivial notebook, per run (median; papermill and run best of 3 as well):")
    print(f"  stock papermill          {statistics.median(stock):6.2f} s  (best {min(stock):.2f})")
    print(f"  workbench run            {statistics.median(plain):6.2f} s  (best {min(plain):.2f})")
    print(f"  pool slot, fresh kernel  {first.seconds:6.2f} s  (its first run: kernel start)")
    median = statistics.median(warm)
    verdict = "met" if median <= 0.3 else "NOT met"
    print(
        f"  pool slot, warm kernel   {median:6.3f} s  (max {max(warm):.3f}; goal <= 0.3 s: ", end=""
    )
    print(f"{verdict})")
    print(f"  warm vs stock papermill  {statistics.median(stock) / median:6.1f}x faster")
    print(f"sweep of {runs} runs, end to end (workbench sweep, process start included):")
    for jobs, wall in walls.items():
        print(f"  --jobs {jobs}                 {wall:6.2f} s  ({wall / runs:.2f} s a run)")
    print(f"  speed-up --jobs 2 vs 1   {walls[1] / walls[2]:6.2f}x (2 cores here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
