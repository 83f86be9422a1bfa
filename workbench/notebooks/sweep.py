"""`workbench sweep`: a notebook run once per combination of parameter values, every run
an ordinary recorded run tagged with the sweep's id.

The grid is checked whole before anything starts (each combination's names and types,
as `workbench run` checks them). Locally, runs go to a pool of warm kernels
(workbench.notebooks.pool), `jobs` at a time, each slot on the GPUs it leased (or on the
CPU); on a Ray cluster, workbench.cluster.sweep runs them. A failed run is a result, not
a reason to stop; Ctrl-C interrupts the runs in hand (their records say so) and starts no
more. runs/<sweep id>/sweep.json keeps what was asked and which runs it made.
"""

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import CHECK_FAILED, INTERRUPTED, WorkbenchError, excerpt
from workbench.gpus import assign, inventory, leases
from workbench.gpus.leases import Holder
from workbench.jsonfiles import StateFile
from workbench.notebooks import records
from workbench.notebooks.parameters import coerce, parameters, presets, read
from workbench.notebooks.records import RunRecord, RunStatus
from workbench.project import Project

OPENERS, CLOSERS, QUOTES = "[{(", "]})", "\"'"


@dataclass
class SweepFile(StateFile):
    """runs/<sweep id>/sweep.json: what was asked, and the runs it made, in grid order."""

    id: str
    notebook: str
    parameters: dict  # name -> the values given, as typed on the command line
    zip: bool
    preset: str | None
    env: str | None
    jobs: int
    gpus_per_run: int
    cluster: str | None
    started: float
    ended: float | None = None
    status: str = "running"  # "done" or "interrupted"
    runs: list = field(default_factory=list)  # run ids ("" for a combination not run)

    def path(self, project: Project) -> Path:
        return project.runs_dir / self.id / "sweep.json"

    def save(self, project: Project) -> None:
        target = self.path(project)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.write(target)


@dataclass
class Outcome:
    """One combination's end: its record (None if it never started) and how it went."""

    index: int
    parameters: dict
    record: RunRecord | None = None
    code: int = 0
    error: str | None = None
    warm: bool = False
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.record is not None:
            return self.record.status
        return "not run" if self.error is None else "failed"

    def to_json(self) -> dict:
        record = self.record
        return {
            "index": self.index,
            "parameters": self.parameters,
            "id": record.id if record else None,
            "status": self.status,
            "metrics": record.metrics if record else {},
            "gpus": record.gpus if record else None,
            "node": record.node if record else None,
            "attempts": record.attempts if record else [],
            "seconds": round(self.seconds, 3),
            "warm": self.warm,
            "error": self.error,
        }


def split_values(text: str) -> list[str]:
    """`1e-3,3e-4` -> ["1e-3", "3e-4"]; commas inside brackets or quotes stay
    (`[1,2],[3]` is two list values)."""
    values, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in QUOTES:
            quote = char
        elif char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    return values


def grid(swept: list[tuple[str, list[str]]], zipped: bool) -> list[dict]:
    """Every combination (or, zipped, the i-th value of each), in the order given."""
    names = [name for name, _ in swept]
    lists = [values for _, values in swept]
    if zipped:
        lengths = {name: len(values) for name, values in swept}
        if len(set(lengths.values())) > 1:
            said = ", ".join(f"{name} has {n}" for name, n in lengths.items())
            raise WorkbenchError(f"--zip needs as many values for each parameter: {said}")
        return [dict(zip(names, values, strict=True)) for values in zip(*lists, strict=True)]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*lists)]


def plan(
    notebook: Path, given: list[tuple[str, str]], zipped: bool, preset: str | None
) -> list[dict]:
    """The combinations to run, each checked against the notebook's parameters cell."""
    if not given:
        raise WorkbenchError("a sweep needs at least one -p NAME VALUE1,VALUE2,...")
    swept: list[tuple[str, list[str]]] = []
    for name, text in given:
        if name in dict(swept):
            raise WorkbenchError(f"{notebook.name}: parameter given twice: {excerpt(name)}")
        values = split_values(text)
        if any(not v for v in values):
            raise WorkbenchError(
                f"-p {excerpt(name)} {excerpt(repr(text))}: an empty value; separate values "
                "with commas, e.g. -p lr 1e-3,3e-4"
            )
        swept.append((name, values))
    combos = grid(swept, zipped)
    declared = parameters(notebook)
    base: dict = {}
    if preset:
        available = presets(read(notebook))
        if preset not in available:
            names = ", ".join(sorted(available)) or "none"
            raise WorkbenchError(f"{notebook.name}: no preset '{preset}' (presets: {names})")
        base = available[preset]
    for combo in combos:
        coerce(notebook, declared, {**base, **combo})  # refused before any run starts
    return combos


def new_id() -> str:
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


Progress = Callable[[str, Outcome | None], None]  # ("started" | "done", outcome)


