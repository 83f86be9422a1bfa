"""The conda backend END TO END against REAL conda 26.7.1 (tests/support/realconda.py), offline.

One project is built through the real CLI (`python -m workbench`) from a spec whose pip:
section takes a package from an extra (local, file://) index, a `git+file://` requirement
and an editable path, with `nodefaults` among its channels and conda in online mode. Its
lock is rebuilt with --locked, its kernel is started activated, and drift is detected. A
second project pins GPUs: it solves a package that needs `__cuda` on this GPU-less machine,
then runs the GPU check with a FAKE nvidia-smi and a FAKE torch whose answer depends on
the kernel's activation. The tests skip, saying why, when ../shared/conda is absent.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.cli import json_data, workbench
from tests.support.kernels import run_in_kernel
from tests.support.paths import FAKES
from tests.support.realconda import RealConda, Staged, pack, package_index, write_repodata

pytestmark = pytest.mark.slow

# A PEP 517 backend that needs nothing from an index: wheels and editable wheels of one
# pure-python package (NAME, VERSION, MODULE are filled in per package).
BACKEND = """
import base64, hashlib, os, pathlib, zipfile

NAME, VERSION, MODULE = {name!r}, {version!r}, {module!r}
ROOT = pathlib.Path(__file__).parent


def _wheel(directory, files):
    dist = NAME.replace("-", "_") + "-" + VERSION
    meta = dist + ".dist-info"
    files = dict(files)
    metadata = "Metadata-Version: 2.1\\nName: %s\\nVersion: %s\\n"
    files[meta + "/METADATA"] = metadata % (NAME, VERSION)
    files[meta + "/WHEEL"] = "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    lines = []
    for name, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        lines.append("%s,sha256=%s,%d" % (name, encoded, len(text.encode())))
    files[meta + "/RECORD"] = "\\n".join(lines + [meta + "/RECORD,,"]) + "\\n"
    filename = dist + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, filename), "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return filename


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    paths = (ROOT / MODULE).rglob("*.py")
    sources = {{p.relative_to(ROOT).as_posix(): p.read_text() for p in paths}}
    return _wheel(wheel_directory, sources)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {{"_" + MODULE + "_editable.pth": str(ROOT) + "\\n"}})
