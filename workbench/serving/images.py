"""Container images of apps (`workbench image APP`): the recipe of an app's image, checked
before anything is written; its build by an installed builder (workbench.serving.builders)
from the files workbench.serving.containerfiles writes; lint, SBOM; and a run on 127.0.0.1.

The container runs as uid 10001 under tini, which passes SIGTERM to the launcher
(workbench.runtime.launcher), which passes it to each service in the image's services file:
the app runner today, the engine it fronts too once engines exist (see recipe()).
"""

import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.envs import backends, locks
from workbench.envs import spec as specs
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.jsonfiles import StateFile
from workbench.notebooks import records
from workbench.project import AppEntry, EngineEntry, Project
from workbench.runtime import launcher
from workbench.serving import builders, launch, net
from workbench.serving.builders import Builder, BuildRequest, Progress
from workbench.serving.containerfiles import LAYOUT, Context, Recipe
from workbench.serving.provenance import model_of, unreadable
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
# A conda env brings its own Python: its image needs only glibc, useradd and apt (for tini);
# the pinned Debian bookworm slim of the 3.11 Python base serves.
CONDA_RUNTIME_BASE = PYTHON_BASES["3.11"]
HEALTH_POLL_S = 0.25
PIP_INDEX_OPTIONS = ("--index-url", "--extra-index-url", "--find-links", "--no-index")


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
    if kind == "uv":
        plan = backends.get("uv").plan(spec)
        pip_options = _drop_pairs(plan.pip_options, "--constraints")
        if re.search(r"^\s*-e\s|^\s*--editable", lock.body, re.M):
            raise WorkbenchError(
                f"{entry.lock_path} installs an editable package; an image needs packages "
                "it can install (build a wheel, or list it as a path requirement)"
            )
    else:  # the spec's index options, which `conda env create` gave pip
        pip_options = [
            word
            for line in spec.pip
            if line.kind in PIP_INDEX_OPTIONS
            for word in (line.kind, line.value)
            if word
        ]
    base = base_image or _default_base(kind, lock, entry.lock_path)
    if kind == "uv" and conda_image:
        raise WorkbenchError(f"--conda-image: env '{app.env}' is a uv env ({entry.lock_path})")
    engine = _fronted_engine(project, app)
    model = model_of(project, engine or app, model_mode, LAYOUT.models, warnings)
    states = f"{LAYOUT.state}/services"
    site = launch.InImage(project, LAYOUT.python, LAYOUT.root, states, model.value, lock.body_hash)
    services = [launch.app(project, app, site, "127.0.0.1", app.port)]
    if engine is not None:  # first: the app reaches it as http://127.0.0.1:{port:ENGINE}
        services.insert(0, launch.engine(project, engine, site, "127.0.0.1", engine.port))
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
        pip_options=pip_options,
        git_commit=commit,
        git_dirty=dirty,
        warnings=warnings,
        engine=engine.name if engine else None,
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


def _fronted_engine(project: Project, app: AppEntry) -> EngineEntry | None:
    """The engine the app fronts, which its image runs too; an image holds one env."""
    if app.engine is None:
        return None
    engine = project.engine(app.engine)
    if engine.env != app.env:
        raise WorkbenchError(
            f"app '{app.name}' fronts engine '{engine.name}' of env '{engine.env}', and an "
            f"image holds one env ('{app.env}'): serve the engine from the app's env to image "
            "them together"
        )
    return engine


# --- building, linting, SBOM ----------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    id: str
    tag: str
    seconds: float
    size: int
    labels: dict[str, str]


def build(recipe: Recipe, context: Context, builder: Builder, progress: Progress) -> Built:
    """Build the image and record it in image.json. The image that held the tag before is
    removed once it has no tag left (with the layers only it used, a baked model's among
    them), unless a container uses it."""
    previous = builder.image_id(recipe.tag)
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
    try:
        image = builder.build(request, progress)
    except WorkbenchError as exc:
        unreachable = registry_unreachable(exc.message, recipe.base, builder.name, request.log)
        raise WorkbenchError(unreachable or exc.message) from None
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
    if previous and not image.startswith(previous):
        builder.remove_if_untagged(previous)
    return built


# How podman, buildah and docker say that the registry of an image cannot be reached.
UNREACHABLE = re.compile(
    r"(?:pinging container registry|failed to resolve source metadata for|error pulling "
    r"image|initializing source docker://)\S*\s*(?P<host>[\w.-]+\.[\w.-]+(?::\d+)?)?.*?"
    r"(?P<why>no such host|i/o timeout|connection refused|network is unreachable|"
    r"Temporary failure in name resolution|TLS handshake timeout|no route to host)",
    re.S,
)


def registry_unreachable(output: str, base: str, builder: str, log: Path) -> str | None:
    """What to do when the build failed only because the base image's registry cannot be
    reached (common on research clusters): None for any other failure."""
    match = UNREACHABLE.search(output)
    if match is None:
        return None
    host = re.search(r"lookup ([\w.-]+)|registry ([\w.-]+\.[\w.-]+)", output)
    where = (host[1] or host[2]) if host else (match["host"] or "its registry")
    mirror = (
        'to /etc/docker/daemon.json ("registry-mirrors")'
        if builder == "docker"
        else "to registries.conf (a [[registry]] with a [[registry.mirror]], in "
        "~/.config/containers/registries.conf)"
    )
    return (
        f"{builder} cannot pull the base image {base}: this server cannot reach {where} "
        f"({match['why']}). Ways on: pass --base-image with an image this server already "
        f"has (`{builder} images` lists them; one can be made without a registry with "
        f"debootstrap and `{builder} import`), or add a registry mirror you can reach "
        f"{mirror}; build log: {log}"
    )


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
    ports: dict[str, int]  # every service of the image: the app's, its engine's


def volumes(recipe: Recipe) -> list[str]:
    """What a run of the image mounts: the model folder, read-only, when it is not baked in;
    refused when the container's user could not read it."""
    model = recipe.model
    if model.mode != "mount" or model.source is None:
        return []
    hidden = unreadable(model.source)
    if hidden:
        raise WorkbenchError(
            f"{hidden[0]} is not readable by others, so not by the container's user: "
            f"chmod -R a+rX {model.source}, or build with --model bake"
        )
    return [f"{model.source}:{model.target}:ro"]


def start(
    recipe: Recipe,
    image: str,
    builder: Builder,
    mounts: list[str],
    port: int | None,
    timeout: float,
) -> Running:
    """Run image on the host network, bound to 127.0.0.1, and wait until every service in
    it is healthy; the container is replaced if it exists, and stopped if it fails."""
    runner = builders.runner(builder)
    app = recipe.app
    name = container_name(recipe.project, app)
    runner.remove_container(name)  # this app's container from an earlier --run, and its port
    port = port or net.pick_port(app.port, "127.0.0.1")
    if not net.port_is_free(port):
        raise WorkbenchError(f"port {port} is in use")
    ports = {app.name: port}
    for service in recipe.services:  # the host's ports are the container's (host network)
        if service.name not in ports:
            ports[service.name] = net.pick_port(service.port, "127.0.0.1", set(ports.values()))
    env = {launcher.port_variable(name): str(number) for name, number in ports.items()}
    started = time.monotonic()
    container = runner.run_detached(image, name, env, mounts)
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
    return Running(name, container, f"http://127.0.0.1:{port}/", port, seconds, ports)
