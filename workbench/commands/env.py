"""`workbench env list|plan|create|lock|check|export|import|rm`."""

import argparse
from pathlib import Path

from workbench import project as projects
from workbench.console import err, escape, out, progress, warn
from workbench.envs import backends, builds
from workbench.envs import spec as specs
from workbench.envs.backends.uv import UvOptions
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.manifest import MANIFEST_SPEC_SUFFIXES
from workbench.results import Result


def _options(args: argparse.Namespace) -> UvOptions:
    return UvOptions(drop_conda_only=args.drop_conda_only, nearest_python=args.nearest_python)


def _selected(args: argparse.Namespace, project: projects.Project) -> list[str]:
    """The envs named, or every env of the project when none is (or --all)."""
    if not args.names:
        if not project.envs:
            raise WorkbenchError(f"no env specs in {project.root / 'envs'}")
        return sorted(project.envs)
    for name in args.names:
        project.env(name)
    return args.names


def cmd_list(args: argparse.Namespace, project: projects.Project) -> Result:
    rows = builds.status(project)
    return Result([r.to_json() for r in rows], lambda: _show_list(project, rows))


def _show_list(project: projects.Project, rows: list[builds.EnvStatus]) -> None:
    from rich.table import Table

    table = Table(
        "env",
        "built",
        "python",
        "backend",
        "packages",
        "lock",
        "kernel",
        "gpus",
        title=f"envs of {project.name}",
        title_justify="left",
    )
    for r in rows:
        rec = r.record
        table.add_row(
            r.name,
            "[green]yes[/]" if r.built else "[red]no[/]",
            rec.python_version if rec else "-",
            rec.backend if rec else "-",
            str(rec.packages) if rec else "-",
            {"fresh": "[green]fresh[/]", "stale": "[yellow]stale[/]"}.get(r.lock, r.lock),
            r.kernel or "-",
            ",".join(r.gpus) if r.gpus else "-",
        )
    out.print(table)
    if not rows:
        out.print(f"no env specs under {project.root / 'envs'}")


def cmd_plan(args: argparse.Namespace, project: projects.Project | None) -> Result:
    target = Path(args.target)
    if target.suffix in MANIFEST_SPEC_SUFFIXES or target.is_file():
        spec = specs.load(target.resolve())
    else:
        if project is None:
            raise WorkbenchError(f"{args.target}: no such spec file, and not inside a project")
        entry = project.env(args.target)
        spec = specs.load(entry.spec_path, entry.name)
    plan = backends.for_spec(spec, args.backend, _options(args)).plan(spec)
    return Result(plan.to_json(), lambda: _show_plan(plan))


def _show_plan(plan: backends.Plan) -> None:
    for message in plan.warnings:
        warn(message)
    out.print(
        f"[bold]{escape(plan.env)}[/]  backend [cyan]{plan.backend}[/]  "
        f"python [cyan]{plan.python_version}[/] ({escape(plan.python)})"
    )
    out.print("packages: " + escape(", ".join(plan.packages) or "(none)"))
    for dropped in plan.dropped:
        out.print(f"dropped:  {escape(dropped['spec'])} ({dropped['reason']})")
    if plan.pip_options:
        out.print("pip options: " + escape(" ".join(plan.pip_options)))
    if plan.variables:
        out.print("variables: " + escape(", ".join(f"{k}={v}" for k, v in plan.variables.items())))


def cmd_create(args: argparse.Namespace, project: projects.Project) -> Result:
    results = []
    code = 0
    for name in _selected(args, project):
        with progress(name) as update:
            result = builds.create(
                project,
                name,
                backend_name=args.backend,
                locked=args.locked,
                force=args.force,
                user=args.user,
                options=_options(args),
                progress=update,
            )
        results.append(result)
        if result.gpu_check is not None and not result.gpu_check.ok:
            code = CHECK_FAILED
        if not args.user:  # a --user create leaves the project's kernel as it was
            builds.stamp(project, result, _captured)
        if not args.json:
            _show_created(result)
    return Result([r.to_json() for r in results], code=code)


def _captured(result: builds.CreateResult) -> str:
    """What _show_created prints for result on this console."""
    with err.capture() as captured:
        _show_created(result)
    return captured.get()


