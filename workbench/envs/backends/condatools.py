"""Which conda-family tool runs a build, and the command lines each one takes.

Two flavours exist, and everything that differs between them is decided here:

- conda, and mamba 1.x (conda's own CLI with another solver): `env create`, `list --explicit
  --md5` with an `@EXPLICIT` header, activation through `conda shell.posix activate`.
- micromamba, and mamba 2.x (micromamba under another name, so `mamba --version` prints a
  bare version): prompts "Confirm changes: [Y/n]" unless `--yes`; `list --explicit --md5`
  does not exist before 2.0.6 and prints bare `url#md5` lines from 2.0.6 on, so locks come
  from `env export --explicit --md5`; no `--no-default-packages`; activation through
  `shell activate -s bash -p PREFIX`.

Only `mamba` needs `--version` to tell the flavours apart; conda's version (a Python
start-up, about half a second) is asked only when a build depends on it.
"""

import functools
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.subprocesses import run

CONDA = "conda"
MICROMAMBA = "micromamba"
VERSION = re.compile(r"^(?:(conda|mamba|micromamba)\s+)?(\d+(?:\.\d+)*)\S*$")
# conda 26.7 routes `env create` through `create --file` and looks `nodefaults` up as a
# channel (CondaHTTPError for .../nodefaults); earlier conda and mamba 1.x dropped it.
CONDA_NODEFAULTS_LOST = (26, 7)


@dataclass(frozen=True)
class CondaTool:
    """One installed conda-family tool: the name it is called by, its path and flavour."""

    name: str  # conda, mamba or micromamba
    exe: str
    flavour: str  # CONDA or MICROMAMBA

    @functools.cached_property
    def version(self) -> tuple[int, ...]:
        """The tool's version from `--version` (asked once)."""
        return parse_version(self.name, _version_output(self.exe))[1]

    def create_from_spec(
        self, prefix: Path, spec_file: Path, channels: tuple[str, ...]
    ) -> list[str]:
        """Solve and install spec_file (an environment.yml) into prefix, never prompting."""
        if self.flavour == MICROMAMBA:
            return [self.exe, "create", "--yes", "--prefix", str(prefix), "--file", str(spec_file)]
        args = ["--prefix", str(prefix), "--file", str(spec_file), "--no-default-packages"]
        if "nodefaults" in channels and self.drops_nodefaults():
            # `nodefaults` means: the spec's channels only. This conda would look it up as
            # a channel, so it is left out of the spec and said the way conda understands.
            kept = [c for c in channels if c != "nodefaults"]
            pinned = [arg for channel in kept for arg in ("--channel", channel)]
            return [self.exe, "create", "--yes", *args, "--override-channels", *pinned]
        return [self.exe, "env", "create", *args]

    def drops_nodefaults(self) -> bool:
        """Whether `nodefaults` must be left out of the spec this tool reads."""
        return self.name == "conda" and self.version >= CONDA_NODEFAULTS_LOST

    def create_from_explicit(self, prefix: Path, explicit: Path) -> list[str]:
        """Install an @EXPLICIT package list into prefix as it is (no solve)."""
        extra = [] if self.flavour == MICROMAMBA else ["--no-default-packages"]
        return [
            self.exe,
            "create",
            "--yes",
            "--prefix",
            str(prefix),
            "--file",
            str(explicit),
            *extra,
        ]

    def export_explicit(self, prefix: Path) -> list[str]:
        """The command that prints prefix's conda packages as an @EXPLICIT list with md5s."""
        if self.flavour == MICROMAMBA:
            return [self.exe, "env", "export", "--prefix", str(prefix), "--explicit", "--md5"]
        return [self.exe, "list", "--prefix", str(prefix), "--explicit", "--md5"]

    def list_json(self, prefix: Path) -> list[str]:
        return [self.exe, "list", "--prefix", str(prefix), "--json"]

    def launcher(self, prefix: Path) -> list[str]:
        """The command that starts prefix's python activated (workbench.runtime.activate,
        linked into every env); python's arguments follow."""
        python = str(prefix / "bin" / "python")
        module = ["-m", "workbench.runtime.activate", self.flavour]
        return [python, *module, self._activator(), str(prefix), "--"]

    def _activator(self) -> str:
        """The executable that prints activation scripts: mamba 1.x refuses to activate
        ("Run 'mamba init'…"), so the conda it belongs to does it."""
        if self.name != "mamba" or self.flavour == MICROMAMBA:
            return self.exe
        for candidate in (os.environ.get("CONDA_EXE"), str(Path(self.exe).with_name("conda"))):
            if candidate and os.access(candidate, os.X_OK):
                return candidate
        found = shutil.which("conda")
        if found is None:
            raise WorkbenchError(
                f"mamba {'.'.join(map(str, self.version))} activates envs through conda, and "
                "no conda was found (CONDA_EXE, beside mamba, or on PATH)"
            )
        return found


def find(name: str) -> CondaTool:
    """The tool called name on PATH, with its flavour; mamba is asked its version."""
    exe = shutil.which(name)
    if not exe:
        raise WorkbenchError(f"backend '{name}' is not installed (not on PATH)")
    if name == "conda":
        return CondaTool(name, exe, CONDA)
    if name == "micromamba":
        return CondaTool(name, exe, MICROMAMBA)
    flavour, _ = parse_version(name, _version_output(exe))
    return CondaTool(name, exe, flavour)


@functools.cache
def _version_output(exe: str) -> str:
    return run([exe, "--version"], what=f"asking {exe} for its version", timeout=120).stdout


def parse_version(name: str, output: str) -> tuple[str, tuple[int, ...]]:
    """(flavour, version) from `--version` output.

    conda prints `conda 26.7.1`; mamba 1.x `mamba 1.5.12` and then its conda's line;
    micromamba and mamba 2.x print a bare `2.0.5`.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    match = VERSION.match(lines[0]) if lines else None
    if match is None:
        shown = lines[0][:80] if lines else "(nothing)"
        raise WorkbenchError(
            f"cannot tell which {name} this is: `{name} --version` printed '{shown}' "
            "(expected e.g. 'conda 26.7.1', 'mamba 1.5.12' or '2.0.5')"
        )
    version = tuple(int(part) for part in match[2].split("."))
    if match[1] == "conda":
        return CONDA, version
    if name == "conda":
        raise WorkbenchError(f"`conda --version` printed '{lines[0][:80]}': not conda")
    if name == "mamba" and version[0] < 2:
        return CONDA, version
    return MICROMAMBA, version
