"""`workbench serve|up|ps|down|logs|lab|tunnel`: engines, apps, JupyterLab, and the way in."""

import argparse
import shlex
import time
from pathlib import Path

from workbench import project as projects
from workbench.commands import gpus
from workbench.console import err, escape, out, progress
from workbench.errors import WorkbenchError
from workbench.manifest import check_ssh_host
from workbench.results import Result
from workbench.serving import apps, deploy, engines, lab, launch, net, services, tunnel
from workbench.serving.state import Kind, Service, ServiceSpec


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
    kind = Kind.ENGINE if entry.name in project.engines else Kind.APP
    where = f"http://127.0.0.1:{port}/" + ("v1" if kind == Kind.ENGINE else "")
    via = _destination(args, project)
    leased = services.gpus_for(project, kind, entry.name, entry.env, args.wait, gpus.say_waiting)
    try:
        described = launch.here(project, entry.name, args.host, port, auth, leased)

        def announce() -> None:
            err.print(f"[green]serving[/] {entry.name} at {where} (Ctrl-C stops)")
            forward = tunnel.Forward(entry.name, port, port)
            err.print(tunnel.line(via, [forward]), markup=False)

        code = services.foreground(
            described.argv, described.env, Path(described.cwd), described.health_url, announce,
            f"serving {entry.name}",
        )  # fmt: skip
    finally:
        leased.release()
    return Result(code=code)


class _Rendered:
    """deploy.execute's reports, as lines on stderr."""

    def note(self, name: str, message: str) -> None:
        err.print(f"{name}: {message}")

    def healthy(self, name: str, url: str, detail: str) -> None:
        err.print(f"[green]✓[/] {name} healthy at {url}" + (f" ({detail})" if detail else ""))

    def failed(self, name: str, error: WorkbenchError) -> None:
        err.print(f"[red]✗[/] {escape(error.message)}")

    def waiting(self, why: str) -> None:
        gpus.say_waiting(why)

    def progress(self, name: str):
        return progress(name)


def cmd_up(args: argparse.Namespace, project: projects.Project) -> Result:
    auth = apps.auth_from(args.auth)
    names = deploy.wanted(project, args.apps)
    _check_bind(project, names, args.host, auth)
    via = _destination(args, project)
    plan = deploy.plan(
        project, names, cluster=args.cluster, replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
    )  # fmt: skip
    options = deploy.Options(args.host, auth, args.timeout, args.wait)
    code = deploy.execute(project, plan, options, _Rendered())
    listed = services.listed(project)
    return Result([s.to_json() for s in listed], lambda: _print_tunnel(listed, via), code)


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


PANEL_HINT = "the Workbench panel (envs, runs, services, GPUs) is in Lab's left sidebar"


def cmd_lab(args: argparse.Namespace, project: projects.Project) -> Result:
    cull_idle = lab.duration(args.cull_idle) if args.cull_idle else None
    port = args.port or net.pick_port(project.lab_port, "127.0.0.1")
    via = _destination(args, project)
    note = lab.kernels_note(project, args.all_kernels)
    if args.detach:
        current = lab.running_url(project)
        if current:
            again = f"JupyterLab is already running at {current}\n{PANEL_HINT}"
            return Result({"url": current}, lambda: err.print(again, markup=False))
        url = lab.start_detached(project, port, args.all_kernels, cull_idle)

        def show() -> None:
            err.print(f"[green]✓[/] JupyterLab at {url}")
            err.print(PANEL_HINT, markup=False)
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
        check_ssh_host(alias, "--host-alias")
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
        lab = next((f for f in forwards if f.name == "lab"), None)
        if lab is None or len(forwards) == 1:
            return Result({"ssh": line}, lambda: out.print(line, markup=False))
        # Lab's port alone reaches every engine and app: <lab>/workbench/proxy/NAME/.
        lab_line = tunnel.line(destination, [lab])
        proxied = {
            f.name: f"http://127.0.0.1:{lab.local}/workbench/proxy/{f.name}/"
            for f in forwards
            if f.name not in ("lab", "ray-dashboard")
        }

        def show() -> None:
            out.print(lab_line, markup=False)
            out.print(
                f"  Lab's port alone reaches {', '.join(proxied)} at "
                f"http://127.0.0.1:{lab.local}/workbench/proxy/NAME/ (with Lab's token); "
                "for clients that need each port:",
                markup=False,
            )
            out.print(line, markup=False)

        return Result({"ssh": line, "ssh_lab": lab_line, "proxied": proxied}, show)
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
