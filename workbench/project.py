"""The project: its root, its manifest (workbench.toml) and every path under .workbench/."""

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from workbench.errors import WorkbenchError, excerpt
from workbench.textfiles import read_text

MANIFEST = "workbench.toml"
STATE_DIR = ".workbench"
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DIGITS = re.compile(r"[0-9]+")
# A host name, an address or a Host alias from ~/.ssh/config; never an ssh option (-…).
SSH_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:%-]*")
SPEC_SUFFIXES = (".yml", ".yaml")
# A manifest may also point an env at a requirements file: a pip-only env.
MANIFEST_SPEC_SUFFIXES = (*SPEC_SUFFIXES, ".txt")
CACHE_ENV = "WORKBENCH_CACHE_DIR"
# A manifest is a few hundred bytes; anything near this is not one, and parsing it would
# take seconds.
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class EnvEntry:
    """One model env: its spec file and the GPUs its kernels and apps may see: pinned
    (`gpus = [0, 1]`) or a count leased at each start (`gpus = 1`)."""

    name: str
    spec_path: Path
    gpus: tuple[str, ...] | None = None
    gpu_count: int | None = None

    @property
    def gpu_request(self) -> tuple[str, ...] | None:
        """The GPUs a build checks the env sees: the pinned ones, or as many as the count
        asks (which ones, leases decide at each start)."""
        if self.gpus:
            return self.gpus
        return tuple(str(i) for i in range(self.gpu_count)) if self.gpu_count else None

    @property
    def lock_path(self) -> Path:
        return self.spec_path.with_suffix(".lock")


@dataclass(frozen=True)
class AppEntry:
    """One Gradio app: its file, the env it runs in, its port, and its model or the engine
    it fronts."""

    name: str
    env: str
    file: Path
    port: int
    model: str | None = None  # a path (relative to the project) or a hub id
    engine: str | None = None  # the [engines.NAME] this app streams from


@dataclass(frozen=True)
class EngineEntry:
    """One engine: a model served with an OpenAI-compatible API from its env, and how (see
    `python -m workbench.runtime.engine --help` for each setting)."""

    name: str
    env: str
    model: str  # a folder (relative to the project), pkg:PACKAGE/folder or hf:HUB_ID
    port: int
    task: str = "auto"  # generate (causal LMs), embed (encoders), or auto: from the model
    workers: int = 0  # engine-core processes; 0: one, or one per GPU pinned for the env
    threads: int = 1  # torch threads per worker
    max_batch: int = 32
    max_queue: int = 64
    max_requests: int = 0  # recycle a worker after this many requests (0: never)
    max_rss_mb: int = 0  # recycle a worker past this resident memory (0: never)
    max_tokens: int = 512
    max_prompt_tokens: int = 4096
    max_body_kb: int = 1024
    timeout: float = 300.0  # seconds a request may take, queue included


