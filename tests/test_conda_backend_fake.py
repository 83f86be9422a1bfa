"""The conda-family backend driven against a FAKE conda CLI (tests/fakes/conda).

conda channels are unreachable on this machine, so real conda cannot run here; these
tests pin the exact command lines workbench gives conda, mamba and micromamba, and the
handling of their recorded output.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import json_data, workbench, write_env

FAKE = Path(__file__).parent / "fakes" / "conda"
SPEC = """
name: c
channels: [conda-forge]
dependencies:
  - python=3.11
  - six=1.16
  - pip:
    - idna==3.10
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for tool in ("conda", "mamba", "micromamba"):
        shutil.copy(FAKE, bin_dir / tool)
    log = tmp_path / "conda.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CONDA_LOG", str(log))
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


@pytest.mark.parametrize("tool", ["conda", "mamba"])
def test_fake_conda_create_lock_and_locked_install(project: Path, fake: Path, tool: str) -> None:
    spec = write_env(project, "c", SPEC)
    created = workbench("env", "create", "c", "--backend", tool, "--json", cwd=project)
    assert created.returncode == 0, created.stderr
    prefix = Path(json_data(created.stdout)[0]["prefix"])
    log = calls(fake)
    assert log[0] == f"{tool} env create --prefix {prefix} --file {spec}"
    assert log[1] == f"{tool} install --yes --prefix {prefix} --channel conda-forge ipykernel"
    assert f"{tool} list --prefix {prefix} --explicit --md5" in log

    fake.write_text("")
    assert workbench("env", "lock", "c", "--backend", tool, cwd=project).returncode == 0
    lock = (project / "envs/c.lock").read_text()
    assert f"# backend: {tool}" in lock and "@EXPLICIT" in lock
    assert "six-1.16.0-pyh6c4a22f_0.tar.bz2#e5f25f8dbc060e9a8d912e432202afc2" in lock
    assert "# pip: idna==3.10" in lock

    fake.write_text("")
    locked = workbench("env", "create", "c", "--backend", tool, "--locked", cwd=project)
    assert locked.returncode == 0, locked.stderr
    log = calls(fake)
    new_prefix = (project / ".workbench/envs/c").resolve()
    assert log[0].startswith(f"{tool} create --yes --prefix {new_prefix} --file ")
    assert log[1].startswith("python -m pip install --no-deps -r ")

    fake.write_text("")
    assert workbench("env", "check", "c", cwd=project).returncode == 0  # lock == list --json


def test_fake_micromamba_command_lines(project: Path, fake: Path) -> None:
    spec = write_env(project, "c", SPEC.replace("  - six=1.16", "  - six=1.16\n  - ipykernel"))
    created = workbench("env", "create", "c", "--backend", "micromamba", "--json", cwd=project)
    assert created.returncode == 0, created.stderr
    prefix = json_data(created.stdout)[0]["prefix"]
    log = calls(fake)
    assert log[0] == f"micromamba create --yes --prefix {prefix} --file {spec}"
    assert not any(" install " in line for line in log)  # the spec already has ipykernel
    assert f"micromamba env export --prefix {prefix} --explicit --md5" in log


def test_fake_conda_failure_keeps_previous_env(project: Path, fake: Path) -> None:
    write_env(project, "c", SPEC)
    assert workbench("env", "create", "c", "--backend", "conda", cwd=project).returncode == 0
    before = (project / ".workbench/envs/c").resolve()
    write_env(project, "c", SPEC.replace("six=1.16", "six=1.17"))
    failed = workbench(
        "env", "create", "c", "--backend", "conda", cwd=project, env={"FAKE_CONDA_EXIT": "1"}
    )
    assert failed.returncode == 1 and "conda creating env 'c' failed" in failed.stderr
    assert (project / ".workbench/envs/c").resolve() == before


def test_conda_family_is_the_default_where_installed(project: Path, fake: Path) -> None:
    write_env(project, "c", SPEC)
    plan = json_data(workbench("env", "plan", "c", "--json", cwd=project).stdout)
    assert plan["backend"] == "mamba"  # mamba first, then micromamba, then conda
    assert "six=1.16" in plan["packages"] and "ipykernel" in plan["packages"]
