"""Services (engines, apps and JupyterLab): started under a detached supervisor or in the
foreground, listed, waited for, stopped.

A service lives in .workbench/services/NAME/ (service.json, state.json, the app's tmp/) and
logs to .workbench/logs/NAME.log; one that a workbench of before started in .workbench/apps/
is read there until it is started again (Project.service_dir). Everything binds 127.0.0.1
unless told otherwise, and binding anywhere else needs auth (workbench.serving.apps).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.processes import alive
from workbench.project import Project
from workbench.serving import net
from workbench.serving.state import (
    Health,
    Kind,
    Service,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
)

if TYPE_CHECKING:  # launch builds on engines, which reads this module
    from workbench.gpus import assign
    from workbench.serving.launch import Launch

# The GPU leases and the process spawner are imported where a service starts: `ps` and
# `down` only read state files.

SPEC, STATE = "service.json", "state.json"


def running(project: Project, name: str) -> Service | None:
    """The service called name if its supervisor is alive, or if it is deployed on a
    cluster (then listed whatever its health: `down` deletes it)."""
    folder = project.service_dir(name)
    spec, state = ServiceSpec.read(folder / SPEC), ServiceState.read(folder / STATE)
    if spec is not None and spec.cluster:
        return _deployed(spec)
    if spec is None or state is None or not _supervisor_alive(state):
        return None
    pid = state.pid if alive(state.pid, state.pid_start) else None
    health = net.probe(net.health_url(spec.kind, spec.port)) if pid else Health.DOWN
    return _service(
        spec,
        status=state.status,
        health=health,
        pid=pid,
        supervisor_pid=state.supervisor_pid,
        restarts=state.restarts,
        uptime=round(time.time() - state.last_start, 1) if state.last_start and pid else None,
        standby_pid=state.standby_pid
        if alive(state.standby_pid, state.standby_pid_start)
        else None,
    )


def _supervisor_alive(state: ServiceState) -> bool:
    return alive(state.supervisor_pid, state.supervisor_pid_start)


def _deployed(spec: ServiceSpec) -> Service:
    """An engine on a Ray cluster, as far as its HTTP endpoint says (no Ray needed)."""
    health = net.probe(net.health_url(spec.kind, spec.port, spec.route))
    return _service(
        spec,
        status=ServiceStatus.RUNNING,
        health=health,
        pid=None,
        supervisor_pid=None,
        restarts=0,
        uptime=round(time.time() - spec.started, 1) if spec.started else None,
        cluster=spec.cluster,
        replicas=spec.replicas,
    )


def _service(spec: ServiceSpec, **how) -> Service:
    """What `ps` shows of a service: what its spec says, and how it goes (how)."""
    return Service(
        name=spec.name,
        kind=spec.kind,
        env=spec.env_name,
        host=spec.host,
        port=spec.port,
        url=spec.url,
        **how,
    )


def deployment(project: Project, name: str) -> ServiceSpec | None:
    """The record of name's deployment on a Ray cluster, if it has one."""
    spec = ServiceSpec.read(project.service_dir(name) / SPEC)
    return spec if spec is not None and spec.cluster else None


def record_deployment(project: Project, spec: ServiceSpec) -> None:
    """Remember an engine deployed on a cluster (workbench.cluster.serving) for ps/down."""
    folder = _fresh_folder(project, spec.name)
    (folder / STATE).unlink(missing_ok=True)
    spec.write(folder / SPEC, mode=0o600)


def forget(project: Project, name: str) -> None:
    """Drop a deployment's record (after deleting it from its cluster)."""
    (project.service_dir(name) / SPEC).unlink(missing_ok=True)


def listed(project: Project) -> list[Service]:
    """Every service running or deployed, those started into the legacy folder too."""
    folders = (project.services_dir, project.legacy_services_dir)
    names = sorted({p.name for f in folders if f.is_dir() for p in f.iterdir() if p.is_dir()})
    return [s for s in (running(project, n) for n in names) if s is not None]


