"""Translate conda match specs into PyPI requirements for the uv backend."""

import re
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from workbench.envs.spec import CondaDep
from workbench.errors import WorkbenchError

# conda package name -> PyPI project name, where they differ.
PYPI_NAMES = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "torchvision-cpu": "torchvision",
    "py-opencv": "opencv-python",
    "opencv": "opencv-python",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "pytables": "tables",
    "pyqt": "PyQt5",
    "tensorflow-gpu": "tensorflow",
    "faiss-cpu": "faiss-cpu",
    "faiss-gpu": "faiss-gpu",
    "jax-cuda": "jax",
    "python-dateutil": "python-dateutil",
    "pillow-simd": "pillow",
}

CUDA = "CUDA toolkit: PyPI torch/jax wheels bundle the CUDA libraries they need"
SYSTEM = "system library: PyPI wheels bundle their own"
MUTEX = "conda variant selector: has no meaning on PyPI"
TOOL = "not a Python package: install it with the system package manager"

# Exact names and name patterns of conda packages that have no PyPI meaning.
DROPPED = {
    "cudatoolkit": CUDA,
    "cudatoolkit-dev": CUDA,
    "cudnn": CUDA,
    "nccl": CUDA,
    "cutensor": CUDA,
    "magma": CUDA,
    "pytorch-cuda": MUTEX,
    "pytorch-mutex": MUTEX,
    "cpuonly": MUTEX,
    "blas": MUTEX,
    "mkl": SYSTEM,
    "intel-openmp": SYSTEM,
    "openblas": SYSTEM,
    "ca-certificates": SYSTEM,
    "openssl": SYSTEM,
    "certifi-system": SYSTEM,
    "tk": SYSTEM,
    "xz": SYSTEM,
    "zlib": SYSTEM,
    "readline": SYSTEM,
    "sqlite": SYSTEM,
    "ncurses": SYSTEM,
    "bzip2": SYSTEM,
    "tzdata": SYSTEM,
    "jpeg": SYSTEM,
    "freetype": SYSTEM,
    "ld_impl_linux-64": SYSTEM,
    "nodejs": TOOL,
    "git": TOOL,
    "ffmpeg": TOOL,
    "gcc": TOOL,
    "gxx": TOOL,
    "compilers": TOOL,
    "make": TOOL,
}
DROPPED_PATTERNS = [
    (re.compile(r"^(cuda-|libcu|libnv|libnpp)"), CUDA),
    (re.compile(r"^_"), MUTEX),
    (
        re.compile(
            r"^lib(gcc|stdcxx|gomp|gfortran|ffi|uuid|zlib|png|jpeg|blas|cblas|lapack|sqlite)"
        ),
        SYSTEM,
    ),
]


@dataclass(frozen=True)
class Mapped:
    """The outcome for one conda dependency: a requirement, or a reason it was dropped."""

    dep: CondaDep
    requirement: str | None = None
    dropped: str | None = None
    warning: str | None = None


def drop_reason(name: str) -> str | None:
    if name in DROPPED:
        return DROPPED[name]
    return next((reason for pattern, reason in DROPPED_PATTERNS if pattern.match(name)), None)


def pep440(version: str, where: str) -> SpecifierSet:
    """A conda version spec ("3.11", "3.11.*", ">=1,<2", "==2.0.1") as a PEP 440 specifier."""
    if "|" in version:
        raise WorkbenchError(
            f"{where}: version '{version}' uses conda's '|' (or), which PyPI lacks"
        )
    parts = []
    for part in version.replace(" ", "").split(","):
        if not part or part == "*":
            continue
        if part[0] in "<>=!~":
            parts.append(part)
        elif part.endswith("*"):
            parts.append("==" + part.rstrip(".*") + ".*")
        else:
            parts.append("==" + part)
    try:
        return SpecifierSet(",".join(parts))
    except InvalidSpecifier:
        raise WorkbenchError(f"{where}: version '{version}' has no PEP 440 equivalent") from None


def to_pypi(dep: CondaDep, where: str) -> Mapped:
    """Map one conda dependency (not python itself) to a PyPI requirement or a drop."""
    reason = drop_reason(dep.name)
    if reason:
        return Mapped(dep, dropped=reason)
    name = PYPI_NAMES.get(dep.name, dep.name)
    specifier = pep440(dep.version, f"{where}: '{dep.text}'") if dep.version else SpecifierSet()
    warning = None
    if dep.build:
        warning = f"{where}: build string '{dep.build}' of '{dep.text}' ignored by the uv backend"
    return Mapped(dep, requirement=f"{name}{specifier}", warning=warning)
