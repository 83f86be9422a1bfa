"""Gradio apps as services: the command that serves one in its env (with the GPUs it was
given, see services.start_leased), and who may bind where."""

import os

from workbench.envs import builds
from workbench.envs import spec as specs
from workbench.errors import WorkbenchError
from workbench.gpus import assign
from workbench.project import AppEntry, Project
from workbench.serving import net

AUTH_VARIABLE = "WORKBENCH_AUTH"


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
    if not net.is_loopback(host) and auth is None:
        raise WorkbenchError(
            f"--host {host} would expose the server to the network without a password; "
            f"set --auth USER:PASS or {AUTH_VARIABLE}, or reach it over `workbench tunnel`"
        )


def command(
    project: Project,
    app: AppEntry,
    host: str,
    port: int,
    auth: str | None,
    gpus: assign.Assignment,
) -> tuple[list[str], dict[str, str]]:
    """The runner's argv and extra environment for an app, checked before anything starts.
    The login travels in the environment, never in argv (which `ps` shows)."""
    python = builds.python_command(project, app.env)
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
    extra.update(gpus.environ())
    if auth:
        extra["WORKBENCH_APP_AUTH"] = auth
    argv = [
        *python,
        "-m",
        "workbench.runtime.app_runner",
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
        str(project.service_dir(app.name)),
    ]
    return argv, extra
