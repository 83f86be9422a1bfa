"""Building, locking, checking and removing project envs.

Every build goes to its own prefix, .workbench/builds/NAME-<build id>-<nonce>, named
by what it was built from (spec hash, backend, lock hash). .workbench/envs/NAME is a
symlink to the active build and is replaced atomically only after a build succeeded,
so a failed or killed build never touches the env and kernel in use. A build is
complete once its record (workbench-env.json) exists; the record is written last.
"""

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import workbench
from workbench import project as projects
from workbench.envs import backends, gpu_check, kernels, locks, stamps
from workbench.envs import spec as specs
from workbench.envs.backends import Progress
from workbench.envs.backends.uv import UvOptions
from workbench.envs.gpu_check import GpuCheck
from workbench.errors import WorkbenchError
from workbench.jsonfiles import StateFile
from workbench.manifest import MANIFEST
from workbench.project import EnvEntry, Project
from workbench.runtime import contract
from workbench.subprocesses import run

RECORD = "workbench-env.json"
STORE_DAYS = 30  # a .pyc in the bytecode store that no env links is kept this long
TRASH = ".trash-"  # builds being deleted: .trash-NAME-<build id>-<nonce>


@dataclass
class EnvRecord(StateFile):
    """What a build was made from and what it holds, read back instead of guessed."""

    env: str
    backend: str
    build_id: str
    spec_hash: str
    lock_hash: str
    from_lock: bool
    python: str
    python_version: str
    packages: int
    created: float
    seconds: float

    @classmethod
    def of(cls, prefix: Path) -> "EnvRecord | None":
        """The record of the build at prefix; None while it is incomplete."""
        return cls.read(prefix / RECORD)


@dataclass
class FailedBuild(StateFile):
    """The one-line error of an env's last failed build, kept so that what needs the env
    later says why it is missing and which flag gets past it, not just "not built"."""

    env: str
    error: str
    spec_hash: str
    failed: float

    @staticmethod
    def path(project: Project, name: str) -> Path:
        return project.state_dir / "failed-builds" / f"{name}.json"

    @property
    def flags(self) -> list[str]:
        """The `env create` flags the error names (e.g. --nearest-python)."""
        return list(dict.fromkeys(re.findall(r"\bpass (--[a-z][a-z-]+)", self.error)))


@dataclass
class CreateResult:
    env: str
    status: str  # "unchanged", "reactivated" or "built"
    record: EnvRecord
    prefix: Path
    kernel: kernels.KernelSpec | None
    warnings: list[str]
    gpu_check: GpuCheck | None = None

    def to_json(self) -> dict:
        return {
            "env": self.env,
            "status": self.status,
            "prefix": str(self.prefix),
            "kernel": self.kernel.name if self.kernel else None,
            "record": self.record.to_json(),
            "warnings": self.warnings,
            "gpu": None if self.gpu_check is None else asdict(self.gpu_check),
        }


def build_id(spec_hash: str, backend: str, lock_hash: str | None) -> str:
    key = f"{spec_hash}\n{backend}\n{lock_hash or 'resolved'}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def active_prefix(project: Project, name: str) -> Path | None:
    """The active build of env name, or None when it has none (or it is incomplete)."""
    link = project.active_dir / name
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if EnvRecord.of(target) else None


def fresh_lock(entry: EnvEntry, spec: specs.EnvSpec, backend: str) -> locks.Lock | None:
    """The committed lock if it was made from this very spec, backend and platform."""
    if not entry.lock_path.is_file():
        return None
    lock = locks.read(entry.lock_path)
    fresh = (
        lock.spec_hash == spec.content_hash()
        and lock.backend == backend
        and lock.platform in ("", locks.this_platform())
    )
    return lock if fresh else None


