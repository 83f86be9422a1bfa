"""The interface every environment backend implements."""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.envs.locks import Lock
from workbench.envs.spec import EnvSpec

Progress = Callable[[str], None]


@dataclass
class Plan:
    """What a build would install, computed without building anything."""

    env: str
    backend: str
    python: str  # interpreter path (uv) or the conda spec for python
    python_version: str
    packages: list[str]
    dropped: list[dict[str, str]] = field(default_factory=list)
    pip_options: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] | None = None  # the manifest's GPU pins, set by the build

    def to_json(self) -> dict:
        return {
            "env": self.env,
            "backend": self.backend,
            "python": self.python_version,
            "interpreter": self.python,
            "packages": self.packages,
            "dropped": self.dropped,
            "pip_options": self.pip_options,
            "variables": self.variables,
            "warnings": self.warnings,
        }


class Backend(ABC):
    """Creates envs at a given prefix, locks them, and reports what is installed."""

    name: str

    @abstractmethod
    def plan(self, spec: EnvSpec) -> Plan:
        """What would be installed; raises WorkbenchError (exit 2) if not buildable here."""

    @abstractmethod
    def lock(self, spec: EnvSpec, plan: Plan, prefix: Path | None, progress: Progress) -> Lock:
        """An exact lock for the spec. prefix is the env's active build, if any."""

    @abstractmethod
    def build(
        self, spec: EnvSpec, plan: Plan, prefix: Path, lock: Lock | None, progress: Progress
    ) -> Lock:
        """Create the env at prefix (from lock when given); return the lock of what it holds."""

    @abstractmethod
    def installed(self, prefix: Path) -> dict[str, str]:
        """Installed packages, canonical name -> version."""

    def python(self, prefix: Path) -> Path:
        return prefix / "bin" / "python"

    def run_python(self, prefix: Path) -> list[str]:
        """The command that runs the env's Python as its users would (activated)."""
        return [str(self.python(prefix))]
