"""`workbench cluster up|down|status|join`: a Ray cluster for this server."""

import argparse

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out, progress
from workbench.results import Result

HELP = """A Ray cluster for this server, for `workbench sweep NB … --cluster ADDRESS` (needs
the optional extra: pip install 'workbench[ray]').

  up      a head and --nodes - 1 more nodes on this machine, every port on 127.0.0.1;
          on a GPU server each node leases --gpus-per-node GPUs (default: the free ones,
          shared out), like any kernel (`workbench gpus` shows them); without GPUs,
          --gpus-per-node gives nodes GPUs to schedule with that do not exist
  join    add this machine to the cluster whose head is at HOST:PORT
  status  nodes, resources, processes and memory
  down    stop this project's nodes by PID (never `ray stop`, which stops every Ray here)

The dashboard listens on 127.0.0.1: `workbench tunnel --print` includes it."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cluster",
        parents=[common],
        help="a Ray cluster for sweeps beyond one server",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = verbs.add_parser("up", parents=[common], help="start a cluster on this machine")
    up.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes, head included")
    up.add_argument("--gpus-per-node", type=int, metavar="K", help="GPUs each node schedules")
    up.add_argument("--cpus-per-node", type=int, metavar="C", help="default: cores / nodes")
    up.add_argument("--object-store-mb", type=int, metavar="MB", help="per node (default Ray's)")
    up.add_argument("--json", action="store_true", help="machine-readable output")
    up.set_defaults(handler=cmd_up)
    join = verbs.add_parser("join", parents=[common], help="add this machine to a cluster")
    join.add_argument("head", metavar="HOST:PORT", help="the head's address (`cluster status`)")
    join.add_argument("--gpus", type=int, metavar="K", help="GPUs this node schedules")
    join.add_argument("--cpus", type=int, metavar="C", help="CPUs this node schedules")
    join.add_argument("--json", action="store_true", help="machine-readable output")
    join.set_defaults(handler=cmd_join)
    status = verbs.add_parser("status", parents=[common], help="nodes, resources, memory")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
    down = verbs.add_parser("down", parents=[common], help="stop this project's nodes")
    down.add_argument("--json", action="store_true", help="machine-readable output")
    down.set_defaults(handler=cmd_down)


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