def _show_created(result: builds.CreateResult) -> None:
    name = result.env
    for message in result.warnings:
        warn(message)
    rec = result.record
    verb = {
        "unchanged": "unchanged",
        "reactivated": "reactivated an earlier build",
        "built": f"built in {rec.seconds:.1f} s",
    }[result.status]
    source = "from its lock" if rec.from_lock else "resolved from the spec"
    err.print(
        f"[green]✓[/] {name}: {verb} ({rec.packages} packages, Python "
        f"{rec.python_version}, {rec.backend}, {source}) → kernel "
        f"[bold]{result.kernel.name if result.kernel else '-'}[/]"
    )
    if result.gpu_check is not None and not result.gpu_check.skipped:  # else a warning
        colour = "green" if result.gpu_check.ok else "red"
        err.print(f"  [{colour}]{result.gpu_check.message}[/]")


def cmd_lock(args: argparse.Namespace, project: projects.Project) -> Result:
    written = []
    for name in _selected(args, project):
        with progress(name) as update:
            new = builds.lock(project, name, args.backend, update, _options(args))
        entry = project.env(name)
        written.append(
            {
                "env": name,
                "path": str(entry.lock_path),
                "packages": len(new.packages()),
                "backend": new.backend,
                "spec_hash": new.spec_hash,
            }
        )
        if not args.json:
            err.print(
                f"[green]✓[/] {name}: wrote {entry.lock_path.relative_to(project.root)} "
                f"({len(new.packages())} packages, {new.backend}, Python {new.python})"
            )
    return Result(written)


def cmd_check(args: argparse.Namespace, project: projects.Project) -> Result:
    checked = [builds.check(project, name) for name in _selected(args, project)]
    code = CHECK_FAILED if any(r.drift for r in checked) else 0
    return Result([r.to_json() for r in checked], lambda: _show_check(checked), code)


def _show_check(checked: list[builds.CheckResult]) -> None:
    for r in checked:
        if r.lock_stale:
            warn(
                f"{r.env}: the spec changed since the lock was written; "
                f"`workbench env lock {r.env}` refreshes it"
            )
        if not r.drift:
            out.print(f"[green]✓[/] {r.env}: matches its lock")
            continue
        out.print(f"[red]✗[/] {r.env}: drift from its lock")
        for n, v in sorted(r.drift.added.items()):
            out.print(f"  [green]+ {n}=={v}[/] (added)")
        for n, v in sorted(r.drift.removed.items()):
            out.print(f"  [red]- {n}=={v}[/] (removed)")
        for n, (a, b) in sorted(r.drift.changed.items()):
            out.print(f"  [yellow]~ {n} {a} → {b}[/] (changed)")
        out.print(f"  reinstall exactly the lock: workbench env create {r.env} --locked")


def cmd_export(args: argparse.Namespace, project: projects.Project) -> Result:
    from workbench.envs import portable  # only these two commands need it

    exported = portable.export(project, args.name)
    if args.output:
        args.output.write_text(exported.text)
    data = {**exported.to_json(), "path": str(args.output) if args.output else None}

    def show() -> None:
        if not args.output:
            out.print(exported.text, end="", markup=False, highlight=False)
        else:
            err.print(
                f"[green]✓[/] {args.name}: wrote {escape(str(args.output))} "
                f"({exported.pinned} pinned, from {exported.source})"
            )
        if exported.unpinned:
            warn(f"not in the lock, left unpinned: {', '.join(exported.unpinned)}")

    return Result(data, show)


def cmd_import(args: argparse.Namespace, project: projects.Project) -> Result:
    from workbench.envs import portable  # only these two commands need it

    imported = portable.import_env(project, args.name, args.source, force=args.force)

    def show() -> None:
        rel = imported.path.relative_to(project.root)
        err.print(
            f"[green]✓[/] {args.name}: wrote {escape(str(rel))} from {imported.kind} "
            f"{escape(imported.source)} ({imported.conda} conda, {imported.pip} pip "
            f"requirements, pinned); build it with `workbench env create {args.name}`"
        )
        for dropped in imported.dropped:
            out.print(f"dropped:  {escape(dropped['spec'])} ({dropped['reason']})")
        for skipped in imported.skipped:
            warn(f"left out: {skipped}")

    return Result(imported.to_json(), show)


def cmd_rm(args: argparse.Namespace, project: projects.Project) -> Result:
    removed = {name: [str(p) for p in builds.remove(project, name)] for name in args.names}

    def show() -> None:
        for name, prefixes in removed.items():
            err.print(f"[green]✓[/] {name}: removed {len(prefixes)} build(s) and its kernels")

    return Result(removed, show)