def create(
    project: Project,
    name: str,
    *,
    backend_name: str | None = None,
    locked: bool = False,
    force: bool = False,
    user: bool = False,
    options: UvOptions | None = None,
    progress: Progress = lambda _msg: None,
) -> CreateResult:
    """Build env name (or reuse an identical build) and register its kernel.

    A second create of the same env waits for the first (saying who holds it) and then
    finds the env built. With locked, an env that drifted from its lock is rebuilt from
    it, even when the spec did not change."""
    entry = project.env(name)
    spec = specs.load(entry.spec_path, entry.name)
    backend = backends.for_spec(spec, backend_name, options)
    lock = fresh_lock(entry, spec, backend.name)
    if locked and lock is None:
        if not entry.lock_path.is_file():
            raise WorkbenchError(
                f"--locked: {entry.lock_path} does not exist; run `workbench env lock {name}`"
            )
        raise WorkbenchError(
            f"--locked: {entry.lock_path} is stale (the spec or backend changed since it was "
            f"written); run `workbench env lock {name}`"
        )
    use_cache_dir(project)
    spec_hash = spec.content_hash()
    bid = build_id(spec_hash, backend.name, lock.body_hash if lock else None)

    if not force:
        current = _current(project, entry, spec, backend, bid, lock if locked else None, user)
        if current is not None:
            return current
    with _build_lock(project, name, progress):
        active = active_prefix(project, name)
        if not force:
            # Built by the process we waited for, or drifted from the lock (--locked).
            current = _current(project, entry, spec, backend, bid, lock if locked else None, user)
            if current is not None:
                return current
        drifted = locked and active is not None and EnvRecord.of(active).build_id == bid
        reuse = not force and not drifted
        previous = _complete_build(project, name, bid) if reuse else None
        if previous is not None:
            record = EnvRecord.of(previous)
            status = "reactivated"
            prefix = previous
            warnings = list(spec.warnings)
        else:
            if drifted:
                progress(f"the env drifted from {entry.lock_path.name}: reinstalling it exactly")
            failure_file = FailedBuild.path(project, name)
            try:
                plan = backend.plan(spec)
                plan.gpus = entry.gpu_request
                prefix, record = _build(
                    project, entry, spec, backend, plan, lock, bid, active, progress
                )
            except WorkbenchError as exc:
                failure_file.parent.mkdir(parents=True, exist_ok=True)
                FailedBuild(name, exc.message, spec_hash, time.time()).write(failure_file)
                raise
            failure_file.unlink(missing_ok=True)
            status = "built"
            warnings = plan.warnings
        link_runtime(project, prefix)
        _activate(project, name, prefix)
        kernel = _register(project, entry, spec, record, prefix, user)
        gpu = None
        if entry.gpu_request:
            python, kernel_env = kernels.python_command(kernel)  # as the kernel starts it
            gpu = gpu_check.check(python, entry.gpu_request, kernel_env)
        if gpu is not None and gpu.skipped:
            warnings = [*warnings, f"{name}: {gpu.message}"]
        _remove_old_builds(project, name, keep=prefix, previous=active)
    return CreateResult(name, status, record, prefix, kernel, warnings, gpu)


def _current(
    project: Project,
    entry: EnvEntry,
    spec: specs.EnvSpec,
    backend: backends.Backend,
    bid: str,
    lock: locks.Lock | None,
    user: bool,
) -> CreateResult | None:
    """The "unchanged" result when the active build is bid (and, given the lock, still
    holds exactly it); None when a build is needed."""
    active = active_prefix(project, entry.name)
    record = EnvRecord.of(active) if active else None
    if record is None or record.build_id != bid:
        return None
    if lock is not None and locks.diff(lock.packages(), backend.installed(active)):
        return None
    link_runtime(project, active)
    # rewritten every time (a small file): the manifest's GPUs may have changed, not the spec
    kernel = _register(project, entry, spec, record, active, user)
    return CreateResult(entry.name, "unchanged", record, active, kernel, list(spec.warnings))


