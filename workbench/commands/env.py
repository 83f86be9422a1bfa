"""`workbench env list|plan|create|lock|check|export|import|rm`."""

import argparse
from pathlib import Path

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out, progress, warn
from workbench.envs import backends, builds, interpreters, portable
from workbench.envs import spec as specs
from workbench.envs.backends.uv import DROP_FLAG, UvOptions
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.results import Result

HELP = """Build model envs from envs/NAME.yml (conda environment.yml format), or from the
spec files workbench.toml points at (`workbench init` writes it for an existing repository).

Each env is built into its own prefix under .workbench/builds/ and becomes active
only when the build succeeded, so a failed build never breaks the env in use. After
a build the env is registered as the Jupyter kernel wb-NAME. A committed lock
(envs/NAME.lock) made from the current spec is installed exactly; otherwise the
spec is resolved afresh."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    env = sub.add_parser(
        "env",
        help="build, lock and check model envs",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = env.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("list", parents=[common], help="every env with its build, lock and kernel")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = verbs.add_parser(
        "plan",
        parents=[common],
        help="what a build would install, without building",
        description="Print what `env create` would install: backend, interpreter, packages "
        "after conda->PyPI mapping, dropped packages with the reason, pip options. Exit 0 if "
        "the env can be built here, 2 with the reason if not.",
    )
    p.add_argument(
        "target",
        metavar="FILE_OR_NAME",
        help="an environment.yml (or requirements.txt) or an env name",
    )
    p.add_argument(
        "--backend", choices=backends.NAMES, help="default: conda-family if installed, else uv"
    )
    _uv_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_plan)

    p = verbs.add_parser(
        "create",
        parents=[common],
        help="build envs and register their kernels",
        description="Build each env (a no-op when nothing changed) and register its kernel.",
    )
    _names(p)
    p.add_argument(
        "--locked",
        action="store_true",
        help="install exactly envs/NAME.lock; fail if it is missing or stale",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    p.add_argument(
        "--backend", choices=backends.NAMES, help="default: conda-family if installed, else uv"
    )
    _uv_options(p)
    p.add_argument(
        "--user",
        action="store_true",
        help="register the kernel user-wide (named wb-PROJECT-NAME) instead of in the project",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_create)

    p = verbs.add_parser(
        "lock",
        parents=[common],
        help="write envs/NAME.lock (exact, hashed)",
        description="Resolve each env exactly and write envs/NAME.lock beside its spec.",
    )
    _names(p)
    p.add_argument(
        "--backend", choices=backends.NAMES, help="default: conda-family if installed, else uv"
    )
    _uv_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_lock)

    p = verbs.add_parser(
        "check",
        parents=[common],
        help="compare lock and installed packages",
        description="Report packages added, removed or changed since the lock; exit 1 on drift.",
    )
    _names(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_check)

    p = verbs.add_parser(
        "export",
        parents=[common],
        help="a portable environment.yml of an env, pinned to its lock",
        description="Print (or write with -o) the env's spec with every requirement pinned "
        "to what its lock holds (the active build's, else the committed lock): channels, "
        "variables, options and local paths kept; build strings and prefix left out, so it "
        "builds on another platform. A VCS requirement is pinned to its locked commit.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_export)

    p = verbs.add_parser(
        "import",
        parents=[common],
        help="create envs/NAME.yml from a conda env, a venv or an export file",
        description="Write envs/NAME.yml from an env built elsewhere: a conda env (its name "
        "or prefix; read from conda-meta, conda need not be installed), a venv, or a "
        "`conda env export` file (builds, prefix and platform-only packages dropped). Every "
        "Python package is pinned to the version found there, so `workbench env create "
        "NAME` builds the same versions.",
    )
    p.add_argument("name", metavar="NAME", help="the new env's name")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="ENV_OR_PATH",
        help="a conda env name, a conda prefix, a venv folder or an environment.yml",
    )
    p.add_argument("--force", action="store_true", help="replace an existing envs/NAME.yml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_import)

    p = verbs.add_parser("rm", parents=[common], help="delete an env's builds and kernels")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_rm)


def _uv_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        DROP_FLAG,
        action="store_true",
        help="uv backend: build without conda-only packages (R, compilers, CUDA toolkits, "
        "MPI, C libraries), listing each one dropped; without it they are refused",
    )
    parser.add_argument(
        interpreters.NEAREST_FLAG,
        action="store_true",
        help="uv backend: when no local Python matches python= (e.g. 3.8.5) and none can be "
        "downloaded, use the nearest patch release of the same minor (e.g. 3.8.18)",
    )


def _options(args: argparse.Namespace) -> UvOptions:
    return UvOptions(drop_conda_only=args.drop_conda_only, nearest_python=args.nearest_python)


def _names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="env names (see `env list`)")
    parser.add_argument("--all", action="store_true", help="every env of the project")


def _selected(args: argparse.Namespace, project: projects.Project) -> list[str]:
    if args.all and args.names:
        raise WorkbenchError("give env names or --all, not both")
    if args.all:
        if not project.envs:
            raise WorkbenchError(f"no env specs in {project.root / 'envs'}")
        return sorted(project.envs)
    if not args.names:
        raise WorkbenchError("name at least one env, or pass --all")
    for name in args.names:
        project.env(name)
    return args.names


def cmd_list(args: argparse.Namespace, project: projects.Project) -> Result:
    rows = builds.status(project)
    return Result([r.to_json() for r in rows], lambda: _show_list(project, rows))


def _show_list(project: projects.Project, rows: list[builds.EnvStatus]) -> None:
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
    if target.suffix in projects.MANIFEST_SPEC_SUFFIXES or target.is_file():
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
        if args.json:
            continue
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
    return Result([r.to_json() for r in results], code=code)


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
