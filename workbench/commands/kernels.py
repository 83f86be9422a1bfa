"""`workbench kernels [--prune] [--vscode]`."""

import argparse

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out
from workbench.envs import kernels, vscode
from workbench.errors import CHECK_FAILED
from workbench.results import Result


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "kernels",
        parents=[common],
        help="list (and prune) the project's Jupyter kernels",
        description="List the project's kernelspecs. Stock Jupyter tools see project-scoped "
        "kernels once JUPYTER_PATH includes .workbench/jupyter (printed below); kernels "
        "registered with `env create --user` are seen everywhere. --vscode makes VS Code "
        "(Remote-SSH too) list them: JUPYTER_PATH goes into the workspace env file (.env, "
        "or the one python.envFile names) and .vscode/settings.json hides the tool's own "
        "interpreter; keys you set are never changed. Exit 1 when a step is left to you.",
    )
    p.add_argument("--prune", action="store_true", help="remove kernels whose env is gone")
    p.add_argument(
        "--vscode",
        action="store_true",
        help="let VS Code's Jupyter extension list the project kernels (merges .env and "
        ".vscode/settings.json, never overwriting your keys)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_kernels)


def cmd_kernels(args: argparse.Namespace, project: projects.Project) -> Result:
    pruned = kernels.prune(project) if args.prune else []
    specs = kernels.listed(project)
    changes = vscode.setup(project) if args.vscode else []
    data = {
        "kernels": [k.to_json() for k in specs],
        "pruned": [k.to_json() for k in pruned],
        "jupyter_path": project.jupyter_env()["JUPYTER_PATH"],
    }
    if args.vscode:
        data["vscode"] = [c.to_json() for c in changes]
    code = CHECK_FAILED if any(c.status == "manual" for c in changes) else 0
    return Result(data, lambda: _show(project, specs, pruned, changes), code)


def _show(
    project: projects.Project,
    specs: list[kernels.KernelSpec],
    pruned: list[kernels.KernelSpec],
    changes: list[vscode.Change],
) -> None:
    for k in pruned:
        err.print(f"pruned {k.name} ({k.scope}): env '{k.env}' is gone")
    table = Table(
        "kernel", "display name", "env", "scope", "python", title="kernels", title_justify="left"
    )
    for k in specs:
        python = k.python if k.env_exists else f"[red]{k.python} (missing)[/]"
        table.add_row(k.name, k.display_name, k.env, k.scope, python)
    out.print(table)
    out.print(f"export JUPYTER_PATH={project.jupyter_env()['JUPYTER_PATH']}", markup=False)
    for change in changes:
        mark = {"manual": "[yellow]to do[/]", "unchanged": "[green]✓[/] unchanged"}.get(
            change.status, f"[green]✓[/] {change.status}"
        )
        err.print(f"{mark} {escape(change.path)}: {escape(change.detail)}")
    if changes:
        err.print(
            "in VS Code: Select Kernel → Jupyter Kernel… lists them (reload the window "
            "if it was open)"
        )
