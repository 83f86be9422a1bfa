"""Container images of apps (`workbench image APP`): a Containerfile and its build context
under .workbench/images/APP/, built from the env's committed lock by an installed builder
(workbench.serving.builders), labelled with where everything came from, and run on request.

The image's layers come in this order, and each is rebuilt only when its input changes:
  1. the env, installed from the lock with nothing resolved: uv envs with `uv pip sync
     --require-hashes` on a Python base; conda envs with `conda create --file` of the explicit
     list, then the pip part, by the conda of a Miniconda stage;
  2. the code: workbench's runtime and services file, then the app's folder;
  3. the model, when it is baked in (`--model bake`); otherwise a volume brings it;
  then one LABEL with the spec and lock hashes, git commit, model card and producing run.
The tools and caches of step 1 (uv, the Miniconda stage, package caches) are RUN mounts, so
none lands in a layer; and nothing is copied between stages, because a `COPY --from` of the
env makes the builder hash the whole env on every build (6.7 s for a 400 MB env measured
here, and it grows with torch), where a cached RUN costs nothing.
The container runs as uid 10001 under tini, which passes SIGTERM to the launcher
(workbench.runtime.launcher), which passes it to each service listed in the services file.

What the machine knows stays on the machine: its CA bundle, its pip configuration (as pip.conf
for pip, as uv.toml for uv) and its local package folders reach RUN steps only as secrets and
bind mounts, never the context, a layer or the history. Secret files are written to
.workbench/images/APP/secrets/ (0700), beside the context, never in it; the context holds only
what the image holds.
"""

import ast
import configparser
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import workbench
from workbench.envs import backends, locks, pipconfig
from workbench.envs import spec as specs
from workbench.errors import CHECK_FAILED, WorkbenchError, excerpt
from workbench.jsonfiles import StateFile, write_atomic
from workbench.notebooks import records
from workbench.project import AppEntry, Project
from workbench.runtime import launcher
from workbench.serving import builders, net
from workbench.serving.builders import Builder, BuildRequest, Progress
from workbench.serving.state import Health, Kind
from workbench.subprocesses import last_lines, run

# Bases pinned by digest (a tag moves, a digest does not). Python bases by the lock's
# Python minor version; digests as published on Docker Hub for these tags.
PYTHON_BASES = {
    "3.11": "docker.io/library/python:3.11-slim-bookworm"
    "@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91",
    "3.12": "docker.io/library/python:3.12-slim-bookworm"
    "@sha256:d50fb7611f86d04a3b0471b46d7557818d88983fc3136726336b2a4c657aa30b",
}
MINICONDA_IMAGE = (
    "docker.io/continuumio/miniconda3:25.3.1-1"
    "@sha256:4a2425c3ca891633e5a27280120f3fb6d5960a0f509b7594632cdd5bb8cbaea8"
)
CONDA_ROOT = "/opt/conda"  # where Miniconda images keep conda; mounted there for step 1
# A conda env brings its own Python: its image needs only glibc, useradd and apt (for tini);
# the pinned Debian bookworm slim of the 3.11 Python base serves.
CONDA_RUNTIME_BASE = PYTHON_BASES["3.11"]
TINI_PACKAGE = "tini=0.19.0-1"  # Debian bookworm's, installed only where the base lacks tini
UID = 10001
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MODEL_MODES = ("mount", "bake")
MAX_CARD_LABEL = 32 * 1024
SKIPPED_NAMES = {"__pycache__", ".ipynb_checkpoints"}
HEALTH_POLL_S = 0.25


@dataclass(frozen=True)
class Layout:
    """Where things live inside the image."""

    env: str = "/opt/env"
    runtime: str = "/opt/workbench"  # on PYTHONPATH: workbench/__init__.py, workbench/runtime/
    root: str = "/app"  # the app's folder, at its path in the project
    models: str = "/models"
    state: str = "/tmp/workbench"  # writable: each service's state and temp dir

    @property
    def python(self) -> str:
        return f"{self.env}/bin/python"

    @property
    def services(self) -> str:
        return f"{self.runtime}/services.json"

    def launcher(self, *extra: str) -> list[str]:
        module = "workbench.runtime.launcher"
        return [self.python, "-m", module, "--services", self.services, *extra]


LAYOUT = Layout()


