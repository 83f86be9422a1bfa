"""`workbench serve|up|ps|down|logs|lab|tunnel`: engines, apps, JupyterLab, and the way in."""

import argparse
import shlex
import time
from pathlib import Path

from rich.table import Table

from workbench import project as projects
from workbench.commands import gpus
from workbench.console import err, escape, out, progress
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.gpus import assign
from workbench.results import Result
from workbench.serving import apps, engines, lab, net, services, tunnel
from workbench.serving.state import Health, Kind, Service, ServiceSpec

HEALTH_TIMEOUT = lab.HEALTH_TIMEOUT


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    bind = argparse.ArgumentParser(add_help=False)
    bind.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need --auth)",
    )
    bind.add_argument(
        "--auth", metavar="USER:PASS", help=f"require this login (or set {apps.AUTH_VARIABLE})"
    )
    # The name in the printed ssh line: ~/.ssh/config's Host for this server.
    via = argparse.ArgumentParser(add_help=False)
    via.add_argument(
        "--host-alias",
        metavar="NAME",
        help="server name in the printed ssh line: the Host you have in ~/.ssh/config "
        "(default: [lab] ssh_host in workbench.toml, else this server's own name)",
    )

    p = sub.add_parser(
        "serve",
        parents=[common, bind, via],
        help="run one app or engine in the foreground",
        description="Run a Gradio app or an engine in its env's interpreter until Ctrl-C "
        "(an app that fronts an engine needs that engine running: `workbench up ENGINE`).",
    )
    p.add_argument("app", metavar="NAME")
    p.add_argument("--port", type=int, help="default: the manifest's, or the next free one")
    gpus.add_wait_option(p)
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser(
        "up",
        parents=[common, bind, via],
        help="start engines and apps in the background",
        description="Start engines and apps (default: all; an app's engine starts with it) "
        "under a supervisor that restarts them when they crash; returns once each is healthy. "
        "Engines check API keys when WORKBENCH_API_KEYS or .workbench/api_keys (0600) has "
        "some; binding anything but 127.0.0.1 needs them (and --auth for apps).",
    )
    p.add_argument("apps", nargs="*", metavar="NAME")
    gpus.add_wait_option(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=HEALTH_TIMEOUT,
        metavar="SECONDS",
        help=f"wait this long for health (default {HEALTH_TIMEOUT:g})",
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the engines on this Ray cluster as Ray Serve applications (default: "
        "$RAY_ADDRESS if set; else on this server); apps still run here, streaming from them",
    )
    p.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="with --cluster: replicas of each engine, Serve routes between them (default 1; "
        "again on a running one: rescale it)",
    )
    p.add_argument(
        "--gpus-per-replica",
        type=float,
        metavar="K",
        help="with --cluster: GPUs Ray gives each replica (default: the env's `gpus` in "
        "workbench.toml, else 0); Ray's assignment wins over a pin",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_up)

    p = sub.add_parser("ps", parents=[common], help="running engines, apps and JupyterLab")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_ps)

    p = sub.add_parser(
        "down", parents=[common], help="stop engines and apps (default: all, and lab)"
    )
    p.add_argument("apps", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_down)

    p = sub.add_parser("logs", parents=[common], help="an engine's or app's log")
    p.add_argument("app", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")
    p.set_defaults(handler=cmd_logs)

    p = sub.add_parser(
        "lab",
        parents=[common, via],
        help="JupyterLab with the project kernels",
        description="JupyterLab on 127.0.0.1 with a token, listing the project's kernels "
        "only (not the tool's own python3; kernels built while it runs appear at once); "
        "prints its URL and the ssh tunnel line. Lab starts without the Jupyter news "
        "prompt; its settings defaults live in .workbench/jupyter-config, nothing is "
        "written into your home.",
    )
    p.add_argument("--port", type=int, help="default: [lab] port in the manifest, or 8888")
    p.add_argument("--detach", action="store_true", help="run in the background (see ps/down)")
    p.add_argument(
        lab.ALL_KERNELS_FLAG,
        action="store_true",
        help="list every Jupyter kernel Lab finds, the tool's own python3 too",
    )
    p.add_argument(
        "--cull-idle",
        metavar="DURATION",
        help="shut kernels down after this long without activity (e.g. 2h; tabs open or "
        "not, never while busy), which frees their GPUs",
    )
    p.add_argument("--json", action="store_true", help="with --detach: print the URL as JSON")
    p.set_defaults(handler=cmd_lab)

    p = sub.add_parser(
        "tunnel",
        parents=[common, via],
        help="ssh -L to JupyterLab, the engines and the apps",
        description="On the server, --print prints one `ssh -N -L …` line for "
        "JupyterLab and every running engine and app. On the laptop, `tunnel USER@HOST` "
        "asks the server for its running services, forwards each (a free local "
        "port where the same one is taken), prints the local URLs and stays up "
        "(reconnecting) until Ctrl-C.",
    )
    p.add_argument("destination", nargs="?", metavar="USER@HOST")
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the ssh line for this server's services",
    )
    p.add_argument(
        "--remote-workbench",
        default=".venv/bin/workbench",
        metavar="CMD",
        help="the workbench command on the server, run in --project's folder "
        "(default .venv/bin/workbench; plain `workbench` without --project)",
    )
    p.add_argument("-p", "--ssh-port", type=int, help="ssh port of the server")
    p.add_argument("-i", "--identity", type=Path, help="ssh private key")
    p.add_argument(
        "-o",
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra ssh -o option (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the forwards as JSON and exit")
    p.set_defaults(handler=cmd_tunnel)


def _kind(project: projects.Project, name: str) -> Kind:
    return Kind.ENGINE if name in project.engines else Kind.APP


def _command(
    project: projects.Project,
    name: str,
    host: str,
    port: int,
    auth: str | None,
    gpus: assign.Assignment,
) -> tuple[list[str], dict[str, str]]:
    """What runs a service with the GPUs it was given: its argv and extra environment."""
    entry = project.service(name)
    if isinstance(entry, projects.EngineEntry):
        return engines.command(project, entry, host, port, gpus)
    argv, env = apps.command(project, entry, host, port, auth, gpus)
    return argv, {**env, **engines.front_env(project, entry)}


def _start(
    project: projects.Project,
    name: str,
    host: str,
    auth: str | None,
    taken: set[int],
    wait: float | None,
) -> int:
    entry = project.service(name)
    port = net.pick_port(entry.port, host, taken)
    if port != entry.port:
        err.print(f"{name}: port {entry.port} is in use, using {port}")
    services.start_leased(
        project,
        name,
        _kind(project, name),
        entry.env,
        host,
        port,
        lambda leased: _command(project, name, host, port, auth, leased),
        wait,
        gpus.say_waiting,
    )
    return port


def _check_bind(project: projects.Project, names: list[str], host: str, auth: str | None) -> None:
    if any(name in project.apps for name in names):
        apps.check_bind(host, auth)
    if any(name in project.engines for name in names):
        engines.check_bind(host, project)


def cmd_serve(args: argparse.Namespace, project: projects.Project) -> Result:
    auth = apps.auth_from(args.auth)
    entry = project.service(args.app)
    _check_bind(project, [entry.name], args.host, auth)
    if services.running(project, entry.name):
        raise WorkbenchError(
            f"{entry.name} is already running in the background "
            f"(`workbench down {entry.name}` first)"
        )
    engine = getattr(entry, "engine", None)
    if engine and not services.running(project, engine):
        raise WorkbenchError(
            f"{entry.name} fronts engine {engine}, which is not running: `workbench up {engine}`"
        )
    if args.port and not net.port_is_free(args.port, args.host):
        raise WorkbenchError(f"port {args.port} is in use")
    port = args.port or net.pick_port(entry.port, args.host)
    if port != entry.port:
        err.print(f"port {entry.port} is in use, using {port}")
    kind = _kind(project, entry.name)
    where = f"http://127.0.0.1:{port}/" + ("v1" if kind == Kind.ENGINE else "")
    via = _destination(args, project)
    leased = services.gpus_for(project, kind, entry.name, entry.env, args.wait, gpus.say_waiting)
    try:
        argv, env = _command(project, entry.name, args.host, port, auth, leased)

        def announce() -> None:
            err.print(f"[green]serving[/] {entry.name} at {where} (Ctrl-C stops)")
            forward = tunnel.Forward(entry.name, port, port)
            err.print(tunnel.line(via, [forward]), markup=False)

        url = net.health_url(kind, port)
        code = services.foreground(argv, env, project.root, url, announce, f"serving {entry.name}")
    finally:
        leased.release()
    return Result(code=code)


def _wanted(project: projects.Project, names: list[str]) -> list[str]:
    """The services to start, engines first: all of them, or those named plus the engines
    the named apps front."""
    if not names:
        names = sorted(project.engines) + sorted(project.apps)
    if not names:
        raise WorkbenchError(
            "nothing to start in workbench.toml ([engines.NAME] with env, model, port; "
            "[apps.NAME] with env, file, port)"
        )
    for name in names:
        project.service(name)
    fronted = [project.apps[n].engine for n in names if n in project.apps]
    wanted = [n for n in dict.fromkeys(names + [e for e in fronted if e])]
    return sorted(wanted, key=lambda n: n not in project.engines)


def _deploy(project: projects.Project, name: str, args: argparse.Namespace, cluster: str) -> None:
    """An engine onto a Ray cluster as a Serve application (blocks until it is healthy)."""
    from workbench.cluster import serving

    entry = project.engine(name)
    deployed = services.deployment(project, name)
    gpus_per_replica = args.gpus_per_replica
    if gpus_per_replica is None and deployed is not None:  # rescaling: as it was deployed
        gpus_per_replica = deployed.gpus_per_replica
    if gpus_per_replica is None:
        env = project.env(entry.env)
        gpus_per_replica = float(env.gpu_count or len(env.gpus or ()))
    with progress(name) as update:
        record = serving.deploy(
            project, entry, cluster, args.replicas or 1, gpus_per_replica, args.host, args.timeout,
            update,
        )  # fmt: skip
    err.print(
        f"[green]✓[/] {name} healthy at {record.url} ({record.replicas} replica(s) on "
        f"{cluster}, up in {record.up_seconds:g} s)"
    )


def cmd_up(args: argparse.Namespace, project: projects.Project) -> Result:
    auth = apps.auth_from(args.auth)
    names = _wanted(project, args.apps)
    _check_bind(project, names, args.host, auth)
    via = _destination(args, project)
    cluster = None
    if any(name in project.engines for name in names):
        from workbench.cluster.serving import cluster_address

        cluster = cluster_address(args.cluster)
    if not cluster and (args.replicas is not None or args.gpus_per_replica is not None):
        raise WorkbenchError("--replicas and --gpus-per-replica need --cluster (or RAY_ADDRESS)")
    taken: set[int] = {s.port for s in services.listed(project)}
    code = 0
    failed: set[str] = set()
    # engines first: an app that fronts one reads its port when it starts
    for group in (
        [n for n in names if n in project.engines],
        [n for n in names if n in project.apps],
    ):
        started = []
        for name in group:
            current = services.running(project, name)
            engine = getattr(project.service(name), "engine", None)
            try:
                if cluster and name in project.engines and current and current.cluster != cluster:
                    where = f"on {current.cluster}" if current.cluster else "on this server"
                    raise WorkbenchError(f"{name} runs {where}: `workbench down {name}` first")
                rescale = (  # `up ENGINE --cluster … --replicas N` again: Serve rescales it
                    current is not None
                    and cluster is not None
                    and current.cluster == cluster
                    and args.replicas not in (None, current.replicas)
                )
                if current and not rescale:
                    err.print(f"{name}: already running at {current.url}")
                    continue
                if engine in failed:
                    raise WorkbenchError(f"{name}: not started, its engine {engine} failed")
                if cluster and name in project.engines:
                    _deploy(project, name, args, cluster)
                    continue
                taken.add(_start(project, name, args.host, auth, taken, args.wait))
                started.append(name)
            except WorkbenchError as exc:
                if len(names) == 1:
                    raise
                err.print(f"[red]✗[/] {escape(exc.message)}")
                code, failed = max(code, exc.exit_code), failed | {name}
        for name in started:
            try:
                service = services.wait_healthy(project, name, args.timeout)
                err.print(f"[green]✓[/] {name} healthy at {service.url}")
            except WorkbenchError as exc:
                err.print(f"[red]✗[/] {escape(exc.message)}")
                code, failed = max(code, exc.exit_code), failed | {name}
    listed = services.listed(project)
    return Result([s.to_json() for s in listed], lambda: _print_tunnel(listed, via), code)


def cmd_ps(args: argparse.Namespace, project: projects.Project) -> Result:
    listed = services.listed(project)
    code = 0 if all(s.health == Health.HEALTHY for s in listed) else CHECK_FAILED
    return Result([s.to_json() for s in listed], lambda: _show_ps(listed), code)


def _show_ps(listed: list[Service]) -> None:
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


def _undeploy(project: projects.Project, record: ServiceSpec) -> bool:
    """Delete an engine's application from its Ray cluster (and forget it here)."""
    from workbench.cluster import serving

    with progress(record.name) as update:
        update(f"deleting it from the cluster at {record.cluster}")
        deleted = serving.delete(project, record)
    services.forget(project, record.name)
    return deleted


def cmd_down(args: argparse.Namespace, project: projects.Project) -> Result:
    names = args.apps or [s.name for s in services.listed(project)]
    for name in args.apps:
        if name != lab.NAME:
            project.service(name)
    deployed = {name: services.deployment(project, name) for name in names}
    # apps first: one that fronts an engine on a cluster stops before the engine goes
    names = sorted(names, key=lambda n: deployed[n] is not None)
    stopped = {
        name: _undeploy(project, deployed[name]) if deployed[name] else services.stop(project, name)
        for name in names
    }

    def show() -> None:
        for name, was_running in stopped.items():
            err.print(f"{name}: {'stopped' if was_running else 'was not running'}")

    return Result(stopped, show)


def cmd_logs(args: argparse.Namespace, project: projects.Project) -> Result:
    if args.app != lab.NAME:
        project.service(args.app)
    path = project.log_path(args.app)
    if not path.is_file():
        raise WorkbenchError(f"no log for {args.app} yet (start it with `workbench up {args.app}`)")
    with path.open(errors="replace") as handle:
        for line in handle.readlines()[-args.lines :]:
            out.print(line.rstrip("\n"), markup=False, highlight=False)
        if args.follow:
            try:
                while True:
                    line = handle.readline()
                    if line:
                        out.print(line.rstrip("\n"), markup=False, highlight=False)
                    else:
                        time.sleep(0.2)
            except KeyboardInterrupt:
                pass
    return Result()


def cmd_lab(args: argparse.Namespace, project: projects.Project) -> Result:
    cull_idle = lab.duration(args.cull_idle) if args.cull_idle else None
    port = args.port or net.pick_port(project.lab_port, "127.0.0.1")
    via = _destination(args, project)
    note = lab.kernels_note(project, args.all_kernels)
    if args.detach:
        current = lab.running_url(project)
        if current:
            return Result(
                {"url": current}, lambda: err.print(f"JupyterLab is already running at {current}")
            )
        url = lab.start_detached(project, port, args.all_kernels, cull_idle)

        def show() -> None:
            err.print(f"[green]✓[/] JupyterLab at {url}")
            err.print(note, markup=False)
            _print_tunnel(services.listed(project), via)

        return Result({"url": url}, show)

    def ready(url: str) -> None:
        line = tunnel.line(via, [tunnel.Forward(lab.NAME, port, port)])
        err.print(f"JupyterLab at {url}\n{note}\n{line}", markup=False)

    return Result(code=lab.run_foreground(project, port, ready, args.all_kernels, cull_idle))


def _destination(args: argparse.Namespace, project: projects.Project) -> str:
    """USER@HOST for the printed ssh line: --host-alias, else [lab] ssh_host, else the
    server's own name."""
    alias = args.host_alias
    if alias is not None:
        projects.check_ssh_host(alias, "--host-alias")
    return tunnel.default_destination(alias or project.ssh_host)


def _forwards(listed: list[Service]) -> list[tunnel.Forward]:
    """One forward a port, on the same port (engines on Ray Serve share its proxy's)."""
    named = tunnel.by_port((s.name, s.port) for s in listed)
    return [tunnel.Forward(name, port, port) for port, name in named.items()]


def _print_tunnel(listed: list[Service], via: str) -> None:
    if listed:
        forwards = _forwards(listed)
        err.print("reach them from your laptop with:")
        out.print(tunnel.line(via, forwards), markup=False)


def _ray_dashboard(project: projects.Project) -> int | None:
    """The port of the project's Ray dashboard (`workbench cluster up`), if it runs."""
    if not project.cluster_state_path.is_file():
        return None
    from workbench.cluster import nodes

    return nodes.running_dashboard(project)


def _ssh_options(args: argparse.Namespace) -> list[str]:
    options = list(tunnel.SSH_KEEPALIVE)
    if args.ssh_port:
        options += ["-p", str(args.ssh_port)]
    if args.identity:
        options += ["-i", str(args.identity)]
    for option in args.ssh_option:
        options += ["-o", option]
    return options


def cmd_tunnel(args: argparse.Namespace, project: projects.Project | None) -> Result:
    if args.print_only:
        if project is None:
            raise WorkbenchError("--print runs on the server, inside the project")
        destination = args.destination or _destination(args, project)
        listed = services.listed(project)
        forwards = _forwards(listed)
        dashboard = _ray_dashboard(project)
        if dashboard:
            forwards.append(tunnel.Forward("ray-dashboard", dashboard, dashboard))
        if not forwards:
            raise WorkbenchError(
                "nothing is running: start engines and apps with `workbench up` (and "
                "`workbench lab --detach`)"
            )
        line = tunnel.line(destination, forwards)
        return Result({"ssh": line}, lambda: out.print(line, markup=False))
    if args.host_alias is not None:
        raise WorkbenchError(
            "--host-alias names this server in `tunnel --print`; on the laptop give USER@HOST"
        )
    if not args.destination:
        raise WorkbenchError("give USER@HOST (on the laptop), or --print (on the server)")
    # On the laptop, --project names the project's folder on the server.
    if args.project:
        remote = f"cd {shlex.quote(str(args.project))} && {args.remote_workbench}"
    else:
        remote = "workbench"
    options = _ssh_options(args)
    remote_services = tunnel.remote_services(args.destination, options, remote)
    if not remote_services:
        raise WorkbenchError(f"nothing is running on {args.destination} (`workbench up` there)")
    forwards = tunnel.local_forwards(remote_services)
    if args.json:
        return Result([{"name": f.name, "local": f.local, "remote": f.remote} for f in forwards])
    for f in forwards:
        moved = f" (remote port {f.remote})" if f.local != f.remote else ""
        out.print(f"{f.name}: http://127.0.0.1:{f.local}/{moved}", markup=False)
    err.print("forwarding; Ctrl-C stops")
    command = tunnel.command(args.destination, forwards, options)
    return Result(code=tunnel.hold(command, lambda message: err.print(message)))
