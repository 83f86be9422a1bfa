"""`workbench run NB` and `workbench runs list|show|compare`."""

import argparse
from pathlib import Path

from rich.table import Table

from workbench import project as projects
from workbench.commands import gpus
from workbench.console import err, escape, out
from workbench.errors import WorkbenchError, excerpt
from workbench.notebooks import execution, records
from workbench.notebooks.records import RunRecord, RunStatus
from workbench.results import Result


def cmd_run(args: argparse.Namespace, project: projects.Project) -> Result:
    names = [name for name, _ in args.parameter]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        twice = ", ".join(excerpt(name) for name in sorted(duplicated))
        raise WorkbenchError(f"{args.notebook.name}: parameter given twice: {twice}")
    request = execution.RunRequest(
        notebook=args.notebook.resolve(),
        parameters=dict(args.parameter),
        preset=args.preset,
        env=args.env,
        timeout=args.timeout,
        progress_bar=err.is_terminal and not args.json,
        gpu_wait=args.wait,
        on_gpu_wait=gpus.say_waiting,
    )
    if not args.json:
        err.print(f"running {escape(str(args.notebook))} …", highlight=False)
    record, code = execution.execute(project, request)
    return Result(record.to_json(), lambda: report(record), code)


def report(record: RunRecord) -> None:
    """A run's outcome for people: status, where things are, metrics, the error."""
    colour = "green" if record.status == RunStatus.OK else "red"
    err.print(
        f"[{colour}]{record.status}[/] {escape(record.notebook)} in {record.kernel} "
        f"({record.seconds:.1f} s) → runs/{record.id}/"
    )
    for name, value in record.metrics.items():
        err.print(f"  {escape(name)} = {value}")
    if record.status != RunStatus.OK:
        err.print(f"  [red]{escape(record.summary())}[/]")
        traceback = (record.error or {}).get("traceback")
        if traceback:
            err.print(escape(traceback), highlight=False)


def _metric_names(compared: list[RunRecord]) -> list[str]:
    return list(dict.fromkeys(name for r in compared for name in r.metrics))


def cmd_runs(args: argparse.Namespace, project: projects.Project) -> Result:
    listed = records.listed(project)
    return Result([r.to_json() for r in listed], lambda: _show_runs(listed))


def _show_runs(listed: list[RunRecord]) -> None:
    table = Table(
        "id", "notebook", "env", "status", "seconds", "metrics", title="runs", title_justify="left"
    )
    for r in listed:
        metrics = ", ".join(f"{k}={_short(v)}" for k, v in list(r.metrics.items())[:4])
        table.add_row(
            r.id,
            r.notebook,
            r.env,
            r.status,
            f"{r.seconds:.1f}" if r.seconds else "-",
            escape(metrics),
        )
    out.print(table)


def cmd_show(args: argparse.Namespace, project: projects.Project) -> Result:
    data = records.find(project, args.run_id).to_json()
    return Result(data, lambda: out.print_json(data=data))


def cmd_compare(args: argparse.Namespace, project: projects.Project) -> Result:
    if args.sweep:
        if args.run_ids:
            raise WorkbenchError("give run ids or --sweep ID, not both")
        return compare_sweep(project, args.sweep, args.plot, args.metric)
    if not args.run_ids:
        raise WorkbenchError("give the ids of the runs to compare, or --sweep ID")
    compared = [records.find(project, run_id) for run_id in args.run_ids]
    metrics = _metric_names(compared)
    if args.plot:
        metric = args.metric or next(
            (m for m in metrics if all(m in r.metrics for r in compared)), None
        )
        if metric is None or not all(metric in r.metrics for r in compared):
            raise WorkbenchError(f"metric '{metric}' is not recorded in every run; pass --metric")
        _plot(compared, metric, args.plot)
        err.print(f"wrote {args.plot}")
    data = [
        {"id": r.id, "parameters": r.parameters, "metrics": r.metrics, "status": r.status}
        for r in compared
    ]
    return Result(data, lambda: _show_compare(compared, metrics))


def compare_sweep(
    project: projects.Project, sweep_id: str, plot: Path | None, metric: str | None
) -> Result:
    from workbench.notebooks import sweep

    found, runs = sweep.load(project, sweep_id)
    names = sweep.swept_names(found, runs)
    metrics = _metric_names(runs)
    if plot:
        chosen = metric or next(iter(metrics), None)
        if chosen is None:
            raise WorkbenchError(f"no run of sweep {sweep_id} recorded a metric to plot")
        if not names:
            raise WorkbenchError(f"sweep {sweep_id}: no parameter varies across its runs")
        sweep.plot(runs, names, chosen, plot)
        err.print(f"wrote {plot}")
    rows = [
        {
            "id": r.id,
            "status": r.status,
            "parameters": {n: r.parameters.get(n) for n in names},
            "metrics": r.metrics,
            "gpus": r.gpus,
            "node": r.node,
        }
        for r in runs
    ]
    data = {"sweep": found.id if found else sweep_id, "parameters": names, "runs": rows}

    def show() -> None:
        table = Table(*names, "status", *metrics, "run", title=f"sweep {data['sweep']}")
        for r in runs:
            table.add_row(
                *[_short(r.parameters.get(n)) for n in names],
                r.status,
                *[_short(r.metrics.get(m)) for m in metrics],
                r.id,
            )
        out.print(table)

    return Result(data, show)


def _show_compare(compared: list[RunRecord], metrics: list[str]) -> None:
    params = list(dict.fromkeys(p for r in compared for p in r.parameters))
    table = Table("", *[r.id for r in compared], title="runs compared", title_justify="left")
    table.add_row("status", *[r.status for r in compared])
    for name in params:
        table.add_row(f"param {name}", *[_short(r.parameters.get(name)) for r in compared])
    for name in metrics:
        table.add_row(f"[bold]{name}[/]", *[_short(r.metrics.get(name)) for r in compared])
    out.print(table)


def _short(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plot(records: list[RunRecord], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(records)), 3.5))
    ax.bar(range(len(records)), [float(r.metrics[metric]) for r in records])
    ax.set_xticks(
        range(len(records)),
        [r.id.split("-", 2)[-1] for r in records],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} across runs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
