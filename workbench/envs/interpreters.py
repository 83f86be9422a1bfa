"""Python interpreters for uv envs: a local one that matches `python=`, else one uv
downloads (uv-managed, kept in uv's python folder), else a one-line error that names the
wanted version, the nearest local ones and the flag that accepts the nearest patch
release of the same minor. A pip-only env has no `python=`: the version its repository
asks for elsewhere (binder's runtime.txt, pyenv's .python-version, pyproject.toml's
requires-python) stands in for it, under the same rules."""

import contextlib
import json
import os
import re
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from workbench.errors import WorkbenchError
from workbench.jsonfiles import write_atomic
from workbench.subprocesses import last_lines, run

EXECUTABLE = re.compile(r"^python3(\.\d+)?$")
PROBE = (
    "import sys; print('%d.%d.%d' % sys.version_info[:3]); "
    "print(getattr(sys, '_base_executable', sys.executable))"
)
NEAREST_FLAG = "--nearest-python"
# Which bound of a requirement names the release it wants: ==3.8.5 before >=3.8 before <3.9.
OPERATOR_RANK = {"==": 0, "===": 0, "~=": 1, ">=": 1, ">": 2, "<=": 3, "<": 3, "!=": 4}
# A managed Python is a large download on a slow link; an unreachable host fails in seconds.
DOWNLOAD_TIMEOUT = 600
# What each interpreter answered when probed, under XDG_CACHE_HOME (see discover).
PROBES = "workbench/interpreters.json"


