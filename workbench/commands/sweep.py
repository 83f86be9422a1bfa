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

HELP = """Run a notebook once per combination of parameter values (-p NAME V1,V2,… for each
swept parameter; --zip pairs the i-th values instead). Every run is an ordinary recorded
run in runs/, tagged with the sweep id; a failed run does not stop the others; Ctrl-C
interrupts the runs in hand (their records and partial notebooks are kept) and starts no
more. Compare them with `workbench runs compare --sweep ID --plot FILE --metric M`.

Locally, --jobs runs go at once, each slot keeping its kernel warm across runs (a clean
state restored between runs); with --gpus-per-run K each slot leases K GPUs of this
server (default --jobs: as many slots as free GPUs allow). With --cluster ADDRESS (or
RAY_ADDRESS) each run is a Ray task on the cluster (`workbench cluster up`)."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sweep",
        parents=[common],
        help="run a notebook over a parameter grid",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("notebook", type=Path, metavar="NB")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUES"),
        help="a swept parameter and its comma-separated values (repeatable)",
    )
    p.add_argument("--zip", action="store_true", help="pair values instead of every combination")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="runs at once (locally)")
    p.add_argument(
        "--gpus-per-run", type=int, default=0, metavar="K", help="GPUs each run gets (default 0)"
    )
    p.add_argument("--preset", metavar="NAME", help="start every run from this parameter set")
    p.add_argument("--env", metavar="NAME", help="run in this env's kernel instead")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop a run after this")
    gpus.add_wait_option(p)
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on this Ray cluster (default: $RAY_ADDRESS if set; else on this server)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_sweep)


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