def stamp(project: Project, result: CreateResult, shown: Callable[[CreateResult], str]) -> None:
    """Keep what a plain `env create` of result's env would decide on now, with its
    unchanged result (shown: how the console shows that), for workbench.envs.stamps.

    The world is observed first, then read again: the stamp is kept only when the
    manifest, spec and lock read after observing give the active build's id, so a file
    that changed meanwhile leaves no stamp. An env with GPUs gets none (its create checks
    the GPUs every time), nor does a pip-only env (its python= may come from other files).
    A stamp is only a shortcut: what keeps one from being written leaves the full path."""
    with contextlib.suppress(WorkbenchError, OSError):
        _stamp(project, result, shown)


def _stamp(project: Project, result: CreateResult, shown: Callable[[CreateResult], str]) -> None:
    name = result.env
    stamps.remove(project.root, name)
    entry = project.env(name)
    seen = specs.load(entry.spec_path, name)
    prefix = active_prefix(project, name)
    if entry.gpu_request or seen.requirements_file or prefix is None or result.kernel is None:
        return
    world = stamps.observe(
        files=[
            project.root / MANIFEST,
            entry.spec_path,
            *seen.included_files,
            entry.lock_path,
            prefix / RECORD,
            result.kernel.path / "kernel.json",
            *prefix.glob("lib/python3*/site-packages/_workbench_runtime.pth"),
        ],
        folders=[project.root / "envs"],
        links=[project.active_dir / name, *_runtime_links(project)],
        variables=[contract.BACKEND.name],
        tools=backends.CONDA_FAMILY,
    )
    again = projects.load(project.root)
    spec = specs.load(entry.spec_path, name)
    backend = backends.for_spec(spec)
    lock = fresh_lock(entry, spec, backend.name)
    bid = build_id(spec.content_hash(), backend.name, lock.body_hash if lock else None)
    record = EnvRecord.of(prefix)
    if (
        not stamps.holds(world)  # read in between: what was observed
        or world["links"][str(project.active_dir / name)] != str(prefix)
        or again.name != project.name
        or again.envs.get(name) != entry
        or spec.included_files != seen.included_files
        or record is None
        or record.build_id != bid
    ):
        return
    unchanged = CreateResult(name, "unchanged", record, prefix, result.kernel, list(spec.warnings))
    stamps.write(project.root, name, world, unchanged.to_json(), shown(unchanged))


def use_cache_dir(project: Project) -> Path | None:
    """Point uv and conda at the project's shared package cache, if one is configured:
    UV_CACHE_DIR=CACHE/uv, CONDA_PKGS_DIRS=CACHE/conda-pkgs. The folders are group-writable
    and setgid, and this process's umask lets the group write what it adds, so everyone
    in the group shares one download of each package."""
    cache = project.cache_dir
    if cache is None:
        return None
    folders = {"UV_CACHE_DIR": cache / "uv", "CONDA_PKGS_DIRS": cache / "conda-pkgs"}
    os.umask(os.umask(0) & ~0o070)
    for variable, folder in folders.items():
        for path in (cache, folder):
            try:
                path.mkdir(parents=True, exist_ok=True)
                if path.stat().st_uid == os.getuid():
                    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o2070)
            except OSError as exc:
                raise WorkbenchError(
                    f"cache_dir {cache}: cannot use {path}: {exc.strerror}; set "
                    "[project] cache_dir (or WORKBENCH_CACHE_DIR) to a folder you can write"
                ) from None
        os.environ[variable] = str(folder)
    return cache