# [engines.NAME] keys with their types and lower bounds (the rest of EngineEntry's fields)
ENGINE_LIMITS = {
    "workers": (int, 0),
    "threads": (int, 1),
    "max_batch": (int, 1),
    "max_queue": (int, 0),
    "max_requests": (int, 0),
    "max_rss_mb": (int, 0),
    "max_tokens": (int, 1),
    "max_prompt_tokens": (int, 1),
    "max_body_kb": (int, 1),
    "timeout": (float, 0.001),
}
ENGINE_TASKS = ("auto", "generate", "embed")


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    envs: dict[str, EnvEntry] = field(default_factory=dict)
    apps: dict[str, AppEntry] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    # [notebooks]: a notebook file or folder (relative to root) -> the env its notebooks
    # run in when their kernelspec names no project kernel (`python3`, a conda env's name).
    notebooks: dict[str, str] = field(default_factory=dict)
    configured_cache: Path | None = None  # [project] cache_dir

    @property
    def cache_dir(self) -> Path | None:
        """The package cache shared by builds (WORKBENCH_CACHE_DIR, else [project]
        cache_dir): uv's under uv/, conda's packages under conda-pkgs/."""
        given = os.environ.get(CACHE_ENV)
        if given:
            return Path(given).expanduser().resolve()
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
        """One folder per running app (and JupyterLab): its state files and temp dir."""
        return self.state_dir / "apps"

    def service_dir(self, service: str) -> Path:
        return self.services_dir / service

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
        """VS Code's workspace settings, merged by `workbench kernels --vscode`."""
        return self.root / ".vscode" / "settings.json"

    @property
    def dotenv_path(self) -> Path:
        """The workspace env file VS Code reads by default (python.envFile)."""
        return self.root / ".env"

    @property
    def lab_port(self) -> int:
        return int(self.manifest.get("lab", {}).get("port", 8888))

    @property
    def ssh_host(self) -> str | None:
        """[lab] ssh_host: the name users give this server in ~/.ssh/config, if set."""
        return self.manifest.get("lab", {}).get("ssh_host")

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
    """Read the manifest and discover envs/NAME.yml specs."""
    manifest_path = root / MANIFEST
    manifest: dict = {}
    if manifest_path.is_file():
        text = read_text(manifest_path, MAX_MANIFEST_BYTES, "manifest")
        try:
            manifest = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise WorkbenchError(f"{manifest_path}: invalid TOML: {exc}") from None
        except RecursionError:
            raise WorkbenchError(f"{manifest_path}: invalid TOML: nested too deeply") from None
    project = _table(manifest, "project", manifest_path)
    name = project.get("name") or root.name
    if not isinstance(name, str):
        raise WorkbenchError(
            f"{manifest_path}: [project] name = {excerpt(repr(name))}: expected a string"
        )
    cache_dir = project.get("cache_dir")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir.strip()):
        raise WorkbenchError(
            f"{manifest_path}: [project] cache_dir = {excerpt(repr(cache_dir))}: expected a "
            'folder, e.g. "/data/workbench-cache"'
        )
    configured_cache = (root / Path(cache_dir).expanduser()).resolve() if cache_dir else None
    lab = _table(manifest, "lab", manifest_path)
    _port(lab.get("port", 8888), f"{manifest_path}: [lab]")
    if "ssh_host" in lab:
        check_ssh_host(lab["ssh_host"], f"{manifest_path}: [lab] ssh_host")

    envs: dict[str, EnvEntry] = {}
    env_dir = root / "envs"
    if env_dir.is_dir():
        for path in sorted(env_dir.iterdir()):
            # hidden files are no envs (a build's temporary spec copy is one)
            if path.suffix in SPEC_SUFFIXES and not path.name.startswith(".") and path.is_file():
                envs[path.stem] = EnvEntry(path.stem, path)
    for env_name, table in _table(manifest, "envs", manifest_path).items():
        where = f"{manifest_path}: [envs.{excerpt(env_name)}]"
        if not ENV_NAME.fullmatch(env_name):
            raise WorkbenchError(f"{where}: invalid env name (use letters, digits, _ . -)")
        if not isinstance(table, dict):
            raise WorkbenchError(f"{where}: expected a table")
        spec_path = (
            _inside(root, table["spec"], f"{where}: spec")
            if "spec" in table
            else env_dir / f"{env_name}.yml"
        )
        if env_name not in envs and not spec_path.is_file():
            raise WorkbenchError(f"{where}: spec file {spec_path} does not exist")
        if spec_path.suffix not in MANIFEST_SPEC_SUFFIXES:
            raise WorkbenchError(
                f"{where}: spec = {excerpt(repr(table['spec']))}: expected an environment.yml "
                "(.yml, .yaml) or a requirements file (.txt)"
            )
        # envs/NAME.yml found above, named otherwise here: one env, the manifest's name.
        for other in [n for n, e in envs.items() if e.spec_path == spec_path and n != env_name]:
            del envs[other]
        envs[env_name] = EnvEntry(env_name, spec_path, *_gpus(table.get("gpus"), where))
    _check_env_names(envs, manifest_path)
    engines = {
        engine_name: _engine(manifest_path, engine_name, table, envs)
        for engine_name, table in _table(manifest, "engines", manifest_path).items()
    }
    notebooks = _notebooks(root, manifest_path, _table(manifest, "notebooks", manifest_path), envs)
    apps = {
        app_name: _app(root, manifest_path, app_name, table, envs, engines)
        for app_name, table in _table(manifest, "apps", manifest_path).items()
    }
    for engine_name in engines:
        if engine_name in apps:
            raise WorkbenchError(
                f"{manifest_path}: [engines.{engine_name}] and [apps.{engine_name}] share a "
                "name; services need names of their own"
            )
    return Project(
        root=root,
        name=name,
        envs=envs,
        apps=apps,
        engines=engines,
        manifest=manifest,
        notebooks=notebooks,
        configured_cache=configured_cache,
    )


