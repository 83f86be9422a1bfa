"""`workbench cluster up|down|status|join`: a Ray cluster for this server."""

import argparse

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out, progress
from workbench.results import Result


def cmd_up(args: argparse.Namespace, project: projects.Project) -> Result:
    from workbench.cluster import nodes

    with progress("cluster") as update:
        state, note = nodes.up(
            project, args.nodes, args.gpus_per_node, args.cpus_per_node, args.object_store_mb,
            update,
        )  # fmt: skip
    if note:
        err.print(escape(note))
    data = nodes.status(project)

    def show() -> None:
        err.print(
            f"[green]✓[/] Ray cluster of {len(state.nodes)} node(s) up in {state.up_seconds} s "
            f"at {state.address} ({data['memory_mb']} MB in {data['processes']} processes)"
        )
        err.print(f"dashboard: {data['dashboard']} (`workbench tunnel --print` reaches it)")
        out.print(f"workbench sweep NB -p NAME V1,V2 --cluster {state.address}", markup=False)

    return Result(data, show)


def cmd_join(args: argparse.Namespace, project: projects.Project) -> Result:
    from workbench.cluster import nodes

    with progress("cluster") as update:
        state = nodes.join(project, args.head, args.gpus, args.cpus, update)
    node = state.nodes[-1]
    return Result(
        node, lambda: err.print(f"[green]✓[/] joined {state.address} (pid {node['pid']})")
    )


def cmd_status(_args: argparse.Namespace, project: projects.Project) -> Result:
    from workbench.cluster import nodes

    data = nodes.status(project)

    def show() -> None:
        out.print(f"address {data['address']}, dashboard {data['dashboard'] or '-'}", markup=False)
        table = Table("node", "ip", "state", "CPU", "GPU", title="Ray nodes", title_justify="left")
        for n in data["cluster_nodes"]:
            resources = n["resources"] or {}
            table.add_row(
                (n["node_id"] or "")[:12],
                n["ip"] or "-",
                n["state"] or "-",
                f"{resources.get('CPU', 0):g}",
                f"{resources.get('GPU', 0):g}",
            )
        out.print(table)
        ours = ", ".join(f"{n['role']} pid {n['pid']}" for n in data["nodes"] if n["alive"])
        err.print(
            f"started here: {ours or 'none running'}; {data['memory_mb']} MB in "
            f"{data['processes']} processes"
        )

    return Result(data, show)


def cmd_down(_args: argparse.Namespace, project: projects.Project) -> Result:
    from workbench.cluster import nodes

    stopped = nodes.down(project)
    return Result(
        stopped,
        lambda: err.print(
            f"stopped {len(stopped)} node(s)" if stopped else "no cluster was running"
        ),
    )
