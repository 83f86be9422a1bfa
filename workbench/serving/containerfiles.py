"""The files of an image build, in .workbench/images/APP/: the Containerfile, its context
(the lock, workbench's runtime and services file, the app's folder) and the build's secret files.

The image's layers come in this order, and each is rebuilt only when its input changes:
  1. the env, installed from the lock with nothing resolved: uv envs with `uv pip sync
     --require-hashes` on a Python base; conda envs with `conda create --file` of the explicit
     list, then the pip part, by the conda of a Miniconda stage;
  2. the code: workbench's runtime and services file, then the app's folder;
  3. the model, when it is baked in (`--model bake`); otherwise a volume brings it;
  then one LABEL with the spec and lock hashes, git commit, model card and producing run.
The tools and caches of step 1 (uv, the Miniconda stage, package caches) are RUN mounts, so
none lands in a layer; and nothing is copied between stages, because a `COPY --from` of the
env makes the builder hash the whole env on every build (seconds, growing with the env's
size), where a cached RUN costs nothing.

What the machine knows stays on the machine: its CA bundle, its pip configuration (as pip.conf
for pip, as uv.toml for uv) and its local package folders reach RUN steps only as secrets and
bind mounts, the folders at mount points under /mnt (the lock and the settings are rewritten to
match), so no host path, mount point or secret is in the context, a layer or the history.
Secret files are written to secrets/ (0700) beside the context, never in it; files that did not
change keep their timestamps, so the builder's layer cache holds.
"""

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import workbench
from workbench.envs import locks, pipconfig
from workbench.jsonfiles import write_atomic
from workbench.project import AppEntry, Project
from workbench.serving.launch import Launch
from workbench.serving.provenance import Model

CONDA_ROOT = "/opt/conda"  # where Miniconda images keep conda; mounted there for step 1
TINI_PACKAGE = "tini=0.19.0-1"  # Debian bookworm's, installed only where the base lacks tini
UID = 10001
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MAX_CARD_LABEL = 32 * 1024
SKIPPED_NAMES = {"__pycache__", ".ipynb_checkpoints"}


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
    services: list[Launch]  # what the image's launcher starts, in this order
    pip_options: list[str]  # index options: uv's for `uv pip sync`, the spec's for conda's pip
    git_commit: str | None
    git_dirty: bool | None
    warnings: list[str] = field(default_factory=list)
    engine: str | None = None  # the engine the app fronts, which the image runs too


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
        **({"workbench.engine": recipe.engine} if recipe.engine else {}),
    }
    if recipe.git_commit:
        found["org.opencontainers.image.revision"] = recipe.git_commit
        found["workbench.git-dirty"] = str(bool(recipe.git_dirty)).lower()
    if model.value:
        found["workbench.model"] = model.given or ""
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


@dataclass(frozen=True)
class Context:
    """What a build needs besides its tag: the image's folder, the secret files by id and
    the named build contexts (host folders)."""

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
    _sync(where.context, {**_env_files(recipe, lock_moved, pip_moved), **_code_files(recipe)})
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
        key, name, text = "uvconf", "uv.toml", uv_toml(recipe.pip_options)
    else:
        key, name, text = "pipconf", "pip.conf", pipconfig.merged_text()
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


def _host_dirs(recipe: Recipe) -> tuple[list[Path], list[Path]]:
    """Host folders the env's install reads: those the lock's file:// URLs point into
    (conda channels, local wheels), and those the pip configuration names (find-links,
    file:// indexes: the folder above simple/, whose pages link to ../files/; constraint
    files' folders)."""
    in_lock = re.findall(r"file://[^\s#;\\]+", recipe.lock.body)
    configured = _option_values(recipe.pip_options)
    if recipe.kind == "conda":
        config = pipconfig.read()
        configured += [*config.find_links, *config.constraints]
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