def _notebooks(root: Path, manifest_path: Path, table: dict, envs: dict) -> dict[str, str]:
    """[notebooks] "path" = "env": paths inside the project, envs that exist."""
    assigned: dict[str, str] = {}
    for key, env in table.items():
        where = f"{manifest_path}: [notebooks] {excerpt(repr(key))}"
        if not isinstance(env, str) or env not in envs:
            known = ", ".join(sorted(envs)) or "none"
            raise WorkbenchError(f"{where} = {excerpt(repr(env))}: not an env (known: {known})")
        path = _inside(root, key, where)
        relative = path.resolve().relative_to(root.resolve()).as_posix()
        assigned[relative] = env
    return assigned


def _check_env_names(envs: dict[str, EnvEntry], manifest_path: Path) -> None:
    """Env names become kernel names, which Jupyter lists in lower case: each must be a
    valid name, and no two may differ only in case."""
    seen: dict[str, str] = {}
    for name, entry in envs.items():
        if not ENV_NAME.fullmatch(name):
            raise WorkbenchError(
                f"{entry.spec_path}: env name '{excerpt(name)}' is not valid (use letters, "
                "digits, _ . -); rename the file"
            )
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise WorkbenchError(
                f"{manifest_path}: envs '{other}' and '{name}' differ only in case; Jupyter "
                "lists kernel names in lower case, so rename one"
            )


def _table(manifest: dict, key: str, manifest_path: Path) -> dict:
    value = manifest.get(key, {})
    if not isinstance(value, dict):
        raise WorkbenchError(
            f"{manifest_path}: {key} = {excerpt(repr(value))}: expected a [{key}] table"
        )
    return value


