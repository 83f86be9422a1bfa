"""Specs that travel: `env export` writes what an env's spec asked for, pinned to what its
lock holds; `env import` writes envs/NAME.yml from an env built elsewhere.

An export keeps the spec's channels, variables, options and local paths, pins each conda
and pip requirement to its locked version (a VCS requirement to its locked commit), and
drops build strings and the prefix, so it builds on another platform. An import reads a
conda env (by name or prefix, from its conda-meta records, without running conda), a venv
(its dist-info records) or a `conda env export` file, and pins every Python package it
holds, so building the result gives the same versions; non-Python conda packages are kept
only where the user asked for them (conda's history) or nothing else needs them.
"""

import ast
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from workbench.envs import builds, condamap, locks
from workbench.envs import spec as specs
from workbench.envs.platforms import platform_of
from workbench.envs.requirements import PipLine
from workbench.errors import WorkbenchError, excerpt
from workbench.jsonfiles import write_atomic
from workbench.manifest import ENV_NAME
from workbench.project import Project
from workbench.subprocesses import run

# Where conda installers put named envs, for `--from NAME` when no conda is on PATH.
CONDA_ROOTS = ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba", ".conda")
CONDA_TOOLS = ("conda", "mamba", "micromamba")
LOCK_FILE = "workbench-lock.txt"  # what a build holds, written beside its record


@dataclass
class Exported:
    env: str
    text: str
    source: str  # which lock the pins come from
    pinned: int
    unpinned: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "env": self.env,
            "source": self.source,
            "pinned": self.pinned,
            "unpinned": self.unpinned,
            "yaml": self.text,
        }


@dataclass
class Imported:
    env: str
    path: Path
    source: str
    kind: str  # "conda env", "venv" or "export file"
    conda: int
    pip: int
    dropped: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "env": self.env,
            "path": str(self.path),
            "source": self.source,
            "kind": self.kind,
            "conda": self.conda,
            "pip": self.pip,
            "dropped": self.dropped,
            "skipped": self.skipped,
        }


# --- export -----------------------------------------------------------------------------


def export(project: Project, name: str) -> Exported:
    """The env's spec, pinned to its active build's lock (else the committed lock)."""
    entry = project.env(name)
    spec = specs.load(entry.spec_path, entry.name)
    lock, source = _lock_for_export(project, name, entry.lock_path)
    locked = lock.packages()
    unpinned: list[str] = []
    deps: list[object] = []
    count = 0
    for dep in spec.conda:
        pinned = _pin_conda(dep, lock, locked)
        count += pinned is not None
        if pinned is None:
            unpinned.append(dep.text)
            pinned = _without_build(dep)
        deps.append(pinned)
    pip_lines = []
    for line in spec.pip:
        pinned = _pin_pip(line, lock, locked)
        count += pinned is not None
        if pinned is None and line.kind in ("requirement", "url"):
            unpinned.append(line.text.strip())
        pip_lines.append(pinned or line.text.strip())
    if pip_lines:
        deps.append({"pip": pip_lines})
    document: dict = {"name": spec.name}
    if spec.channels:
        document["channels"] = list(spec.channels)
    document["dependencies"] = deps
    if spec.variables:
        document["variables"] = spec.variables
    header = (
        f"# Exported by `workbench env export {name}` from {source} "
        f"({lock.backend}, Python {lock.python}, {lock.platform}): what {spec.path.name} "
        "asks for, pinned to that lock; no build strings or prefix.\n"
    )
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return Exported(name, text, source, count, unpinned)


def _lock_for_export(project: Project, name: str, lock_path: Path) -> tuple[locks.Lock, str]:
    prefix = builds.active_prefix(project, name)
    if prefix is not None and (prefix / LOCK_FILE).is_file():
        return locks.read(prefix / LOCK_FILE), "its active build"
    if lock_path.is_file():
        return locks.read(lock_path), str(lock_path.relative_to(project.root))
    raise WorkbenchError(
        f"env '{name}' has no build and no lock to pin from; run `workbench env create "
        f"{name}` (or `workbench env lock {name}`) first"
    )