def _build(
    project: Project,
    entry: EnvEntry,
    spec: specs.EnvSpec,
    backend: backends.Backend,
    plan: backends.Plan,
    lock: locks.Lock | None,
    bid: str,
    active: Path | None,
    progress: Progress,
) -> tuple[Path, EnvRecord]:
    project.builds_dir.mkdir(parents=True, exist_ok=True)
    prefix = project.builds_dir / f"{entry.name}-{bid}-{secrets.token_hex(3)}"
    started = time.time()
    try:
        installed_lock = backend.build(spec, plan, prefix, lock, progress)
        link_runtime(project, prefix)
        progress("compiling bytecode")
        _compile_bytecode(
            backend.python(prefix),
            prefix,
            _bytecode_donors(project, active),
            bytecode_store(project),
        )
        record = EnvRecord(
            env=entry.name,
            backend=backend.name,
            build_id=bid,
            spec_hash=spec.content_hash(),
            lock_hash=installed_lock.body_hash,
            from_lock=lock is not None,
            python=str(backend.python(prefix)),
            python_version=installed_lock.python or plan.python_version,
            packages=len(installed_lock.packages()),
            created=time.time(),
            seconds=round(time.time() - started, 2),
        )
        (prefix / "workbench-lock.txt").write_text(installed_lock.text())
        record.write(prefix / RECORD)
    except BaseException:
        shutil.rmtree(prefix, ignore_errors=True)
        raise
    return prefix, record


def _compile_bytecode(python: Path, prefix: Path, donors: list[Path], store: Path) -> None:
    """Compile bytecode (imports are much slower without it), reusing the .pyc of the
    store and of the donors."""
    _prune_store(store)
    for site in sorted(prefix.glob("lib/python3*/site-packages")):
        old_sites = [str(donor / site.relative_to(prefix)) for donor in donors]
        run(
            [python, "-I", "-m", "workbench.runtime.bytecode", "--store", store, site, *old_sites],
            what="compiling bytecode",
        )


def bytecode_store(project: Project) -> Path:
    """Where every build keeps the .pyc of sources it shares with uv's cache, for the
    next build of any project to link (see workbench.runtime.bytecode): in the shared
    cache when the project has one, else in the user's cache folder."""
    if project.cache_dir is not None:
        return project.cache_dir / "bytecode"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "workbench/bytecode"


def _prune_store(store: Path) -> None:
    """Once a day, delete the store's .pyc that no env has linked for STORE_DAYS (their
    sources may be gone from uv's cache for good: nothing else would remove them)."""
    marker = store / ".pruned"
    now = time.time()
    with contextlib.suppress(OSError):
        if now - marker.stat().st_mtime < 86400:
            return
    with contextlib.suppress(OSError):
        store.mkdir(parents=True, exist_ok=True)
        marker.touch()
    for pyc in store.glob("*/*/*.pyc"):
        with contextlib.suppress(OSError):
            info = pyc.stat()
            if info.st_nlink == 1 and now - info.st_ctime > STORE_DAYS * 86400:
                pyc.unlink()


def _bytecode_donors(project: Project, active: Path | None) -> list[Path]:
    """Complete builds whose .pyc may be reused: this env's active build first."""
    others = [
        p
        for p in sorted(project.builds_dir.iterdir())
        if p.is_dir() and p != active and EnvRecord.of(p) is not None
    ]
    return ([active] if active else []) + others


def link_runtime(project: Project, prefix: Path) -> None:
    """Let code in the env import workbench.runtime (and `from workbench import record`):
    .workbench/pylib/workbench links this package's stdlib-only __init__.py and runtime/,
    and a .pth file in the env's site-packages names .workbench/pylib."""
    for link, target in _runtime_links(project).items():
        _symlink(link, target)
    for site in prefix.glob("lib/python3*/site-packages"):
        pth = site / "_workbench_runtime.pth"
        if not pth.is_file() or pth.read_text().strip() != str(project.pylib_dir):
            pth.write_text(f"{project.pylib_dir}\n")


def _runtime_links(project: Project) -> dict[Path, Path]:
    """The links of .workbench/pylib/workbench, each to what it leads to."""
    package = Path(workbench.__file__).resolve().parent
    names = ("__init__.py", "runtime")
    return {project.pylib_dir / "workbench" / name: package / name for name in names}


def _symlink(link: Path, target: Path) -> None:
    """link -> target, replaced atomically when it points elsewhere."""
    if link.is_symlink() and link.resolve() == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}-{secrets.token_hex(3)}")
    tmp.symlink_to(target)
    tmp.replace(link)


