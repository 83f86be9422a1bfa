"""`workbench init` in repositories laid out the way real ones are: the spec at the root,
notebooks in two folders (one saved with kernel `python3`), then `env create --all` and
`workbench test` work there; init writes additions only and a second run changes nothing."""

import os
import textwrap
from pathlib import Path

import nbformat
import pytest

from tests.conftest import json_data, make_package, workbench
from workbench import discovery


def notebook(path: Path, kernel: str, display: str, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": display, "language": "python"}
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
    assert 'examples = "tabgan"' in manifest and 'notebooks = "tabgan"' in manifest
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
    folder name, or left unassigned with the reason when several envs could be meant."""
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
        ("big-project", "environment.yml", "conda"),
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
        "loose.ipynb": (None, "ambiguous"),
    }
    assert "[envs.serve]" not in result.manifest_after  # found in envs/ anyway

    discovery.apply(result)
    proc = workbench("env", "list", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert {row["name"]: row["spec"] for row in json_data(proc.stdout)} == {
        "big-project": "environment.yml",
        "binder": "binder/environment.yml",
        "cpu-only": "conda/cpu.yaml",
        "dev": "requirements-dev.txt",
        "gpu": "environment-gpu.yml",
        "serve": "envs/serve.yml",
    }
    human = workbench("init", cwd=root)
    assert "loose.ipynb: no env for it (ambiguous" in human.stderr
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
    assert '[notebooks]\nnb2 = "main"\n"nb" = "main"  # chosen by hand' in text
    assert "[lab]\nport = 8890" in text and result.gitignore_added == []
    assert discovery.plan(root).changes is False


def test_init_refuses_a_broken_manifest_in_one_line(tmp_path: Path) -> None:
    write(tmp_path / "workbench.toml", "[project\n")
    proc = workbench("init", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "invalid TOML" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["workbench.toml"]
