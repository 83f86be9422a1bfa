"""The conda backend driving FAKES of mamba 2 and micromamba that replay RECORDED behaviour.

mamba and micromamba cannot run here, so tests/fakes/mamba.py replays what their sources
say each version does (cited there, per profile): mamba 2.0.5, mamba 2.8.1, micromamba
1.5.12, micromamba 2.8.1 and mamba's unreleased main. Every test name says `recorded_fake`.
Real conda is driven for real in tests/envs/test_conda_real.py.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import json_data, workbench, write_env
from tests.support.paths import FAKES
from tests.support.realconda import make_lib_wheel
from workbench.envs.backends import conda as conda_backend
from workbench.envs.backends import condatools
from workbench.envs.spec import load as load_spec
from workbench.errors import WorkbenchError

FAKE = FAKES / "mamba.py"
TOOLS = {  # profile -> the name it is installed under
    "mamba-2.0.5": "mamba",
    "mamba-2.8.1": "mamba",
    "micromamba-1.5.12": "micromamba",
    "micromamba-2.8.1": "micromamba",
    "mamba-main-1cdb572": "mamba",
}
SPEC = """
name: c
channels: [conda-forge, nodefaults]
dependencies:
  - python=3.11
  - pip
  - six=1.16
  - wbtest-activate
  - pip:
    - --find-links ../wheels
    - wbtest-lib==1.0
variables:
  WBTEST_VAR: hello
"""
PROBE = (
    "import os; print(os.environ['CONDA_PREFIX'], os.environ.get('WBTEST_ACTIVATED'), "
    "os.environ.get('WBTEST_VAR'), os.environ['PATH'].split(':')[0])"
)


def install_fake(bin_dir: Path, profile: str, tool: str) -> Path:
    """bin_dir/tool: a wrapper that runs the recorded fake of profile."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / tool
    wrapper.write_text(
        f"#!/bin/sh\nFAKE_TOOL={tool} exec '{sys.executable}' '{FAKE}' {profile} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME (the fakes register envs in ~/.conda/environments.txt) and log."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FAKE_CONDA_LOG", str(tmp_path / "fake.log"))
    monkeypatch.delenv("CONDA_OVERRIDE_CUDA", raising=False)
    return home


def use_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str) -> Path:
    wrapper = install_fake(tmp_path / "fakebin", profile, TOOLS[profile])
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    return wrapper


def calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "fake.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def project_with_wheels(project: Path) -> Path:
    make_lib_wheel(project / "wheels", "1.0")
    make_lib_wheel(project / "wheels", "2.0")
    return write_env(project, "c", SPEC)


