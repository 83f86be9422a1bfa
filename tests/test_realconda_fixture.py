"""The real-conda fixture (tests/support/realconda.py) works: offline creates, env specs with a pip
section, explicit locks, activation, kernels; and what conda 26.7.1 does with a few inputs."""

import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.kernels import run_in_kernel
from tests.support.realconda import RealConda, ensure_conda, missing_inputs, run_command


def write_spec(path: Path, channels: list[str], dependencies: str) -> Path:
    """An environment.yml with CHANNELS and the DEPENDENCIES block (YAML list lines)."""
    body = f"channels: {json.dumps(channels)}\ndependencies:\n{textwrap.dedent(dependencies)}"
    path.write_text(body)
    return path


def explicit_urls(rc: RealConda, prefix: Path) -> list[str]:
    """The package URLs of `conda list --explicit --md5` for PREFIX."""
    out = rc.run("list", "-p", str(prefix), "--explicit", "--md5").stdout
    return sorted(line for line in out.splitlines() if line.startswith("file://"))


@pytest.fixture(scope="module")
def kernel_env(real_conda: RealConda, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An env made by `conda env create` from a spec with ipykernel, activation and pip."""
    root = tmp_path_factory.mktemp("kernel-env")
    spec = write_spec(
        root / "env.yml",
        [real_conda.channel_url],
        """\
        - python=3.11
        - ipykernel
        - wbtest-activate
        - pip:
          - six==1.17.0
        """,
    )
    prefix = root / "env"
    real_conda.run("env", "create", "-p", str(prefix), "-f", str(spec))
    return prefix


def test_warm_cache_is_fast_and_confined(real_conda: RealConda) -> None:
    started = time.monotonic()
    again = ensure_conda(real_conda.root.parent)
    assert time.monotonic() - started < 0.5
    assert again == real_conda
    assert real_conda.version == "26.7.1"
    assert real_conda.run("--version").stdout.strip() == "conda 26.7.1"
    config = json.loads(real_conda.run("config", "--show", "--json").stdout)
    assert config["channels"] == [real_conda.channel_url]
    assert config["pkgs_dirs"] == [real_conda.env["CONDA_PKGS_DIRS"]]
    assert config["offline"] is True and config["register_envs"] is False


def test_create_python_and_pip(real_conda: RealConda, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    real_conda.run("create", "-p", str(prefix), "python=3.11", "pip", "--yes")
    code = "import ctypes, sqlite3, ssl, sys; print(sys.prefix, sys.version_info[:2])"
    out = run_command([str(prefix / "bin" / "python"), "-c", code]).stdout
    assert out.split()[0] == str(prefix) and "(3, 11)" in out
    pip = run_command([str(prefix / "bin" / "python"), "-m", "pip", "--version"]).stdout
    assert str(prefix / "lib" / "python3.11" / "site-packages") in pip
    # register_envs is off: conda still creates ~/.conda/environments.txt, but empty
    environments = Path.home() / ".conda" / "environments.txt"
    assert not environments.exists() or str(prefix) not in environments.read_text()


def test_env_create_with_pip_section_lists_both_kinds(
    real_conda: RealConda,
    kernel_env: Path,
) -> None:
    listed = json.loads(real_conda.run("list", "-p", str(kernel_env), "--json").stdout)
    by_name = {entry["name"]: entry for entry in listed}
    assert by_name["ipykernel"]["base_url"] == real_conda.channel_url
    assert by_name["ipykernel"]["platform"] == "noarch"
    assert by_name["pyzmq"]["platform"] == "linux-64"
    assert by_name["six"] | {"base_url": None} == {
        "base_url": None,
        "build_number": 0,
        "build_string": "pypi_0",
        "channel": "pypi",
        "dist_name": "six-1.17.0-pypi_0",
        "name": "six",
        "platform": "pypi",
        "version": "1.17.0",
    }


def test_explicit_list_recreates_the_env(
    real_conda: RealConda,
    kernel_env: Path,
    tmp_path: Path,
) -> None:
    lock = tmp_path / "explicit.txt"
    lock.write_text(real_conda.run("list", "-p", str(kernel_env), "--explicit", "--md5").stdout)
    assert "@EXPLICIT" in lock.read_text() and "#" in explicit_urls(real_conda, kernel_env)[0]
    copy = tmp_path / "copy"
    real_conda.run("create", "-p", str(copy), "--file", str(lock), "--yes")
    assert explicit_urls(real_conda, copy) == explicit_urls(real_conda, kernel_env)
    assert not (copy / "lib" / "python3.11" / "site-packages" / "six.py").exists()


def test_conda_run_activates_the_env(real_conda: RealConda, kernel_env: Path) -> None:
    code = "import os; print(os.environ['WBTEST_ACTIVATED'])"
    out = real_conda.run("run", "-p", str(kernel_env), "python", "-c", code).stdout
    assert out.strip() == "1"


def test_kernel_runs_in_the_activated_env(
    real_conda: RealConda,
    kernel_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec_dir = tmp_path / "jupyter" / "kernels" / "wbtest-conda"
    spec_dir.mkdir(parents=True)
    argv = [str(real_conda.exe), "run", "-p", str(kernel_env), "--no-capture-output"]
    argv += ["python", "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f"]
    kernel = {"argv": [*argv, "{connection_file}"], "display_name": "c", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name, value in real_conda.env.items():
        monkeypatch.setenv(name, value)
    code = "import os, sys; print(sys.prefix, os.environ.get('WBTEST_ACTIVATED'))"
    assert run_in_kernel("wbtest-conda", code).split() == [str(kernel_env), "1"]


def test_nodefaults_is_a_channel_name_to_conda(
    real_conda: RealConda,
    tmp_path: Path,
) -> None:
    """conda 26.7.1 looks `nodefaults` up as a channel: offline (the fixture's default) it is
    skipped like any remote channel; online it fails with an HTTP error for .../nodefaults
    (here a failed connection: conda.anaconda.org does not resolve)."""
    spec = write_spec(tmp_path / "env.yml", [real_conda.channel_url, "nodefaults"], "- python\n")
    real_conda.run("env", "create", "-p", str(tmp_path / "offline"), "-f", str(spec))
    online = real_conda.run(
        "env",
        "create",
        "-p",
        str(tmp_path / "online"),
        "-f",
        str(spec),
        check=False,
        env={"CONDA_OFFLINE": "false", "CONDA_REMOTE_MAX_RETRIES": "0"},
    )
    assert online.returncode != 0
    assert "CondaHTTPError" in online.stderr and "/nodefaults/" in online.stderr


def test_no_default_packages_is_honoured(
    real_conda: RealConda,
    tmp_path: Path,
) -> None:
    defaults = {"CONDA_CREATE_DEFAULT_PACKAGES": "wbtest-lib=1.0"}
    show = "import wbtest_lib; print(wbtest_lib.__version__)"
    with_defaults = tmp_path / "with"
    real_conda.run("create", "-p", str(with_defaults), "python", "--yes", env=defaults)
    assert run_command([str(with_defaults / "bin" / "python"), "-c", show]).stdout == "1.0\n"
    without = tmp_path / "without"
    args = ("create", "-p", str(without), "python", "wbtest-lib", "--no-default-packages")
    real_conda.run(*args, "--yes", env=defaults)
    assert run_command([str(without / "bin" / "python"), "-c", show]).stdout == "2.0\n"


def test_missing_wheel_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.realconda.SHARED_CONDA", tmp_path)
    reason = missing_inputs()
    assert reason is not None and str(tmp_path) in reason
    with pytest.raises(RuntimeError, match="cannot build a real conda"):
        ensure_conda(tmp_path / "cache")
