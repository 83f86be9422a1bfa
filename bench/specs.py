"""How many real-world-shaped environment.yml files workbench takes in, per backend.

tests/data/specs/ holds specs shaped like those of public ML repositories (bare VCS URLs,
`-e git+…#egg=`, vendored submodule folders, R packages, compilers, CUDA metapackages,
exports from Windows and macOS, old exact Pythons, pip options). For each one this runs
`workbench env plan FILE --json` as a user would: with the uv backend, plain and with
what a user can opt into (--drop-conda-only --nearest-python), and with the conda backend
(which hands the file to conda unchanged); it prints each outcome and the counts. A
refusal shows its one-line error; a traceback would be marked TRACEBACK.

    python bench/specs.py [--workbench-path PATH]   # PATH: another checkout to compare
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "tests" / "data" / "specs"


def plan(spec: Path, backend: str, extra: list[str], path: Path) -> tuple[bool, str]:
    """(planned, one-line outcome) of `workbench env plan SPEC --backend B`."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "env", "plan", str(spec), "--backend", backend]
        + extra
        + ["--json"],
        cwd=SPECS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode == 0:
        data = json.loads(proc.stdout)["data"]
        dropped = len(data.get("dropped") or [])
        return True, f"ok ({len(data['packages'])} packages, {dropped} dropped)"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if "Traceback" in proc.stderr:
        return False, "TRACEBACK " + (lines[-1] if lines else "")
    return False, f"exit {proc.returncode}: " + (lines[-1][:150] if lines else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workbench-path", type=Path, default=REPO)
    args = parser.parse_args()
    specs = sorted(SPECS.glob("*.yml"))
    opted = "uv --drop-conda-only --nearest-python"
    counts = {"uv": 0, opted: 0, "conda": 0}
    for spec in specs:
        row = []
        for label, backend, extra in (
            ("uv", "uv", []),
            (opted, "uv", ["--drop-conda-only", "--nearest-python"]),
            ("conda", "conda", []),
        ):
            ok, outcome = plan(spec, backend, extra, args.workbench_path)
            counts[label] += ok
            row.append(f"{label}: {outcome}")
        print(f"{spec.name}\n  " + "\n  ".join(row))
    print()
    for label, count in counts.items():
        print(f"plan with {label:<38} {count:>3} of {len(specs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
