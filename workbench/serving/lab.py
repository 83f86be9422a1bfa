"""JupyterLab as a service: from the tool's env, with a token, listing the project's kernels
only (unless asked for all), quiet for a new user, configured without writing into the
user's home (settings defaults live in the project's .workbench/jupyter-config)."""

import json
import os
import re
import secrets
import sys
from pathlib import Path

from workbench.envs import kernels
from workbench.errors import WorkbenchError
from workbench.jsonfiles import write_atomic
from workbench.project import Project
from workbench.serving import net, services
from workbench.serving.launch import Launch
from workbench.serving.state import Health, Kind

NAME = "lab"
HEALTH_TIMEOUT = 300.0
DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LAB_OPEN = (
    "JupyterLab answered without its token: a Jupyter config file turns authentication off "
    "(c.IdentityProvider.token = '' or c.ServerApp.token = ''; `jupyter --paths` lists "
    "where config lives); remove that line and run `workbench lab` again"
)
ALL_KERNELS_FLAG = "--all-kernels"
# Imported by Lab, not here (the CLI does not pay for importing jupyter_client).
KERNEL_SPEC_MANAGER = "workbench.serving.lab_kernels.ProjectKernelSpecManager"
# Defaults for Lab's settings, below what a user saves in Lab's Settings editor: no "Would
# you like to get notified about official Jupyter news?" prompt (it shows while fetchNews
# is "none"), no fetching news or update checks from a GPU server.
SETTING_DEFAULTS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}
}


# Where a source checkout builds the Workbench extension (labextension/package.json's outputDir).
SOURCE_LABEXTENSIONS = Path(__file__).resolve().parents[1] / "lab" / "labextensions"
SERVER_EXTENSION = {"ServerApp": {"jpserver_extensions": {"workbench.lab": True}}}


