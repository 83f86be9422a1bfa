"""Local Python interpreters, found without downloading any."""

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from workbench.errors import WorkbenchError
from workbench.subprocesses import run

EXECUTABLE = re.compile(r"^python3(\.\d+)?$")
PROBE = (
    "import sys; print('%d.%d.%d' % sys.version_info[:3]); "
    "print(getattr(sys, '_base_executable', sys.executable))"
)


@dataclass(frozen=True)
class Interpreter:
    version: Version
    path: Path

    @property
    def minor(self) -> str:
        return f"{self.version.major}.{self.version.minor}"


def candidates() -> list[Path]:
    """Executables that may be Pythons: the tool's own, PATH, pyenv's versions, /usr/bin."""
    found: list[Path] = [Path(sys.executable)]
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        # pyenv's shims are slow bash scripts; its versions are globbed directly below.
        if directory and os.path.isdir(directory) and Path(directory).name != "shims":
            found += sorted(
                Path(directory) / n for n in os.listdir(directory) if EXECUTABLE.match(n)
            )
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found += sorted(pyenv_root.glob("versions/*/bin/python3"))
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


def discover() -> list[Interpreter]:
    """Every working interpreter, one entry per real executable, in discovery order."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        probed = [i for i in pool.map(_probe, candidates()) if i is not None]
    unique: dict[Path, Interpreter] = {}
    for interp in probed:
        unique.setdefault(interp.path.resolve(), interp)
    return list(unique.values())


def select(requirement: SpecifierSet | None, label: str) -> Interpreter:
    """The newest local interpreter satisfying requirement (ties: first discovered).

    With no requirement, the interpreter running workbench.
    """
    found = discover()
    if requirement is None:
        own = Path(sys.executable).resolve()
        return next((i for i in found if i.path.resolve() == own), found[0])
    matching = [i for i in found if requirement.contains(i.version, prereleases=True)]
    if not matching:
        versions = ", ".join(sorted({str(i.version) for i in found}, key=Version)) or "none"
        raise WorkbenchError(f"{label}: no local interpreter matches; found {versions}")
    best = max(i.version for i in matching)
    return next(i for i in matching if i.version == best)
