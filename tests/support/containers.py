"""Podman for tests: system packages, a private config and storage, and a Debian base image.

What this machine taught (podman 4.3.1 from Debian, no image registry reachable):
- containers.conf needs `runtime = "runc"` (crun: "cgroups in hybrid mode not supported") and
  `default_ulimits` with nofile at most 20000 (podman asks 1048576: "setrlimit RLIMIT_NOFILE").
- Storage, config and temp files all live under one cache root: the base image survives between
  test runs, nothing under /etc is touched, and no test can see or remove someone else's images
  in /var/lib/containers/storage. (As root, podman 4.3 still keeps its small blob digest cache
  in /var/lib/containers/cache; no setting moves it.)
- Build-time files reach a RUN step through `--secret` and `--build-context` +
  `RUN --mount=type=bind,from=...`; `podman build --volume` leaves its mount points (empty dirs
  and files) in every RUN layer of every stage, and the layer cache does not key on volumes.
- HEALTHCHECK needs `--format docker` (OCI image configs drop it); without systemd, podman logs
  an error per container for the healthcheck timer unless DISABLE_HC_SYSTEMD=true.
"""

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest

from workbench.envs import pipconfig
from workbench.subprocesses import last_lines

BASE_IMAGE = "localhost/workbench-base:bookworm-py311"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "tini")
DEFAULT_MIRRORS = ("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# command -> Debian package; uidmap only matters without root (newuidmap for user namespaces)
TOOLS = {"podman": "podman", "buildah": "buildah", "runc": "runc", "debootstrap": "debootstrap"}
ROOTLESS_TOOLS = {"newuidmap": "uidmap"}
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])


class ContainerError(RuntimeError):
    """A command failed; the message names it and ends with its last output lines."""


class ContainersUnavailable(RuntimeError):
    """Podman cannot be installed or run on this machine (tests skip with this reason)."""