def _inside(root: Path, value: object, where: str) -> Path:
    """root / value, for a path field that must name a file inside the project."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise WorkbenchError(f"{where} = {excerpt(repr(value))}: expected a path in the project")
    path = root / value
    if not path.resolve().is_relative_to(root.resolve()):
        raise WorkbenchError(
            f"{where} = {excerpt(repr(value))}: outside the project ({root}); use a path inside it"
        )
    return path


def _port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise WorkbenchError(f"{where}: port = {excerpt(repr(value))}: expected a number 1-65535")
    return value


def check_ssh_host(value: object, where: str) -> str:
    """value, checked to be a host name, address or ~/.ssh/config alias (where names the
    field or option in the error)."""
    if not isinstance(value, str) or not SSH_HOST.fullmatch(value):
        raise WorkbenchError(
            f"{where} = {excerpt(repr(value))}: expected a host name or a Host alias from "
            "~/.ssh/config (letters, digits, . - _ :, not starting with -)"
        )
    return value


def _app(
    root: Path, manifest_path: Path, name: str, table: object, envs: dict, engines: dict
) -> AppEntry:
    where = f"{manifest_path}: [apps.{excerpt(name)}]"
    if not ENV_NAME.fullmatch(name) or name == "lab":
        raise WorkbenchError(f"{where}: invalid app name (letters, digits, _ . -; not 'lab')")
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table with env, file and port")
    missing = [key for key in ("env", "file") if key not in table]
    if missing:
        raise WorkbenchError(f"{where}: missing {', '.join(missing)}")
    env = table["env"]
    if not isinstance(env, str) or env not in envs:
        known = ", ".join(sorted(envs)) or "none"
        raise WorkbenchError(f"{where}: env = {excerpt(repr(env))} is not an env (known: {known})")
    port = _port(table.get("port", 7860), where)
    model = table.get("model")
    if model is not None and not isinstance(model, str):
        raise WorkbenchError(f"{where}: model = {excerpt(repr(model))}: expected a path or hub id")
    engine = table.get("engine")
    if engine is not None and (not isinstance(engine, str) or engine not in engines):
        known = ", ".join(sorted(engines)) or "none"
        close = difflib.get_close_matches(str(engine), engines, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise WorkbenchError(
            f"{where}: engine = {excerpt(repr(engine))} is not an [engines.NAME] "
            f"(known: {known}){hint}"
        )
    file = _inside(root, table["file"], f"{where}: file")
    return AppEntry(name, env, file, port, model, engine)


def _engine(manifest_path: Path, name: str, table: object, envs: dict) -> EngineEntry:
    where = f"{manifest_path}: [engines.{excerpt(name)}]"
    if not ENV_NAME.fullmatch(name) or name == "lab":
        raise WorkbenchError(f"{where}: invalid engine name (letters, digits, _ . -; not 'lab')")
    if not isinstance(table, dict):
        raise WorkbenchError(f"{where}: expected a table with env, model and port")
    known = {f.name for f in fields(EngineEntry)} - {"name"}
    unknown = sorted(set(table) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise WorkbenchError(
            f"{where}: unknown key '{excerpt(unknown[0])}'{hint}; valid keys: "
            + ", ".join(sorted(known))
        )
    missing = [key for key in ("env", "model") if key not in table]
    if missing:
        raise WorkbenchError(f"{where}: missing {', '.join(missing)}")
    env = table["env"]
    if not isinstance(env, str) or env not in envs:
        known_envs = ", ".join(sorted(envs)) or "none"
        raise WorkbenchError(
            f"{where}: env = {excerpt(repr(env))} is not an env (known: {known_envs})"
        )
    model = table["model"]
    if not isinstance(model, str) or not model.strip() or "\0" in model:
        raise WorkbenchError(
            f"{where}: model = {excerpt(repr(model))}: expected a folder in the project, "
            "pkg:PACKAGE/folder or hf:HUB_ID"
        )
    task = table.get("task", "auto")
    if task not in ENGINE_TASKS:
        raise WorkbenchError(
            f"{where}: task = {excerpt(repr(task))}: expected one of {', '.join(ENGINE_TASKS)}"
        )
    values = {}
    for key, (kind, low) in ENGINE_LIMITS.items():
        if key not in table:
            continue
        value = table[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if (
            not number
            or not math.isfinite(value)
            or (kind is int and not isinstance(value, int))
            or value < low
        ):
            what = "a whole number" if kind is int else "a number"
            raise WorkbenchError(
                f"{where}: {key} = {excerpt(repr(value))}: expected {what} >= {low:g}"
            )
        values[key] = kind(value)
    port = _port(table.get("port", 8000), where)
    return EngineEntry(name, env, model, port, task, **values)


def _gpus(given: object, where: str) -> tuple[tuple[str, ...] | None, int | None]:
    """(pinned indices, count): a list or "0,1" pins, a number asks for that many."""
    if given is None:
        return None, None
    value = given
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return None, value
        raise WorkbenchError(f"{where}: gpus = {value}: a count of GPUs is at least 1")
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int | str) and DIGITS.fullmatch(str(v).strip()) for v in value)
    ):
        return tuple(str(v).strip() for v in value), None
    raise WorkbenchError(
        f"{where}: gpus = {excerpt(repr(given))}: expected GPU indices such as [0, 1] or "
        '"0,1", or a count such as 1'
    )
