"""`workbench kernels list|prune|vscode`: the project's kernelspecs."""

import argparse

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out
from workbench.envs import kernels, vscode
from workbench.errors import CHECK_FAILED
from workbench.results import Result


def cmd_list(_args: argparse.Namespace, project: projects.Project) -> Result:
    return _kernels(project, prune=False, vscode_setup=False)


def cmd_prune(_args: argparse.Namespace, project: projects.Project) -> Result:
    return _kernels(project, prune=True, vscode_setup=False)


def cmd_vscode(_args: argparse.Namespace, project: projects.Project) -> Result:
    return _kernels(project, prune=False, vscode_setup=True)


def cmd_kernels(args: argparse.Namespace, project: projects.Project) -> Result:
    """`kernels [--prune] [--vscode]`, the form `kernels list|prune|vscode` replaces."""
    return _kernels(project, args.prune, args.vscode)


def _kernels(project: projects.Project, prune: bool, vscode_setup: bool) -> Result:
    """The kernels after pruning or setting up VS Code, with the JUPYTER_PATH that shows
    them; every verb answers the same data."""
    pruned = kernels.prune(project) if prune else []
    specs = kernels.listed(project)
    changes = vscode.setup(project) if vscode_setup else []
    data = {
        "kernels": [k.to_json() for k in specs],
        "pruned": [k.to_json() for k in pruned],
        "jupyter_path": project.jupyter_env()["JUPYTER_PATH"],
    }
    if vscode_setup:
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