def duration(text: str) -> int:
    """Seconds in "90s", "30m", "2h", "1d" or a plain number of seconds (for --cull-idle)."""
    match = DURATION.fullmatch(text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise WorkbenchError(f"--cull-idle {text!r}: expected a duration such as 90s, 30m or 2h")
    return max(1, round(float(match[1]) * UNITS[match[2] or "s"]))


def culling(idle_s: int) -> list[str]:
    """Jupyter Server options that shut kernels down after idle_s seconds without
    activity, tabs open or not (that is what frees their GPUs), never while busy."""
    return [
        f"--MappingKernelManager.cull_idle_timeout={idle_s}",
        f"--MappingKernelManager.cull_interval={min(300, max(1, idle_s // 10))}",
        "--MappingKernelManager.cull_connected=True",
        "--MappingKernelManager.cull_busy=False",
    ]


def command(
    project: Project,
    host: str,
    port: int,
    token: str,
    all_kernels: bool = False,
    cull_idle: int | None = None,
) -> tuple[list[str], dict]:
    """Lab's argv and environment; the token goes by environment, never argv."""
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
    if not all_kernels:
        argv += [
            f"--ServerApp.kernel_spec_manager_class={KERNEL_SPEC_MANAGER}",
            f"--{KERNEL_SPEC_MANAGER.rsplit('.', 1)[1]}.project_root={project.root}",
        ]
        listed = project_kernels(project)
        if listed:
            # What Lab preselects, and what a client starts when it names no kernel.
            argv.append(f"--MultiKernelManager.default_kernel_name={listed[0]}")
    if (SOURCE_LABEXTENSIONS / "workbench-lab" / "package.json").is_file():
        # A source checkout (editable install): Lab loads the extension as built there, so a
        # rebuild of labextension/ shows on reload; an installed wheel has it in share/jupyter.
        argv.append(f"--LabApp.extra_labextensions_path={SOURCE_LABEXTENSIONS}")
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers and CI run as root
    if cull_idle:
        argv += culling(cull_idle)
    return argv, {**project.jupyter_env(), **_config_env(project), "JUPYTER_TOKEN": token}


def _config_env(project: Project) -> dict[str, str]:
    """Writes the project's Lab config and returns JUPYTER_CONFIG_PATH with it first: Lab
    reads setting defaults from labconfig/default_setting_overrides.json in every config
    dir on that path."""
    path = project.lab_config_dir / "labconfig" / "default_setting_overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(SETTING_DEFAULTS, indent=1) + "\n")
    # The Workbench panel's server side, also where the install's own config is not read.
    enabled = project.lab_config_dir / "jupyter_server_config.d" / "workbench.json"
    enabled.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(enabled, json.dumps(SERVER_EXTENSION, indent=1) + "\n")
    current = os.environ.get("JUPYTER_CONFIG_PATH", "")
    parts = [str(project.lab_config_dir)] + [p for p in current.split(os.pathsep) if p]
    return {"JUPYTER_CONFIG_PATH": os.pathsep.join(dict.fromkeys(parts))}


def project_kernels(project: Project) -> list[str]:
    """The kernel names Lab lists without --all-kernels, sorted."""
    return sorted({spec.name for spec in kernels.listed(project)})


def kernels_note(project: Project, all_kernels: bool) -> str:
    """One line on which kernels Lab lists, and how to list the others."""
    if all_kernels:
        return "Lab lists every Jupyter kernel, the tool's own python3 too"
    listed = project_kernels(project)
    if not listed:
        return (
            "no project kernels yet: `workbench env create --all` builds them and Lab lists "
            f"them as they appear; `workbench lab {ALL_KERNELS_FLAG}` lists Jupyter's others"
        )
    return (
        f"Lab lists the project's kernels only ({', '.join(listed)}); "
        f"`workbench lab {ALL_KERNELS_FLAG}` lists every Jupyter kernel"
    )


def url(port: int, token: str) -> str:
    return f"http://127.0.0.1:{port}/lab?token={token}"


def is_open(port: int) -> bool:
    """Whether Lab serves its API to a caller without the token: a Jupyter config file
    with an empty token (c.IdentityProvider.token = "") beats JUPYTER_TOKEN."""
    return net.probe(f"http://127.0.0.1:{port}/api/kernels") == Health.HEALTHY


def running_url(project: Project) -> str | None:
    """The URL (with token) of the Lab that `lab --detach` started, if it still runs."""
    service = services.running(project, NAME)
    if service is None or not project.lab_token_path.is_file():
        return None
    return url(service.port, project.lab_token_path.read_text().strip())


def start_detached(
    project: Project, port: int, all_kernels: bool = False, cull_idle: int | None = None
) -> str:
    """Lab under a supervisor; returns its URL once healthy and checked to need its token."""
    token = secrets.token_urlsafe(24)
    argv, env = command(project, "127.0.0.1", port, token, all_kernels, cull_idle)
    root = str(project.root)
    launch = Launch(NAME, Kind.LAB, argv, env, root, "127.0.0.1", port, health="/api")
    services.start(project, launch, None)
    services.wait_healthy(project, NAME, HEALTH_TIMEOUT)
    if is_open(port):
        # No kernels yet, and Lab may sit on a SIGTERM this early: no need to wait.
        services.stop(project, NAME, grace=2.0)
        raise WorkbenchError(LAB_OPEN)
    write_atomic(project.lab_token_path, token, mode=0o600)
    return url(port, token)


def run_foreground(
    project: Project, port: int, on_ready, all_kernels: bool = False, cull_idle: int | None = None
) -> int:
    """Lab in the foreground until Ctrl-C; on_ready(url) once it is up and needs its token."""
    token = secrets.token_urlsafe(24)
    argv, env = command(project, "127.0.0.1", port, token, all_kernels, cull_idle)

    def healthy() -> None:
        if is_open(port):
            raise WorkbenchError(LAB_OPEN)
        on_ready(url(port, token))

    health = net.health_url(Kind.LAB, port)
    return services.foreground(argv, env, project.root, health, healthy, "starting JupyterLab")
