"""VS Code (Remote-SSH too) listing the project's kernels, written on request only.

VS Code's Jupyter extension looks for kernelspecs in the `kernels/` folder of every
JUPYTER_PATH entry, reading JUPYTER_PATH from the workspace's env file (the Python
extension's `python.envFile`, by default `${workspaceFolder}/.env`) over its own environment,
and in the user's Jupyter data dir (where `env create --user` registers kernels). So
`workbench kernels vscode` puts the project's Jupyter dir on JUPYTER_PATH in that env
file, and in .vscode/settings.json hides the tool's own interpreter from the kernel picker
and keeps the file watcher off .workbench/ (env prefixes hold tens of thousands of files).

It only adds: a key the user set is never changed or removed, a file that is not plain JSON
(settings.json with comments) is left alone, and running it again changes nothing. What it
cannot add is reported as a step for the user.
"""

import json
import os
import re
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.jsonfiles import write_atomic
from workbench.project import Project
from workbench.textfiles import read_text

ENV_KEY = "JUPYTER_PATH"
EXCLUDE_KEY = "jupyter.kernels.excludePythonEnvironments"
WATCHER_KEY = "files.watcherExclude"
ENV_FILE_KEY = "python.envFile"
WORKSPACE = "${workspaceFolder}"
MAX_BYTES = 1 << 20
ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class Change:
    path: str
    status: str  # "created", "updated", "unchanged" or "manual" (a step left to the user)
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def setup(project: Project) -> list[Change]:
    """Merge what VS Code needs into the env file and .vscode/settings.json."""
    # VS Code drops JUPYTER_PATH entries that do not exist yet; kernels built later appear.
    project.kernels_dir.mkdir(parents=True, exist_ok=True)
    settings_path = project.vscode_settings_path
    settings = _read_settings(settings_path)
    env_file = _env_file(project, settings)
    return [
        _merge_env_file(env_file, project) if isinstance(env_file, Path) else env_file,
        _merge_settings(settings_path, settings, project),
    ]


def _read_settings(path: Path) -> dict | str | None:
    """settings.json as a dict, None when missing, or why it cannot be merged."""
    if not path.exists():
        return None
    text = read_text(path, MAX_BYTES, "VS Code settings file")
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return (
            "it is not plain JSON (comments or trailing commas), so it is left as it is "
            f"(if it sets {ENV_FILE_KEY}, add {ENV_KEY} to that file)"
        )
    if not isinstance(data, dict):
        return "it does not hold a JSON object"
    return data


def _env_file(project: Project, settings: dict | str | None) -> Path | Change:
    """The env file VS Code reads for this workspace: python.envFile when the settings
    name one in the project, else .env."""
    configured = settings.get(ENV_FILE_KEY) if isinstance(settings, dict) else None
    if configured is None:
        return project.dotenv_path
    if isinstance(configured, str):
        resolved = configured.replace(WORKSPACE, str(project.root))
        path = Path(resolved).expanduser()
        path = path if path.is_absolute() else project.root / path
        if "${" not in resolved and path.resolve().is_relative_to(project.root.resolve()):
            return path
    return Change(
        str(project.vscode_settings_path),
        "manual",
        f"{ENV_FILE_KEY} = {json.dumps(configured)} is outside the project: add "
        f"{ENV_KEY}={project.jupyter_dir} to that file",
    )


def _merge_env_file(path: Path, project: Project) -> Change:
    wanted = str(project.jupyter_dir)
    existing = ""
    if path.exists():
        read_text(path, MAX_BYTES, "env file")  # a clear error for a FIFO, binary, huge file
        existing = path.read_bytes().decode("utf-8")
    for line in existing.splitlines():
        match = ENV_LINE.match(line)
        if match and match[1] == ENV_KEY:
            value = match[2].strip("\"'")
            if wanted in value.split(os.pathsep):
                return Change(str(path), "unchanged", f"{ENV_KEY} has {wanted}")
            return Change(
                str(path),
                "manual",
                f"{ENV_KEY}={match[2]} is yours and left as it is: put {wanted} first in it",
            )
    if any(c in wanted for c in "\"'\\$\n"):
        return Change(str(path), "manual", f"add {ENV_KEY}={wanted} (its quoting is yours)")
    value = f'"{wanted}"' if re.search(r"[\s#]", wanted) else wanted
    newline = "\r\n" if "\r\n" in existing else "\n"
    separator = newline if existing and not existing.endswith(("\n", "\r")) else ""
    addition = (
        f"# workbench: VS Code's Jupyter extension lists the project kernels from here{newline}"
        f"{ENV_KEY}={value}{newline}"
    )
    # An env file may hold secrets: the new one is private, an old one keeps its mode.
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
    target = _target(path)
    write_atomic(target, existing + separator + addition, mode=mode)
    os.chmod(target, mode)  # as it was, whatever the umask
    return Change(str(path), "updated" if existing else "created", f"{ENV_KEY}={wanted}")


def _merge_settings(path: Path, settings: dict | str | None, project: Project) -> Change:
    if isinstance(settings, str):
        return Change(str(path), "manual", f"{settings}; add by hand: {_wanted_json(project)}")
    current = dict(settings or {})
    added: list[str] = []
    kept: list[str] = []
    tool_env = str(Path(sys.prefix))
    excluded = current.get(EXCLUDE_KEY, [])
    if not isinstance(excluded, list):
        kept.append(EXCLUDE_KEY)
    elif tool_env not in excluded:
        current[EXCLUDE_KEY] = [*excluded, tool_env]
        added.append(f"{EXCLUDE_KEY} += {tool_env}")
    watcher = current.get(WATCHER_KEY, {})
    pattern = f"**/{project.state_dir.name}/**"
    if not isinstance(watcher, dict):
        kept.append(WATCHER_KEY)
    elif pattern not in watcher:
        current[WATCHER_KEY] = {**watcher, pattern: True}
        added.append(f"{WATCHER_KEY} += {pattern}")
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_target(path), json.dumps(current, indent=4) + "\n")
    if kept:
        detail = (
            f"{' and '.join(kept)}: not of the type VS Code documents, left as it is "
            f"(wanted: {_wanted_json(project)})"
        )
        return Change(str(path), "manual", "; ".join([*added, detail]))
    if not added:
        return Change(str(path), "unchanged", "the tool's own interpreter is already hidden")
    return Change(str(path), "updated" if settings else "created", "; ".join(added))


def _target(path: Path) -> Path:
    """Where to write path: a symlink's target, so that the link stays a link."""
    return path.resolve() if path.is_symlink() else path


def _wanted_json(project: Project) -> str:
    return json.dumps(
        {
            EXCLUDE_KEY: [str(Path(sys.prefix))],
            WATCHER_KEY: {f"**/{project.state_dir.name}/**": True},
        }
    )
