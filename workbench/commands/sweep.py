"""`workbench sweep NB -p NAME V1,V2 …`: a parameter grid, every point a recorded run."""

import argparse
import os
import threading
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from workbench import project as projects
from workbench.commands import gpus
from workbench.console import err, escape, out
from workbench.errors import WorkbenchError
from workbench.notebooks import execution, sweep
from workbench.notebooks.parameters import read
from workbench.results import Result


def cmd_sweep(args: argparse.Namespace, project: projects.Project) -> Result:
    if args.jobs is not None and args.jobs < 1:
        raise WorkbenchError(f"--jobs {args.jobs}: run at least 1 at a time")
    if args.gpus_per_run < 0:
        raise WorkbenchError(f"--gpus-per-run {args.gpus_per_run}: at least 0")
    notebook = args.notebook.resolve()
    cluster = args.cluster or os.environ.get("RAY_ADDRESS") or None
    if not cluster:  # a cluster's nodes build the env themselves
        execution.resolve_env(project, notebook, read(notebook), args.env)
    combos = sweep.plan(notebook, args.parameter, args.zip, args.preset)
    record = sweep.SweepFile(
        id=sweep.new_id(),
        notebook=_relative(project, notebook),
        parameters={name: sweep.split_values(values) for name, values in args.parameter},
        zip=args.zip,
        preset=args.preset,
        env=args.env,
        jobs=args.jobs or 0,
        gpus_per_run=args.gpus_per_run,
        cluster=cluster,
        started=time.time(),
    )
    began = time.monotonic()
    with _SweepProgress(record.id, len(combos), not args.json) as on_event:
        if cluster:
            from workbench.cluster import sweep as cluster_sweep

            outcomes = cluster_sweep.run(project, record, combos, args.timeout, on_event)
        else:
            slots = sweep.slot_gpus(
                project, record.id, args.jobs, args.gpus_per_run, args.wait, gpus.say_waiting
            )
            record.jobs = len(slots)
            try:
                environs = [slot.environ() for slot in slots]
                outcomes = sweep.run_local(
                    project, record, combos, environs, args.timeout, on_event
                )
            finally:
                for slot in slots:
                    slot.release()
    code = sweep.finish(project, record, outcomes)
    seconds = time.monotonic() - began
    data = {
        "sweep": record.id,
        "status": record.status,
        "seconds": round(seconds, 3),
        "jobs": record.jobs,
        "cluster": cluster,
        "runs": [o.to_json() for o in outcomes],
    }
    return Result(data, lambda: _show(record, outcomes, seconds), code)


def _relative(project: projects.Project, path: Path) -> str:
    try:
        return str(path.relative_to(project.root))
    except ValueError:
        raise WorkbenchError(f"{path}: a swept notebook must be inside the project") from None


class _SweepProgress:
    """A bar with done/running/failed counts on a terminal; a line per run otherwise."""

    def __init__(self, sweep_id: str, total: int, show: bool):
        self.sweep_id, self.total, self.show = sweep_id, total, show
        self.running = self.done = self.failed = 0
        self.lock = threading.Lock()
        self.bar: Progress | None = None

    def __enter__(self):
        if self.show and err.is_terminal:
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn(escape(self.sweep_id)),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=err,
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total, counts=self._counts())
        elif self.show:
            err.print(f"{self.sweep_id}: {self.total} runs")
        return self.event

    def _counts(self) -> str:
        return f"{self.done} done, {self.running} running, {self.failed} failed"

    def event(self, kind: str, outcome: sweep.Outcome) -> None:
        with self.lock:
            if kind == "started":
                self.running += 1
            else:
                self.running = max(0, self.running - (outcome.record is not None))
                self.done += 1
                self.failed += outcome.status != "ok"
            if self.bar is not None:
                self.bar.update(self.task, completed=self.done, counts=self._counts())
            elif self.show and kind == "done":
                params = " ".join(f"{k}={v}" for k, v in outcome.parameters.items())
                where = f" → runs/{outcome.record.id}/" if outcome.record else ""
                err.print(
                    f"[{self.done}/{self.total}] {outcome.status} {escape(params)} "
                    f"({outcome.seconds:.1f} s){where}",
                    highlight=False,
                )

    def __exit__(self, *_exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _show(record: sweep.SweepFile, outcomes: list[sweep.Outcome], seconds: float) -> None:
    names = list(record.parameters)
    metrics = list(dict.fromkeys(m for o in outcomes if o.record for m in o.record.metrics))
    table = Table(*names, "status", *metrics, "s", "run", title=f"sweep {record.id}")
    for o in outcomes:
        colour = "green" if o.status == "ok" else "red"
        table.add_row(
            *[escape(str(o.parameters[n])) for n in names],
            f"[{colour}]{o.status}[/]",
            *[_short(o.record.metrics.get(m)) if o.record else "-" for m in metrics],
            f"{o.seconds:.1f}",
            o.record.id if o.record else "-",
        )
    out.print(table)
    ok = sum(o.status == "ok" for o in outcomes)
    err.print(
        f"{ok} of {len(outcomes)} ok in {seconds:.1f} s ({record.status}); compare with "
        f"`workbench runs compare --sweep {record.id}`"
    )
    for o in outcomes:
        if o.status not in ("ok", "not run"):
            summary = o.record.summary() if o.record else o.error
            err.print(f"  [red]{escape(str(o.parameters))}: {escape(summary or '')}[/]")


def _short(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))
