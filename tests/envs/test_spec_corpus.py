"""Real-world-shaped specs (tests/data/specs/: written for these tests, shaped like those
of public ML repositories): conda's own parser takes each one, and so does workbench with
the conda backend (the spec goes to conda unchanged); the uv backend plans each one, or
refuses it in one line for the reason the spec says (bench/specs.py prints the counts)."""

import functools
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.paths import SPECS
from tests.support.realconda import RealConda
from workbench.envs import backends, interpreters
from workbench.envs import spec as specs
from workbench.envs.backends.uv import UvOptions
from workbench.errors import WorkbenchError

SPECS = sorted(SPECS.glob("*.yml"))

# What the uv backend says of each spec without options, when it refuses. Everything
# else plans. With --drop-conda-only --nearest-python only conda's `|` stays refused.
REFUSED_BY_UV = {
    "03_local_submodules.yml": "conda-only package(s)",  # cuda-toolkit
    "04_r_packages.yml": "conda-only package(s)",
    "05_climate_nco_ncl.yml": "conda-only package(s)",
    "06_cuda_compilers.yml": "conda-only package(s)",
    "08_old_python_patch.yml": "--nearest-python",  # python=3.8.5, here 3.8.18
    "09_win64_export.yml": "conda-only package(s)",  # tbb
    "10_osx_arm_export.yml": "--nearest-python",  # python=3.11.5, here 3.11.7
    "11_linux_full_export.yml": "--nearest-python",
    "13_jax_cuda.yml": "conda-only package(s)",  # cuda-nvcc
    "16_bioconda_tools.yml": "conda-only package(s)",
    "17_geospatial.yml": "conda-only package(s)",
    "18_mpi_hdf5.yml": "conda-only package(s)",
    "28_match_spec_brackets.yml": "'|' (or)",
    "30_graphviz_ffmpeg_tools.yml": "conda-only package(s)",
}


_probed_once = functools.cache(interpreters.discover)


@pytest.fixture(autouse=True)
def offline_and_probed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download attempts (this machine has no internet: each would take seconds; the
    offline path is tested in test_cli_plan) and the local interpreters probed once."""
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    monkeypatch.setattr(interpreters, "discover", _probed_once)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_each_spec_plans_or_is_refused_for_its_reason(path: Path) -> None:
    spec = specs.load(path)
    conda = backends.get("conda").plan(spec)
    assert conda.packages, "the conda backend lists what it hands to conda"
    try:
        backends.get("uv").plan(spec)
        outcome = None
    except WorkbenchError as exc:
        assert "\n" not in exc.message and exc.exit_code == 2
        assert exc.message.startswith(str(path))
        outcome = exc.message
    expected = REFUSED_BY_UV.get(path.name)
    if expected is None:
        assert outcome is None
    else:
        assert outcome is not None and expected in outcome
    opted = UvOptions(drop_conda_only=True, nearest_python=True)
    if path.name == "28_match_spec_brackets.yml":
        with pytest.raises(WorkbenchError, match=r"'\|' \(or\)"):
            backends.get("uv", opted).plan(spec)
    else:
        plan = backends.get("uv", opted).plan(spec)
        assert "ipykernel" in plan.packages or any("ipykernel" in p for p in plan.packages)


CONDA_PARSE = textwrap.dedent(
    """
    import json, sys
    from conda.env.env import from_file
    from conda.models.match_spec import MatchSpec
    verdicts = {}
    for path in sys.argv[1:]:
        try:
            env = from_file(path)
            for dep in env.dependencies.get("conda", []):
                MatchSpec(dep)
            verdicts[path] = "ok"
        except Exception as exc:
            verdicts[path] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(verdicts))
    """
)


def test_conda_parses_every_spec_unchanged(real_conda: RealConda) -> None:
    """conda 26.7.1's own reader (conda.env.env.from_file, MatchSpec) takes every spec:
    nothing in them is conda-invalid, so workbench's conda backend must take them too
    (checked above), where it refused 8 of 32 before."""
    python = real_conda.root / "venv" / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-c", CONDA_PARSE, *map(str, SPECS)],
        capture_output=True,
        text=True,
        env={**os.environ, **real_conda.env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    verdicts = json.loads(proc.stdout.splitlines()[-1])  # conda prints its nags first
    assert {Path(p).name: v for p, v in verdicts.items() if v != "ok"} == {}
