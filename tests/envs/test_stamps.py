"""The no-op `env create` answered from the build stamp (workbench.envs.stamps): the same
output as the full path, and the full path again after any change it decides on."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import json_data, workbench, write_env
from workbench import grammar
from workbench.envs import stamps
from workbench.results import Result

SPEC = """
dependencies:
  - python=3.11
  - pip:
    - -r extra.txt
"""
MANIFEST = '[project]\nname = "stamped"\n'
# `env create tiny` in a process that cannot load the envs stack: only the stamp answers.
WITHOUT_ENVS_STACK = (
    "import sys\n"
    "for name in ('workbench.envs.builds', 'workbench.envs.spec', 'rich', 'yaml'):\n"
    "    sys.modules[name] = None\n"
    "from workbench.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose env tiny (python and an -r file) is built and stamped."""
    top = tmp_path_factory.mktemp("stamps")
    root = top / "proj"
    write_env(root, "tiny", SPEC)
    (root / "envs" / "extra.txt").write_text("six==1.16.0\n")
    (root / "workbench.toml").write_text(MANIFEST)
    proc = workbench("env", "create", "tiny", cwd=root, env=_jupyter(top))
    assert proc.returncode == 0, proc.stderr
    assert stamps.path(root, "tiny").is_file()
    return root


def _jupyter(top: Path) -> dict[str, str]:
    return {"JUPYTER_DATA_DIR": str(top / "user-jupyter")}


def answered(root: Path, *argv: str) -> Result | None:
    """What the stamp answers for `env create ARGV --json` in root (None: the full path)."""
    args = grammar.parser().parse_args(["env", "create", *argv, "--json", "--project", str(root)])
    return stamps.unchanged(args)


@pytest.mark.parametrize(
    ("argv", "variables"),
    [(("--json",), {}), ((), {}), ((), {"FORCE_COLOR": "1"})],
    ids=["json", "plain", "colour"],
)
def test_no_op_answers_as_the_full_path(built: Path, argv: tuple, variables: dict) -> None:
    stamps.path(built, "tiny").unlink()
    full = workbench("env", "create", "tiny", *argv, cwd=built, env=variables)
    quick = subprocess.run(
        [sys.executable, "-c", WITHOUT_ENVS_STACK, "env", "create", "tiny", *argv],
        cwd=built,
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # On a terminal (or with FORCE_COLOR) the full path shows a spinner while it works,
    # erasing it (ESC[2K) before its line: what stays is what counts.
    shown = full.stderr.rsplit("\x1b[2K", 1)[-1]
    assert (quick.returncode, quick.stdout, quick.stderr) == (full.returncode, full.stdout, shown)
    if "--json" in argv:
        assert json_data(quick.stdout)[0]["status"] == "unchanged"
    else:
        assert "tiny: unchanged (" in quick.stderr
        assert ("\x1b[" in quick.stderr) == bool(variables)


def _replace(path: Path, text: str) -> Callable[[], None]:
    old = path.read_bytes() if path.exists() else None
    path.write_text(text)
    return lambda: path.write_bytes(old) if old is not None else path.unlink()


def _move_away(path: Path) -> Callable[[], None]:
    away = path.with_name(path.name + ".away")
    path.rename(away)
    return lambda: away.rename(path)


def _ask_for_a_backend(_root: Path, env: pytest.MonkeyPatch) -> Callable[[], None]:
    env.setenv("WORKBENCH_BACKEND", "mamba")
    return env.undo


def _active(root: Path) -> Path:
    return (root / ".workbench" / "envs" / "tiny").resolve()


CHANGES: dict[str, Callable[[Path, pytest.MonkeyPatch], Callable[[], None]]] = {
    "spec edited": lambda root, _: _replace(root / "envs/tiny.yml", SPEC + "# note\n"),
    "-r file edited": lambda root, _: _replace(root / "envs/extra.txt", "six==1.17.0\n"),
    "lock written": lambda root, _: _replace(root / "envs/tiny.lock", "# a lock\n"),
    "manifest gpus": lambda root, _: _replace(
        root / "workbench.toml", MANIFEST + "[envs.tiny]\ngpus = [0]\n"
    ),
    "spec beside": lambda root, _: _replace(root / "envs/tiny.yaml", SPEC),
    "prefix gone": lambda root, _: _move_away(_active(root)),
    "record gone": lambda root, _: _move_away(_active(root) / "workbench-env.json"),
    "kernel gone": lambda root, _: _move_away(
        root / ".workbench/jupyter/kernels/wb-tiny/kernel.json"
    ),
    "runtime link gone": lambda root, _: _move_away(root / ".workbench/pylib/workbench/runtime"),
    "backend asked for": _ask_for_a_backend,
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_takes_the_full_path(
    built: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert answered(built, "tiny") is not None
    undo = CHANGES[change](built, monkeypatch)
    try:
        assert answered(built, "tiny") is None
    finally:
        undo()
    assert answered(built, "tiny") is not None  # the change itself was what mattered


def test_a_conda_tool_on_path_takes_the_full_path(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With mamba on PATH, it and not uv builds envs by default: another build."""
    (tmp_path / "mamba").write_text("#!/bin/sh\n")
    (tmp_path / "mamba").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert answered(built, "tiny") is None


@pytest.mark.parametrize(
    "argv",
    [(), ("--all",), ("tiny", "--force"), ("tiny", "--locked"), ("tiny", "--user")]
    + [("tiny", "--backend", "uv"), ("tiny", "--nearest-python"), ("tiny", "--drop-conda-only")],
)
def test_flags_that_decide_take_the_full_path(built: Path, argv: tuple) -> None:
    assert answered(built, *argv) is None


def test_a_copied_project_is_not_answered_by_the_stamps_it_copied(
    built: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for part in ("workbench.toml", "envs", ".workbench/stamps"):
        if (built / part).is_dir():
            shutil.copytree(built / part, copy / part)
        else:
            shutil.copy(built / part, copy / part)
    assert answered(copy, "tiny") is None


def test_full_path_after_a_change_stamps_again(built: Path) -> None:
    """A comment added to the spec changes no build: the full path answers unchanged and
    leaves a stamp for the new bytes."""
    undo = _replace(built / "envs/tiny.yml", SPEC + "# only a comment\n")
    try:
        assert answered(built, "tiny") is None
        proc = workbench("env", "create", "tiny", "--json", cwd=built)
        assert json_data(proc.stdout)[0]["status"] == "unchanged"
        assert answered(built, "tiny") is not None
    finally:
        undo()


def test_env_with_gpus_keeps_no_stamp(built: Path) -> None:
    """Its create checks the GPUs every time."""
    undo = _replace(built / "workbench.toml", MANIFEST + "[envs.tiny]\ngpus = [0]\n")
    try:
        proc = workbench("env", "create", "tiny", cwd=built)
        assert proc.returncode == 0, proc.stderr
        assert not stamps.path(built, "tiny").exists()
    finally:
        undo()
    workbench("env", "create", "tiny", cwd=built)
    assert answered(built, "tiny") is not None


def test_a_stamp_that_looks_outside_the_project_is_not_read(built: Path) -> None:
    """A stamp is read before anything else checks it: it may name project files only."""
    stamp = stamps.path(built, "tiny")
    data = json.loads(stamp.read_text())
    data["world"]["files"]["/etc/hostname"] = stamps.observe([Path("/etc/hostname")])["files"][
        "/etc/hostname"
    ]
    undo = _replace(stamp, json.dumps(data))
    try:
        assert answered(built, "tiny") is None
    finally:
        undo()
    assert answered(built, "tiny") is not None