def run(
    cmd: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd with a timeout; raise ContainerError naming it and its last output lines."""
    argv = [str(c) for c in cmd]
    shown = shlex.join(argv)
    try:
        proc = subprocess.run(
            argv,
            env=None if env is None else {**os.environ, **env},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise ContainerError(f"`{shown}`: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stderr) or _text(exc.stdout)
        tail = last_lines(output) or "(no output)"
        raise ContainerError(f"`{shown}` timed out after {timeout:.0f} s: {tail}") from exc
    if proc.returncode != 0:
        tail = last_lines(proc.stderr) or last_lines(proc.stdout) or "(no output)"
        raise ContainerError(f"`{shown}` failed (exit {proc.returncode}): {tail}")
    return proc


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def run_podman(env: Mapping[str, str], *args: str | Path, timeout: float = 120) -> str:
    """`podman ARGS` with the env from podman_env(); returns its stdout, stripped."""
    return run(["podman", *args], env=env, timeout=timeout).stdout.strip()


# --- system packages -----------------------------------------------------------------------


def missing_packages() -> list[str]:
    """Debian packages whose commands are missing here (uidmap only when not root)."""
    tools = TOOLS | ({} if os.geteuid() == 0 else ROOTLESS_TOOLS)
    return [pkg for cmd, pkg in tools.items() if not shutil.which(cmd, path=SBIN_PATH)]


def sudo() -> list[str]:
    """The prefix that runs a command as root: nothing for root, `sudo -n` otherwise."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10)
        if probe.returncode == 0:
            return ["sudo", "-n"]
    raise ContainersUnavailable("this needs root, and passwordless sudo is not available")


@cache
def _apt_update() -> None:
    """`apt-get update`, once per process."""
    run([*sudo(), "apt-get", "update", "-qq"], timeout=300)


def ensure_podman() -> None:
    """Install podman, buildah, runc and debootstrap from Debian when any is missing."""
    missing = missing_packages()
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise ContainersUnavailable(f"{', '.join(missing)} missing and no apt-get to install")
    _apt_update()
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    try:
        run([*sudo(), "env", "DEBIAN_FRONTEND=noninteractive", *install], timeout=600)
    except ContainerError as exc:
        raise ContainersUnavailable(str(exc)) from exc


# --- configuration ------------------------------------------------------------------------

CONTAINERS_CONF = """\
# Written by tests/support/containers.py. With CONTAINERS_CONF set, podman reads only this file.
[containers]
# podman asks nofile=1048576 by default; root here cannot raise it above 20000
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
# containers and build steps share the host network unless told otherwise: nothing lands on
# the 10.88.0.0/16 bridge; services bind 127.0.0.1
netns = "host"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{run}/events.log"
tmp_dir = "{run}/libpod"
"""

STORAGE_CONF = """\
# Written by tests/support/containers.py (CONTAINERS_STORAGE_CONF).
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{run}/storage"
"""

# No registry is reachable: a short name fails at once instead of waiting on timeouts.
REGISTRIES_CONF = """\
unqualified-search-registries = []
short-name-mode = "enforcing"
"""


def cache_root() -> Path:
    """Where the tests' podman config, storage and caches live: XDG cache/workbench/containers."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "workbench" / "containers"


def podman_env(root: Path) -> dict[str, str]:
    """Write containers.conf, storage.conf and registries.conf under root; return the env
    vars that make podman and buildah use them (merge them over os.environ)."""
    run_dir = root / "run"
    _forget_previous_boot(run_dir)
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    files = {
        "CONTAINERS_CONF": ("containers.conf", CONTAINERS_CONF.format(run=run_dir)),
        "CONTAINERS_STORAGE_CONF": ("storage.conf", STORAGE_CONF.format(root=root, run=run_dir)),
        "CONTAINERS_REGISTRIES_CONF": ("registries.conf", REGISTRIES_CONF),
    }
    env = {}
    for var, (name, text) in files.items():
        (conf / name).write_text(text)
        env[var] = str(conf / name)
    # TMPDIR: big temporary files and RUN --mount=type=cache folders (buildah-cache)
    return env | {"TMPDIR": str(root / "tmp"), "DISABLE_HC_SYSTEMD": "true"}


def _forget_previous_boot(run_dir: Path) -> None:
    """Empty run_dir after a reboot: it holds mount and container state that a reboot ends
    (on a tmpfs it would vanish by itself; /run is not a tmpfs on every machine)."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    stamp = run_dir / "boot_id"
    if stamp.exists() and stamp.read_text().strip() != boot_id:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(boot_id)


# --- the base image -----------------------------------------------------------------------

SETUP_SCRIPT = """\
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
printf 'deb %s {suite} main\\ndeb %s {suite}-updates main\\ndeb %s {suite}-security main\\n' \\
  '{archive}' '{archive}' '{security}' > /etc/apt/sources.list
printf 'path-exclude %s\\n' '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' \\
  '/usr/share/locale/*' '/usr/share/groff/*' '/usr/share/lintian/*' > /etc/dpkg/dpkg.cfg.d/slim
echo 'path-include /usr/share/doc/*/copyright' >> /etc/dpkg/dpkg.cfg.d/slim
apt-get update -qq
apt-get upgrade -y -qq
apt-get install -y -qq --no-install-recommends {packages}
apt-get clean
find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /var/lib/apt/lists/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \\
  /usr/share/groff/* /usr/share/lintian/* /var/log/*.log /var/log/apt/* \\
  /var/cache/debconf/*-old /var/lib/dpkg/*-old /etc/hostname
: > /etc/resolv.conf
"""

IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
    "LABEL org.opencontainers.image.title=workbench-base",
    f"LABEL org.opencontainers.image.description="
    f'"Debian {SUITE} minbase + {" ".join(BASE_PACKAGES)}, built by debootstrap"',
)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    digest: str
    size: int  # bytes, unpacked


def image_info(env: Mapping[str, str], ref: str) -> ImageInfo:
    """ID, digest and unpacked size of a local image."""
    data = json.loads(run_podman(env, "image", "inspect", ref))[0]
    return ImageInfo(id=data["Id"], digest=data["Digest"], size=int(data["Size"]))


def debian_mirrors(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian archive and security mirrors this machine's apt uses for SUITE
    (deb.debian.org where it has none)."""
    archive, security = DEFAULT_MIRRORS
    for uri, suites in reversed(list(_apt_sources(apt_dir))):
        if SUITE in suites:
            archive = uri
        if f"{SUITE}-security" in suites:
            security = uri
    return archive.rstrip("/"), security.rstrip("/")


def _apt_sources(apt_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of every `deb` source, from one-line .list and deb822 .sources files."""
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]:
        if path.suffix == ".sources":
            for fields in _deb822(path.read_text()):
                if "deb" in fields.get("Types", "").split():
                    for uri in fields.get("URIs", "").split():
                        yield uri, fields.get("Suites", "").split()
        elif path.name.endswith(".list") and path.is_file():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]]