def _without_build(dep: specs.CondaDep) -> str:
    """The dependency as written, less a build string (`=py39h..._0`)."""
    if not dep.build:
        return dep.text.strip()
    channel = f"{dep.channel}::" if dep.channel else ""
    version = dep.version or "*"
    return f"{channel}{dep.name}{_conda_pin(version)}"


def _conda_pin(version: str) -> str:
    """A rattler version (==1.2, 1.2.*, >=1) as written after a conda name."""
    if version.startswith("=="):
        return "=" + version[2:]
    if version[0].isdigit():
        return "=" + version.removesuffix(".*")
    return version


def _pin_conda(dep: specs.CondaDep, lock: locks.Lock, locked: dict[str, str]) -> str | None:
    """`name=VERSION` for a conda dependency, from the lock (conda names in a conda lock,
    PyPI names in a uv lock); None when the lock does not hold it."""
    channel = f"{dep.channel}::" if dep.channel else ""
    if dep.name == "python":
        return f"python={lock.python}" if lock.python else None
    if lock.backend == "uv":
        pypi, _ = condamap.lookup(dep.name, dep.channel)
        version = locked.get(canonicalize_name(pypi)) if pypi else None
    else:
        version = locked.get(canonicalize_name(dep.name))
    if not version or "://" in version or version.startswith("file:"):
        return None
    return f"{channel}{dep.name}={version.split('+')[0]}"


def _pin_pip(line: PipLine, lock: locks.Lock, locked: dict[str, str]) -> str | None:
    """A pip line pinned to the lock: `name==VERSION`, or `name @ URL@COMMIT` for a VCS
    requirement; None for what is kept as written (options, paths) or not locked."""
    if line.kind == "url":
        return _pin_url(line.value, locked)
    if line.kind != "requirement":
        return None
    try:
        requirement = Requirement(line.value)
    except InvalidRequirement:
        return None
    version = locked.get(canonicalize_name(requirement.name))
    if version is None:
        return None
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    if "://" in version or version.startswith("file:"):
        return f"{requirement.name}{extras} @ {version}{marker}"
    return f"{requirement.name}{extras}=={version}{marker}"


def _pin_url(url: str, locked: dict[str, str]) -> str | None:
    """A bare VCS URL as `name @ URL@COMMIT`, found in the lock by its repository."""
    wanted = _repository(url)
    for name, reference in locked.items():
        if "://" in reference and _repository(reference) == wanted:
            return f"{name} @ {reference}"
    return None


def _repository(url: str) -> str:
    """git+https://host/repo.git@ref#egg=x -> git+https://host/repo.git (ref, fragment off)."""
    head, slash, last = url.split("#")[0].rpartition("/")
    return head + slash + last.split("@")[0]


# --- import -----------------------------------------------------------------------------