@dataclass(frozen=True)
class ImageService:
    """One process the launcher starts in the container (workbench.runtime.launcher reads
    these); "{host}" and "{port}" in argv and env are filled in when it starts."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    health: str = "/healthz"
    public_needs: tuple[str, ...] = ("WORKBENCH_APP_AUTH",)

    def to_json(self) -> dict:
        return {**asdict(self), "public_needs": list(self.public_needs)}


@dataclass(frozen=True)
class Model:
    """The app's model: a project folder (baked in, or mounted at run time), a hub id, or
    none; with the model card found in the folder and the run that wrote it."""

    mode: str  # "bake", "mount", "hub" or "none"
    source: Path | None = None
    target: str | None = None
    hub_id: str | None = None
    card: dict | None = None
    run_id: str | None = None

    @property
    def value(self) -> str | None:
        """What the app gets as WORKBENCH_MODEL."""
        return self.target or self.hub_id


@dataclass(frozen=True)
class Recipe:
    """Everything an image of one app is made from, checked before anything is written."""

    project: Project
    app: AppEntry
    lock: locks.Lock
    kind: str  # "uv" or "conda"
    base: str
    conda_image: str | None  # conda envs: the image conda comes from
    tag: str
    model: Model
    services: list[ImageService]
    sync_options: list[str]  # uv pip sync options (uv envs)
    git_commit: str | None
    git_dirty: bool | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageDir:
    """.workbench/images/APP/: the Containerfile and context kept for review, the secret
    files beside them, and what the last build left."""

    root: Path

    @property
    def containerfile(self) -> Path:
        return self.root / "Containerfile"

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def log(self) -> Path:
        return self.root / "build.log"

    @property
    def iidfile(self) -> Path:
        return self.root / "image.id"

    @property
    def record(self) -> Path:
        return self.root / "image.json"

    @property
    def sbom(self) -> Path:
        return self.root / "sbom.cdx.json"


@dataclass
class ImageRecord(StateFile):
    """image.json: the last image built for an app."""

    app: str
    image: str
    tag: str
    builder: str
    base: str
    kind: str
    seconds: float
    size: int
    labels: dict
    built: float
    sbom: str | None = None


# --- the recipe ---------------------------------------------------------------------------


def recipe(
    project: Project,
    app_name: str,
    *,
    base_image: str | None = None,
    conda_image: str | None = None,
    model_mode: str = "mount",
    tag: str | None = None,
) -> Recipe:
    """What the image of app_name is made from; a WorkbenchError (exit 2) names what is missing."""
    app = project.app(app_name)
    entry = project.env(app.env)
    spec = specs.load(entry.spec_path)
    lock = locks.read(entry.lock_path)
    if lock.spec_hash != spec.content_hash():
        raise WorkbenchError(
            f"{entry.lock_path} was made from an older {entry.spec_path.name}: "
            f"run `workbench env lock {app.env}` first"
        )
    _check_platform(entry.lock_path, lock)
    if not app.file.is_file():
        raise WorkbenchError(f"app '{app.name}': file {app.file} does not exist")
    kind = "uv" if lock.backend == "uv" else "conda"
    warnings: list[str] = []
    sync_options: list[str] = []
    if kind == "uv":
        plan = backends.get("uv").plan(spec)
        sync_options = _drop_pairs(plan.pip_options, "--constraints")
        if re.search(r"^\s*-e\s|^\s*--editable", lock.body, re.M):
            raise WorkbenchError(
                f"{entry.lock_path} installs an editable package; an image needs packages "
                "it can install (build a wheel, or list it as a path requirement)"
            )
    base = base_image or _default_base(kind, lock, entry.lock_path)
    if kind == "uv" and conda_image:
        raise WorkbenchError(f"--conda-image: env '{app.env}' is a uv env ({entry.lock_path})")
    model = model_of(project, app, model_mode, warnings)
    variables = {str(k): str(v) for k, v in spec.variables.items()}
    # The engine this app fronts (issue 11, points 1-3) joins here as one more ImageService,
    # made by the engine side's command function for LAYOUT, listed before the app.
    services = [app_service(project, app, LAYOUT, model, variables)]
    commit, dirty = records.git_state(project.root)
    return Recipe(
        project=project,
        app=app,
        lock=lock,
        kind=kind,
        base=base,
        conda_image=(conda_image or MINICONDA_IMAGE) if kind == "conda" else None,
        tag=tag or default_tag(project, app),
        model=model,
        services=services,
        sync_options=sync_options,
        git_commit=commit,
        git_dirty=dirty,
        warnings=warnings,
    )


def _check_platform(path: Path, lock: locks.Lock) -> None:
    """An image runs Linux on this machine's architecture: the lock must be for that."""
    wanted = f"linux-{platform.machine()}"
    if lock.platform and lock.platform != wanted:
        raise WorkbenchError(
            f"{path} was locked for {lock.platform}; an image here needs a {wanted} lock "
            f"(run `workbench env lock {lock.env}` on such a machine)"
        )


