"""`workbench init` in repositories laid out the way real ones are: the spec at the root,
notebooks in two folders (one saved with kernel `python3`), then `env create --all` and
`workbench test` work there; init writes additions only and a second run changes nothing."""

import os
import re
import shlex
import textwrap
from pathlib import Path

import nbformat
import pytest

from tests.support.cli import json_data, workbench
from tests.support.projects import make_package
from workbench import discovery
from workbench.envs import interpreters
from workbench.envs import spec as specs

# Offline, as on the servers these shapes come from: no uv-managed Python downloads.
OFFLINE = {"UV_PYTHON_DOWNLOADS": "never"}


def notebook(path: Path, kernel: str | None, display: str, *cells: str) -> None:
    """A notebook saved with that kernel (None: with no kernelspec at all)."""
    nb = nbformat.v4.new_notebook()
    if kernel is not None:
        nb.metadata["kernelspec"] = {
            "name": kernel,
            "display_name": display,
            "language": "python",
        }
    nb.cells = [nbformat.v4.new_code_cell(code) for code in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A researcher's repository: environment.yml at the root installing the repository
    itself (-e .), a notebooks/ folder saved with kernel python3, examples/ saved in the
    conda env's kernel (nb_conda_kernels' name), a README, a .git folder."""
    root = tmp_path / "tabgan"
    write(
        root / "environment.yml",
        """
        name: tabgan
        channels:
          - conda-forge
        dependencies:
          - python=3.11
          - six=1.16
          - pip
          - pip:
            - -e .
        """,
    )
    make_package(root, "tabgan", "0.3.0")
    write(root / "README.md", "# tabgan\n")
    (root / ".git").mkdir()
    probe = "import os, six, tabgan\nprint(os.environ['WORKBENCH_ENV'], tabgan.VERSION)"
    notebook(root / "notebooks" / "01_explore.ipynb", "python3", "Python 3", probe)
    notebook(
        root / "examples" / "demo.ipynb",
        "conda-env-tabgan-py",
        "Python [conda env:tabgan]",
        "import tabgan\nassert tabgan.VERSION == '0.3.0'",
    )
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(root / ".workbench" / "jupyter"))
    return root


def test_init_then_create_and_test_work_in_a_real_layout(repo: Path) -> None:
    dry = workbench("init", "--dry-run", "--json", cwd=repo)
    assert dry.returncode == 0, dry.stderr
    planned = json_data(dry.stdout)
    assert not (repo / "workbench.toml").exists() and not (repo / ".gitignore").exists()
    assert [(e["name"], e["spec"], e["kind"]) for e in planned["envs"]] == [
        ("tabgan", "environment.yml", "conda")
    ]
    assert {n["path"]: (n["env"], n["by"]) for n in planned["notebooks"]} == {
        "examples/demo.ipynb": ("tabgan", "kernelspec"),
        "notebooks/01_explore.ipynb": ("tabgan", "only env"),
    }
    human = workbench("init", "--dry-run", cwd=repo)
    assert "would be written" in human.stdout and '[envs.tabgan]\nspec = "environment.yml"' in (
        human.stdout
    )

    done = workbench("init", cwd=repo)
    assert done.returncode == 0, done.stderr
    manifest = (repo / "workbench.toml").read_text()
    assert '[envs.tabgan]\nspec = "environment.yml"' in manifest
    assert 'examples = "tabgan"' in manifest and '"." = "tabgan"' in manifest
    assert (repo / ".gitignore").read_text().splitlines()[-2:] == [".workbench/", "runs/"]
    assert not (repo / "envs").exists(), "init copies nothing"

    again = workbench("init", "--json", cwd=repo)
    assert json_data(again.stdout)["changed"] is False
    assert (repo / "workbench.toml").read_text() == manifest

    created = workbench("env", "create", "--all", "--json", cwd=repo)
    assert created.returncode == 0, created.stderr
    assert [(r["env"], r["kernel"]) for r in json_data(created.stdout)] == [("tabgan", "wb-tabgan")]
    tested = workbench("test", "--json", cwd=repo)
    assert tested.returncode == 0, tested.stderr
    results = json_data(tested.stdout)
    assert sorted(Path(r["notebook"]).relative_to(repo).as_posix() for r in results) == [
        "examples/demo.ipynb",
        "notebooks/01_explore.ipynb",
    ]
    assert all(r["ok"] for r in results)
    ran = workbench("run", "notebooks/01_explore.ipynb", "--json", cwd=repo)
    record = json_data(ran.stdout)
    assert (record["env"], record["kernel"]) == ("tabgan", "wb-tabgan")
    output = nbformat.read(repo / "runs" / record["id"] / "01_explore.ipynb", as_version=4)
    assert output.cells[0].outputs[0]["text"] == "tabgan 0.3.0\n"
    # The lock goes beside the spec, where the repository keeps it.
    assert workbench("env", "lock", "tabgan", cwd=repo).returncode == 0
    assert (repo / "environment.lock").is_file()


def test_layouts_names_and_assignments(tmp_path: Path) -> None:
    """conda/, envs/, binder/ specs, requirements files as pip-only envs, one included by a
    conda spec; notebooks assigned by kernelspec (wb-NAME, conda env display name), by
    folder name, else to the root environment.yml's env (the default), which is named
    after the repository, not its checkout folder."""
    root = tmp_path / "Big Project"
    write(
        root / "environment.yml",
        "dependencies:\n  - python=3.11\n  - pip:\n    - -r requirements.txt\n",
    )
    write(root / "requirements.txt", "six\n")
    write(root / "requirements-dev.txt", "-r requirements.txt\npytest\n")
    write(root / "environment-gpu.yml", "dependencies:\n  - python=3.11\n")
    write(root / "conda" / "cpu.yaml", "name: cpu-only\ndependencies:\n  - python=3.11\n")
    write(root / "conda" / "meta.yaml", "package:\n  name: recipe\n")  # a conda recipe
    write(root / "envs" / "serve.yml", "name: something-else\ndependencies:\n  - python=3.11\n")
    write(root / "binder" / "environment.yml", "dependencies:\n  - python=3.11\n")
    notebook(root / "a" / "lab.ipynb", "wb-serve", "Python 3.11 (serve)", "1")
    notebook(root / "b" / "conda.ipynb", "python3", "Python [conda env:cpu-only]", "1")
    notebook(root / "gpu" / "train.ipynb", "python3", "Python 3", "1")
    notebook(root / "loose.ipynb", "python3", "Python 3", "1")
    notebook(root / ".hidden" / "skip.ipynb", "python3", "Python 3", "1")
    (root / "venv").mkdir()
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    notebook(root / "venv" / "site.ipynb", "python3", "Python 3", "1")

    result = discovery.plan(root)
    assert [(e.name, e.spec, e.kind) for e in result.envs] == [
        ("gpu", "environment-gpu.yml", "conda"),
        ("main", "environment.yml", "conda"),  # no name:, no package, no git remote
        ("cpu-only", "conda/cpu.yaml", "conda"),
        ("serve", "envs/serve.yml", "conda"),  # envs/NAME.yml keeps its file name
        ("binder", "binder/environment.yml", "conda"),
        ("dev", "requirements-dev.txt", "pip"),
    ]
    assert {s["path"] for s in result.skipped} == {"conda/meta.yaml", "requirements.txt"}
    by = {n.path: (n.env, n.by) for n in result.notebooks}
    assert by == {
        "a/lab.ipynb": ("serve", "kernelspec"),
        "b/conda.ipynb": ("cpu-only", "kernelspec"),
        "gpu/train.ipynb": ("gpu", "folder"),
        "loose.ipynb": ("main", "default env"),
    }
    assert "[envs.serve]" not in result.manifest_after  # found in envs/ anyway

    discovery.apply(result)
    proc = workbench("env", "list", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert {row["name"]: row["spec"] for row in json_data(proc.stdout)} == {
        "main": "environment.yml",
        "binder": "binder/environment.yml",
        "cpu-only": "conda/cpu.yaml",
        "dev": "requirements-dev.txt",
        "gpu": "environment-gpu.yml",
        "serve": "envs/serve.yml",
    }
    human = workbench("init", cwd=root)
    assert "notebooks whose kernel is not a project env's run in main" in human.stdout
    assert "nothing to change" in human.stderr


def test_an_existing_manifest_only_gains(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root / "environment.yml", "name: main\ndependencies:\n  - python=3.11\n")
    write(root / "extra" / "environment.yml", "dependencies: [python=3.11]\n")
    notebook(root / "nb" / "one.ipynb", "python3", "Python 3", "1")
    notebook(root / "nb2" / "two.ipynb", "python3", "Python 3", "1")
    original = (
        '# my comments stay\n[project]\nname = "mine"\n\n[envs.main]\nspec = "environment.yml"'
        '\ngpus = [0]\n\n[notebooks]\n"nb" = "main"  # chosen by hand\n\n[lab]\nport = 8890\n'
    )
    write(root / "workbench.toml", original)
    (root / ".gitignore").write_text("/.workbench\nruns/\n")
    result = discovery.apply(discovery.plan(root))
    text = (root / "workbench.toml").read_text()
    assert text.startswith(original.split("[notebooks]")[0])
    assert '[notebooks]\n"." = "main"  # every other notebook under the root\n"nb" = "main"' in text
    assert "[lab]\nport = 8890" in text and result.gitignore_added == []
    assert discovery.plan(root).changes is False


def test_init_refuses_a_broken_manifest_in_one_line(tmp_path: Path) -> None:
    write(tmp_path / "workbench.toml", "[project\n")
    proc = workbench("init", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "invalid TOML" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["workbench.toml"]


def suggested(text: str) -> list[list[str]]:
    """The `workbench …` commands a message tells the user to run, as arguments."""
    return [shlex.split(cmd)[1:] for cmd in re.findall(r"`(workbench [^`]+)`", text)]


@pytest.fixture
def user_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-jupyter"))


@pytest.mark.usefixtures("user_jupyter")
def test_conda_file_beside_pinned_requirements_is_one_env_with_every_notebook(
    tmp_path: Path,
) -> None:
    """A course repository: an unpinned environment.yml (for conda users) beside a pinned
    requirements.txt (for pip users), notebooks saved with kernel python3 or none. One
    env, from the file that pins; the other kept as a commented-out alternative; every
    notebook assigned with one line that init names; then create and test are green."""
    root = tmp_path / "checkout"
    write(root / "environment.yml", "name: optics-course\ndependencies:\n  - python\n  - six\n")
    write(root / "requirements.txt", "six==1.16.0\n")
    probe = "import os, six\nassert six.__version__ == '1.16.0', six.__version__"
    notebook(root / "01-intro.ipynb", None, "", probe)
    notebook(root / "lessons" / "02-lenses.ipynb", "python3", "Python 3", probe)

    done = workbench("init", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "also environment.yml (conda, pins 0 of 1 package)" in done.stdout
    assert '[notebooks] "." = "optics-course" says so; change that line' in done.stdout
    assert done.stderr.rstrip().endswith("next: workbench env create --all && workbench test")
    manifest = (root / "workbench.toml").read_text()
    assert '[envs.optics-course]\nspec = "requirements.txt"' in manifest
    assert '# [envs.optics-course-conda]\n# spec = "environment.yml"' in manifest
    assert '"." = "optics-course"' in manifest and "lessons" not in manifest
    again = json_data(workbench("init", "--json", cwd=root).stdout)
    assert again["changed"] is False and [a["spec"] for a in again["alternatives"]] == [
        "environment.yml"
    ]

    created = workbench("env", "create", "--all", cwd=root, env=OFFLINE)
    assert created.returncode == 0, created.stderr
    tested = workbench("test", "--json", cwd=root)
    assert tested.returncode == 0, tested.stderr
    assert sorted(Path(r["notebook"]).name for r in json_data(tested.stdout)) == [
        "01-intro.ipynb",
        "02-lenses.ipynb",
    ]

    # Uncommenting the alternative gives two envs; the notebooks keep their default.
    (root / "workbench.toml").write_text(
        manifest.replace("# [envs.optics-course-conda]\n# spec", "[envs.optics-course-conda]\nspec")
    )
    listed = json_data(workbench("env", "list", "--json", cwd=root).stdout)
    assert sorted(row["name"] for row in listed) == ["optics-course", "optics-course-conda"]


def test_the_file_that_pins_more_wins_and_names_come_from_the_project(tmp_path: Path) -> None:
    """A pinned environment.yml beats an unpinned requirements.txt; a pip-only env is
    named after the project (its package, else its git remote), never the checkout folder
    (a fork's or a download's name), else "main"."""
    pinned = tmp_path / "pinned-conda"
    write(pinned / "environment.yml", "dependencies:\n  - python=3.11\n  - six=1.16\n")
    write(pinned / "requirements.txt", "six\n")
    result = discovery.plan(pinned)
    assert [(e.name, e.spec) for e in result.envs] == [("main", "environment.yml")]
    assert [(a.env.name, a.env.spec, a.pinned) for a in result.alternatives] == [
        ("main-pip", "requirements.txt", "pins 0 of 1 package")
    ]

    remote = tmp_path / "repo-main"
    write(remote / "requirements.txt", "six\n")
    write(
        remote / ".git" / "config", '[remote "origin"]\n\turl = git@github.com:lab/fluid-sims.git\n'
    )
    assert [e.name for e in discovery.plan(remote).envs] == ["fluid-sims"]
    write(remote / "pyproject.toml", '[project]\nname = "FluidSims"\nrequires-python = ">=3.9"\n')
    assert [e.name for e in discovery.plan(remote).envs] == ["fluidsims"]


def test_runtime_txt_python_version_and_requires_python_ask_for_the_interpreter(
    tmp_path: Path,
) -> None:
    """A pip-only env's python= comes from binder's runtime.txt, else .python-version, else
    requires-python; beside the requirements file first, then at the root."""
    root = tmp_path / "repo"
    requirements = write(root / "binder" / "requirements.txt", "six\n")
    write(root / "pyproject.toml", '[project]\nname = "x"\nrequires-python = ">= 3.9"\n')
    assert specs.load(requirements, root=root).python.text == "python>=3.9"
    write(root / ".python-version", "my-venv\n3.10.13\n")  # a virtualenv's name is skipped
    loaded = specs.load(requirements, root=root)
    assert (loaded.python.text, loaded.python_source.name) == ("python=3.10.13", ".python-version")
    write(root / "binder" / "runtime.txt", "python-3.7.17\n")
    request = interpreters.requested(root / "binder", root)
    assert (request.text, request.source, request.line) == (
        "python=3.7",  # binder builds the newest 3.7, whatever the patch says
        root / "binder" / "runtime.txt",
        1,
    )
    assert specs.load(requirements, root=root).content_hash() != loaded.content_hash()


@pytest.mark.usefixtures("user_jupyter")
def test_runtime_txt_builds_on_its_minor_release_with_no_flag(tmp_path: Path) -> None:
    """requirements.txt with binder's runtime.txt naming a patch release this server lacks:
    binder reads only major.minor, so does workbench: init, env create --all and test pass as
    printed, on that minor release, offline."""
    root = tmp_path / "checkout"
    write(root / "requirements.txt", "six==1.16.0\n")
    write(root / "runtime.txt", "python-3.10.99\n")
    notebook(root / "analysis.ipynb", "python3", "Python 3", "import sys, six\nprint(sys.version)")
    assert workbench("init", cwd=root).returncode == 0
    created = workbench("env", "create", "--all", cwd=root, env=OFFLINE)
    assert created.returncode == 0, created.stderr
    assert "Python 3.10." in created.stderr
    assert workbench("test", cwd=root).returncode == 0


@pytest.mark.usefixtures("user_jupyter")
def test_python_version_failed_build_then_every_suggested_command_works(tmp_path: Path) -> None:
    """requirements.txt with pyenv's .python-version asking for a patch release this server
    lacks (offline, so none is downloaded): the build fails naming .python-version and
    --nearest-python; `workbench test` then says what failed last time and the command
    that gets past it; that command, run as printed, builds the env and test is green."""
    root = tmp_path / "checkout"
    write(root / "requirements.txt", "six==1.16.0\n")
    write(root / ".python-version", "3.10.99\n")
    notebook(root / "analysis.ipynb", "python3", "Python 3", "import sys, six\nprint(sys.version)")
    assert workbench("init", cwd=root).returncode == 0

    created = workbench("env", "create", "--all", cwd=root, env=OFFLINE)
    assert created.returncode == 2
    assert ".python-version:1: python=3.10.99: no local interpreter matches" in created.stderr
    assert "pass --nearest-python to build with 3.10." in created.stderr

    tested = workbench("test", cwd=root)
    assert tested.returncode == 2 and len(tested.stderr.strip().splitlines()) == 1
    assert "env 'main' is not built: its last build (" in tested.stderr
    commands = suggested(tested.stderr)
    assert commands == [["env", "create", "main", "--nearest-python"]]
    for args in commands:
        proc = workbench(*args, cwd=root, env=OFFLINE)
        assert proc.returncode == 0, proc.stderr
        assert "Python 3.10." in proc.stderr
    assert workbench("test", cwd=root).returncode == 0


@pytest.mark.usefixtures("user_jupyter")
def test_notebooks_with_no_env_name_a_test_command_that_works(tmp_path: Path) -> None:
    """Two envs and no default (no unsuffixed spec at the root): init leaves a python3
    notebook unassigned and says so in its next step; `workbench test` refuses it before
    any kernel starts with a `workbench test --env …` command, which works as printed."""
    root = tmp_path / "checkout"
    write(root / "environment-cpu.yml", "dependencies:\n  - python=3.11\n  - six=1.16\n")
    write(root / "environment-gpu.yml", "dependencies:\n  - python=3.11\n  - six=1.16\n")
    notebook(root / "explore.ipynb", "python3", "Python 3", "import six")
    done = workbench("init", cwd=root)
    assert "next: workbench env create --all && workbench test --env cpu explore.ipynb" in (
        done.stderr
    )
    assert workbench("env", "create", "cpu", cwd=root, env=OFFLINE).returncode == 0
    tested = workbench("test", "explore.ipynb", cwd=root)
    assert tested.returncode == 2, tested.stderr
    commands = suggested(tested.stderr)
    assert commands == [["test", "--env", "cpu", "explore.ipynb"]]
    for args in commands:
        proc = workbench(*args, cwd=root)
        assert proc.returncode == 0, proc.stderr
    help_text = workbench("test", "--help", cwd=root).stdout
    assert "[notebooks]" in help_text and "--env" in help_text
