"""`workbench init [PATH]`: take in an existing repository where its files are."""

import argparse
from pathlib import Path

from workbench import discovery
from workbench import project as projects
from workbench.console import err, escape, out, warn
from workbench.results import Result

HELP = """Take in an existing repository: find its conda env files (environment.yml|yaml at
the root, in conda/, envs/, binder/, .binder/), its requirements*.txt (pip-only envs)
and its notebooks; assign each notebook to an env (from its kernelspec, its folder, or
the only env there is); write workbench.toml pointing at the spec files in place, and
add .workbench/ and runs/ to .gitignore. Nothing is copied or moved; an existing
workbench.toml keeps its content (init only adds), and running init again changes
nothing. Then: `workbench env create --all` and `workbench test`."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="take in an existing repository (writes workbench.toml)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="the repository (default: --project, else the current folder)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_init)


def cmd_init(args: argparse.Namespace, _project: projects.Project | None) -> Result:
    root = args.path or getattr(args, "project", None) or Path.cwd()
    result = discovery.plan(root)
    if not args.dry_run:
        discovery.apply(result)
    return Result(result.to_json(), lambda: _show(result, args.dry_run))


def _show(result: discovery.InitPlan, dry_run: bool) -> None:
    for env in result.envs:
        state = "new" if env.new else "in the manifest"
        out.print(f"env [bold]{escape(env.name)}[/]: {escape(env.spec)} ({env.kind}, {state})")
    for nb in result.notebooks:
        if nb.env:
            out.print(f"notebook {escape(nb.path)} → {escape(nb.env)} (by {nb.by})")
    for skipped in result.skipped:
        warn(f"{skipped['path']} skipped: {skipped['reason']}")
    for nb in (n for n in result.notebooks if n.env is None):
        warn(
            f"{nb.path}: no env for it ({nb.by}, kernel {nb.kernel or 'none'}); add "
            f'"{nb.path}" = "ENV" under [notebooks] in {projects.MANIFEST}'
        )
    manifest = result.root / projects.MANIFEST
    if not result.changes:
        err.print(f"[green]✓[/] {escape(str(manifest))} is up to date; nothing to change")
        return
    if dry_run:
        out.print(f"\n--- {manifest} (would be written)")
        out.print(result.manifest_after, markup=False, highlight=False, end="")
        if result.gitignore_added:
            out.print(f"--- .gitignore (would gain): {', '.join(result.gitignore_added)}")
        return
    added = (
        f"; .gitignore gained {', '.join(result.gitignore_added)}" if result.gitignore_added else ""
    )
    err.print(
        f"[green]✓[/] wrote {escape(str(manifest))} ({len(result.envs)} envs, "
        f"{sum(1 for n in result.notebooks if n.env)} notebooks){added}\n"
        "  next: workbench env create --all && workbench test"
    )
