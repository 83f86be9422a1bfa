"""`workbench test`: every notebook smoke-run in its own kernel, in parallel.

Each notebook runs as `workbench run NB --preset smoke --json` in a process of its own,
so timeouts, crashes and kernels stay apart; the run records land in runs/ as usual.
"""

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workbench import notebooks
from workbench.errors import WorkbenchError
from workbench.project import Project

SMOKE = "smoke"
DEFAULT_TIMEOUT = 600.0


@dataclass
class NotebookResult:
    notebook: Path
    ok: bool
    seconds: float
    summary: str  # one line: status, or where and why it failed
    details: str  # traceback or stderr, for people and JUnit
    record: dict | None


def discover(project: Project, given: list[Path]) -> list[Path]:
    """The notebooks to test: those given, else every .ipynb under notebooks/."""
    if given:
        missing = [str(p) for p in given if not p.is_file()]
        if missing:
            raise WorkbenchError(f"no such notebook: {', '.join(missing)}")
        return [p.resolve() for p in given]
    folder = project.root / "notebooks"
    found = (
        sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        if folder.is_dir()
        else []
    )
    if not found:
        raise WorkbenchError(f"no notebooks under {folder}")
    return found


def run_one(project: Project, notebook: Path, timeout: float) -> NotebookResult:
    """Smoke-run one notebook in a workbench process of its own."""
    nb = notebooks.read(notebook)
    preset = ["--preset", SMOKE] if SMOKE in notebooks.presets(nb) else []
    cmd = [
        sys.executable,
        "-m",
        "workbench",
        "--project",
        str(project.root),
        "run",
        str(notebook),
        *preset,
        "--timeout",
        str(timeout),
        "--json",
    ]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ}, timeout=timeout + 120
    )
    seconds = time.monotonic() - started
    try:
        record = json.loads(proc.stdout)
    except ValueError:
        stderr = proc.stderr.strip().splitlines()
        reason = stderr[-1] if stderr else f"exit {proc.returncode}"
        return NotebookResult(notebook, False, seconds, reason, proc.stderr, None)
    return NotebookResult(
        notebook, record["status"] == "ok", seconds, summarize(record), describe(record), record
    )


def summarize(record: dict) -> str:
    status = record["status"]
    if status == "ok":
        return "ok"
    failed = [b for b in record.get("baselines", []) if not b["ok"]]
    if failed:
        return "regressed: " + "; ".join(
            f"{b['metric']} = {b['value']} (expected {b['bound']})" for b in failed
        )
    error = record.get("error") or {}
    where = f"cell {error['cell']}" if "cell" in error else "run"
    line = f" ({error['line']})" if error.get("line") else ""
    return f"{status} at {where}{line}: {error.get('ename')}: {error.get('evalue')}"


def describe(record: dict) -> str:
    error = record.get("error") or {}
    return error.get("traceback") or json.dumps(record.get("baselines", []), indent=1)


def needs(path: Path) -> list[Path]:
    """Notebooks this one needs to have run first (metadata.workbench.needs, relative)."""
    nb = notebooks.read(path)
    named = nb.get("metadata", {}).get(notebooks.PRESET_KEY, {}).get("needs", [])
    return [(path.parent / name).resolve() for name in named]


def ordered(paths: list[Path]) -> list[Path]:
    """paths with every notebook after those it needs (when they are among paths)."""
    wanted = {p.resolve() for p in paths}
    done: list[Path] = []
    visiting: set[Path] = set()

    def visit(path: Path) -> None:
        if path in done:
            return
        if path in visiting:
            raise WorkbenchError(f"{path.name}: notebooks need each other in a cycle")
        visiting.add(path)
        for need in needs(path):
            if need in wanted:
                visit(need)
        visiting.discard(path)
        done.append(path)

    for path in paths:
        visit(path.resolve())
    return done


def run_all(
    project: Project, paths: list[Path], jobs: int, timeout: float, on_result=lambda _r: None
) -> list[NotebookResult]:
    """Run the notebooks, jobs at a time, each after the notebooks it needs.

    Notebooks are submitted in dependency order to a first-in-first-out pool, so a
    notebook only ever waits for ones that already hold a worker or have finished.
    """
    order = ordered(paths)
    finished = {path: threading.Event() for path in order}
    results: dict[Path, NotebookResult] = {}

    def one(path: Path) -> NotebookResult:
        for need in (n for n in needs(path) if n in finished):
            finished[need].wait()
        failed = [n.name for n in needs(path) if n in results and not results[n].ok]
        if failed:
            result = NotebookResult(
                path, False, 0.0, f"skipped: needs {', '.join(failed)}, which failed", "", None
            )
        else:
            result = run_one(project, path, timeout)
        results[path] = result
        finished[path].set()
        on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, order))
    return [results[p] for p in order]


def write_junit(results: list[NotebookResult], path: Path, root: Path) -> None:
    failures = sum(not r.ok for r in results)
    suite = ET.Element(
        "testsuite",
        name="notebooks",
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="notebooks",
            name=display_path(r.notebook, root),
            time=f"{r.seconds:.3f}",
        )
        if not r.ok:
            failure = ET.SubElement(case, "failure", message=r.summary)
            failure.text = r.details
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)


def with_stored_outputs(paths: list[Path]) -> list[Path]:
    """Notebooks that keep outputs to check with nbval."""
    keep = []
    for path in paths:
        nb = notebooks.read(path)
        if any(c.get("outputs") for c in nb.get("cells", []) if c.get("cell_type") == "code"):
            keep.append(path)
    return keep


def nbval(project: Project, paths: list[Path], junit: Path | None) -> int:
    """nbval on notebooks with stored outputs; each starts the kernel its metadata names."""
    sanitize = project.root / "notebooks" / "nbval_sanitize.cfg"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(project.root),
    ]
    if sanitize.is_file():
        cmd += ["--nbval-sanitize-with", str(sanitize)]
    if junit:
        cmd += ["--junitxml", str(junit)]
    return subprocess.run(
        [*cmd, *map(str, paths)], cwd=project.root, env={**os.environ, **project.jupyter_env()}
    ).returncode


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
