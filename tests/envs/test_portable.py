"""`env export` → `env import` round trips: an export pins what the spec asked for to the
lock (a VCS requirement to its commit), keeps channels and variables, drops builds and
prefix; an import from that file, from a venv, from a conda env (real conda) or from a
Windows export builds the same package versions."""

import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.support.cli import json_data, workbench, write_env
from tests.support.paths import SPECS
from tests.support.projects import git, make_package
from tests.support.realconda import RealConda
from workbench import project as projects
from workbench.envs import builds

ORIGINAL = """
name: research
channels:
  - conda-forge
dependencies:
  - python=3.11
  - six
  - pip:
    - idna>=3
    - git+file://{root}/vendor/gitpkg
variables:
  HF_HOME: /data/hf
"""


def installed(project: Path, env: str) -> dict[str, str]:
    loaded = projects.load(project)
    prefix = builds.require_built(loaded, env)
    from workbench.envs.backends.uv import UvBackend

    return UvBackend().installed(prefix)


def test_export_then_import_builds_the_same_versions(project: Path, tmp_path: Path) -> None:
    repo = project / "vendor" / "gitpkg"
    make_package(repo, "gitpkg", "0.1.0")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    commit = git(repo, "rev-parse", "HEAD")
    write_env(project, "research", ORIGINAL.format(root=project))
    assert workbench("env", "create", "research", cwd=project).returncode == 0

    exported = workbench("env", "export", "research", "--json", cwd=project)
    assert exported.returncode == 0, exported.stderr
    data = json_data(exported.stdout)
    assert data["source"] == "its active build" and data["unpinned"] == []
    spec = yaml.safe_load(data["yaml"])
    before = installed(project, "research")
    assert spec == {
        "name": "research",
        "channels": ["conda-forge"],
        "dependencies": [
            "python=3.11.7",
            f"six={before['six']}",
            {
                "pip": [
                    f"idna=={before['idna']}",
                    f"gitpkg @ git+file://{repo}@{commit}",
                ]
            },
        ],
        "variables": {"HF_HOME": "/data/hf"},
    }
    assert "prefix" not in spec and "=py3" not in data["yaml"]
    # Printed for people as the YAML itself, so `> file` works.
    printed = workbench("env", "export", "research", cwd=project)
    assert yaml.safe_load(printed.stdout) == spec

    exported_file = tmp_path / "research-export.yml"
    written = workbench("env", "export", "research", "-o", str(exported_file), cwd=project)
    assert written.returncode == 0 and exported_file.read_text() == data["yaml"]
    # The repository moves on; the export still names the commit that was built.
    (repo / "src" / "gitpkg" / "__init__.py").write_text("VERSION = '0.2.0'\n")
    git(repo, "commit", "-qam", "second")

    imported = workbench(
        "env", "import", "copy", "--from", str(exported_file), "--json", cwd=project
    )
    assert imported.returncode == 0, imported.stderr
    assert json_data(imported.stdout)["kind"] == "export file"
    assert workbench("env", "create", "copy", cwd=project).returncode == 0
    assert installed(project, "copy") == before

    # A venv (here the built env itself) imports with every package pinned.
    venv = workbench(
        "env", "import", "fromvenv", "--from", ".workbench/envs/research", "--json", cwd=project
    )
    assert venv.returncode == 0, venv.stderr
    assert json_data(venv.stdout)["kind"] == "venv"
    assert workbench("env", "create", "fromvenv", cwd=project).returncode == 0
    assert installed(project, "fromvenv") == before

    again = workbench("env", "import", "copy", "--from", str(exported_file), cwd=project)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr


