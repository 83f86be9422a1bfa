"""Parsing conda environment.yml files: the full syntax is accepted, bad input named precisely."""

from pathlib import Path

import pytest

from tests.conftest import write_env
from workbench import spec as specs
from workbench.errors import WorkbenchError

FULL = """
name: full
channels:
  - pytorch
  - nvidia
  - conda-forge
prefix: /opt/conda/envs/full
dependencies:
  - python=3.11
  - pytorch::pytorch=2.13.0=*cpu*
  - conda-forge::numpy>=1.26,<3
  - scipy==1.14.1
  - cudatoolkit=11.8
  - pytorch-cuda=12.1
  - _openmp_mutex
  - pip
  - pip:
      - --extra-index-url https://example.invalid/simple
      - --find-links ./wheels
      - -r requirements-extra.txt
      - -e ./localpkg
      - requests[socks]>=2.31; python_version >= "3.8"
variables:
  HF_HOME: /data/hf
  OMP_NUM_THREADS: 2
"""


def test_full_conda_syntax_parses(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "requirements-extra.txt").write_text("idna\n")
    spec = specs.load(write_env(tmp_path, "full", FULL))
    names = [d.name for d in spec.conda]
    assert names == [
        "python",
        "pytorch",
        "numpy",
        "scipy",
        "cudatoolkit",
        "pytorch-cuda",
        "_openmp_mutex",
        "pip",
    ]
    torch = spec.conda[1]
    assert (torch.channel, torch.version, torch.build) == ("pytorch", "==2.13.0", "*cpu*")
    kinds = [(line.kind, line.value) for line in spec.pip]
    assert kinds[0] == ("--extra-index-url", "https://example.invalid/simple")
    assert kinds[1] == ("--find-links", "./wheels")
    assert kinds[2] == ("--requirement", str(tmp_path / "envs" / "requirements-extra.txt"))
    assert kinds[3] == ("--editable", str(tmp_path / "envs" / "localpkg"))
    assert kinds[4][0] == "requirement"
    assert spec.variables == {"HF_HOME": "/data/hf", "OMP_NUM_THREADS": "2"}
    assert any("'prefix' ignored" in w for w in spec.warnings)


def test_hash_follows_content_and_included_files(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    extra = tmp_path / "envs" / "requirements-extra.txt"
    extra.write_text("idna\n")
    path = write_env(tmp_path, "full", FULL)
    first = specs.load(path).content_hash()
    assert specs.load(path).content_hash() == first
    extra.write_text("idna==3.7\n")
    assert specs.load(path).content_hash() != first


def test_unknown_key_warns_like_conda(tmp_path: Path) -> None:
    spec = specs.load(write_env(tmp_path, "a", "name: a\nfoo: 1\ndependencies: [python=3.11]\n"))
    assert any("unknown key 'foo'" in w and "a.yml:2" in w for w in spec.warnings)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name: a\ndependencies:\n  - python=3.11\n   - bad: [\n", "a.yml:4: invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("dependencies: numpy\n", "dependencies must be a list, not str"),
        (
            "dependencies:\n  - numpy\n  - 'numpy >=>= 1'\n",
            "a.yml:3: 'numpy >=>= 1' is not a valid conda match spec",
        ),
        (
            "dependencies:\n  - pip:\n    - 'requests >>= 2'\n",
            "a.yml:3: 'requests >>= 2' is not a valid pip requirement",
        ),
        ("dependencies:\n  - pip:\n    - -r missing.txt\n", "file"),
        (
            "dependencies:\n  - pip:\n    - --frobnicate x\n",
            "unsupported pip option '--frobnicate'",
        ),
        ("dependencies:\n  - conda: [x]\n", "only a 'pip:' list is allowed"),
        ("dependencies: []\nvariables: [1, 2]\n", "variables must map names"),
    ],
)
def test_bad_specs_give_one_line_naming_file_and_line(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(WorkbenchError) as err:
        specs.load(write_env(tmp_path, "a", body))
    assert expected in err.value.message
    assert "\n" not in err.value.message
    assert err.value.exit_code == 2


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="no such spec file"):
        specs.load(tmp_path / "nope.yml")
