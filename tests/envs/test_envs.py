"""Real envs built with uv from tiny specs, and real kernels started from their kernelspecs."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import json_data, workbench, write_env
from tests.support.kernels import run_in_kernel
from tests.support.processes import start_interruptible

SIX_OLD = """
name: old
dependencies:
  - python=3.11
  - six==1.16.0
variables:
  GREETING: hello-from-spec
"""
SIX_NEW = """
name: new
dependencies:
  - python=3.11
  - pip:
    - six==1.17.0
"""
PROBE = "import os, sys, six; print(sys.executable, six.__version__, os.environ.get('{var}'))"


def jupyter_kernelspecs() -> dict:
    """What stock `jupyter kernelspec list` sees with this process's JUPYTER_PATH."""
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    )
    return json.loads(listing.stdout)["kernelspecs"]


def active(project: Path, name: str) -> Path:
    return (project / ".workbench" / "envs" / name).resolve()


def test_build_register_and_run_kernel(project: Path) -> None:
    write_env(project, "old", SIX_OLD)
    proc = workbench("env", "create", "old", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    result = json_data(proc.stdout)[0]
    assert result["status"] == "built" and result["kernel"] == "wb-old"

    kernel_json = project / ".workbench/jupyter/kernels/wb-old/kernel.json"
    spec = json.loads(kernel_json.read_text())
    assert spec["display_name"] == "Python 3.11 (old)"
    assert spec["env"]["WORKBENCH_ENV"] == "old" and spec["env"]["GREETING"] == "hello-from-spec"
    assert spec["metadata"]["workbench"]["spec_hash"] == result["record"]["spec_hash"]
    assert spec["metadata"]["workbench"]["lock_hash"] == result["record"]["lock_hash"]

    out = run_in_kernel("wb-old", PROBE.format(var="GREETING"))
    executable, version, greeting = out.split()
    assert Path(executable) == active(project, "old") / "bin" / "python"
    assert (version, greeting) == ("1.16.0", "hello-from-spec")

    # Stock Jupyter tools see it once JUPYTER_PATH names the project dir.
    assert "wb-old" in jupyter_kernelspecs()


def test_unchanged_spec_is_a_no_op(project: Path) -> None:
    write_env(project, "old", SIX_OLD)
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    prefix = active(project, "old")
    again = workbench("env", "create", "old", "--json", cwd=project)
    assert json_data(again.stdout)[0]["status"] == "unchanged"
    assert active(project, "old") == prefix


def test_conflicting_pins_each_kernel_sees_its_own(project: Path) -> None:
    write_env(project, "old", SIX_OLD)
    write_env(project, "new", SIX_NEW)
    assert workbench("env", "create", "--all", cwd=project).returncode == 0
    assert run_in_kernel("wb-old", "import six; print(six.__version__)").strip() == "1.16.0"
    assert run_in_kernel("wb-new", "import six; print(six.__version__)").strip() == "1.17.0"
    listed = json_data(workbench("env", "list", "--json", cwd=project).stdout)
    assert [(e["name"], e["built"], e["kernel"]) for e in listed] == [
        ("new", True, "wb-new"),
        ("old", True, "wb-old"),
    ]


def test_lock_locked_install_and_drift(project: Path) -> None:
    write_env(project, "old", SIX_OLD)
    assert workbench("env", "lock", "old", cwd=project).returncode == 0
    lock_text = (project / "envs/old.lock").read_text()
    assert "six==1.16.0" in lock_text and "--hash=sha256:" in lock_text

    created = workbench("env", "create", "old", "--locked", "--json", cwd=project)
    assert created.returncode == 0, created.stderr
    assert json_data(created.stdout)[0]["record"]["from_lock"] is True
    assert workbench("env", "check", "old", cwd=project).returncode == 0

    python = active(project, "old") / "bin" / "python"
    from uv import find_uv_bin

    subprocess.run(
        [find_uv_bin(), "pip", "install", "-q", "--python", str(python), "idna"], check=True
    )
    drift = workbench("env", "check", "old", "--json", cwd=project)
    assert drift.returncode == 1
    report = json_data(drift.stdout)[0]
    assert [a["name"] for a in report["added"]] == ["idna"]
    assert report["removed"] == [] and report["changed"] == []
    human = workbench("env", "check", "old", cwd=project)
    assert human.returncode == 1 and "+ idna==" in human.stdout


def test_locked_refuses_missing_or_stale_lock(project: Path) -> None:
    path = write_env(project, "old", SIX_OLD)
    missing = workbench("env", "create", "old", "--locked", cwd=project)
    assert missing.returncode == 2 and "old.lock does not exist" in missing.stderr
    assert workbench("env", "lock", "old", cwd=project).returncode == 0
    path.write_text(SIX_OLD.replace("six==1.16.0", "six==1.17.0"))
    stale = workbench("env", "create", "old", "--locked", cwd=project)
    assert stale.returncode == 2 and "stale" in stale.stderr


def test_failed_build_keeps_previous_env_and_kernel(project: Path) -> None:
    path = write_env(project, "old", SIX_OLD)
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    prefix = active(project, "old")
    kernel_json = (project / ".workbench/jupyter/kernels/wb-old/kernel.json").read_text()

    path.write_text(SIX_OLD.replace("six==1.16.0", "six==0.0.0.404"))
    failed = workbench("env", "create", "old", cwd=project)
    assert failed.returncode == 1
    assert "six==0.0.0.404" in failed.stderr and "Traceback" not in failed.stderr
    assert len([line for line in failed.stderr.splitlines() if line.startswith("error")]) == 1

    assert active(project, "old") == prefix
    assert (project / ".workbench/jupyter/kernels/wb-old/kernel.json").read_text() == kernel_json
    assert run_in_kernel("wb-old", "import six; print(six.__version__)").strip() == "1.16.0"
    builds = list((project / ".workbench/builds").glob("old-*"))
    assert builds == [prefix]  # the failed attempt left nothing behind


def test_rebuild_switches_kernel_and_keeps_one_previous_build(project: Path) -> None:
    path = write_env(project, "old", SIX_OLD)
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    first = active(project, "old")
    path.write_text(SIX_OLD.replace("six==1.16.0", "six==1.17.0"))
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    assert active(project, "old") != first
    assert run_in_kernel("wb-old", "import six; print(six.__version__)").strip() == "1.17.0"
    # Going back to the first spec reuses its build instead of building again.
    path.write_text(SIX_OLD)
    back = workbench("env", "create", "old", "--json", cwd=project)
    assert json_data(back.stdout)[0]["status"] == "reactivated"
    assert active(project, "old") == first


def test_builds_before_the_previous_are_deleted_in_the_background(project: Path) -> None:
    import time

    write_env(project, "old", SIX_OLD)
    prefixes = []
    for _ in range(3):
        assert workbench("env", "create", "old", "--force", cwd=project).returncode == 0
        prefixes.append(active(project, "old"))
    assert not prefixes[0].exists()  # out of the way at once ...
    assert prefixes[1].is_dir() and prefixes[2].is_dir()
    builds = project / ".workbench/builds"
    deadline = time.monotonic() + 60
    while list(builds.glob(".trash-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(builds.glob(".trash-*"))  # ... and deleted soon after


def test_rm_and_prune(project: Path) -> None:
    write_env(project, "old", SIX_OLD)
    write_env(project, "new", SIX_NEW)
    assert workbench("env", "create", "--all", cwd=project).returncode == 0
    assert workbench("env", "rm", "new", cwd=project).returncode == 0
    assert not (project / ".workbench/jupyter/kernels/wb-new").exists()
    assert not list((project / ".workbench/builds").glob("new-*"))

    (project / "envs/old.yml").unlink()  # the env is gone from the project
    pruned = json_data(workbench("kernels", "--prune", "--json", cwd=project).stdout)
    assert [k["name"] for k in pruned["pruned"]] == ["wb-old"]
    assert pruned["kernels"] == []


def test_user_wide_kernel_is_prefixed_with_project(project: Path, tmp_path: Path) -> None:
    write_env(project, "old", SIX_OLD)
    assert workbench("env", "create", "old", "--user", cwd=project).returncode == 0
    folder = tmp_path / "user-jupyter" / "kernels" / "wb-testproj-old"
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3.11 (old, testproj)"
    listed = json_data(workbench("kernels", "--json", cwd=project).stdout)["kernels"]
    assert {(k["name"], k["scope"]) for k in listed} >= {("wb-testproj-old", "user")}


def test_pinned_gpus_reach_kernel_and_check_is_skipped_without_gpu(project: Path) -> None:
    """This machine has no GPU: the check must say it was skipped, and CUDA_VISIBLE_DEVICES
    must still reach the kernel (on a GPU server the same build runs torch's check)."""
    (project / "workbench.toml").write_text('[project]\nname = "p"\n[envs.old]\ngpus = [1, 3]\n')
    write_env(project, "old", SIX_OLD)
    proc = workbench("env", "create", "old", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "no GPU here, check skipped" in proc.stderr
    out = run_in_kernel("wb-old", PROBE.format(var="CUDA_VISIBLE_DEVICES"))
    assert out.split()[-1] == "1,3"


def test_stock_papermill_and_nbval_run_in_project_kernels(project: Path, tmp_path: Path) -> None:
    import nbformat

    write_env(project, "old", SIX_OLD)
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "wb-old",
        "display_name": "Python 3.11 (old)",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    probe = nbformat.v4.new_code_cell("import six\nprint(six.__version__, x)")
    nb.cells = [params, probe]
    source, output = tmp_path / "nb.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)

    papermill = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(source),
            str(output),
            "-k",
            "wb-old",
            "-p",
            "x",
            "2",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert papermill.returncode == 0, papermill.stderr
    ran = nbformat.read(output, as_version=4)
    assert ran.cells[-1].outputs[0]["text"] == "1.16.0 2\n"

    def nbval(stored: str) -> int:
        probe.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
        probe.execution_count = 2
        nbformat.write(nb, source)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--nbval",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                str(tmp_path),
                str(source),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=os.environ,
            timeout=300,
        ).returncode

    assert nbval("1.16.0 1\n") == 0  # the stored output, reproduced in the env's kernel
    assert nbval("9.9.9 1\n") == 1  # a changed output fails


def _wait_for_build_dir(project: Path, proc: subprocess.Popen, known: set[Path]) -> Path:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        fresh = set((project / ".workbench/builds").glob("old-*")) - known
        if fresh and any((p / "bin" / "python").exists() for p in fresh):
            return fresh.pop()
        time.sleep(0.05)
    raise AssertionError("the build never started")


def _start_rebuild(project: Path, path: Path) -> subprocess.Popen:
    path.write_text(SIX_OLD.replace("six==1.16.0", "six==1.17.0"))
    return start_interruptible(
        [sys.executable, "-m", "workbench", "env", "create", "old"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_interrupted_builds_leave_previous_env_working(project: Path) -> None:
    import signal

    path = write_env(project, "old", SIX_OLD)
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    prefix = active(project, "old")

    # SIGTERM (like Ctrl-C) unwinds: the half-made build is deleted.
    proc = _start_rebuild(project, path)
    partial = _wait_for_build_dir(project, proc, {prefix})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert not partial.exists()
    assert active(project, "old") == prefix

    # SIGKILL cannot be caught: the partial build stays but is never active ...
    proc = _start_rebuild(project, path)
    partial = _wait_for_build_dir(project, proc, {prefix})
    proc.kill()
    proc.wait(timeout=60)
    assert active(project, "old") == prefix
    assert run_in_kernel("wb-old", "import six; print(six.__version__)").strip() == "1.16.0"
    listed = json_data(workbench("env", "list", "--json", cwd=project).stdout)[0]
    assert listed["built"] and listed["prefix"] == str(prefix)

    # ... and the next build sweeps it away.
    assert workbench("env", "create", "old", cwd=project).returncode == 0
    assert not partial.exists()
    assert run_in_kernel("wb-old", "import six; print(six.__version__)").strip() == "1.17.0"


def test_env_named_with_capitals_runs_under_the_kernel_name_jupyter_lists(project: Path) -> None:
    """Jupyter lists kernel names in lower case: env TextGen's kernel is wb-textgen, which
    JupyterLab saves into notebooks, and `workbench run` takes it (it refused wb-textgen
    when the kernel was registered as wb-TextGen)."""
    import nbformat

    write_env(project, "TextGen", "dependencies:\n  - python=3.11\n")
    created = workbench("env", "create", "TextGen", "--json", cwd=project)
    assert created.returncode == 0, created.stderr
    assert json_data(created.stdout)[0]["kernel"] == "wb-textgen"
    assert "wb-textgen" in jupyter_kernelspecs()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os; print(os.environ['WORKBENCH_ENV'])")]
    nb.metadata["kernelspec"] = {"name": "wb-textgen", "display_name": "x", "language": "python"}
    nbformat.write(nb, project / "saved-by-lab.ipynb")
    ran = workbench("run", "saved-by-lab.ipynb", "--json", cwd=project)
    assert ran.returncode == 0, ran.stderr
    record = json_data(ran.stdout)
    assert (record["env"], record["kernel"]) == ("TextGen", "wb-textgen")
    again = workbench("env", "create", "TextGen", "--json", cwd=project)
    assert json_data(again.stdout)[0]["status"] == "unchanged"

    write_env(project, "textgen", "dependencies:\n  - python=3.11\n")
    clash = workbench("env", "list", cwd=project)
    assert clash.returncode == 2 and "differ only in case" in clash.stderr