# binder's and Heroku's runtime.txt: `python-3.7.17` (or `python-3.7`).
RUNTIME_TXT = re.compile(r"^\s*python-(\d+\.\d+(?:\.\d+)?)\s*$")
# pyenv's .python-version: a version, not a virtualenv or another implementation's name.
PYENV_VERSION = re.compile(r"^\s*(\d+\.\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class PythonRequest:
    """The Python a repository asks for outside its requirements file, as a conda match
    spec (python=3.7.17, python>=3.8) with the file and line that ask for it."""

    text: str
    source: Path
    line: int


def requested(folder: Path, root: Path) -> PythonRequest | None:
    """The Python asked for beside a requirements file (folder), else at the repository
    root: runtime.txt, else .python-version, else pyproject.toml's requires-python."""
    for where in dict.fromkeys((folder, root)):
        for name, read in (
            ("runtime.txt", _runtime_txt),
            (".python-version", _python_version),
            ("pyproject.toml", _requires_python),
        ):
            path = where / name
            found = read(path) if path.is_file() else None
            if found is not None:
                return PythonRequest(found[0], path, found[1])
    return None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[:100]
    except OSError:
        return []


def _runtime_txt(path: Path) -> tuple[str, int] | None:
    """binder (repo2docker) builds the newest patch of runtime.txt's major.minor: a repository
    that says python-3.7.17 runs on any 3.7 there, so it asks for python=3.7 here too."""
    for number, line in enumerate(_lines(path), 1):
        match = RUNTIME_TXT.match(line)
        if match:
            return f"python={'.'.join(match[1].split('.')[:2])}", number
    return None


def _python_version(path: Path) -> tuple[str, int] | None:
    for number, line in enumerate(_lines(path), 1):
        match = PYENV_VERSION.match(line)
        if match:
            return f"python={match[1]}", number
    return None


def _requires_python(path: Path) -> tuple[str, int] | None:
    try:
        wanted = tomllib.loads(path.read_text())["project"]["requires-python"]
        SpecifierSet(wanted)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    number = next(
        (n for n, line in enumerate(_lines(path), 1) if line.strip().startswith("requires-python")),
        1,
    )
    return f"python{wanted.replace(' ', '')}", number


@dataclass(frozen=True)
class Interpreter:
    version: Version
    path: Path

    @property
    def minor(self) -> str:
        return f"{self.version.major}.{self.version.minor}"


def managed_dir() -> Path:
    """Where uv keeps the interpreters it downloads."""
    if os.environ.get("UV_PYTHON_INSTALL_DIR"):
        return Path(os.environ["UV_PYTHON_INSTALL_DIR"])
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "uv" / "python"


def candidates() -> list[Path]:
    """Executables that may be Pythons: the tool's own, PATH, pyenv's versions, uv-managed
    ones, /usr/bin."""
    found: list[Path] = [Path(sys.executable)]
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        # pyenv's shims are slow bash scripts; its versions are globbed directly below.
        if directory and os.path.isdir(directory) and Path(directory).name != "shims":
            found += sorted(
                Path(directory) / n for n in os.listdir(directory) if EXECUTABLE.match(n)
            )
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found += sorted(pyenv_root.glob("versions/*/bin/python3"))
    found += sorted(managed_dir().glob("cpython-*/bin/python3"))
    found += sorted(Path("/usr/bin").glob("python3.*[0-9]"))
    return list(dict.fromkeys(p for p in found if os.access(p, os.X_OK)))


def _probe(path: Path) -> Interpreter | None:
    try:
        out = run([path, "-I", "-c", PROBE], what=f"probing {path}", timeout=10, check=False)
    except (OSError, WorkbenchError):  # not executable after all, or hung
        return None
    if out.returncode != 0:
        return None  # e.g. a pyenv shim for a version that is not selected
    version, executable = out.stdout.split()
    return Interpreter(Version(version), Path(executable))


def probes_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / PROBES


def _stamp(path: Path) -> str | None:
    """The real file path runs, with its inode, size and mtime: a different binary (an
    upgrade, a reinstall) has another stamp."""
    try:
        real = path.resolve()
        info = real.stat()
    except OSError:
        return None
    return f"{real}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def discover() -> list[Interpreter]:
    """Every working interpreter, one entry per real executable, in discovery order.

    Starting a dozen Pythons costs more than the rest of a warm rebuild's own work, so
    what a binary answered is kept (in the user's cache folder) by its stamp and asked
    again only when the binary changes."""
    try:
        known = json.loads(probes_file().read_text())
    except (OSError, ValueError):
        known = {}
    answers: dict[str, list[str]] = {}

    def probe(path: Path) -> Interpreter | None:
        stamp = _stamp(path)
        version, executable = known.get(f"{path} {stamp}", (None, None))
        if stamp and version:
            answers[f"{path} {stamp}"] = [version, executable]
            return Interpreter(Version(version), Path(executable))
        interp = _probe(path)
        if stamp and interp and interp.path.resolve() == path.resolve():
            answers[f"{path} {stamp}"] = [str(interp.version), str(interp.path)]
        return interp

    with ThreadPoolExecutor(max_workers=8) as pool:
        probed = [i for i in pool.map(probe, candidates()) if i is not None]
    if answers != known:
        with contextlib.suppress(OSError):
            probes_file().parent.mkdir(parents=True, exist_ok=True)
            write_atomic(probes_file(), json.dumps(answers, indent=1))
    unique: dict[Path, Interpreter] = {}
    for interp in probed:
        unique.setdefault(interp.path.resolve(), interp)
    return list(unique.values())


def wanted_version(requirement: SpecifierSet) -> Version | None:
    """The release a requirement names (3.8.5 in ==3.8.5.*, 3.8 in >=3.8,<3.9), if any."""
    for spec in sorted(requirement, key=lambda s: OPERATOR_RANK.get(s.operator, 5)):
        try:
            return Version(spec.version.removesuffix(".*"))
        except InvalidVersion:
            continue
    return None


def nearest(found: list[Interpreter], requirement: SpecifierSet) -> list[Interpreter]:
    """Local interpreters closest to the wanted release: those of the same minor (nearest
    patch first), else the two nearest minors."""
    want = wanted_version(requirement)
    if want is None:
        return []

    def distance(i: Interpreter) -> tuple:
        minor = (i.version.major, i.version.minor)
        return (
            abs(minor[0] * 100 + minor[1] - want.major * 100 - want.minor),
            abs(i.version.micro - want.micro),
            -i.version.micro,
        )

    ranked = sorted(found, key=distance)
    same = [i for i in ranked if (i.version.major, i.version.minor) == (want.major, want.minor)]
    return same or ranked[:2]


def select(
    requirement: SpecifierSet | None,
    label: str,
    *,
    accept_nearest: bool = False,
    prefer_running: bool = False,
) -> Interpreter:
    """The newest local interpreter satisfying requirement (ties: first discovered), else
    one uv downloads, else (with accept_nearest) the nearest patch release of the same
    minor. With no requirement, or with prefer_running when it satisfies requirement, the
    interpreter running workbench."""
    found = discover()
    own = Path(sys.executable).resolve()
    running = next((i for i in found if i.path.resolve() == own), found[0])
    if requirement is None:
        return running
    matching = [i for i in found if requirement.contains(i.version, prereleases=True)]
    if prefer_running and running in matching:
        return running
    if matching:
        best = max(i.version for i in matching)
        return next(i for i in matching if i.version == best)
    close = nearest(found, requirement)
    want = wanted_version(requirement)
    same_minor = [
        i for i in close if want and (i.version.major, i.version.minor) == (want.major, want.minor)
    ]
    if accept_nearest and same_minor:
        return same_minor[0]
    fetched, why_not = fetch(requirement)
    if fetched is not None:
        return fetched
    near = ", ".join(str(i.version) for i in close) or "none"
    hint = (
        f"; pass {NEAREST_FLAG} to build with {same_minor[0].version} (nearest patch of "
        f"{want.major}.{want.minor})"
        if same_minor
        else "; install a matching Python (pyenv, the system's package manager) or change python="
    )
    raise WorkbenchError(
        f"{label}: no local interpreter matches and uv could not download one ({why_not}); "
        f"nearest local: {near}{hint}"
    )


def fetch(requirement: SpecifierSet) -> tuple[Interpreter | None, str]:
    """A uv-managed interpreter for requirement, downloaded if need be: (it, "") or
    (None, why not)."""
    if os.environ.get("UV_PYTHON_DOWNLOADS", "").lower() in ("never", "manual", "false", "0"):
        return None, "UV_PYTHON_DOWNLOADS forbids downloads"
    if os.environ.get("UV_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None, "UV_OFFLINE is set"
    from uv import find_uv_bin

    want = wanted_version(requirement)
    request = str(want) if want and requirement.contains(want) else str(requirement)
    known = run(
        [find_uv_bin(), "--no-cache", "python", "list", request, "--only-downloads"]
        + ["--output-format", "json"],
        what=f"listing the Python releases uv can download for {request}",
        check=False,
    )
    try:
        downloadable = json.loads(known.stdout) if known.returncode == 0 else []
    except ValueError:
        downloadable = []
    if not downloadable:
        return None, f"uv knows no Python release matching {requirement}"
    try:
        install = run(
            [find_uv_bin(), "python", "install", "--no-progress", request],
            what=f"downloading Python {request} with uv",
            timeout=DOWNLOAD_TIMEOUT,
            check=False,
        )
    except WorkbenchError as exc:
        return None, exc.message
    if install.returncode != 0:
        reason = last_lines(install.stderr, 1) or f"exit {install.returncode}"
        return None, f"uv python install {request}: {reason.removeprefix('cause: ')}"
    found = run(
        [find_uv_bin(), "python", "find", "--managed-python", request],
        what=f"finding the Python {request} uv installed",
        check=False,
    )
    interp = _probe(Path(found.stdout.strip())) if found.returncode == 0 else None
    if interp is None or not requirement.contains(interp.version, prereleases=True):
        return None, f"uv installed no interpreter matching {requirement}"
    return interp, ""
