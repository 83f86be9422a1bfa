"""Running Gradio apps (each in its env's interpreter) and JupyterLab as services.

A service lives in .workbench/apps/NAME/: service.json (what to run, mode 0600),
state.json (written by its supervisor), tmp/ (the app's GRADIO_TEMP_DIR, 0700). Its
output goes to .workbench/logs/NAME.log. Everything binds 127.0.0.1 unless told
otherwise, and binding anywhere else needs auth.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench import envs
from workbench import spec as specs
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.project import AppEntry, Project

RUNNER = Path(__file__).with_name("app_runner.py")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
AUTH_VARIABLE = "WORKBENCH_AUTH"
LAB = "lab"
PORT_SEARCH = 100


@dataclass
class Service:
    """A running (or failed) service as `ps` shows it; holds no credentials."""

    name: str
    kind: str  # "app" or "lab"
    env: str | None
    host: str
    port: int
    url: str
    status: str  # running, restarting, failed, starting
    health: str  # healthy, starting, unhealthy, down
    pid: int | None
    supervisor_pid: int | None
    restarts: int
    uptime: float | None
    standby_pid: int | None = None  # the warm spare that takes over after a crash

    def to_json(self) -> dict:
        return asdict(self)


def auth_from(value: str | None) -> str | None:
    """USER:PASS from --auth or WORKBENCH_AUTH, validated; None when neither is set."""
    value = value or os.environ.get(AUTH_VARIABLE) or None  # an empty variable is unset
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise WorkbenchError(f"auth must look like USER:PASS (from --auth or {AUTH_VARIABLE})")
    return value


def check_bind(host: str, auth: str | None) -> None:
    """Loopback is always fine; any other address exposes the server and needs auth."""
    if host not in LOOPBACK and auth is None:
        raise WorkbenchError(
            f"--host {host} would expose the server to the network without a password; "
            f"set --auth USER:PASS or {AUTH_VARIABLE}, or reach it over `workbench tunnel`"
        )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host if host != "localhost" else "127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, host: str, taken: set[int] = frozenset()) -> int:
    for port in range(preferred, preferred + PORT_SEARCH):
        if port not in taken and port_is_free(port, host):
            return port
    raise WorkbenchError(f"no free port in {preferred}-{preferred + PORT_SEARCH - 1} on {host}")


def app_command(
    project: Project, app: AppEntry, host: str, port: int, auth: str | None
) -> tuple[list[str], dict[str, str]]:
    """The runner's argv and extra environment for an app, checked before anything starts."""
    prefix = envs.require_built(project, app.env)
    if not app.file.is_file():
        raise WorkbenchError(f"app '{app.name}': file {app.file} does not exist")
    entry = project.env(app.env)
    extra = {
        **specs.load(entry.spec_path).variables,
        "WORKBENCH_ENV": app.env,
        "WORKBENCH_PROJECT": str(project.root),
        "PYTHONUNBUFFERED": "1",
    }
    if app.model:
        local = project.root / app.model
        extra["WORKBENCH_MODEL"] = str(local) if local.exists() else app.model
    if entry.gpus is not None:
        extra["CUDA_VISIBLE_DEVICES"] = ",".join(entry.gpus)
    if auth:
        extra["WORKBENCH_APP_AUTH"] = auth
    argv = [
        str(prefix / "bin" / "python"),
        str(RUNNER),
        "--app",
        str(app.file),
        "--name",
        app.name,
        "--host",
        host,
        "--port",
        str(port),
        "--root",
        str(project.root),
        "--state-dir",
        str(project.services_dir / app.name),
    ]
    return argv, extra


def lab_command(project: Project, host: str, port: int, token: str) -> tuple[list[str], dict]:
    """JupyterLab from the tool's env, seeing the project kernels; the token goes by env."""
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={host}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={project.root}",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers and CI run as root
    return argv, {**project.jupyter_env(), "JUPYTER_TOKEN": token}


def health_url(kind: str, port: int) -> str:
    return f"http://127.0.0.1:{port}/" + ("api" if kind == LAB else "healthz")


