"""Summary of the soak, fault and fuzz suite (tests/reliability/), from one run of it.

Runs `pytest tests/reliability` with WORKBENCH_RELIABILITY_REPORT pointing at a temp file,
where each test appends the numbers it measured, then prints them as one table: load held
(requests, failures, busy answers, tok/s, p99 time to first token, RSS growth), faults
survived (seconds back to healthy), hostile inputs tried.

    .venv/bin/python bench/reliability.py [--soak SECONDS] [pytest args...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GOALS = {
    "soak": "0 failed, RSS growth < 10 %",
    "busy": "overflow answered busy",
    "app_sigkill": "healthy again <= 5 s",
    "engine_sigkill": "healthy again <= 5 s",
    "engine_inputs": "HTTP status of each hostile request: 200 or 4xx, never 5xx",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soak", type=float, default=60, help="soak length in seconds")
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="wb-bench-reliability-") as tmp:
        report = Path(tmp) / "report.jsonl"
        env = {
            **os.environ,
            "WORKBENCH_RELIABILITY_REPORT": str(report),
            "WORKBENCH_SOAK_S": str(args.soak),
        }
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "tests/reliability"]
            + pytest_args,
            cwd=REPO,
            env=env,
        )
        wall = time.monotonic() - t0
        rows = (
            [json.loads(line) for line in report.read_text().splitlines()]
            if report.exists()
            else []
        )
    print()
    print(f"reliability suite: exit {proc.returncode} in {wall:.0f} s")
    for row in rows:
        test = row.pop("test")
        numbers = ", ".join(f"{k} {v}" for k, v in row.items())
        goal = f"   (goal: {GOALS[test]})" if test in GOALS else ""
        print(f"  {test:18} {numbers}{goal}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
