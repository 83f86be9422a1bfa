"""`workbench test`: notebooks as tests."""

import argparse

from workbench import project as projects
from workbench.console import err, escape
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.notebooks import suite
from workbench.results import Result


def cmd_test(args: argparse.Namespace, project: projects.Project) -> Result:
    paths = suite.discover(project, args.notebooks)
    if args.jobs < 1:
        raise WorkbenchError(f"-n {args.jobs}: run at least 1 notebook at a time")
    suite.check_envs(project, paths, args.env)

    def progress(result: suite.NotebookResult) -> None:
        """Each notebook once, as it finishes: a failure with its traceback under it."""
        if not args.json:
            mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
            err.print(
                f"{mark} {escape(suite.display_path(result.notebook, project.root))} "
                f"({result.seconds:.1f} s) {escape(result.summary)}"
            )
            if not result.ok and result.details:
                err.print(escape(_indented(result.details)), highlight=False)

    ran = suite.run_all(project, paths, args.jobs, args.timeout, progress, args.env)
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


def _indented(details: str) -> str:
    return "\n".join(f"    {line}" for line in details.strip("\n").splitlines())


def _show(ran: list[suite.NotebookResult], failed: list[suite.NotebookResult]) -> None:
    err.print(f"{len(ran) - len(failed)} passed, {len(failed)} failed")