"""
FAKE_TORCH = '''"""A FAKE torch: it sees GPUs only in an activated env (WBTEST_ACTIVATED, set by the
wbtest-activate package's activate.d script), one per CUDA_VISIBLE_DEVICES entry."""
import os

__version__ = "0.0.1+fake"


class version:
    cuda = "12.4"


class cuda:
    @staticmethod
    def is_available():
        return os.environ.get("WBTEST_ACTIVATED") == "1"

    @staticmethod
    def device_count():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return len([d for d in visible.split(",") if d]) if cuda.is_available() else 0
'''
KERNEL_PROBE = (
    "import os, shutil, sys; print(sys.prefix, os.environ.get('CONDA_PREFIX'), "
    "os.environ['PATH'].split(':')[0], os.environ.get('WBTEST_ACTIVATED'), "
    "os.environ.get('WBTEST_VAR'), shutil.which('pip'))"
)


def local_package(folder: Path, name: str, version: str, module: str, code: str) -> Path:
    """A source tree with an in-tree build backend (no index needed to build it)."""
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(code)
    (folder / "wbbackend.py").write_text(BACKEND.format(name=name, version=version, module=module))
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "wbbackend"\nbackend-path = ["."]\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    )
    return folder


def simple_index(root: Path, name: str, versions: list[str]) -> Path:
    """A PEP 503 index on disk (file://) serving wheels of name, without hashes in links."""
    project = root / name
    project.mkdir(parents=True)
    links = []
    for version in versions:
        build = root.parent / f"build-{name}-{version}"
        module = name.replace("-", "_")
        local_package(build, name, version, module, f'__version__ = "{version}"\n')
        wheel = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(build)!r}); "
             f"import wbbackend; print(wbbackend.build_wheel({str(project)!r}))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        links.append(f'<a href="{wheel}">{wheel}</a>')
    (project / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
    (root / "index.html").write_text(f'<html><body><a href="{name}/">{name}</a></body></html>')
    return root


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=True).stdout


def wb(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return workbench(*args, cwd=root, env=env)


@pytest.fixture(scope="module")
def built(real_conda: RealConda, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The project, its env for the CLI, and the result of its first `env create`."""
    root = tmp_path_factory.mktemp("realconda") / "proj"
    (root / "envs").mkdir(parents=True)
    (root / "workbench.toml").write_text('[project]\nname = "realc"\n')
    index = simple_index(root / "index" / "simple", "wbtest-extra", ["1.0", "2.0"])
    local_package(root / "editpkg", "wbtest-edit", "0.1", "wbtest_edit", "MARK = 'edit'\n")
    gitpkg = local_package(root / "gitpkg", "wbtest-git", "0.3", "wbtest_git", "MARK = 'one'\n")
    git(gitpkg, "init", "-q")
    git(gitpkg, "add", "-A")
    git(gitpkg, "commit", "-qm", "one")
    commit = git(gitpkg, "rev-parse", "HEAD").strip()
    spec = root / "envs" / "realc.yml"
    spec.write_text(
        textwrap.dedent(f"""\
        name: realc
        channels:
          - {real_conda.channel_url}
          - nodefaults
        dependencies:
          - python=3.11
          - pip
          - wbtest-activate
          - pip:
            - --extra-index-url {index.as_uri()}
            - wbtest-extra==1.0
            - wbtest-git @ git+{gitpkg.as_uri()}
            - -e ../editpkg
        variables:
          WBTEST_VAR: hello
        """)
    )
    env = {
        **real_conda.env,
        "JUPYTER_PATH": str(root / ".workbench" / "jupyter"),
        "JUPYTER_DATA_DIR": str(root.parent / "user-jupyter"),
        # online, conda would look `nodefaults` up as a channel (and fail on the HTTP error)
        "CONDA_OFFLINE": "false",
        "CONDA_REMOTE_MAX_RETRIES": "0",
        # a user's default packages must not sneak into a build (--no-default-packages)
        "CONDA_CREATE_DEFAULT_PACKAGES": "wbtest-lib=1.0",
    }
    created = wb(root, env, "-v", "env", "create", "realc", "--json")
    return {"root": root, "env": env, "created": created, "commit": commit, "gitpkg": gitpkg}


def prefix_of(built: dict) -> Path:
    return (built["root"] / ".workbench" / "envs" / "realc").resolve()


def test_real_conda_create_solves_once_with_ipykernel_and_without_nodefaults(built: dict) -> None:
    created = built["created"]
    assert created.returncode == 0, created.stderr
    prefix = prefix_of(built)
    create_lines = [line for line in created.stderr.splitlines() if " create " in line]
    assert len(create_lines) == 1 and "--override-channels" in create_lines[0]
    assert "nodefaults" not in create_lines[0] and "--no-default-packages" in create_lines[0]
    history = (prefix / "conda-meta" / "history").read_text()
    assert history.count("==> ") == 1  # one transaction: ipykernel was in the one solve
    assert list((prefix / "conda-meta").glob("ipykernel-*.json"))
    assert not list((prefix / "conda-meta").glob("wbtest-lib-*.json"))  # no default packages
    assert sorted(p.name for p in (built["root"] / "envs").iterdir()) == ["realc.yml"]
    listing = Path.home() / ".conda" / "environments.txt"
    assert not listing.exists() or str(prefix) not in listing.read_text()


def test_real_conda_kernel_starts_activated_and_interrupts(
    built: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel runs in the activated env (activate.d, PATH, CONDA_PREFIX, variables),
    keeps the pid Jupyter started, and a signal interrupt reaches the running cell."""
    from jupyter_client.manager import start_new_kernel

    assert built["created"].returncode == 0
    prefix = prefix_of(built)
    monkeypatch.setenv("JUPYTER_PATH", built["env"]["JUPYTER_PATH"])
    out = run_in_kernel("wb-realc", KERNEL_PROBE).split()
    assert out == [str(prefix), str(prefix), f"{prefix}/bin", "1", "hello", f"{prefix}/bin/pip"]

    km, kc = start_new_kernel(kernel_name="wb-realc", startup_timeout=120)
    try:
        pids: list[str] = []
        kc.execute_interactive(
            "import os; print(os.getpid())",
            timeout=60,
            output_hook=lambda m: pids.append(m["content"].get("text", "")),
        )
        assert int("".join(pids).split()[0]) == km.provisioner.process.pid
        msg_id = kc.execute("import time; time.sleep(120)")
        time.sleep(2)
        started = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 30
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_real_conda_apps_and_engines_start_activated_as_kernels_do(
    built: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apps and engines of a conda env start their python the way its kernels do
    (activate.d scripts, PATH, CONDA_PREFIX, the spec's variables), not bare."""
    from workbench import project as projects
    from workbench.envs import builds
    from workbench.project import AppEntry
    from workbench.serving import launch

    assert built["created"].returncode == 0
    for key, value in built["env"].items():
        monkeypatch.setenv(key, value)
    project = projects.load(built["root"])
    python = builds.python_command(project, "realc")
    assert "workbench.runtime.activate" in python
    app_file = built["root"] / "app.py"
    app_file.write_text("import gradio\n")
    app = AppEntry("probe", "realc", app_file, 7860)
    argv = launch.app(project, app, launch.Here(project), "127.0.0.1", 7860).argv
    assert argv[: len(python)] == python and argv[len(python) :][:2] == [
        "-m",
        "workbench.runtime.app_runner",
    ]
    proc = subprocess.run(
        [*python, "-c", KERNEL_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    prefix = prefix_of(built)
    assert proc.stdout.split() == [
        str(prefix),
        str(prefix),
        f"{prefix}/bin",
        "1",
        "hello",
        f"{prefix}/bin/pip",
    ]


def test_real_conda_lock_and_locked_rebuild_reproduce_the_pip_part(
    built: dict, real_conda: RealConda
) -> None:
    root, env = built["root"], built["env"]
    assert built["created"].returncode == 0
    locked = wb(root, env, "env", "lock", "realc")
    assert locked.returncode == 0, locked.stderr
    lock = (root / "envs" / "realc.lock").read_text()
    assert "@EXPLICIT" in lock and "/noarch/ipykernel-7.4.0-py_0.conda#" in lock
    wheel = root / "index/simple/wbtest-extra/wbtest_extra-1.0-py3-none-any.whl"
    pip_part = [line for line in lock.splitlines() if line.startswith("# pip")]
    assert pip_part == [
        "# pip-lock: 2",
        f"# pip: --extra-index-url {(root / 'index/simple').as_uri()}",
        "# pip: -e ../editpkg  # wbtest-edit==0.1",
        f"# pip: wbtest-extra==1.0 --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}",
        f"# pip: wbtest-git @ git+{built['gitpkg'].as_uri()}@{built['commit']}  # wbtest-git==0.3",
    ]

    # the branch moves on; the lock keeps the commit it was made from
    (built["gitpkg"] / "wbtest_git" / "__init__.py").write_text("MARK = 'two'\n")
    git(built["gitpkg"], "commit", "-qam", "two")
    rebuilt = wb(root, env, "env", "create", "realc", "--locked", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json_data(rebuilt.stdout)[0]["record"]["from_lock"] is True
    prefix = prefix_of(built)
    again = (prefix / "workbench-lock.txt").read_text()
    assert [line for line in again.splitlines() if line.startswith("# pip")] == pip_part
    code = "import wbtest_git, wbtest_edit, wbtest_extra, os; print(wbtest_git.MARK, "
    code += "wbtest_edit.__file__, wbtest_extra.__version__, os.environ['WBTEST_VAR'])"
    shown = real_conda.run("run", "-p", str(prefix), "python", "-c", code).stdout.split()
    assert shown == ["one", str(root / "editpkg/wbtest_edit/__init__.py"), "1.0", "hello"]
    assert wb(root, env, "env", "check", "realc").returncode == 0


def test_real_conda_drift_names_the_pip_package(built: dict) -> None:
    root, env = built["root"], built["env"]
    prefix = prefix_of(built)
    assert (root / "envs" / "realc.lock").is_file()
    pip = [str(prefix / "bin/python"), "-m", "pip", "install", "-q", "--no-deps"]
    index = (root / "index/simple").as_uri()
    subprocess.run([*pip, "--extra-index-url", index, "wbtest-extra==2.0"], check=True)
    listed = json_data(wb(root, env, "env", "list", "--json").stdout)
    assert [(e["name"], e["built"], e["lock"], e["kernel"]) for e in listed] == [
        ("realc", True, "fresh", "wb-realc")
    ]
    assert listed[0]["record"]["backend"] == "conda" and listed[0]["prefix"] == str(prefix)
    drift = wb(root, env, "env", "check", "realc", "--json")
    assert drift.returncode == 1
    assert json_data(drift.stdout)[0]["changed"] == [
        {"name": "wbtest-extra", "locked": "1.0", "installed": "2.0"}
    ]


def cuda_channel(real_conda: RealConda, root: Path) -> Path:
    """A channel with `wbtest-cuda`, which needs the `__cuda` virtual package (a GPU, or
    CONDA_OVERRIDE_CUDA)."""
    folder = root / "stage" / "wbtest-cuda"
    (folder / "share").mkdir(parents=True)
    (folder / "share" / "wbtest-cuda.txt").write_text("needs a CUDA driver\n")
    index = package_index("wbtest-cuda", "1.0", "0", "noarch", ["__cuda >=12"])
    staged = Staged(folder, index | {"noarch": "generic"})
    channel = root / "cuda-channel"
    pack(real_conda.root / "venv" / "bin" / "python", [staged], channel)
    write_repodata(channel, [staged])
    shutil.rmtree(root / "stage")
    return channel


def test_real_conda_gpu_pins_solve_cuda_and_check_runs_as_the_kernel(
    real_conda: RealConda, tmp_path: Path
) -> None:
    """No GPU here: a package needing __cuda solves through CONDA_OVERRIDE_CUDA and the
    skipped check is a warning. With a FAKE nvidia-smi the check runs, started as the
    kernel is: the FAKE torch sees the 2 pinned GPUs only in the activated env."""
    root = tmp_path / "proj"
    (root / "envs").mkdir(parents=True)
    (root / "workbench.toml").write_text('[project]\nname = "gpu"\n[envs.g]\ngpus = [0, 1]\n')
    local_package(root / "faketorch", "torch", "0.0.1", "torch", FAKE_TORCH)
    channel = cuda_channel(real_conda, tmp_path)
    (root / "envs" / "g.yml").write_text(
        textwrap.dedent(f"""\
        channels: [{real_conda.channel_url}, {channel.as_uri()}]
        dependencies:
          - python=3.11
          - pip
          - wbtest-activate
          - wbtest-cuda
          - pip:
            - ../faketorch
        """)
    )
    env = {
        **real_conda.env,
        "JUPYTER_PATH": str(root / ".workbench" / "jupyter"),
        "JUPYTER_DATA_DIR": str(tmp_path / "user-jupyter"),
    }
    env.pop("CONDA_OVERRIDE_CUDA", None)
    assert "CONDA_OVERRIDE_CUDA" not in os.environ
    unsolvable = real_conda.run(
        "create", "--dry-run", "-p", str(tmp_path / "x"), "-c", channel.as_uri(), "wbtest-cuda",
        check=False,
    )  # fmt: skip
    assert unsolvable.returncode != 0 and "__cuda" in unsolvable.stdout + unsolvable.stderr

    created = wb(root, env, "env", "create", "g", "--json")
    assert created.returncode == 0, created.stderr
    result = json_data(created.stdout)[0]
    assert result["gpu"]["skipped"] is True
    assert any("solved for CUDA 12.0 (CONDA_OVERRIDE_CUDA" in w for w in result["warnings"])
    assert any("check skipped: not verified" in w for w in result["warnings"])

    assert wb(root, env, "env", "lock", "g").returncode == 0
    with_gpu = {**env, "PATH": f"{FAKES / 'bin'}{os.pathsep}{env['PATH']}"}
    checked = wb(root, with_gpu, "env", "create", "g", "--locked", "--json")
    assert checked.returncode == 0, checked.stderr
    gpu = json_data(checked.stdout)[0]["gpu"]
    assert gpu["skipped"] is False and gpu["ok"] is True, gpu
    assert gpu["message"] == "GPU check passed: torch 0.0.1+fake sees 2 GPU(s)"
    kernel = json.loads((root / ".workbench/jupyter/kernels/wb-g/kernel.json").read_text())
    assert kernel["argv"][1:4] == ["-m", "workbench.runtime.activate", "conda"]