def slot_gpus(
    project: Project,
    sweep_id: str,
    jobs: int | None,
    per_run: int,
    wait: float | None,
    on_wait: Callable[[str], None],
) -> list[assign.Assignment]:
    """Each local slot's GPUs: per_run leased GPUs (jobs slots; by default as many as
    the free GPUs allow), or, without per_run, jobs (default 1) slots that leave GPUs to
    their env's manifest entry."""
    if per_run <= 0:
        return [assign.Assignment(None, "none") for _ in range(jobs or 1)]
    found = inventory.read()
    if not found.gpus:
        raise WorkbenchError(f"--gpus-per-run {per_run}: {found.note}")
    if jobs is None:
        free = len(found.gpus) - len(leases.held(leases.live()))
        jobs = max(1, free // per_run)
    slots: list[assign.Assignment] = []
    try:
        for index in range(jobs):
            holder = Holder("sweep", f"{sweep_id} slot {index}", str(project.root))
            lease = leases.acquire(per_run, holder, found, wait, on_wait)
            slots.append(assign.Assignment([str(i) for i in lease.gpus], "leased", lease))
    except BaseException:
        for slot in slots:
            slot.release()
        raise
    return slots


def run_local(
    project: Project,
    sweep: SweepFile,
    combos: list[dict],
    environs: list[dict[str, str]],
    timeout: float | None,
    on_event: Progress,
) -> list[Outcome]:
    """Every combination through a pool of len(environs) warm slots."""
    from workbench.notebooks.pool import Pool, PoolRun

    outcomes = [Outcome(i, combo) for i, combo in enumerate(combos)]
    notebook = project.root / sweep.notebook
    lock = threading.Lock()

    def one(outcome: Outcome) -> None:
        request = PoolRun(
            notebook, outcome.parameters, sweep.preset, sweep.env, timeout, sweep=sweep.id
        )

        def started(run_id: str) -> None:
            with lock:
                sweep.runs[outcome.index] = run_id
                sweep.save(project)
            on_event("started", outcome)

        try:
            result = pool.run(request, started)
        except KeyboardInterrupt:
            return  # the sweep stopped before this one started
        outcome.record, outcome.code, outcome.error = result.record, result.code, result.error
        outcome.warm, outcome.seconds = result.warm, result.seconds
        on_event("done", outcome)

    sweep.runs = [""] * len(combos)
    sweep.save(project)
    with Pool(project, environs, "sweep") as pool:
        executor = ThreadPoolExecutor(max_workers=len(environs))
        futures = [executor.submit(one, outcome) for outcome in outcomes]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            sweep.status = "interrupted"
            pool.interrupt()
            for future in futures:
                future.result()
        finally:
            executor.shutdown(wait=True)
    return outcomes


def finish(project: Project, sweep: SweepFile, outcomes: list[Outcome]) -> int:
    """Save the sweep's end; the exit code: 0 all ok, 130 interrupted, else 1."""
    sweep.ended = time.time()
    if sweep.status == "running":
        sweep.status = "done"
    sweep.runs = [o.record.id if o.record else "" for o in outcomes]
    sweep.save(project)
    if sweep.status == "interrupted":
        return INTERRUPTED
    return 0 if all(o.status == RunStatus.OK for o in outcomes) else CHECK_FAILED


def load(project: Project, sweep_id: str) -> tuple[SweepFile | None, list[RunRecord]]:
    """A sweep's file (None if only its records are left) and its runs' records."""
    matches = sorted(
        p.parent.name
        for p in project.runs_dir.glob("sweep-*/sweep.json")
        if p.parent.name == sweep_id or p.parent.name.startswith(sweep_id)
    )
    found = matches[0] if len(matches) == 1 else sweep_id
    if len(matches) > 1 and sweep_id not in matches:
        raise WorkbenchError(f"sweep id '{sweep_id}' is ambiguous: {', '.join(matches[:5])}")
    runs = [r for r in records.listed(project) if r.sweep == found]
    sweep = SweepFile.read(project.runs_dir / found / "sweep.json")
    if sweep is None and not runs:
        raise WorkbenchError(f"no sweep '{sweep_id}' under {project.runs_dir}")
    return sweep, runs


def swept_names(sweep: SweepFile | None, runs: list[RunRecord]) -> list[str]:
    """The parameters the sweep varied (from its file, else those that differ)."""
    if sweep is not None:
        return list(sweep.parameters)
    names = dict.fromkeys(name for r in runs for name in r.parameters)
    return [n for n in names if len({repr(r.parameters.get(n)) for r in runs}) > 1]


def plot(runs: list[RunRecord], names: list[str], metric: str, path: Path) -> None:
    """metric against the first swept parameter, one line per value of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, others = names[0], names[1:]
    lines: dict[tuple, list[tuple]] = {}
    for run in runs:
        if metric in run.metrics and isinstance(run.metrics[metric], int | float):
            key = tuple(run.parameters.get(n) for n in others)
            lines.setdefault(key, []).append((run.parameters.get(x_name), run.metrics[metric]))
    if not lines:
        raise WorkbenchError(f"no run of the sweep recorded metric '{metric}'")
    numeric = all(isinstance(x, int | float) for points in lines.values() for x, _ in points)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in sorted(lines.items(), key=lambda item: repr(item[0])):
        points.sort(key=lambda p: p[0] if numeric else repr(p[0]))
        label = ", ".join(f"{n}={v}" for n, v in zip(others, key, strict=True)) or metric
        xs = [x if numeric else str(x) for x, _ in points]
        ax.plot(xs, [y for _, y in points], marker="o", label=label)
    if numeric and all(x > 0 for points in lines.values() for x, _ in points):
        values = sorted({x for points in lines.values() for x, _ in points})
        if len(values) > 2 and values[-1] / values[0] >= 100:
            ax.set_xscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {x_name}")
    if others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