def import_env(project: Project, name: str, source: str, force: bool = False) -> Imported:
    """Write envs/NAME.yml from a conda env (name or prefix), a venv or an export file."""
    if not ENV_NAME.fullmatch(name):
        raise WorkbenchError(f"'{excerpt(name)}' is not a valid env name (letters, digits, _ . -)")
    target = project.root / "envs" / f"{name}.yml"
    if name in project.envs and project.envs[name].spec_path != target:
        raise WorkbenchError(
            f"env '{name}' already exists ({project.envs[name].spec_path}); pick another name"
        )
    if target.exists() and not force:
        raise WorkbenchError(f"{target} exists; pass --force to replace it")
    path = Path(source).expanduser()
    if path.is_file():
        document, result = _from_export_file(path, name, target)
    elif path.is_dir() and (path / "conda-meta").is_dir():
        document, result = _from_conda_prefix(path, name, target)
    elif path.is_dir() and (path / "pyvenv.cfg").is_file():
        document, result = _from_venv(path, name, target)
    elif path.is_dir():
        raise WorkbenchError(
            f"{path}: neither a conda env (no conda-meta/) nor a venv (no pyvenv.cfg)"
        )
    elif os.sep in source or source.endswith((".yml", ".yaml")):
        raise WorkbenchError(f"{source}: no such file or folder")
    else:
        document, result = _from_conda_prefix(_conda_env_prefix(source), name, target)
    header = (
        f"# Imported by `workbench env import {name}` from {result.kind} {result.source}: "
        "every Python package pinned to the version found there.\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, header + yaml.safe_dump(document, sort_keys=False))
    return result


def _document(
    name: str, channels: list[str], conda: list[str], pip: list[str], variables: dict
) -> dict:
    document: dict = {"name": name}
    if channels:
        document["channels"] = channels
    document["dependencies"] = [*conda, *([{"pip": pip}] if pip else [])]
    if variables:
        document["variables"] = variables
    return document


def _from_export_file(path: Path, name: str, target: Path) -> tuple[dict, Imported]:
    """A `conda env export` (or any environment.yml): builds and prefix dropped, with
    the packages only the exporting platform has and those PyPI wheels replace."""
    spec = specs.load(path.resolve())
    conda: list[str] = []
    dropped: list[dict[str, str]] = []
    for dep in spec.conda:
        reason = None
        if spec.exported_on and platform_of(dep.name) == spec.exported_on:
            reason = f"{spec.exported_on}-only package"
        elif dep.name in condamap.RUNTIME and dep.build:
            reason = condamap.RUNTIME[dep.name]
        if reason:
            dropped.append({"spec": dep.text, "reason": reason})
        else:
            conda.append(_without_build(dep))
    pip = []
    for line in spec.pip:
        requirement = _requirement_name(line)
        if spec.exported_on and platform_of(requirement or "") == spec.exported_on:
            dropped.append({"spec": line.text.strip(), "reason": f"{spec.exported_on}-only"})
        else:
            pip.append(line.text.strip())
    result = Imported(name, target, str(path), "export file", len(conda), len(pip), dropped)
    return _document(name, list(spec.channels), conda, pip, spec.variables), result


def _requirement_name(line: PipLine) -> str | None:
    try:
        return canonicalize_name(Requirement(line.value).name)
    except InvalidRequirement:
        return None


def _conda_env_prefix(env_name: str) -> Path:
    """The prefix of the conda env called env_name: asked of conda/mamba/micromamba when
    one is on PATH, else looked for where conda installers put envs."""
    for tool in CONDA_TOOLS:
        exe = shutil.which(tool)
        if not exe:
            continue
        listing = run([exe, "env", "list", "--json"], what=f"{tool} env list", check=False)
        try:
            prefixes = [Path(p) for p in json.loads(listing.stdout).get("envs", [])]
        except (ValueError, AttributeError):
            continue
        for prefix in prefixes:
            if prefix.name == env_name or (env_name == "base" and (prefix / "condabin").is_dir()):
                return prefix
    home = Path.home()
    for root in CONDA_ROOTS:
        candidate = home / root / "envs" / env_name
        if (candidate / "conda-meta").is_dir():
            return candidate
    raise WorkbenchError(
        f"no conda env named '{excerpt(env_name)}' (asked {', '.join(CONDA_TOOLS)} on PATH and "
        f"looked in ~/{{{','.join(CONDA_ROOTS)}}}/envs); pass its prefix, a venv or an "
        "export file with --from"
    )


def _from_conda_prefix(prefix: Path, name: str, target: Path) -> tuple[dict, Imported]:
    """A conda env from its conda-meta records: python, every Python package, and the
    non-Python packages the user asked for (history) or nothing else depends on, each
    `name=version`; what pip installed, `name==version` (or its URL and commit)."""
    records = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("name") and record.get("version"):
            records.append(record)
    if not records:
        raise WorkbenchError(f"{prefix}: conda-meta/ holds no package records")
    requested = _history(prefix / "conda-meta" / "history")
    needed = {_depends_name(spec) for record in records for spec in record.get("depends") or []}
    conda: list[str] = []
    owned: set[str] = set()
    channels: dict[str, int] = {}
    for record in records:
        record_name = record["name"]
        files = record.get("files") or []
        owned.update(_dist_dirs(files))
        python_package = any(".dist-info/" in f or ".egg-info" in f for f in files)
        wanted = record_name in requested or record_name not in needed
        if record_name == "python" or python_package or wanted:
            conda.append(f"{record_name}={record['version']}")
            channel = _channel_of(record)
            if channel:
                channels[channel] = channels.get(channel, 0) + 1
    pip, skipped = _pip_installed(prefix, owned)
    ordered = sorted(channels, key=lambda c: -channels[c])
    variables = _conda_variables(prefix)
    result = Imported(name, target, str(prefix), "conda env", len(conda), len(pip), [], skipped)
    return _document(name, ordered, conda, pip, variables), result


def _history(path: Path) -> set[str]:
    """Names the user asked conda for (`# update specs: [...]` in conda-meta/history)."""
    asked: set[str] = set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return asked
    for line in text.splitlines():
        match = re.match(r"^# (update|remove) specs: (\[.*\])\s*$", line)
        if not match:
            continue
        try:
            entries = ast.literal_eval(match[2])
        except (ValueError, SyntaxError):
            continue
        names = {_depends_name(str(e)) for e in entries}
        asked = asked | names if match[1] == "update" else asked - names
    return asked


def _depends_name(spec: str) -> str:
    """The package name of a match spec in a record's depends (`numpy >=1.21`)."""
    return re.split(r"[\s=<>!~\[]", spec.strip().rpartition("::")[2], maxsplit=1)[0]


def _dist_dirs(files: list[str]) -> set[str]:
    """The dist-info folders a conda package installed (so they are not pip's)."""
    return {Path(f).parent.name for f in files if ".dist-info/" in f}


def _channel_of(record: dict) -> str | None:
    """conda-forge / defaults / a local channel's URL, from a package record."""
    schannel = record.get("schannel")
    channel = record.get("channel") or ""
    if channel.startswith("file:"):
        return re.sub(r"/(noarch|[a-z]+-[0-9a-z]+)/?$", "", channel)
    if schannel and "/" not in schannel:
        return "defaults" if schannel in ("pkgs/main", "pkgs/r") else schannel
    path = re.sub(r"^https?://[^/]+/", "", channel)
    name = re.sub(r"/(noarch|[a-z]+-[0-9a-z]+)/?$", "", path)
    return "defaults" if name.startswith("pkgs/") else name or None


def _conda_variables(prefix: Path) -> dict[str, str]:
    """`conda env config vars set` values, kept in conda-meta/state."""
    try:
        state = json.loads((prefix / "conda-meta" / "state").read_text())
    except (OSError, ValueError):
        return {}
    found = state.get("env_vars") if isinstance(state, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _from_venv(prefix: Path, name: str, target: Path) -> tuple[dict, Imported]:
    """A venv: its Python version and every installed distribution, pinned (pip itself,
    when the venv has it, as the conda dependency conda wants beside a pip: section)."""
    version = _venv_python(prefix)
    pins, skipped = _pip_installed(prefix, set())
    conda = [f"python={version}"] if version else []
    conda += [f"pip={p.split('==')[1]}" for p in pins if p.lower().startswith("pip==")]
    pip = [p for p in pins if not p.lower().startswith("pip==")]
    result = Imported(name, target, str(prefix), "venv", len(conda), len(pip), [], skipped)
    return _document(name, [], conda, pip, {}), result


def _venv_python(prefix: Path) -> str | None:
    try:
        config = (prefix / "pyvenv.cfg").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^(?:version_info|version)\s*=\s*(\d+\.\d+\.\d+)", config, re.M)
    return match[1] if match else None


def _pip_installed(prefix: Path, owned: set[str]) -> tuple[list[str], list[str]]:
    """Pinned requirement lines for the distributions in prefix's site-packages that no
    conda package installed; and those that cannot travel (installed from a local path)."""
    pins: list[str] = []
    skipped: list[str] = []
    for dist in sorted(prefix.glob("lib/python3*/site-packages/*.dist-info")):
        if dist.name in owned:
            continue
        try:
            meta = HeaderParser().parsestr((dist / "METADATA").read_text(errors="replace"))
        except OSError:
            continue
        dist_name, version = meta.get("Name"), meta.get("Version")
        if not dist_name or not version:
            continue
        direct = _direct_url(dist)
        if direct is None:
            pins.append(f"{dist_name}=={version}")
        elif direct.startswith("file:"):
            skipped.append(f"{dist_name} {version} (installed from the local path {direct})")
        else:
            pins.append(f"{dist_name} @ {direct}")
    return pins, skipped


def _direct_url(dist: Path) -> str | None:
    try:
        data = json.loads((dist / "direct_url.json").read_text())
    except (OSError, ValueError):
        return None
    return locks.installed_reference(data) if isinstance(data, dict) else None
