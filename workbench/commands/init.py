"""`workbench init [PATH]`: take in an existing repository where its files are."""

import argparse
from pathlib import Path

from workbench import discovery
from workbench import project as projects
from workbench.console import err, escape, out, warn
from workbench.results import Result


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
    for alt in result.alternatives:
        out.print(
            escape(
                f"also {alt.env.spec} ({alt.env.kind}, {alt.pinned}): the same project; env "
                f"{alt.of} comes from the file that pins more ({alt.of_pinned}); this one is "
                f"kept commented out in {projects.MANIFEST} as [envs.{alt.env.name}]"
            )
        )
    for nb in result.notebooks:
        if nb.env:
            out.print(f"notebook {escape(nb.path)} → {escape(nb.env)} (by {nb.by})")
    if result.default_env:
        out.print(
            escape(
                f"notebooks whose kernel is not a project env's run in {result.default_env}: "
                f'{projects.MANIFEST} [notebooks] "." = "{result.default_env}" says so; '
                "change that line to pick another env"
            )
        )
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
        f"  next: {escape(_next(result))}"
    )


def _next(result: discovery.InitPlan) -> str:
    """The commands that take the repository to a green `workbench test` as it stands."""
    unassigned = [n.path for n in result.notebooks if n.env is None]
    if not result.envs:
        return f"add an env under [envs] in {projects.MANIFEST} (spec = an environment.yml)"
    create = "workbench env create --all"
    if not unassigned:
        return f"{create} && workbench test"
    return (
        f"{create} && workbench test --env {result.envs[0].name} {' '.join(unassigned)} "
        f"(or assign those notebooks under [notebooks] in {projects.MANIFEST})"
    )
