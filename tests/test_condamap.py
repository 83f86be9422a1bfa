"""conda names and versions mapped to PyPI for the uv backend."""

import pytest
from rattler import MatchSpec

from workbench.envs.condamap import pep440, to_pypi
from workbench.envs.spec import CondaDep
from workbench.errors import WorkbenchError


def dep(text: str) -> CondaDep:
    m = MatchSpec(text)
    version = m.version if m.version not in (None, "*") else None
    return CondaDep(text, m.name.normalized, version, m.build, None, 1)


@pytest.mark.parametrize(
    ("conda", "pypi"),
    [
        ("pytorch::pytorch=2.13.0", "torch==2.13.0.*"),  # conda '=' is fuzzy: 2.13.0.*
        ("pytorch==2.13.0", "torch==2.13.0"),  # '==' is exact
        ("numpy>=1.26,<3", "numpy<3,>=1.26"),
        ("transformers=5", "transformers==5.*"),
        ("matplotlib-base", "matplotlib"),
        ("numpy 1.26.*", "numpy==1.26.*"),
        ("tokenizers", "tokenizers"),
    ],
)
def test_names_and_versions(conda: str, pypi: str) -> None:
    assert to_pypi(dep(conda), "x").requirement == pypi


def test_fuzzy_pin_matches_local_cpu_build() -> None:
    assert pep440("2.13.0.*", "x").contains("2.13.0+cpu")
    assert not pep440("2.13.0.*", "x").contains("2.13.1")


@pytest.mark.parametrize(
    "conda", ["cudatoolkit=11.8", "pytorch-cuda=12.1", "libgcc-ng", "_openmp_mutex", "cuda-nvcc"]
)
def test_non_python_packages_dropped_with_reason(conda: str) -> None:
    mapped = to_pypi(dep(conda), "x")
    assert mapped.requirement is None and mapped.dropped


def test_build_string_ignored_with_warning() -> None:
    mapped = to_pypi(dep("pytorch=2.0.1=*cuda118_*"), "env.yml:4")
    assert mapped.requirement == "torch==2.0.1"
    assert "build string '*cuda118_*'" in mapped.warning and "env.yml:4" in mapped.warning


def test_or_versions_refused() -> None:
    with pytest.raises(WorkbenchError, match=r"x.yml:1: 'numpy >=1.0\|<0.5': .*'\|' \(or\)"):
        to_pypi(dep("numpy >=1.0|<0.5"), "x.yml:1")