def test_import_of_a_windows_export_is_portable(project: Path) -> None:
    proc = workbench(
        "env",
        "import",
        "thesis",
        "--from",
        str(SPECS / "09_win64_export.yml"),
        "--json",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    dropped = {d["spec"].split("=")[0] for d in json_data(proc.stdout)["dropped"]}
    assert {"vc", "vs2015_runtime", "ucrt", "win_inet_pton", "pywin32"} <= dropped
    text = (project / "envs" / "thesis.yml").read_text()
    spec = yaml.safe_load(text)
    assert "prefix" not in spec
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    assert "numpy=1.25.2" in conda and "python=3.9.18" in conda
    assert not any(d.count("=") > 1 for d in conda), "a build string survived"
    plan = workbench("env", "plan", "thesis", "--backend", "uv", "--drop-conda-only", cwd=project)
    assert plan.returncode == 0, plan.stderr
    assert "made on Windows" not in plan.stderr


def test_import_refusals_are_one_line(project: Path, tmp_path: Path) -> None:
    for argv, expected in [
        (["--from", "no-such-env-anywhere"], "no conda env named 'no-such-env-anywhere'"),
        (["--from", str(tmp_path)], "neither a conda env (no conda-meta/) nor a venv"),
        (["--from", "./missing.yml"], "./missing.yml: no such file or folder"),
    ]:
        proc = workbench("env", "import", "x", *argv, cwd=project)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = workbench("env", "import", "bad/name", "--from", str(tmp_path), cwd=project)
    assert proc.returncode == 2 and "not a valid env name" in proc.stderr


def test_import_from_a_conda_env_builds_the_same_python_packages(
    real_conda: RealConda, project: Path
) -> None:
    """A conda env made by real conda (python, ipykernel from the channel, six from pip),
    taken by name (conda on PATH lists it) and by prefix: the spec pins python, every
    Python package and the pip part; built with uv it holds the same versions."""
    env_name = f"wbimport{os.getpid()}"
    spec = project / "conda-env.yml"
    spec.write_text(
        f"channels: [{real_conda.channel_url}]\ndependencies:\n  - python=3.11\n"
        "  - ipykernel\n  - pip\n  - pip:\n    - six==1.16.0\n"
    )
    real_conda.run("env", "create", "-n", env_name, "-f", str(spec))
    listed = [Path(p) for p in json.loads(real_conda.run("env", "list", "--json").stdout)["envs"]]
    (prefix,) = [p for p in listed if p.name == env_name]
    try:
        path_env = {"PATH": f"{real_conda.bin_dir}{os.pathsep}{os.environ['PATH']}"}
        by_name = workbench(
            "env",
            "import",
            "fromconda",
            "--from",
            env_name,
            "--json",
            cwd=project,
            env={**real_conda.env, **path_env},
        )
        assert by_name.returncode == 0, by_name.stderr
        result = json_data(by_name.stdout)
        assert (result["kind"], result["source"]) == ("conda env", str(prefix))
        imported = yaml.safe_load((project / "envs" / "fromconda.yml").read_text())
        conda = [d for d in imported["dependencies"] if isinstance(d, str)]
        pip = next(d["pip"] for d in imported["dependencies"] if isinstance(d, dict))
        assert "python=3.11.7" in conda and any(d.startswith("ipykernel=") for d in conda)
        assert pip == ["six==1.16.0"]
        assert imported["channels"] == [real_conda.channel_url]

        by_prefix = workbench("env", "import", "p", "--from", str(prefix), cwd=project)
        assert by_prefix.returncode == 0, by_prefix.stderr
        assert (project / "envs" / "p.yml").read_text().split("\n", 1)[1] == (
            (project / "envs" / "fromconda.yml")
            .read_text()
            .split("\n", 1)[1]
            .replace("name: fromconda", "name: p")
        )

        built = workbench("env", "create", "fromconda", "--backend", "uv", cwd=project)
        assert built.returncode == 0, built.stderr
        listing = subprocess.run(
            [str(prefix / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        from packaging.utils import canonicalize_name

        in_conda = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listing.stdout)}
        in_uv = installed(project, "fromconda")
        for name in ("ipykernel", "ipython", "jupyter-client", "tornado", "six", "pyzmq"):
            assert in_uv[name] == in_conda[name], name
    finally:
        real_conda.run("env", "remove", "-n", env_name, "--yes", check=False)
