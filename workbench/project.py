"""The project: its root, what its manifest declares (workbench.manifest reads and checks
workbench.toml) and every path under .workbench/."""

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.manifest import MANIFEST, AppEntry, EngineEntry, EnvEntry, LabEntry, read
from workbench.runtime import contract

STATE_DIR = ".workbench"


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    envs: dict[str, EnvEntry] = field(default_factory=dict)
    apps: dict[str, AppEntry] = field(default_factory=dict)
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    # [notebooks]: a notebook file or folder (relative to root) -> the env its notebooks
    # run in when their kernelspec names no project kernel (`python3`, a conda env's name).
    notebooks: dict[str, str] = field(default_factory=dict)
    configured_cache: Path | None = None  # [project] cache_dir
    lab: LabEntry = LabEntry()

    @property
    def cache_dir(self) -> Path | None:
        """The package cache shared by builds (WORKBENCH_CACHE_DIR, else [project]
        cache_dir): uv's under uv/, conda's packages under conda-pkgs/."""
        given = contract.CACHE_DIR.get()
        if given is not None:
            return given.resolve()
        return self.configured_cache

    def notebook_env(self, notebook: Path) -> str | None:
        """The env [notebooks] assigns to a notebook: its own entry, else that of the
        nearest folder above it."""
        try:
            relative = notebook.resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        for candidate in (relative, *relative.parents):
            key = candidate.as_posix()
            if key in self.notebooks:
                return self.notebooks[key]
        return None

    def notebook_roots(self) -> list[Path]:
        """Where the project's notebooks are: what [notebooks] names, else notebooks/."""
        if self.notebooks:
            return [self.root / key for key in sorted(self.notebooks)]
        return [self.root / "notebooks"]

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
    def kernels_dir(self) -> Path:
        """Project-scoped kernelspecs, one folder each (wb-NAME)."""
        return self.jupyter_dir / "kernels"

    @property
    def pylib_dir(self) -> Path:
        """What every env links to import workbench.runtime (a .pth file names it)."""
        return self.state_dir / "pylib"

    @property
    def runs_dir(self) -> Path:
        """Run records and output notebooks, one folder per run."""
        return self.root / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def pool_log_path(self, slot: int) -> Path:
        """What the worker of warm-kernel slot N (sweeps, tests) and its kernels print."""
        return self.logs_dir / "pool" / f"slot-{slot}.log"

    @property
    def services_dir(self) -> Path:
        """One folder per service (engine, app, JupyterLab): its state files and temp dir."""
        return self.state_dir / "services"

    @property
    def legacy_services_dir(self) -> Path:
        """Where services were kept when there were only apps; still read (see service_dir)."""
        return self.state_dir / "apps"

    def service_dir(self, service: str) -> Path:
        """The service's folder; one that a workbench of before started in the legacy
        folder is found there until it starts again (afresh in services_dir)."""
        folder, legacy = self.services_dir / service, self.legacy_services_dir / service
        return legacy if legacy.is_dir() and not folder.is_dir() else folder

    @property
    def cluster_state_path(self) -> Path:
        """The Ray nodes `workbench cluster up/join` started here (cluster.json)."""
        return self.state_dir / "cluster" / "cluster.json"

    @property
    def images_dir(self) -> Path:
        """One folder per app image: its Containerfile and context (kept for review), build
        secrets (0700, never in the context), build log, record and SBOM."""
        return self.state_dir / "images"

    def image_dir(self, app: str) -> Path:
        return self.images_dir / app

    @property
    def api_keys_path(self) -> Path:
        """API keys of the project's engines, one a line (0600; WORKBENCH_API_KEYS adds more)."""
        return self.state_dir / "api_keys"

    @property
    def lab_token_path(self) -> Path:
        """The token of the JupyterLab that `workbench lab --detach` started (0600)."""
        return self.service_dir("lab") / "token"

    @property
    def lab_config_dir(self) -> Path:
        """Project-scoped Jupyter config dir that `workbench lab` puts first on
        JUPYTER_CONFIG_PATH (Lab's default settings); nothing in the user's home."""
        return self.state_dir / "jupyter-config"

    @property
    def vscode_settings_path(self) -> Path:
        """VS Code's workspace settings, merged by `workbench kernels vscode`."""
        return self.root / ".vscode" / "settings.json"

    @property
    def dotenv_path(self) -> Path:
        """The workspace env file VS Code reads by default (python.envFile)."""
        return self.root / ".env"

    @property
    def lab_port(self) -> int:
        return self.lab.port

    @property
    def ssh_host(self) -> str | None:
        """[lab] ssh_host: the name users give this server in ~/.ssh/config, if set."""
        return self.lab.ssh_host

    def env(self, name: str) -> EnvEntry:
        """The env called name, or an error that suggests the closest one."""
        return _lookup(self.envs, name, "env")

    def app(self, name: str) -> AppEntry:
        """The app called name, or an error that suggests the closest one."""
        return _lookup(self.apps, name, "app")

    def engine(self, name: str) -> EngineEntry:
        """The engine called name, or an error that suggests the closest one."""
        return _lookup(self.engines, name, "engine")

    def service(self, name: str) -> AppEntry | EngineEntry:
        """The app or engine called name, or an error that suggests the closest one."""
        if name in self.engines:
            return self.engines[name]
        return _lookup(self.apps | self.engines, name, "app or engine")

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
    """The project at root: its manifest read and checked, envs/NAME.yml specs found."""
    manifest = read(root)
    return Project(
        root=root,
        name=manifest.name or root.name,
        envs=manifest.envs,
        apps=manifest.apps,
        engines=manifest.engines,
        notebooks=manifest.notebooks,
        configured_cache=manifest.cache_dir,
        lab=manifest.lab,
    )