def _activate(project: Project, name: str, prefix: Path) -> None:
    project.active_dir.mkdir(parents=True, exist_ok=True)
    link = project.active_dir / name
    tmp = project.active_dir / f".{name}.{secrets.token_hex(3)}"
    tmp.symlink_to(os.path.relpath(prefix, project.active_dir))
    tmp.replace(link)


def _register(
    project: Project,
    entry: EnvEntry,
    spec: specs.EnvSpec,
    record: EnvRecord,
    prefix: Path,
    user: bool,
) -> kernels.KernelSpec:
    return kernels.register(
        project,
        entry.name,
        python=prefix / "bin" / "python",
        python_version=record.python_version,
        variables=spec.variables,
        gpus=entry.gpus,
        gpu_count=entry.gpu_count,
        launcher=backends.get(record.backend).run_python(prefix),
        metadata={
            "spec_hash": record.spec_hash,
            "lock_hash": record.lock_hash,
            "backend": record.backend,
            "build_id": record.build_id,
        },
        user=user,
    )


def _builds(project: Project, name: str) -> list[Path]:
    if not project.builds_dir.is_dir():
        return []
    return [
        p for p in project.builds_dir.iterdir() if p.name.rsplit("-", 2)[0] == name and p.is_dir()
    ]


def _complete_build(project: Project, name: str, bid: str) -> Path | None:
    for prefix in _builds(project, name):
        record = EnvRecord.of(prefix)
        if record and record.build_id == bid:
            return prefix
    return None


