"""Environment backends, by name; adding one touches one module and this registry."""

import shutil
from typing import TYPE_CHECKING

from workbench.envs.backends.base import Backend, Plan, Progress
from workbench.errors import WorkbenchError
from workbench.runtime import contract

if TYPE_CHECKING:
    from workbench.envs.backends.uv import UvOptions
    from workbench.envs.spec import EnvSpec

CONDA_FAMILY = ("mamba", "micromamba", "conda")
NAMES = (*CONDA_FAMILY, "uv")


def default_name() -> str:
    """WORKBENCH_BACKEND, else the first conda-family tool on PATH, else uv."""
    chosen = contract.BACKEND.get()
    if chosen:
        return chosen
    return next((name for name in CONDA_FAMILY if shutil.which(name)), "uv")


def get(name: str | None = None, options: "UvOptions | None" = None) -> Backend:
    """The backend called name (default: default_name()); options apply to uv builds."""
    name = name or default_name()
    if name == "uv":
        from workbench.envs.backends.uv import UvBackend

        return UvBackend(options)
    if name in CONDA_FAMILY:
        from workbench.envs.backends.conda import CondaBackend

        return CondaBackend(name)
    raise WorkbenchError(f"unknown backend '{name}' (choose from {', '.join(NAMES)})")


def for_spec(
    spec: "EnvSpec", name: str | None = None, options: "UvOptions | None" = None
) -> Backend:
    """The backend that builds spec: a requirements file is a pip-only env, built with uv
    whichever tool is the default; --backend NAME for it must be uv."""
    if spec.requirements_file:
        if name not in (None, "uv"):
            raise WorkbenchError(
                f"{spec.path}: a requirements file is a pip-only env, built with uv; "
                f"--backend {name} needs an environment.yml"
            )
        name = "uv"
    return get(name, options)


__all__ = ["Backend", "Plan", "Progress", "NAMES", "default_name", "for_spec", "get"]
