"""What the reliability tests measured: one JSON line per test, printed, and appended to
$WORKBENCH_RELIABILITY_REPORT when set (bench/reliability.py reads it back)."""

import json
import os


def record(test: str, **numbers: object) -> None:
    line = json.dumps({"test": test, **numbers})
    print(line)
    path = os.environ.get("WORKBENCH_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
