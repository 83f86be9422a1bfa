"""The project: its root, its manifest (workbench.toml) and every path under .workbench/."""

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError

MANIFEST = "workbench.toml"
STATE_DIR = ".workbench"
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SPEC_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class EnvEntry:
    """One model env: its spec file and the GPUs its kernels and apps may see."""

    name: str
    spec_path: Path
    gpus: tuple[str, ...] | None = None

    @property
    def lock_path(self) -> Path:
        return self.spec_path.with_suffix(".lock")


@dataclass(frozen=True)
class AppEntry:
    """One Gradio app: its file, the env it runs in, its port and model."""

    name: str
    env: str
    file: Path
    port: int
    model: str | None = None  # a path (relative to the project) or a hub id


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    envs: dict[str, EnvEntry] = field(default_factory=dict)
    apps: dict[str, AppEntry] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    # Every location the tool writes, in one place.
    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def builds_dir(self) -> Path:
        """Content-addressed env prefixes, one per (env, spec, backend, lock)."""
        return self.state_dir / "builds"

    @property
    def active_dir(self) -> Path:
        """`envs/NAME` symlinks pointing at the active build of each env."""
        return self.state_dir / "envs"

    @property
    def jupyter_dir(self) -> Path:
        """Project-scoped Jupyter data dir (holds kernels/); goes on JUPYTER_PATH."""
        return self.state_dir / "jupyter"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def services_dir(self) -> Path:
        """One folder per running app (and JupyterLab): state.json, temp dir."""
        return self.state_dir / "apps"

    @property
    def lab_port(self) -> int:
        return int(self.manifest.get("lab", {}).get("port", 8888))

    def env(self, name: str) -> EnvEntry:
        """The env called name, or an error that suggests the closest one."""
        return _lookup(self.envs, name, "env")

    def app(self, name: str) -> AppEntry:
        """The app called name, or an error that suggests the closest one."""
        return _lookup(self.apps, name, "app")

    def jupyter_env(self) -> dict[str, str]:
        """Environment variables that let stock Jupyter tools see the project kernels."""
        current = os.environ.get("JUPYTER_PATH", "")
        parts = [str(self.jupyter_dir)] + [p for p in current.split(os.pathsep) if p]
        return {"JUPYTER_PATH": os.pathsep.join(dict.fromkeys(parts))}


def _lookup(table: dict, name: str, kind: str):
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, table, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    known = ", ".join(sorted(table)) or "none"
    raise WorkbenchError(f"unknown {kind} '{name}' (known: {known}){hint}")


def find_root(start: Path) -> Path:
    """The nearest directory at or above start holding workbench.toml or envs/."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
    if (start / "envs").is_dir():
        return start
    raise WorkbenchError(
        f"no {MANIFEST} in {start} or its parents; run inside a workbench project or pass --project"
    )


def load(root: Path) -> Project:
    """Read the manifest and discover envs/NAME.yml specs."""
    manifest_path = root / MANIFEST
    manifest: dict = {}
    if manifest_path.is_file():
        try:
            manifest = tomllib.loads(manifest_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise WorkbenchError(f"{manifest_path}: invalid TOML: {exc}") from exc
    name = str(manifest.get("project", {}).get("name") or root.name)

    envs: dict[str, EnvEntry] = {}
    env_dir = root / "envs"
    if env_dir.is_dir():
        for path in sorted(env_dir.iterdir()):
            if path.suffix in SPEC_SUFFIXES and path.is_file():
                envs[path.stem] = EnvEntry(path.stem, path)
    for env_name, table in manifest.get("envs", {}).items():
        where = f"{manifest_path}: [envs.{env_name}]"
        if not ENV_NAME.match(env_name):
            raise WorkbenchError(f"{where}: invalid env name (use letters, digits, _ . -)")
        if not isinstance(table, dict):
            raise WorkbenchError(f"{where}: expected a table")
        spec_path = root / table["spec"] if "spec" in table else env_dir / f"{env_name}.yml"
        if env_name not in envs and not spec_path.is_file():
            raise WorkbenchError(f"{where}: spec file {spec_path} does not exist")
        envs[env_name] = EnvEntry(env_name, spec_path, _gpus(table.get("gpus"), where))
    apps = {
        app_name: _app(root, manifest_path, app_name, table, envs)
        for app_name, table in manifest.get("apps", {}).items()
    }
    return Project(root=root, name=name, envs=envs, apps=apps, manifest=manifest)


def _app(root: Path, manifest_path: Path, name: str, table: object, envs: dict) -> AppEntry:
    where = f"{manifest_path}: [apps.{name}]"
    if not ENV_NAME.match(name) or name == "lab":
        raise WorkbenchError(f"{where}: invalid app name (letters, digits, _ . -; not 'lab')")
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table with env, file and port")
    missing = [key for key in ("env", "file") if key not in table]
    if missing:
        raise WorkbenchError(f"{where}: missing {', '.join(missing)}")
    if table["env"] not in envs:
        known = ", ".join(sorted(envs)) or "none"
        raise WorkbenchError(f"{where}: env = {table['env']!r} is not an env (known: {known})")
    port = table.get("port", 7860)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise WorkbenchError(f"{where}: port = {port!r}: expected a number 1-65535")
    model = table.get("model")
    if model is not None and not isinstance(model, str):
        raise WorkbenchError(f"{where}: model = {model!r}: expected a path or hub id")
    return AppEntry(name, table["env"], root / table["file"], port, model)


def _gpus(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int | str) and str(v).strip().isdigit() for v in value)
    ):
        return tuple(str(v).strip() for v in value)
    raise WorkbenchError(f'{where}: gpus = {value!r}: expected GPU indices such as [0, 1] or "0,1"')
