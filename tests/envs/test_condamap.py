"""conda names and versions mapped to PyPI for the uv backend, from the parselmouth data."""

import subprocess
import sys

import pytest
from rattler import MatchSpec

from workbench.envs import condamap
from workbench.envs.condamap import pep440, to_pypi
from workbench.envs.spec import CondaDep
from workbench.errors import WorkbenchError


def dep(text: str) -> CondaDep:
    m = MatchSpec(text)
    version = m.version if m.version not in (None, "*") else None
    channel = m.channel.name if m.channel is not None else None
    return CondaDep(text, m.name.normalized, version, m.build, channel, 1)


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
        ("pytz=2023.3.post1", "pytz==2023.3.post1"),  # no .* after a post release
        # From the data, where the conda name is not the PyPI one.
        ("py-xgboost=1.7", "xgboost==1.7.*"),
        ("msgpack-python", "msgpack"),
        ("pytables", "tables"),
        ("huggingface_hub", "huggingface-hub"),
        ("python-graphviz", "graphviz"),
        ("brotli-python", "brotli"),
        ("pytorch-cpu", "torch"),
        # null in the data, but a twin spelled with _ ships the distribution
        ("typing-extensions", "typing-extensions"),
        # The hand-written patterns misfired on these (dropped as CUDA/system/mutex).
        ("cuda-python", "cuda-python"),
        ("libcst", "libcst"),
        ("_dvc", "dvc"),
        # Overrides, each with its reason in condamap.OVERRIDES.
        ("jaxlib=0.4.23", "jaxlib==0.4.23.*"),
        ("opencv", "opencv-python"),
        ("pytorch::faiss-gpu", "faiss-gpu"),
        ("pyg", "torch-geometric"),
        ("pytorch-gpu", "torch"),
        ("tensorflow-gpu=2.4.1", "tensorflow==2.4.1.*"),
        ("torchvision-cpu", "torchvision"),
    ],
)
def test_names_and_versions(conda: str, pypi: str) -> None:
    mapped = to_pypi(dep(conda), "x")
    assert mapped.requirement == pypi and not mapped.conda_only


def test_fuzzy_pin_matches_local_cpu_build() -> None:
    assert pep440("2.13.0.*", "x").contains("2.13.0+cpu")
    assert not pep440("2.13.0.*", "x").contains("2.13.1")


@pytest.mark.parametrize(
    ("conda", "reason"),
    [
        ("r-base=4.2", "R package"),
        ("r-ashr =2.2_63", "R package"),  # was "no PEP 440 equivalent", hiding the reason
        ("bioconductor-deseq2", "R package"),
        ("c-compiler", "compiler"),
        ("cxx-compiler", "compiler"),
        ("gfortran", "compiler"),
        ("cuda=12.1", "CUDA toolkit"),
        ("cuda-nvcc", "CUDA toolkit"),
        ("nvidia/label/cuda-11.8.0::cuda-toolkit", "CUDA toolkit"),
        ("openmpi", "MPI"),
        ("nco", "C/C++/Fortran library or tool"),
        ("ncl", "C/C++/Fortran library or tool"),
        ("hdf5", "C/C++/Fortran library or tool"),
        ("ffmpeg", "C/C++/Fortran library or tool"),
        ("bioconda::samtools=1.17", "C/C++/Fortran library or tool"),
    ],
)
def test_conda_only_packages_are_never_sent_to_pypi(conda: str, reason: str) -> None:
    mapped = to_pypi(dep(conda), "x")
    assert mapped.requirement is None and mapped.conda_only and mapped.dropped == reason


@pytest.mark.parametrize(
    "conda",
    ["cudatoolkit=11.8", "pytorch-cuda=12.1", "libgcc-ng", "_openmp_mutex", "llvm-openmp", "mkl"],
)
def test_packages_pypi_wheels_replace_are_dropped_with_reason(conda: str) -> None:
    """Not refused: PyPI wheels or the local interpreter already do their job."""
    mapped = to_pypi(dep(conda), "x")
    assert mapped.requirement is None and mapped.dropped and not mapped.conda_only


def test_platform_only_packages_of_a_foreign_export_are_dropped() -> None:
    mapped = to_pypi(dep("vs2015_runtime=14.27.29016=h5e58377_2"), "x", "Windows")
    assert mapped.dropped == "Windows-only package (the spec was exported there)"


def test_unknown_names_pass_through_with_a_warning() -> None:
    mapped = to_pypi(dep("dllogger"), "env.yml:7")
    assert mapped.requirement == "dllogger"
    assert "env.yml:7: 'dllogger' is not in the conda->PyPI mapping" in mapped.warning


def test_build_string_ignored_with_warning() -> None:
    mapped = to_pypi(dep("pytorch=2.0.1=*cuda118_*"), "env.yml:4")
    assert mapped.requirement == "torch==2.0.1"
    assert "build string '*cuda118_*'" in mapped.warning and "env.yml:4" in mapped.warning


def test_or_versions_refused() -> None:
    with pytest.raises(WorkbenchError, match=r"x.yml:1: 'numpy >=1.0\|<0.5': .*'\|' \(or\)"):
        to_pypi(dep("numpy >=1.0|<0.5"), "x.yml:1")


def test_channel_urls_and_subdirs_name_the_channel() -> None:
    assert condamap.lookup("pytorch", "https://conda.anaconda.org/pytorch/") == ("torch", True)
    assert condamap.lookup("faiss-cpu", "conda-forge/linux-64") == ("faiss-cpu", True)


def test_mapping_data_is_loaded_only_when_needed() -> None:
    """Importing the module (every CLI start of the envs side) does not read the 4 MB of
    JSON; planning a spec with conda dependencies does, once."""
    probe = (
        "from workbench.envs import condamap as c; a = c._channels.cache_info().currsize; "
        "c.lookup('numpy'); c.lookup('scipy'); i = c._channels.cache_info(); "
        "print(a, i.currsize, i.misses)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.split() == ["0", "1", "1"], out.stderr