def _env_files(
    recipe: Recipe, lock_moved: dict[Path, str], pip_moved: dict[Path, str]
) -> dict[str, bytes]:
    """The lock as the image's install reads it, host folders at their mount points; a conda
    lock's pip part goes to pip.txt after the spec's index options."""
    body = _relocate(recipe.lock.body, lock_moved)
    if recipe.kind == "uv":
        return {"env/requirements.lock": body.encode()}
    pip = [line[len("# pip: ") :] for line in body.splitlines() if line.startswith("# pip: ")]
    explicit = [line for line in body.splitlines() if not line.startswith("# pip: ")]
    files = {"env/explicit.txt": ("\n".join(explicit).strip() + "\n").encode()}
    if pip:
        options = [_relocate(line, pip_moved) for line in _option_lines(recipe.pip_options)]
        files["env/pip.txt"] = ("\n".join([*options, *pip]) + "\n").encode()
    return files


def _option_lines(options: list[str]) -> list[str]:
    """pip options one per line, as a requirements file takes them."""
    lines: list[str] = []
    for word in options:
        if word.startswith("--") or not lines:
            lines.append(word)
        else:
            lines[-1] += " " + shlex.quote(word)
    return lines


def _code_files(recipe: Recipe) -> dict[str, bytes | Path]:
    """The runtime and services file (workbench/), and the folders of the app and of the
    handler its engine serves (app/, at their paths in the project; only the file when it
    sits at the project root)."""
    package = Path(workbench.__file__).parent
    files: dict[str, bytes | Path] = {"workbench/workbench/__init__.py": package / "__init__.py"}
    for source in sorted((package / "runtime").rglob("*.py")):  # engine/ too
        files[f"workbench/workbench/{source.relative_to(package).as_posix()}"] = source
    services = {"version": 1, "services": [s.to_json() for s in recipe.services]}
    files["workbench/services.json"] = (json.dumps(services, indent=1) + "\n").encode()
    root = recipe.project.root.resolve()
    code = [recipe.app.file.resolve()]
    handler = recipe.project.engine(recipe.engine).settings.handler if recipe.engine else ""
    if handler:  # FILE.py:Class in the project (the manifest checks)
        code.append((root / handler.rpartition(":")[0]).resolve())
    for file in code:
        for source in [file] if file.parent == root else _tree(file.parent):
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
    """Make root hold exactly files (relative path -> content or source file), readable by
    all (files 0644, folders 0755: the image's user is not their owner)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        _sync_file(root / rel, content)
    wanted = {root / rel for rel in files}
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        elif path.is_dir():
            path.chmod(0o755)


def _sync_file(target: Path, content: bytes | Path) -> None:
    """Write target (0644) unless it already holds content (then its timestamp stays)."""
    data = content.read_bytes() if isinstance(content, Path) else content
    if not (target.is_file() and target.read_bytes() == data):
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy2(content, target)
        else:
            target.write_bytes(data)
    target.chmod(0o644)


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
            "type=cache,target=/run/workbench-uv-cache",
            *lock_dirs,
            *pip_dirs,
        ]
        text += _run(
            mounts,
            # uv's cache stays in the cache mount, under /run (a tmpfs in podman's RUN steps:
            # a cache's mount point elsewhere was left in the layer on a cold cache)
            "export UV_CACHE_DIR=/run/workbench-uv-cache UV_PYTHON_DOWNLOADS=never \\\n"
            "    UV_LINK_MODE=copy \\\n"
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
                    "type=cache,target=/run/workbench-pip-cache",
                    *pip_dirs,
                ],
                f"{pip_ssl}PIP_CONFIG_FILE=/run/secrets/pip.conf \\\n"
                "    PIP_CACHE_DIR=/run/workbench-pip-cache \\\n"
                f"    {env}/bin/python -m pip install --no-deps --disable-pip-version-check \\\n"
                "    --no-warn-script-location -r /opt/lock/pip.txt",
            )
    model = ""
    if recipe.model.mode == "bake":
        model = (
            "\n# 3. The model, from the build context `model` (the project's model folder),\n"
            "# which hadolint takes for a missing stage; readable by all (safetensors writes\n"
            "# its files 0600).\n# hadolint ignore=DL3022\n"
            f"COPY --from=model --chmod=755 . {recipe.model.target}/\n"
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
