"""`workbench kernels [--prune]`."""

import argparse

from rich.table import Table

from workbench import project as projects
from workbench.console import err, out
from workbench.envs import kernels
from workbench.results import Result


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "kernels",
        parents=[common],
        help="list (and prune) the project's Jupyter kernels",
        description="List the project's kernelspecs. Stock Jupyter tools see project-scoped "
        "kernels once JUPYTER_PATH includes .workbench/jupyter (printed below); kernels "
        "registered with `env create --user` are seen everywhere.",
    )
    p.add_argument("--prune", action="store_true", help="remove kernels whose env is gone")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_kernels)


def cmd_kernels(args: argparse.Namespace, project: projects.Project) -> Result:
    pruned = kernels.prune(project) if args.prune else []
    specs = kernels.listed(project)
    data = {
        "kernels": [k.to_json() for k in specs],
        "pruned": [k.to_json() for k in pruned],
        "jupyter_path": project.jupyter_env()["JUPYTER_PATH"],
    }
    return Result(data, lambda: _show(project, specs, pruned))


def _show(
    project: projects.Project, specs: list[kernels.KernelSpec], pruned: list[kernels.KernelSpec]
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
    out.print(f"export JUPYTER_PATH={project.jupyter_env()['JUPYTER_PATH']}")
