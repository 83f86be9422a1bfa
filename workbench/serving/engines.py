"""Engines as services: the command that serves a model from its env, the API keys it
checks, and what an app that fronts an engine needs to reach it.

An engine runs `python -m workbench.runtime.engine` in its env (see that module for the
process layout). Everything it needs travels in argv and the environment, so another
launcher (a container's) can run the same line: `command(project, engine, host, port)`.
API keys never travel in argv: WORKBENCH_API_KEYS goes by environment, the keys file
(Project.api_keys_path, 0600) by path.
"""

import json
import os
import re
import stat
from pathlib import Path

from workbench.envs import builds
from workbench.envs import spec as specs
from workbench.errors import WorkbenchError
from workbench.gpus import assign
from workbench.project import AppEntry, EngineEntry, Project
from workbench.serving import net, services

KEYS_VARIABLE = "WORKBENCH_API_KEYS"
REMOTE_PREFIXES = ("pkg:", "hf:")  # a folder in an installed package; a Hugging Face hub id


def keys(project: Project) -> list[str]:
    """The project's API keys: WORKBENCH_API_KEYS (comma-separated) and the keys file."""
    found = [k for k in os.environ.get(KEYS_VARIABLE, "").replace(",", " ").split() if k]
    path = keys_file(project)
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        found += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return found


def keys_file(project: Project) -> Path | None:
    """The keys file if there is one, refused when other users could read it."""
    path = project.api_keys_path
    if not path.is_file():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WorkbenchError(
            f"API keys file {path} is open to other users (mode {mode:04o}); chmod 600 {path}"
        )
    return path


def check_bind(host: str, project: Project) -> None:
    """Loopback is always fine; any other address needs API keys."""
    if not net.is_loopback(host) and not keys(project):
        raise WorkbenchError(
            f"--host {host} would expose the engines without API keys; set {KEYS_VARIABLE} or "
            f"write keys to {project.api_keys_path} (mode 0600), or use `workbench tunnel`"
        )


def command(
    project: Project, engine: EngineEntry, host: str, port: int, gpus: assign.Assignment
) -> tuple[list[str], dict[str, str]]:
    """The engine's argv and extra environment (with the GPUs it was given, see
    services.start_leased), checked before anything starts."""
    model = model_argument(project, engine)
    keys_path = keys_file(project)
    python = builds.python_command(project, engine.env)
    entry = project.env(engine.env)
    extra = {
        **specs.load(entry.spec_path).variables,
        "WORKBENCH_ENV": engine.env,
        "WORKBENCH_PROJECT": str(project.root),
        "PYTHONUNBUFFERED": "1",
    }
    extra.update(gpus.environ())
    if os.environ.get(KEYS_VARIABLE):
        extra[KEYS_VARIABLE] = os.environ[KEYS_VARIABLE]
    argv = [*python, *arguments(engine, model, host, port)]
    argv += ["--root", str(project.root)]
    if keys_path is not None:
        argv += ["--api-keys-file", str(keys_path)]
    return argv, extra


def arguments(engine: EngineEntry, model: str, host: str, port: int | str) -> list[str]:
    """What follows the env's interpreter: `-m workbench.runtime.engine` with the engine's
    name and settings, for model as the engine takes it (an absolute folder, pkg:… or hf:…).
    A container's launcher runs its own interpreter with these (host and port may be its
    placeholders); keys then come from WORKBENCH_API_KEYS in the container's environment,
    and WORKBENCH_ENV / WORKBENCH_LOCK_HASH name the env in the metrics."""
    return [
        "-m",
        "workbench.runtime.engine",
        "--name",
        engine.name,
        "--model",
        model,
        "--task",
        engine.task,
        "--host",
        str(host),
        "--port",
        str(port),
        "--workers",
        str(engine.workers),
        "--threads",
        str(engine.threads),
        "--max-batch",
        str(engine.max_batch),
        "--max-queue",
        str(engine.max_queue),
        "--max-requests",
        str(engine.max_requests),
        "--max-rss-mb",
        str(engine.max_rss_mb),
        "--max-tokens",
        str(engine.max_tokens),
        "--max-prompt-tokens",
        str(engine.max_prompt_tokens),
        "--max-body-kb",
        str(engine.max_body_kb),
        "--timeout",
        f"{engine.timeout:g}",
    ]


def model_argument(project: Project, engine: EngineEntry) -> str:
    """The model as the engine takes it: an absolute folder, pkg:PACKAGE/folder or hf:HUB_ID.
    A folder of the project that is missing is reported with the notebook that writes it."""
    model = engine.model
    if model.startswith(REMOTE_PREFIXES):
        return model
    local = (project.root / model).resolve()
    if not (local / "config.json").is_file():
        raise WorkbenchError(f"engine '{engine.name}': {missing_model(project, local)}")
    return str(local)


def missing_model(project: Project, folder: Path) -> str:
    """Why a model folder is not there, naming the notebook whose parameters write it."""
    shown = folder.relative_to(project.root) if folder.is_relative_to(project.root) else folder
    for notebook in sorted((project.root / "notebooks").glob("*.ipynb")):
        if folder in _written_folders(notebook):
            name = notebook.relative_to(project.root)
            return f"model {shown} not found: run {name} first (workbench run {name})"
    return f"model {shown} not found (no config.json there)"


def _written_folders(notebook: Path) -> set[Path]:
    """Folders named by string values in the notebook's parameters cell, resolved from the
    notebook's folder (as the notebook itself resolves them)."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return set()
    found = set()
    for cell in cells:
        if "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for value in re.findall(r"""=\s*["']([^"'\n]+)["']""", text):
            found.add((notebook.parent / value).resolve())
    return found


def front_env(project: Project, app: AppEntry) -> dict[str, str]:
    """What an app that fronts an engine needs: its URL (the port it runs on now, or its
    route on Ray Serve's proxy), the model name to ask for, and a key when the engine
    checks them."""
    if app.engine is None:
        return {}
    engine = project.engine(app.engine)
    running = services.running(project, engine.name)
    if running is not None and running.cluster:  # on Ray Serve: its proxy, its route
        url = running.url
    else:
        url = f"http://127.0.0.1:{running.port if running else engine.port}/v1"
    env = {
        "WORKBENCH_ENGINE_URL": url,
        "WORKBENCH_ENGINE_MODEL": engine.name,
    }
    found = keys(project)
    if found:
        env["WORKBENCH_ENGINE_KEY"] = found[0]
    return env