def _remove_old_builds(project: Project, name: str, keep: Path, previous: Path | None) -> None:
    """Delete incomplete builds and all complete ones but the active and the previous.

    Each is renamed out of the way at once and deleted by a detached `rm`: an env holds
    tens of thousands of files, and the command need not wait for them to go. Trash an
    earlier `rm` left (killed with its terminal) goes with it."""
    doomed = sorted(project.builds_dir.glob(f"{TRASH}{name}-*"))
    for prefix in _builds(project, name):
        if prefix in (keep, previous):
            continue
        trash = prefix.with_name(f"{TRASH}{prefix.name}")
        with contextlib.suppress(OSError):
            prefix.rename(trash)
            doomed.append(trash)
    if doomed:
        subprocess.Popen(
            ["rm", "-rf", "--", *map(str, doomed)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


@contextlib.contextmanager
def _build_lock(
    project: Project, name: str, progress: Progress = lambda _msg: None
) -> Iterator[None]:
    """One build of an env at a time. A second waits, saying who holds the lock (pid,
    user, host, since when: the holder writes it into the lock file)."""
    project.builds_dir.mkdir(parents=True, exist_ok=True)
    path = project.builds_dir / f".{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(fd, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for {_holder(path)}, which is building env '{name}'")
            fcntl.flock(handle, fcntl.LOCK_EX)
        holder = {
            "pid": os.getpid(),
            "user": _user(),
            "host": socket.gethostname(),
            "since": time.time(),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        yield


def _holder(path: Path) -> str:
    """Who holds a build lock, as its holder wrote it."""
    try:
        holder = json.loads(path.read_text())
        since = time.strftime("%H:%M:%S", time.localtime(holder["since"]))
        return f"pid {holder['pid']} ({holder['user']}@{holder['host']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another workbench process"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def lock(
    project: Project,
    name: str,
    backend_name: str | None,
    progress: Progress,
    options: UvOptions | None = None,
) -> locks.Lock:
    """Resolve env name exactly and write its lock beside the spec."""
    entry = project.env(name)
    spec = specs.load(entry.spec_path, entry.name)
    backend = backends.for_spec(spec, backend_name, options)
    use_cache_dir(project)
    plan = backend.plan(spec)
    new = backend.lock(spec, plan, active_prefix(project, name), progress)
    new.write(entry.lock_path)
    return new


@dataclass
class CheckResult:
    env: str
    drift: locks.Drift
    lock_stale: bool

    def to_json(self) -> dict:
        return {
            "env": self.env,
            "drift": bool(self.drift),
            "lock_stale": self.lock_stale,
            **self.drift.to_json(),
        }


def check(project: Project, name: str) -> CheckResult:
    """Compare the committed lock with what the active build holds."""
    entry = project.env(name)
    prefix = require_built(project, name)
    lock_file = locks.read(entry.lock_path)
    record = EnvRecord.of(prefix)
    installed = backends.get(record.backend).installed(prefix)
    spec = specs.load(entry.spec_path, entry.name)
    return CheckResult(
        name,
        locks.diff(lock_file.packages(), installed),
        lock_stale=lock_file.spec_hash != spec.content_hash(),
    )


def require_built(project: Project, name: str) -> Path:
    project.env(name)
    prefix = active_prefix(project, name)
    if prefix is None:
        raise WorkbenchError(not_built(project, name))
    return prefix


def not_built(project: Project, name: str) -> str:
    """Why env name has no build and the command that builds it: with the error of its
    last failed build (while the spec is unchanged) and the flags that error names."""
    failed = FailedBuild.read(FailedBuild.path(project, name))
    try:
        current = specs.load(project.env(name).spec_path, name).content_hash()
    except WorkbenchError:
        current = None
    if failed is None or failed.spec_hash != current:
        return f"env '{name}' is not built; run `workbench env create {name}`"
    command = " ".join(["workbench env create", name, *failed.flags])
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(failed.failed))
    return f"env '{name}' is not built: its last build ({when}) failed: {failed.error}; " + (
        f"`{command}` gets past that" if failed.flags else f"fix that, then `{command}`"
    )


def python_command(project: Project, name: str) -> list[str]:
    """What starts env name's python as its kernels start it: activated in conda-family
    envs (activate.d scripts, PATH, CONDA_PREFIX), the interpreter itself in uv envs."""
    prefix = require_built(project, name)
    return backends.get(EnvRecord.of(prefix).backend).run_python(prefix)


def remove(project: Project, name: str) -> list[Path]:
    """Delete every build of env name, its active link and its kernelspecs."""
    project.env(name)
    removed = _builds(project, name)
    with _build_lock(project, name):
        stamps.remove(project.root, name)
        (project.active_dir / name).unlink(missing_ok=True)
        for prefix in removed:
            shutil.rmtree(prefix, ignore_errors=True)
    for spec in kernels.listed(project):
        if spec.env == name:
            kernels.remove(spec)
    return removed


@dataclass
class EnvStatus:
    name: str
    spec: str
    built: bool
    lock: str  # "fresh", "stale" or "none"
    kernel: str | None
    record: EnvRecord | None
    prefix: Path | None
    gpus: tuple[str, ...] | None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "spec": self.spec,
            "built": self.built,
            "lock": self.lock,
            "kernel": self.kernel,
            "prefix": str(self.prefix) if self.prefix else None,
            "gpus": list(self.gpus) if self.gpus else None,
            "record": self.record.to_json() if self.record else None,
        }


def status(project: Project) -> list[EnvStatus]:
    """Every env of the project with its build, lock and kernel state; builds nothing."""
    registered = {k.env: k.name for k in kernels.listed(project) if k.env_exists}
    rows = []
    for name, entry in sorted(project.envs.items()):
        prefix = active_prefix(project, name)
        record = EnvRecord.of(prefix) if prefix else None
        rows.append(
            EnvStatus(
                name=name,
                spec=str(entry.spec_path.relative_to(project.root)),
                built=record is not None,
                lock=_lock_state(entry),
                kernel=registered.get(name),
                record=record,
                prefix=prefix,
                gpus=entry.gpus,
            )
        )
    return rows


def _lock_state(entry: EnvEntry) -> str:
    if not entry.lock_path.is_file():
        return "none"
    try:
        lock_file = locks.read(entry.lock_path)
        spec = specs.load(entry.spec_path, entry.name)
    except WorkbenchError:
        return "invalid"
    return "fresh" if lock_file.spec_hash == spec.content_hash() else "stale"
