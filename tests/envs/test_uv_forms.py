"""Real uv builds of the requirement forms research repositories use: a git+file:// URL to
a local repository (with @ref, #egg= and #subdirectory=), a local package folder, a
`name @ file://…whl`, `-e` of a local path; the lock pins the VCS requirement to its
commit, so --locked rebuilds the same code after the branch moved on, and --locked puts a
drifted env back exactly."""

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

from tests.support.cli import json_data, workbench, write_env
from tests.support.projects import git, make_package

FORMS = """
dependencies:
  - python=3.11
  - pip:
    - git+file://{root}/vendor/monorepo@main#egg=gitpkg&subdirectory=python
    - ../vendor/localpkg
    - whlpkg @ file://{root}/wheels/whlpkg-3.0.0-py3-none-any.whl
    - -e ../vendor/editpkg
"""
PROBE = (
    "import gitpkg, localpkg, whlpkg, editpkg; "
    "print(gitpkg.VERSION, localpkg.VERSION, whlpkg.VERSION, editpkg.__file__)"
)


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel, written by hand (no build backend, no index needed)."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")
        + f",{len(text.encode())}"
        for path, text in files.items()
    ]
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(
        [*record, f"{name}-{version}.dist-info/RECORD,,"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def in_env(project: Path, env: str, code: str) -> str:
    python = project / ".workbench" / "envs" / env / "bin" / "python"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_local_forms_build_lock_to_a_commit_and_rebuild_it(project: Path) -> None:
    monorepo = project / "vendor" / "monorepo"
    make_package(monorepo / "python", "gitpkg", "0.1.0")
    git(monorepo, "init", "-q")
    git(monorepo, "add", "-A")
    git(monorepo, "commit", "-qm", "first")
    first = git(monorepo, "rev-parse", "HEAD")
    make_package(project / "vendor" / "localpkg", "localpkg", "1.0.0")
    make_package(project / "vendor" / "editpkg", "editpkg", "2.0.0")
    make_wheel(project / "wheels", "whlpkg", "3.0.0")
    write_env(project, "forms", FORMS.format(root=project))

    built = workbench("env", "create", "forms", "--json", cwd=project)
    assert built.returncode == 0, built.stderr
    assert json_data(built.stdout)[0]["status"] == "built"
    versions = in_env(project, "forms", PROBE).split()
    assert versions[:3] == ["0.1.0", "1.0.0", "3.0.0"]
    assert versions[3] == str(project / "vendor/editpkg/src/editpkg/__init__.py")  # editable

    assert workbench("env", "lock", "forms", cwd=project).returncode == 0
    lock = (project / "envs" / "forms.lock").read_text()
    assert f"gitpkg @ git+file://{monorepo}@{first}#" in lock and "subdirectory=python" in lock
    assert "\n../vendor/localpkg\n" in lock and "\n-e ../vendor/editpkg\n" in lock
    comments = [line for line in lock.splitlines() if line.lstrip().startswith("#")]
    assert not any(str(project) in line for line in comments), "the lock names its checkout"
    check = workbench("env", "check", "forms", cwd=project)
    assert check.returncode == 0, check.stdout  # local-path packages are not drift

    # The branch moves on: a build from the lock installs the locked commit.
    (monorepo / "python" / "src" / "gitpkg" / "__init__.py").write_text("VERSION = '0.2.0'\n")
    git(monorepo, "commit", "-qam", "second")
    again = workbench("env", "create", "forms", "--locked", "--force", "--json", cwd=project)
    assert again.returncode == 0, again.stderr
    assert json_data(again.stdout)[0]["record"]["from_lock"] is True
    assert in_env(project, "forms", "import gitpkg; print(gitpkg.VERSION)") == "0.1.0"
    assert workbench("env", "check", "forms", cwd=project).returncode == 0

    # Drift (a package installed by hand): --locked alone puts the lock back exactly.
    from uv import find_uv_bin

    python = project / ".workbench" / "envs" / "forms" / "bin" / "python"
    subprocess.run([find_uv_bin(), "pip", "install", "-q", "--python", str(python), "six"])
    assert workbench("env", "check", "forms", cwd=project).returncode == 1
    restored = workbench("env", "create", "forms", "--locked", "--json", cwd=project)
    assert restored.returncode == 0, restored.stderr
    assert json_data(restored.stdout)[0]["status"] == "built"
    assert "drifted from forms.lock" in restored.stderr
    assert workbench("env", "check", "forms", cwd=project).returncode == 0
    unchanged = workbench("env", "create", "forms", "--locked", "--json", cwd=project)
    assert json_data(unchanged.stdout)[0]["status"] == "unchanged"

    # A new lock follows the branch.
    assert workbench("env", "lock", "forms", cwd=project).returncode == 0
    second = git(monorepo, "rev-parse", "HEAD")
    assert f"@{second}#" in (project / "envs" / "forms.lock").read_text()
    assert workbench("env", "create", "forms", "--locked", cwd=project).returncode == 0
    assert in_env(project, "forms", "import gitpkg; print(gitpkg.VERSION)") == "0.2.0"
