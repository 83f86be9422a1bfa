"""Engines as services: the command that serves a model from its env, the API keys it
checks, and what an app that fronts an engine needs to reach it.

An engine runs `python -m workbench.runtime.engine` in its env (see that module for the
process layout). Everything it needs travels in argv and the environment, so another
launcher (a container's, a Ray replica) runs the same line: workbench.serving.launch.engine.
API keys never travel in argv: WORKBENCH_API_KEYS goes by environment, the keys file
(Project.api_keys_path, 0600) by path.
"""

import json
import re
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.project import AppEntry, EngineEntry, Project
from workbench.runtime import apikeys, contract, models
from workbench.runtime.engine import settings
from workbench.serving import net, services


def keys(project: Project) -> list[str]:
    """The project's API keys: WORKBENCH_API_KEYS and the keys file (as an engine reads them)."""
    return apikeys.read(keys_file(project))


def keys_file(project: Project) -> Path | None:
    """The keys file if there is one, refused when other users could read it."""
    path = project.api_keys_path
    if not path.is_file():
        return None
    try:
        apikeys.check_private(path)
    except ValueError as exc:
        raise WorkbenchError(str(exc)) from None
    return path


def check_bind(host: str, project: Project) -> None:
    """Loopback is always fine; any other address needs API keys."""
    if not net.is_loopback(host) and not keys(project):
        raise WorkbenchError(
            f"--host {host} would expose the engines without API keys; set "
            f"{contract.API_KEYS.name} or "
            f"write keys to {project.api_keys_path} (mode 0600), or use `workbench tunnel`"
        )


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
        "--host",
        str(host),
        "--port",
        str(port),
        *settings.argv(engine.settings),
    ]


def model_argument(project: Project, engine: EngineEntry) -> str:
    """The model as the engine takes it: an absolute folder, pkg:PACKAGE/folder or hf:HUB_ID.
    A folder of the project that is missing is reported with the notebook that writes it."""
    model = engine.model
    if not models.is_folder(model):
        return model
    local = (project.root / model).resolve()
    if not models.is_model_folder(local):
        raise WorkbenchError(f"engine '{engine.name}': {missing_model(project, local)}")
    return str(local)


def missing_model(project: Project, folder: Path) -> str:
    """Why a model folder is not there, naming the notebook whose parameters write it."""
    shown = folder.relative_to(project.root) if folder.is_relative_to(project.root) else folder
    for notebook in sorted((project.root / "notebooks").glob("*.ipynb")):
        if folder in _written_folders(notebook):
            name = notebook.relative_to(project.root)
            return f"model {shown} not found: run {name} first (workbench run {name})"
    return f"model {shown} not found (no {models.CONFIG} there)"


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
    env = {contract.ENGINE_URL.name: url, contract.ENGINE_MODEL.name: engine.name}
    found = keys(project)
    if found:
        env[contract.ENGINE_KEY.name] = found[0]
    return env
