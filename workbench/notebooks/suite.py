"""`workbench test`: every notebook smoke-run in its env's kernel, in parallel.

Notebooks run through the warm-kernel pool that sweeps use (workbench.notebooks.pool):
-n slots, each a worker process of its own (timeouts and crashes stay apart) that keeps
its kernel across notebooks of the same env and restores a fresh kernel's state between
them. Each run is an ordinary `workbench run` lifecycle; its record lands in runs/.
"""

import json
import sys
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workbench.discovery import notebook_files
from workbench.envs import builds, kernels
from workbench.errors import WorkbenchError
from workbench.notebooks.parameters import PRESET_KEY, presets, read
from workbench.notebooks.pool import Pool, PoolRun
from workbench.notebooks.records import RunRecord, RunStatus
from workbench.project import Project
from workbench.subprocesses import run

SMOKE = "smoke"
DEFAULT_TIMEOUT = 600.0


@dataclass
class NotebookResult:
    notebook: Path
    ok: bool
    seconds: float
    summary: str  # one line: status, or where and why it failed
    details: str  # traceback or stderr, for people and JUnit
    record: RunRecord | None


def discover(project: Project, given: list[Path]) -> list[Path]:
    """The notebooks to test: those given, else the project's: every notebook under the
    files and folders workbench.toml [notebooks] names, else under notebooks/."""
    if given:
        missing = [str(p) for p in given if not p.is_file()]
        if missing:
            raise WorkbenchError(f"no such notebook: {', '.join(missing)}")
        return [p.resolve() for p in given]
    roots = project.notebook_roots()
    found = sorted({nb.resolve() for root in roots for nb in notebook_files(root)})
    if not found:
        where = ", ".join(display_path(r, project.root) for r in roots)
        elsewhere = [] if project.notebooks else notebook_files(project.root)
        hint = (
            f"; {len(elsewhere)} elsewhere in the project: `workbench init` assigns them "
            "under [notebooks]"
            if elsewhere
            else ""
        )
        raise WorkbenchError(f"no notebooks under {where}{hint}")
    return found


def check_envs(project: Project, paths: list[Path], env: str | None) -> None:
    """Refuse, before any kernel starts, notebooks with no env to run in and envs that
    are not built, once for all of them, naming the command that gets past it."""
    if env is not None:
        project.env(env)
    unassigned: list[Path] = []
    needed: set[str] = set()
    for path in paths:
        name = env or _env_of(project, path)
        if name is None:
            unassigned.append(path)
        else:
            needed.add(name)
    if unassigned:
        names = " ".join(display_path(p, project.root) for p in unassigned)
        known = sorted(project.envs)
        how = (
            f"run them in one env with `workbench test --env {known[0]} {names}`, or "
            if known
            else ""
        )
        raise WorkbenchError(
            f"{names}: no env to run in (no kernel named, or not a project env's); "
            f"{how}assign them under [notebooks] in workbench.toml "
            f"(envs: {', '.join(known) or 'none'})"
        )
    missing = [
        builds.not_built(project, name)
        for name in sorted(needed)
        if builds.active_prefix(project, name) is None
    ]
    if missing:
        raise WorkbenchError("; ".join(missing))


def _env_of(project: Project, path: Path) -> str | None:
    """The env a notebook runs in as `workbench run` picks it: its kernel's, when that is
    a project kernel, else what [notebooks] assigns."""
    kernel = (read(path).get("metadata", {}).get("kernelspec") or {}).get("name")
    env = kernels.env_of(project, kernel) if isinstance(kernel, str) else None
    return env or project.notebook_env(path)


def run_one(
    project: Project,
    notebook: Path,
    timeout: float,
    pool: Pool | None = None,
    env: str | None = None,
) -> NotebookResult:
    """Smoke-run one notebook in a slot of pool (a one-slot pool of its own if None), in
    env when given, else in the env its kernel or [notebooks] names."""
    if pool is None:
        with Pool(project, [{}], "test") as own:
            return run_one(project, notebook, timeout, own, env)
    preset = SMOKE if SMOKE in presets(read(notebook)) else None
    result = pool.run(
        PoolRun(notebook, {}, preset, env=env, timeout=timeout), hard_limit=timeout + 120
    )
    record = result.record
    if record is None:
        reason = result.error or "no run record"
        return NotebookResult(notebook, False, result.seconds, reason, reason, None)
    details = (record.error or {}).get("traceback") or json.dumps(record.baselines, indent=1)
    ok = record.status == RunStatus.OK
    return NotebookResult(notebook, ok, result.seconds, record.summary(), details, record)


def needs(path: Path) -> list[Path]:
    """Notebooks this one needs to have run first (metadata.workbench.needs, relative)."""
    nb = read(path)
    named = nb.get("metadata", {}).get(PRESET_KEY, {}).get("needs", [])
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
    project: Project,
    paths: list[Path],
    jobs: int,
    timeout: float,
    on_result=lambda _r: None,
    env: str | None = None,
) -> list[NotebookResult]:
    """Run the notebooks, jobs at a time, each after the notebooks it needs.

    Notebooks are submitted in dependency order to a first-in-first-out pool, so a
    notebook only ever waits for ones that already hold a worker or have finished.
    """
    order = ordered(paths)
    finished = {path: threading.Event() for path in order}
    results: dict[Path, NotebookResult] = {}
    jobs = max(1, min(jobs, len(order)))

    def one(path: Path) -> NotebookResult:
        for need in (n for n in needs(path) if n in finished):
            finished[need].wait()
        failed = [n.name for n in needs(path) if n in results and not results[n].ok]
        if failed:
            result = NotebookResult(
                path, False, 0.0, f"skipped: needs {', '.join(failed)}, which failed", "", None
            )
        else:
            result = run_one(project, path, timeout, pool, env)
        results[path] = result
        finished[path].set()
        on_result(result)
        return result

    with Pool(project, [{}] * jobs, "test") as pool, ThreadPoolExecutor(jobs) as threads:
        list(threads.map(one, order))
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
        nb = read(path)
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
    return run(
        [*cmd, *paths],
        what="nbval",
        cwd=project.root,
        env=project.jupyter_env(),
        check=False,
        capture=False,
    ).returncode


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