def _default_base(kind: str, lock: locks.Lock, path: Path) -> str:
    if kind == "conda":
        return CONDA_RUNTIME_BASE
    minor = ".".join(lock.python.split(".")[:2])
    if minor not in PYTHON_BASES:
        known = ", ".join(PYTHON_BASES)
        raise WorkbenchError(
            f"{path}: no pinned Python base for Python {lock.python or '?'} (pinned: {known}); "
            "pass --base-image with an image of that Python, pinned by digest"
        )
    return PYTHON_BASES[minor]


def default_tag(project: Project, app: AppEntry) -> str:
    return f"localhost/{_slug(project.name)}-{_slug(app.name)}:latest"


def container_name(project: Project, app: AppEntry) -> str:
    return f"wb-{_slug(project.name)}-{_slug(app.name)}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "app"


def _drop_pairs(options: list[str], name: str) -> list[str]:
    """options without every `name VALUE` pair (a hashed lock takes no constraints)."""
    kept, args = [], iter(options)
    for option in args:
        if option == name:
            next(args, None)
        else:
            kept.append(option)
    return kept


def app_service(
    project: Project, app: AppEntry, layout: Layout, model: Model, variables: dict[str, str]
) -> ImageService:
    """The app runner in the image, as `workbench up` runs it (with the env spec's
    variables), with the image's paths."""
    env = {**variables, "WORKBENCH_ENV": app.env, "WORKBENCH_PROJECT": layout.root}
    if model.value:
        env["WORKBENCH_MODEL"] = model.value
    argv = [layout.python, "-m", "workbench.runtime.app_runner"]
    argv += ["--app", f"{layout.root}/{app.file.relative_to(project.root).as_posix()}"]
    argv += ["--name", app.name, "--host", "{host}", "--port", "{port}", "--root", layout.root]
    argv += ["--state-dir", f"{layout.state}/apps/{app.name}"]
    return ImageService(name=app.name, argv=argv, env=env, port=app.port)


# --- the model and where it came from -------------------------------------------------------


def model_of(project: Project, app: AppEntry, mode: str, warnings: list[str]) -> Model:
    """The app's model for an image: its folder with card and producing run, or a hub id."""
    if mode not in MODEL_MODES:
        raise WorkbenchError(f"--model {excerpt(mode)}: choose {' or '.join(MODEL_MODES)}")
    if not app.model:
        return Model("none")
    folder = project.root / app.model
    if not folder.exists():
        first = Path(app.model).parts[0]
        if app.model.startswith((".", "/")) or (project.root / first).is_dir():
            raise WorkbenchError(
                f"app '{app.name}': model folder {app.model} does not exist yet; run the "
                "notebook that writes it (`workbench run NOTEBOOK`)"
            )
        if mode == "bake":
            raise WorkbenchError(
                f"app '{app.name}': model {excerpt(app.model)} is a hub id, not a project "
                "folder; --model bake needs a folder"
            )
        warnings.append(f"model {app.model} is fetched from the hub when the container starts")
        return Model("hub", hub_id=app.model)
    if not folder.is_dir():
        raise WorkbenchError(f"app '{app.name}': model {app.model} is not a folder")
    card = _card(folder / "model_card.json", warnings)
    producer = producing_run(project, folder)
    if producer is None:
        warnings.append(
            f"no recorded run wrote {app.model}: the image's model.run label stays empty "
            "(train it with `workbench run` to record where it came from)"
        )
    return Model(
        mode=mode,
        source=folder.resolve(),
        target=f"{LAYOUT.models}/{folder.resolve().name}",
        card=card,
        run_id=producer.id if producer else None,
    )