@pytest.mark.parametrize("profile", list(TOOLS))
def test_recorded_fake_round_trip(
    project: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    """create → lock → --locked → check → drift, against each recorded tool and version:
    one transaction that includes ipykernel, never a prompt, no flag the tool lacks, an
    explicit lock with a hashed pip part, activated kernels, no environments.txt entry."""
    tool = TOOLS[profile]
    wrapper = use_fake(tmp_path, monkeypatch, profile)
    spec = project_with_wheels(project)

    created = workbench("env", "create", "c", "--backend", tool, "--json", cwd=project)
    assert created.returncode == 0, created.stderr
    prefix = Path(json_data(created.stdout)[0]["prefix"])
    log = calls(tmp_path)
    creates = [c for c in log if c["argv"][0] == "create"]
    assert len(creates) == 1 and not creates[0]["prompted"]
    argv = creates[0]["argv"]
    assert argv[:4] == ["create", "--yes", "--prefix", str(prefix)] and argv[4] == "--file"
    copy = Path(argv[5])
    assert copy.parent == spec.parent and copy.name.startswith(".c.workbench-")
    assert not copy.exists()  # the temporary spec copy is gone
    assert "ipykernel" in creates[0]["installed"]  # in the one solve, no second transaction
    assert not any("--explicit" in c["argv"] and c["argv"][0] == "list" for c in log)
    assert ["env", "export", "--prefix", str(prefix), "--explicit", "--md5"] in [
        c["argv"] for c in log
    ]
    assert str(prefix) not in (home / ".conda" / "environments.txt").read_text()

    kernel = json.loads((project / ".workbench/jupyter/kernels/wb-c/kernel.json").read_text())
    launcher = kernel["argv"][:7]
    assert launcher == [
        f"{prefix}/bin/python",
        "-m",
        "workbench.runtime.activate",
        "micromamba",  # the flavour: mamba 2 is driven as micromamba
        str(wrapper),
        str(prefix),
        "--",
    ]
    started = subprocess.run([*launcher, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert started.stdout.split() == [str(prefix), "1", "hello", f"{prefix}/bin"], started.stderr

    assert workbench("env", "lock", "c", "--backend", tool, cwd=project).returncode == 0
    lock = (project / "envs/c.lock").read_text()
    assert "@EXPLICIT" in lock
    assert "/noarch/six-1.16.0-pyh6c4a22f_0.conda#" in lock
    wheel_hash = hashlib.sha256(
        (project / "wheels/wbtest_lib-1.0-py3-none-any.whl").read_bytes()
    ).hexdigest()
    pip_part = [line for line in lock.splitlines() if line.startswith("# pip")]
    assert pip_part == [
        "# pip-lock: 2",
        "# pip: --find-links ../wheels",
        f"# pip: wbtest-lib==1.0 --hash=sha256:{wheel_hash}",
    ]  # six is conda's (its dist-info is in conda-meta), so not in the pip part

    (tmp_path / "fake.log").write_text("")
    locked = workbench("env", "create", "c", "--backend", tool, "--locked", cwd=project)
    assert locked.returncode == 0, locked.stderr
    new_prefix = (project / ".workbench/envs/c").resolve()
    explicit = [c["argv"] for c in calls(tmp_path) if c["argv"][0] == "create"]
    assert explicit[0][:5] == ["create", "--yes", "--prefix", str(new_prefix), "--file"]
    state = json.loads((new_prefix / "conda-meta/state").read_text())
    assert state["env_vars"] == {"WBTEST_VAR": "hello"}  # also where the tool wrote none
    rebuilt = (new_prefix / "workbench-lock.txt").read_text()
    assert [line for line in rebuilt.splitlines() if line.startswith("# pip")] == pip_part

    assert workbench("env", "check", "c", cwd=project).returncode == 0
    python = new_prefix / "bin/python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(project / "wheels/wbtest_lib-2.0-py3-none-any.whl")], check=True)
    drift = workbench("env", "check", "c", "--json", cwd=project)
    assert drift.returncode == 1
    changed = json_data(drift.stdout)[0]["changed"]
    assert changed == [{"name": "wbtest-lib", "locked": "1.0", "installed": "2.0"}]


def test_recorded_fake_mamba_2_0_5_has_no_list_explicit(tmp_path: Path, home: Path) -> None:
    """mamba 2.0.0–2.0.5 reject `list --explicit --md5` as CLI11 does: had a build used it,
    the whole install would be thrown away at the end."""
    wrapper = install_fake(tmp_path / "bin", "mamba-2.0.5", "mamba")
    proc = subprocess.run(
        [str(wrapper), "list", "--prefix", str(tmp_path), "--explicit", "--md5"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 109
    assert proc.stderr.splitlines() == [
        "The following arguments were not expected: --md5 --explicit",
        "Run with --help for more information.",
    ]


def test_recorded_fake_mamba_2_8_bare_explicit_list_is_normalized(
    tmp_path: Path, home: Path
) -> None:
    """mamba 2.0.6+ prints `url#md5` lines without @EXPLICIT (and `#` for pip packages);
    read back, micromamba would take the URLs for match specs. Normalized, it installs."""
    wrapper = install_fake(tmp_path / "bin", "mamba-2.8.1", "mamba")
    spec = tmp_path / "env.yml"
    spec.write_text("dependencies: [python=3.11, pip, six]\n")
    prefix = tmp_path / "p"
    run = [str(wrapper), "create", "--yes", "--prefix", str(prefix), "--file", str(spec)]
    subprocess.run(run, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    listed = subprocess.run(
        [str(wrapper), "list", "--prefix", str(prefix), "--explicit", "--md5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "@EXPLICIT" not in listed and listed.splitlines()[0].startswith("https://")
    explicit = tmp_path / "explicit.txt"
    explicit.write_text(conda_backend.normalize_explicit(listed))
    assert "@EXPLICIT" in explicit.read_text().splitlines()
    copy = tmp_path / "copy"
    run = [str(wrapper), "create", "--yes", "--prefix", str(copy), "--file", str(explicit)]
    subprocess.run(run, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert sorted(p.name for p in (copy / "conda-meta").glob("*.json")) == sorted(
        p.name for p in (prefix / "conda-meta").glob("*.json")
    )


def test_recorded_fake_prompt_waits_on_a_terminal_and_takes_eof_as_yes(
    tmp_path: Path, home: Path
) -> None:
    """Without --yes, mamba 2 prints "Confirm changes: [Y/n]" and waits on stdin: a build
    whose stdin stayed open would hang. At EOF (stdin /dev/null) the default, yes, wins."""
    wrapper = install_fake(tmp_path / "bin", "mamba-2.0.5", "mamba")
    spec = tmp_path / "env.yml"
    spec.write_text("dependencies: [python=3.11]\n")
    run = [str(wrapper), "create", "--prefix", str(tmp_path / "a"), "--file", str(spec)]
    done = subprocess.run(run, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "Confirm changes: [Y/n]" in done.stdout

    run[3] = str(tmp_path / "b")
    waiting = subprocess.Popen(
        run, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2)
        assert waiting.poll() is None  # still at the prompt
        out, _ = waiting.communicate(input="", timeout=60)  # EOF
        assert waiting.returncode == 0 and "Confirm changes" in out
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()


def test_recorded_fake_micromamba_rejects_no_default_packages(tmp_path: Path, home: Path) -> None:
    """micromamba has no create_default_packages and no --no-default-packages flag, so
    workbench passes it to conda only."""
    wrapper = install_fake(tmp_path / "bin", "micromamba-2.8.1", "micromamba")
    proc = subprocess.run(
        [str(wrapper), "create", "--yes", "--prefix", str(tmp_path), "--no-default-packages"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 109 and "--no-default-packages" in proc.stderr
    tool = condatools.CondaTool("micromamba", str(wrapper), condatools.MICROMAMBA)
    for argv in (
        tool.create_from_spec(tmp_path, tmp_path / "s.yml", ("nodefaults",)),
        tool.create_from_explicit(tmp_path, tmp_path / "e.txt"),
    ):
        assert "--no-default-packages" not in argv and "--yes" in argv


def test_recorded_fake_failure_keeps_previous_env(
    project: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fake(tmp_path, monkeypatch, "micromamba-2.8.1")
    spec = project_with_wheels(project)
    assert workbench("env", "create", "c", "--backend", "micromamba", cwd=project).returncode == 0
    before = (project / ".workbench/envs/c").resolve()
    spec.write_text(SPEC.replace("- six=1.16", "- no-such-package"))
    failed = workbench("env", "create", "c", "--backend", "micromamba", cwd=project)
    assert failed.returncode == 1
    assert "micromamba creating env 'c' failed" in failed.stderr
    assert "no-such-package does not exist" in failed.stderr
    assert (project / ".workbench/envs/c").resolve() == before
    assert sorted(p.name for p in spec.parent.iterdir()) == ["c.yml"]  # no copy left behind


def test_recorded_fake_gpu_pins_solve_for_cuda_without_a_gpu(
    project: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GPUs pinned and no GPU here, the solve gets CONDA_OVERRIDE_CUDA (the spec's CUDA
    pin) and the skipped GPU check is a warning naming what was not verified."""
    use_fake(tmp_path, monkeypatch, "mamba-2.8.1")
    (project / "workbench.toml").write_text('[project]\nname = "p"\n[envs.c]\ngpus = [0, 1]\n')
    write_env(project, "c", "dependencies: [python=3.11, six]\n")
    spec = load_spec(project / "envs/c.yml")
    assert conda_backend.cuda_override(spec) == conda_backend.DEFAULT_CUDA
    proc = workbench("env", "create", "c", "--backend", "mamba", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    result = json_data(proc.stdout)[0]
    create = next(c for c in calls(tmp_path) if c["argv"][0] == "create")
    assert create["CONDA_OVERRIDE_CUDA"] == conda_backend.DEFAULT_CUDA
    assert result["gpu"]["skipped"] is True
    warning = next(w for w in result["warnings"] if "check skipped" in w)
    assert "not verified that torch in this env sees 2 GPU(s)" in warning
    assert "CUDA_VISIBLE_DEVICES=0,1" in warning
    assert any("CONDA_OVERRIDE_CUDA" in w for w in result["warnings"])


def test_recorded_fake_legacy_lock_still_installs_and_says_how_to_renew(
    project: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock written before `# pip-lock: 2` keeps `# pip: name==version` lines only: it
    still installs, with a warning to rewrite it."""
    use_fake(tmp_path, monkeypatch, "micromamba-2.8.1")
    project_with_wheels(project)
    assert workbench("env", "lock", "c", "--backend", "micromamba", cwd=project).returncode == 2
    assert workbench("env", "create", "c", "--backend", "micromamba", cwd=project).returncode == 0
    assert workbench("env", "lock", "c", "--backend", "micromamba", cwd=project).returncode == 0
    lock = project / "envs/c.lock"
    old = [
        line
        for line in lock.read_text().splitlines()
        if not line.startswith("# pip") and line.strip()
    ]
    lock.write_text("\n".join(old) + "\n# pip: wbtest-lib==1.0\n")
    env = {"PIP_FIND_LINKS": str(project / "wheels")}  # where the old lock's pin comes from
    locked = workbench(
        "env", "create", "c", "--backend", "micromamba", "--locked", "--json", cwd=project, env=env
    )
    assert locked.returncode == 0, locked.stderr
    warnings = json_data(locked.stdout)[0]["warnings"]
    assert any("workbench env lock c" in w and "only names and versions" in w for w in warnings)


def test_mamba_is_the_default_where_installed(
    project: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fake(tmp_path, monkeypatch, "mamba-2.8.1")
    install_fake(tmp_path / "fakebin", "micromamba-2.8.1", "micromamba")
    write_env(project, "c", SPEC)
    plan = json_data(workbench("env", "plan", "c", "--json", cwd=project).stdout)
    assert plan["backend"] == "mamba"  # mamba first, then micromamba, then conda
    assert "six=1.16" in plan["packages"] and "ipykernel" in plan["packages"]


@pytest.mark.parametrize(
    ("name", "output", "expected"),
    [
        ("conda", "conda 26.7.1\n", (condatools.CONDA, (26, 7, 1))),
        ("mamba", "mamba 1.5.12\nconda 24.11.3\n", (condatools.CONDA, (1, 5, 12))),
        ("mamba", "2.0.5\n", (condatools.MICROMAMBA, (2, 0, 5))),
        ("micromamba", "1.5.12\n", (condatools.MICROMAMBA, (1, 5, 12))),
        ("micromamba", "2.8.1\n", (condatools.MICROMAMBA, (2, 8, 1))),
    ],
)
def test_version_output_of_each_tool(name: str, output: str, expected: tuple) -> None:
    """`--version` as each tool prints it (conda/cli/main.py; mamba 1.x mamba/mamba.py
    prints "mamba X" then conda's line; micromamba/src/umamba.cpp a bare version)."""
    assert condatools.parse_version(name, output) == expected


def test_version_output_that_is_no_known_tool() -> None:
    with pytest.raises(WorkbenchError, match="cannot tell which mamba this is"):
        condatools.parse_version("mamba", "Usage: something else\n")


def test_spec_with_ipykernel_in_pip_section_is_handed_over_unchanged(tmp_path: Path) -> None:
    """ipykernel from the pip: section counts; nothing to add, so the tool reads the spec
    itself (no copy)."""
    (tmp_path / "envs").mkdir()
    spec_path = tmp_path / "envs/k.yml"
    spec_path.write_text("dependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - ipykernel>=6\n")
    spec = load_spec(spec_path)
    assert conda_backend.has_ipykernel(spec)
    tool = condatools.CondaTool("micromamba", "/bin/false", condatools.MICROMAMBA)
    with conda_backend.solver_spec(spec, tool) as handed:
        assert handed == spec_path
    plan = conda_backend.CondaBackend("micromamba").plan(spec)
    assert "ipykernel" not in plan.packages


def test_list_json_shapes_and_pip_entries() -> None:
    """`list --json`: a list (conda, micromamba ≤ 2.8) or {"packages": [...]} (mamba main);
    pip entries (channel pypi) are left to the env's own pip."""
    rows = [
        {"name": "python", "version": "3.11.7", "channel": "conda-forge"},
        {"name": "idna", "version": "3.10", "channel": "pypi", "build_string": "pypi_0"},
    ]
    for out in (json.dumps(rows), json.dumps({"packages": rows})):
        listed = conda_backend.listed_packages(out)
        assert [p["name"] for p in listed if not conda_backend.is_pip_entry(p)] == ["python"]


def test_recorded_fake_kernel_of_an_older_workbench_is_registered_activated(
    project: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernelspec an older workbench wrote for a conda env starts python unactivated; the
    next `env create` (nothing to build) registers it activated."""
    use_fake(tmp_path, monkeypatch, "micromamba-2.8.1")
    write_env(project, "c", "dependencies: [python=3.11, wbtest-activate]\n")
    assert workbench("env", "create", "c", "--backend", "micromamba", cwd=project).returncode == 0
    kernel_json = project / ".workbench/jupyter/kernels/wb-c/kernel.json"
    kernel = json.loads(kernel_json.read_text())
    activated = kernel["argv"]
    kernel["argv"] = [activated[0], *activated[7:]]
    del kernel["metadata"]["workbench"]["python"]
    kernel_json.write_text(json.dumps(kernel))
    again = workbench("env", "create", "c", "--backend", "micromamba", "--json", cwd=project)
    assert json_data(again.stdout)[0]["status"] == "unchanged"
    assert json.loads(kernel_json.read_text())["argv"] == activated


def test_kernels_without_a_launcher_start_python_itself(tmp_path: Path) -> None:
    """uv envs keep their kernels: argv starts the interpreter directly."""
    from workbench.envs import kernels
    from workbench.project import load

    (tmp_path / "workbench.toml").write_text('[project]\nname = "k"\n')
    python = tmp_path / "env/bin/python"
    spec = kernels.register(load(tmp_path), "k", python, "3.11.7", {}, None, {})
    assert list(spec.argv) == [str(python), *kernels.LAUNCHER_ARGS]
    assert kernels.python_command(spec)[0] == [str(python)]


def test_activation_launcher_refuses_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.runtime.activate", "conda", "/bin/true", "/p"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("usage: python -m workbench.runtime")