def _fresh_folder(project: Project, name: str) -> Path:
    """The folder a service starts in; what an older workbench left in the legacy folder
    under that name goes (the service is not running, or it would not be started)."""
    legacy = project.legacy_services_dir / name
    if legacy.is_dir():
        state = ServiceState.read(legacy / STATE)
        if state is not None and _supervisor_alive(state):
            raise WorkbenchError(f"{name} is already running (`workbench down {name}` first)")
        shutil.rmtree(legacy, ignore_errors=True)
    folder = project.services_dir / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def start(project: Project, launch: "Launch", env_name: str | None) -> None:
    """Start a service under a detached supervisor (apps and engines get a warm spare)."""
    name, kind, host, port = launch.name, launch.kind, launch.host, launch.port
    folder = _fresh_folder(project, name)
    project.logs_dir.mkdir(parents=True, exist_ok=True)
    shown_host = "127.0.0.1" if net.is_loopback(host) else host
    spec = ServiceSpec(
        name=name,
        kind=kind,
        argv=launch.argv,
        cwd=launch.cwd,
        host=host,
        port=port,
        url=f"http://{shown_host}:{port}/" + ("v1" if kind == Kind.ENGINE else ""),
        log=str(project.log_path(name)),
        env_name=env_name,
        env=launch.env,
        standby=kind in (Kind.APP, Kind.ENGINE),
    )
    spec.write(folder / SPEC, mode=0o600)  # it may hold the app's login
    (folder / STATE).unlink(missing_ok=True)
    from workbench.subprocesses import spawn

    with open(spec.log, "ab") as log:
        spawn(
            [sys.executable, "-m", "workbench.serving.supervisor", folder],
            what=f"starting the supervisor of {name}",
            cwd=project.root,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def gpus_for(
    project: Project,
    kind: Kind,
    name: str,
    env: str,
    wait: float | None = None,
    on_wait: Callable[[str], None] = lambda _why: None,
) -> "assign.Assignment":
    """The GPUs a service gets: its env's pin, or a lease on its env's count."""
    from workbench.gpus import assign
    from workbench.gpus.leases import Holder

    entry = project.env(env)
    holder = Holder(kind, name, str(project.root))
    return assign.assign(entry.gpus, entry.gpu_count, holder, wait=wait, on_wait=on_wait)


def start_leased(
    project: Project,
    name: str,
    kind: Kind,
    env_name: str,
    launch: Callable[["assign.Assignment"], "Launch"],
    wait: float | None = None,
    on_wait: Callable[[str], None] = lambda _why: None,
) -> None:
    """Start a service (an app, an engine) under a supervisor with the GPUs its env asks
    for; launch(gpus) describes it. The lease is handed to the supervisor, so it lasts as
    long as the service, restarts included."""
    gpus = gpus_for(project, kind, name, env_name, wait, on_wait)
    try:
        start(project, launch(gpus), env_name)
        if gpus.lease is not None:
            from workbench.gpus import leases

            leases.hand_over(gpus.lease, _supervisor_pid(project, name))
    except BaseException:
        gpus.release()
        raise


def _supervisor_pid(project: Project, name: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ServiceState.read(project.service_dir(name) / STATE)
        if state is not None:
            return state.supervisor_pid
        time.sleep(0.05)
    raise WorkbenchError(f"{name}: its supervisor did not start (see `workbench logs {name}`)")


def wait_healthy(project: Project, name: str, timeout: float) -> Service:
    """Block until the service answers healthy, or raise with the end of its log."""
    folder = project.service_dir(name)
    spec = ServiceSpec.read(folder / SPEC)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ServiceState.read(folder / STATE)
        # A first start that exited is reported at once, not after the restart backoff.
        if state and (
            state.status == ServiceStatus.FAILED
            or state.restarts > 0
            or not _supervisor_alive(state)
        ):
            stop(project, name)
            raise WorkbenchError(f"{name} failed to start: {log_tail(Path(spec.log))}")
        url = net.health_url(spec.kind, spec.port)
        if state and state.pid and net.probe(url) == Health.HEALTHY:
            return running(project, name)
        time.sleep(0.2)
    stop(project, name)
    raise WorkbenchError(
        f"{name} was not healthy after {timeout:g} s (see `workbench logs {name}`)", CHECK_FAILED
    )


def log_tail(path: Path, scan: int = 200) -> str:
    """Why a service stopped, from its log: the last error-level JSON message or plain-text
    line (runners and tracebacks print those), else the last message."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-scan:]
    except OSError:
        return "(no log)"
    last_message = "(empty log)"
    for line in reversed(lines):
        if not line.strip() or line.startswith((" ", "\t")):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            return line.strip()
        if not isinstance(entry, dict):
            return line.strip()
        if entry.get("level") in ("error", "critical"):
            return str(entry.get("msg"))
        if last_message == "(empty log)":
            last_message = str(entry.get("msg", line))
    return last_message


def stop(project: Project, name: str, grace: float = 20.0) -> bool:
    """Stop a service and its supervisor; True if one was running."""
    folder = project.service_dir(name)
    state = ServiceState.read(folder / STATE)
    if state is None or not _supervisor_alive(state):
        (folder / STATE).unlink(missing_ok=True)
        return False
    os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _supervisor_alive(state):
        time.sleep(0.1)
    for pid, started in (
        (state.supervisor_pid, state.supervisor_pid_start),
        (state.pid, state.pid_start),
    ):
        if alive(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (folder / STATE).unlink(missing_ok=True)
    return True


def foreground(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    url: str,
    on_healthy: Callable[[], None],
    what: str,
) -> int:
    """Run a server in the foreground until it exits or Ctrl-C stops it (then 0); calls
    on_healthy once, when url first answers healthy (it may raise to stop the server)."""
    from workbench.subprocesses import spawn

    proc = spawn(argv, what=what, cwd=cwd, env=env, stdin=None)
    try:
        announced = False
        while proc.poll() is None:
            if not announced and net.probe(url) == Health.HEALTHY:
                announced = True
                on_healthy()
            time.sleep(0.2)
        return proc.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        _terminate(proc)


def _terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after grace seconds (Lab ignores SIGTERM early in its start)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
