"""`workbench services list` (and `ps`, its short form): the project's running engines,
apps and JupyterLab. Kept apart from serve.py so that listing imports only what it reads."""

import argparse

from workbench import project as projects
from workbench.errors import CHECK_FAILED
from workbench.results import Result
from workbench.serving import services
from workbench.serving.state import Health, Service


def cmd_list(args: argparse.Namespace, project: projects.Project) -> Result:
    listed = services.listed(project)
    code = 0 if all(s.health == Health.HEALTHY for s in listed) else CHECK_FAILED
    return Result([s.to_json() for s in listed], lambda: _show_ps(listed, project), code)


def _nothing_running(project: projects.Project) -> str:
    """The one line `ps` prints when nothing runs: what would start something here."""
    declared = sorted(project.engines) + sorted(project.apps)
    if declared:
        return (
            f"nothing running; `workbench up` starts {', '.join(declared)} "
            "(`workbench lab` starts JupyterLab)"
        )
    return (
        "nothing running; workbench.toml declares no engines or apps "
        "(`workbench lab` starts JupyterLab)"
    )


def _show_ps(listed: list[Service], project: projects.Project) -> None:
    if not listed:
        print(_nothing_running(project))  # plain: an empty listing needs no rich
        return
    from rich.table import Table  # here: `ps --json` (what `tunnel` asks a server) needs no rich

    from workbench.console import out

    table = Table(
        "name",
        "kind",
        "env",
        "pid",
        "port",
        "health",
        "uptime",
        "restarts",
        "where",
        "url",
        title="services",
        title_justify="left",
    )
    for s in listed:
        colour = {Health.HEALTHY: "green", Health.STARTING: "yellow"}.get(s.health, "red")
        table.add_row(
            s.name,
            s.kind,
            s.env or "-",
            str(s.pid or "-"),
            str(s.port),
            f"[{colour}]{s.health}[/]",
            _uptime(s.uptime),
            str(s.restarts),
            s.where,
            s.url,
        )
    out.print(table)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