def _card(path: Path, warnings: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.append(f"{path}: not readable JSON ({exc}); no model card label")
        return None
    return _redacted(card) if isinstance(card, dict) else None


def _redacted(value: object) -> object:
    """A model card without the values of secret-looking keys (as run records keep them)."""
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in records.redacted(value).items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def producing_run(project: Project, folder: Path) -> records.RunRecord | None:
    """The recorded run that wrote folder: a successful run during which its newest file was
    written, whose parameters (given, or the notebook's defaults) name the folder; the
    latest such run."""
    folder = folder.resolve()
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not files:
        return None
    written = max(p.stat().st_mtime for p in files)
    found = [
        record
        for record in records.listed(project)
        if record.status == records.RunStatus.OK
        and record.ended is not None
        and record.started - 1 <= written <= record.ended + 1
        and folder in _paths_named(project, record)
    ]
    return max(found, key=lambda r: r.ended, default=None)


def _paths_named(project: Project, record: records.RunRecord) -> set[Path]:
    """Paths the run's string parameters name, read from the notebook's folder (as the
    notebook resolves them) and from the project root."""
    notebook = project.root / record.notebook
    values = {**_defaults(notebook), **record.parameters}
    named = set()
    for value in values.values():
        if isinstance(value, str) and value and "\0" not in value:
            for base in (notebook.parent, project.root):
                named.add((base / value).resolve())
    return named


def _defaults(notebook: Path) -> dict:
    """The default values the notebook's parameters cell declares ({} when unreadable)."""
    from workbench.notebooks import parameters

    try:
        declared = parameters.parameters(notebook)
    except Exception:  # noqa: BLE001 - a notebook that moved or broke names no defaults
        return {}
    defaults = {}
    for name, param in declared.items():
        try:
            defaults[name] = ast.literal_eval(param.default)
        except (ValueError, SyntaxError):
            continue
    return defaults


def labels(recipe: Recipe) -> dict[str, str]:
    """OCI labels: what the image is, and the spec, lock, commit and run it came from."""
    app, lock, model = recipe.app, recipe.lock, recipe.model
    found = {
        "org.opencontainers.image.title": f"{recipe.project.name}-{app.name}",
        "org.opencontainers.image.description": (
            f"workbench app {app.name} of project {recipe.project.name} (env {app.env})"
        ),
        "org.opencontainers.image.base.name": recipe.base,
        **({"workbench.conda-image": recipe.conda_image} if recipe.conda_image else {}),
        "workbench.app": app.name,
        "workbench.env": app.env,
        "workbench.backend": lock.backend,
        "workbench.python": lock.python,
        "workbench.spec-hash": lock.spec_hash,
        "workbench.lock-hash": lock.body_hash,
        "workbench.model.mode": model.mode,
    }
    if recipe.git_commit:
        found["org.opencontainers.image.revision"] = recipe.git_commit
        found["workbench.git-dirty"] = str(bool(recipe.git_dirty)).lower()
    if model.value:
        found["workbench.model"] = app.model or ""
        found["workbench.model.path"] = model.value
    if model.run_id:
        found["workbench.model.run"] = model.run_id
    if model.card is not None:
        card = json.dumps(model.card, separators=(",", ":"), sort_keys=True, default=str)
        found["workbench.model.card-sha256"] = hashlib.sha256(card.encode()).hexdigest()
        if len(card) <= MAX_CARD_LABEL:
            found["workbench.model.card"] = card
        else:
            recipe.warnings.append(
                f"the model card is {len(card)} bytes: only its sha256 is labelled"
            )
    return found


# --- the build context ----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """The written context: the builder's request but for the tag, labels and log."""

    dir: ImageDir
    secrets: dict[str, Path]
    contexts: dict[str, Path]


def image_dir(project: Project, app: AppEntry) -> ImageDir:
    return ImageDir(project.image_dir(app.name))


def write(recipe: Recipe) -> Context:
    """Write the Containerfile, the context and the secret files; files that did not change
    keep their timestamps, so the builder's layer cache holds."""
    where = image_dir(recipe.project, recipe.app)
    where.root.mkdir(parents=True, exist_ok=True)
    lock_dirs, config_dirs = _host_dirs(recipe)
    contexts: dict[str, Path] = {}
    if recipe.kind == "uv":
        contexts["uv"] = Path(_uv_bin()).parent
    contexts |= {f"lock{i}": path for i, path in enumerate(lock_dirs)}
    contexts |= {f"pip{i}": path for i, path in enumerate(config_dirs)}
    if recipe.model.mode == "bake":
        contexts["model"] = recipe.model.source
    lock_moved = {path: mount_point(f"lock{i}") for i, path in enumerate(lock_dirs)}
    pip_moved = {path: mount_point(f"pip{i}") for i, path in enumerate(config_dirs)}
    secrets = _write_secrets(recipe, where.secrets, pip_moved)
    _sync(where.context, {**_env_files(recipe, lock_moved), **_code_files(recipe)})
    _sync_file(where.containerfile, containerfile(recipe, secrets, contexts).encode())
    return Context(where, secrets, contexts)


def mount_point(context: str) -> str:
    """Where RUN steps see a host folder: under /mnt, which every Debian image has, so no
    mount point (and no host path) is left in a layer."""
    return f"/mnt/workbench-{context}"


def _relocate(text: str, moved: dict[Path, str]) -> str:
    """text with each host folder in moved replaced by its mount point (whole path
    components only: /opt/pypi does not touch /opt/pypi-more)."""
    for path in sorted(moved, key=lambda p: -len(str(p))):
        text = re.sub(re.escape(str(path)) + r"(?=/|\s|$|[\"'#;,\]])", moved[path], text)
    return text


def _uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _write_secrets(recipe: Recipe, folder: Path, moved: dict[Path, str]) -> dict[str, Path]:
    """The build's secret files by id: the CA bundle (the machine's own file), the pip
    configuration as uv.toml (uv envs) or pip.conf (conda envs' pip part), with host folders
    at their mount points."""
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    secrets: dict[str, Path] = {}
    ca = Path(os.environ.get("SSL_CERT_FILE") or HOST_CA_BUNDLE)
    if ca.is_file():
        secrets["ca"] = ca
    if recipe.kind == "uv":
        key, name, text = "uvconf", "uv.toml", uv_toml(recipe.sync_options)
    else:
        key, name, text = "pipconf", "pip.conf", pip_conf()
    write_atomic(folder / name, _relocate(text, moved), mode=0o600)
    secrets[key] = folder / name
    return secrets


def uv_toml(options: list[str]) -> str:
    """uv pip options as a uv.toml ([pip] table) for UV_CONFIG_FILE."""
    single = {"--index-url": "index-url", "--index-strategy": "index-strategy"}
    many = {
        "--extra-index-url": "extra-index-url",
        "--find-links": "find-links",
        "--no-binary": "no-binary",
        "--only-binary": "only-binary",
    }
    table: dict[str, object] = {}
    args = iter(options)
    for option in args:
        if option == "--no-index":
            table["no-index"] = True
        elif option in single:
            table[single[option]] = next(args, "")
        elif option in many:
            table.setdefault(many[option], []).append(next(args, ""))  # type: ignore[union-attr]
        # --pre and --prefer-binary change what a resolver picks, not what a lock installs
    lines = ["# uv settings for `uv pip sync` in the image build (a build secret)", "[pip]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def pip_conf(environ: dict[str, str] | None = None) -> str:
    """This machine's pip configuration as one pip.conf: its files merged in pip's order,
    PIP_* variables on top (they win in pip too)."""
    environ = dict(os.environ if environ is None else environ)
    parser = configparser.RawConfigParser()
    parser.read([p for p in pipconfig.config_files(environ) if p.is_file()])
    from_env = {
        name[4:].lower().replace("_", "-"): value
        for name, value in environ.items()
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE"
    }
    for section in parser.sections():
        for key in from_env:
            parser.remove_option(section, key)
    if from_env and not parser.has_section("global"):
        parser.add_section("global")
    for key, value in from_env.items():
        parser.set("global", key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _host_dirs(recipe: Recipe) -> tuple[list[Path], list[Path]]:
    """Host folders the env's install reads: those the lock's file:// URLs point into
    (conda channels, local wheels), and those the pip configuration names (find-links,
    file:// indexes: the folder above simple/, whose pages link to ../files/; constraint
    files' folders)."""
    in_lock = re.findall(r"file://[^\s#;\\]+", recipe.lock.body)
    if recipe.kind == "uv":
        configured = _option_values(recipe.sync_options)
    else:
        config = pipconfig.read()
        configured = [*config.find_links, *config.constraints]
        configured += [u for u in (config.index_url, *config.extra_index_urls) if u]
    return _outermost(in_lock, recipe.kind), _outermost(configured, recipe.kind)


def _outermost(locations: Iterable[str], kind: str) -> list[Path]:
    found: set[Path] = set()
    for location in locations:
        path = _local_path(location)
        if path is None or not path.exists():
            continue
        if not path.is_dir():
            path = path.parent
        if path.name == "simple" or kind == "conda" and path.name in _conda_subdirs():
            path = path.parent
        found.add(path)
    return sorted(p for p in found if not any(other in p.parents for other in found))


def _conda_subdirs() -> set[str]:
    machine = platform.machine()
    return {"noarch", f"linux-{'64' if machine == 'x86_64' else machine}"}


def _option_values(options: list[str]) -> list[str]:
    valued = {"--index-url", "--extra-index-url", "--find-links"}
    return [options[i + 1] for i, o in enumerate(options[:-1]) if o in valued]


def _local_path(location: str) -> Path | None:
    """The local path of a file:// URL or an absolute path; None for anything remote."""
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    return Path(location) if location.startswith("/") else None


def _env_files(recipe: Recipe, moved: dict[Path, str]) -> dict[str, bytes]:
    """The lock as the image's install reads it (host folders at their mount points)."""
    body = _relocate(recipe.lock.body, moved)
    if recipe.kind == "uv":
        return {"env/requirements.lock": body.encode()}
    pip = [line[len("# pip: ") :] for line in body.splitlines() if line.startswith("# pip: ")]
    explicit = [line for line in body.splitlines() if not line.startswith("# pip: ")]
    files = {"env/explicit.txt": ("\n".join(explicit).strip() + "\n").encode()}
    if pip:
        files["env/pip.txt"] = ("\n".join(pip) + "\n").encode()
    return files


def _code_files(recipe: Recipe) -> dict[str, bytes | Path]:
    """The runtime and services file (workbench/), and the app's folder (app/, at its path in
    the project; only the app file when it sits at the project root)."""
    package = Path(workbench.__file__).parent
    files: dict[str, bytes | Path] = {"workbench/workbench/__init__.py": package / "__init__.py"}
    for source in sorted((package / "runtime").glob("*.py")):
        files[f"workbench/workbench/runtime/{source.name}"] = source
    services = {"version": 1, "services": [s.to_json() for s in recipe.services]}
    files["workbench/services.json"] = (json.dumps(services, indent=1) + "\n").encode()
    root, app_file = recipe.project.root.resolve(), recipe.app.file.resolve()
    folder = app_file.parent
    sources = [app_file] if folder == root else list(_tree(folder))
    for source in sources:
        files[f"app/{source.relative_to(root).as_posix()}"] = source
    return files


def _tree(folder: Path) -> Iterable[Path]:
    """Regular files under folder, without caches, checkpoints, hidden files or links."""
    for path in sorted(folder.iterdir()):
        if path.name in SKIPPED_NAMES or path.name.startswith(".") or path.is_symlink():
            continue
        if path.is_dir():
            yield from _tree(path)
        elif path.is_file() and path.suffix != ".pyc":
            yield path


def _sync(root: Path, files: dict[str, bytes | Path]) -> None:
    """Make root hold exactly files (relative path -> content or source file)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        _sync_file(root / rel, content)
    wanted = {root / rel for rel in files}
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _sync_file(target: Path, content: bytes | Path) -> None:
    """Write target unless it already holds content (then its timestamp stays)."""
    data = content.read_bytes() if isinstance(content, Path) else content
    if target.is_file() and target.read_bytes() == data:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        shutil.copy2(content, target)
    else:
        target.write_bytes(data)


# --- the Containerfile ----------------------------------------------------------------------

HEADER = """\
# Generated by `workbench image {app}` from {lock} ({kind} env {env}); do not edit: the next
# `workbench image` rewrites it. Build context: context/ beside this file. The CA bundle, the
# pip/uv settings (secrets) and the host folders mounted below reach RUN steps only.
"""

IMAGE_START = """\
FROM {base}
RUN if ! command -v tini >/dev/null; then \\
      apt-get update && apt-get install -y --no-install-recommends {tini} \\
      && rm -rf /var/lib/apt/lists/*; \\
    fi \\
 && useradd --uid {uid} --user-group --no-create-home --home-dir /nonexistent \\
    --shell /usr/sbin/nologin app

# 1. The env, from the lock in /opt/lock/.
COPY env/ /opt/lock/
"""

IMAGE_END = """\
ENV PATH={env}/bin:$PATH PYTHONPATH={runtime} PYTHONUNBUFFERED=1 HOME=/tmp
WORKDIR {root}
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \\
    CMD {check}
STOPSIGNAL SIGTERM
# tini (PID 1) passes SIGTERM to the launcher, which passes it to every service in
# {services}; a clean stop exits 0 (-e 143 maps a re-raised SIGTERM to 0 too).
ENTRYPOINT ["tini", "-e", "143", "--"]
CMD {launch}

# 2. The code: workbench's runtime and the services file, then the app's folder.
COPY workbench/ {runtime}/
RUN ["{python}", "-m", "compileall", "-q", "{runtime}"]
COPY app/ {root}/
{model}USER {uid}:{uid}
LABEL {labels}
"""


def containerfile(recipe: Recipe, secrets: dict[str, Path], contexts: dict[str, Path]) -> str:
    """The Containerfile text for recipe, given the secret ids and named build contexts."""
    layout, env = LAYOUT, LAYOUT.env
    ca = ["type=secret,id=ca,target=/run/secrets/ca.crt"] if "ca" in secrets else []
    lock_dirs = [f"type=bind,from={n},target={mount_point(n)}" for n in contexts if n[:4] == "lock"]
    pip_dirs = [f"type=bind,from={n},target={mount_point(n)}" for n in contexts if n[:3] == "pip"]
    lock_path = recipe.project.env(recipe.app.env).lock_path.relative_to(recipe.project.root)
    text = HEADER.format(app=recipe.app.name, lock=lock_path, kind=recipe.kind, env=recipe.app.env)
    if recipe.conda_image:
        text += f"FROM {recipe.conda_image} AS conda\n\n"
    text += IMAGE_START.format(base=recipe.base, tini=TINI_PACKAGE, uid=UID)
    if recipe.kind == "uv":
        minor = ".".join(recipe.lock.python.split(".")[:2])
        check = (
            'import sys; v = "%d.%d" % sys.version_info[:2]; '
            f'sys.exit(0 if v == "{minor}" else "the base image has Python " + v + '
            f'", the lock needs {minor}: pass --base-image")'
        )
        ssl = "SSL_CERT_FILE=/run/secrets/ca.crt " if ca else ""
        mounts = [
            f"type=bind,from=uv,source={Path(_uv_bin()).name},target=/usr/local/bin/uv",
            "type=secret,id=uvconf,target=/run/secrets/uv.toml",
            *ca,
            "type=cache,target=/tmp/uv-cache",
            *lock_dirs,
            *pip_dirs,
        ]
        text += _run(
            mounts,
            # uv's cache and its notes stay in the cache mount
            "export UV_CACHE_DIR=/tmp/uv-cache UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy \\\n"
            f" && python3 -c '{check}' \\\n"
            f" && uv venv --quiet --python python3 {env} \\\n"
            f" && {ssl}UV_CONFIG_FILE=/run/secrets/uv.toml \\\n"
            f"    uv pip sync --quiet --python {env}/bin/python --require-hashes \\\n"
            "    --compile-bytecode /opt/lock/requirements.lock",
        )
    else:
        conda = f"{CONDA_ROOT}/bin/conda"
        ssl = "CONDA_SSL_VERIFY=/run/secrets/ca.crt " if ca else ""
        text += _run(
            [f"type=bind,from=conda,source={CONDA_ROOT},target={CONDA_ROOT},rw", *ca, *lock_dirs],
            # conda's package cache and its notes in HOME go with /tmp/conda
            "export HOME=/tmp/conda CONDA_PKGS_DIRS=/tmp/conda/pkgs \\\n"
            f" && {ssl}{conda} create --yes --quiet --prefix {env} \\\n"
            "    --file /opt/lock/explicit.txt \\\n"
            f" && {conda} clean -afy && rm -rf /tmp/conda",
        )
        if any(line.startswith("# pip: ") for line in recipe.lock.body.splitlines()):
            pip_ssl = "PIP_CERT=/run/secrets/ca.crt " if ca else ""
            text += _run(
                [
                    "type=secret,id=pipconf,target=/run/secrets/pip.conf",
                    *ca,
                    "type=cache,target=/tmp/pip-cache",
                    *pip_dirs,
                ],
                f"{pip_ssl}PIP_CONFIG_FILE=/run/secrets/pip.conf PIP_CACHE_DIR=/tmp/pip-cache \\\n"
                f"    {env}/bin/python -m pip install --no-deps --disable-pip-version-check \\\n"
                "    --no-warn-script-location -r /opt/lock/pip.txt",
            )
    model = ""
    if recipe.model.mode == "bake":
        model = (
            "\n# 3. The model, from the build context `model` (the project's model folder),\n"
            "# which hadolint takes for a missing stage.\n# hadolint ignore=DL3022\n"
            f"COPY --from=model . {recipe.model.target}/\n"
        )
    return text + IMAGE_END.format(
        env=env,
        runtime=layout.runtime,
        root=layout.root,
        check=json.dumps(layout.launcher("--check")),
        services=layout.services,
        launch=json.dumps(layout.launcher()),
        python=layout.python,
        model=model,
        uid=UID,
        labels=" \\\n      ".join(
            f"{key}={_quoted(value)}" for key, value in labels(recipe).items()
        ),
    )


def _run(mounts: list[str], command: str) -> str:
    """A RUN instruction: one --mount per line, then the command."""
    return "RUN " + "".join(f"--mount={m} \\\n    " for m in mounts) + command + "\n"


def _quoted(value: str) -> str:
    """A LABEL value taken literally: quotes, backslashes and $ escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


# --- building, linting, SBOM ----------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    id: str
    tag: str
    seconds: float
    size: int
    labels: dict[str, str]


def build(recipe: Recipe, context: Context, builder: Builder, progress: Progress) -> Built:
    """Build the image and record it in image.json. The app's previous image, which lost
    its tag to this one, is removed (with the layers only it used, a baked model's among
    them) unless a container uses it or it has another tag."""
    previous = ImageRecord.read(context.dir.record)
    request = BuildRequest(
        containerfile=context.dir.containerfile,
        context=context.dir.context,
        tag=recipe.tag,
        iidfile=context.dir.iidfile,
        log=context.dir.log,
        secrets=context.secrets,
        contexts=context.contexts,
    )
    started = time.monotonic()
    image = builder.build(request, progress)
    seconds = round(time.monotonic() - started, 2)
    facts = builder.inspect(image)
    built = Built(image, recipe.tag, seconds, facts.size, facts.labels)
    ImageRecord(
        app=recipe.app.name,
        image=image,
        tag=recipe.tag,
        builder=builder.name,
        base=recipe.base,
        kind=recipe.kind,
        seconds=seconds,
        size=facts.size,
        labels=facts.labels,
        built=time.time(),
    ).write(context.dir.record)
    if previous and previous.image != image and previous.builder == builder.name:
        builder.remove_image(previous.image)
    return built


def tool(name: str) -> str | None:
    """An installed command: on PATH, or beside this Python (the tool's venv)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def lint(containerfile_path: Path) -> list[str] | None:
    """hadolint's findings, one line each; None when hadolint is not installed."""
    hadolint = tool("hadolint")
    if hadolint is None:
        return None
    proc = run(
        [hadolint, "--no-color", str(containerfile_path)], what="hadolint", check=False, timeout=120
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


def sbom(builder: Builder, image: str, dest: Path, progress: Progress) -> Path | None:
    """A CycloneDX SBOM of image at dest, made by trivy or syft; None when neither is here."""
    trivy, syft = tool("trivy"), tool("syft")
    if not trivy and not syft:
        return None
    with tempfile.TemporaryDirectory(prefix="sbom-", dir=dest.parent) as tmp:
        archive = Path(tmp) / "image.tar"
        progress(f"saving the image for {'trivy' if trivy else 'syft'}")
        builder.save(image, archive)
        progress("writing the SBOM")
        if trivy:
            argv = [trivy, "image", "--input", str(archive), "--format", "cyclonedx"]
            argv += ["--output", str(dest), "--offline-scan", "--quiet"]
        else:
            argv = [syft, f"docker-archive:{archive}", "-o", f"cyclonedx-json={dest}", "-q"]
        run(argv, what="writing the SBOM", timeout=1800, exit_code=CHECK_FAILED)
    return dest


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    container: str
    id: str
    url: str
    port: int
    seconds: float


def start(
    recipe: Recipe, image: str, builder: Builder, port: int | None, timeout: float
) -> Running:
    """Run image on the host network, bound to 127.0.0.1, and wait until every service in
    it is healthy; the container is replaced if it exists, and stopped if it fails."""
    runner = builders.runner(builder)
    app = recipe.app
    port = port or net.pick_port(app.port, "127.0.0.1")
    if not net.port_is_free(port):
        raise WorkbenchError(f"port {port} is in use")
    name = container_name(recipe.project, app)
    runner.remove_container(name)
    env = {launcher.port_variable(app.name): str(port)}
    volumes = []
    if recipe.model.mode == "mount" and recipe.model.source:
        volumes.append(f"{recipe.model.source}:{recipe.model.target}:ro")
    started = time.monotonic()
    container = runner.run_detached(image, name, env, volumes)
    health = net.health_url(Kind.APP, port)
    while True:
        if net.probe(health) == Health.HEALTHY and runner.exec_ok(name, LAYOUT.launcher("--check")):
            break
        state = runner.container_state(name)
        if not state.get("Running"):
            logs = last_lines(runner.logs(name), 4)
            runner.remove_container(name)
            raise WorkbenchError(
                f"container {name} stopped (exit {state.get('ExitCode')}): {logs}", CHECK_FAILED
            )
        if time.monotonic() - started > timeout:
            runner.remove_container(name)
            raise WorkbenchError(
                f"container {name} was not healthy after {timeout:g} s", CHECK_FAILED
            )
        time.sleep(HEALTH_POLL_S)
    seconds = round(time.monotonic() - started, 2)
    return Running(name, container, f"http://127.0.0.1:{port}/", port, seconds)
