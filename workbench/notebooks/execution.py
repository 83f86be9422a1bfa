"""`workbench run`: a notebook executed with papermill in its env kernel, and recorded.

Stages: resolve the kernel (the notebook's own, or --env's), check the parameters against
the notebook's `parameters` cell before any kernel starts, then execute with the workbench
papermill engine inside the run lifecycle, which saves the output notebook after every cell
and completes the record however the run ends.
"""

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.envs import builds, kernels
from workbench.errors import CHECK_FAILED, INTERRUPTED, WorkbenchError
from workbench.gpus import assign
from workbench.gpus.leases import Holder
from workbench.notebooks import records
from workbench.notebooks.lifecycle import RecordedRun, RunTimeout, any_cell_ran
from workbench.notebooks.parameters import coerce, parameters, presets, read
from workbench.notebooks.records import RunRecord, RunStatus
from workbench.project import Project

EXIT_CODES = {
    RunStatus.OK: 0,
    RunStatus.FAILED: CHECK_FAILED,
    RunStatus.REGRESSED: CHECK_FAILED,
    RunStatus.TIMEOUT: CHECK_FAILED,
    RunStatus.INTERRUPTED: INTERRUPTED,
}


def resolve_env(project: Project, path: Path, nb: dict, env: str | None) -> tuple[str, str]:
    """(env name, kernel name) for the run: --env's, else the notebook's kernelspec when it
    is a project kernel, else the env workbench.toml [notebooks] assigns it (a notebook
    saved with kernel `python3` or a conda env's kernel)."""
    if env is None:
        kernel = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
        env = kernels.env_of(project, kernel) if isinstance(kernel, str) else None
        env = env or project.notebook_env(path)
        if env is None:
            known = ", ".join(sorted(project.envs)) or "none"
            named = (
                f"kernel '{kernel}' is not a project env kernel" if kernel else "names no kernel"
            )
            raise WorkbenchError(
                f"{path}: {named}; pass --env NAME or assign it under [notebooks] in "
                f"workbench.toml (envs: {known})"
            )
    builds.require_built(project, env)
    return env, kernels.kernel_name(project, env)


@dataclass
class RunRequest:
    notebook: Path
    parameters: dict
    preset: str | None
    env: str | None = None
    timeout: float | None = None
    progress_bar: bool = False
    gpu_wait: float | None = None  # seconds to wait for a free GPU (None: fail at once)
    on_gpu_wait: Callable[[str], None] = lambda _why: None
    sweep: str | None = None
    on_start: Callable[[RunRecord], None] = lambda _record: None  # record saved, kernel next


def prepare(project: Project, request: RunRequest) -> RunRecord:
    """Everything checked before a kernel starts; returns the new run's record."""
    path = request.notebook
    nb = read(path)
    env, kernel = resolve_env(project, path, nb, request.env)
    declared = parameters(path)
    raw: dict = {}
    if request.preset:
        available = presets(nb)
        if request.preset not in available:
            names = ", ".join(sorted(available)) or "none"
            raise WorkbenchError(f"{path.name}: no preset '{request.preset}' (presets: {names})")
        raw.update(available[request.preset])
    raw.update(request.parameters)
    values = coerce(path, declared, raw)
    record = records.start(project, path, env, kernel, values, preset=request.preset)
    record.sweep = request.sweep
    return record


def execute(project: Project, request: RunRequest, km=None) -> tuple[RunRecord, int]:
    """Run the notebook and write its record; returns the record and the exit code.

    km: an already started kernel of the notebook's env to run in (a warm pool slot's,
    see workbench.notebooks.pool); by default papermill starts and stops one."""
    import papermill
    from papermill.engines import papermill_engines

    from workbench.notebooks.papermill_engine import WorkbenchEngine

    papermill_engines.register("workbench", WorkbenchEngine)
    record = prepare(project, request)
    entry = project.env(record.env)
    holder = Holder("run", record.id, str(project.root))
    gpus = assign.assign(
        entry.gpus, entry.gpu_count, holder, wait=request.gpu_wait, on_wait=request.on_gpu_wait
    )
    record.gpus = gpus.devices
    run = RecordedRun(project, record, request.notebook)
    try:
        with run, _deadline(request.timeout), _environ(project, gpus):
            request.on_start(record)
            papermill.execute_notebook(
                str(request.notebook),
                str(run.output),
                parameters=record.parameters,
                kernel_name=record.kernel,
                engine_name="workbench",
                recorded_run=run,
                cwd=str(request.notebook.parent),
                progress_bar=request.progress_bar,
                start_timeout=120,
                km=km,
            )
    except (Exception, RunTimeout, KeyboardInterrupt):
        if record.ended is None:
            raise  # the lifecycle itself failed: a bug, not an outcome of the run
    finally:
        gpus.release()
    if record.status == RunStatus.FAILED and not any_cell_ran(run.nb or {}):
        # Nothing ran: the kernel never came up. That is the env's problem, not the notebook's.
        raise WorkbenchError(
            f"kernel {record.kernel} could not start ({record.error['ename']}: "
            f"{record.error['evalue']}); rebuild it with `workbench env create {record.env} "
            f"--force` (run record: runs/{record.id}/)"
        )
    return record, EXIT_CODES[RunStatus(record.status)]


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    if not seconds:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise RunTimeout(f"run exceeded {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _environ(project: Project, gpus: assign.Assignment) -> Iterator[None]:
    """The kernel papermill starts sees the project kernels and the run's GPUs (which its
    provisioner then leaves as they are)."""
    added = {**project.jupyter_env(), **gpus.environ()}
    saved = {name: os.environ.get(name) for name in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
