"""Notebook run overhead and `workbench test` parallelism, side by side in one run.

Prints:
  trivial notebook through `workbench run` vs the same code as `python script.py` in the
  same env (best of 3 each): the per-notebook overhead (goal <= 1.0 s);
  `workbench test` wall time over the project's notebooks with -n 1 vs -n 2.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
ENV = "textgen"
CODE = "total = sum(i * i for i in range(n))\nprint(total)"


def best(cmd: list[str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    wb = [sys.executable, "-m", "workbench"]
    subprocess.run([*wb, "env", "create", ENV], cwd=REPO, check=True, capture_output=True)
    python = str(REPO / ".workbench" / "envs" / ENV / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="wb-bench-nb-") as tmp:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": f"wb-{ENV}", "display_name": ENV, "language": "python"}
        params = nbformat.v4.new_code_cell("n = 1000")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(CODE)]
        notebook = Path(tmp) / "trivial.ipynb"
        nbformat.write(nb, notebook)
        script = Path(tmp) / "trivial.py"
        script.write_text("n = 1000\n" + CODE + "\n")
        run = best([*wb, "run", str(notebook)])
        plain = best([python, str(script)])

    print(f"trivial notebook ({ENV} env), best of 3:")
    print(f"  workbench run            {run:6.2f} s")
    print(f"  python script.py         {plain:6.2f} s")
    print(
        f"  per-notebook overhead    {run - plain:6.2f} s  (goal <= 1.0 s: "
        f"{'met' if run - plain <= 1.0 else 'NOT met'})"
    )

    walls = {}
    for jobs in (1, 2):
        started = time.perf_counter()
        proc = subprocess.run(
            [*wb, "test", "-n", str(jobs)], cwd=REPO, capture_output=True, text=True
        )
        walls[jobs] = time.perf_counter() - started
        summary = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        print(f"workbench test -n {jobs}: {walls[jobs]:6.1f} s  ({summary})")
    print(f"speed-up -n 2 vs -n 1: {walls[1] / walls[2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