def _deb822(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a deb822 file as {field: value} (continuation lines skipped)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            key, colon, value = line.partition(":")
            if colon and not line.startswith("#") and not line[:1].isspace():
                fields[key.strip()] = value.strip()
        yield fields


def image_exists(env: Mapping[str, str], ref: str) -> bool:
    """Whether ref names an image in the storage of env."""
    cmd = ["podman", "image", "exists", ref]
    return subprocess.run(cmd, env={**os.environ, **env}, timeout=60).returncode == 0


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on path: one base image build per machine at a time."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_base_image(env: Mapping[str, str]) -> str:
    """Build BASE_IMAGE once (debootstrap + python3, python3-venv, ca-certificates, tini,
    imported with podman) into the storage of env; return its reference."""
    if image_exists(env, BASE_IMAGE):
        return BASE_IMAGE
    tmp = Path(env["TMPDIR"])
    with _locked(tmp / "base-image.lock"):
        if image_exists(env, BASE_IMAGE):
            return BASE_IMAGE
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=tmp, prefix="base-") as work:
            try:
                tarball = _build_rootfs(Path(work), debs=tmp / "debootstrap-debs")
                changes = [arg for change in IMAGE_CHANGES for arg in ("--change", change)]
                run_podman(env, "import", *changes, tarball, BASE_IMAGE, timeout=300)
            finally:
                run([*sudo(), "rm", "-rf", Path(work) / "rootfs"], timeout=120)
    info = image_info(env, BASE_IMAGE)
    print(
        f"built {BASE_IMAGE} in {time.monotonic() - started:.1f} s: "
        f"{info.size / 1e6:.0f} MB, {info.digest}",
        file=sys.stderr,
    )
    return BASE_IMAGE


def _build_rootfs(work: Path, debs: Path) -> Path:
    """debootstrap a minbase rootfs under work, add BASE_PACKAGES, slim it; return its tar."""
    archive, security = debian_mirrors()
    rootfs, tarball = work / "rootfs", work / "rootfs.tar"
    debs.mkdir(exist_ok=True)
    as_root = sudo()
    run(
        [*as_root, "debootstrap", "--variant=minbase", f"--cache-dir={debs}"]
        + [SUITE, rootfs, archive],
        timeout=900,
    )
    script = SETUP_SCRIPT.format(
        suite=SUITE, archive=archive, security=security, packages=" ".join(BASE_PACKAGES)
    )
    run([*as_root, "chroot", rootfs, "sh", "-c", script], timeout=900)
    run([*as_root, "tar", "--numeric-owner", "-C", rootfs, "-cf", tarball, "."], timeout=300)
    return tarball


# --- pip configuration for builds ---------------------------------------------------------


def host_ca_bundle() -> Path:
    """The CA bundle this machine's TLS clients trust (it includes any intercepting proxy's CA)."""
    return Path(os.environ.get("SSL_CERT_FILE") or HOST_CA_BUNDLE)


def pip_local_dirs(config: pipconfig.PipConfig) -> list[Path]:
    """Host folders pip reads for this config, to bind-mount at the same path in a build:
    find-links folders, local index roots (the folder above `simple/`, as index pages link
    to ../../files/) and the folders of constraint files."""
    found: set[Path] = set()
    for link in config.find_links:
        path = _local_path(link)
        if path and path.exists():
            found.add(path if path.is_dir() else path.parent)
    for url in (config.index_url, *config.extra_index_urls):
        path = _local_path(url)
        if path and path.is_dir():
            found.add(path.parent if path.name == "simple" else path)
    for constraint in config.constraints:
        path = _local_path(constraint)
        if path and path.is_file():
            found.add(path.parent)
    return sorted(p for p in found if not any(other in p.parents for other in found))


def _local_path(location: str | None) -> Path | None:
    """The absolute local path of a file:// URL or a plain path; None for anything remote."""
    if not location:
        return None
    if location.startswith("file:"):
        return Path(urlparse(location).path)
    return None if "://" in location or not location.startswith("/") else Path(location)


# --- pytest fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def podman() -> dict[str, str]:
    """Env vars for podman/buildah with the tests' config and storage under cache_root();
    skips where podman cannot be installed or run."""
    try:
        ensure_podman()
        env = podman_env(cache_root())
        run_podman(env, "info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    except (ContainersUnavailable, ContainerError) as exc:
        pytest.skip(f"podman cannot run here: {exc}")
    return env


@pytest.fixture(scope="session")
def base_image(podman: dict[str, str]) -> str:
    """BASE_IMAGE in the tests' storage, built on first use (about a minute, then cached)."""
    try:
        return ensure_base_image(podman)
    except ContainersUnavailable as exc:
        pytest.skip(f"cannot build {BASE_IMAGE}: {exc}")
