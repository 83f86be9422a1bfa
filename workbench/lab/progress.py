"""How far a run or sweep started from Lab has got: its records (the same records module the
CLI reads) and, for a running run, the cells its output notebook shows done (papermill saves
it after every cell, with each cell's status in its metadata)."""

import json
from pathlib import Path

from workbench.notebooks import records
from workbench.project import Project


def since(project: Project, notebook: str, started: float) -> list[records.RunRecord]:
    """Records of notebook that started after started (a second's slack), oldest first."""
    return [
        r for r in records.listed(project) if r.notebook == notebook and r.started >= started - 1
    ]


def cells(output: Path) -> tuple[int, int]:
    """(code cells done, code cells) in an output notebook; (0, 0) before it exists."""
    try:
        nb = json.loads(output.read_text())
    except (OSError, ValueError):
        return 0, 0
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    done = [
        c for c in code if c.get("metadata", {}).get("papermill", {}).get("status") == "completed"
    ]
    return len(done), len(code)


def of_job(project: Project, notebook: str, started: float) -> dict:
    """{"runs": [{id, status, parameters, metrics}], "progress": the newest run's cells}."""
    found = since(project, notebook, started)
    progress = None
    if found:
        newest = found[-1]
        done, total = cells(project.root / newest.output)
        progress = {
            "run": newest.id,
            "status": newest.status,
            "cells_done": done,
            "cells_total": total,
        }
    runs = [
        {
            "id": r.id,
            "status": r.status,
            "parameters": r.to_json()["parameters"],
            "metrics": r.metrics,
        }
        for r in found
    ]
    return {"runs": runs, "progress": progress}
