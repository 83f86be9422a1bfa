"""`workbench run NB` and `workbench runs [show|compare]`."""

import argparse
from pathlib import Path

from rich.table import Table

from workbench import notebooks, runs
from workbench import project as projects
from workbench.console import err, escape, out, print_json
from workbench.errors import WorkbenchError, excerpt

RUN_HELP = """Run a notebook with papermill in its env's kernel (or --env's) and record the run.

Parameters are checked against the notebook's `parameters` cell before any kernel
starts. The output notebook and record.json (parameters, env, lock hash, git commit,
times, status, metrics recorded with `from workbench import record`) land in
runs/<id>/, also when the run fails, times out or is interrupted."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a notebook and record the run",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("notebook", type=Path, metavar="NB")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable)",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="start from a parameter set kept in the notebook (e.g. smoke, demo)",
    )
    p.add_argument("--env", metavar="NAME", help="run in this env's kernel instead")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the run after this")
    p.add_argument("--json", action="store_true", help="print the run record as JSON")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("runs", parents=[common], help="list, show and compare recorded runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_runs)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    show = verbs.add_parser("show", parents=[common], help="one run's record")
    show.add_argument("run_id", metavar="ID", help="a run id or its unambiguous start")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=cmd_show)
    compare = verbs.add_parser("compare", parents=[common], help="runs side by side")
    compare.add_argument("run_ids", nargs="+", metavar="ID")
    compare.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="bar chart of a metric across the runs"
    )
    compare.add_argument("--metric", help="the metric to plot (default: the first one shared)")
    compare.add_argument("--json", action="store_true", help="machine-readable output")
    compare.set_defaults(handler=cmd_compare)


def cmd_run(args: argparse.Namespace, project: projects.Project) -> int:
    names = [name for name, _ in args.parameter]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        twice = ", ".join(excerpt(name) for name in sorted(duplicated))
        raise WorkbenchError(f"{args.notebook.name}: parameter given twice: {twice}")
    request = notebooks.RunRequest(
        notebook=args.notebook.resolve(),
        parameters=dict(args.parameter),
        preset=args.preset,
        env=args.env,
        timeout=args.timeout,
        progress_bar=err.is_terminal and not args.json,
    )
    if not args.json:
        err.print(f"running {escape(str(args.notebook))} …", highlight=False)
    record, code = notebooks.execute(project, request)
    if args.json:
        print_json(record.to_json())
    else:
        report(record)
    return code


def report(record: runs.RunRecord) -> None:
    """A run's outcome for people: status, where things are, metrics, the error."""
    colour = "green" if record.status == "ok" else "red"
    err.print(
        f"[{colour}]{record.status}[/] {escape(record.notebook)} in {record.kernel} "
        f"({record.seconds:.1f} s) → runs/{record.id}/"
    )
    for name, value in record.metrics.items():
        err.print(f"  {escape(name)} = {value}")
    for bound in record.baselines:
        if not bound["ok"]:
            err.print(
                f"  [red]baseline failed:[/] {bound['metric']} = {bound['value']} "
                f"(expected {bound['bound']})"
            )
    error = record.error
    if error and record.status != "ok":
        where = f"cell {error['cell']}" if "cell" in error else "the run"
        line = f", {error['line']}" if error.get("line") else ""
        err.print(
            f"  [red]{escape(str(error.get('ename')))}[/] in {where}{escape(line)}: "
            f"{escape(str(error.get('evalue')))}"
        )
        if error.get("traceback"):
            err.print(escape(error["traceback"]), highlight=False)


def _metric_names(records: list[runs.RunRecord]) -> list[str]:
    return list(dict.fromkeys(name for r in records for name in r.metrics))


def cmd_runs(args: argparse.Namespace, project: projects.Project) -> int:
    records = runs.listed(project)
    if args.json:
        print_json([r.to_json() for r in records])
        return 0
    table = Table(
        "id", "notebook", "env", "status", "seconds", "metrics", title="runs", title_justify="left"
    )
    for r in records:
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
    return 0


def cmd_show(args: argparse.Namespace, project: projects.Project) -> int:
    record = runs.find(project, args.run_id)
    if args.json:
        print_json(record.to_json())
    else:
        out.print_json(data=record.to_json())
    return 0


def cmd_compare(args: argparse.Namespace, project: projects.Project) -> int:
    records = [runs.find(project, run_id) for run_id in args.run_ids]
    params = list(dict.fromkeys(p for r in records for p in r.parameters))
    metrics = _metric_names(records)
    if args.json:
        print_json(
            [
                {"id": r.id, "parameters": r.parameters, "metrics": r.metrics, "status": r.status}
                for r in records
            ]
        )
    else:
        table = Table("", *[r.id for r in records], title="runs compared", title_justify="left")
        table.add_row("status", *[r.status for r in records])
        for name in params:
            table.add_row(f"param {name}", *[_short(r.parameters.get(name)) for r in records])
        for name in metrics:
            table.add_row(f"[bold]{name}[/]", *[_short(r.metrics.get(name)) for r in records])
        out.print(table)
    if args.plot:
        metric = args.metric or next(
            (m for m in metrics if all(m in r.metrics for r in records)), None
        )
        if metric is None or not all(metric in r.metrics for r in records):
            raise WorkbenchError(f"metric '{metric}' is not recorded in every run; pass --metric")
        _plot(records, metric, args.plot)
        err.print(f"wrote {args.plot}")
    return 0


def _short(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plot(records: list[runs.RunRecord], metric: str, path: Path) -> None:
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
