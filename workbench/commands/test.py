"""`workbench test`: notebooks as tests."""

import argparse
from pathlib import Path

from workbench import project as projects
from workbench.console import err, escape
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.notebooks import suite
from workbench.results import Result

HELP = """Smoke-run every notebook under notebooks/ (or those given), each in its own env
kernel, with the "smoke" parameters kept in its metadata (metadata.workbench.smoke,
editable in JupyterLab), -n at a time, each under a timeout. Metrics are checked
against NOTEBOOK.baselines.toml [smoke]. --nbval also checks the stored outputs of
notebooks that keep them (sanitized by notebooks/nbval_sanitize.cfg)."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "test",
        parents=[common],
        help="smoke-run notebooks as tests",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("notebooks", nargs="*", type=Path, metavar="NB")
    p.add_argument(
        "-n",
        "--jobs",
        type=int,
        default=1,
        metavar="JOBS",
        help="notebooks run at once (default 1)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=suite.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per notebook (default {suite.DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    p.add_argument("--nbval", action="store_true", help="also check stored outputs with nbval")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_test)


def cmd_test(args: argparse.Namespace, project: projects.Project) -> Result:
    paths = suite.discover(project, args.notebooks)
    if args.jobs < 1:
        raise WorkbenchError(f"-n {args.jobs}: run at least 1 notebook at a time")

    def progress(result: suite.NotebookResult) -> None:
        if not args.json:
            mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
            err.print(
                f"{mark} {escape(suite.display_path(result.notebook, project.root))} "
                f"({result.seconds:.1f} s) {escape(result.summary)}"
            )

    ran = suite.run_all(project, paths, args.jobs, args.timeout, progress)
    if args.junit:
        suite.write_junit(ran, args.junit, project.root)
    failed = [r for r in ran if not r.ok]
    code = CHECK_FAILED if failed else 0
    if args.nbval:
        stored = suite.with_stored_outputs(paths)
        if stored:
            junit = args.junit.with_suffix(".nbval.xml") if args.junit else None
            if suite.nbval(project, stored, junit) != 0:
                code = CHECK_FAILED
        elif not args.json:
            err.print("nbval: no notebook keeps stored outputs")
    data = [
        {
            "notebook": str(r.notebook),
            "ok": r.ok,
            "seconds": round(r.seconds, 3),
            "summary": r.summary,
            "run": r.record.id if r.record else None,
        }
        for r in ran
    ]
    return Result(data, lambda: _show(ran, failed), code)


def _show(ran: list[suite.NotebookResult], failed: list[suite.NotebookResult]) -> None:
    for r in failed:
        err.print(f"\n[red]FAILED[/] {escape(str(r.notebook))}: {escape(r.summary)}")
        err.print(escape(r.details), highlight=False)
    err.print(f"\n{len(ran) - len(failed)} passed, {len(failed)} failed")
