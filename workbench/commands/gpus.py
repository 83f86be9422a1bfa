"""`workbench gpus list`: every GPU of this machine, who holds it, and how busy it is."""

import argparse

from rich.table import Table

from workbench import project as projects
from workbench.console import err, escape, out
from workbench.gpus import report
from workbench.gpus.leases import Lease
from workbench.results import Result
from workbench.runtime import contract


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
        err.print(f"no leases (folder: {contract.LEASE_DIR.get()})")
