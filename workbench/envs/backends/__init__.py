"""Environment backends, by name; adding one touches one module and this registry."""

import os
import shutil

from workbench.envs.backends.base import Backend, Plan, Progress
from workbench.errors import WorkbenchError

CONDA_FAMILY = ("mamba", "micromamba", "conda")
NAMES = (*CONDA_FAMILY, "uv")


def default_name() -> str:
    """WORKBENCH_BACKEND, else the first conda-family tool on PATH, else uv."""
    chosen = os.environ.get("WORKBENCH_BACKEND")
    if chosen:
        return chosen
    return next((name for name in CONDA_FAMILY if shutil.which(name)), "uv")


def get(name: str | None = None) -> Backend:
    name = name or default_name()
    if name == "uv":
        from workbench.envs.backends.uv import UvBackend

        return UvBackend()
    if name in CONDA_FAMILY:
        from workbench.envs.backends.conda import CondaBackend

        return CondaBackend(name)
    raise WorkbenchError(f"unknown backend '{name}' (choose from {', '.join(NAMES)})")


__all__ = ["Backend", "Plan", "Progress", "NAMES", "default_name", "get"]
