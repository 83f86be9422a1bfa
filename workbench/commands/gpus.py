"""`workbench gpus`: every GPU of this machine, who holds it, and how busy it is."""

import argparse
import math

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out
from workbench.gpus import report
from workbench.gpus.leases import DIR_VARIABLE, Lease
from workbench.results import Result

HELP = """Every GPU nvidia-smi lists, with its memory and utilization, the leases on it
(holder kind and name, user, project, pid, since when; how long a kernel has been idle)
and the processes computing there that hold no lease. Leases are machine-wide: every
project and user on this server sees the same ones (folder: $WORKBENCH_LEASE_DIR, default
/var/tmp/workbench-gpu-leases). A lease whose holder died is free again."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gpus",
        parents=[common],
        help="GPUs of this machine and who holds them",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_gpus)


def add_wait_option(p: argparse.ArgumentParser) -> None:
    """--wait [SECONDS], for commands that start something that may lease GPUs."""
    p.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=math.inf,
        metavar="SECONDS",
        help="when GPUs are asked for and none is free, wait for them (default: fail at "
        "once, naming who holds them); a number limits the wait",
    )


def say_waiting(why: str) -> None:
    err.print(f"waiting for a GPU: {escape(why)}")


def cmd_gpus(_args: argparse.Namespace, _project: projects.Project | None) -> Result:
    built = report.build()
    return Result(built.to_json(), lambda: _show(built))


def _idle(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds == 0:
        return ", busy"
    minutes = int(seconds // 60)
    return f", idle {minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f", idle {minutes}m"


def _holder(lease: Lease, idle: float | None) -> str:
    shared = "" if lease.exclusive else " [pinned]"
    return escape(lease.describe() + shared + _idle(idle))


def _show(built: report.Report) -> None:
    if built.note:
        err.print(escape(built.note))
    table = Table(
        "gpu", "name", "memory used", "util", "held by", title="GPUs", title_justify="left"
    )
    for row in built.rows:
        g = row.gpu
        memory = f"{g.memory_used or 0} / {g.memory_total or '?'} MiB"
        lines = [_holder(h, built.idle.get(h.id)) for h in row.holders]
        lines += [
            f"[yellow]no lease:[/] pid {u.pid} ({escape(u.user or '?')}, "
            f"{u.used_memory or '?'} MiB) {escape(u.command[:60])}"
            for u in row.unleased
        ]
        util = f"{g.utilization}%" if g.utilization is not None else "?"
        table.add_row(
            str(g.index), escape(g.name), memory, util, "\n".join(lines) or "[green]free[/]"
        )
    if built.rows:
        out.print(table)
    listed = {g.gpu.index for g in built.rows}
    stray = [lease for lease in built.leases if not set(lease.gpus) <= listed]
    for lease in stray:
        err.print(f"lease on GPU(s) {lease.gpus} not listed by nvidia-smi: {_holder(lease, None)}")
    if not built.rows and not stray:
        err.print(f"no leases (folder: ${DIR_VARIABLE} or /var/tmp/workbench-gpu-leases)")