def probe(url: str, timeout: float = 1.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return "healthy" if reply.status == 200 else "unhealthy"
    except urllib.error.HTTPError as exc:
        return "starting" if exc.code == 503 else "unhealthy"
    except (urllib.error.URLError, OSError):
        return "down"


def lab_is_open(port: int) -> bool:
    """Whether Lab serves its API to a caller without the token: a Jupyter config file
    with an empty token (c.IdentityProvider.token = "") beats JUPYTER_TOKEN."""
    return probe(f"http://127.0.0.1:{port}/api/kernels") == "healthy"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def running(project: Project, name: str) -> Service | None:
    """The service called name if its supervisor is alive."""
    folder = project.services_dir / name
    service, state = _read(folder / "service.json"), _read(folder / "state.json")
    if not service or not state or not _alive(state.get("supervisor_pid")):
        return None
    pid = state.get("pid") if _alive(state.get("pid")) else None
    health = probe(health_url(service["kind"], service["port"])) if pid else "down"
    started = state.get("last_start")
    return Service(
        name=name,
        kind=service["kind"],
        env=service.get("env_name"),
        host=service["host"],
        port=service["port"],
        url=service["url"],
        status=state.get("status", "starting"),
        health=health,
        pid=pid,
        supervisor_pid=state.get("supervisor_pid"),
        restarts=state.get("restarts", 0),
        uptime=round(time.time() - started, 1) if started and pid else None,
        standby_pid=state.get("standby_pid") if _alive(state.get("standby_pid")) else None,
    )


def listed(project: Project) -> list[Service]:
    folder = project.services_dir
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [s for s in (running(project, n) for n in names) if s is not None]


def start(
    project: Project,
    name: str,
    kind: str,
    argv: list[str],
    extra_env: dict,
    host: str,
    port: int,
    env_name: str | None,
) -> None:
    """Start name under a detached supervisor."""
    folder = project.services_dir / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    project.logs_dir.mkdir(parents=True, exist_ok=True)
    shown_host = "127.0.0.1" if host in LOOPBACK else host
    service = {
        "name": name,
        "kind": kind,
        "env_name": env_name,
        "argv": argv,
        "env": extra_env,
        "cwd": str(project.root),
        "host": host,
        "port": port,
        "url": f"http://{shown_host}:{port}/",
        "log": str(project.logs_dir / f"{name}.log"),
        "standby": kind != LAB,  # apps get a warm spare for fast restarts (workbench/supervisor.py)
    }
    path = folder / "service.json"
    path.touch(mode=0o600)
    path.chmod(0o600)  # it may hold the app's auth
    path.write_text(json.dumps(service, indent=1))
    (folder / "state.json").unlink(missing_ok=True)
    with open(service["log"], "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "workbench.supervisor", str(folder)],
            cwd=project.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def wait_healthy(project: Project, name: str, timeout: float) -> Service:
    """Block until the service answers healthy, or raise with the end of its log."""
    folder = project.services_dir / name
    service = _read(folder / "service.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _read(folder / "state.json") or {}
        # A first start that exited is reported at once, not after the restart backoff.
        failed = state.get("status") == "failed" or state.get("restarts", 0) > 0
        if failed or (state and not _alive(state.get("supervisor_pid"))):
            stop(project, name)
            raise WorkbenchError(f"{name} failed to start: {log_tail(Path(service['log']))}")
        if state.get("pid") and probe(health_url(service["kind"], service["port"])) == "healthy":
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
    folder = project.services_dir / name
    state = _read(folder / "state.json") or {}
    supervisor = state.get("supervisor_pid")
    if not _alive(supervisor):
        (folder / "state.json").unlink(missing_ok=True)
        return False
    os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(supervisor):
        time.sleep(0.1)
    for pid in (supervisor, state.get("pid")):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    (folder / "state.json").unlink(missing_ok=True)
    return True


def new_token() -> str:
    return secrets.token_urlsafe(24)
